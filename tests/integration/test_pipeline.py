"""The whole flow on the real broker and the sandbox: packet events in, MC sends out."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from aiokafka import AIOKafkaProducer

from stream_app.mc import MarketingCloud, SubscriberRow
from stream_app.settings import Settings
from tests.fixtures.worker import start_worker
from tests.integration.helpers import (
    committed_offsets,
    drawn_event,
    eventually,
    messages,
    produce,
    produce_events,
    read_all,
    ready_records,
    statuses,
    topic_configs,
    unique,
)

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="session")]


def outcome_by_template(found: list[dict[str, Any]]) -> dict[str, str]:
    return {s["template"]: s["status"] for s in found}


async def test_drawn_event_sends_two_emails_and_an_sms(kafka: Any, sandbox: Any, pipeline: Any) -> None:
    event = drawn_event()
    await produce(kafka.bootstrap, "packet.drawn", event, key=event["packet_id"].encode())

    sent = await eventually(
        lambda: len(messages(sandbox, event)) >= 3 and messages(sandbox, event), timeout=30
    )
    by_key = {(m["definition_key"], m["subscriber_key"]): m for m in sent}
    drawer = by_key[("packet-drawn-drawer", event["drawer"]["member_id"])]
    assert drawer["to"] == event["drawer"]["email"]
    assert drawer["from_name"] == "TABLE via EZTABLE"
    assert drawer["text"] == "親愛的 EZ 恭喜你好手氣抽到 TABLE 送的紅包 $250！訂餐廳吃飯可直接用！"
    assert drawer["attributes"]["EventId"] == event["event_id"]
    giver = by_key[("packet-drawn-giver", event["giver"]["member_id"])]
    assert giver["from_name"] == "EZ via EZTABLE"
    assert giver["text"] == "你的朋友 EZ 抽到你發的 $250 EZCASH 紅包！只要他消費你就能得到 $100 回饋！"
    sms = by_key[("packet-drawn-welcome", event["drawer"]["member_id"])]
    assert sms["channel"] == "sms" and sms["to"] == event["drawer"]["mobile"].lstrip("+")
    assert "TABLE" in sms["text"] and "$250" in sms["text"]
    assert len(sent) == 3

    final = await eventually(lambda: _three_sent(kafka, event["event_id"]))
    assert outcome_by_template(final) == {
        "packet-drawn-drawer": "sent",
        "packet-drawn-giver": "sent",
        "packet-drawn-welcome": "sent",
    }
    assert all(s["mc_request_id"] and s["attempts"] == 1 for s in final)

    # The view is fed from `trace.step`, a topic of its own: it may trail notification.status a moment.
    view = await eventually(lambda: _view_once(pipeline, event["event_id"], outcomes=3))
    stages = [step["stage"] for step in view["steps"]]
    assert stages[0] == "received" and {"batched", "ready", "outcome"} <= set(stages)
    drawer_note = next(
        n for n in view["notifications"] if n["notification_id"].endswith("packet-drawn-drawer")
    )
    assert drawer_note["status"] == "sent" and drawer_note["file"].startswith("subscribers_")


def _view_once(pipeline: Any, event_id: str, *, outcomes: int) -> dict[str, Any] | None:
    """The event's view once it shows `outcomes` outcome steps."""
    view: dict[str, Any] = httpx.get(f"{pipeline.web_url}events/{event_id}/", timeout=10).json()
    return view if sum(step["stage"] == "outcome" for step in view["steps"]) >= outcomes else None


async def _three_sent(kafka: Any, event_id: str) -> list[dict[str, Any]] | None:
    found = await statuses(kafka.bootstrap, event_id)
    return found if len(found) >= 3 else None


async def test_known_subscriber_goes_straight_to_the_senders(kafka: Any, sandbox: Any, pipeline: Any) -> None:
    first = drawn_event()
    await produce(kafka.bootstrap, "packet.drawn", first, key=first["packet_id"].encode())
    await eventually(lambda: len(messages(sandbox, first)) >= 3, timeout=30)
    imports_before = len(httpx.get(f"{sandbox.http_url}_sandbox/imports", timeout=10).json())

    second = drawn_event(drawer=first["drawer"], giver=first["giver"], amount=500)
    await produce(kafka.bootstrap, "packet.drawn", second, key=second["packet_id"].encode())
    await eventually(lambda: len(messages(sandbox, second)) >= 6, timeout=30)

    view = await eventually(lambda: _view_once(pipeline, second["event_id"], outcomes=3))
    vias = {n["notification_id"]: n.get("via") for n in view["notifications"]}
    assert set(vias.values()) == {"known subscriber"}, vias
    # Straight from the intake, which knew the subscribers from the batcher's changelog: its steps
    # rode along in the header, and no intent went to the batcher for them.
    ready = await ready_records(kafka.bootstrap, event_id=second["event_id"])
    assert len(ready) == 3 and all(dict(r.headers).get("stream_app.intake") for r in ready)
    assert [s["stage"] for s in view["steps"]].count("received") == 1
    assert len(httpx.get(f"{sandbox.http_url}_sandbox/imports", timeout=10).json()) == imports_before


async def test_new_subscribers_of_every_partition_in_one_window_go_out_in_one_file(
    kafka: Any, sandbox: Any, pipeline: Any
) -> None:
    events = [drawn_event() for _ in range(8)]
    await produce_events(kafka.bootstrap, events)
    for event in events:
        await eventually(lambda event=event: len(messages(sandbox, event)) >= 3, timeout=60)

    ids = {e["event_id"] for e in events}
    slots: dict[str, set[str]] = {}  # window slot -> partitions whose window held our rows
    for record in await read_all(kafka.bootstrap, "stream_app.batches"):
        batch = orjson.loads(record.value)
        if any(row["event_id"] in ids for row in batch["rows"]):
            partition, slot, _ = batch["window_id"].split("-")  # p<partition>-<start ms>-<suffix>
            slots.setdefault(slot, set()).add(partition)
    files = set()
    for event in events:
        view = await eventually(lambda event=event: _view_once(pipeline, event["event_id"], outcomes=3))
        files |= {n["file"] for n in view["notifications"] if n.get("file")}
    assert any(len(partitions) > 1 for partitions in slots.values()), slots  # a merge was needed
    assert len(files) == len(slots), (files, slots)


async def test_redeemed_event_tells_the_giver_about_the_cashback(
    kafka: Any, sandbox: Any, pipeline: Any
) -> None:
    event = drawn_event(spent_amount=800, cashback_amount=120)
    await produce(kafka.bootstrap, "packet.redeemed", event, key=event["packet_id"].encode())
    (sent,) = await eventually(lambda: messages(sandbox, event), timeout=30)
    assert sent["definition_key"] == "packet-redeemed-giver"
    assert sent["subscriber_key"] == event["giver"]["member_id"]
    assert sent["from_name"] == "EZ via EZTABLE"
    assert "$120" in sent["text"] and "EZ" in sent["text"]


async def test_names_with_quotes_commas_emoji_and_formulas_arrive_intact(
    kafka: Any, sandbox: Any, pipeline: Any
) -> None:
    giver_name = '=cmd|"/C calc"!A0, O\'Brien "The Table" 🧧'
    drawer_name = "@林, 小明 😀"
    event = drawn_event(giver__name=giver_name, drawer__name=drawer_name)
    await produce(kafka.bootstrap, "packet.drawn", event, key=event["packet_id"].encode())
    sent = await eventually(
        lambda: len(messages(sandbox, event)) >= 3 and messages(sandbox, event), timeout=30
    )
    drawer_mail = next(m for m in sent if m["definition_key"] == "packet-drawn-drawer")
    assert drawer_mail["from_name"] == f"{giver_name} via EZTABLE"
    assert drawer_mail["attributes"]["GiverName"] == giver_name
    assert drawer_mail["text"].startswith(f"親愛的 {drawer_name} 恭喜你好手氣抽到 {giver_name} 送的紅包")
    giver_mail = next(m for m in sent if m["definition_key"] == "packet-drawn-giver")
    assert giver_mail["from_name"] == f"{drawer_name} via EZTABLE"


async def test_bad_address_of_one_party_is_invalid_and_the_other_is_served(
    kafka: Any, sandbox: Any, pipeline: Any
) -> None:
    event = drawn_event(giver__email="table@gmial.com")
    await produce(kafka.bootstrap, "packet.drawn", event, key=event["packet_id"].encode())
    await eventually(lambda: len(messages(sandbox, event)) >= 2, timeout=30)
    found = await eventually(lambda: _n_statuses(kafka, event["event_id"], 3))
    by_template = {s["template"]: s for s in found}
    assert by_template["packet-drawn-giver"]["status"] == "invalid"
    assert "did you mean @gmail.com" in by_template["packet-drawn-giver"]["reason"]
    assert by_template["packet-drawn-drawer"]["status"] == "sent"
    assert {m["definition_key"] for m in messages(sandbox, event)} == {
        "packet-drawn-drawer",
        "packet-drawn-welcome",
    }


async def _n_statuses(kafka: Any, event_id: str, n: int) -> list[dict[str, Any]] | None:
    found = await statuses(kafka.bootstrap, event_id)
    return found if len(found) >= n else None


async def test_replayed_input_and_ready_records_send_nothing_twice(
    kafka: Any, sandbox: Any, pipeline: Any
) -> None:
    event = drawn_event()
    raw = orjson.dumps(event)
    await produce(kafka.bootstrap, "packet.drawn", raw, key=event["packet_id"].encode())
    await eventually(lambda: len(messages(sandbox, event)) >= 3, timeout=30)
    await eventually(lambda: _n_statuses(kafka, event["event_id"], 3))

    # The operator's replays: the same input again (same and other key), and the ready records again.
    ready = await ready_records(kafka.bootstrap, event_id=event["event_id"])
    assert len(ready) == 3
    await produce(kafka.bootstrap, "packet.drawn", raw, key=event["packet_id"].encode())
    await produce(kafka.bootstrap, "packet.drawn", raw, key=b"some-other-key")
    for record in ready:
        await produce(kafka.bootstrap, "subscriber.ready", record.value, key=record.key)

    found = await eventually(lambda: _n_statuses(kafka, event["event_id"], 6), timeout=30)
    duplicates = [s for s in found if s["status"] == "duplicate"]
    assert len(duplicates) >= 3
    assert len(messages(sandbox, event)) == 3


async def test_resend_header_sends_exactly_once_more(kafka: Any, sandbox: Any, pipeline: Any) -> None:
    event = drawn_event(drawer__mobile=None)
    await produce(kafka.bootstrap, "packet.drawn", event, key=event["packet_id"].encode())
    await eventually(lambda: len(messages(sandbox, event)) >= 2, timeout=30)
    (record,) = await ready_records(
        kafka.bootstrap, notification_id=f"{event['event_id']}:packet-drawn-drawer"
    )
    await produce(
        kafka.bootstrap, "subscriber.ready", record.value, key=record.key, headers=[("resend", b"1")]
    )
    await eventually(lambda: len(messages(sandbox, event)) >= 3, timeout=30)
    drawer_mails = [m for m in messages(sandbox, event) if m["definition_key"] == "packet-drawn-drawer"]
    assert len(drawer_mails) == 2
    # The resend record itself, redelivered (re-produced without the header) is a duplicate.
    await produce(kafka.bootstrap, "subscriber.ready", record.value, key=record.key)
    await eventually(lambda: _n_statuses(kafka, event["event_id"], 4))
    assert len(messages(sandbox, event)) == 3


async def test_bounced_address_is_suppressed(kafka: Any, sandbox: Any, pipeline: Any) -> None:
    tag = unique("b")
    first = drawn_event(drawer__email=f"{tag}@bounce.example", drawer__mobile=None)
    await produce(kafka.bootstrap, "packet.drawn", first, key=first["packet_id"].encode())
    await eventually(lambda: len(messages(sandbox, first)) >= 2, timeout=30)

    await eventually(lambda: _bounce_recorded(kafka, f"{tag}@bounce.example"), timeout=30)
    view = await eventually(lambda: _suppressed(pipeline, f"{tag}@bounce.example"), timeout=30)
    assert view["address"].endswith("***@bounce.example") and view["bounce_code"] == "HARD"
    second = drawn_event(drawer=first["drawer"], giver=first["giver"])
    await produce(kafka.bootstrap, "packet.drawn", second, key=second["packet_id"].encode())
    found = await eventually(lambda: _n_statuses(kafka, second["event_id"], 2), timeout=30)
    by_template = {s["template"]: s for s in found}
    assert by_template["packet-drawn-drawer"]["status"] == "suppressed"
    assert "suppression list" in by_template["packet-drawn-drawer"]["reason"]
    assert by_template["packet-drawn-giver"]["status"] == "sent"
    drawer_mails = [
        m
        for m in messages(sandbox, second)
        if m["definition_key"] == "packet-drawn-drawer" and m["attributes"]["EventId"] == second["event_id"]
    ]
    assert drawer_mails == []


async def test_a_stopped_worker_leaves_no_callback_behind_in_mc(
    kafka: Any, sandbox: Any, tmp_path: Path
) -> None:
    """Each run registers a callback URL of its own; a clean stop removes it (and its subscription)."""
    worker = start_worker(kafka, sandbox, tmp_path / "w", APP_ID=unique("cb"))
    name = f"stream_app-{worker.web_port}"
    try:
        worker.wait_ready()
        ours = await eventually(lambda: _callbacks(sandbox, name, subscribed=True), timeout=30)
        assert [cb["status"] for cb in ours] == ["verified"]
    finally:
        assert worker.stop() == 0
    assert _callbacks(sandbox, name) == []
    assert all(s["callbackId"] != ours[0]["callbackId"] for s in _ens(sandbox)["subscriptions"])


async def test_per_event_state_is_kept_for_the_retention_window_only(kafka: Any, pipeline: Any) -> None:
    """The worker creates its changelogs: rows per event or notification (dedupe log, ledgers, traces)
    are deleted after STATE_RETENTION_DAYS; subscribers and suppressions are only compacted."""
    thirty_days_ms = str(30 * 86_400_000)
    configs = await topic_configs(kafka.bootstrap, "stream_app-intake-seen")
    assert (configs["cleanup.policy"], configs["retention.ms"]) == ("delete", thirty_days_ms)
    for table in ("ledger-email", "ledger-sms", "event-trace"):
        configs = await topic_configs(kafka.bootstrap, f"stream_app-{table}-changelog")
        assert (configs["cleanup.policy"], configs["retention.ms"]) == (
            "compact,delete",
            thirty_days_ms,
        ), table
    for table in ("known-subscribers", "suppressed", "open-windows"):
        configs = await topic_configs(kafka.bootstrap, f"stream_app-{table}-changelog")
        assert configs["cleanup.policy"] == "compact", table


async def test_an_upstream_producer_using_transactions_is_read_past_its_markers(
    kafka: Any, sandbox: Any, pipeline: Any
) -> None:
    """A transaction's commit marker takes an offset the log has no record at: the intake reads
    committed transactions only, and its commits move past them without stalling the partition."""
    events = [drawn_event() for _ in range(2)]
    key = unique("txn-packet").encode()  # one key: one partition, with a marker after each event
    producer = AIOKafkaProducer(bootstrap_servers=kafka.bootstrap, transactional_id=unique("upstream"))
    await producer.start()
    try:
        for event in events:
            async with producer.transaction():
                sent = await producer.send_and_wait("packet.drawn", orjson.dumps(event), key=key)
        aborted = drawn_event()
        await producer.begin_transaction()
        await producer.send_and_wait("packet.drawn", orjson.dumps(aborted), key=key)
        await producer.abort_transaction()
        after = drawn_event()
        async with producer.transaction():
            last = await producer.send_and_wait("packet.drawn", orjson.dumps(after), key=key)
    finally:
        await producer.stop()
    for event in [*events, after]:
        await eventually(lambda e=event: len(messages(sandbox, e)) >= 3, timeout=30)

    async def committed_past_the_last_event() -> bool:
        committed = await committed_offsets(kafka.bootstrap, "stream_app-intake", "packet.drawn")
        return committed.get(last.partition, -1) > last.offset

    await eventually(committed_past_the_last_event, timeout=30)
    assert sent.partition == last.partition
    assert messages(sandbox, aborted) == []  # an aborted transaction's event is never sent


def _ens(sandbox: Any) -> dict[str, Any]:
    found: dict[str, Any] = httpx.get(f"{sandbox.http_url}_sandbox/ens", timeout=10).json()
    return found


def _callbacks(sandbox: Any, name: str, *, subscribed: bool = False) -> list[dict[str, Any]]:
    """The callbacks registered under `name` (with `subscribed`: only once one has its subscription)."""
    ens = _ens(sandbox)
    found = [cb for cb in ens["callbacks"] if cb["callbackName"] == name]
    if subscribed and not any(
        s["callbackId"] == cb["callbackId"] for cb in found for s in ens["subscriptions"]
    ):
        return []
    return found


async def _bounce_recorded(kafka: Any, address: str) -> bool:
    return any(
        orjson.loads(r.value)["email"] == address for r in await read_all(kafka.bootstrap, "email.bounced")
    )


def _suppressed(pipeline: Any, address: str) -> dict[str, Any] | None:
    view = httpx.get(f"{pipeline.web_url}suppressed/{address}/", timeout=10).json()
    return view if view["suppressed"] else None


async def test_subscriber_changed_inside_mc_is_resynced_and_sent(
    kafka: Any, sandbox: Any, pipeline: Any
) -> None:
    first = drawn_event(drawer__mobile=None)
    await produce(kafka.bootstrap, "packet.drawn", first, key=first["packet_id"].encode())
    await eventually(lambda: len(messages(sandbox, first)) >= 2, timeout=30)
    # Someone edits the drawer in MC: our "known subscriber" no longer matches (MC error 14).
    client = MarketingCloud(Settings(mc_auth_url=sandbox.http_url))
    try:
        (result,) = await client.soap.upsert_subscribers(
            [SubscriberRow(first["drawer"]["member_id"], f"changed.{first['drawer']['email']}")]
        )
        assert result.ok
    finally:
        await client.close()

    second = drawn_event(drawer=first["drawer"], giver=first["giver"])
    await produce(kafka.bootstrap, "packet.drawn", second, key=second["packet_id"].encode())
    found = await eventually(lambda: _n_statuses(kafka, second["event_id"], 2), timeout=30)
    assert {s["template"]: s["status"] for s in found} == {
        "packet-drawn-drawer": "sent",
        "packet-drawn-giver": "sent",
    }
    subscribers = httpx.get(f"{sandbox.http_url}_sandbox/subscribers", timeout=10).json()
    (drawer,) = [s for s in subscribers if s["subscriber_key"] == first["drawer"]["member_id"]]
    assert drawer["email"] == first["drawer"]["email"]
