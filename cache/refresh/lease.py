"""One writer at a time: a lease object in S3, taken with a conditional create.

The CronJob already forbids concurrent runs, but a person running ``hf-cache refresh`` by hand beside it must not
interleave with it. ``PutObject`` with ``If-None-Match: *`` succeeds for exactly one caller. A killed run cannot
release its lease, so a lease carries an expiry and the holder renews it while it works; an expired lease is taken
over.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
import uuid
from datetime import UTC, datetime
from typing import Any

from botocore.exceptions import ClientError

from cache import layout
from cache.errors import LeaseHeldError

log = logging.getLogger("hf_cache.lease")


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


class Lease:
    def __init__(self, client: Any, bucket: str, prefix: str, ttl: float = 1800.0):
        self.client = client
        self.bucket = bucket
        self.key = layout.lease_key(prefix)
        self.ttl = ttl
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _body(self) -> bytes:
        now = time.time()
        return json.dumps(
            {
                "owner": self.owner,
                "acquired": datetime.fromtimestamp(now, UTC).isoformat(timespec="seconds"),
                "expires_epoch": now + self.ttl,
            }
        ).encode()

    def _create(self) -> bool:
        try:
            self.client.put_object(Bucket=self.bucket, Key=self.key, Body=self._body(), IfNoneMatch="*")
            return True
        except ClientError as exc:
            if _code(exc) in ("PreconditionFailed", "412", "ConditionalRequestConflict", "409"):
                return False
            raise

    def acquire(self) -> None:
        for _ in range(2):
            if self._create():
                self._thread = threading.Thread(target=self._renew, name="lease-renew", daemon=True)
                self._thread.start()
                return
            try:
                held = json.loads(self.client.get_object(Bucket=self.bucket, Key=self.key)["Body"].read())
            except ClientError:
                continue  # released between our two calls: try again
            if float(held.get("expires_epoch", 0)) < time.time():
                log.warning("taking over an expired refresh lease held by %s", held.get("owner"))
                self.client.delete_object(Bucket=self.bucket, Key=self.key)
                continue
            until = datetime.fromtimestamp(float(held["expires_epoch"]), UTC).isoformat(timespec="seconds")
            raise LeaseHeldError(
                f"another refresh is running ({held.get('owner')}, since {held.get('acquired')}); its lease on "
                f"s3://{self.bucket}/{self.key} expires at {until}. Wait for it, or delete that object if it is dead"
            )
        raise LeaseHeldError(f"could not take the refresh lease s3://{self.bucket}/{self.key}; try again")

    def _renew(self) -> None:
        while not self._stop.wait(self.ttl / 3):
            try:
                self.client.put_object(Bucket=self.bucket, Key=self.key, Body=self._body())
            except ClientError as exc:  # keep working: the next renewal may succeed
                log.warning("could not renew the refresh lease: %s", _code(exc))

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
            try:
                held = json.loads(self.client.get_object(Bucket=self.bucket, Key=self.key)["Body"].read())
                if held.get("owner") == self.owner:
                    self.client.delete_object(Bucket=self.bucket, Key=self.key)
            except ClientError as exc:
                log.warning("could not release the refresh lease: %s", _code(exc))

    def __enter__(self) -> Lease:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()
