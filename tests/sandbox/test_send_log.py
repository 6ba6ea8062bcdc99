"""The send logging data extensions (reference §2.8): rows at send time, read through SOAP Retrieve."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import httpx
import pytest
import zeep

from tests.fixtures.sandbox import SandboxProcess, start_sandbox

from .helpers import client, get_json, header, token, wait_for

DELAY = 0.5  # --send-log-delay of this module's sandbox
SEND = "messaging/v1/messageDefinitionSends/key:{}/send"
SMS = "sms/v1/messageContact/packet-drawn-welcome/send"
# MobileConnect delivers (and logs) only numbers subscribed to the message's keyword.
SUBSCRIBE = {"Subscribe": True, "keyword": "EZTABLE"}
EMAIL_FIELDS = [
    "JobID",
    "BatchID",
    "SubscriberKey",
    "EmailAddress",
    "TriggeredSendID",
    "ErrorCode",
    "NotificationId",
]
SMS_FIELDS = ["MobileNumber", "SubscriberKey", "MessageID", "TokenID", "ErrorCode", "NotificationId"]


@pytest.fixture(scope="module")
def box(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SandboxProcess]:
    sp = start_sandbox(tmp_path_factory.mktemp("mc_sandbox_send_log"), "--send-log-delay", str(DELAY))
    try:
        yield sp
    finally:
        sp.stop()


@pytest.fixture(scope="module")
def zc(box: SandboxProcess) -> zeep.Client:
    return zeep.Client(f"{box.http_url}etframework.wsdl")


class Mc:
    """REST and SOAP against a freshly reset sandbox."""

    def __init__(self, zc: zeep.Client, base: str) -> None:
        httpx.post(f"{base}_sandbox/reset", timeout=10).raise_for_status()
        self.zc = zc
        self.base = base
        self.tok = token(base)
        self.http = client(base, self.tok)

    def t(self, name: str) -> Any:
        return self.zc.get_type(f"ns0:{name}")

    def subscribers(self, *pairs: tuple[str, str]) -> None:
        objects = [self.t("Subscriber")(EmailAddress=email, SubscriberKey=key) for key, email in pairs]
        r = self.zc.service.Create(Options=self.t("CreateOptions")(), Objects=objects, _soapheaders=self._h())
        assert r.OverallStatus == "OK", r

    def rest_send(self, key: str, email: str, **attrs: str) -> dict[str, Any]:
        body = {
            "To": {
                "Address": email,
                "SubscriberKey": key,
                "ContactAttributes": {"SubscriberAttributes": attrs},
            }
        }
        r = self.http.post(SEND.format("packet-drawn-drawer"), json=body)
        assert r.status_code == 202
        return dict(r.json())

    def sms(self, body: dict[str, Any]) -> str:
        r = self.http.post(SMS, json=body)
        assert r.status_code == 202, r.text
        return str(r.json()["tokenId"])

    def retrieve(self, object_type: str, props: list[str], flt: Any = None, cont: str | None = None) -> Any:
        if cont is not None:
            req = self.t("RetrieveRequest")(ObjectType=object_type, ContinueRequest=cont)
        else:
            req = self.t("RetrieveRequest")(ObjectType=object_type, Properties=props, Filter=flt)
        return self.zc.service.Retrieve(RetrieveRequest=req, _soapheaders=self._h())

    def simple(self, prop: str, op: str, *values: str) -> Any:
        return self.t("SimpleFilterPart")(Property=prop, SimpleOperator=op, Value=list(values))

    def rows(self, de: str, props: list[str], flt: Any = None) -> list[dict[str, str | None]]:
        r = self.retrieve(f"DataExtensionObject[{de}]", props, flt)
        assert r.OverallStatus == "OK", r.OverallStatus
        return [as_dict(row) for row in r.Results]

    def by_id(self, de: str, notification_id: str) -> list[dict[str, str | None]]:
        fields = EMAIL_FIELDS if de == "SendLog" else SMS_FIELDS
        return self.rows(de, fields, self.simple("NotificationId", "equals", notification_id))

    def wait_rows(self, de: str, notification_id: str) -> list[dict[str, str | None]]:
        return wait_for(
            lambda: self.by_id(de, notification_id) or None,
            timeout=10,
            what=f"{de} rows of {notification_id}",
        )

    def _h(self) -> list[Any]:
        return [header(self.tok)]


def as_dict(row: Any) -> dict[str, str | None]:
    return {p.Name: p.Value for p in row.Properties.Property}


@pytest.fixture
def mc(box: SandboxProcess, zc: zeep.Client) -> Iterator[Mc]:
    m = Mc(zc, box.http_url)
    m.subscribers(("K1", "k1@example.com"), ("K2", "k2@example.com"))
    yield m
    m.http.close()


def test_a_rest_send_is_logged_at_send_time_with_its_notification_id(mc: Mc) -> None:
    started = time.monotonic()
    mc.rest_send("K1", "k1@example.com", DrawerName="EZ", notificationid="n-rest-1")
    early = mc.by_id("SendLog", "n-rest-1")
    assert early == [] or time.monotonic() - started >= DELAY  # nothing at acceptance
    (row,) = mc.wait_rows("SendLog", "n-rest-1")
    tsd = mc.retrieve("TriggeredSendDefinition", ["ObjectID", "CustomerKey"]).Results
    guid = next(d.ObjectID for d in tsd if d.CustomerKey == "packet-drawn-drawer")
    props = ["SendID", "BatchID", "SubscriberKey"]
    sent = mc.retrieve("SentEvent", props, mc.simple("SubscriberKey", "equals", "K1"))
    assert row == {
        "JobID": str(sent.Results[0].SendID),  # joins with the SentEvent, as MC documents
        "BatchID": str(sent.Results[0].BatchID),
        "SubscriberKey": "K1",
        "EmailAddress": "k1@example.com",
        "TriggeredSendID": guid,
        "ErrorCode": None,
        "NotificationId": "n-rest-1",
    }
    # The row was written a delay after the send was accepted, not when it was.
    logged = get_json(mc.base, "_sandbox/send-log")["SendLog"][0]
    (message,) = get_json(mc.base, "_sandbox/messages")
    gap = datetime.fromisoformat(logged["LogDate"]) - datetime.fromisoformat(message["received_at"])
    assert gap.total_seconds() >= DELAY - 0.01
    date = mc.rows("SendLog", ["LogDate"])[0]["LogDate"]
    assert date and date.endswith(("AM", "PM"))  # MC's M/D/YYYY h:mm:ss AM


def test_a_soap_triggered_send_logs_its_attributes_and_not_its_refusals(mc: Mc) -> None:
    def sub(key: str, email: str, notification_id: str) -> Any:
        attrs = [{"Name": "NotificationId", "Value": notification_id}, {"Name": "DrawerName", "Value": "EZ"}]
        return mc.t("Subscriber")(EmailAddress=email, SubscriberKey=key, Attributes=attrs)

    ts = mc.t("TriggeredSend")(
        TriggeredSendDefinition=mc.t("TriggeredSendDefinition")(CustomerKey="packet-drawn-giver"),
        Subscribers=[sub("K1", "k1@example.com", "n-soap-1"), sub("NOPE", "nope@example.com", "n-soap-x")],
    )
    r = mc.zc.service.Create(Options=mc.t("CreateOptions")(), Objects=[ts], _soapheaders=mc._h())
    assert r.OverallStatus == "OK" and r.Results[0].SubscriberFailures
    (row,) = mc.wait_rows("SendLog", "n-soap-1")
    assert (row["SubscriberKey"], row["EmailAddress"]) == ("K1", "k1@example.com")
    assert mc.by_id("SendLog", "n-soap-x") == []  # written together with n-soap-1, had it been
    assert len(mc.rows("SendLog", ["JobID"])) == 1


def test_sms_subscribers_carry_their_attributes(mc: Mc) -> None:
    subscribers = [
        {"MobileNumber": "886912000001", "SubscriberKey": "K1", "Attributes": {"NotificationId": "n-sms-1"}},
        {"MobileNumber": "886912000002", "SubscriberKey": "K2", "Attributes": {"GiverName": "T"}},
    ]
    token_id = mc.sms({"Subscribers": subscribers, **SUBSCRIBE, "Override": True, "messageText": "hi"})
    (row,) = mc.wait_rows("SMSSendLog", "n-sms-1")
    assert row == {
        "MobileNumber": "886912000001",
        "SubscriberKey": "K1",
        "MessageID": "packet-drawn-welcome",
        "TokenID": token_id,
        "ErrorCode": None,
        "NotificationId": "n-sms-1",
    }
    other = mc.rows("SMSSendLog", SMS_FIELDS, mc.simple("SubscriberKey", "equals", "K2"))
    assert [r["NotificationId"] for r in other] == [None]  # no such attribute: the field stays empty
    assert mc.rows("SendLog", ["JobID"]) == []


def test_two_sends_of_one_template_to_one_subscriber_are_told_apart(mc: Mc) -> None:
    mc.rest_send("K1", "k1@example.com", NotificationId="n-a")
    mc.rest_send("K1", "k1@example.com", NotificationId="n-b")
    (a,) = mc.wait_rows("SendLog", "n-a")
    (b,) = mc.wait_rows("SendLog", "n-b")
    assert a["SubscriberKey"] == b["SubscriberKey"] == "K1"
    # One job per definition, as MC's: the batch tells the two sends apart.
    assert a["TriggeredSendID"] == b["TriggeredSendID"] and a["JobID"] == b["JobID"]
    assert a["BatchID"] != b["BatchID"]
    either = mc.t("ComplexFilterPart")(
        LeftOperand=mc.simple("NotificationId", "equals", "n-a"),
        LogicalOperator="OR",
        RightOperand=mc.simple("notificationid", "equals", "n-b"),  # field names match whatever the case
    )
    assert sorted(r["NotificationId"] or "" for r in mc.rows("SendLog", ["NotificationId"], either)) == [
        "n-a",
        "n-b",
    ]
    later = mc.rows("SendLog", ["NotificationId"], mc.simple("BatchID", "greaterThan", str(a["BatchID"])))
    assert [r["NotificationId"] for r in later] == ["n-b"]


def test_refused_sends_write_no_row(mc: Mc) -> None:
    refused = mc.rest_send("K1", "someone.else@example.com", NotificationId="n-refused")
    assert refused["responses"][0]["hasErrors"]
    mc.rest_send("K1", "k1@example.com", NotificationId="n-after")
    mc.wait_rows("SendLog", "n-after")  # rows are written in send order: n-refused's time has passed
    assert mc.by_id("SendLog", "n-refused") == []


def test_reset_empties_the_logs_and_drops_pending_rows(mc: Mc) -> None:
    mc.rest_send("K1", "k1@example.com", NotificationId="n-old")
    mc.wait_rows("SendLog", "n-old")
    mc.rest_send("K1", "k1@example.com", NotificationId="n-pending")
    httpx.post(f"{mc.base}_sandbox/reset", timeout=10).raise_for_status()
    assert get_json(mc.base, "_sandbox/send-log") == {"SendLog": [], "SMSSendLog": []}
    mc.tok = token(mc.base)
    mc.http.headers["Authorization"] = f"Bearer {mc.tok}"
    mc.subscribers(("K1", "k1@example.com"))
    mc.rest_send("K1", "k1@example.com", NotificationId="n-new")
    mc.wait_rows("SendLog", "n-new")
    assert [r["NotificationId"] for r in mc.rows("SendLog", ["NotificationId"])] == ["n-new"]


def test_retrieve_errors(mc: Mc) -> None:
    mc.rest_send("K1", "k1@example.com", NotificationId="n-e")
    mc.wait_rows("SendLog", "n-e")
    assert [r["NotificationId"] for r in mc.rows("sendlog", ["NotificationId"])] == ["n-e"]  # by key
    r = mc.retrieve("DataExtensionObject[SendLog]", ["NotificationId", "Nope"])
    assert r.OverallStatus.startswith("Error") and "Nope" in r.OverallStatus and not r.Results
    flt = mc.simple("Nope", "equals", "x")
    assert mc.retrieve("DataExtensionObject[SendLog]", ["NotificationId"], flt).OverallStatus.startswith(
        "Error"
    )
    r = mc.retrieve("DataExtensionObject[NoSuchLog]", ["NotificationId"])
    assert r.OverallStatus.startswith("Error") and "NoSuchLog" in r.OverallStatus
    assert mc.retrieve("DataExtensionObject", ["NotificationId"]).OverallStatus.startswith("Error")
    r = mc.retrieve("DataExtensionObject[SendLog]", [], cont="no-such-request")
    assert r.OverallStatus.startswith("Error")


def test_paging_over_more_than_2500_rows(mc: Mc) -> None:
    started = time.monotonic()
    expected = set()
    for batch in range(11):  # MobileConnect takes at most 250 subscribers per request
        subscribers = []
        for i in range(250):
            n = batch * 250 + i
            expected.add(f"n-page-{n}")
            attrs = {"NotificationId": f"n-page-{n}"}
            subscribers.append(
                {"MobileNumber": f"8869{n:08d}", "SubscriberKey": f"P{n}", "Attributes": attrs}
            )
        mc.sms({"Subscribers": subscribers, **SUBSCRIBE, "Override": True, "messageText": "hi"})
    wait_for(
        lambda: len(get_json(mc.base, "_sandbox/send-log")["SMSSendLog"]) == len(expected),
        timeout=15,
        what="2,750 SMS send log rows",
    )
    flt = mc.simple("NotificationId", "beginsWith", "n-page-")
    first = mc.retrieve("DataExtensionObject[SMSSendLog]", ["NotificationId"], flt)
    assert first.OverallStatus == "MoreDataAvailable" and len(first.Results) == 2500
    second = mc.retrieve("DataExtensionObject[SMSSendLog]", [], cont=first.RequestID)
    assert second.OverallStatus == "OK" and len(second.Results) == 250
    assert {as_dict(r)["NotificationId"] for r in [*first.Results, *second.Results]} == expected
    again = mc.retrieve("DataExtensionObject[SMSSendLog]", [], cont=first.RequestID)
    assert again.OverallStatus.startswith("Error")  # the request has no pages left
    print(f"\n2,750 sends logged and read in 2 pages: {time.monotonic() - started:.1f} s")
