"""SMS quiet hours: the local hours in which no SMS goes out, as MobileConnect's `blackoutWindow`.

MC holds a message sent inside the window and sends it when the window ends (reference §4.1), so
the worker never delays an SMS itself: it passes the window with every send, and MC's queue, not a
timer of ours, carries the message to the morning. Minute precision, as MC takes it (`HHmm`).

`SMS_QUIET_HOURS` is `HH:MM-HH:MM` in local time (`21:00-09:00` wraps past midnight; empty: none);
`SMS_UTC_OFFSET` is the members' local offset from UTC, `+08:00` for Taiwan (no daylight saving).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

_HOURS = re.compile(r"^\s*(\d{1,2}):(\d{2})\s*-\s*(\d{1,2}):(\d{2})\s*$")
_OFFSET = re.compile(r"^\s*([+-])(\d{2}):?(\d{2})\s*$")


@dataclass(frozen=True)
class QuietHours:
    start: int  # minutes after local midnight at which the window opens
    end: int  # ... and at which it ends (smaller than `start`: it wraps past midnight)
    utc_offset: int  # minutes east of UTC

    def blackout_window(self) -> dict[str, str]:
        """MobileConnect's `blackoutWindow` (reference §4.1); `UtcOffset` is what makes MC honour it."""
        sign = "-" if self.utc_offset < 0 else "+"
        hours, minutes = divmod(abs(self.utc_offset), 60)
        return {
            "UtcOffset": f"{sign}{hours:02d}{minutes:02d}",
            "WindowStart": _hhmm(self.start),
            "WindowEnd": _hhmm(self.end),
        }

    def ends_after(self, now: datetime) -> datetime | None:
        """When the window holding a message sent at `now` ends (aware, UTC), or None when `now`
        is outside it: what MC will do with an SMS sent now, for the trace."""
        local = now.astimezone(UTC) + timedelta(minutes=self.utc_offset)
        minute = local.hour * 60 + local.minute
        inside = (
            self.start <= minute < self.end
            if self.start < self.end
            else minute >= self.start or minute < self.end
        )
        if not inside:
            return None
        day = local.replace(hour=0, minute=0, second=0, microsecond=0)
        end = day + timedelta(minutes=self.end)
        if end <= local:
            end += timedelta(days=1)
        return end - timedelta(minutes=self.utc_offset)


def hold_note(hours: QuietHours | None, now: datetime) -> str:
    """What becomes of an SMS MC accepts at `now`: "" (sent now), or until when MC holds it, for the
    notification's status: `sent` means accepted by MC, and an operator asks why the phone is silent."""
    until = hours.ends_after(now) if hours else None
    if until is None:
        return ""
    return f"quiet hours: MC holds it until {until.isoformat(timespec='minutes').replace('+00:00', 'Z')}"


def _hhmm(minutes: int) -> str:
    return f"{minutes // 60:02d}{minutes % 60:02d}"


def parse(hours: str, utc_offset: str) -> QuietHours | None:
    """`SMS_QUIET_HOURS` and `SMS_UTC_OFFSET` read; None when the hours are empty (no quiet hours).

    ValueError says which setting is wrong: a worker must not start sending at 03:00 on a typo."""
    if not hours.strip():
        return None
    found = _HOURS.match(hours)
    if not found:
        raise ValueError(f"SMS_QUIET_HOURS: expected HH:MM-HH:MM (e.g. 21:00-09:00), got {hours!r}")
    h1, m1, h2, m2 = (int(g) for g in found.groups())
    if h1 > 23 or h2 > 23 or m1 > 59 or m2 > 59:
        raise ValueError(f"SMS_QUIET_HOURS: no such time of day in {hours!r}")
    start, end = h1 * 60 + m1, h2 * 60 + m2
    if start == end:
        raise ValueError(f"SMS_QUIET_HOURS: the window {hours!r} is empty; leave it empty for none")
    offset = _OFFSET.match(utc_offset)
    if not offset:
        raise ValueError(f"SMS_UTC_OFFSET: expected +HH:MM or -HH:MM (e.g. +08:00), got {utc_offset!r}")
    sign, oh, om = offset.groups()
    minutes = int(oh) * 60 + int(om)
    if int(om) > 59 or minutes > 14 * 60:
        raise ValueError(f"SMS_UTC_OFFSET: no such offset {utc_offset!r}")
    return QuietHours(start, end, -minutes if sign == "-" else minutes)
