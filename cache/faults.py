"""Test-only fault hooks, all in one place so a reader can see every way the tests bend the product.

Production never sets these variables; with them unset every hook here is a no-op. They exist because some
guarantees can only be tested by failing at an exact point, which a timer or a real outage cannot hit reliably:

- ``HFCACHE_TEST_KILL_AFTER=N`` (:func:`kill_before_write`): the process SIGKILLs itself right before its
  (N+1)th S3 write, so the atomicity tests can kill a refresh or a prune between any two writes.
- ``HFCACHE_FUSE_DEVICE=PATH`` (:func:`fuse_device`): the FUSE device the mount's preflight checks for, so a test
  can point it at a missing path and see the "run the container privileged" error without a real missing
  /dev/fuse.
"""

from __future__ import annotations

import os
import signal
import threading
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

KILL_AFTER_ENV = "HFCACHE_TEST_KILL_AFTER"
FUSE_DEVICE_ENV = "HFCACHE_FUSE_DEVICE"
DEFAULT_FUSE_DEVICE = "/dev/fuse"

# Every S3 call that changes the bucket: killing before any of them leaves the bucket as the previous write left it.
WRITE_OPS = (
    "UploadPartCopy",
    "PutObject",
    "CreateMultipartUpload",
    "UploadPart",
    "CompleteMultipartUpload",
    "DeleteObject",
    "DeleteObjects",
    "CopyObject",
)


def kill_before_write(client: S3Client) -> None:
    """Arm ``client`` to SIGKILL this process before its (N+1)th S3 write when ``HFCACHE_TEST_KILL_AFTER=N``.

    A deterministic kill point lets the test cover every step of a publish, not just the ones a timer happens to hit.
    SIGKILL rather than an exception: nothing (no ``finally``, no lease release) may run after it, as in a node loss.
    """
    limit = os.environ.get(KILL_AFTER_ENV)
    if not limit:
        return
    allowed = int(limit)
    counter = {"n": 0}
    lock = threading.Lock()

    def before_write(**_: Any) -> None:
        with lock:
            counter["n"] += 1
            if counter["n"] > allowed:
                os.kill(os.getpid(), signal.SIGKILL)

    for op in WRITE_OPS:
        client.meta.events.register(f"before-call.s3.{op}", before_write)


def fuse_device() -> str:
    """The FUSE device the mount preflight requires: ``/dev/fuse`` unless a test points ``HFCACHE_FUSE_DEVICE`` away."""
    return os.environ.get(FUSE_DEVICE_ENV, DEFAULT_FUSE_DEVICE)
