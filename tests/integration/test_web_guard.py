"""No one reads members' data off the web port (issue 19): a worker with WEB_AUTH_TOKEN and its ENS
callback on a listener of its own (ENS_LISTEN). Every route of its web server, Faust's blueprints
included, is walked without the token, with a wrong one and with it; no answer, log line or DLQ
header holds a raw address or number.

Its own broker and sandbox: a second consumer group on the session broker would send the other
tests' notifications too.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from stream_app.contract.topics import DLQ_SOURCES, dlq_name
from stream_app.localkafka import free_port
from tests.fixtures.worker import REPO, WorkerProcess, start_worker, worker_env
from tests.integration.helpers import (
    drawn_event,
    eventually,
    messages,
    private_stack,
    produce,
    read_all,
    statuses,
)

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="session")]

TOKEN = "op-token-5c1f0e"
OPEN = {"/health/"}  # the ENS callback is on its own listener here

ROUTES = """
import json
from stream_app.runtime.app import build
from stream_app.settings import load
settings = load()
runtime = build(settings, settings.stages)
runtime.app.web.init_server()
routes = runtime.app.web.web_app.router.routes()
print(json.dumps(sorted({(r.method, r.resource.canonical) for r in routes if r.resource is not None})))
"""


def web_routes(env: dict[str, str]) -> list[tuple[str, str]]:
    """Every (method, route) of the worker's web server, from its aiohttp router, built as the worker
    builds it (in a process of its own: building registers Faust's figures once per process)."""
    done = subprocess.run(
        [sys.executable, "-c", ROUTES],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return [(method, path) for method, path in json.loads(done.stdout.strip().splitlines()[-1])]


def call(worker: WorkerProcess, method: str, path: str, token: str | None) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    body = b'{"verificationKey": "x", "callbackId": "y"}' if method == "POST" else None
    return httpx.request(
        method, f"{worker.web_url}{path.lstrip('/')}", headers=headers, content=body, timeout=10
    )


async def test_every_route_needs_the_token_and_no_answer_log_or_dlq_header_leaks(tmp_path: Path) -> None:
    with private_stack(tmp_path) as (kafka, sandbox):
        ens_port = free_port()
        extra = {
            "APP_ID": "web-guard",
            "WEB_AUTH_TOKEN": TOKEN,
            "ENS_LISTEN": f"127.0.0.1:{ens_port}",
            "MC_EMAIL_API": "transactional",  # bounces come back through ENS
            "LOG_FORMAT": "json",
        }
        worker = start_worker(kafka, sandbox, tmp_path / "worker", **extra)
        try:
            worker.wait_ready()  # /health/ is open: probes need no token
            await _walk(kafka, sandbox, worker, ens_port, extra, tmp_path)
        finally:
            worker.stop()


async def _walk(
    kafka: Any, sandbox: Any, worker: WorkerProcess, ens_port: int, extra: dict[str, str], tmp_path: Path
) -> None:
    good = drawn_event()
    tag = good["event_id"][-8:]
    bounced = drawn_event(drawer__email=f"b.{tag}@bounce.example", drawer__mobile=None)
    invalid = drawn_event(drawer__email=f"bad.{tag}@@example.com")
    leak_email, leak_phone = f"leak.{tag}@example.com", "+886911222333"
    # Not an event: its error quotes the address and the number it carries (the DLQ's error.message).
    quoting = {**drawn_event(), "event_type": f"{leak_email} {leak_phone}"}
    for event in (good, bounced, invalid, quoting):
        await produce(kafka.bootstrap, "packet.drawn", event)
    secrets = {
        good["drawer"]["email"],
        good["drawer"]["mobile"],
        good["giver"]["email"],
        bounced["drawer"]["email"],
        invalid["drawer"]["email"],
        leak_email,
        leak_phone,
    }

    await eventually(lambda: len(messages(sandbox, good)) >= 3, timeout=90)
    address = bounced["drawer"]["email"]

    def suppressed() -> bool:
        answer = call(worker, "GET", f"/suppressed/{address}/", TOKEN)
        return answer.status_code == 200 and answer.json()["suppressed"]

    await eventually(suppressed, timeout=90)  # the bounce came in through the ENS listener
    await eventually(lambda: statuses(kafka.bootstrap, invalid["event_id"]), timeout=30)
    await eventually(lambda: read_all(kafka.bootstrap, "packet.drawn.dlq"), timeout=30)

    routes = web_routes(worker_env(kafka, sandbox, tmp_path / "routes", worker.web_port, **extra))
    paths = {path for _, path in routes}
    assert {"/table/{name}/{key}/", "/router/{name}/{key}/", "/events/{event_id}/", "/metrics"} <= paths
    assert "/mc/ens/{run_id}/" not in paths  # on its own listener

    tables = [t["name"] for t in call(worker, "GET", "/table/", TOKEN).json()]
    assert {"known-subscribers", "ledger-email", "event-trace", "suppressed", "pending-rows"} <= set(tables)
    keys = [
        good["drawer"]["member_id"],
        good["event_id"],
        f"{good['event_id']}:packet-drawn-drawer",
        f"{good['event_id']}:packet-drawn-welcome",
        address,
    ]
    values = {
        "event_id": [good["event_id"], invalid["event_id"], bounced["event_id"]],
        "address": [address, good["drawer"]["email"]],
        "name": tables,
        "key": keys,
        "run_id": ["x"],
    }

    def expand(path: str) -> list[str]:
        found = [path]
        for name, options in values.items():
            if "{" + name + "}" in path:
                found = [p.replace("{" + name + "}", v) for p in found for v in options]
        return found

    answers: list[tuple[str, str, int, str]] = []
    for method, route in routes:
        for path in expand(route):
            for token in (None, "wrong", TOKEN):
                answer = call(worker, method, path, token)
                answers.append((method, path, answer.status_code, answer.text))
                if token == TOKEN:
                    assert answer.status_code != 401, (method, path)
                    assert answer.status_code < 500 or route.startswith("/router/"), (
                        method,
                        path,
                        answer.text,
                    )
                elif route in OPEN:
                    assert answer.status_code in (200, 503), (method, path)
                else:
                    assert answer.status_code == 401, (method, path, token, answer.status_code)
    # The operator port does not serve MC's callback (nor say so to a stranger).
    assert call(worker, "POST", "/mc/ens/x/", None).status_code == 401
    assert call(worker, "POST", "/mc/ens/x/", TOKEN).status_code in (404, 405)
    # The ENS listener serves MC's callback alone: nothing of the operator views.
    ens = httpx.get(f"http://127.0.0.1:{ens_port}/table/", timeout=10)
    assert ens.status_code in (404, 405)

    # The table views answer decoded, masked values.
    known = call(worker, "GET", f"/table/known-subscribers/{good['drawer']['member_id']}/", TOKEN)
    assert known.status_code == 200, known.text
    assert known.json()["email"].endswith("***@example.com") and "***" in known.json()["mobile"]

    log_text = Path(worker.log_path).read_text(errors="replace")
    dlq_headers = [
        (topic, key, value.decode("utf-8", "replace"))
        for topic in (dlq_name(t) for t in DLQ_SOURCES)
        for record in await read_all(kafka.bootstrap, topic)
        for key, value in record.headers
    ]
    assert any(key == "error.message" and "***" in value for _, key, value in dlq_headers)
    for secret in secrets:
        for method, path, status, text in answers:
            assert secret not in text, (secret, method, path, status)
        assert secret not in log_text, f"{secret} in the worker log"
        for topic, key, value in dlq_headers:
            assert secret not in value, (secret, topic, key)
    print("WALKED", orjson.dumps({"routes": len(routes), "requests": len(answers)}).decode())
