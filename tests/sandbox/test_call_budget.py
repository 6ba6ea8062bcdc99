"""MC's API call budget (issue 23): per API family over a sliding minute, and REST calls in flight."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest

from mc_sandbox.__main__ import parse_args
from mc_sandbox.call_budget import BudgetError, CallBudget, parse_per_minute
from tests.fixtures.sandbox import SandboxProcess, start_sandbox

from .helpers import NS, found, get_json, retrieve, token

RECORD = "messaging/v1/messageDefinitionSends/key:packet-drawn-drawer/deliveryRecords/none"


def test_the_budget_counts_a_sliding_minute() -> None:
    budget = CallBudget({"rest": 2}, max_concurrent=1)
    assert budget.admit("rest").outcome == "ok"
    assert budget.admit("rest").outcome == "concurrency"  # the first one is still in flight
    budget.release("rest")
    assert budget.admit("rest").outcome == "ok"
    budget.release("rest")
    verdict = budget.admit("rest")
    assert verdict.outcome == "rate" and 1 <= verdict.retry_after <= 60
    assert all(budget.admit("soap").outcome == "ok" for _ in range(100))  # SOAP is not limited here
    report = budget.report()
    assert (
        report["rest"]["last_minute"],
        report["rest"]["throttled_total"],
        report["rest"]["blocked_total"],
    ) == (
        2,
        1,
        1,
    )
    assert report["soap"]["peak_per_minute"] == 100 and report["soap"]["max_concurrent"] is None


def test_flags() -> None:
    assert parse_args([]).calls_per_minute == {} and parse_args([]).max_concurrent_calls == 0
    assert parse_args(["--calls-per-minute", "mc"]).calls_per_minute == {"rest": 2500, "soap": 2000}
    assert parse_per_minute("rest=10") == {"rest": 10}
    off = parse_args(["--calls-per-minute", "mc", "--max-concurrent-calls", "5", "--no-call-budget"])
    assert off.calls_per_minute == {} and off.max_concurrent_calls == 0
    with pytest.raises(BudgetError):
        parse_per_minute("ftp=3")


async def test_throttled_as_mc_throttles(tmp_path: Path) -> None:
    sp = start_sandbox(tmp_path, "--calls-per-minute", "rest=6,soap=3", "--max-concurrent-calls", "2")
    try:
        base = sp.http_url
        tok = token(base)
        headers = {"Authorization": f"Bearer {tok}"}
        slow = {"target": "rest", "mode": "slow", "seconds": 1.0, "count": 2}
        httpx.post(f"{base}_sandbox/faults", json=slow, timeout=10).raise_for_status()
        async with httpx.AsyncClient(base_url=base, headers=headers, timeout=10) as c:
            held = [asyncio.create_task(c.get(RECORD)) for _ in range(2)]
            await asyncio.sleep(0.3)  # both are in flight now, sleeping in the slow fault
            blocked = await c.get(RECORD)
            await asyncio.gather(*held)
        assert blocked.status_code == 429 and "Retry-After" not in blocked.headers
        assert blocked.json()["errorcode"] == 50200
        assert blocked.json()["message"] == "Your requests are temporarily blocked."
        with httpx.Client(base_url=base, headers=headers, timeout=10) as c:
            codes = [c.get(RECORD).status_code for _ in range(4)]
            assert codes == [404] * 4  # answered: 6 REST calls in this minute so far
            over = c.get(RECORD)
            assert over.status_code == 429 and over.json()["errorcode"] == 50100
            assert 1 <= int(over.headers["Retry-After"]) <= 60 and over.json()["retryAfter"] >= 1
            sms = c.post("sms/v1/messageContact/packet-drawn-welcome/send", json={"mobileNumbers": ["1"]})
            assert sms.status_code == 429  # MobileConnect is REST too
        for _ in range(3):
            doc = retrieve(base, tok, "Subscriber", ["SubscriberKey"])
            assert found(doc, "OverallStatus")[0].text == "OK"
        r = httpx.post(
            f"{base}Service.asmx",
            content=(
                '<soap:Envelope xmlns:soap="http://schemas.xmlsoap.org/soap/envelope/"><soap:Header>'
                f'<fueloauth xmlns="http://exacttarget.com">{tok}</fueloauth></soap:Header><soap:Body>'
                f'<RetrieveRequestMsg xmlns="{NS}"><RetrieveRequest><ObjectType>Subscriber</ObjectType>'
                "<Properties>SubscriberKey</Properties></RetrieveRequest></RetrieveRequestMsg>"
                "</soap:Body></soap:Envelope>"
            ),
            headers={"Content-Type": "text/xml"},
        )
        assert r.status_code == 500 and "<faultstring>Rate Limited</faultstring>" in r.text
        assert "<Code>17</Code>" in r.text and "Retry-After" not in r.headers
        calls = get_json(base, "_sandbox/calls")
        rest, soap = calls["rest"], calls["soap"]
        assert (rest["limit_per_minute"], rest["max_concurrent"], rest["last_minute"]) == (6, 2, 6)
        assert (rest["throttled_total"], rest["blocked_total"], rest["in_flight"]) == (2, 1, 0)
        assert (soap["limit_per_minute"], soap["last_minute"], soap["throttled_last_minute"]) == (3, 3, 1)
        assert sum(m["calls"] for m in rest["minutes"]) == 6
    finally:
        sp.stop()


def test_unlimited_by_default_but_counted(clean_sandbox: SandboxProcess) -> None:
    base = clean_sandbox.http_url
    with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {token(base)}"}, timeout=10) as c:
        for _ in range(30):
            assert c.get(RECORD).status_code == 404
    rest = get_json(base, "_sandbox/calls")["rest"]
    assert rest["limit_per_minute"] is None and rest["throttled_total"] == 0
    assert rest["last_minute"] >= 30 and rest["peak_per_minute"] >= 30


def test_the_budget_of_a_running_sandbox_can_be_changed(tmp_path: Path) -> None:
    """`POST /_sandbox/calls`, as MC lifting a block: a test of a worker's circuit breaker blocks the
    account's calls, then lets them through again."""
    sp = start_sandbox(tmp_path, "--max-concurrent-calls", "1")
    try:
        base = sp.http_url
        changed = httpx.post(
            f"{base}_sandbox/calls",
            json={"max_concurrent_calls": 0, "calls_per_minute": "rest=60"},
            timeout=10,
        )
        assert changed.status_code == 200
        rest = changed.json()["rest"]
        assert (rest["max_concurrent"], rest["limit_per_minute"]) == (None, 60)
        assert changed.json()["soap"]["limit_per_minute"] is None
        for wrong in ({"calls_per_minute": "ftp=1"}, {"max_concurrent_calls": "many"}, ["x"]):
            assert httpx.post(f"{base}_sandbox/calls", json=wrong, timeout=10).status_code == 400
        off = httpx.post(f"{base}_sandbox/calls", json={"calls_per_minute": "off"}, timeout=10).json()
        assert off["rest"]["limit_per_minute"] is None and off["rest"]["max_concurrent"] is None
    finally:
        sp.stop()
