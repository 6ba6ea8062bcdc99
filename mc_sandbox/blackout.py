"""MobileConnect's ``blackoutWindow`` (reference §4.1): the hours in which MC holds a message.

``{"UtcOffset": "+0800", "WindowStart": "2100", "WindowEnd": "0900"}`` on a
``messageContact/{id}/send``: a message sent while the recipient's clock (UTC plus ``UtcOffset``)
reads between ``WindowStart`` and ``WindowEnd`` is accepted as usual (202, tokenId) and queued; MC
sends it when the window ends ("messages initiated inside of this window will be queued and
delivered once the window is open"). A window whose start is after its end spans midnight.

As MC documents it: without ``UtcOffset`` the window is not honoured (the message goes out now).
Field names are matched case-insensitively like every MobileConnect field. Assumptions [INF]:
times are ``HHmm`` (``HH:mm`` is taken too), offsets ``+HHmm`` (or ``+HH:mm``); a malformed window
is refused with a 400 rather than ignored; a window whose start equals its end holds nothing.

While held, a message reads ``status: scheduled`` with ``scheduled_for`` in the inspection API.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from . import clock

_TIME = re.compile(r"^(\d{2}):?(\d{2})$")
_OFFSET = re.compile(r"^([+-])(\d{2}):?(\d{2})$")


class BlackoutError(ValueError):
    """The window cannot be read: the send is refused with this text (400 ``errors``)."""


@dataclass(frozen=True)
class Window:
    start: int  # minutes after the recipient's midnight
    end: int
    utc_offset: int  # minutes east of UTC

    def hold_until(self, now: datetime) -> datetime | None:
        """When a message sent at `now` goes out (the window's end, UTC), or None: not held."""
        if self.start == self.end:
            return None
        local = now.astimezone(UTC) + timedelta(minutes=self.utc_offset)
        minute = local.hour * 60 + local.minute
        if self.start < self.end:
            inside = self.start <= minute < self.end
        else:
            inside = minute >= self.start or minute < self.end
        if not inside:
            return None
        end = local.replace(hour=self.end // 60, minute=self.end % 60, second=0, microsecond=0)
        if end <= local:
            end += timedelta(days=1)
        return end - timedelta(minutes=self.utc_offset)


def parse(raw: Any) -> Window | None:
    """The request's ``blackoutWindow``: a Window, None when absent or not honoured (no UtcOffset),
    BlackoutError when unreadable."""
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise BlackoutError("blackoutWindow must be an object.")
    fields = {str(k).lower(): v for k, v in raw.items()}
    offset = str(fields.get("utcoffset") or "").strip()
    if not offset:
        return None  # MC: "UtcOffset is required ... for the blackout window to be honored"
    found = _OFFSET.match(offset)
    if not found or int(found.group(3)) > 59:
        raise BlackoutError(f"blackoutWindow.UtcOffset {offset} is not valid.")
    sign, hours, minutes = found.groups()
    utc_offset = (int(hours) * 60 + int(minutes)) * (-1 if sign == "-" else 1)
    return Window(_minutes(fields, "windowstart"), _minutes(fields, "windowend"), utc_offset)


def _minutes(fields: dict[str, Any], name: str) -> int:
    value = str(fields.get(name) or "").strip()
    found = _TIME.match(value)
    if not found or int(found.group(1)) > 23 or int(found.group(2)) > 59:
        label = {"windowstart": "WindowStart", "windowend": "WindowEnd"}[name]
        raise BlackoutError(f"blackoutWindow.{label} {value or '(blank)'} is not valid.")
    return int(found.group(1)) * 60 + int(found.group(2))


@dataclass(eq=False)  # by identity: a set of them
class _Hold:
    until: datetime
    release: Callable[[], None]
    timer: asyncio.TimerHandle | None = None


@dataclass
class Holds:
    """Messages waiting for their window to end, each released once, at the sandbox clock's time.

    Kept apart from the plain timers so that moving the clock (a test) moves their release too."""

    pending: set[_Hold] = field(default_factory=set)

    def hold(self, until: datetime, release: Callable[[], None]) -> None:
        entry = _Hold(until, release)
        self.pending.add(entry)
        self._arm(entry)

    def rearm(self) -> None:
        """The clock moved: each held message goes out when the clock reads its window's end."""
        for entry in self.pending:
            if entry.timer is not None:
                entry.timer.cancel()
            self._arm(entry)

    def clear(self) -> None:
        for entry in self.pending:
            if entry.timer is not None:
                entry.timer.cancel()
        self.pending.clear()

    def _arm(self, entry: _Hold) -> None:
        def fire() -> None:
            if entry in self.pending:
                self.pending.discard(entry)
                entry.release()

        delay = (entry.until - clock.now()).total_seconds()
        entry.timer = asyncio.get_running_loop().call_later(max(0.0, delay), fire)
