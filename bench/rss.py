"""A worker's resident memory, sampled in a thread and labelled with the run's phase."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

import psutil


@dataclass
class RssSampler:
    """Samples one process's RSS every `interval` seconds, labelled with the current phase."""

    pid: int
    interval: float = 0.2
    phase: str = "start"
    samples: list[tuple[float, str, int]] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> None:
        proc = psutil.Process(self.pid)

        def run() -> None:
            while not self._stop.wait(self.interval):
                try:
                    self.samples.append((time.monotonic(), self.phase, proc.memory_info().rss))
                except psutil.Error:
                    return

        self._thread = threading.Thread(target=run, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(2)

    def peak_mb(self, *phases: str) -> float:
        """The highest sample of these phases (of all when none are named), in MiB; 0 without samples."""
        values = [rss for _, phase, rss in self.samples if not phases or phase in phases]
        return max(values, default=0) / 2**20
