"""One writer at a time: a lease object in S3, changed only by conditional writes.

The CronJob already forbids concurrent runs, but a person running ``hf-cache refresh`` by hand beside it, or a run
paused (node freeze, SIGSTOP) past its lease, must not interleave with another. Every change of the lease object is
conditional, so S3 decides who holds it: create with ``If-None-Match: *``, renew and take over with ``If-Match`` on
the ETag last seen, release with ``If-Match``. A run whose renewal is refused has lost the lease and stops before
its next write (``guard`` checks before every S3 write of the client, refs included).

A killed run cannot release its lease, so the TTL is short (60 s) and renewed every quarter of it, and a contender
that finds a lease past half its TTL without renewal waits out the rest and takes over: the CronJob's retries
(backoffLimit 2: about 10 s and 30 s after a failure) succeed instead of failing on a dead run's lease.
Expiry is judged on S3's clock (the object's LastModified against the response's Date), never on the
contender's, so skewed node clocks cannot steal a live lease. The holder trusts its lease only until
``ttl - margin`` after the send time of its last confirmed renewal; past that it renews synchronously before
writing, so a run resumed after a long pause writes nothing unless S3 confirms it still holds the lease.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import socket
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import TYPE_CHECKING, Any, TypedDict, Unpack

from hf_cache import layout
from hf_cache.errors import LeaseHeldError, LeaseLostError, StorageError
from hf_cache.s3errors import is_not_found, is_precondition_failed, s3_errors

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

log = logging.getLogger(__name__)

DEFAULT_TTL = 60.0
MAX_TTL = 6 * 3600.0  # the CronJob's activeDeadlineSeconds
CLOCK_SLACK = 1.0  # S3 timestamps have one-second resolution: never call a lease expired a second early
WRITE_OPS = (
    "PutObject",
    "CopyObject",
    "DeleteObject",
    "DeleteObjects",
    "CreateMultipartUpload",
    "UploadPart",
    "UploadPartCopy",
    "CompleteMultipartUpload",
)


def _conflict(exc: BaseException) -> bool:
    """S3 refused a conditional write: someone else wrote (412, or 409 for a concurrent conditional write) or
    deleted (404) the lease since we last saw it."""
    return is_precondition_failed(exc) or is_not_found(exc)


class _Condition(TypedDict, total=False):
    """The one precondition a lease write carries: create only (``IfNoneMatch="*"``) or replace our own version."""

    IfMatch: str
    IfNoneMatch: str


@dataclass(frozen=True)
class Held:
    """The lease object as one GET saw it, with S3's own clock."""

    owner: str
    acquired: str
    ttl: float
    etag: str
    last_modified: float  # epoch seconds, S3's clock
    server_now: float  # epoch seconds, the response's Date header (S3's clock)


def expires_in(age: float, ttl: float) -> float:
    """Pure: seconds (S3's clock) until a lease of this ``age`` expires; <= 0 once it may be taken over."""
    return ttl + CLOCK_SLACK - age


def is_expired(last_modified: float, ttl: float, server_now: float) -> bool:
    """Pure: whether a lease last written at ``last_modified`` with ``ttl`` may be taken over at ``server_now``."""
    return expires_in(server_now - last_modified, ttl) <= 0


def wait_for_expiry(age: float, ttl: float) -> float | None:
    """Pure: how long a contender should wait for a lease of this ``age`` (S3's clock) to expire, or None to refuse.

    A live holder renews every ``ttl / 4``, so a lease older than ``ttl / 2`` (plus timestamp resolution) has missed
    two renewals: its holder is most likely dead, and waiting out the rest of its TTL lets a CronJob retry take over
    instead of failing. A younger lease looks live: refuse at once rather than block a person's second run.
    """
    left = expires_in(age, ttl)
    if left <= 0:
        return 0.0
    if age >= ttl / 2 + CLOCK_SLACK:
        return left
    return None


def trusted_until(confirmed_at: float, ttl: float, margin: float) -> float:
    """Pure: until when (holder's monotonic clock) the holder may write without asking S3 again.

    ``confirmed_at`` is taken before the confirmed write was sent, so S3's LastModified is no earlier and a contender
    cannot see the lease expire before ``confirmed_at + ttl``; ``margin`` covers a write in flight at that moment.
    """
    return confirmed_at + ttl - margin


class Lease:
    def __init__(self, client: S3Client, bucket: str, prefix: str, ttl: float = DEFAULT_TTL):
        self.client = client
        self.bucket = bucket
        self.key = layout.lease_key(prefix)
        self.ttl = ttl
        self.renew_every = ttl / 4
        self.margin = ttl / 4
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.renewals = 0
        self._etag: str | None = None
        self._confirmed = 0.0
        self._lost: str | None = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- S3 ------------------------------------------------------------------------------------------------------
    def _body(self) -> bytes:
        now = datetime.now(UTC).isoformat(timespec="seconds")
        return json.dumps({"owner": self.owner, "ttl_seconds": self.ttl, "written": now}).encode()

    def _put(self, **condition: Unpack[_Condition]) -> bool:
        """One conditional write of our lease body; True when S3 accepted it (and we hold the lease from then)."""
        sent = time.monotonic()
        try:
            with s3_errors(self.bucket, self.key, "write the refresh lease"):
                resp = self.client.put_object(
                    Bucket=self.bucket, Key=self.key, Body=self._body(), ContentType="application/json", **condition
                )
        except StorageError as exc:
            if _conflict(exc):
                return False
            raise
        self._etag, self._confirmed = resp["ETag"], sent
        return True

    def _create(self) -> bool:
        """Create the lease if there is none (``If-None-Match: *``): True for exactly one of any number of callers."""
        return self._put(IfNoneMatch="*")

    def read(self) -> Held | None:
        """The lease as it is now in S3, or None when there is none."""
        try:
            with s3_errors(self.bucket, self.key, "read the refresh lease"):
                resp = self.client.get_object(Bucket=self.bucket, Key=self.key)
                body = resp["Body"].read()
        except StorageError as exc:
            if is_not_found(exc):
                return None
            raise
        try:
            data = json.loads(body)
            if not isinstance(data, dict):
                raise ValueError("not an object")
        except ValueError:
            data = {}  # garbage in the lease object: expire it like any other, by its LastModified
        date = resp.get("ResponseMetadata", {}).get("HTTPHeaders", {}).get("date")
        server_now = parsedate_to_datetime(date).timestamp() if date else time.time()
        try:
            ttl = float(data.get("ttl_seconds", DEFAULT_TTL))
        except (TypeError, ValueError):
            ttl = DEFAULT_TTL
        if not math.isfinite(ttl) or ttl > MAX_TTL:
            ttl = MAX_TTL  # a lease that claims forever would block every run: no longer than a CronJob may run
        return Held(
            owner=str(data.get("owner", "unknown")),
            acquired=str(data.get("written", "?")),
            ttl=ttl,
            etag=resp["ETag"],
            last_modified=resp["LastModified"].timestamp(),
            server_now=server_now,
        )

    # -- holding -------------------------------------------------------------------------------------------------
    def acquire(self) -> None:
        for _ in range(6):
            if self._create():
                break
            held = self.read()
            if held is None:
                continue  # released between our two calls: try to create it again
            wait = wait_for_expiry(held.server_now - held.last_modified, held.ttl)
            if wait is None:
                until = datetime.fromtimestamp(held.last_modified + held.ttl + CLOCK_SLACK, UTC)
                raise LeaseHeldError(
                    f"another refresh is running ({held.owner}, lease renewed {held.acquired}); its lease on "
                    f"s3://{self.bucket}/{self.key} expires at {until.isoformat(timespec='seconds')} unless renewed."
                    " Wait for it to finish, then rerun"
                )
            if wait > 0:
                log.warning(
                    "the refresh lease of %s missed its renewals: waiting %.0fs for it to expire", held.owner, wait
                )
                time.sleep(wait + 0.1)
                continue  # look again: renewed meanwhile (refuse), or expired (take over)
            log.warning("taking over an expired refresh lease held by %s", held.owner)
            if self._put(IfMatch=held.etag):
                break
            # someone renewed or took it over between our GET and PUT: look again
        else:
            raise LeaseHeldError(f"could not take the refresh lease s3://{self.bucket}/{self.key}; rerun")
        self._thread = threading.Thread(target=self._renew_loop, name="lease-renew", daemon=True)
        self._thread.start()

    def _renew(self, only_if_stale: bool = False) -> None:
        """One conditional renewal; marks the lease lost when S3 says someone else wrote it."""
        with self._lock:
            if self._lost or self._etag is None:
                return
            if only_if_stale and time.monotonic() < trusted_until(self._confirmed, self.ttl, self.margin):
                return  # another thread renewed while we waited for the lock
            if self._put(IfMatch=self._etag):
                self.renewals += 1
                return
            held = None
            with contextlib.suppress(StorageError):
                held = self.read()
            self._lost = f"now held by {held.owner}" if held is not None else "the lease object was deleted"
            log.error("lost the refresh lease s3://%s/%s: %s", self.bucket, self.key, self._lost)

    def _renew_loop(self) -> None:
        wait = self.renew_every
        while not self._stop.wait(wait):
            try:
                self._renew()
                wait = self.renew_every
            except StorageError as exc:  # transient: try again soon, check() guards the writes
                log.warning("could not renew the refresh lease: %s", exc)
                wait = max(self.renew_every / 4, 0.1)
            if self._lost:
                return

    def check(self) -> None:
        """Raise LeaseLostError unless this run still holds the lease; call before any write."""
        if not self._lost and time.monotonic() < trusted_until(self._confirmed, self.ttl, self.margin):
            return
        if not self._lost:
            try:
                self._renew(only_if_stale=True)  # trust ran out (a long pause, failing renewals): ask S3
            except StorageError as exc:
                raise LeaseLostError(
                    f"could not confirm the refresh lease s3://{self.bucket}/{self.key} ({exc}); stopped before "
                    "writing more. Rerun"
                ) from exc
        if self._lost:
            raise LeaseLostError(
                f"lost the refresh lease s3://{self.bucket}/{self.key} ({self._lost}); this run stopped before "
                "writing more. Another refresh took over: let it finish"
            )

    def guard(self) -> None:
        """Check the lease before every S3 write of this client (but the lease's own), from any thread."""

        def before_write(params: dict[str, Any], **_: Any) -> None:
            if params.get("Key") != self.key:
                self.check()

        for op in WRITE_OPS:
            self.client.meta.events.register(f"before-parameter-build.s3.{op}", before_write, unique_id=f"lease-{op}")

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None
        with self._lock:
            if self._lost or self._etag is None:
                return
            try:  # only our own lease: a conditional delete never removes a successor's
                with s3_errors(self.bucket, self.key, "release the refresh lease"):
                    self.client.delete_object(Bucket=self.bucket, Key=self.key, IfMatch=self._etag)
            except StorageError as exc:
                if not _conflict(exc):
                    log.warning("could not release the refresh lease: %s", exc)
            self._etag = None

    def __enter__(self) -> Lease:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()
