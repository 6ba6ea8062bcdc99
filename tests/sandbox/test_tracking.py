"""Classic sends leave their traces where MC leaves them: tracking objects, delivery records, send log.

Addresses' fates come from the sandbox's domain configuration (bounce.example and hard.example hard
bounce in the truthful sandbox, soft.example soft bounces, unsub.example unsubscribes).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.fixtures.sandbox import SandboxProcess, start_sandbox

from .helpers import (
    NS,
    both,
    client,
    create_subscribers,
    de_rows,
    found,
    get_json,
    header,
    retrieve,
    rows,
    simple,
    soap,
    token,
    triggered_send,
    value,
    wait_for,
)

SEND = "messaging/v1/messageDefinitionSends/key:packet-drawn-drawer/send"
RECORD = "messaging/v1/messageDefinitionSends/key:packet-drawn-drawer/deliveryRecords/{}"
EVENT = ["SendID", "SubscriberKey", "EventDate", "EventType", "TriggeredSendDefinitionObjectID", "BatchID"]
BOUNCE = [*EVENT, "SMTPCode", "BounceCategory", "SMTPReason", "BounceType"]


class Mc:
    def __init__(self, sp: SandboxProcess) -> None:
        self.base = sp.http_url
        self.tok = token(self.base)
        self.http = client(self.base, self.tok)

    def send(self, key: str, email: str, **attrs: str) -> str:
        body = {
            "To": {
                "Address": email,
                "SubscriberKey": key,
                "ContactAttributes": {"SubscriberAttributes": attrs},
            }
        }
        r = self.http.post(SEND, json=body)
        assert r.status_code == 202 and not r.json()["responses"][0]["hasErrors"], r.text
        return str(r.json()["responses"][0]["recipientSendId"])

    def record(self, rsid: str) -> dict[str, Any]:
        r = self.http.get(RECORD.format(rsid))
        assert r.status_code == 200, r.text
        return dict(r.json())

    def settled(self, rsid: str) -> dict[str, Any]:
        return wait_for(lambda: (rec := self.record(rsid))["status"] != "Queued" and rec, what="send time")

    def events(self, kind: str, props: list[str], flt: str = "") -> list[dict[str, str | None]]:
        doc = retrieve(self.base, self.tok, kind, props, flt)
        assert [e.text for e in found(doc, "OverallStatus")] == ["OK"]
        return rows(doc)

    def wait_events(
        self, kind: str, props: list[str], flt: str = "", n: int = 1
    ) -> list[dict[str, str | None]]:
        def enough() -> list[dict[str, str | None]] | None:
            got = self.events(kind, props, flt)
            return got if len(got) >= n else None

        return wait_for(enough, what=kind)

    def subscriber(self, key: str) -> dict[str, Any]:
        return next(s for s in get_json(self.base, "_sandbox/subscribers") if s["subscriber_key"] == key)


@pytest.fixture
def mc(clean_truthful: SandboxProcess) -> Mc:
    return Mc(clean_truthful)


def test_a_send_is_queued_then_sent_and_leaves_a_sent_event_joined_to_its_send_log_row(mc: Mc) -> None:
    create_subscribers(mc.base, mc.tok, [("K1", "k1@example.com")])
    rsid = mc.send("K1", "k1@example.com", NotificationId="n-1")
    assert mc.record(rsid) == {"id": mc.record(rsid)["id"], "messageId": rsid, "status": "Queued"}
    assert mc.events("SentEvent", EVENT) == []  # nothing before the send time
    rec = mc.settled(rsid)
    assert rec["status"] == "Sent" and rec["to"]["key"] == "K1" and rec["to"]["address"] == "k1@example.com"
    (sent,) = mc.wait_events("SentEvent", EVENT, simple("SubscriberKey", "equals", "K1"))
    assert sent["EventType"] == "Sent" and sent["SubscriberKey"] == "K1"
    doc = retrieve(mc.base, mc.tok, "TriggeredSendDefinition", ["ObjectID", "CustomerKey"])
    guid = next(r["ObjectID"] for r in rows(doc) if r["CustomerKey"] == "packet-drawn-drawer")
    assert sent["TriggeredSendDefinitionObjectID"] == guid
    flt = simple("NotificationId", "equals", "n-1")
    (log,) = de_rows(retrieve(mc.base, mc.tok, "DataExtensionObject[SendLog]", ["JobID", "BatchID"], flt))
    assert log == {"JobID": sent["SendID"], "BatchID": sent["BatchID"]}  # MC's documented join
    (msg,) = get_json(mc.base, "_sandbox/messages")
    assert msg["status"] == "sent" and msg["sent_at"]


def test_hard_bounce(mc: Mc) -> None:
    create_subscribers(mc.base, mc.tok, [("H1", "gone@hard.example"), ("OK", "ok@example.com")])
    rsid = mc.send("H1", "gone@hard.example")
    mc.send("OK", "ok@example.com")
    (bounce,) = mc.wait_events("BounceEvent", BOUNCE)
    assert bounce["SubscriberKey"] == "H1" and bounce["EventType"] == "HardBounce"
    assert (bounce["SMTPCode"], bounce["BounceCategory"], bounce["BounceType"]) == (
        "550",
        "Hard bounce",
        "immediate",
    )
    assert bounce["SMTPReason"] and "5.1.1" in bounce["SMTPReason"]
    # Joinable to its send: the same job and batch as the SentEvent of that subscriber.
    (sent,) = mc.events("SentEvent", EVENT, simple("SubscriberKey", "equals", "H1"))
    assert (sent["SendID"], sent["BatchID"]) == (bounce["SendID"], bounce["BatchID"])
    assert mc.record(rsid)["status"] == "Sent"  # MC sent it; the bounce is the mail server's answer
    assert mc.subscriber("H1")["status"] == "Held" and mc.subscriber("OK")["status"] == "Active"
    r = mc.http.post(SEND, json={"To": {"Address": "gone@hard.example", "SubscriberKey": "H1"}})
    assert r.json()["responses"][0]["messageErrors"][1]["messageErrorCode"] == 2  # Held: refused
    statuses = {m["subscriber_key"]: m["status"] for m in get_json(mc.base, "_sandbox/messages")}
    assert statuses == {"H1": "bounced", "OK": "sent"}


def test_soft_bounce_and_unsubscribe(mc: Mc) -> None:
    create_subscribers(mc.base, mc.tok, [("S1", "full@soft.example"), ("U1", "bye@unsub.example")])
    mc.send("S1", "full@soft.example")
    mc.send("U1", "bye@unsub.example")
    (bounce,) = mc.wait_events("BounceEvent", BOUNCE)
    assert (bounce["SubscriberKey"], bounce["EventType"], bounce["BounceCategory"]) == (
        "S1",
        "SoftBounce",
        "Soft bounce",
    )
    assert bounce["SMTPCode"] == "452"
    (unsub,) = mc.wait_events("UnsubEvent", [*EVENT, "List", "IsMasterUnsubscribed"])
    assert unsub["SubscriberKey"] == "U1" and unsub["EventType"] == "Unsubscribe"
    assert unsub["List"] == "69238" and unsub["IsMasterUnsubscribed"] == "true"
    assert mc.subscriber("S1")["status"] == "Bounced" and mc.subscriber("U1")["status"] == "Unsubscribed"
    # Both stay sendable: a soft bounce does not hold, and the TSD's classification is transactional.
    mc.send("S1", "full@soft.example")
    mc.send("U1", "bye@unsub.example")


def test_a_subscriber_held_before_the_send_time_is_not_sent(mc: Mc) -> None:
    create_subscribers(mc.base, mc.tok, [("N1", "n1@example.com")])
    # One SOAP request queues the send, then holds the subscriber: Held before the send time, for sure.
    send = (
        '<Objects xsi:type="TriggeredSend"><TriggeredSendDefinition><CustomerKey>packet-drawn-drawer'
        "</CustomerKey></TriggeredSendDefinition><Subscribers><EmailAddress>n1@example.com</EmailAddress>"
        "<Attributes><Name>NotificationId</Name><Value>n-held</Value></Attributes>"
        "<SubscriberKey>N1</SubscriberKey></Subscribers></Objects>"
    )
    hold = (
        '<Objects xsi:type="Subscriber"><EmailAddress>n1@example.com</EmailAddress>'
        "<SubscriberKey>N1</SubscriberKey><Status>Held</Status></Objects>"
    )
    upsert = (
        "<Options><SaveOptions><SaveOption><PropertyName>*</PropertyName><SaveAction>UpdateAdd</SaveAction>"
        "</SaveOption></SaveOptions></Options>"
    )
    doc = soap(mc.base, mc.tok, f'<CreateRequest xmlns="{NS}">{upsert}{send}{hold}</CreateRequest>')
    assert [e.text for e in found(doc, "OverallStatus")] == ["OK"]
    (not_sent,) = mc.wait_events("NotSentEvent", EVENT)
    assert not_sent["SubscriberKey"] == "N1" and not_sent["EventType"] == "NotSent"
    assert "Reason" not in not_sent  # the WSDL's NotSentEvent has no reason field
    assert mc.events("SentEvent", EVENT) == []
    flt = simple("NotificationId", "equals", "n-held")
    (row,) = de_rows(retrieve(mc.base, mc.tok, "DataExtensionObject[SendLog]", ["ErrorCode"], flt))
    assert row == {"ErrorCode": "2"}  # an attempted send MC stopped carries its ErrorCode
    (msg,) = get_json(mc.base, "_sandbox/messages")
    assert msg["status"] == "not_sent"


def test_a_rest_send_not_sent_has_an_error_delivery_record(sandbox: SandboxProcess) -> None:
    """The default sandbox's 1 s send delay leaves time to hold the subscriber; a lost race is retried."""
    httpx.post(f"{sandbox.http_url}_sandbox/reset", timeout=10).raise_for_status()
    mc = Mc(sandbox)
    for attempt in range(3):
        key = f"R{attempt}"
        create_subscribers(mc.base, mc.tok, [(key, "r@example.com")])
        rsid = mc.send(key, "r@example.com")
        create_subscribers(mc.base, mc.tok, [(key, "r@example.com")], status="Held")
        rec = mc.settled(rsid)
        if rec["status"] == "Error":
            break
    assert rec["status"] == "Error" and rec["to"] == {"address": "", "id": 0, "key": ""}
    assert rec["messageErrors"] == [{"messageErrorStatus": "Subscriber status is held."}]


def test_one_soap_request_is_one_batch_of_one_job(mc: Mc) -> None:
    pairs = [("B1", "b1@example.com"), ("B2", "b2@example.com")]
    create_subscribers(mc.base, mc.tok, pairs)
    doc = triggered_send(mc.base, mc.tok, "packet-drawn-drawer", pairs)
    assert [e.text for e in found(doc, "OverallStatus")] == ["OK"]
    rsid = mc.send("B1", "b1@example.com")
    sent = mc.wait_events("SentEvent", EVENT, n=3)
    batches = [(e["SubscriberKey"], e["SendID"], e["BatchID"]) for e in sent]
    assert len({job for _k, job, _b in batches}) == 1  # one job per definition
    assert batches[0][2] == batches[1][2] != batches[2][2]  # the SOAP request's batch, then the REST one
    assert mc.settled(rsid)["status"] == "Sent"


def test_filters_on_event_date_definition_send_and_subscriber(mc: Mc) -> None:
    create_subscribers(mc.base, mc.tok, [("F1", "f1@example.com"), ("F2", "f2@example.com")])
    before = datetime.now(UTC) - timedelta(seconds=1)
    mc.send("F1", "f1@example.com")
    r = mc.http.post(
        "messaging/v1/messageDefinitionSends/key:packet-drawn-giver/send",
        json={"To": {"Address": "f2@example.com", "SubscriberKey": "F2"}},
    )
    assert r.status_code == 202
    sent = mc.wait_events("SentEvent", EVENT, n=2)
    after = datetime.now(UTC) + timedelta(seconds=1)
    window = simple("EventDate", "between", before.isoformat(), after.isoformat())
    assert len(mc.events("SentEvent", ["SubscriberKey"], window)) == 2
    later = simple("EventDate", "greaterThan", after.isoformat())
    assert mc.events("SentEvent", ["SubscriberKey"], later) == []
    drawer = next(e for e in sent if e["SubscriberKey"] == "F1")
    by_tsd = both(
        simple(
            "TriggeredSendDefinitionObjectID",
            "equals",
            drawer["TriggeredSendDefinitionObjectID"] or "",
            tag="LeftOperand",
        ),
        simple("EventDate", "greaterThan", before.isoformat(), tag="RightOperand"),
    )
    assert [e["SubscriberKey"] for e in mc.events("SentEvent", ["SubscriberKey"], by_tsd)] == ["F1"]
    by_send = simple("SendID", "equals", drawer["SendID"] or "")
    assert [e["SubscriberKey"] for e in mc.events("SentEvent", ["SubscriberKey"], by_send)] == ["F1"]
    doc = retrieve(mc.base, mc.tok, "SentEvent", ["SubscriberKey", "Nope"])
    assert (value(found(doc, "RetrieveResponseMsg")[0], "OverallStatus") or "").startswith("Error")


def test_tracking_pages_of_2500(mc: Mc) -> None:
    pairs = [(f"P{i}", f"p{i}@example.com") for i in range(2600)]
    create_subscribers(mc.base, mc.tok, pairs)
    doc = triggered_send(mc.base, mc.tok, "packet-drawn-drawer", pairs)
    assert [e.text for e in found(doc, "OverallStatus")] == ["OK"]
    wait_for(lambda: get_json(mc.base, "_sandbox/stats").get("emails_accepted") == 2600, what="accepted")
    wait_for(lambda: all(m["status"] == "sent" for m in get_json(mc.base, "_sandbox/messages")), what="sent")
    first = retrieve(mc.base, mc.tok, "SentEvent", ["SubscriberKey", "SendID", "BatchID"])
    msg = found(first, "RetrieveResponseMsg")[0]
    assert value(msg, "OverallStatus") == "MoreDataAvailable" and len(rows(first)) == 2500
    second = retrieve(mc.base, mc.tok, "SentEvent", [], cont=value(msg, "RequestID"))
    assert value(found(second, "RetrieveResponseMsg")[0], "OverallStatus") == "OK"
    keys = {r["SubscriberKey"] for r in rows(first) + rows(second)}
    assert keys == {k for k, _e in pairs}


def test_a_client_may_ask_for_smaller_pages(mc: Mc) -> None:
    """RetrieveOptions/BatchSize (WSDL): a page of at most that many rows, never more than 2,500 (how
    MC itself takes it is not documented: a client reading page by page works either way)."""
    pairs = [(f"S{i}", f"s{i}@example.com") for i in range(12)]
    create_subscribers(mc.base, mc.tok, pairs)
    triggered_send(mc.base, mc.tok, "packet-drawn-drawer", pairs)
    wait_for(lambda: len(mc.events("SentEvent", ["SubscriberKey"])) == 12, what="sent")
    body = (
        f'<RetrieveRequestMsg xmlns="{NS}"><RetrieveRequest><ObjectType>SentEvent</ObjectType>'
        "<Properties>SubscriberKey</Properties>"
        '<Options xsi:type="RetrieveOptions"><BatchSize>5</BatchSize></Options>'
        "</RetrieveRequest></RetrieveRequestMsg>"
    )
    pages = [soap(mc.base, mc.tok, body)]
    while value(found(pages[-1], "RetrieveResponseMsg")[0], "OverallStatus") == "MoreDataAvailable":
        request_id = value(found(pages[-1], "RetrieveResponseMsg")[0], "RequestID")
        pages.append(retrieve(mc.base, mc.tok, "SentEvent", [], cont=request_id))
    assert [len(rows(page)) for page in pages] == [5, 5, 2]
    assert {r["SubscriberKey"] for page in pages for r in rows(page)} == {k for k, _e in pairs}
    oversized = body.replace("<BatchSize>5<", "<BatchSize>9999<")
    assert len(rows(soap(mc.base, mc.tok, oversized))) == 12  # capped at 2,500, not refused


def test_domains_are_configuration(tmp_path: Path) -> None:
    sp = start_sandbox(
        tmp_path,
        "--send-log-delay",
        "0.1",
        "--hard-bounce-domains",
        "other.example",
        "--soft-bounce-domains",
        "",
        "--unsub-domains",
        "",
    )
    try:
        mc = Mc(sp)
        pairs = [("A", "a@bounce.example"), ("B", "b@other.example"), ("C", "c@soft.example")]
        create_subscribers(mc.base, mc.tok, pairs)
        for key, email in pairs:
            mc.send(key, email)
        (bounce,) = mc.wait_events("BounceEvent", ["SubscriberKey", "EventType"])
        assert bounce == {"SubscriberKey": "B", "EventType": "HardBounce"}
        wait_for(lambda: len(mc.events("SentEvent", ["SubscriberKey"])) == 3, what="three sent")
        assert {s["subscriber_key"]: s["status"] for s in get_json(mc.base, "_sandbox/subscribers")} == {
            "A": "Active",
            "B": "Held",
            "C": "Active",
        }
    finally:
        sp.stop()


def test_soap_envelope_of_a_bounce_event_follows_the_wsdl(mc: Mc) -> None:
    create_subscribers(mc.base, mc.tok, [("W1", "w@bounce.example")])
    mc.send("W1", "w@bounce.example")
    mc.wait_events("BounceEvent", BOUNCE)
    doc = retrieve(mc.base, mc.tok, "BounceEvent", list(reversed(BOUNCE)))
    (res,) = found(doc, "Results")
    names = [c.tag.split("}")[1] for c in res]
    assert names == ["PartnerKey", *BOUNCE]  # APIObject first, then the WSDL's sequence order


def test_zeep_reads_the_tracking_objects(mc: Mc) -> None:
    import zeep

    zc = zeep.Client(f"{mc.base}etframework.wsdl")
    create_subscribers(mc.base, mc.tok, [("Z1", "z@bounce.example"), ("Z2", "z@unsub.example")])
    mc.send("Z1", "z@bounce.example")
    mc.send("Z2", "z@unsub.example")
    mc.wait_events("UnsubEvent", ["SubscriberKey"])
    mc.wait_events("BounceEvent", ["SubscriberKey"])

    def get(kind: str, props: list[str]) -> Any:
        req = zc.get_type("ns0:RetrieveRequest")(ObjectType=kind, Properties=props)
        return zc.service.Retrieve(RetrieveRequest=req, _soapheaders=[header(mc.tok)]).Results

    (bounce,) = get("BounceEvent", BOUNCE)
    assert bounce.SubscriberKey == "Z1" and bounce.SMTPCode == "550" and bounce.EventType == "HardBounce"
    assert isinstance(bounce.EventDate, datetime) and isinstance(bounce.SendID, int)
    (unsub,) = get("UnsubEvent", [*EVENT, "List", "IsMasterUnsubscribed"])
    assert unsub.List.ID == 69238 and unsub.IsMasterUnsubscribed is True


def test_event_dates_are_mcs_cst_without_a_zone_and_zone_less_filters_are_cst_too(mc: Mc) -> None:
    """MC answers in its server time, CST (UTC-6 all year) without a suffix, and reads a zone-less
    filter value as server time too (MC's "Incoming Date Normalization"); `Z` or an offset is UTC."""
    create_subscribers(mc.base, mc.tok, [("C1", "c1@example.com")])
    before = datetime.now(UTC) - timedelta(seconds=1)
    mc.send("C1", "c1@example.com")
    (sent,) = mc.wait_events("SentEvent", EVENT)
    after = datetime.now(UTC) + timedelta(seconds=1)
    text = sent["EventDate"] or ""
    assert text and not text.endswith("Z") and "+" not in text and text.count("-") == 2  # no zone
    when = datetime.fromisoformat(text).replace(tzinfo=timezone(timedelta(hours=-6)))
    assert before <= when <= after

    def cst(moment: datetime) -> str:
        return moment.astimezone(timezone(timedelta(hours=-6))).replace(tzinfo=None).isoformat()

    assert (
        len(
            mc.events("SentEvent", ["SubscriberKey"], simple("EventDate", "between", cst(before), cst(after)))
        )
        == 1
    )
    # The same wall-clock times read as UTC would be six hours later: nothing in that window.
    as_utc = simple("EventDate", "between", cst(before) + "Z", cst(after) + "Z")
    assert mc.events("SentEvent", ["SubscriberKey"], as_utc) == []


async def test_the_services_soap_client_reads_event_dates_in_the_window_it_asked_for(mc: Mc) -> None:
    """The feedback stage's pass asks MC for [since, until] and moves its mark by the dates it reads
    back: read as UTC, MC's CST dates would lie six hours before the window they were found in."""
    from stream_app.mc import MarketingCloud
    from stream_app.settings import Settings

    create_subscribers(mc.base, mc.tok, [("C2", "c2@bounce.example")])
    since = datetime.now(UTC) - timedelta(seconds=1)
    mc.send("C2", "c2@bounce.example")
    mc.wait_events("BounceEvent", ["SubscriberKey"])
    until = datetime.now(UTC) + timedelta(seconds=1)
    client = MarketingCloud(Settings(mc_auth_url=mc.base))
    try:
        await client.soap.start()
        object_id = await client.soap.definition_object_id("packet-drawn-drawer")
        assert object_id is not None
        pages = [page async for page in client.soap.tracking_pages("BounceEvent", object_id, since, until)]
    finally:
        await client.close()
    (bounce,) = [event for page in pages for event in page]
    assert since <= bounce.event_date <= until and bounce.event_date.utcoffset() is not None
