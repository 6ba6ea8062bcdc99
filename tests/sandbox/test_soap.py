from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
import zeep

from tests.fixtures.sandbox import SandboxProcess

from .helpers import get_json, header, token, wait_for


class Soap:
    def __init__(self, zc: zeep.Client, base: str) -> None:
        self.zc = zc
        self.base = base
        self.tok = token(base)

    def t(self, name: str) -> Any:
        return self.zc.get_type(f"ns0:{name}")

    def create(self, objects: list[Any], upsert: bool = False) -> Any:
        opts = self.t("CreateOptions")()
        if upsert:
            opts = self.t("CreateOptions")(
                SaveOptions={"SaveOption": [self.t("SaveOption")(PropertyName="*", SaveAction="UpdateAdd")]}
            )
        return self.zc.service.Create(Options=opts, Objects=objects, _soapheaders=[header(self.tok)])

    def update(self, objects: list[Any], upsert: bool = False) -> Any:
        opts = self.t("UpdateOptions")()
        if upsert:
            opts = self.t("UpdateOptions")(
                SaveOptions={"SaveOption": [self.t("SaveOption")(PropertyName="*", SaveAction="UpdateAdd")]}
            )
        return self.zc.service.Update(Options=opts, Objects=objects, _soapheaders=[header(self.tok)])

    def sub(self, key: str, email: str, **kw: Any) -> Any:
        return self.t("Subscriber")(SubscriberKey=key, EmailAddress=email, **kw)

    def retrieve(self, object_type: str, props: list[str], flt: Any = None) -> Any:
        req = self.t("RetrieveRequest")(ObjectType=object_type, Properties=props, Filter=flt)
        return self.zc.service.Retrieve(RetrieveRequest=req, _soapheaders=[header(self.tok)])

    def simple(self, prop: str, op: str, *values: str) -> Any:
        return self.t("SimpleFilterPart")(Property=prop, SimpleOperator=op, Value=list(values))

    def send(self, tsd: str, key: str, email: str, from_name: str | None = None, **attrs: str) -> Any:
        s = self.sub(
            key,
            email,
            Owner={"FromName": from_name} if from_name else None,
            Attributes=[{"Name": k, "Value": v} for k, v in attrs.items()],
        )
        ts = self.t("TriggeredSend")(
            TriggeredSendDefinition=self.t("TriggeredSendDefinition")(CustomerKey=tsd), Subscribers=[s]
        )
        return self.create([ts])


@pytest.fixture
def soap(clean_sandbox: SandboxProcess, zeep_client: zeep.Client) -> Soap:
    return Soap(zeep_client, clean_sandbox.http_url)


def test_wsdl_is_rewritten(sandbox: SandboxProcess) -> None:
    wsdl = httpx.get(f"{sandbox.http_url}etframework.wsdl").text
    assert f'location="{sandbox.http_url}Service.asmx"' in wsdl
    assert f"{sandbox.http_url}ETFrameworkFault.xsd" in wsdl
    assert "webservice.exacttarget.com" not in wsdl
    xsd = httpx.get(f"{sandbox.http_url}ETFrameworkFault.xsd").text
    assert 'name="apifault"' in xsd and "urn:fault.partner.exacttarget.com" in xsd


def test_create_subscriber_refusals_and_upsert(soap: Soap) -> None:
    r = soap.create(
        [soap.sub("K1", "k1@example.com", Attributes=[{"Name": "MobileNumber", "Value": "886912"}])]
    )
    assert r.OverallStatus == "OK" and r.Results[0].StatusMessage == "Created Subscriber."
    r = soap.create([soap.sub("K1", "k1b@example.com")])
    assert r.OverallStatus == "Error" and r.Results[0].ErrorCode == 12014
    r = soap.create([soap.sub("K1", "k1b@example.com"), soap.sub("K2", "not-an-email")], upsert=True)
    assert r.OverallStatus == "HasErrors"
    assert r.Results[0].StatusMessage == "Updated Subscriber." and r.Results[0].StatusCode == "OK"
    assert r.Results[1].ErrorCode == 12000 and r.Results[1].OrdinalID == 1
    subs = {s["subscriber_key"]: s for s in get_json(soap.base, "_sandbox/subscribers")}
    assert subs["K1"]["email"] == "k1b@example.com" and subs["K1"]["mobile"] == "886912"
    assert "K2" not in subs
    r = soap.create([soap.sub("K3", "k3@example.com", Status="Bounced")])
    assert r.Results[0].ErrorCode == 12016


def test_update_subscriber(soap: Soap) -> None:
    r = soap.update([soap.sub("U1", "u1@example.com")])
    assert r.OverallStatus == "Error" and r.Results[0].ErrorCode == 12015
    r = soap.update([soap.sub("U1", "u1@example.com")], upsert=True)
    assert r.OverallStatus == "OK"
    sms = soap.t("SMSAddress")(Address="886911111111")
    r = soap.update([soap.sub("U1", "u1new@example.com", PrimarySMSAddress=sms)])
    assert r.Results[0].StatusMessage == "Updated Subscriber."
    sub = next(s for s in get_json(soap.base, "_sandbox/subscribers") if s["subscriber_key"] == "U1")
    assert sub["email"] == "u1new@example.com" and sub["mobile"] == "886911111111"


def test_retrieve_subscriber_filters(soap: Soap) -> None:
    soap.create(
        [soap.sub("R1", "r1@example.com"), soap.sub("R2", "r2@example.com"), soap.sub("R3", "r3@example.com")]
    )
    r = soap.retrieve(
        "Subscriber",
        ["SubscriberKey", "EmailAddress", "Status", "CreatedDate"],
        soap.simple("SubscriberKey", "equals", "R2"),
    )
    assert r.OverallStatus == "OK" and len(r.Results) == 1
    row = r.Results[0]
    assert (row.SubscriberKey, row.EmailAddress, row.Status) == ("R2", "r2@example.com", "Active")
    assert row.CreatedDate is not None
    r = soap.retrieve(
        "Subscriber", ["SubscriberKey"], soap.simple("EmailAddress", "IN", "r1@example.com", "r3@example.com")
    )
    assert sorted(x.SubscriberKey for x in r.Results) == ["R1", "R3"]
    r = soap.retrieve("Subscriber", ["SubscriberKey", "Bogus"])
    assert r.OverallStatus.startswith("Error:") and "Bogus" in r.OverallStatus
    r = soap.retrieve("Account", ["ID"])
    assert r.OverallStatus.startswith("Error")


def test_triggered_send_refusals(soap: Soap) -> None:
    soap.create([soap.sub("T1", "t1@example.com"), soap.sub("T2", "t2@example.com", Status="Held")])
    cases = [
        ("T9", "t9@example.com", 13),
        ("T1", "other@example.com", 14),
        ("T2", "t2@example.com", 2),
        ("T1", "bad@", 5),
    ]
    for key, email, code in cases:
        r = soap.send("packet-drawn-drawer", key, email)
        res = r.Results[0]
        assert r.OverallStatus == "Error" and res.ErrorCode == 180008, (key, code)
        assert res.SubscriberFailures[0].ErrorCodeID == code
        assert res.SubscriberFailures[0].ErrorDescription.startswith(f"Error Code: {code} - ")
    r = soap.send("no-such-tsd", "T1", "t1@example.com")
    assert r.Results[0].ErrorCode == 18002
    assert get_json(soap.base, "_sandbox/messages") == []


def test_triggered_send_ok_and_tracking(soap: Soap) -> None:
    soap.create([soap.sub("S1", "s1@example.com")])
    before = datetime.now(UTC) - timedelta(seconds=5)
    r = soap.send(
        "packet-drawn-giver",
        "S1",
        "s1@example.com",
        "EZ via EZTABLE",
        DrawerName="EZ",
        Amount="250",
        Cashback="100",
    )
    assert r.OverallStatus == "OK" and r.Results[0].StatusMessage == "Created TriggeredSend"
    (msg,) = get_json(soap.base, "_sandbox/messages")
    assert msg["from_name"] == "EZ via EZTABLE" and msg["channel"] == "email"
    assert msg["text"] == "你的朋友 EZ 抽到你發的 $250 EZCASH 紅包！只要他消費你就能得到 $100 回饋！"
    tsd = soap.retrieve(
        "TriggeredSendDefinition",
        ["CustomerKey", "ObjectID", "Name", "TriggeredSendStatus"],
        soap.simple("CustomerKey", "equals", "packet-drawn-giver"),
    )
    object_id = tsd.Results[0].ObjectID
    assert tsd.Results[0].TriggeredSendStatus == "Active"
    cfp = soap.t("ComplexFilterPart")(
        LeftOperand=soap.simple("SubscriberKey", "equals", "S1"),
        LogicalOperator="AND",
        RightOperand=soap.t("SimpleFilterPart")(
            Property="EventDate", SimpleOperator="greaterThan", DateValue=[before]
        ),
    )
    ev: Any = wait_for(
        lambda: soap.retrieve(
            "SentEvent",
            ["SendID", "SubscriberKey", "EventDate", "EventType", "TriggeredSendDefinitionObjectID"],
            cfp,
        ).Results
        or None,
        what="the SentEvent, written at send time",
    )
    assert len(ev) == 1 and ev[0].TriggeredSendDefinitionObjectID == object_id
    assert ev[0].EventType == "Sent"
    later = soap.t("SimpleFilterPart")(
        Property="EventDate",
        SimpleOperator="greaterThan",
        DateValue=[datetime.now(UTC) + timedelta(minutes=1)],
    )
    assert soap.retrieve("SentEvent", ["SubscriberKey"], later).Results == []


def test_smsmt_event_retrieve(soap: Soap) -> None:
    with httpx.Client(base_url=soap.base, headers={"Authorization": f"Bearer {soap.tok}"}) as c:
        r = c.post(
            "sms/v1/messageContact/packet-drawn-welcome/send",
            json={
                "Subscribers": [
                    {
                        "MobileNumber": "886912345678",
                        "SubscriberKey": "M7",
                        "Attributes": {"GiverName": "TABLE", "Amount": "88"},
                    }
                ],
                "Subscribe": True,  # MobileConnect delivers to subscribed numbers only
                "keyword": "EZTABLE",
            },
        )
        assert r.status_code == 202
    ev: Any = wait_for(
        lambda: soap.retrieve(
            "SMSMTEvent",
            ["Subscriber.SubscriberKey", "EventDate", "MOCode"],
            soap.simple("SubscriberKey", "equals", "M7"),
        ).Results
        or None,
        what="the SMSMTEvent, written at send time",
    )
    assert len(ev) == 1 and ev[0].Subscriber.SubscriberKey == "M7"


def test_import_definition_perform_and_summary(soap: Soap, tmp_path: Any, sandbox: SandboxProcess) -> None:
    from .helpers import upload

    upload(sandbox.sftp_port, tmp_path, "perform_1.csv", "SubscriberKey,EmailAddress\nP1,p1@example.com\n")
    # Perform start imports the newest file in /Import matching the FileSpec.
    idef = soap.t("ImportDefinition")(
        CustomerKey="subs-import",
        Name="subs",
        AllowErrors=True,
        FileSpec="perform_*.csv",
        UpdateType="AddAndUpdate",
    )
    r = soap.create([idef])
    assert r.OverallStatus == "OK" and r.Results[0].StatusMessage == "ImportDefinition created."
    assert soap.create([idef]).Results[0].ErrorCode == 43030
    r = soap.zc.service.Perform(
        Action="Start",
        Definitions={"Definition": [soap.t("ImportDefinition")(CustomerKey="subs-import")]},
        _soapheaders=[header(soap.tok)],
    )
    task_id = r.Results.Result[0].Task.ID
    assert r.OverallStatus == "OK" and task_id
    props = [
        "ImportDefinitionCustomerKey",
        "ImportStatus",
        "TotalRows",
        "NumberSuccessful",
        "NumberErrors",
        "TaskResultID",
        "StartDate",
        "EndDate",
        "NumberDuplicated",
        "DestinationID",
        "ImportType",
    ]

    def done() -> Any:
        rows = soap.retrieve(
            "ImportResultsSummary", props, soap.simple("TaskResultID", "equals", task_id)
        ).Results
        return rows if rows and rows[0].ImportStatus == "Completed" else None

    rows: Any = wait_for(done, what="import completed")
    row = rows[0]
    assert (row.ImportDefinitionCustomerKey, row.TotalRows, row.NumberSuccessful, row.NumberErrors) == (
        "subs-import",
        1,
        1,
        0,
    )
    assert str(row.TaskResultID) == str(task_id)
    r = soap.zc.service.Perform(
        Action="start",
        Definitions={"Definition": [soap.t("ImportDefinition")(CustomerKey="missing")]},
        _soapheaders=[header(soap.tok)],
    )
    assert r.OverallStatus == "Error" and r.Results.Result[0].ErrorCode == 43010


def test_raw_envelope_no_namespace_header_and_unsupported(soap: Soap) -> None:
    env = (
        '<soap:Envelope xmlns:soap="http://schemas.xmlsoap.org/soap/envelope/">'
        f"<soap:Header><fueloauth>{soap.tok}</fueloauth></soap:Header><soap:Body>"
        '<RetrieveRequestMsg xmlns="http://exacttarget.com/wsdl/partnerAPI"><RetrieveRequest>'
        "<ObjectType>Subscriber</ObjectType><Properties>SubscriberKey</Properties>"
        "</RetrieveRequest></RetrieveRequestMsg></soap:Body></soap:Envelope>"
    )
    r = httpx.post(f"{soap.base}service.ASMX", content=env, headers={"Content-Type": "text/xml"})
    assert r.status_code == 200 and "<OverallStatus>OK</OverallStatus>" in r.text
    assert "<wsa:Action>RetrieveResponse</wsa:Action>" in r.text and "wsu:Timestamp" in r.text
    r = httpx.post(
        f"{soap.base}Service.asmx",
        content=env.replace("RetrieveRequestMsg", "DescribeRequestMsg"),
        headers={"Content-Type": "text/xml"},
    )
    assert r.status_code == 500 and "soap:Fault" in r.text
    obj = soap.t("List")(ListName="x")
    created = soap.create([obj])
    assert created.OverallStatus == "Error" and created.Results[0].StatusCode == "Error"
