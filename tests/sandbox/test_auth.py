from __future__ import annotations

import httpx
import zeep

from tests.fixtures.sandbox import SandboxProcess

from .helpers import CREDS, client, get_json, header, token


def test_token_shape(clean_sandbox: SandboxProcess) -> None:
    base = clean_sandbox.http_url
    r = httpx.post(f"{base}v2/token", json={**CREDS, "account_id": "100000001"})
    assert r.status_code == 200
    body = r.json()
    assert body["token_type"] == "Bearer"
    assert body["expires_in"] == 1079
    assert body["rest_instance_url"] == base and body["soap_instance_url"] == base
    assert body["access_token"].count(".") == 2
    assert "email_send" in body["scope"]
    assert get_json(base, "_sandbox/stats")["token_requests"] == 1


def test_bad_credentials_and_account(clean_sandbox: SandboxProcess) -> None:
    base = clean_sandbox.http_url
    for bad in ({"client_secret": "nope"}, {"client_id": "other"}, {"account_id": 999}):
        r = httpx.post(f"{base}v2/token", json={**CREDS, **bad})
        assert r.status_code == 401
        assert r.json()["error"] == "invalid_client"
        assert {"error_description", "error_uri"} <= set(r.json())


def test_rest_without_or_with_unknown_token(clean_sandbox: SandboxProcess) -> None:
    base = clean_sandbox.http_url
    url = f"{base}messaging/v1/messageDefinitionSends/key:packet-drawn-drawer/send"
    for headers in ({}, {"Authorization": "Bearer not-a-token"}):
        r = httpx.post(url, json={}, headers=headers)
        assert r.status_code == 401
        assert r.json()["message"] == "Not Authorized" and r.json()["errorcode"] == 0


def test_expired_token_rest_and_soap(clean_sandbox: SandboxProcess, zeep_client: zeep.Client) -> None:
    base = clean_sandbox.http_url
    tok = token(base)
    httpx.post(f"{base}_sandbox/tokens/expire").raise_for_status()
    with client(base, tok) as c:
        r = c.post(
            "sms/v1/messageContact/packet-drawn-welcome/send", json={"mobileNumbers": ["886912345678"]}
        )
    assert r.status_code == 401
    rr = zeep_client.get_type("ns0:RetrieveRequest")
    try:
        zeep_client.service.Retrieve(
            RetrieveRequest=rr(ObjectType="Subscriber", Properties=["SubscriberKey"]),
            _soapheaders=[header(tok)],
        )
    except zeep.exceptions.Fault as fault:
        assert fault.message == "Token Expired"
    else:
        raise AssertionError("expected a Token Expired fault")
    # A SOAP 1.1 fault travels on HTTP 500.
    raw = httpx.post(f"{base}Service.asmx", content=b"<x/>", headers={"Content-Type": "text/xml"})
    assert raw.status_code == 500
