"""Operator views against the real stack: /metrics, /dashboard/, alerts to a webhook, masking.

This module runs its own broker (and a worker on it) so that its alert thresholds, its failures and
its figures are its own: on the session broker the shared `pipeline` worker would split the
partitions with this one, and other tests' failures would trip (or mask) the alerts asserted here.
The sandbox is the session's; every event here has fresh member ids.
"""

from __future__ import annotations

import asyncio
import re
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from aiohttp import web

from stream_app.localkafka import EmbeddedKafka, free_port
from tests.fixtures.kafka import KafkaBroker
from tests.fixtures.worker import WorkerProcess, start_worker
from tests.integration.helpers import drawn_event, eventually, produce, sample

pytestmark = pytest.mark.integration


class WebhookReceiver:
    """A Slack-like incoming webhook on 127.0.0.1, on its own thread and loop (the tests' loop sleeps
    between tests, and the worker must never wait on it)."""

    def __init__(self) -> None:
        self.port = free_port()
        self.received: list[dict[str, Any]] = []
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    async def _hook(self, request: web.Request) -> web.Response:
        self.received.append(await request.json())
        return web.Response(text="ok")

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        app = web.Application()
        app.router.add_post("/hook", self._hook)
        self._runner = web.AppRunner(app)
        self._loop.run_until_complete(self._runner.setup())
        self._loop.run_until_complete(web.TCPSite(self._runner, "127.0.0.1", self.port).start())
        self._ready.set()
        self._loop.run_forever()

    def start(self) -> WebhookReceiver:
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("webhook receiver did not start")
        return self

    def stop(self) -> None:
        async def shutdown() -> None:
            if self._runner is not None:
                await self._runner.cleanup()

        asyncio.run_coroutine_threadsafe(shutdown(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    def texts(self) -> list[str]:
        return [str(p.get("text", "")) for p in list(self.received)]


@pytest.fixture(scope="module")
def ops_kafka(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KafkaBroker]:
    broker = EmbeddedKafka("127.0.0.1", free_port(), tmp_path_factory.mktemp("ops-kafka"))
    broker.start()
    try:
        yield KafkaBroker(broker)
    finally:
        broker.stop()


@pytest.fixture(scope="module")
def webhook() -> Iterator[WebhookReceiver]:
    receiver = WebhookReceiver().start()
    try:
        yield receiver
    finally:
        receiver.stop()


@pytest.fixture(scope="module")
def ops_worker(
    ops_kafka: KafkaBroker, sandbox: Any, webhook: WebhookReceiver, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[WorkerProcess]:
    worker = start_worker(
        ops_kafka,
        sandbox,
        tmp_path_factory.mktemp("ops-worker"),
        ALERT_WEBHOOK_URL=webhook.url,
        ALERT_INTERVAL_SECONDS="0.5",
        ALERT_FAILURE_THRESHOLD="3",
        ALERT_FAILURE_WINDOW_SECONDS="5",
        ALERT_DLQ_QUIET_SECONDS="3",
        LOG_FORMAT="json",
    )
    try:
        worker.wait_ready()
        yield worker
    finally:
        worker.stop()


def get(worker: WorkerProcess, path: str) -> httpx.Response:
    return httpx.get(f"{worker.web_url}{path.lstrip('/')}", timeout=10)


async def test_metrics_show_the_app_series_after_an_event_flows(
    ops_kafka: KafkaBroker, ops_worker: WorkerProcess
) -> None:
    await produce(ops_kafka.bootstrap, "packet.drawn", drawn_event())

    def sent_twice() -> str | None:
        text = get(ops_worker, "/metrics").text
        sent = sample(text, 'stream_app_notifications_total{channel="email",status="sent"}')
        # Lag is sampled every 2 s, so it may show up a moment after the sends.
        return text if sent >= 2 and "stream_app_consumer_lag{" in text else None

    text = await eventually(sent_twice, timeout=60)
    assert get(ops_worker, "/metrics").headers["content-type"].startswith("text/plain")
    assert sample(text, 'stream_app_events_received_total{topic="packet.drawn"}') >= 1
    # The emails go batched, by SOAP Create (MC_SEND_BATCH), the SMS by MobileConnect's REST route.
    assert sample(text, 'stream_app_mc_call_seconds_count{operation="soap.send_triggered",outcome="ok"}') >= 1
    assert sample(text, 'stream_app_mc_call_seconds_count{operation="sftp.upload",outcome="ok"}') >= 1
    assert sample(text, "stream_app_import_batch_rows_count") >= 1
    assert sample(text, 'stream_app_import_duration_seconds_count{outcome="ok"}') >= 1
    # Faust's own sensor figures share the one registry and the one route.
    assert sample(text, "faust_messages_received_total") >= 1


async def test_dashboard_page_and_its_data(ops_kafka: KafkaBroker, ops_worker: WorkerProcess) -> None:
    page = get(ops_worker, "/dashboard/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    html = page.text
    assert "data.json" in html and "setInterval(refresh, 2000)" in html
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", html), "no external assets (offline operators)"

    await produce(ops_kafka.bootstrap, "packet.drawn", drawn_event())

    def data_with_lag() -> dict[str, Any] | None:
        data = get(ops_worker, "/dashboard/data.json").json()
        intake = next(s for s in data["stages"] if s["key"] == "intake")
        return data if intake["total"] >= 1 and data["lag"]["partitions"] else None

    data = await eventually(data_with_lag, timeout=60)
    assert [s["key"] for s in data["stages"]] == ["intake", "batcher", "imports", "senders"]
    assert {"topic", "partition", "end", "committed", "lag"} <= set(data["lag"]["partitions"][0])
    assert {q["topic"] for q in data["dlq"]} == {
        "packet.drawn.dlq",
        "packet.redeemed.dlq",
        "subscriber.ready.dlq",
        "stream_app.intents.dlq",
        "stream_app.batches.dlq",
        "email.bounced.dlq",
        "stream_app.trace.dlq",
        "stream_app.feedback.dlq",
    }
    assert isinstance(data["open_windows"], int) and isinstance(data["pending_imports"], list)
    assert {a["rule"] for a in data["alerts"]} == {
        "failure_burst",
        "dlq_growing",
        "import_stuck",
        "partition_stalled",
        "sends_pending",
        "mc_blocked",
    }


async def test_failure_burst_and_dlq_alerts_fire_then_recover(
    ops_kafka: KafkaBroker, ops_worker: WorkerProcess, webhook: WebhookReceiver
) -> None:
    # Both parties' addresses invalid: two `invalid` outcomes per event, four in all (threshold 3).
    for n in range(2):
        event = drawn_event(drawer__email=f"broken{n}@@example", giver__email=f"nobody{n}.example.com")
        await produce(ops_kafka.bootstrap, "packet.drawn", event)
    await produce(ops_kafka.bootstrap, "packet.drawn", b"{not json")

    def has(prefix: str) -> list[str]:
        return [t for t in webhook.texts() if t.startswith(prefix)]

    fired = await eventually(lambda: has(":rotating_light: [FIRING] failure_burst"), timeout=60)
    assert "failed/invalid notifications in the last 5 s" in fired[0]
    await eventually(lambda: has(":rotating_light: [FIRING] dlq_growing"), timeout=30)
    # The window slides past the burst, the DLQ stays quiet: one recovery each.
    await eventually(lambda: has(":white_check_mark: [RECOVERED] failure_burst"), timeout=30)
    await eventually(lambda: has(":white_check_mark: [RECOVERED] dlq_growing"), timeout=30)
    assert len(has(":rotating_light: [FIRING] failure_burst")) == 1  # rate-limited: no repeats
    for payload in webhook.received:
        assert payload["blocks"][0]["text"]["text"] == payload["text"]


async def test_no_address_or_number_in_the_dashboard_data_or_the_logs(
    ops_kafka: KafkaBroker, ops_worker: WorkerProcess
) -> None:
    bad = drawn_event(drawer__email="nomask@@example.com")
    good = drawn_event()
    await produce(ops_kafka.bootstrap, "packet.drawn", bad)
    await produce(ops_kafka.bootstrap, "packet.drawn", good)
    # A record that is not an event at all, quoting an address and a number, goes to the DLQ.
    await produce(ops_kafka.bootstrap, "packet.drawn", b"oops leak@example.com +886912345678")

    def failures_listed() -> str | None:
        raw = get(ops_worker, "/dashboard/data.json").text
        data = orjson.loads(raw)
        ids = {f.get("event_id") for f in data["recent_failures"]}
        dlq = [f for f in data["recent_failures"] if f["kind"] == "dlq"]
        return raw if bad["event_id"] in ids and dlq else None

    raw = await eventually(failures_listed, timeout=60)
    secrets = [
        "nomask@@example.com",
        good["drawer"]["email"],
        good["giver"]["email"],
        good["drawer"]["mobile"],
        "leak@example.com",
        "+886912345678",
    ]

    def settled_log() -> str | None:
        text = Path(ops_worker.log_path).read_text(errors="replace")
        return text if bad["event_id"] in text else None

    log_text = await eventually(settled_log, timeout=30)
    for secret in secrets:
        assert secret not in raw, f"{secret} in /dashboard/data.json"
        assert secret not in log_text, f"{secret} in the worker log"

    # The table views answer decoded JSON, masked (Faust's own answered the raw bytes' repr).
    keys = {
        "known-subscribers": good["drawer"]["member_id"],
        "ledger-email": f"{good['event_id']}:packet-drawn-drawer",
        "event-trace": good["event_id"],
    }
    for table, key in keys.items():
        path = f"/table/{table}/{key}/"

        def found(path: str = path) -> httpx.Response | None:  # the subscriber's row: once MC imported it
            answer = get(ops_worker, path)
            return answer if answer.status_code == 200 else None

        answer = await eventually(found, timeout=60)
        assert answer.headers["content-type"].startswith("application/json")
        for secret in secrets:
            assert secret not in answer.text, (secret, table)
    known = get(ops_worker, f"/table/known-subscribers/{keys['known-subscribers']}/").json()
    assert known["email"].endswith("***@" + good["drawer"]["email"].split("@")[1])

    # Structured: every log line that is ours is one JSON object; the ids ride along.
    ours = [orjson.loads(line) for line in log_text.splitlines() if line.startswith("{")]
    assert ours and all({"ts", "level", "logger", "message"} <= set(line) for line in ours)
    about_bad = [line for line in ours if line.get("event_id") == bad["event_id"]]
    assert about_bad and about_bad[0]["notification_id"].startswith(bad["event_id"])
