from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.fixtures.sandbox import SandboxProcess

from .helpers import (
    NS,
    client,
    create_subscribers,
    found,
    get_json,
    imports_by_file,
    sftp,
    soap,
    token,
    upload,
    wait_for,
)

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


def _batch(base: str, tok: str, sends: list[tuple[str, str, str]]) -> Any:
    """One SOAP Create of a triggered send to (key, email, NotificationId) each, as the service's."""
    subs = "".join(
        f"<Subscribers><EmailAddress>{email}</EmailAddress><SubscriberKey>{key}</SubscriberKey>"
        f"<Attributes><Name>NotificationId</Name><Value>{nid}</Value></Attributes></Subscribers>"
        for key, email, nid in sends
    )
    body = (
        f'<CreateRequest xmlns="{NS}"><Options/><Objects xsi:type="TriggeredSend">'
        f"<TriggeredSendDefinition><CustomerKey>packet-drawn-drawer</CustomerKey></TriggeredSendDefinition>"
        f"{subs}</Objects></CreateRequest>"
    )
    return soap(base, tok, body)


def test_hold_answer_makes_the_sends_then_holds_the_answer(clean_sandbox: SandboxProcess) -> None:
    """MC accepted the batch, made and logged its sends, and its answer is late: the caller cannot
    know, the sandbox can say so. A call that accepted fewer sends than min_items, or none (a
    Retrieve), goes by at once and leaves the fault armed."""
    base = clean_sandbox.http_url
    tok = token(base)
    people = [(f"H{i}", f"h{i}@example.com") for i in range(3)]
    create_subscribers(base, tok, people)
    _fault(base, target="soap", mode="hold_answer", min_items=2, seconds=30)
    assert get_json(base, "_sandbox/faults")[0]["min_items"] == 2
    assert (
        httpx.post(f"{base}_sandbox/faults", json={"target": "auth", "mode": "hold_answer"}).status_code
        == 400
    )

    alone = _batch(base, tok, [(*people[0], "n-alone")])  # one send: not held, fault still armed
    assert [e.text for e in found(alone, "OverallStatus")] == ["OK"]
    assert get_json(base, "_sandbox/held") == [] and len(get_json(base, "_sandbox/faults")) == 1

    answer: dict[str, Any] = {}

    def call() -> None:
        answer["doc"] = _batch(base, tok, [(*people[1], "n-1"), (*people[2], "n-2")])
        answer["at"] = time.monotonic()

    caller = threading.Thread(target=call)
    caller.start()
    held: dict[str, Any] = wait_for(lambda: _first(get_json(base, "_sandbox/held")), what="a held answer")
    assert held["items"] == 2 and held["notification_ids"] == ["n-1", "n-2"] and held["holding"]
    assert get_json(base, "_sandbox/faults") == []  # used up
    # Accepted and sent while the answer is held: the send log has both, the caller has nothing yet.
    logged = wait_for(lambda: _logged(base, "n-1", "n-2"), what="the held batch in the send log")
    assert all(not row["ErrorCode"] for row in logged)
    assert caller.is_alive() and "doc" not in answer

    assert httpx.delete(f"{base}_sandbox/held", params={"id": held["id"] + 1}).json() == {"released": 0}
    assert caller.is_alive()
    released_at = time.monotonic()
    assert httpx.delete(f"{base}_sandbox/held", params={"id": held["id"]}).json() == {"released": 1}
    caller.join(timeout=10)
    assert answer["at"] >= released_at
    assert [e.text for e in found(answer["doc"], "OverallStatus")] == ["OK"]
    assert not get_json(base, "_sandbox/held")[0]["holding"]
    ids = [m["attributes"].get("NotificationId") for m in get_json(base, "_sandbox/messages")]
    assert ids == ["n-alone", "n-1", "n-2"]  # each once


def _first(items: list[dict[str, Any]]) -> dict[str, Any] | None:
    return items[0] if items else None


def _logged(base: str, *notification_ids: str) -> list[dict[str, Any]] | None:
    """The SendLog rows of these notifications once each has one."""
    log = get_json(base, "_sandbox/send-log")["SendLog"]
    rows = [r for r in log if r["NotificationId"] in notification_ids]
    return rows if sorted(r["NotificationId"] for r in rows) == sorted(notification_ids) else None


def test_hold_answer_of_an_sms_lets_go_at_its_seconds(clean_sandbox: SandboxProcess) -> None:
    base = clean_sandbox.http_url
    _fault(base, target="sms", mode="hold_answer", seconds=0.5)
    with client(base) as c:
        t0 = time.monotonic()
        r = c.post(SMS, json=OK_SMS)
        assert r.status_code == 202 and r.json()["tokenId"]
        assert time.monotonic() - t0 >= 0.5
    (held,) = get_json(base, "_sandbox/held")
    assert held["target"] == "sms" and held["items"] == 1 and not held["holding"]
