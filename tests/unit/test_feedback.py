"""MC's feedback read into outcomes, and the suppression rules (issue 18): pure functions."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

import orjson
import pytest

from stream_app.cli.suppression import lift_record
from stream_app.contract.schemas import validate
from stream_app.domain import feedback as rules
from stream_app.domain import suppression
from stream_app.mc.tracking import SendLogEntry, TrackingEvent, mc_datetime

WHEN = datetime(2026, 1, 28, 4, 0, 0, 123000, tzinfo=UTC)


def event(kind: str = "BounceEvent", **fields: Any) -> TrackingEvent:
    base: dict[str, Any] = {
        "kind": kind,
        "send_id": 1888001,
        "batch_id": 7,
        "subscriber_key": "M1",
        "event_date": WHEN,
        "event_type": "HardBounce",
    }
    return TrackingEvent(**{**base, **fields})


def logged(**fields: Any) -> SendLogEntry:
    base: dict[str, Any] = {
        "job_id": 1888001,
        "batch_id": 7,
        "subscriber_key": "M1",
        "notification_id": "d-1:packet-drawn-drawer",
        "email": "m1@bounce.example",
        "error_code": None,
    }
    return SendLogEntry(**{**base, **fields})


def test_a_tracking_event_and_its_send_log_row_name_one_message() -> None:
    assert event().message == logged().message == (1888001, 7, "M1")
    assert event(batch_id=None).message is None


def test_the_identity_is_stable_and_tells_events_apart() -> None:
    assert event().identity == event().identity and len(event().identity) == 20
    assert event().identity != event(batch_id=8).identity
    assert event().identity != event(event_date=WHEN + timedelta(milliseconds=1)).identity
    assert event().identity != event(kind="SentEvent", event_type="Sent").identity


def test_rows_are_read_as_mc_writes_them() -> None:
    row = SimpleNamespace(
        SendID="1888001",
        BatchID=7,
        SubscriberKey=" M1 ",
        EventDate="2026-01-28T04:00:00.123",  # no zone: read as UTC
        EventType="SoftBounce",
        TriggeredSendDefinitionObjectID="abc",
        SMTPCode="452",
        BounceCategory="Soft bounce",
        SMTPReason="452 4.2.2 Mailbox full",
        BounceType="delayed",
    )
    found = TrackingEvent.from_row("BounceEvent", row)
    assert found is not None and found.event_date == WHEN and found.subscriber_key == "M1"
    assert (found.send_id, found.batch_id, found.smtp_code) == (1888001, 7, "452")
    assert TrackingEvent.from_row("SentEvent", SimpleNamespace(EventDate=None)) is None
    assert mc_datetime("2026-01-28T04:00:00.123Z") == WHEN
    entry = SendLogEntry.from_values(
        {"jobid": "1888001", "batchid": "7", "subscriberkey": "M1", "notificationid": "n", "errorcode": "0"}
    )
    assert entry.message == (1888001, 7, "M1") and entry.error_code is None and entry.email is None


def test_the_notification_is_read_from_the_ledger_key() -> None:
    ref = rules.notification_of("d-1:x:packet-drawn-giver#resend@3:120")
    assert ref == rules.NotificationRef(
        "d-1:x:packet-drawn-giver#resend@3:120", "d-1:x:packet-drawn-giver", "d-1:x", "packet-drawn-giver"
    )
    assert rules.notification_of("no-template") is None


@pytest.mark.parametrize(
    ("fields", "status", "reason", "kind", "code"),
    [
        (
            {"event_type": "HardBounce", "smtp_code": "550", "smtp_reason": "550 5.1.1 User unknown"},
            "bounced",
            "hard bounce (SMTP 550): 550 5.1.1 User unknown",
            "HardBounce",
            "HARD",
        ),
        (
            {"event_type": "", "bounce_category": "Soft bounce", "smtp_code": "452"},
            "bounced",
            "soft bounce (SMTP 452): Soft bounce",
            "SoftBounce",
            "SOFT",
        ),
        (
            {"event_type": "OtherBounce", "bounce_category": "Block bounce"},
            "bounced",
            "other bounce (no SMTP code): Block bounce",
            "OtherBounce",
            "OTHER",
        ),
    ],
)
def test_bounces(fields: dict[str, Any], status: str, reason: str, kind: str, code: str) -> None:
    assert rules.email_outcome(event(**fields), logged()) == rules.EmailOutcome(status, reason, kind, code)


def test_unsubscribes_not_sent_and_sent() -> None:
    unsub = rules.email_outcome(event("UnsubEvent", event_type="Unsubscribe"), logged())
    assert (unsub.status, unsub.bounce_kind) == ("unsubscribed", "Unsubscribe")
    not_sent = rules.email_outcome(event("NotSentEvent", event_type="NotSent"), logged(error_code="2"))
    assert not_sent == rules.EmailOutcome(
        "not_sent", "MC did not send it (NotSentEvent; send log ErrorCode 2)"
    )
    silent = rules.email_outcome(event("NotSentEvent", event_type="NotSent"), logged())
    assert silent.reason.endswith("MC gives no reason)")
    sent = rules.email_outcome(event("SentEvent", event_type="Sent"), logged())
    assert sent.status is None and sent.bounce_kind is None


def _track(*codes: str) -> list[dict[str, str]]:
    return [{"mobileNumber": "886912345678", "standardStatusCode": c, "description": f"d{c}"} for c in codes]


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        ({"status": "Queuing", "tracking": []}, None),
        ({"status": "Started", "tracking": _track("3000")}, None),
        ({"status": "Finished", "tracking": _track("2000", "4000")}, ("delivered", "4000 d4000")),
        (
            {"status": "Finished", "tracking": _track("2000")},
            ("delivered", "2000 d2000 (final for shared codes)"),
        ),
        ({"status": "Started", "tracking": _track("2000")}, None),
        ({"status": "Finished", "tracking": _track("2000", "4501")}, ("undeliverable", "4501 d4501")),
        ({"status": "Finished", "tracking": _track("2500")}, ("undeliverable", "2500 d2500")),
        ({"status": "Finished", "count": 0, "tracking": []}, ("undeliverable", None)),
        ({"status": "Error"}, ("undeliverable", "MobileConnect reports the send as Error")),
        ("nonsense", None),
    ],
)
def test_sms_delivery_status(payload: Any, expected: tuple[str, str | None] | None) -> None:
    found = rules.sms_outcome(payload)
    if expected is None:
        assert found is None
        return
    assert found is not None and found.status == expected[0]
    if expected[1] is not None:
        assert found.reason == expected[1]
    else:
        assert "not subscribed" in found.reason


@pytest.mark.parametrize(
    ("kind", "code", "action"),
    [
        ("HardBounce", "HARD", suppression.SUPPRESS),
        ("Unsubscribe", None, suppression.SUPPRESS),
        ("EmailUnsubscribe", None, suppression.SUPPRESS),
        ("EmailBounced", "HARD", suppression.SUPPRESS),
        ("EmailBounced", "SOFT", suppression.SOFT),
        ("EmailBounced", None, suppression.SUPPRESS),
        ("SoftBounce", "SOFT", suppression.SOFT),
        ("OtherBounce", "OTHER", suppression.SOFT),
        ("Lifted", None, suppression.LIFT),
    ],
)
def test_who_goes_on_the_list(kind: str, code: str | None, action: str) -> None:
    assert suppression.action(kind, code) == action


def test_mcs_soft_bounce_rule_three_spanning_the_window_each_counted_once() -> None:
    day = timedelta(days=1)
    raw, added = suppression.add_soft_bounce(None, "a", (WHEN).isoformat())
    assert added and not suppression.soft_rule_met(raw, 3, 15)
    raw, added = suppression.add_soft_bounce(raw, "a", (WHEN + day).isoformat())
    assert not added  # the same MC event relayed again
    raw, _ = suppression.add_soft_bounce(raw, "b", (WHEN + day).isoformat())
    raw, _ = suppression.add_soft_bounce(raw, "c", (WHEN + 14 * day).isoformat().replace("+00:00", "Z"))
    assert not suppression.soft_rule_met(raw, 3, 15)  # three, but over 14 days
    raw, _ = suppression.add_soft_bounce(raw, "d", (WHEN + 15 * day).isoformat())
    assert suppression.soft_rule_met(raw, 3, 15)
    many = raw
    for n in range(20):
        many, _ = suppression.add_soft_bounce(many, f"x{n}", (WHEN + (20 + n) * day).isoformat())
    assert len(orjson.loads(many)) == suppression.SOFT_BOUNCES_KEPT


def test_a_lift_is_an_email_bounced_record_with_the_operator_and_reason() -> None:
    record = lift_record(" Someone@Example.com ", "mailbox fixed", "ops")
    assert (record.email, record.kind, record.reason) == (
        "someone@example.com",
        "Lifted",
        "lifted by ops: mailbox fixed",
    )
    assert validate("email.bounced", orjson.loads(record.dumps(serializer="json")))["kind"] == "Lifted"


def test_the_status_schema_names_the_outcomes_after_sent() -> None:
    base = {
        "notification_id": "d-1:packet-drawn-drawer",
        "event_id": "d-1",
        "channel": "email",
        "template": "packet-drawn-drawer",
        "subscriber_key": "M1",
        "at": "2026-01-28T04:00:00Z",
    }
    for status in sorted(rules.FEEDBACK_STATUSES):
        assert validate("notification.status", {**base, "status": status})["status"] == status
