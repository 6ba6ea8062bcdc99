"""The sandbox's clock: the real one, unless a test moved it (``POST /_sandbox/clock``).

MC's behaviour that depends on the time of day (MobileConnect's ``blackoutWindow``, blackout.py) can
only be tested at night, or with a clock a test can set: "it is 08:59:55 in Taipei" and then see a
held SMS go out five seconds later. Every time the sandbox reads or reports (``state.utcnow``) is
this clock's, so what the inspection API shows stays consistent; timers already running keep their
real delays, except the blackout holds, which are re-armed when the clock moves (blackout.Holds).

One clock per process, as there is one sandbox per process (``python -m mc_sandbox``).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

_offset = timedelta(0)


def now() -> datetime:
    return datetime.now(UTC) + _offset


def offset_seconds() -> float:
    return _offset.total_seconds()


def set_now(when: datetime) -> None:
    """From now on the clock reads `when` (aware), and runs on at the real pace."""
    global _offset
    _offset = when.astimezone(UTC) - datetime.now(UTC)


def advance(seconds: float) -> None:
    global _offset
    _offset += timedelta(seconds=seconds)


def reset() -> None:
    global _offset
    _offset = timedelta(0)
