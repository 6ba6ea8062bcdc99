"""SoapClient with real zeep against the real WSDL and canned MC envelopes (no network)."""

from __future__ import annotations

import time

import pytest
from lxml import etree

from stream_app.mc import PermanentMCError, SubscriberRow, TransientMCError
from tests.fixtures.fake_soap import (
    IMPORT_ROW,
    NS,
    FakeSoap,
    envelope,
    fault,
    make,
    retrieve_response,
)


def body_root(doc: etree._Element) -> etree._Element:
    return doc.find("soap:Body", NS)[0]


async def test_import_summary_request_and_parse() -> None:
    fake = FakeSoap(lambda doc, n: (200, retrieve_response(IMPORT_ROW)))
    soap = make(fake)
    started = time.perf_counter()
    summary = await soap.import_summary("/Import/subscribers_w123.csv")
    print(f"first call incl. WSDL load: {(time.perf_counter() - started) * 1000:.0f} ms")
    assert summary is not None
    assert (summary.status, summary.total_rows, summary.succeeded, summary.errors) == (
        "Completed",
        1000,
        998,
        2,
    )
    assert summary.task_id == 130040236 and summary.done
    doc = fake.calls[0]
    header = doc.find("soap:Header/{http://exacttarget.com}fueloauth", NS)
    assert header is not None and header.text == "tok-1"
    request = body_root(doc)
    assert request.tag == "{http://exacttarget.com/wsdl/partnerAPI}RetrieveRequestMsg"
    assert request.findtext("et:RetrieveRequest/et:ObjectType", namespaces=NS) == "ImportResultsSummary"
    flt = request.find("et:RetrieveRequest/et:Filter", NS)
    assert flt is not None and flt.get(f"{{{NS['xsi']}}}type", "").endswith("SimpleFilterPart")
    assert flt.findtext("et:Property", namespaces=NS) == "ImportDefinitionCustomerKey"
    assert flt.findtext("et:SimpleOperator", namespaces=NS) == "equals"
    assert flt.findtext("et:Value", namespaces=NS) == "subscribers_w123.csv"
    # The WSDL is parsed once per process and fetched once per client.
    started = time.perf_counter()
    await soap.import_summary("subscribers_w123.csv")
    print(f"second call: {(time.perf_counter() - started) * 1000:.1f} ms")
    assert fake.wsdl_requests == 1


async def test_import_summary_none_while_mc_has_no_row() -> None:
    soap = make(FakeSoap(lambda doc, n: (200, retrieve_response())))
    assert await soap.import_summary("subscribers_w124.csv") is None


async def test_token_expired_fault_refreshes_once() -> None:
    def answer(doc: etree._Element, n: int) -> tuple[int, str]:
        if n == 1:
            return 500, fault("Token Expired", "soap:Client")
        return 200, retrieve_response(IMPORT_ROW)

    fake = FakeSoap(answer)
    soap = make(fake)
    assert await soap.import_summary("subscribers_w123.csv") is not None
    assert fake.token_requests == 2
    second = fake.calls[1].find("soap:Header/{http://exacttarget.com}fueloauth", NS)
    assert second is not None and second.text == "tok-2"


async def test_rate_limited_fault_is_transient() -> None:
    soap = make(FakeSoap(lambda doc, n: (500, fault("Rate Limited"))))
    with pytest.raises(TransientMCError):
        await soap.import_summary("x.csv")


async def test_http_503_without_soap_is_transient() -> None:
    soap = make(FakeSoap(lambda doc, n: (503, "<html>Service Unavailable</html>")))
    with pytest.raises(TransientMCError):
        await soap.import_summary("x.csv")


async def test_client_fault_is_permanent() -> None:
    soap = make(FakeSoap(lambda doc, n: (500, fault("Unknown property: Bogus", "soap:Client"))))
    with pytest.raises(PermanentMCError):
        await soap.import_summary("x.csv")


async def test_retrieve_error_status_is_permanent() -> None:
    soap = make(
        FakeSoap(lambda doc, n: (200, retrieve_response(status="Error: The Request Property(s) Bogus")))
    )
    with pytest.raises(PermanentMCError):
        await soap.import_summary("x.csv")


def send_log_row(notification_id: str, error_code: str | None, key: str | None = "M1001") -> str:
    def prop(name: str, value: str | None) -> str:
        if value is None:
            return ""  # MC leaves a field out of Properties when it was not asked for
        return f"<Property><Name>{name}</Name><Value>{value}</Value></Property>"

    return (
        '<Results xsi:type="DataExtensionObject"><PartnerKey xsi:nil="true"/><ObjectID xsi:nil="true"/>'
        f"<Properties>{prop('NotificationId', notification_id)}{prop('ErrorCode', error_code)}"
        f"{prop('SubscriberKey', key)}</Properties></Results>"
    )


async def test_send_log_filters_on_the_notification_and_reads_the_rows() -> None:
    rows = (
        send_log_row("n-1", "")
        + send_log_row("n-1", "0")
        + send_log_row("n-1", None, None)
        + send_log_row("n-1", "18002")
    )
    fake = FakeSoap(lambda doc, n: (200, retrieve_response(rows)))
    found = await make(fake).send_log("SendLog", "n-1")
    assert [(r.notification_id, r.error_code, r.subscriber_key) for r in found] == [
        ("n-1", None, "M1001"),
        ("n-1", None, "M1001"),
        ("n-1", None, None),
        ("n-1", "18002", "M1001"),
    ]
    request = body_root(fake.calls[0]).find("et:RetrieveRequest", NS)
    assert request is not None
    assert request.findtext("et:ObjectType", namespaces=NS) == "DataExtensionObject[SendLog]"
    assert [p.text for p in request.findall("et:Properties", NS)] == [
        "NotificationId",
        "ErrorCode",
        "SubscriberKey",
    ]
    flt = request.find("et:Filter", NS)
    assert flt is not None and flt.get(f"{{{NS['xsi']}}}type", "").endswith("SimpleFilterPart")
    assert [flt.findtext(f"et:{n}", namespaces=NS) for n in ("Property", "SimpleOperator", "Value")] == [
        "NotificationId",
        "equals",
        "n-1",
    ]


async def test_send_log_follows_more_data_available() -> None:
    def answer(doc: etree._Element, n: int) -> tuple[int, str]:
        if n == 1:
            return 200, retrieve_response(send_log_row("n-2", ""), status="MoreDataAvailable")
        return 200, retrieve_response(send_log_row("n-2", "", "M2002"))

    fake = FakeSoap(answer)
    found = await make(fake).send_log("SMSSendLog", "n-2")
    assert [r.subscriber_key for r in found] == ["M1001", "M2002"]
    second = body_root(fake.calls[1]).find("et:RetrieveRequest", NS)
    assert second is not None
    assert second.findtext("et:ContinueRequest", namespaces=NS) == "f37fa7f0-0203-4f45-9cde-4eec947d13bd"
    assert second.findtext("et:ObjectType", namespaces=NS) == "DataExtensionObject[SMSSendLog]"


async def test_send_log_of_an_unknown_data_extension_is_permanent() -> None:
    status = "Error: Unable to find a data extension with the name or customer key 'Nope'."
    soap = make(FakeSoap(lambda doc, n: (200, retrieve_response(status=status))))
    with pytest.raises(PermanentMCError):
        await soap.send_log("Nope", "n-3")


def create_response(doc: etree._Element) -> str:
    objects = body_root(doc).findall("et:Objects", NS)
    results = []
    for i, obj in enumerate(objects):
        email = obj.findtext("et:EmailAddress", namespaces=NS) or ""
        if "@" in email:
            results.append(
                f"<Results><StatusCode>OK</StatusCode><StatusMessage>Created Subscriber.</StatusMessage>"
                f"<OrdinalID>{i}</OrdinalID><NewID>1</NewID></Results>"
            )
        else:
            results.append(
                f"<Results><StatusCode>Error</StatusCode><StatusMessage>InvalidEmailAddress</StatusMessage>"
                f"<OrdinalID>{i}</OrdinalID><ErrorCode>12000</ErrorCode><NewID>0</NewID></Results>"
            )
    return envelope(
        f'<CreateResponse xmlns="http://exacttarget.com/wsdl/partnerAPI">{"".join(results)}'
        "<RequestID>5d3a9c1e</RequestID><OverallStatus>HasErrors</OverallStatus></CreateResponse>"
    )


async def test_upsert_subscribers_batches_of_50_with_update_add() -> None:
    fake = FakeSoap(lambda doc, n: (200, create_response(doc)))
    rows = [SubscriberRow(f"M{i}", f"m{i}@example.com", {"Name": f"n{i}"}) for i in range(60)]
    rows[55] = SubscriberRow("M55", "not-an-email")
    results = await make(fake).upsert_subscribers(rows)
    assert len(fake.calls) == 2
    assert [len(body_root(c).findall("et:Objects", NS)) for c in fake.calls] == [50, 10]
    first = body_root(fake.calls[0])
    assert (
        first.findtext("et:Options/et:SaveOptions/et:SaveOption/et:SaveAction", namespaces=NS) == "UpdateAdd"
    )
    assert first.findtext("et:Options/et:SaveOptions/et:SaveOption/et:PropertyName", namespaces=NS) == "*"
    obj = first.find("et:Objects", NS)
    assert obj is not None and obj.get(f"{{{NS['xsi']}}}type", "").endswith("Subscriber")
    # WSDL sequence order: EmailAddress, Attributes, SubscriberKey.
    assert [etree.QName(c).localname for c in obj] == ["EmailAddress", "Attributes", "SubscriberKey"]
    assert len(results) == 60 and sum(r.ok for r in results) == 59
    assert results[55].subscriber_key == "M55" and results[55].code == 12000
