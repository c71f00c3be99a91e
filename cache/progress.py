"""Progress for long work: a bar on a terminal, periodic log lines (files, bytes, rate) in a pod."""

from __future__ import annotations

import logging
import sys
import threading
import time
from types import TracebackType

log = logging.getLogger("hf_cache.progress")


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


class Progress:
    """Thread-safe counter of files and bytes that reports itself.

    On a TTY it redraws one status line; otherwise it logs a line every ``interval`` seconds, so a pod's log
    shows a job is alive without drowning in per-chunk lines.
    """

    def __init__(
        self,
        label: str,
        total_bytes: int = 0,
        total_files: int = 0,
        interval: float = 10.0,
        stream=None,
        tty: bool | None = None,
    ):
        self.label = label
        self.total_bytes = total_bytes
        self.total_files = total_files
        self.interval = interval
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty() if tty is None else tty
        self.bytes = 0
        self.files = 0
        self.started = time.monotonic()
        self._lock = threading.Lock()
        self._last = 0.0

    def add_total(self, nbytes: int = 0, nfiles: int = 0) -> None:
        with self._lock:
            self.total_bytes += nbytes
            self.total_files += nfiles

    def advance(self, nbytes: int = 0, nfiles: int = 0) -> None:
        with self._lock:
            self.bytes += nbytes
            self.files += nfiles
            now = time.monotonic()
            due = now - self._last >= (0.2 if self.tty else self.interval)
            if due:
                self._last = now
        if due:
            self._report()

    @property
    def rate(self) -> float:
        elapsed = max(time.monotonic() - self.started, 1e-6)
        return self.bytes / elapsed

    def line(self) -> str:
        files = f"{self.files}/{self.total_files} files" if self.total_files else f"{self.files} files"
        size = (
            f"{human_bytes(self.bytes)}/{human_bytes(self.total_bytes)}"
            if self.total_bytes
            else human_bytes(self.bytes)
        )
        return f"{self.label}: {files}, {size}, {human_bytes(self.rate)}/s"

    def _report(self) -> None:
        if self.tty:
            width = 24
            frac = min(self.bytes / self.total_bytes, 1.0) if self.total_bytes else 0.0
            bar = "#" * int(frac * width) + "-" * (width - int(frac * width))
            self.stream.write(f"\r[{bar}] {self.line()}\x1b[K")
            self.stream.flush()
        else:
            log.info(self.line())

    def close(self) -> None:
        if self.tty:
            self._report()
            self.stream.write("\n")
            self.stream.flush()
        else:
            log.info("%s (done in %.1fs)", self.line(), time.monotonic() - self.started)

    def __enter__(self) -> Progress:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
