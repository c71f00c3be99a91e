"""The writer lease excludes: one holder at a time, kept by renewal, lost for good when a paused holder was overtaken.

These run against moto's S3 server started single-threaded. moto's threaded server evaluates ``If-None-Match`` /
``If-Match`` outside any lock: measured here, 1 of 30 rounds of 6 processes creating the same key with
``If-None-Match: *`` had two winners. Real S3 evaluates conditions atomically; one request at a time gives moto that
property, so a double win below is ours, not the test server's. (``rclone serve s3`` ignores both headers.)
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from cache import layout
from cache.errors import LeaseHeldError, LeaseLostError
from cache.readers.loopback import free_port, stop, wait_http
from cache.refresh.lease import CLOCK_SLACK, Lease, is_expired, trusted_until
from tests.refresh_helpers import objects, read, run_refresh
from tests.support.s3server import CREDENTIALS, S3Server

_SERIAL_MOTO = (
    "import sys, werkzeug.serving as w, moto.server as s\n"
    "s.run_simple = lambda *a, **k: w.run_simple(*a, **{**k, 'threaded': False})\n"
    "s.main(sys.argv[1:])\n"
)
PREFIX = "p"
LEASE_KEY = layout.lease_key(PREFIX)


@pytest.fixture(scope="module")
def serial_s3() -> Iterator[S3Server]:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-c", _SERIAL_MOTO, "-H", "127.0.0.1", "-p", str(port)],
        env={**os.environ, **CREDENTIALS},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    server = S3Server(endpoint=f"http://127.0.0.1:{port}", proc=proc)
    try:
        wait_http(server.endpoint + "/moto-api/", proc=proc, what="single-threaded moto")
        yield server
    finally:
        stop(proc)


@pytest.fixture
def sbucket(serial_s3: S3Server) -> str:
    return serial_s3.new_bucket("lease")


def _owner(server: S3Server, bucket: str) -> str:
    return json.loads(read(server.client(), bucket, LEASE_KEY))["owner"]


def test_expiry_and_trust_are_pure_decisions() -> None:
    assert not is_expired(last_modified=100.0, ttl=60.0, server_now=160.0)  # one second of timestamp resolution
    assert is_expired(last_modified=100.0, ttl=60.0, server_now=160.0 + CLOCK_SLACK)
    assert trusted_until(confirmed_at=10.0, ttl=60.0, margin=15.0) == 55.0


def test_second_holder_is_refused_naming_the_first(serial_s3: S3Server, sbucket: str) -> None:
    first = Lease(serial_s3.client(), sbucket, PREFIX, ttl=30)
    first.acquire()
    try:
        with pytest.raises(LeaseHeldError, match=first.owner):
            Lease(serial_s3.client(), sbucket, PREFIX, ttl=30).acquire()
    finally:
        first.release()
    assert LEASE_KEY not in objects(serial_s3.client(), sbucket)
    second = Lease(serial_s3.client(), sbucket, PREFIX, ttl=30)
    second.acquire()
    second.release()


def test_holder_renews_so_a_run_longer_than_the_ttl_keeps_the_lease(serial_s3: S3Server, sbucket: str) -> None:
    holder = Lease(serial_s3.client(), sbucket, PREFIX, ttl=1.5)
    holder.acquire()
    try:
        deadline = time.monotonic() + 3 * (1.5 + CLOCK_SLACK)
        tries = 0
        while time.monotonic() < deadline:
            with pytest.raises(LeaseHeldError):
                Lease(serial_s3.client(), sbucket, PREFIX, ttl=1.5).acquire()
            tries += 1
            time.sleep(0.2)
        holder.check()  # still ours, without asking S3 again
        assert _owner(serial_s3, sbucket) == holder.owner
        assert holder.renewals >= 4 and tries >= 10
    finally:
        holder.release()


def test_a_killed_holders_lease_is_taken_over_after_the_ttl(serial_s3: S3Server, sbucket: str) -> None:
    """The CronJob's retry must not wait long: a SIGKILLed run's lease is taken over once its short TTL passes."""
    code = (
        "import os, signal, sys, boto3\n"
        "from cache.refresh.lease import Lease\n"
        f"c = boto3.client('s3', endpoint_url={serial_s3.endpoint!r})\n"
        f"Lease(c, {sbucket!r}, {PREFIX!r}, ttl=2).acquire()\n"
        "os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    subprocess.run([sys.executable, "-c", code], env={**os.environ, **serial_s3.env()}, timeout=60)
    dead = _owner(serial_s3, sbucket)
    t0 = time.monotonic()
    successor = Lease(serial_s3.client(), sbucket, PREFIX, ttl=30)
    while True:
        try:
            successor.acquire()
            break
        except LeaseHeldError as exc:
            assert dead in str(exc)
            assert time.monotonic() - t0 < 2 + CLOCK_SLACK + 2, "the dead lease was not taken over after its TTL"
            time.sleep(0.2)
    waited = time.monotonic() - t0
    assert _owner(serial_s3, sbucket) == successor.owner
    successor.release()
    assert waited >= 0.5  # it was not taken over while live (the kill happened right after acquiring)


_CONTENDER = """
import sys, time, boto3
from cache.errors import LeaseHeldError
from cache.refresh.lease import Lease
endpoint, bucket, prefix, start, hold_until = sys.argv[1:6]
client = boto3.client("s3", endpoint_url=endpoint)
while time.time() < float(start):
    pass
try:
    Lease(client, bucket, prefix, ttl=30).acquire()
except LeaseHeldError:
    print("refused")
    sys.exit(0)
print("won")
time.sleep(max(0.0, float(hold_until) - time.time()))  # keep holding while the others try
"""


def test_contenders_for_an_expired_lease_yield_exactly_one_holder(serial_s3: S3Server, sbucket: str) -> None:
    """Takeover is one conditional PUT on the ETag seen: of six processes racing for a dead lease, one wins."""
    env = {**os.environ, **serial_s3.env()}
    for round_ in range(3):
        stale = Lease(serial_s3.client(), sbucket, PREFIX, ttl=0.01)  # a holder that died at once
        assert stale._create()
        time.sleep(CLOCK_SLACK + 0.2)
        start = time.time() + 2.5
        procs = [
            subprocess.Popen(
                [sys.executable, "-c", _CONTENDER, serial_s3.endpoint, sbucket, PREFIX, str(start), str(start + 1.5)],
                env=env,
                stdout=subprocess.PIPE,
                text=True,
            )
            for _ in range(6)
        ]
        outs = [p.communicate(timeout=60)[0].strip() for p in procs]
        assert outs.count("won") == 1, f"round {round_}: {outs}"
        serial_s3.client().delete_object(Bucket=sbucket, Key=LEASE_KEY)


_PAUSED_HOLDER = """
import sys, time, boto3
from cache.errors import LeaseLostError
from cache.refresh.lease import Lease
endpoint, bucket, prefix = sys.argv[1:4]
client = boto3.client("s3", endpoint_url=endpoint)
lease = Lease(client, bucket, prefix, ttl=1.5)
lease.acquire()
lease.guard()
print("holding", flush=True)
n = 0
try:
    while True:  # like a run writing refs: every write goes through the guard
        n += 1
        client.put_object(Bucket=bucket, Key=f"{prefix}/hub/writes/{n}", Body=str(time.time()).encode())
        time.sleep(0.05)
except LeaseLostError as exc:
    print(f"stopped: {exc}", flush=True)
    sys.exit(3)
"""


def test_a_paused_holder_overtaken_by_another_writes_nothing_more(serial_s3: S3Server, sbucket: str) -> None:
    """SIGSTOP past the TTL, another run takes over, SIGCONT: the first must not renew over it nor write again."""
    proc = subprocess.Popen(
        [sys.executable, "-c", _PAUSED_HOLDER, serial_s3.endpoint, sbucket, PREFIX],
        env={**os.environ, **serial_s3.env()},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    successor = Lease(serial_s3.client(), sbucket, PREFIX, ttl=30)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "holding"
        time.sleep(0.5)
        proc.send_signal(signal.SIGSTOP)
        paused_writes = {k for k in objects(serial_s3.client(), sbucket) if "/writes/" in k}
        assert paused_writes, "the holder wrote nothing before it was paused"
        time.sleep(1.5 + CLOCK_SLACK + 0.5)
        successor.acquire()
        successor_etag = serial_s3.client().head_object(Bucket=sbucket, Key=LEASE_KEY)["ETag"]
        proc.send_signal(signal.SIGCONT)
        out, err = proc.communicate(timeout=30)
        assert proc.returncode == 3, (out, err)
        assert "lost the refresh lease" in out and successor.owner in out
        writes = {k for k in objects(serial_s3.client(), sbucket) if "/writes/" in k}
        assert writes == paused_writes, f"wrote {sorted(writes - paused_writes)} after losing the lease"
        head = serial_s3.client().head_object(Bucket=sbucket, Key=LEASE_KEY)
        assert head["ETag"] == successor_etag and _owner(serial_s3, sbucket) == successor.owner
        successor.check()
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGCONT)
            proc.kill()
            proc.wait()
        successor.release()


def test_lost_lease_raises_and_release_leaves_the_successors_lease(serial_s3: S3Server, sbucket: str) -> None:
    first = Lease(serial_s3.client(), sbucket, PREFIX, ttl=1.0)
    first.acquire()
    first._stop.set()  # its renewals stop, as in a frozen process
    time.sleep(1.0 + CLOCK_SLACK + 0.3)
    second = Lease(serial_s3.client(), sbucket, PREFIX, ttl=30)
    second.acquire()
    with pytest.raises(LeaseLostError, match=second.owner):
        first.check()
    first.release()
    assert _owner(serial_s3, sbucket) == second.owner
    second.release()
    assert LEASE_KEY not in objects(serial_s3.client(), sbucket)


def _folder(root: Path, name: str, files: int, salt: str) -> Path:
    folder = root / name
    folder.mkdir()
    for i in range(files):
        (folder / f"f{i:03}.json").write_text(json.dumps({"i": i, "salt": salt}))
    return folder


def test_a_paused_refresh_resumed_after_a_takeover_writes_no_ref(
    serial_s3: S3Server, sbucket: str, tmp_path: Path
) -> None:
    """The end-to-end race: refresh A paused mid-run past its TTL, refresh B runs; A resumed publishes no ref."""
    env = serial_s3.env()
    client = serial_s3.client()
    first = _folder(tmp_path, "first", 1, "a")
    slow_a = _folder(tmp_path, "slow-a", 120, "a")
    slow_b = _folder(tmp_path, "slow-b", 3, "b")
    models_a = tmp_path / "a.txt"
    models_a.write_text(f"team/first source=file://{first}\nteam/slow source=file://{slow_a}\n")
    models_b = tmp_path / "b.txt"
    models_b.write_text(f"team/slow source=file://{slow_b}\n")
    ref_first = layout.ref_key(PREFIX, "team/first", "model", "main")
    ref_slow = layout.ref_key(PREFIX, "team/slow", "model", "main")
    cmd = [sys.executable, "-m", "cache", "refresh", "--models", str(models_a), "--bucket", sbucket]
    cmd += ["--prefix", PREFIX, "--workers", "2", "--lease-ttl", "1.5"]
    proc = subprocess.Popen(cmd, env={**os.environ, **env}, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while ref_first not in objects(client, sbucket):
            assert proc.poll() is None and time.monotonic() < deadline, "refresh A ended before it could be paused"
            time.sleep(0.02)
        proc.send_signal(signal.SIGSTOP)
        assert ref_slow not in objects(client, sbucket), "A published its second repo before the pause: add files"
        time.sleep(1.5 + CLOCK_SLACK + 0.5)
        b = run_refresh(models_b, sbucket, env, "--lease-ttl", "1.5", prefix=PREFIX)
        assert b.returncode == 0, b.stderr
        sha_b = read(client, sbucket, ref_slow)
        status_b = read(client, sbucket, layout.status_key(PREFIX))
        proc.send_signal(signal.SIGCONT)
        out, err = proc.communicate(timeout=60)
        assert proc.returncode != 0, out
        assert "lost the refresh lease" in err
        assert read(client, sbucket, ref_slow) == sha_b, "the paused run moved a ref after another run took over"
        assert read(client, sbucket, layout.status_key(PREFIX)) == status_b
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGCONT)
            proc.kill()
            proc.wait()
