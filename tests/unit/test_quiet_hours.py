"""SMS quiet hours: the settings read, MobileConnect's blackoutWindow, and when MC would send."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from stream_app.domain.quiet_hours import QuietHours, hold_note, parse
from stream_app.settings import Settings, SettingsError

TAIPEI_NIGHTS = QuietHours(start=21 * 60, end=9 * 60, utc_offset=8 * 60)


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text).astimezone(UTC)


def test_the_settings_read_into_minutes() -> None:
    assert parse("21:00-09:00", "+08:00") == TAIPEI_NIGHTS
    assert parse(" 9:30 - 17:05 ", "-05:00") == QuietHours(570, 1025, -300)
    assert parse("22:00-07:00", "+0545") == QuietHours(1320, 420, 345)
    assert parse("", "+08:00") is None
    assert parse("  ", "garbage") is None  # off: the offset is not read


@pytest.mark.parametrize(
    ("hours", "offset", "message"),
    [
        ("21-9", "+08:00", "SMS_QUIET_HOURS: expected HH:MM-HH:MM"),
        ("25:00-09:00", "+08:00", "no such time of day"),
        ("21:60-09:00", "+08:00", "no such time of day"),
        ("09:00-09:00", "+08:00", "is empty"),
        ("21:00-09:00", "08:00", "SMS_UTC_OFFSET: expected"),
        ("21:00-09:00", "UTC+8", "SMS_UTC_OFFSET: expected"),
        ("21:00-09:00", "+15:00", "no such offset"),
    ],
)
def test_wrong_settings_say_which_and_why(hours: str, offset: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse(hours, offset)


def test_mobileconnect_gets_its_own_shape() -> None:
    assert TAIPEI_NIGHTS.blackout_window() == {
        "UtcOffset": "+0800",
        "WindowStart": "2100",
        "WindowEnd": "0900",
    }
    assert QuietHours(570, 1025, -330).blackout_window() == {
        "UtcOffset": "-0530",
        "WindowStart": "0930",
        "WindowEnd": "1705",
    }


@pytest.mark.parametrize(
    ("now", "until"),
    [
        ("2026-01-28T20:59:59+08:00", None),
        ("2026-01-28T21:00:00+08:00", "2026-01-29T09:00:00+08:00"),
        ("2026-01-28T23:59:00+08:00", "2026-01-29T09:00:00+08:00"),
        ("2026-01-29T00:00:00+08:00", "2026-01-29T09:00:00+08:00"),
        ("2026-01-29T03:00:00+08:00", "2026-01-29T09:00:00+08:00"),
        ("2026-01-29T08:59:59+08:00", "2026-01-29T09:00:00+08:00"),
        ("2026-01-29T09:00:00+08:00", None),
        ("2026-01-29T12:00:00+08:00", None),
    ],
)
def test_a_window_past_midnight_holds_until_the_morning(now: str, until: str | None) -> None:
    assert TAIPEI_NIGHTS.ends_after(utc(now)) == (utc(until) if until else None)


def test_a_window_within_a_day_and_a_western_offset() -> None:
    lunch = QuietHours(12 * 60, 14 * 60, -5 * 60)  # 12:00-14:00 at UTC-05:00
    assert lunch.ends_after(utc("2026-01-28T12:30:00-05:00")) == utc("2026-01-28T14:00:00-05:00")
    assert lunch.ends_after(utc("2026-01-28T11:59:00-05:00")) is None
    assert lunch.ends_after(utc("2026-01-28T14:00:00-05:00")) is None


def test_the_status_says_until_when_mc_holds_an_sms() -> None:
    assert hold_note(TAIPEI_NIGHTS, utc("2026-01-28T23:00:00+08:00")) == (
        "quiet hours: MC holds it until 2026-01-29T01:00Z"
    )
    assert hold_note(TAIPEI_NIGHTS, utc("2026-01-28T12:00:00+08:00")) == ""
    assert hold_note(None, utc("2026-01-28T23:00:00+08:00")) == ""


def test_quiet_hours_default_to_taiwan_nights_and_empty_turns_them_off(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("SMS_QUIET_HOURS", raising=False)
    monkeypatch.delenv("SMS_UTC_OFFSET", raising=False)
    assert Settings().quiet_hours == TAIPEI_NIGHTS
    monkeypatch.setenv("SMS_QUIET_HOURS", "")
    assert Settings().quiet_hours is None


def test_a_worker_refuses_to_start_on_wrong_quiet_hours(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SMS_QUIET_HOURS", "21:00-9")
    assert any("SMS_QUIET_HOURS" in problem for problem in Settings().problems())
    with pytest.raises(SettingsError, match="SMS_QUIET_HOURS"):
        Settings().check()
