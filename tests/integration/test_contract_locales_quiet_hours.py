"""Issue 20 on the real broker and the sandbox: a redemption exactly as design.md §4 writes it, each
member's own language, and SMS quiet hours held by MobileConnect itself."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from stream_app.contract.examples import redeemed_example
from tests.fixtures.worker import start_worker
from tests.integration.helpers import (
    drawn_event,
    eventually,
    messages,
    private_stack,
    produce,
    statuses,
    unique,
)

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="session")]


def _view(pipeline: Any, event_id: str, outcomes: int) -> dict[str, Any] | None:
    view: dict[str, Any] = httpx.get(f"{pipeline.web_url}events/{event_id}/", timeout=10).json()
    done = [n for n in view["notifications"] if n.get("status")]
    return view if len(done) >= outcomes else None


async def test_a_redemption_exactly_as_design_md_writes_it_mails_the_giver(
    kafka: Any, sandbox: Any, pipeline: Any
) -> None:
    parties = drawn_event()  # fresh members: the sandbox is shared
    event = redeemed_example(
        event_id=unique("r"), packet_id=unique("RP"), drawer=parties["drawer"], giver=parties["giver"]
    )
    assert "amount" not in event and {"spent_amount", "cashback_amount"} <= set(event)
    await produce(kafka.bootstrap, "packet.redeemed", event, key=event["packet_id"].encode())

    (sent,) = await eventually(lambda: messages(sandbox, event), timeout=30)
    assert (sent["definition_key"], sent["subscriber_key"]) == (
        "packet-redeemed-giver",
        event["giver"]["member_id"],
    )
    assert sent["to"] == event["giver"]["email"] and sent["from_name"] == "EZ via EZTABLE"
    assert sent["text"] == "你的朋友 EZ 用了你送的紅包，你獲得 $100 EZCASH 回饋！"
    assert "Amount" not in sent["attributes"]
    (status,) = await eventually(lambda: statuses(kafka.bootstrap, event["event_id"]))
    assert status["status"] == "sent"
    # Nothing of it went to the DLQ: the event view shows it received and sent.
    view = await eventually(lambda: _view(pipeline, event["event_id"], outcomes=1))
    assert view["steps"][0]["stage"] == "received"


async def test_each_member_reads_their_own_language_in_one_event(
    kafka: Any, sandbox: Any, pipeline: Any
) -> None:
    event = drawn_event(drawer__locale="en", giver__locale="zh-TW")
    await produce(kafka.bootstrap, "packet.drawn", event, key=event["packet_id"].encode())

    sent = await eventually(
        lambda: len(messages(sandbox, event)) >= 3 and messages(sandbox, event), timeout=30
    )
    by_key = {m["definition_key"]: m for m in sent}
    assert set(by_key) == {"packet-drawn-drawer-en", "packet-drawn-welcome-en", "packet-drawn-giver"}
    drawer = by_key["packet-drawn-drawer-en"]
    assert drawer["subscriber_key"] == event["drawer"]["member_id"]
    assert drawer["text"] == (
        "Dear EZ, lucky you! You drew the $250 red envelope TABLE sent. "
        "Use it straight away on a restaurant booking!"
    )
    assert drawer["from_name"] == "TABLE via EZTABLE"
    sms = by_key["packet-drawn-welcome-en"]
    assert sms["text"] == (
        "TABLE sent you a $250 red envelope! Use it on any EZTABLE booking. Enjoy your meal, EZ."
    )
    giver = by_key["packet-drawn-giver"]
    assert giver["subscriber_key"] == event["giver"]["member_id"]
    assert giver["text"] == "你的朋友 EZ 抽到你發的 $250 EZCASH 紅包！只要他消費你就能得到 $100 回饋！"

    view = await eventually(lambda: _view(pipeline, event["event_id"], outcomes=3))
    locales = {n["notification_id"].split(":")[-1]: n.get("locale") for n in view["notifications"]}
    assert locales == {
        "packet-drawn-drawer": "en",
        "packet-drawn-welcome": "en",
        "packet-drawn-giver": "zh-TW",
    }


def _when(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def _sms(sandbox: Any, event: dict[str, Any]) -> dict[str, Any] | None:
    return next((m for m in messages(sandbox, event) if m["channel"] == "sms"), None)


async def test_an_sms_produced_in_quiet_hours_is_held_by_mobileconnect_until_they_end(tmp_path: Path) -> None:
    """The window is set around now in Taipei time (the default SMS_UTC_OFFSET): opened ten minutes
    ago, it ends at a whole minute, as MC's HHmm window does. Once MC shows the SMS scheduled for that
    end, the sandbox's test clock is moved to five seconds before it, and the SMS must go out then:
    not before, and without anyone waiting half an hour."""
    taipei = datetime.now(UTC) + timedelta(hours=8)
    opened = taipei.replace(second=0, microsecond=0) - timedelta(minutes=10)
    ends = opened + timedelta(minutes=40)
    window_end_utc = (ends - timedelta(hours=8)).replace(tzinfo=UTC)
    quiet_hours = f"{opened:%H:%M}-{ends:%H:%M}"

    with private_stack(tmp_path) as (kafka, sandbox):
        worker = start_worker(kafka, sandbox, tmp_path / "worker", SMS_QUIET_HOURS=quiet_hours)
        try:
            worker.wait_ready()
            event = drawn_event()
            await produce(kafka.bootstrap, "packet.drawn", event, key=event["packet_id"].encode())

            held = await eventually(lambda: (m := _sms(sandbox, event)) and m["status"] == "scheduled" and m)
            assert _when(held["scheduled_for"]) == window_end_utc
            assert held["text"].startswith("TABLE 送你 $250 紅包")
            # Quiet hours are the SMS's alone: the emails of the same event are not held.
            emails = await eventually(
                lambda: [m for m in messages(sandbox, event) if m["channel"] == "email"] or None
            )
            assert all(m["status"] != "scheduled" for m in emails)
            # The worker's own account says MC holds it, and until when.
            sms_status = await eventually(lambda: _sms_status(kafka, event))
            assert sms_status["status"] == "sent"
            assert sms_status["reason"] == (
                f"quiet hours: MC holds it until {window_end_utc:%Y-%m-%dT%H:%M}Z"
            )

            moved = httpx.post(
                f"{sandbox.http_url}_sandbox/clock",
                json={"now": (window_end_utc - timedelta(seconds=5)).isoformat()},
                timeout=10,
            )
            moved.raise_for_status()
            assert _sms(sandbox, event)["status"] == "scheduled"  # type: ignore[index]

            released = await eventually(
                lambda: (m := _sms(sandbox, event)) and m["status"] != "scheduled" and m, timeout=20
            )
            assert released["status"] in ("sent", "delivered")
            assert _when(released["sent_at"]) >= window_end_utc
            # Five seconds of the moved clock, not forty minutes: it went when the window ended.
            assert _when(released["sent_at"]) - window_end_utc < timedelta(seconds=3)
        finally:
            worker.stop()


async def _sms_status(kafka: Any, event: dict[str, Any]) -> dict[str, Any] | None:
    found = await statuses(kafka.bootstrap, event["event_id"])
    return next((s for s in found if s["template"] == "packet-drawn-welcome"), None)
