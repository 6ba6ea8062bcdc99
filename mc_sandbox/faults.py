"""Injected faults (``POST /_sandbox/faults``) and the optional request-rate limit."""

from __future__ import annotations

import random
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

TARGETS = ("auth", "soap", "rest", "sms", "sftp", "import")
MODES = ("error500", "error429", "timeout", "disconnect", "slow")
DEFAULT_SECONDS = {"timeout": 30.0, "slow": 3.0}


@dataclass
class Fault:
    target: str
    mode: str
    count: int | None  # remaining; None = unlimited (probability faults without a count)
    probability: float | None = None
    seconds: float = 0.0
    fired: int = 0
    id: int = 0

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "target": self.target,
            "mode": self.mode,
            "remaining": self.count,
            "probability": self.probability,
            "seconds": self.seconds,
            "fired": self.fired,
        }


class FaultError(ValueError):
    pass


@dataclass
class FaultRegistry:
    faults: list[Fault] = field(default_factory=list)
    _next_id: int = 0

    def add(self, body: dict[str, Any]) -> Fault:
        target = str(body.get("target", ""))
        mode = str(body.get("mode", ""))
        if target not in TARGETS:
            raise FaultError(f"target must be one of {', '.join(TARGETS)}")
        if mode not in MODES:
            raise FaultError(f"mode must be one of {', '.join(MODES)}")
        probability = body.get("probability")
        count = body.get("count")
        if probability is not None:
            probability = float(probability)
            if not 0.0 <= probability <= 1.0:
                raise FaultError("probability must be within [0, 1]")
            count = int(count) if count is not None else None
        else:
            count = int(count) if count is not None else 1
            if count < 1:
                raise FaultError("count must be >= 1")
        seconds = float(body.get("seconds", DEFAULT_SECONDS.get(mode, 0.0)))
        self._next_id += 1
        fault = Fault(target, mode, count, probability, seconds, id=self._next_id)
        self.faults.append(fault)
        return fault

    def take(self, target: str) -> Fault | None:
        """Consume one firing of the oldest active fault for ``target``, if it fires for this call."""
        for fault in list(self.faults):
            if fault.target != target:
                continue
            if fault.probability is not None and random.random() >= fault.probability:
                continue
            fault.fired += 1
            if fault.count is not None:
                fault.count -= 1
                if fault.count <= 0:
                    self.faults.remove(fault)
            return fault
        return None

    def clear(self) -> None:
        self.faults.clear()

    def to_json(self) -> list[dict[str, Any]]:
        return [f.to_json() for f in self.faults]


class RateLimiter:
    """At most ``limit`` requests in any 1-second sliding window; 0 disables it."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._stamps: deque[float] = deque()

    def allow(self) -> tuple[bool, int]:
        """Returns (allowed, retry_after_seconds)."""
        if self.limit <= 0:
            return True, 0
        now = time.monotonic()
        while self._stamps and now - self._stamps[0] >= 1.0:
            self._stamps.popleft()
        if len(self._stamps) >= self.limit:
            return False, 1
        self._stamps.append(now)
        return True, 0
