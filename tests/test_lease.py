"""The writer lease excludes: one holder at a time, kept by renewal, lost for good when a paused holder was overtaken.

moto's server evaluates ``If-None-Match`` / ``If-Match`` outside any lock: measured here, 1 of 30 rounds of 6
processes creating the same key with ``If-None-Match: *`` had two winners. Real S3 evaluates conditions atomically,
so the test of truly concurrent contenders runs moto single-threaded (one request at a time gives it that property;
a double win there is ours). The other tests order their conditional writes one after another, and run on the
usual threaded server: a SIGSTOPped client caught mid-request would block a single-threaded one. (``rclone serve
s3`` ignores both headers.)
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

from hf_cache import layout
from hf_cache.errors import LeaseHeldError, LeaseLostError
from hf_cache.lab.net import free_port, stop, wait_http
from hf_cache.lab.s3server import CREDENTIALS, S3Server
from hf_cache.refresh.lease import CLOCK_SLACK, MAX_TTL, Lease, is_expired, trusted_until, wait_for_expiry
from tests.refresh_helpers import objects, read, run_refresh

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


def _pause(proc: subprocess.Popen) -> None:
    """SIGSTOP, then wait until the kernel has stopped it and its last request in flight has landed."""
    proc.send_signal(signal.SIGSTOP)
    deadline = time.monotonic() + 10
    while Path(f"/proc/{proc.pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "T":
        assert time.monotonic() < deadline, "the process did not stop"
        time.sleep(0.01)
    time.sleep(0.3)


def _owner(server: S3Server, bucket: str) -> str:
    return json.loads(read(server.client(), bucket, LEASE_KEY))["owner"]


def test_expiry_and_trust_are_pure_decisions() -> None:
    assert not is_expired(last_modified=100.0, ttl=60.0, server_now=160.0)  # one second of timestamp resolution
    assert is_expired(last_modified=100.0, ttl=60.0, server_now=160.0 + CLOCK_SLACK)
    assert trusted_until(confirmed_at=10.0, ttl=60.0, margin=15.0) == 55.0
    assert wait_for_expiry(age=16.0, ttl=60.0) is None  # renewed within two periods: live, refuse at once
    assert wait_for_expiry(age=31.0, ttl=60.0) == 30.0  # missed two renewals: wait out the rest
    assert wait_for_expiry(age=61.0, ttl=60.0) == 0.0


def test_second_holder_is_refused_naming_the_first(s3_server: S3Server, bucket: str) -> None:
    first = Lease(s3_server.client(), bucket, PREFIX, ttl=30)
    first.acquire()
    try:
        with pytest.raises(LeaseHeldError, match=first.owner):
            Lease(s3_server.client(), bucket, PREFIX, ttl=30).acquire()
    finally:
        first.release()
    assert LEASE_KEY not in objects(s3_server.client(), bucket)
    second = Lease(s3_server.client(), bucket, PREFIX, ttl=30)
    second.acquire()
    second.release()


def test_holder_renews_so_a_run_longer_than_the_ttl_keeps_the_lease(s3_server: S3Server, bucket: str) -> None:
    holder = Lease(s3_server.client(), bucket, PREFIX, ttl=2.0)
    holder.acquire()
    try:
        deadline = time.monotonic() + 2 * (2.0 + CLOCK_SLACK)
        tries = 0
        while time.monotonic() < deadline:
            with pytest.raises(LeaseHeldError):
                Lease(s3_server.client(), bucket, PREFIX, ttl=2.0).acquire()
            tries += 1
            time.sleep(0.2)
        holder.check()  # still ours, without asking S3 again
        assert _owner(s3_server, bucket) == holder.owner
        assert holder.renewals >= 4 and tries >= 10
    finally:
        holder.release()


def test_a_killed_holders_lease_is_taken_over_after_the_ttl(s3_server: S3Server, bucket: str) -> None:
    """The CronJob's retry must not fail on a dead run's lease: refused while it looks live, then (once it missed
    two renewals) the retry waits out the short TTL and takes over."""
    ttl = 2.0
    code = (
        "import os, signal, sys, boto3\n"
        "from hf_cache.refresh.lease import Lease\n"
        f"c = boto3.client('s3', endpoint_url={s3_server.endpoint!r})\n"
        f"Lease(c, {bucket!r}, {PREFIX!r}, ttl={ttl}).acquire()\n"
        "os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    subprocess.run([sys.executable, "-c", code], env={**os.environ, **s3_server.env()}, timeout=60)
    dead = _owner(s3_server, bucket)
    with pytest.raises(LeaseHeldError, match=dead):  # just written: looks live, refused without waiting
        Lease(s3_server.client(), bucket, PREFIX, ttl=30).acquire()
    time.sleep(ttl / 2 + CLOCK_SLACK + 0.1)
    successor = Lease(s3_server.client(), bucket, PREFIX, ttl=30)
    t0 = time.monotonic()
    successor.acquire()  # waits for the expiry instead of failing
    waited = time.monotonic() - t0
    assert _owner(s3_server, bucket) == successor.owner
    successor.release()
    assert waited < ttl + CLOCK_SLACK + 1


_CONTENDER = """
import sys, time, boto3
from hf_cache.errors import LeaseHeldError
from hf_cache.refresh.lease import Lease
endpoint, bucket, rounds, step = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
client = boto3.client("s3", endpoint_url=endpoint)
client.list_buckets()  # imported and connected: ready
print("ready", flush=True)
t0 = float(sys.stdin.readline())
for r in range(rounds):
    time.sleep(max(0.0, t0 + r * step - time.time()))
    try:
        Lease(client, bucket, f"round{r}", ttl=30).acquire()  # never released: a winner keeps holding
        print(r, "won", flush=True)
    except LeaseHeldError:
        print(r, "refused", flush=True)
"""


def test_contenders_for_an_expired_lease_yield_exactly_one_holder(serial_s3: S3Server, sbucket: str) -> None:
    """Of four processes racing for a dead lease, exactly one wins, in every one of eight rounds (each round its own
    dead lease; the processes start once and wait at a start line)."""
    rounds, step = 8, 0.3
    client = serial_s3.client()
    for r in range(rounds):  # holders that died at once
        assert Lease(client, sbucket, f"round{r}", ttl=0.01)._create()
    env = {**os.environ, **serial_s3.env()}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _CONTENDER, serial_s3.endpoint, sbucket, str(rounds), str(step)],
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(4)
    ]
    try:
        for p in procs:
            assert p.stdout is not None and p.stdout.readline().strip() == "ready"
        time.sleep(2 * CLOCK_SLACK + 0.1)  # the dead leases are past TTL + slack by S3's one-second timestamps
        t0 = f"{time.time() + 0.3}\n"
        done = [p.communicate(t0, timeout=120) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    for p, (_, err) in zip(procs, done, strict=True):
        assert p.returncode == 0, err[-2000:]
    outs = [out.split() for out, _ in done]
    for r in range(rounds):
        results = [out[2 * r + 1] for out in outs if str(r) == out[2 * r]]
        assert len(results) == 4 and results.count("won") == 1, f"round {r}: {results}"


def test_takeover_is_conditional_on_the_lease_it_saw(s3_server: S3Server, bucket: str) -> None:
    """The losing interleaving, made certain: A reads the dead lease, B takes it over, then A writes. A's takeover
    is conditional on the ETag it read, so it is refused and A reports B; a GET-DELETE-create or an unconditional
    PUT would hand the lease to both. (botocore's event hooks only order the real requests to the real server.)"""
    assert Lease(s3_server.client(), bucket, PREFIX, ttl=0.01)._create()
    time.sleep(2 * CLOCK_SLACK + 0.1)  # past TTL + slack by S3's one-second timestamps
    a_client = s3_server.client()
    a, b = Lease(a_client, bucket, PREFIX, ttl=30), Lease(s3_server.client(), bucket, PREFIX, ttl=30)
    seen = {"get": False, "b": False}

    def after_get(**_: object) -> None:
        seen["get"] = True

    def before_write(params: dict[str, object], **_: object) -> None:
        if seen["get"] and not seen["b"] and params.get("Key") == LEASE_KEY:
            seen["b"] = True
            b.acquire()  # B wins the race between A's read and A's write

    a_client.meta.events.register("after-call.s3.GetObject", after_get)
    for op in ("PutObject", "DeleteObject"):
        a_client.meta.events.register(f"before-parameter-build.s3.{op}", before_write)
    try:
        with pytest.raises(LeaseHeldError, match=b.owner):
            a.acquire()
        assert seen["b"] and _owner(s3_server, bucket) == b.owner
        b.check()
    finally:
        a.release()
        b.release()


_PAUSED_HOLDER = """
import sys, time, boto3
from hf_cache.errors import LeaseLostError
from hf_cache.refresh.lease import Lease
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
        time.sleep(0.1)
except LeaseLostError as exc:
    print(f"stopped: {exc}", flush=True)
    sys.exit(3)
"""


def test_a_paused_holder_overtaken_by_another_writes_nothing_more(s3_server: S3Server, bucket: str) -> None:
    """SIGSTOP past the TTL, another run takes over, SIGCONT: the first must not renew over it nor write again."""
    proc = subprocess.Popen(
        [sys.executable, "-c", _PAUSED_HOLDER, s3_server.endpoint, bucket, PREFIX],
        env={**os.environ, **s3_server.env()},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    successor = Lease(s3_server.client(), bucket, PREFIX, ttl=30)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "holding"
        time.sleep(0.5)
        _pause(proc)
        paused_writes = {k for k in objects(s3_server.client(), bucket) if "/writes/" in k}
        assert paused_writes, "the holder wrote nothing before it was paused"
        time.sleep(1.5 + 2 * CLOCK_SLACK + 0.1)
        successor.acquire()
        successor_etag = s3_server.client().head_object(Bucket=bucket, Key=LEASE_KEY)["ETag"]
        proc.send_signal(signal.SIGCONT)
        out, err = proc.communicate(timeout=30)
        assert proc.returncode == 3, (out, err)
        assert "lost the refresh lease" in out and successor.owner in out
        writes = {k for k in objects(s3_server.client(), bucket) if "/writes/" in k}
        # A request already past the lease check when SIGSTOP hit may land on resume (the documented residual):
        # at most that one, the next in sequence; nothing it started after resuming.
        in_flight = f"{PREFIX}/hub/writes/{max(int(k.rsplit('/', 1)[1]) for k in paused_writes) + 1}"
        assert writes - paused_writes <= {in_flight}, f"wrote {sorted(writes - paused_writes)} after losing the lease"
        head = s3_server.client().head_object(Bucket=bucket, Key=LEASE_KEY)
        assert head["ETag"] == successor_etag and _owner(s3_server, bucket) == successor.owner
        successor.check()
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGCONT)
            proc.kill()
            proc.wait()
        successor.release()


def test_lost_lease_raises_and_release_leaves_the_successors_lease(s3_server: S3Server, bucket: str) -> None:
    first = Lease(s3_server.client(), bucket, PREFIX, ttl=1.0)
    first.acquire()
    first._stop.set()  # its renewals stop, as in a frozen process
    time.sleep(1.0 + 2 * CLOCK_SLACK + 0.1)
    second = Lease(s3_server.client(), bucket, PREFIX, ttl=30)
    second.acquire()
    with pytest.raises(LeaseLostError, match=second.owner):
        first.check()
    first.release()
    assert _owner(s3_server, bucket) == second.owner
    second.release()
    assert LEASE_KEY not in objects(s3_server.client(), bucket)


def _folder(root: Path, name: str, files: int, salt: str) -> Path:
    folder = root / name
    folder.mkdir()
    for i in range(files):
        (folder / f"f{i:03}.json").write_text(json.dumps({"i": i, "salt": salt}))
    return folder


def test_a_paused_refresh_resumed_after_a_takeover_writes_no_ref(
    s3_server: S3Server, bucket: str, tmp_path: Path
) -> None:
    """The end-to-end race: refresh A paused mid-run past its TTL, refresh B runs; A resumed publishes no ref."""
    env = s3_server.env()
    client = s3_server.client()
    first = _folder(tmp_path, "first", 1, "a")
    slow_a = _folder(tmp_path, "slow-a", 120, "a")
    slow_b = _folder(tmp_path, "slow-b", 3, "b")
    models_a = tmp_path / "a.txt"
    models_a.write_text(f"team/first source=file://{first}\nteam/slow source=file://{slow_a}\n")
    models_b = tmp_path / "b.txt"
    models_b.write_text(f"team/slow source=file://{slow_b}\n")
    ref_first = layout.ref_key(PREFIX, "team/first", "model", "main")
    ref_slow = layout.ref_key(PREFIX, "team/slow", "model", "main")
    cmd = [sys.executable, "-m", "hf_cache", "refresh", "--models", str(models_a), "--bucket", bucket]
    cmd += ["--prefix", PREFIX, "--workers", "2", "--lease-ttl", "1.5"]
    proc = subprocess.Popen(cmd, env={**os.environ, **env}, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while ref_first not in objects(client, bucket):
            assert proc.poll() is None and time.monotonic() < deadline, "refresh A ended before it could be paused"
            time.sleep(0.02)
        _pause(proc)
        assert ref_slow not in objects(client, bucket), "A published its second repo before the pause: add files"
        time.sleep(1.5 + 2 * CLOCK_SLACK + 0.1)
        b = run_refresh(models_b, bucket, env, "--lease-ttl", "1.5", prefix=PREFIX)
        assert b.returncode == 0, b.stderr
        sha_b = read(client, bucket, ref_slow)
        status_b = read(client, bucket, layout.status_key(PREFIX))
        proc.send_signal(signal.SIGCONT)
        out, err = proc.communicate(timeout=60)
        assert proc.returncode != 0, out
        assert "lost the refresh lease" in err
        assert read(client, bucket, ref_slow) == sha_b, "the paused run moved a ref after another run took over"
        assert read(client, bucket, layout.status_key(PREFIX)) == status_b
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGCONT)
            proc.kill()
            proc.wait()


def test_a_garbage_lease_object_is_a_clear_refusal_not_a_traceback(s3_server: S3Server, bucket: str) -> None:
    """A truncated or foreign lease.json still expires by its LastModified (default TTL); until then: refused."""
    s3_server.client().put_object(Bucket=bucket, Key=LEASE_KEY, Body=b"\x00{not json")
    with pytest.raises(LeaseHeldError, match="another refresh is running \\(unknown"):
        Lease(s3_server.client(), bucket, PREFIX, ttl=30).acquire()


def test_a_lease_claiming_forever_still_expires(s3_server: S3Server, bucket: str) -> None:
    client = s3_server.client()
    client.put_object(Bucket=bucket, Key=LEASE_KEY, Body=b'{"owner": "x", "ttl_seconds": 1e400}')  # inf
    held = Lease(client, bucket, PREFIX).read()
    assert held is not None and held.ttl == MAX_TTL
