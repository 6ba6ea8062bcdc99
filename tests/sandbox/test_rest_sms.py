from __future__ import annotations

from typing import Any

import httpx

from tests.fixtures.sandbox import SandboxProcess

from .helpers import client, get_json, wait_for

SEND = "messaging/v1/messageDefinitionSends/key:{}/send"
SMS = "sms/v1/messageContact/{}/send"


def _subscriber(c: httpx.Client, base: str, key: str, email: str, status: str | None = None) -> None:
    status_xml = f"<Status>{status}</Status>" if status else ""
    tok = c.headers["Authorization"].split()[1]
    env = (
        '<soap:Envelope xmlns:soap="http://schemas.xmlsoap.org/soap/envelope/" '
        'xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">'
        f'<soap:Header><fueloauth xmlns="http://exacttarget.com">{tok}</fueloauth></soap:Header><soap:Body>'
        '<CreateRequest xmlns="http://exacttarget.com/wsdl/partnerAPI"><Options/>'
        f'<Objects xsi:type="Subscriber"><EmailAddress>{email}</EmailAddress>'
        f"<SubscriberKey>{key}</SubscriberKey>"
        f"{status_xml}</Objects></CreateRequest></soap:Body></soap:Envelope>"
    )
    r = httpx.post(f"{base}Service.asmx", content=env, headers={"Content-Type": "text/xml"})
    assert "<OverallStatus>OK</OverallStatus>" in r.text, r.text


def _body(key: str, email: str | None, **attrs: str) -> dict:
    to: dict = {"SubscriberKey": key, "ContactAttributes": {"SubscriberAttributes": attrs}}
    if email is not None:
        to["Address"] = email
    return {
        "From": {"Address": "noreply@example.com", "Name": "TABLE via EZTABLE"},
        "To": to,
        "Options": {"RequestType": "ASYNC"},
    }


def test_rest_send_accepted_and_delivery_record(clean_sandbox: SandboxProcess) -> None:
    base = clean_sandbox.http_url
    with client(base) as c:
        _subscriber(c, base, "M1001", "ez@example.com")
        r = c.post(
            SEND.format("packet-drawn-drawer"),
            json=_body("M1001", "ez@example.com", DrawerName="EZ", GiverName="TABLE", Amount="250"),
        )
        assert r.status_code == 202
        resp = r.json()["responses"][0]
        assert resp == {
            "recipientSendId": resp["recipientSendId"],
            "hasErrors": False,
            "messages": ["Queued"],
        }
        url = (
            f"messaging/v1/messageDefinitionSends/key:packet-drawn-drawer/deliveryRecords/"
            f"{resp['recipientSendId']}"
        )
        queued = c.get(url)
        # Until MC has sent it, the record has these three fields only.
        assert queued.status_code == 200 and set(queued.json()) == {"id", "messageId", "status"}
        assert queued.json()["status"] == "Queued"
        rec: Any = wait_for(lambda: c.get(url).json() if c.get(url).json()["status"] != "Queued" else None)
        assert rec["status"] == "Sent" and rec["to"]["key"] == "M1001" and rec["deliveryTime"]
        assert rec["messageId"] == resp["recipientSendId"]
    (msg,) = get_json(base, "_sandbox/messages")
    assert msg["id"] == resp["recipientSendId"]
    assert msg["text"] == "親愛的 EZ 恭喜你好手氣抽到 TABLE 送的紅包 $250！訂餐廳吃飯可直接用！"
    assert msg["from_name"] == "TABLE via EZTABLE" and msg["to"] == "ez@example.com"
    assert msg["attributes"]["Amount"] == "250" and msg["received_at"].endswith("Z")


def test_rest_refusals(clean_sandbox: SandboxProcess) -> None:
    base = clean_sandbox.http_url
    with client(base) as c:
        _subscriber(c, base, "K1", "k1@example.com")
        _subscriber(c, base, "H1", "h1@example.com", status="Held")
        cases = [
            ("packet-drawn-drawer", "NOPE", "nope@example.com", 13),
            ("packet-drawn-drawer", "K1", "other@example.com", 14),
            ("packet-drawn-drawer", "H1", "h1@example.com", 2),
            ("unknown-definition", "K1", "k1@example.com", 18002),
        ]
        for key, sub, email, detail in cases:
            for mode in ("ASYNC", "SYNC"):
                body = _body(sub, email)
                body["Options"]["RequestType"] = mode
                r = c.post(SEND.format(key), json=body)
                assert r.status_code == 202
                resp = r.json()["responses"][0]
                assert resp["hasErrors"] is True
                codes = [e["messageErrorCode"] for e in resp["messageErrors"]]
                assert codes == [180008, detail], (key, sub)
                assert resp["messageErrors"][0]["messageErrorStatus"].startswith(
                    "Unable to queue Triggered Send"
                )
        r = c.post(SEND.format("packet-drawn-drawer"), json=_body("K1", None))
        assert r.status_code == 202
        assert r.json() == {
            "recipientSendId": "",
            "hasErrors": True,
            "messages": ["InvalidOrMissingToAddress"],
        }
    assert get_json(base, "_sandbox/messages") == []


def test_sms_validation(clean_sandbox: SandboxProcess) -> None:
    base = clean_sandbox.http_url
    url = SMS.format("packet-drawn-welcome")
    with client(base) as c:
        cases = [
            ({"mobileNumbers": ["+886912345678"]}, "+886912345678 is not a numeric string"),
            ({"mobileNumbers": ["886-912345678"]}, "886-912345678 is not a numeric string"),
            ({"mobileNumbers": []}, "The count of mobile numbers or subscribers cannot be zero."),
            (
                {
                    "mobileNumbers": ["886912345678"],
                    "Subscribers": [{"MobileNumber": "1", "SubscriberKey": "a"}],
                },
                "An array of mobile numbers and an array of subscribers cannot be provided at the same time.",
            ),
            (
                {"mobileNumbers": ["886912345678"], "Override": True},
                "Cannot override message text with a blank message.",
            ),
            (
                {"mobileNumbers": ["886912345678"], "messageText": "hi"},
                "MessageText is not applicable when Override is false.",
            ),
            (
                {"Subscribers": [{"MobileNumber": "886912345678"}]},
                "A subscriber object must have both a mobile number and subscriber key defined.",
            ),
            (
                {"Subscribers": [{"MobileNumber": "1", "SubscriberKey": str(i)} for i in range(251)]},
                "The count of subscribers cannot exceed 250.",
            ),
        ]
        for body, error in cases:
            r = c.post(url, json=body)
            assert r.status_code == 400, body
            assert error in r.json()["errors"], r.json()
        r = c.post(SMS.format("MzA6Nzg6MA"), json={"mobileNumbers": ["886912345678"]})
        assert r.status_code == 400 and r.json() == {"errors": ["Message id MzA6Nzg6MA is not valid."]}
    assert get_json(base, "_sandbox/messages") == []


def test_sms_send_and_deliveries(clean_sandbox: SandboxProcess) -> None:
    base = clean_sandbox.http_url
    url = SMS.format("packet-drawn-welcome")
    with client(base) as c:
        r = c.post(
            url,
            json={
                "subscribers": [
                    {
                        "mobileNumber": "886912345678",
                        "subscriberKey": "M1001",
                        "attributes": {"GiverName": "TABLE", "Amount": "250"},
                    }
                ],
                # MobileConnect delivers to numbers subscribed to the keyword only (field names in
                # any case, as MC's .NET binding takes them).
                "subscribe": "true",
                "KEYWORD": "EZTABLE",
            },
        )
        assert r.status_code == 202
        token_id = r.json()["tokenId"]
        r2 = c.post(
            url, json={"mobileNumbers": ["886900000000"], "override": "true", "MESSAGETEXT": "custom"}
        )
        assert r2.status_code == 202
        url = f"sms/v1/messageContact/packet-drawn-welcome/deliveries/{token_id}"
        queuing = c.get(url).json()
        assert queuing["status"] == "Queuing" and queuing["tracking"] == []
        d: Any = wait_for(lambda: c.get(url).json() if c.get(url).json()["status"] == "Finished" else None)
        assert "T" in d["createDate"] and not d["createDate"].endswith("Z")  # MC's CST, no zone
        final = max(d["tracking"], key=lambda t: int(t["standardStatusCode"]))
        assert final["standardStatusCode"] == "4000" and d["count"] == 1
        bad = c.get("sms/v1/messageContact/packet-drawn-welcome/deliveries/nope")
        assert bad.status_code == 400 and bad.json()["errors"] == ["Token id nope is not valid."]
    msgs = get_json(base, "_sandbox/messages?channel=sms")
    assert [(m["subscriber_key"], m["to"], m["text"]) for m in msgs] == [
        ("M1001", "886912345678", "TABLE 送你 $250 紅包！EZTABLE 訂位即可使用，祝  用餐愉快。"),
        ("", "886900000000", "custom"),
    ]
