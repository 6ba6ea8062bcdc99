"""The web server's guard (issue 19): the token on every route but the open ones, masked answers,
the masked /table/ views, the DLQ reason masked, and MC's ENS callback (signature, probes, 5xx until
Kafka has the bounce). In process: the worker's aiohttp application, served by aiohttp's test server."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import importlib
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any

import orjson
import pytest
from aiohttp.test_utils import TestClient, TestServer
from faust.exceptions import SameNode
from faust.web import Request, Response, View

from stream_app.domain.subscribers import subscriber_signature
from stream_app.runtime.app import Runtime
from stream_app.runtime.health import StoreError
from stream_app.runtime.outputs import dlq_headers
from stream_app.settings import Settings
from stream_app.stages.suppression import MAX_PROBES, EnsCallback, EnsRegistration

TOKEN = "t0ken-for-tests"
EMAIL, PHONE = "ez.secret@example.com", "+886912345678"


def runtime_with(**changes: Any) -> Runtime:
    """The stages with tables and views, and the web guard; not the dashboard, which registers
    Faust's figures in the process-wide registry (once per process: the worker's)."""
    runtime = Runtime(replace(Settings(), web_auth_token=TOKEN, ens_listen="", **changes))
    for module in ("stages.batcher", "stages.senders", "stages.suppression", "stages.tracking", "ops.web"):
        importlib.import_module(f"stream_app.{module}").install(runtime)
    return runtime


@pytest.fixture
async def client() -> AsyncIterator[tuple[TestClient[Any, Any], Runtime]]:
    runtime = runtime_with()
    app = runtime.app

    @app.page("/echo/{text}/")
    class Echo(View):  # a careless view: says whatever it is given
        async def get(self, request: Request, text: str) -> Response:
            return self.json({"echo": text, "also": f"{EMAIL} {PHONE}"})

    web = app.web
    web.init_server()  # Faust's blueprints (ours included) onto the aiohttp application

    async def same_node(*args: Any, **kwargs: Any) -> Any:
        raise SameNode()

    app.router.route_req = same_node  # type: ignore[method-assign]  # this process owns every key
    known: Any = app.tables["known-subscribers"]
    known.data["M1"] = subscriber_signature(EMAIL, PHONE)
    ledger: Any = app.tables["ledger-email"]
    ledger.data["d-1:packet-drawn-drawer"] = orjson.dumps(
        {"state": "pending", "at": 1.0, "record": orjson.dumps({"email": EMAIL, "mobile": PHONE}).decode()}
    )
    async with TestClient(TestServer(web.web_app)) as test_client:  # type: ignore[attr-defined]
        yield test_client, runtime


def auth(token: str = TOKEN) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def test_every_route_but_the_open_ones_needs_the_token(
    client: tuple[TestClient[Any, Any], Runtime],
) -> None:
    test_client, runtime = client
    routes = {
        (route.method, route.resource.canonical)
        for route in runtime.app.web.web_app.router.routes()  # type: ignore[attr-defined]
        if route.resource is not None
    }
    assert ("GET", "/table/{name}/{key}/") in routes and ("GET", "/router/") in routes  # Faust's too
    for method, path in sorted(routes):
        url = path.format(
            name="known-subscribers", key="M1", run_id="x", event_id="d-1", address=EMAIL, text=EMAIL
        )
        if path in ("/health/", "/mc/ens/{run_id}/"):
            continue  # open: probes, and MC (verified by the signature)
        for headers in ({}, auth("wrong"), {"Authorization": TOKEN}, {"Authorization": f"Basic {TOKEN}"}):
            answer = await test_client.request(method, url, headers=headers)
            assert answer.status == 401, (method, url, headers)
            assert EMAIL not in await answer.text()
    # An unknown path says no more than a known one.
    assert (await test_client.get("/no/such/thing")).status == 401
    assert (await test_client.get("/no/such/thing", headers=auth())).status == 404


async def test_the_table_views_answer_decoded_masked_json(
    client: tuple[TestClient[Any, Any], Runtime],
) -> None:
    test_client, _ = client
    listing = await test_client.get("/table/", headers=auth())
    assert listing.status == 200
    assert {"known-subscribers", "ledger-email", "suppressed"} <= {t["name"] for t in await listing.json()}

    known = await test_client.get("/table/known-subscribers/M1/", headers=auth())
    assert known.status == 200 and known.content_type == "application/json"
    assert await known.json() == {"email": "e***@example.com", "mobile": "+886***78"}

    ledger = await test_client.get("/table/ledger-email/d-1:packet-drawn-drawer/", headers=auth())
    text = await ledger.text()
    assert ledger.status == 200 and (await ledger.json())["state"] == "pending"
    assert EMAIL not in text and PHONE not in text and "e***@example.com" in text

    missing = await test_client.get(f"/table/suppressed/{EMAIL}/", headers=auth())
    assert missing.status == 404 and EMAIL not in await missing.text()
    unknown = await test_client.get("/table/nope/x/", headers=auth())
    assert unknown.status == 404


async def test_a_json_answer_is_masked_whatever_the_view(
    client: tuple[TestClient[Any, Any], Runtime],
) -> None:
    test_client, _ = client
    answer = await test_client.get(f"/echo/{EMAIL}/", headers=auth())
    assert answer.status == 200
    assert await answer.json() == {"echo": "e***@example.com", "also": "e***@example.com +886***78"}


def test_the_dlq_reason_is_masked() -> None:
    error = ValueError(f"unknown event type '{EMAIL} {PHONE}'")
    headers = dict(dlq_headers([("trace", b"x")], error, "packet.drawn", 0, 7))
    assert headers["error.message"] == b"unknown event type 'e***@example.com +886***78'"
    assert headers["trace"] == b"x" and headers["source.offset"] == b"7"


# --- ENS callback ----------------------------------------------------------------------------------


class FakeBounced:
    def __init__(self, fail: bool = False, hang: bool = False) -> None:
        self.fail, self.hang = fail, hang
        self.sent: list[Any] = []

    async def send(self, **kwargs: Any) -> asyncio.Future[None]:
        self.sent.append(kwargs)
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if self.fail:
            future.set_exception(ConnectionError("broker away"))
        elif not self.hang:
            future.set_result(None)
        return future


def signed(body: bytes, key: str) -> str:
    return base64.b64encode(hmac.new(key.encode(), body, hashlib.sha256).digest()).decode()


BOUNCE = orjson.dumps(
    [
        {
            "eventCategoryType": "TransactionalSendEvents.EmailBounced",
            "info": {"to": EMAIL, "bounceCode": "HARD"},
        }
    ]
)


def registration() -> EnsRegistration:
    reg = EnsRegistration(runtime_with())
    reg.signature_key = "sig-key"
    return reg


async def test_a_bounce_is_answered_2xx_only_once_kafka_has_it(monkeypatch: pytest.MonkeyPatch) -> None:
    reg = registration()
    ok = FakeBounced()
    status, _ = await EnsCallback(reg, ok).answer(reg.run_id, BOUNCE, signed(BOUNCE, "sig-key"))
    assert status == 200 and ok.sent[0]["key"] == EMAIL.encode()

    status, _ = await EnsCallback(reg, FakeBounced(fail=True)).answer(
        reg.run_id, BOUNCE, signed(BOUNCE, "sig-key")
    )
    assert status == 503  # MC delivers the batch again

    monkeypatch.setattr("stream_app.stages.suppression.BOUNCE_ACK_SECONDS", 0.1)
    status, _ = await EnsCallback(reg, FakeBounced(hang=True)).answer(
        reg.run_id, BOUNCE, signed(BOUNCE, "sig-key")
    )
    assert status == 503


async def test_the_callback_is_verified_by_its_signature_and_its_path() -> None:
    reg = registration()
    topic = FakeBounced()
    callback = EnsCallback(reg, topic)
    assert (await callback.answer(reg.run_id, BOUNCE, signed(BOUNCE, "other")))[0] == 401
    assert (await callback.answer(reg.run_id, BOUNCE, None))[0] == 401
    assert (await callback.answer("another-run", BOUNCE, signed(BOUNCE, "sig-key")))[0] == 404
    assert (await callback.answer(reg.run_id, b"{not json", None))[0] == 400
    assert not topic.sent


async def test_verification_probes_only_while_registering_on_this_path_and_bounded() -> None:
    reg = registration()
    callback = EnsCallback(reg, FakeBounced())

    def probe(n: int) -> bytes:
        return orjson.dumps({"callbackId": f"cb-{n}", "verificationKey": f"k-{n}"})

    assert (await callback.answer(reg.run_id, probe(0), None))[0] == 409  # not registering
    reg.registering = True
    assert (await callback.answer("another-run", probe(0), None))[0] == 404
    for n in range(50):
        assert (await callback.answer(reg.run_id, probe(n), None))[0] == 200
    assert len(reg.verification) == MAX_PROBES and reg.verification["cb-49"] == "k-49"


async def test_health_turns_red_for_good_once_the_store_failed(
    client: tuple[TestClient[Any, Any], Runtime],
) -> None:
    test_client, runtime = client
    runtime.health.pause_faust = lambda: None  # type: ignore[method-assign]
    runtime.health.store_failed("batcher", StoreError("IO error: No space left on device"))
    answer = await test_client.get("/health/")  # open: a probe needs no token
    assert answer.status == 503
    assert (await answer.json())["store_failure"].startswith("batcher: StoreError: IO error")
