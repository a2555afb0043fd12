"""Peak-memory sampling for benchmarks: RSS of this process (and CUDA when present)."""

from __future__ import annotations

import os
import threading
import time
from types import TracebackType


def rss_bytes(pid: int | None = None) -> int:
    """Resident set size of a process from /proc (0 where unavailable)."""
    try:
        with open(f"/proc/{pid or os.getpid()}/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


def group_rss_bytes(pgid: int) -> int:
    """Summed RSS of every process in a process group (a worker and its pool children)."""
    total = 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            if os.getpgid(int(entry)) == pgid:
                total += rss_bytes(int(entry))
        except (ProcessLookupError, PermissionError):
            continue
    return total


class PeakRSS:
    """Context manager sampling RSS every `interval` s; `.peak` holds the maximum in bytes."""

    def __init__(self, pid: int | None = None, interval: float = 0.02, group: bool = False) -> None:
        self.pid, self.interval, self.peak, self.group = pid, interval, 0, group
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self._sample())
            time.sleep(self.interval)

    def _sample(self) -> int:
        if self.group and self.pid is not None:
            return group_rss_bytes(self.pid)
        return rss_bytes(self.pid)

    def __enter__(self) -> PeakRSS:
        self.peak = self._sample()
        self._thread.start()
        return self

    def __exit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._sample())
