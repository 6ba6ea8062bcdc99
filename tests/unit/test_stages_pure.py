"""Pure decisions of intake, the batcher, import watcher, senders, ledger, retry policy and tracking."""

from __future__ import annotations

import itertools
import random
from types import SimpleNamespace
from typing import Any

import orjson
import pytest

from stream_app.contract.records import SubscriberBatch, SubscriberReady, TraceStep
from stream_app.domain.ledger import (
    FAILED,
    PENDING,
    SENT,
    Decision,
    Entry,
    decide,
    ledger_key,
    sent_per_log,
    settle_at,
    stale,
)
from stream_app.domain.retry import RetryPolicy
from stream_app.domain.subscriber_csv import build_csv, neutralise, parse_error_report, subscriber_rows
from stream_app.domain.subscribers import needs_import, subscriber_signature
from stream_app.runtime import outputs
from stream_app.stages.batcher import window_bounds
from stream_app.stages.imports import (
    MERGE_AT_MOST_SECONDS,
    MERGE_WITHIN_SECONDS,
    ROUND_AT_MOST_SECONDS,
    ImportPace,
    MergedFile,
    poll_pause,
)
from stream_app.stages.intake.seen import is_duplicate
from stream_app.stages.senders import BadReadyRecord, decode_ready
from stream_app.stages.tracking import MAX_STEPS, append_step, summarise


def ready(**changes: object) -> SubscriberReady:
    fields: dict[str, object] = {
        "notification_id": "d-1:packet-drawn-drawer",
        "event_id": "d-1",
        "event_type": "packet.drawn",
        "channel": "email",
        "template": "packet-drawn-drawer",
        "subscriber_key": "M1",
        "email": "ez@example.com",
        "mobile": "+886912345678",
        "from_name": "TABLE via EZTABLE",
        "attributes": {
            "EventId": "d-1",
            "DrawerName": "EZ",
            "GiverName": "TABLE",
            "Amount": "250",
            "Cashback": "100",
        },
    }
    fields.update(changes)
    return SubscriberReady(**fields)


# --- intake ----------------------------------------------------------------------------------


def test_an_event_seen_in_another_record_is_a_duplicate_but_the_same_record_read_again_is_not() -> None:
    assert not is_duplicate(None, 76)  # first time
    # Read again after a crash before the commit: its notifications may never have reached Kafka.
    assert not is_duplicate(76, 76)
    assert is_duplicate(76, 90)  # replayed by an operator or retried by the producer


# --- batcher ---------------------------------------------------------------------------------


def test_windows_are_aligned_to_the_clock_so_partitions_close_together() -> None:
    assert window_bounds(1000.7, 2.0) == (1000.0, 1002.0)
    assert window_bounds(1001.99, 2.0) == (1000.0, 1002.0)
    assert window_bounds(1002.0, 2.0) == (1002.0, 1004.0)


def polls(expected: float | None, done_at: float) -> list[float]:
    """The moments an import done after `done_at` seconds is polled, by poll_pause."""
    at, moments = 0.0, []
    while not moments or moments[-1] < done_at:
        at += poll_pause(at, expected)
        moments.append(at)
    return moments


def test_an_import_like_the_recent_ones_is_polled_a_few_times_close_to_its_end() -> None:
    moments = polls(expected=1.2, done_at=1.23)
    assert moments[0] == pytest.approx(1.1)  # nothing asked while MC surely is not done
    assert len(moments) <= 4 and moments[-1] - 1.23 <= 0.05 + 1e-9


def test_without_history_or_past_the_usual_time_the_pace_is_steady_then_backs_off() -> None:
    assert polls(expected=None, done_at=1.25) == pytest.approx([0.2, 0.4, 0.6, 0.8, 1.0, 1.2, 1.4])
    slow = polls(expected=1.2, done_at=60)
    gaps = [b - a for a, b in itertools.pairwise(slow)]
    assert max(gaps) <= 5.0 and len(slow) < 40  # a slow import is not polled every 50 ms
    assert all(g <= 0.05 + 1e-9 for a, g in zip(slow, gaps, strict=False) if 1.1 <= a < 1.7)


def test_the_pace_expects_the_quickest_recent_import() -> None:
    pace = ImportPace(remember=3)
    assert pace.expected() is None
    for seconds in (1.5, 1.2, 2.0, 1.9):
        pace.record(seconds)
    assert pace.expected() == 1.2
    pace.record(2.1)  # MC slowed down: the quick import is forgotten
    assert pace.expected() == 1.9


def batch(window: str, close_round: str | None = None, size: int = 0) -> Any:
    """An event as the import watcher sees it: only its value is read."""
    value = SubscriberBatch(
        window_id=window, closed_at=0.0, rows=[ready()], close_round=close_round, round_size=size
    )
    return SimpleNamespace(value=value)


def test_a_file_waits_for_every_window_of_its_close_round_however_slowly_they_come() -> None:
    file = MergedFile(now=100.0)
    file.add(batch("p0-1", "r1", 3), now=100.0)
    file.add(batch("p1-1", "r1", 3), now=100.6)  # closes a busy batcher made 0.6 s apart
    assert file.due() == 100.0 + ROUND_AT_MOST_SECONDS
    file.add(batch("p1-1", "r1", 3), now=100.7)  # the same window delivered twice: no third one
    assert not file.rounds_complete() and file.due() == 100.0 + ROUND_AT_MOST_SECONDS
    file.add(batch("p2-1", "r1", 3), now=101.2)
    assert file.rounds_complete() and file.due() == 101.2  # the round is all there: upload now


def test_a_file_waits_for_a_round_started_in_it_and_gives_up_on_one_never_complete() -> None:
    file = MergedFile(now=10.0)
    file.add(batch("p0-1", "r1", 1), now=10.0)
    file.add(batch("p1-2", "r2", 2), now=10.0)  # another round (a restored window), in the same file
    assert file.due() == 10.0 + ROUND_AT_MOST_SECONDS  # its other window's close request was lost


def test_batches_closed_by_size_go_together_when_they_come_in_a_burst() -> None:
    file = MergedFile(now=10.0)
    file.add(batch("p0-1"), now=10.0)
    assert file.due() == 10.0 + MERGE_WITHIN_SECONDS
    file.add(batch("p1-1"), now=10.08)
    assert file.due() == pytest.approx(10.08 + MERGE_WITHIN_SECONDS)
    for n in range(2, 20):  # a backlog's batches, without end
        file.add(batch(f"p{n}-1"), now=10.0 + 0.08 * n)
    assert file.due() == 10.0 + MERGE_AT_MOST_SECONDS


def test_known_subscriber_with_same_email_and_mobile_skips_the_import() -> None:
    email, mobile = "ez@example.com", "+886912345678"
    assert needs_import(email, mobile, None)
    assert not needs_import(email, mobile, subscriber_signature("ez@example.com", "+886912345678"))
    assert needs_import(email, mobile, subscriber_signature("old@example.com", "+886912345678"))
    assert needs_import(email, mobile, subscriber_signature("ez@example.com", None))


def test_notification_without_email_needs_no_email_subscriber() -> None:
    assert not needs_import(None, "+886912345678", None)


# --- CSV ---------------------------------------------------------------------------------------


def test_csv_has_one_row_per_subscriber_quoted_and_neutralised() -> None:
    rows = subscriber_rows(
        [
            ready(),
            ready(notification_id="d-1:packet-drawn-welcome", channel="sms", template="packet-drawn-welcome"),
            ready(
                notification_id="d-1:packet-drawn-giver",
                template="packet-drawn-giver",
                subscriber_key="M2",
                email="table@example.com",
                mobile=None,
                attributes={"EventId": "d-1", "DrawerName": "EZ", "GiverName": '=HYPERLINK("x"), "Ann" 🧧'},
            ),
        ]
    )
    text = build_csv(rows).decode("utf-8")
    assert text.splitlines() == [
        '"SubscriberKey","EmailAddress","MobileNumber","Name"',
        '"M1","ez@example.com","886912345678","EZ"',
        '"M2","table@example.com","","\'=HYPERLINK(""x""), ""Ann"" 🧧"',
    ]


@pytest.mark.parametrize("cell", ["=1+2", "+1", "-1", "@SUM(A1)", "\tx", "\rx"])
def test_formula_cells_are_neutralised(cell: str) -> None:
    assert neutralise(cell) == "'" + cell


def test_plain_cells_are_left_alone() -> None:
    assert neutralise('EZ 🧧, "quoted"') == 'EZ 🧧, "quoted"'


def test_error_report_maps_subscriber_to_reason() -> None:
    report = b"SubscriberKey,EmailAddress,ErrorCode,ErrorMessage\r\nM9,bad@,12000,InvalidEmailAddress\r\n"
    assert parse_error_report(report) == {"M9": "MC import error 12000: InvalidEmailAddress"}


# --- ledger ------------------------------------------------------------------------------------


def test_ledger_decisions() -> None:
    assert decide(None) is Decision.SEND
    assert decide(Entry(SENT, 1.0)) is Decision.DUPLICATE
    assert decide(Entry(PENDING, 1.0)) is Decision.RECONCILE
    assert decide(Entry(FAILED, 1.0)) is Decision.SEND


def test_resend_is_its_own_ledger_entry_per_record() -> None:
    assert ledger_key("d-1:t", None) == "d-1:t"
    assert ledger_key("d-1:t", (3, 42)) == "d-1:t#resend@3:42"
    assert ledger_key("d-1:t", (3, 42)) != ledger_key("d-1:t", (3, 43))


def test_a_pending_send_is_judged_only_once_mc_can_have_logged_it() -> None:
    # MC may hold the request until the client's timeout, then log the send when it sends.
    assert settle_at(Entry(PENDING, 100.0), request_timeout=30.0, log_lag=10.0) == 140.0


def test_only_a_log_row_without_error_proves_a_send() -> None:
    assert sent_per_log([None])
    assert sent_per_log(["24", None])  # stopped once, sent on a later attempt
    assert not sent_per_log(["24"])  # MC attempted and stopped it
    assert not sent_per_log([])  # no row: MC never sent it


def test_stale_pending_entries() -> None:
    assert stale(Entry(PENDING, 100.0), now=400.0, after=300.0)
    assert not stale(Entry(PENDING, 100.0), now=399.0, after=300.0)
    assert not stale(Entry(SENT, 0.0), now=400.0, after=300.0)


def test_a_pending_entry_keeps_its_record_and_older_entries_still_load() -> None:
    entry = Entry(PENDING, 1.0, record='{"notification_id": "d-1:t"}')
    assert Entry.loads(entry.dumps()) == entry
    assert Entry.loads(
        b'{"state": "pending", "at": 1.0, "attempts": 0, "mc_request_id": "", "reason": ""}'
    ) == Entry(PENDING, 1.0)


def test_ledger_entry_round_trip() -> None:
    entry = Entry(SENT, 12.5, 2, mc_request_id="abc", recipient_send_id="rsid-1")
    assert Entry.loads(entry.dumps()) == entry
    assert Entry.loads(None) is None


def test_a_sent_entry_keeps_mcs_recipient_send_id_and_rows_of_other_versions_load() -> None:
    older = b'{"state": "sent", "at": 2.0, "attempts": 1, "mc_request_id": "r", "reason": "", "record": ""}'
    assert Entry.loads(older) == Entry(SENT, 2.0, 1, mc_request_id="r", recipient_send_id="")
    newer = b'{"state": "sent", "at": 2.0, "recipient_send_id": "k", "a_field_of_later": 1}'
    assert Entry.loads(newer) == Entry(SENT, 2.0, recipient_send_id="k")


# --- retry -------------------------------------------------------------------------------------


def test_backoff_grows_is_capped_and_honours_retry_after() -> None:
    policy = RetryPolicy(max_attempts=8, base_seconds=2.0, max_seconds=60.0, factor=3.0)
    rng = random.Random(7)
    delays = [policy.delay(n, None, rng) for n in range(1, 9)]
    for n, delay in enumerate(delays, start=1):
        cap = min(60.0, 2.0 * 3 ** (n - 1))
        assert cap / 2 <= delay <= cap
    assert policy.delay(1, 30.0, rng) >= 30.0


def test_default_budget_spans_about_half_an_hour() -> None:
    policy = RetryPolicy()
    waits = range(1, policy.max_attempts)  # no wait after the last try
    longest = sum(min(policy.max_seconds, policy.base_seconds * policy.factor ** (n - 1)) for n in waits)
    shortest = longest / 2  # full jitter draws from [cap/2, cap]
    assert shortest >= 10 * 60 and longest <= 40 * 60


# --- senders -----------------------------------------------------------------------------------


def test_decode_ready_accepts_the_contract_record() -> None:
    r = decode_ready(ready().dumps(serializer="json"))
    assert r.notification_id == "d-1:packet-drawn-drawer"


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b"", "empty value"),
        (b"{nope", "not JSON"),
        (orjson.dumps({"notification_id": "x"}), "schema"),
        (ready(template="packet-drawn-nope").dumps(serializer="json"), "unknown email template"),
        (ready(channel="fax").dumps(serializer="json"), "schema: channel"),
        (ready(email=None).dumps(serializer="json"), "without an address"),
        (
            ready(channel="sms", template="packet-drawn-welcome", mobile=None).dumps(serializer="json"),
            "without a mobile",
        ),
        (ready(attributes={"Amount": "1"}).dumps(serializer="json"), "attributes missing"),
    ],
)
def test_decode_ready_refuses_bad_records(raw: bytes, message: str) -> None:
    with pytest.raises(BadReadyRecord, match=message):
        decode_ready(raw)


def test_a_ready_record_from_before_locales_still_decodes_and_is_sent_in_the_default() -> None:
    old = orjson.loads(ready().dumps(serializer="json"))
    del old["locale"]
    r = decode_ready(orjson.dumps(old))
    assert r.locale is None
    assert decode_ready(ready(locale="en").dumps(serializer="json")).locale == "en"


def test_the_outcome_step_names_the_locale_the_event_view_shows() -> None:
    fields = ready(locale="en").asdict()
    detail = outputs.outcome_detail(fields, "sent", mc_request_id="r1")
    raw = append_step(None, TraceStep(event_id="d-1", stage="outcome", at="t", detail=detail))
    (note,) = summarise("d-1", raw)["notifications"]
    assert (note["status"], note["locale"]) == ("sent", "en")


# --- tracking ----------------------------------------------------------------------------------


def test_trace_summary_groups_steps_by_notification() -> None:
    raw = None
    for stage, detail in [
        ("received", {"topic": "packet.drawn"}),
        ("batched", {"notification_id": "d-1:a", "window": "p0-1"}),
        ("ready", {"notification_id": "d-1:a", "via": "import f.csv"}),
        ("outcome", {"notification_id": "d-1:a", "status": "sent", "mc_request_id": "r1", "attempts": 1}),
    ]:
        raw = append_step(raw, TraceStep(event_id="d-1", stage=stage, at="t", detail=detail))
    summary = summarise("d-1", raw)
    assert summary["found"] is True
    assert [s["stage"] for s in summary["steps"]] == ["received", "batched", "ready", "outcome"]
    (note,) = summary["notifications"]
    assert note["stages"] == ["batched", "ready", "outcome"]
    assert (note["window"], note["status"], note["mc_request_id"]) == ("p0-1", "sent", "r1")


def test_the_intake_steps_that_rode_with_a_notification_come_before_its_outcome() -> None:
    intake = {"topic": "packet.drawn", "partition": 1, "offset": 7, "at": "t0", "notifications": 2}
    raw = None
    for nid in ("d-1:a", "d-1:b"):
        detail = {"notification_id": nid, "status": "sent", "intake": {**intake, "via": "known subscriber"}}
        raw = append_step(raw, TraceStep(event_id="d-1", stage="outcome", at="t1", detail=detail))
    summary = summarise("d-1", raw)
    assert [s["stage"] for s in summary["steps"]] == ["received", "ready", "outcome", "ready", "outcome"]
    assert summary["steps"][0] == {
        "stage": "received",
        "at": "t0",
        **{k: intake[k] for k in intake if k != "at"},
    }
    assert "intake" not in summary["steps"][2]
    assert {n["notification_id"]: n["via"] for n in summary["notifications"]} == {
        "d-1:a": "known subscriber",
        "d-1:b": "known subscriber",
    }


def test_trace_is_bounded() -> None:
    raw = None
    for i in range(MAX_STEPS + 20):
        raw = append_step(raw, TraceStep(event_id="d-1", stage=f"s{i}", at="t", detail={}))
    assert len(orjson.loads(raw or b"[]")) == MAX_STEPS


def test_unknown_event_is_reported_not_found() -> None:
    assert summarise("nope", None) == {"event_id": "nope", "found": False, "steps": [], "notifications": []}
