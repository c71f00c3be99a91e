"""Filesystem calls on the mount, each with a time bound and never more than one thread stuck on them.

A FUSE server that is stopped (or wedged) blocks every call on its mount, in the kernel, for as long as it stays
stopped: a thread in such a call cannot be interrupted from Python. So the supervisor never makes such a call on its
main thread: it hands it to a worker thread and waits with a timeout. While a call hangs, the next request does not
start a second thread; it reports how long the first has been stuck. Killing the FUSE server (which the supervisor
does once that time passes a bound) fails the stuck call and frees the worker.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Outcome:
    ok: bool
    seconds: float  # how long the call took, or has been running when it timed out
    value: Any = None
    error: BaseException | None = None
    timed_out: bool = False


class BoundedWorker:
    """One daemon thread that runs one call at a time; callers wait at most ``timeout`` for its answer."""

    def __init__(self, name: str):
        self.name = name
        self._jobs: queue.SimpleQueue[tuple[Callable[[], Any], dict[str, Any], threading.Event]] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._busy_since: float | None = None
        self._current: threading.Event | None = None
        self._current_box: dict[str, Any] = {}
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while True:
            fn, box, done = self._jobs.get()
            started = time.monotonic()
            try:
                box["value"] = fn()
            except BaseException as exc:  # reported to the caller, never raised here
                box["error"] = exc
            box["seconds"] = time.monotonic() - started
            with self._lock:
                self._busy_since = None
            done.set()

    def stuck_for(self) -> float:
        """Seconds the call in flight has been running (0 when idle)."""
        with self._lock:
            return 0.0 if self._busy_since is None else time.monotonic() - self._busy_since

    def run(self, fn: Callable[[], Any], timeout: float) -> Outcome:
        with self._lock:
            busy = self._busy_since is not None
            if not busy:
                done = threading.Event()
                box: dict[str, Any] = {}
                self._busy_since = time.monotonic()
                self._current, self._current_box = done, box
                self._jobs.put((fn, box, done))
            else:
                done, box = self._current, self._current_box  # type: ignore[assignment]  # busy: _current is set
        # While an earlier call hangs, wait for it (bounded) rather than queue behind it: its answer is news.
        if not done.wait(timeout):
            return Outcome(False, self.stuck_for(), timed_out=True)
        if busy:
            return Outcome(False, 0.0, error=TimeoutError("the previous call on the mount only just returned"))
        if "error" in box:
            return Outcome(False, box["seconds"], error=box["error"])
        return Outcome(True, box["seconds"], value=box.get("value"))
