from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest

from tests.fixtures.sandbox import SandboxProcess

from .helpers import client, get_json, imports_by_file, sftp, token, upload, wait_for

SMS = "sms/v1/messageContact/packet-drawn-welcome/send"
OK_SMS = {"mobileNumbers": ["886912345678"]}


def _fault(base: str, **body: object) -> None:
    httpx.post(f"{base}_sandbox/faults", json=body).raise_for_status()


def test_error500_and_429_then_recovery(clean_sandbox: SandboxProcess) -> None:
    base = clean_sandbox.http_url
    with client(base) as c:
        _fault(base, target="sms", mode="error500", count=2)
        assert [c.post(SMS, json=OK_SMS).status_code for _ in range(3)] == [500, 500, 202]
        _fault(base, target="rest", mode="error429", count=1)
        r = c.post("messaging/v1/messageDefinitionSends/key:packet-drawn-drawer/send", json={})
        assert r.status_code == 429 and r.headers["Retry-After"] == "1" and r.json()["errorcode"] == 50100
    _fault(base, target="auth", mode="error500", count=1)
    assert httpx.post(f"{base}v2/token", json={}).status_code == 500
    token(base)
    _fault(base, target="soap", mode="error500", count=1)
    r = httpx.post(f"{base}Service.asmx", content=b"<x/>")
    assert r.status_code == 500 and "Server was unable to process request." in r.text


def test_list_probability_and_reset(clean_sandbox: SandboxProcess) -> None:
    base = clean_sandbox.http_url
    _fault(base, target="rest", mode="error500", probability=1.0)
    _fault(base, target="sftp", mode="slow", count=3, seconds=0.1)
    faults = get_json(base, "_sandbox/faults")
    assert [(f["target"], f["mode"]) for f in faults] == [("rest", "error500"), ("sftp", "slow")]
    with client(base) as c:
        for _ in range(3):
            assert c.get("messaging/v1/messageDefinitionSends/key:x/deliveryRecords/y").status_code == 500
    assert httpx.post(f"{base}_sandbox/faults", json={"target": "nope", "mode": "slow"}).status_code == 400
    httpx.post(f"{base}_sandbox/reset").raise_for_status()
    assert get_json(base, "_sandbox/faults") == []


def test_slow_timeout_and_disconnect(clean_sandbox: SandboxProcess) -> None:
    base = clean_sandbox.http_url
    with client(base) as c:
        _fault(base, target="sms", mode="slow", count=1, seconds=0.4)
        t0 = time.monotonic()
        assert c.post(SMS, json=OK_SMS).status_code == 202
        assert time.monotonic() - t0 >= 0.4
        _fault(base, target="sms", mode="timeout", count=1, seconds=0.3)
        assert c.post(SMS, json=OK_SMS).status_code == 504
        _fault(base, target="sms", mode="disconnect", count=1)
        with pytest.raises(httpx.TransportError):
            c.post(SMS, json=OK_SMS)
        assert c.post(SMS, json=OK_SMS).status_code == 202


def test_rate_limit_soap_fault(clean_sandbox: SandboxProcess) -> None:
    base = clean_sandbox.http_url
    _fault(base, target="soap", mode="error429", count=1)
    r = httpx.post(f"{base}Service.asmx", content=b"<x/>")
    assert r.status_code == 429 and r.headers["Retry-After"] == "1"
    assert "<faultstring>Rate Limited</faultstring>" in r.text and "<Code>17</Code>" in r.text


def test_sftp_disconnect_partial_file_not_imported(clean_sandbox: SandboxProcess, tmp_path: Path) -> None:
    base = clean_sandbox.http_url
    big = tmp_path / "dropped.csv"
    big.write_text("SubscriberKey,EmailAddress\n" + "".join(f"D{i},d{i}@example.com\n" for i in range(20000)))
    _fault(base, target="sftp", mode="disconnect", count=1)
    r = sftp(clean_sandbox.sftp_port, [f"put {big} /Import/dropped.csv"], tmp_path)
    assert r.returncode != 0
    _fault(base, target="sftp", mode="error500", count=1)
    r = sftp(clean_sandbox.sftp_port, [f"put {big} /Import/failed.csv"], tmp_path)
    assert r.returncode != 0
    upload(clean_sandbox.sftp_port, tmp_path, "after.csv", "SubscriberKey,EmailAddress\nZ1,z1@example.com\n")
    wait_for(lambda: [j for j in imports_by_file(base, "after.csv") if j["status"] == "Completed"])
    assert [j["file"] for j in get_json(base, "_sandbox/imports")] == ["/Import/after.csv"]


def test_import_fault_ends_in_error(clean_sandbox: SandboxProcess, tmp_path: Path) -> None:
    base = clean_sandbox.http_url
    _fault(base, target="import", mode="error500", count=1)
    upload(clean_sandbox.sftp_port, tmp_path, "broken.csv", "SubscriberKey,EmailAddress\nE1,e1@example.com\n")
    job = wait_for(lambda: [j for j in imports_by_file(base, "broken.csv") if j["status"] == "Error"])[0]
    assert job["status"] == "Error"
    assert get_json(base, "_sandbox/subscribers") == []
