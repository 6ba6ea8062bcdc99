"""CPU steal: the hypervisor's share of this machine's CPU time, per phase of the run."""

from __future__ import annotations

import psutil

# CPU steal above this share of a phase's CPU time makes its figures incomparable with other runs'.
STEAL_NOTED_PCT = 20.0


class StealMeter:
    """The hypervisor's share of this machine's CPU time (`steal`) per phase.

    On this shared 2-core VM it swung from ~5% to 62% within minutes: the 400-event latency
    experiment gave a new-subscriber p99 of 2.5 s and 9.8 s on the same code, and the raw loop
    ran at 20k-42k msgs/s on one day. A figure means little without it.
    """

    FIELDS = ("user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal")

    def __init__(self) -> None:
        self.phase: str | None = None
        self.last = self._read()
        self.by_phase: dict[str, tuple[float, float]] = {}  # phase -> steal, all CPU time

    def _read(self) -> tuple[float, float]:
        times = psutil.cpu_times()
        steal = getattr(times, "steal", 0.0)  # Linux only; elsewhere none is reported
        return steal, sum(getattr(times, name, 0.0) for name in self.FIELDS)

    def switch(self, phase: str | None) -> None:
        now = self._read()
        if self.phase is not None:
            steal, total = self.by_phase.get(self.phase, (0.0, 0.0))
            self.by_phase[self.phase] = (steal + now[0] - self.last[0], total + now[1] - self.last[1])
        self.phase, self.last = phase, now

    def pct(self, *phases: str) -> float:
        picked = [v for k, v in self.by_phase.items() if not phases or k in phases]
        total = sum(t for _, t in picked)
        return round(100 * sum(s for s, _ in picked) / total, 1) if total else 0.0

    def figures(self) -> dict[str, float]:
        """The run's `cpu_steal_pct*` figures: the whole run, the baseline, latency and intake phases."""
        return {
            "cpu_steal_pct": self.pct(),
            "cpu_steal_pct_baseline": self.pct("baseline"),
            "cpu_steal_pct_latency": self.pct("latency-new", "latency-known"),
            "cpu_steal_pct_intake": self.pct("intake"),
        }


def notes(figures: dict[str, float]) -> list[str]:
    """A note for each steal figure above STEAL_NOTED_PCT."""
    return [
        f"{key} {pct}%: the hypervisor took that share of the CPU"
        for key, pct in figures.items()
        if pct > STEAL_NOTED_PCT
    ]
