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
from stream_app.mc.dates import MC_ZONE, from_epoch_ms, iso_utc, mc_time
from stream_app.mc.tracking import SendLogEntry, TrackingEvent

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
        EventDate="2026-01-27T22:00:00.123",  # no zone: MC's CST (UTC-6)
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
    assert mc_time("2026-01-28T04:00:00.123Z") == WHEN
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


# ------------------------------------------------------------------------------------------ MC's dates


def test_mcs_dates_without_a_zone_are_cst_all_year() -> None:
    assert mc_time("2026-01-27T22:00:00.123") == WHEN  # winter
    # Summer too: MC's servers keep CST (UTC-6), never daylight time.
    assert mc_time("2026-07-01T06:00:00") == datetime(2026, 7, 1, 12, 0, tzinfo=UTC)
    assert mc_time(datetime(2026, 1, 27, 22, 0, 0, 123000)) == WHEN  # zeep's naive dateTime
    assert mc_time("2026-01-28T04:00:00.123Z") == mc_time("2026-01-28T04:00:00.123+00:00") == WHEN
    assert mc_time("2026-01-27T23:00:00.123-05:00") == WHEN  # an offset is taken as written
    assert mc_time(WHEN) is WHEN
    assert mc_time("") is None and mc_time(None) is None and mc_time("soon") is None
    assert MC_ZONE.utcoffset(None) == timedelta(hours=-6)
    assert from_epoch_ms(1769572800123) == WHEN and from_epoch_ms("x") is None
    assert iso_utc(mc_time("2026-01-27T22:00:00.123") or WHEN) == "2026-01-28T04:00:00.123000Z"


def test_an_event_at_the_mark_is_known_to_the_next_pass_only_if_its_cst_date_is_read_as_cst() -> None:
    """A pass over [mark, upper] keeps the events at exactly `upper`; the next pass, which reads
    them again (`between` includes both ends), skips them. MC writes 22:00:00.123 CST for WHEN."""
    row = SimpleNamespace(SendID=1, BatchID=2, SubscriberKey="M1", EventDate="2026-01-27T22:00:00.123")
    page = [found for found in [TrackingEvent.from_row("SentEvent", row)] if found is not None]
    new, at_upper = rules.page_split(page, set(), WHEN)
    assert new == page and at_upper == {page[0].identity}
    again, _ = rules.page_split(page, at_upper, WHEN + timedelta(seconds=30))
    assert again == []  # not reported twice
    # Read as UTC (six hours early) the event would not be at the mark, and would come back.
    wrong = TrackingEvent(**{**page[0].__dict__, "event_date": WHEN - timedelta(hours=6)})
    assert rules.page_split([wrong], set(), WHEN)[1] == set()


def test_the_soft_bounce_window_spans_a_soap_date_and_an_ens_date_in_one_zone() -> None:
    """One address soft-bounced on both paths: a BounceEvent (EventDate, CST text) then, a day short
    of 15 later, ENS (timestampUTC). 14 days and 23 hours: MC's rule is not met. Were the CST text
    read as UTC, the first would seem six hours earlier and the span 15 days and 5 hours."""
    first = mc_time("2026-01-27T22:00:00.123")  # WHEN
    assert first is not None
    ens_ms = int((WHEN + timedelta(days=15, hours=-1)).timestamp() * 1000)
    second = from_epoch_ms(ens_ms)
    assert second is not None
    raw, _ = suppression.add_soft_bounce(None, "soap", iso_utc(first))
    raw, _ = suppression.add_soft_bounce(raw, "middle", iso_utc(WHEN + timedelta(days=7)))
    raw, _ = suppression.add_soft_bounce(raw, "ens", iso_utc(second))
    assert not suppression.soft_rule_met(raw, 3, 15)
    misread, _ = suppression.add_soft_bounce(None, "soap", iso_utc(first - timedelta(hours=6)))
    misread, _ = suppression.add_soft_bounce(misread, "middle", iso_utc(WHEN + timedelta(days=7)))
    misread, _ = suppression.add_soft_bounce(misread, "ens", iso_utc(second))
    assert suppression.soft_rule_met(misread, 3, 15)


# ---------------------------------------------------------------------- Transactional Messaging (ENS)

KEY = "9f2c" * 16  # a messageKey: SHA-256 hex of the ledger key


def ens(category: str, ts: int = 1769572800123, **info: Any) -> dict[str, Any]:
    engagement = category.startswith("EngagementEvents.")
    base_info = {} if engagement else {"to": "m1@example.com", "subscriberKey": "M1", "messageKey": KEY}
    return {
        "eventCategoryType": category,
        "timestampUTC": ts,
        "composite": {"jobId": "10", "batchId": "3", "listId": "69238", "subscriberId": "77", "emailId": "1"},
        "definitionKey": "NA" if engagement else "packet-drawn-drawer",
        "info": {**base_info, **info},
    }


def parsed(item: dict[str, Any]) -> rules.EnsEvent:
    found = rules.EnsEvent.from_json(item)
    assert found is not None
    return found


WATCH = {
    "message_key": KEY,
    "ledger_key": "d-1:packet-drawn-drawer",
    "channel": "email",
    "subscriber_key": "M1",
    "definition_key": "packet-drawn-drawer",
    "request_id": "req-1",
    "locale": None,
    "sent_at": 0.0,
}


@pytest.mark.parametrize(
    ("item", "expected"),
    [
        (ens(rules.ENS_EMAIL_SENT, status="Sent"), (None, None, None)),
        (
            ens(
                rules.ENS_EMAIL_BOUNCED,
                bounceCode="HARD",
                bounceMessage="5.1.1 User Unknown",
                smtpReason="5.1.1",
            ),
            ("bounced", "HardBounce", "HARD"),
        ),
        (
            ens(
                rules.ENS_EMAIL_BOUNCED,
                bounceCode="SOFT",
                bounceMessage="4.2.2 Over quota",
                smtpReason="4.2.2",
            ),
            ("bounced", "SoftBounce", "SOFT"),
        ),
        (ens(rules.ENS_EMAIL_BOUNCED), ("bounced", "OtherBounce", "OTHER")),
        (
            ens(rules.ENS_EMAIL_NOT_SENT, statusCode="2", statusMessage="Held", reason="held"),
            ("not_sent", None, None),
        ),
        (
            ens(rules.ENS_EMAIL_UNSUBSCRIBE, to="m1@example.com", unsubscribeMethod="Click"),
            ("unsubscribed", "Unsubscribe", None),
        ),
        (ens(rules.ENS_SMS_SENT, statusCode="3001", statusMessage="SentToCarrier"), (None, None, None)),
        (
            ens(rules.ENS_SMS_DELIVERED, statusCode="4000", statusMessage="Delivered"),
            ("delivered", None, None),
        ),
        (
            ens(rules.ENS_SMS_BOUNCED, statusCode="4501", statusMessage="Expired"),
            ("undeliverable", None, None),
        ),
        (
            ens(rules.ENS_SMS_NOT_SENT, statusCode="47", reason="Mobile Address not found"),
            ("undeliverable", None, None),
        ),
    ],
)
def test_what_each_ens_event_means(item: dict[str, Any], expected: tuple[str | None, ...]) -> None:
    found = rules.ens_outcome(parsed(item))
    assert found is not None and (found.status, found.bounce_kind, found.bounce_code) == expected
    assert item["eventCategoryType"] in rules.ENS_EVENTS


def test_ens_reasons_quote_mc() -> None:
    def reason(item: dict[str, Any]) -> str:
        found = rules.ens_outcome(parsed(item))
        assert found is not None
        return found.reason

    hard = ens(
        rules.ENS_EMAIL_BOUNCED, bounceCode="HARD", bounceMessage="5.1.1 User Unknown", smtpReason="5.1.1"
    )
    assert reason(hard) == "hard bounce (ENS 5.1.1): 5.1.1 User Unknown"
    not_sent = ens(rules.ENS_EMAIL_NOT_SENT, statusCode="2", statusMessage="Held", reason="held")
    assert reason(not_sent) == "MC did not send it (EmailNotSent; statusCode 2 Held; held)"
    assert (
        reason(ens(rules.ENS_SMS_DELIVERED, statusCode="4000", statusMessage="Delivered")) == "4000 Delivered"
    )
    assert rules.ens_outcome(parsed(ens("EngagementEvents.EmailOpen"))) is None
    # The suppression list takes ENS's kinds by the classic path's rule.
    assert [suppression.action(k, c) for k, c in (("HardBounce", "HARD"), ("SoftBounce", "SOFT"))] == [
        suppression.SUPPRESS,
        suppression.SOFT,
    ]


def test_an_ens_event_before_its_watch_is_held_then_joined_once() -> None:
    rows: dict[str, bytes] = {}
    join = rules.EnsJoin(rows)
    bounce = ens(rules.ENS_EMAIL_BOUNCED, bounceCode="SOFT")
    new, joined = join.event(parsed(bounce), bounce, now=100.0)
    assert new and joined == []  # held: the watch may trail the event
    assert join.event(parsed(bounce), bounce, now=101.0) == (False, [])  # ENS delivered it again
    (found,) = join.watch(WATCH, now=102.0)
    assert found.watch == WATCH and found.event.identity == parsed(bounce).identity
    assert join.watch(WATCH, now=103.0) == []  # the same watch again joins nothing twice
    assert join.event(parsed(bounce), bounce, now=104.0) == (False, [])  # nor does a late repeat
    later = ens(rules.ENS_EMAIL_BOUNCED, ts=1769572900000, bounceCode="SOFT")
    new, (again,) = join.event(parsed(later), later, now=105.0)
    assert new and again.watch == WATCH  # another bounce of the message: an event of its own


def test_an_unsubscribe_joins_its_message_through_the_composite_whichever_comes_first() -> None:
    rows: dict[str, bytes] = {}
    join = rules.EnsJoin(rows)
    unsub = ens(rules.ENS_EMAIL_UNSUBSCRIBE, ts=1769572900000, to="m1@example.com")
    assert parsed(unsub).message_key is None and parsed(unsub).composite == "10.3.77"
    assert join.event(parsed(unsub), unsub, now=1.0) == (True, [])
    assert join.event(parsed(unsub), unsub, now=1.5) == (False, [])
    join.watch(WATCH, now=2.0)
    sent = ens(rules.ENS_EMAIL_SENT)
    new, joined = join.event(parsed(sent), sent, now=3.0)
    assert new and sorted(j.event.name for j in joined) == ["EmailSent", "EmailUnsubscribe"]
    assert join.event(parsed(unsub), unsub, now=4.0) == (False, [])
    other = ens(rules.ENS_EMAIL_UNSUBSCRIBE, ts=1769573000000, to="m1@example.com")
    new, (joined_now,) = join.event(parsed(other), other, now=5.0)
    assert new and joined_now.watch == WATCH


def test_events_no_watch_claims_are_dropped_after_the_hold_and_returned() -> None:
    rows: dict[str, bytes] = {}
    join = rules.EnsJoin(rows)
    orphan = ens(rules.ENS_EMAIL_BOUNCED, bounceCode="HARD")
    orphan["info"]["messageKey"] = "never-watched"
    join.event(parsed(orphan), orphan, now=0.0)
    join.watch(WATCH, now=0.0)
    assert join.expire(now=50.0, hold_seconds=100.0, keep_seconds=1000.0) == []
    (dropped,) = join.expire(now=150.0, hold_seconds=100.0, keep_seconds=1000.0)
    assert dropped.message_key == "never-watched"
    assert set(rows) == {f"m:{KEY}", "c:10.3.77"}  # the watch, and the composite its bounce named
    assert join.expire(now=2000.0, hold_seconds=100.0, keep_seconds=1000.0) == [] and rows == {}


def test_the_feedback_topic_takes_each_of_its_records() -> None:
    from stream_app.contract.records import EnsReport, MessageWatch, SmsWatch
    from stream_app.stages.feedback import decode_feedback

    watch = orjson.dumps(WATCH)
    assert isinstance(decode_feedback(watch), MessageWatch)
    report = orjson.dumps(
        {"category": rules.ENS_EMAIL_SENT, "event": orjson.dumps(ens(rules.ENS_EMAIL_SENT)).decode()}
    )
    assert isinstance(decode_feedback(report), EnsReport)
    sms = orjson.dumps({"token_id": "t", "message_id": "m", "ledger_key": "d-1:w", "subscriber_key": "M1"})
    assert isinstance(decode_feedback(sms), SmsWatch)
