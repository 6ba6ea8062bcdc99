"""Injected faults (``POST /_sandbox/faults``) and the optional request-rate limit.

Every mode but one fails or delays a call *before* MC processes it. ``hold_answer`` (targets soap,
rest, sms) is the other side of the same wire: MC processes the request in full (the sends are
accepted, made at their send time and logged, as ever) and then its HTTP answer is held ``seconds``
(MC answering slowly after its commit, a slow network back). A client killed meanwhile has had its
sends made without ever hearing so: the crash window of the service's ledger, made deterministic.
It fires only for a request that accepted at least ``min_items`` sends (default 1; a Retrieve or
a refused send goes by untouched and does not use the fault up), so a test can wait for a *batch*.
Each held answer is listed by ``GET /_sandbox/held`` (how many sends it accepted, their message ids
and ``NotificationId`` attributes, whether it is still held), so a test awaits the window instead of
sleeping into it; ``DELETE /_sandbox/held`` lets every held answer go now (``?id=N``: that one).
Clearing the faults (or a reset) lets them go too and forgets them.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import deque
from collections.abc import Callable, Mapping, Reversible
from dataclasses import dataclass, field
from typing import Any, Protocol

TARGETS = ("auth", "soap", "rest", "sms", "sftp", "import")
MODES = ("error500", "error429", "timeout", "disconnect", "slow", "hold_answer")
DEFAULT_SECONDS = {"timeout": 30.0, "slow": 3.0, "hold_answer": 60.0}
HOLD = "hold_answer"
HOLD_TARGETS = ("soap", "rest", "sms")  # the calls that accept sends


@dataclass
class Fault:
    target: str
    mode: str
    count: int | None  # remaining; None = unlimited (probability faults without a count)
    probability: float | None = None
    seconds: float = 0.0
    fired: int = 0
    id: int = 0
    min_items: int = 1  # hold_answer only: the fewest sends a request must have accepted

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "id": self.id,
            "target": self.target,
            "mode": self.mode,
            "remaining": self.count,
            "probability": self.probability,
            "seconds": self.seconds,
            "fired": self.fired,
        }
        if self.mode == HOLD:
            out["min_items"] = self.min_items
        return out


class AcceptedSend(Protocol):
    """What a held answer reports of each send its request made (state.Message has both)."""

    @property
    def id(self) -> str: ...

    @property
    def attributes(self) -> Mapping[str, str]: ...


@dataclass
class HeldAnswer:
    """One answer held by a ``hold_answer`` fault, after its request's sends were accepted."""

    id: int
    fault_id: int
    target: str
    message_ids: list[str]
    notification_ids: list[str]
    since: float
    seconds: float
    holding: bool = True
    release: asyncio.Event = field(default_factory=asyncio.Event)

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "fault_id": self.fault_id,
            "target": self.target,
            "items": len(self.message_ids),
            "message_ids": list(self.message_ids),
            "notification_ids": list(self.notification_ids),
            "since": self.since,
            "seconds": self.seconds,
            "holding": self.holding,
        }


class FaultError(ValueError):
    pass


@dataclass
class FaultRegistry:
    faults: list[Fault] = field(default_factory=list)
    held: list[HeldAnswer] = field(default_factory=list)
    _next_id: int = 0
    _next_held: int = 0

    def add(self, body: dict[str, Any]) -> Fault:
        target = str(body.get("target", ""))
        mode = str(body.get("mode", ""))
        if target not in TARGETS:
            raise FaultError(f"target must be one of {', '.join(TARGETS)}")
        if mode not in MODES:
            raise FaultError(f"mode must be one of {', '.join(MODES)}")
        if mode == HOLD and target not in HOLD_TARGETS:
            raise FaultError(f"{HOLD} applies to the calls that accept sends: {', '.join(HOLD_TARGETS)}")
        min_items = int(body.get("min_items", 1))
        if min_items < 1:
            raise FaultError("min_items must be >= 1")
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
        fault = Fault(target, mode, count, probability, seconds, id=self._next_id, min_items=min_items)
        self.faults.append(fault)
        return fault

    def take(self, target: str) -> Fault | None:
        """Consume one firing of the oldest active fault for ``target``, if it fires for this call.
        Not a ``hold_answer`` fault: that one fires after the call was processed (``hold``)."""
        return self._take(target, lambda fault: fault.mode != HOLD)

    def holds_for(self, target: str) -> bool:
        """Whether a ``hold_answer`` fault waits for a call to ``target`` (asked before the call)."""
        return any(f.mode == HOLD and f.target == target for f in self.faults)

    async def hold(self, target: str, accepted: list[AcceptedSend]) -> None:
        """Hold the answer of a processed call that accepted ``accepted``, if a ``hold_answer`` fault
        fires for it: until its seconds pass or someone lets it go (``release_all``)."""
        fault = self._take(target, lambda f: f.mode == HOLD and len(accepted) >= f.min_items)
        if fault is None:
            return
        self._next_held += 1
        held = HeldAnswer(
            self._next_held,
            fault.id,
            target,
            [send.id for send in accepted],
            [notification_id(send.attributes) for send in accepted],
            time.time(),
            fault.seconds,
        )
        self.held.append(held)
        try:
            await asyncio.wait_for(held.release.wait(), fault.seconds)
        except TimeoutError:
            pass
        finally:
            held.holding = False

    def release_all(self, held_id: int | None = None) -> int:
        """Let every held answer go now (or the one with ``held_id``); returns how many were held."""
        holding = [h for h in self.held if h.holding and held_id in (None, h.id)]
        for held in holding:
            held.release.set()
        return len(holding)

    def _take(self, target: str, eligible: Callable[[Fault], bool]) -> Fault | None:
        for fault in list(self.faults):
            if fault.target != target or not eligible(fault):
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
        """No fault any more: the held answers go now and are forgotten (a reset clears too)."""
        self.faults.clear()
        self.release_all()
        self.held.clear()

    def to_json(self) -> list[dict[str, Any]]:
        return [f.to_json() for f in self.faults]


def notification_id(attributes: Mapping[str, str]) -> str:
    """A send's ``NotificationId`` attribute, named case-insensitively as MC's send log does."""
    return next((v for k, v in attributes.items() if k.lower() == "notificationid"), "")


def accepted_since(messages: Reversible[AcceptedSend], last: AcceptedSend | None) -> list[AcceptedSend]:
    """The messages after ``last`` (by identity; all of them when ``last`` is None), oldest first:
    what one call accepted, given the newest message before it."""
    newer: list[AcceptedSend] = []
    for message in reversed(messages):
        if message is last:
            break
        newer.append(message)
    return newer[::-1]


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
