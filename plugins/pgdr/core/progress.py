"""Progress lines for long work: bytes done, rate and ETA, at a steady cadence."""

from __future__ import annotations

import logging
import threading
import time


def human_bytes(count: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(count) < 1024 or unit == "TB":
            return f"{count:.1f} {unit}" if unit != "B" else f"{int(count)} B"
        count /= 1024
    return f"{count:.1f} TB"


class Progress:
    """Thread-safe byte counter that logs at most every ``interval`` seconds."""

    def __init__(self, label: str, log: logging.Logger, total: int | None = None, interval: float = 5.0) -> None:
        self.label = label
        self.log = log
        self.total = total
        self.interval = interval
        self.done = 0
        self.started = time.monotonic()
        self._last_log = self.started
        self._lock = threading.Lock()

    def __call__(self, count: int) -> None:
        """boto3 transfer callbacks call this with the bytes just sent."""
        self.add(count)

    def add(self, count: int) -> None:
        with self._lock:
            self.done += count
            now = time.monotonic()
            due = now - self._last_log >= self.interval
            if due:
                self._last_log = now
        if due:
            self.log.info("%s", self.line())


    @property
    def elapsed(self) -> float:
        return max(time.monotonic() - self.started, 1e-9)

    @property
    def rate(self) -> float:
        return self.done / self.elapsed

    def line(self) -> str:
        text = f"{self.label}: {human_bytes(self.done)}"
        if self.total:
            pct = 100.0 * self.done / self.total
            text += f" of {human_bytes(self.total)} ({pct:.0f}%)"
        text += f", {self.rate / 1e6:.1f} MB/s"
        if self.total and self.rate > 0 and self.done < self.total:
            text += f", ETA {(self.total - self.done) / self.rate:.0f} s"
        return text

    def finish(self) -> str:
        line = f"{self.label} done: {human_bytes(self.done)} in {self.elapsed:.1f} s, {self.rate / 1e6:.1f} MB/s"
        self.log.info("%s", line)
        return line
