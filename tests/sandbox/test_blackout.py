"""MobileConnect's blackoutWindow (reference §4.1): MC holds a message sent inside it until it ends."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from mc_sandbox.blackout import BlackoutError, Window, parse
from tests.fixtures.sandbox import SandboxProcess

from .helpers import client, get_json, wait_for

SMS = "sms/v1/messageContact/packet-drawn-welcome/send"
NIGHTS = {"UtcOffset": "+0800", "WindowStart": "2100", "WindowEnd": "0900"}


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(UTC)


def test_the_window_is_read_as_mc_takes_it() -> None:
    assert parse(NIGHTS) == Window(21 * 60, 9 * 60, 480)
    assert parse({"utcoffset": "-05:00", "windowstart": "12:30", "WINDOWEND": "1400"}) == Window(
        750, 840, -300
    )
    assert parse(None) is None
    # MC honours no window without its UtcOffset.
    assert parse({"WindowStart": "2100", "WindowEnd": "0900"}) is None


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ("2100-0900", "must be an object"),
        ({**NIGHTS, "UtcOffset": "8"}, "UtcOffset 8 is not valid"),
        ({**NIGHTS, "WindowStart": "2500"}, "WindowStart 2500 is not valid"),
        ({**NIGHTS, "WindowEnd": ""}, r"WindowEnd \(blank\) is not valid"),
    ],
)
def test_an_unreadable_window_is_refused(raw: Any, message: str) -> None:
    with pytest.raises(BlackoutError, match=message):
        parse(raw)


@pytest.mark.parametrize(
    ("now", "until"),
    [
        ("2026-01-28T12:59:00Z", None),  # 20:59 in Taipei
        ("2026-01-28T13:00:00Z", "2026-01-29T01:00:00Z"),  # 21:00
        ("2026-01-28T18:30:00Z", "2026-01-29T01:00:00Z"),  # 02:30
        ("2026-01-29T00:59:59Z", "2026-01-29T01:00:00Z"),  # 08:59:59
        ("2026-01-29T01:00:00Z", None),  # 09:00: open
    ],
)
def test_a_message_is_held_until_the_window_ends(now: str, until: str | None) -> None:
    window = parse(NIGHTS)
    assert window is not None
    assert window.hold_until(utc(now)) == (utc(until) if until else None)
    assert Window(600, 600, 0).hold_until(utc(now)) is None  # start == end holds nothing


def _clock(base: str, now: str) -> None:
    httpx.post(f"{base}_sandbox/clock", json={"now": now}, timeout=10).raise_for_status()


def _send(c: httpx.Client, number: str, window: Any = None) -> httpx.Response:
    body: dict[str, Any] = {
        "Subscribers": [
            {"MobileNumber": number, "SubscriberKey": f"K{number}", "Attributes": {"NotificationId": number}}
        ],
        "Override": True,
        "messageText": "hi",
        # MobileConnect delivers only to numbers subscribed to the keyword (the pipeline asks so).
        "Subscribe": True,
        "keyword": "EZTABLE",
    }
    if window is not None:
        body["blackoutWindow"] = window
    return c.post(SMS, json=body)


def _message(base: str, number: str) -> dict[str, Any]:
    (found,) = [m for m in get_json(base, "_sandbox/messages") if m["to"] == number]
    return found


def test_an_sms_sent_in_the_window_goes_out_when_it_ends(clean_sandbox: SandboxProcess) -> None:
    base = clean_sandbox.http_url
    _clock(base, "2026-01-28T23:30:00+08:00")
    with client(base) as c:
        held = _send(c, "886911000001", NIGHTS)
        assert held.status_code == 202 and held.json()["tokenId"]  # accepted like any send
        assert _send(c, "886911000002", {"WindowStart": "2100", "WindowEnd": "0900"}).status_code == 202
        assert _send(c, "886911000003").status_code == 202
        refused = _send(c, "886911000004", {**NIGHTS, "WindowEnd": "9am"})
        assert refused.status_code == 400
        assert refused.json() == {"errors": ["blackoutWindow.WindowEnd 9am is not valid."]}

        message = _message(base, "886911000001")
        assert (message["status"], message["scheduled_for"]) == ("scheduled", "2026-01-29T01:00:00.000Z")
        deliveries = c.get(f"sms/v1/messageContact/packet-drawn-welcome/deliveries/{held.json()['tokenId']}")
        assert deliveries.json()["status"] == "Queuing"
        # Without UtcOffset, or without a window, nothing waits.
        for number in ("886911000002", "886911000003"):
            sent = wait_for(lambda n=number: _message(base, n)["status"] == "delivered" and _message(base, n))
            assert sent["scheduled_for"] is None
        logged = [r["NotificationId"] for r in get_json(base, "_sandbox/send-log")["SMSSendLog"]]
        assert "886911000001" not in logged

        _clock(base, "2026-01-29T08:59:59+08:00")
        assert _message(base, "886911000001")["status"] == "scheduled"
        sent = wait_for(
            lambda: _message(base, "886911000001")["status"] == "delivered" and _message(base, "886911000001")
        )
        assert utc(sent["sent_at"]) >= utc("2026-01-29T01:00:00Z")
        assert utc(sent["received_at"]) < utc("2026-01-28T16:00:00Z")  # held from 23:30 Taipei
        logged = [r["NotificationId"] for r in get_json(base, "_sandbox/send-log")["SMSSendLog"]]
        assert "886911000001" in logged
        assert (
            c.get(f"sms/v1/messageContact/packet-drawn-welcome/deliveries/{held.json()['tokenId']}").json()[
                "status"
            ]
            == "Finished"
        )


def test_outside_the_window_an_sms_goes_at_once(clean_sandbox: SandboxProcess) -> None:
    base = clean_sandbox.http_url
    _clock(base, "2026-01-28T12:00:00+08:00")
    with client(base) as c:
        assert _send(c, "886911000005", NIGHTS).status_code == 202
    sent = wait_for(
        lambda: _message(base, "886911000005")["status"] == "delivered" and _message(base, "886911000005")
    )
    assert sent["scheduled_for"] is None


def test_a_reset_puts_the_clock_back_and_drops_the_held(clean_sandbox: SandboxProcess) -> None:
    base = clean_sandbox.http_url
    _clock(base, "2026-01-28T23:30:00+08:00")
    with client(base) as c:
        assert _send(c, "886911000006", NIGHTS).status_code == 202
    assert get_json(base, "_sandbox/clock")["now"].startswith("2026-01-28T15:30")
    httpx.post(f"{base}_sandbox/reset", timeout=10).raise_for_status()
    clock = get_json(base, "_sandbox/clock")
    assert clock["offset_seconds"] == 0 and abs(utc(clock["now"]) - datetime.now(UTC)).total_seconds() < 5
    assert get_json(base, "_sandbox/messages") == []
    assert httpx.post(f"{base}_sandbox/clock", json={"now": "tomorrow"}, timeout=10).status_code == 400
