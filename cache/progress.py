"""Progress for long work: a byte bar (total, rate, ETA) on a terminal, a log line every 10 s in a pod.

On a terminal the bar is tqdm's (huggingface_hub already depends on it) and advances as bytes move, not per whole
file; log lines printed meanwhile go above the bar (``hf_cache.logs`` writes through the active bar), never into it.
In a pod (no TTY) a heartbeat thread logs a line every ``interval`` seconds whether or not a byte moved since, so a
single long upload is never silent and a stuck one shows as a line with the same bytes.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from types import TracebackType
from typing import Any, TextIO

from hf_cache import logs, settings

log = logging.getLogger(__name__)
DEFAULT_INTERVAL = settings.PROGRESS_INTERVAL


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


def plural(n: int, word: str) -> str:
    """``1 file``, ``2 files``: counts read right in every summary."""
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def log_interval() -> float:
    """Seconds between a pod's progress lines: ``HFCACHE_PROGRESS_INTERVAL``, default 10."""
    return settings.progress_interval()


def eta_seconds(done: int, total: int, rate: float) -> float | None:
    """Pure: seconds left at ``rate`` bytes/s, or None when unknown (no total or no rate yet)."""
    if total <= 0 or rate <= 0 or done >= total:
        return None if total <= 0 or rate <= 0 else 0.0
    return (total - done) / rate


class Progress:
    """Thread-safe counter of files and bytes that reports itself (a bar on a TTY, heartbeat lines otherwise)."""

    def __init__(
        self,
        label: str,
        total_bytes: int = 0,
        total_files: int = 0,
        interval: float | None = None,
        stream: TextIO | None = None,
        tty: bool | None = None,
    ):
        self.label = label
        self.total_bytes = total_bytes
        self.total_files = total_files
        self.interval = log_interval() if interval is None else interval
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty() if tty is None else tty
        self.bytes = 0
        self.files = 0
        self.downloaded = 0  # bytes fetched from the Hub on their way to S3 (``bytes`` counts what reached S3)
        self.started = time.monotonic()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._bar: Any = None
        self._thread: threading.Thread | None = None
        if self.tty and not logs.quiet():
            from tqdm import tqdm

            self._bar = tqdm(
                total=total_bytes or None,
                unit="B",
                unit_scale=True,
                unit_divisor=1024,
                desc=label,
                file=self.stream,
                dynamic_ncols=True,
                mininterval=0.2,
                leave=True,
            )
            logs.set_bar_writer(self._write_above)
        elif not self.tty and self.interval > 0:  # 0: no periodic lines (a library caller's default, below)
            self._thread = threading.Thread(target=self._heartbeat, name=f"progress-{label}", daemon=True)
            self._thread.start()

    def _write_above(self, text: str) -> None:
        from tqdm import tqdm

        tqdm.write(text, file=self.stream)

    def add_total(self, nbytes: int = 0, nfiles: int = 0) -> None:
        with self._lock:
            self.total_bytes += nbytes
            self.total_files += nfiles
            if self._bar is not None:
                self._bar.total = self.total_bytes or None
                self._bar.refresh()

    def advance(self, nbytes: int = 0, nfiles: int = 0) -> None:
        """Count bytes as they move (negative: s3transfer rewinding a retried part) and files as they finish."""
        with self._lock:
            self.bytes += nbytes
            self.files += nfiles
            if self._bar is not None:
                if nbytes:
                    self._bar.update(nbytes)
                if nfiles:
                    self._bar.set_postfix_str(self._files_text(), refresh=False)

    def received(self, nbytes: int) -> None:
        """Count bytes downloaded (from the Hub) before they are uploaded: shown beside the bar, not in its total."""
        with self._lock:
            self.downloaded += nbytes
            if self._bar is not None:
                self._bar.set_postfix_str(self._files_text(), refresh=False)

    @property
    def rate(self) -> float:
        elapsed = max(time.monotonic() - self.started, 1e-6)
        return self.bytes / elapsed

    def _files_text(self) -> str:
        n = plural(self.files, "file") if not self.total_files else f"{self.files}/{self.total_files} files"
        return n + (f", downloaded {human_bytes(self.downloaded)}" if self.downloaded else "")

    def line(self) -> str:
        size = (
            f"{human_bytes(self.bytes)}/{human_bytes(self.total_bytes)}"
            if self.total_bytes
            else human_bytes(self.bytes)
        )
        text = f"{self.label}: {self._files_text()}, {size}, {human_bytes(self.rate)}/s"
        eta = eta_seconds(self.bytes, self.total_bytes, self.rate)
        return text + (f", ETA {eta:.0f}s" if eta is not None else "")

    def _heartbeat(self) -> None:
        while not self._stop.wait(self.interval):
            log.info(self.line())

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        if self._bar is not None:
            self._bar.close()
            self._bar = None
            logs.set_bar_writer(None)
        elif not self.tty:
            log.info("%s (done in %.1fs)", self.line(), time.monotonic() - self.started)

    def __enter__(self) -> Progress:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
