"""Salesforce's own MC client, FuelSDK (Salesforce-FuelSDK 1.3.0, suds), as a second client of the sandbox.

stream_app's client (zeep, httpx) is tested against the sandbox elsewhere; these tests show that the
sandbox also answers what Salesforce's SDK sends and reads: its OAuth2 call and token use (reference
§1), the WSDL it downloads, ``Create TriggeredSend`` with per-subscriber failures (§2.6), the tracking
objects with the filters and paging its users pass (§2.7) and the send log rows it reads through
``ET_DataExtension_Row`` (§2.8). FuelSDK is installed with --no-deps (requirements-fuelsdk.txt).

Fates come from the default sandbox's domains: bounce.example hard-bounces, soft.example soft-bounces,
unsub.example unsubscribes; a send goes out ``--send-log-delay`` (1 s) after MC accepted it. FuelSDK
builds its whole TriggeredSend skeleton with suds for every send (seconds of CPU), so the tests send
few requests, with many subscribers where they need many.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.fixtures.sandbox import SandboxProcess, start_sandbox

from .helpers import get_json, wait_for

FuelSDK = pytest.importorskip("FuelSDK", reason="make .venv installs requirements-fuelsdk.txt")

DEFINITION = "packet-drawn-drawer"
EVENT = ["SendID", "SubscriberKey", "EventDate", "EventType", "TriggeredSendDefinitionObjectID", "BatchID"]
BOUNCE = [*EVENT, "SMTPCode", "BounceCategory", "SMTPReason", "BounceType"]
UNSUB = [*EVENT, "List", "IsMasterUnsubscribed"]
SEND_LOG = "SendLog"  # stream_app's MC_SEND_LOG_EMAIL default (settings.py)
PAGE = 2500  # MC's Retrieve page (§2.2)


def fuel_client(sp: SandboxProcess, wsdl: Path, secret: str = "sandbox-secret") -> Any:
    """An ET_Client configured as a real-MC user configures one for an OAuth2 (enhanced) package."""
    return FuelSDK.ET_Client(
        False,
        False,
        {
            "clientid": "sandbox-client",
            "clientsecret": secret,
            "useOAuth2Authentication": "True",
            # FuelSDK appends /v2/token, then takes soap_instance_url/rest_instance_url from the answer.
            "authenticationurl": sp.http_url.rstrip("/"),
            "accountId": "100000001",
            "defaultwsdl": f"{sp.http_url}etframework.wsdl",
            "wsdl_file_local_loc": str(wsdl),
        },
    )


@pytest.fixture(scope="module")
def wsdl_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One local WSDL for the module's clients, as a FuelSDK install keeps one: suds caches its parse."""
    return tmp_path_factory.mktemp("fuelsdk") / "ExactTargetWSDL.xml"


@pytest.fixture
def fuel(clean_sandbox: SandboxProcess, wsdl_file: Path) -> Iterator[Any]:
    yield fuel_client(clean_sandbox, wsdl_file)


@pytest.fixture(scope="module")
def slow_sends(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SandboxProcess]:
    """A sandbox whose sends go out 5 s after MC accepted them: time for a client to act in between."""
    sp = start_sandbox(tmp_path_factory.mktemp("mc_sandbox_slow"), "--send-log-delay", "5")
    try:
        yield sp
    finally:
        sp.stop()


def stub(obj: Any, client: Any, props: Any = None, search_filter: Any = None) -> Any:
    obj.auth_stub = client
    obj.props = props
    obj.search_filter = search_filter
    return obj


def eq(prop: str, value: Any) -> dict[str, Any]:
    return {"Property": prop, "SimpleOperator": "equals", "Value": value}


def both(left: dict[str, Any], right: dict[str, Any]) -> dict[str, Any]:
    return {"LeftOperand": left, "LogicalOperator": "AND", "RightOperand": right}


def since(when: datetime) -> dict[str, Any]:
    return {"Property": "EventDate", "SimpleOperator": "greaterThan", "DateValue": when}


def ok(response: Any) -> Any:
    assert response.code == 200 and response.status, (response.code, response.message, response.results)
    return response


def add_subscribers(client: Any, pairs: list[tuple[str, str]]) -> None:
    """ET_Subscriber.post, 50 objects per call: MC's soft limit for a synchronous Create (§2.2)."""
    for i in range(0, len(pairs), 50):
        props = [{"SubscriberKey": k, "EmailAddress": e} for k, e in pairs[i : i + 50]]
        res = ok(stub(FuelSDK.ET_Subscriber(), client, props).post())
        assert [r.StatusCode for r in res.results] == ["OK"] * len(props)


def send(client: Any, subscribers: list[dict[str, Any]], key: str = DEFINITION) -> Any:
    ts = stub(FuelSDK.ET_TriggeredSend(), client, {"CustomerKey": key})
    ts.subscribers = subscribers
    return ts.send()


def recipient(key: str, email: str, notification_id: str) -> dict[str, Any]:
    return {
        "SubscriberKey": key,
        "EmailAddress": email,
        "Attributes": [{"Name": "NotificationId", "Value": notification_id}],
    }


def events(client: Any, kind: Any, props: list[str], flt: dict[str, Any]) -> list[Any]:
    return list(ok(stub(kind(), client, props, flt).get()).results)


def wait_events(client: Any, kind: Any, props: list[str], flt: dict[str, Any], n: int) -> list[Any]:
    def enough() -> list[Any] | None:
        got = events(client, kind, props, flt)
        return got if len(got) >= n else None

    return wait_for(enough, what=f"{n} {kind.__name__} rows")


def statuses(client: Any, keys: list[str]) -> dict[str, str]:
    flt = {"Property": "SubscriberKey", "SimpleOperator": "IN", "Value": keys}
    subs = ok(stub(FuelSDK.ET_Subscriber(), client, ["SubscriberKey", "Status"], flt).get()).results
    return {s.SubscriberKey: s.Status for s in subs}


def definition_object_id(client: Any, key: str = DEFINITION) -> str:
    (tsd,) = ok(
        stub(FuelSDK.ET_TriggeredSend(), client, ["ObjectID", "CustomerKey"], eq("CustomerKey", key)).get()
    ).results
    return str(tsd.ObjectID)


def send_log(client: Any, notification_id: str) -> list[dict[str, str]]:
    """ET_DataExtension_Row by CustomerKey: FuelSDK first looks the data extension's Name up."""
    row = stub(
        FuelSDK.ET_DataExtension_Row(),
        client,
        ["JobID", "BatchID", "SubscriberKey", "ErrorCode", "NotificationId"],
        eq("NotificationId", notification_id),
    )
    row.CustomerKey = SEND_LOG
    return [{p.Name: p.Value for p in r.Properties.Property} for r in ok(row.get()).results]


def sandbox_now(sp: SandboxProcess) -> datetime:
    return datetime.fromisoformat(get_json(sp.http_url, "_sandbox/clock")["now"].replace("Z", "+00:00"))


def advance_clock(sp: SandboxProcess, days: float) -> None:
    r = httpx.post(f"{sp.http_url}_sandbox/clock", json={"advance_seconds": days * 86400}, timeout=10)
    r.raise_for_status()


# --------------------------------------------------------------------------------------------- tests


def test_fuelsdk_gets_a_token_the_wsdl_and_the_soap_endpoint_from_the_sandbox(
    clean_sandbox: SandboxProcess, tmp_path: Path
) -> None:
    wsdl = tmp_path / "ExactTargetWSDL.xml"
    client = fuel_client(clean_sandbox, wsdl)
    # FuelSDK builds the SOAP endpoint as soap_instance_url + "service.asmx" (§1.2) and calls it.
    assert client.soap_endpoint == f"{clean_sandbox.http_url}service.asmx"
    assert client.base_api_url == clean_sandbox.http_url
    assert f'location="{clean_sandbox.http_url}Service.asmx"' in wsdl.read_text()
    assert definition_object_id(client)
    with pytest.raises(Exception, match="Unable to validate App Keys"):
        fuel_client(clean_sandbox, wsdl, secret="wrong")


def test_a_get_naming_no_properties_describes_the_object_first(fuel: Any) -> None:
    add_subscribers(fuel, [("F-D", "d@example.com")])
    described = ok(stub(FuelSDK.ET_Subscriber(), fuel).info())
    assert {"SubscriberKey", "EmailAddress", "Status"} <= {
        p.Name for p in described.results[0].Properties if p.IsRetrievable
    }
    (sub,) = ok(stub(FuelSDK.ET_Subscriber(), fuel).get()).results
    assert (sub.SubscriberKey, sub.EmailAddress, sub.Status) == ("F-D", "d@example.com", "Active")
    unknown = FuelSDK.ET_Describe(fuel, "NoSuchObject")
    assert (unknown.code, unknown.status) == (500, False)  # a fault, never an empty success


def test_an_expired_token_is_the_token_expired_fault_and_a_new_token_works(fuel: Any) -> None:
    base = fuel.base_api_url
    httpx.post(f"{base}_sandbox/tokens/expire", timeout=10).raise_for_status()
    req = fuel.soap_client.factory.create("RetrieveRequest")
    req.ObjectType, req.Properties = "TriggeredSendDefinition", ["CustomerKey"]
    code, fault = fuel.soap_client.service.Retrieve(req)
    # The string the SDKs match to refresh and retry (§1.4), on SOAP 1.1's fault status.
    assert (code, fault.faultstring) == (500, "Token Expired")
    assert not stub(FuelSDK.ET_TriggeredSend(), fuel, ["CustomerKey"]).get().status
    fuel.refresh_token(force_refresh=True)
    assert definition_object_id(fuel)


def test_classic_sends_leave_their_fates_in_the_tracking_objects_subscribers_and_send_log(
    clean_sandbox: SandboxProcess, fuel: Any
) -> None:
    people = {
        "F-OK": "ok@example.com",
        "F-HARD": "gone@bounce.example",
        "F-SOFT": "full@soft.example",
        "F-UNSUB": "bye@unsub.example",
    }
    add_subscribers(fuel, list(people.items()))
    t0 = sandbox_now(clean_sandbox) - timedelta(seconds=1)
    guid = definition_object_id(fuel)
    res = ok(send(fuel, [recipient(k, e, f"n-{k}") for k, e in people.items()]))
    (result,) = res.results
    assert (result.StatusCode, result.StatusMessage) == ("OK", "Created TriggeredSend")

    mine = both(eq("TriggeredSendDefinitionObjectID", guid), since(t0))
    sent = wait_events(fuel, FuelSDK.ET_SentEvent, EVENT, mine, len(people))
    assert sorted(e.SubscriberKey for e in sent) == sorted(people)
    assert {(e.EventType, str(e.TriggeredSendDefinitionObjectID)) for e in sent} == {("Sent", guid)}

    bounces = wait_events(fuel, FuelSDK.ET_BounceEvent, BOUNCE, since(t0), 2)
    by_key = {b.SubscriberKey: b for b in bounces}
    hard, soft = by_key["F-HARD"], by_key["F-SOFT"]
    assert (hard.EventType, hard.BounceCategory, hard.SMTPCode) == ("HardBounce", "Hard bounce", "550")
    assert (soft.EventType, soft.BounceCategory, soft.SMTPCode) == ("SoftBounce", "Soft bounce", "452")
    (unsub,) = wait_events(fuel, FuelSDK.ET_UnsubEvent, UNSUB, since(t0), 1)
    assert (unsub.SubscriberKey, unsub.EventType, unsub.IsMasterUnsubscribed) == (
        "F-UNSUB",
        "Unsubscribe",
        True,
    )
    # One send's events share its SendID (the definition's JobID); the send log joins on it (§2.8).
    sent_ok = next(e for e in sent if e.SubscriberKey == "F-OK")
    assert hard.SendID == sent_ok.SendID == unsub.SendID

    assert statuses(fuel, list(people)) == {
        "F-OK": "Active",
        "F-HARD": "Held",  # one hard bounce from a trusted domain (§2.6)
        "F-SOFT": "Bounced",  # still sendable: one soft bounce holds no one
        "F-UNSUB": "Unsubscribed",
    }
    (log,) = send_log(fuel, "n-F-OK")
    assert log == {
        "JobID": str(sent_ok.SendID),
        "BatchID": str(sent_ok.BatchID),
        "SubscriberKey": "F-OK",
        "ErrorCode": None,
        "NotificationId": "n-F-OK",
    }

    # The held address is mailed once: MC refuses the next send with the subscriber's failure.
    refused = send(fuel, [recipient("F-HARD", people["F-HARD"], "n-again")])
    assert refused.code == 200 and not refused.status and refused.message == "Error"
    (result,) = refused.results
    assert (result.StatusCode, result.ErrorCode) == ("Error", 180008)
    (failure,) = result.SubscriberFailures
    assert (failure.ErrorCodeID, failure.ErrorCode) == (2, "TriggeredSendSubscriberProcessingError")
    assert failure.ErrorDescription.startswith("Error Code: 2 - ")
    assert failure.Subscriber.SubscriberKey == "F-HARD"
    assert send_log(fuel, "n-again") == []  # refused at the API: never attempted, never logged
    hard_sent = events(fuel, FuelSDK.ET_SentEvent, EVENT, both(eq("SubscriberKey", "F-HARD"), since(t0)))
    assert len(hard_sent) == 1


def test_soft_bounces_hold_a_subscriber_at_the_third_spanning_15_days(
    clean_sandbox: SandboxProcess, fuel: Any
) -> None:
    add_subscribers(fuel, [("F-SOFT", "full@soft.example")])
    t0 = sandbox_now(clean_sandbox) - timedelta(seconds=1)
    mine = both(eq("SubscriberKey", "F-SOFT"), since(t0))
    for n, (day, status) in enumerate(((0, "Bounced"), (8, "Bounced"), (8, "Held"))):
        advance_clock(clean_sandbox, day)
        res = ok(send(fuel, [recipient("F-SOFT", "full@soft.example", f"n-soft-{n}")]))
        assert res.results[0].StatusCode == "OK"  # not suppressed yet: MC still sends to it
        bounces = wait_events(fuel, FuelSDK.ET_BounceEvent, BOUNCE, mine, n + 1)
        assert [b.BounceCategory for b in bounces] == ["Soft bounce"] * (n + 1)
        wait_for(lambda s=status: statuses(fuel, ["F-SOFT"]) == {"F-SOFT": s}, what=f"status {status}")
    refused = send(fuel, [recipient("F-SOFT", "full@soft.example", "n-soft-held")])
    (result,) = refused.results
    assert (result.StatusCode, result.ErrorCode, result.SubscriberFailures[0].ErrorCodeID) == (
        "Error",
        180008,
        2,
    )


def test_a_send_with_an_unknown_definition_key_is_refused(fuel: Any) -> None:
    add_subscribers(fuel, [("F-1", "one@example.com")])
    res = send(fuel, [recipient("F-1", "one@example.com", "n-x")], key="no-such-definition")
    assert res.code == 200 and not res.status and res.message == "Error"
    (result,) = res.results
    assert (result.StatusCode, result.ErrorCode) == ("Error", 18002)


def test_a_subscriber_gone_before_send_time_is_a_not_sent_event(
    slow_sends: SandboxProcess, wsdl_file: Path
) -> None:
    fuel = fuel_client(slow_sends, wsdl_file)
    add_subscribers(fuel, [("F-GONE", "gone@example.com")])
    t0 = sandbox_now(slow_sends) - timedelta(seconds=1)
    ok(send(fuel, [recipient("F-GONE", "gone@example.com", "n-gone")]))
    # MC accepted the send; it goes out --send-log-delay (5 s) later, after this delete.
    ok(stub(FuelSDK.ET_Subscriber(), fuel, {"SubscriberKey": "F-GONE"}).delete())
    # FuelSDK 1.3.0 has no ET_NotSentEvent: its generic ET_Get retrieves the object by name.
    flt = both(eq("SubscriberKey", "F-GONE"), since(t0))

    def not_sent() -> list[Any] | None:
        return list(ok(FuelSDK.ET_Get(fuel, "NotSentEvent", EVENT, flt)).results) or None

    (ev,) = wait_for(not_sent, what="NotSentEvent")
    assert ev.EventType == "NotSent"
    (log,) = wait_for(lambda: send_log(fuel, "n-gone"), what="send log row")
    assert log["JobID"] == str(ev.SendID) and log["ErrorCode"] not in (None, "")
    assert events(fuel, FuelSDK.ET_SentEvent, EVENT, flt) == []


def test_more_than_a_page_of_sent_events_pages_with_get_more_results(
    clean_sandbox: SandboxProcess, fuel: Any
) -> None:
    n = PAGE + 120
    pairs = [(f"P-{i:05d}", f"p{i:05d}@example.com") for i in range(n)]
    add_subscribers(fuel, pairs)
    t0 = sandbox_now(clean_sandbox) - timedelta(seconds=1)
    # Two requests: suds builds FuelSDK's whole TriggeredSend skeleton per request (seconds each).
    for i in range(0, n, 1310):
        ok(send(fuel, [recipient(k, e, f"n-{k}") for k, e in pairs[i : i + 1310]]))
    flt = both(eq("TriggeredSendDefinitionObjectID", definition_object_id(fuel)), since(t0))
    wait_for(
        lambda: len(get_json(clean_sandbox.http_url, "_sandbox/send-log")[SEND_LOG]) >= n,
        timeout=60,
        what="every send at its send time",
    )

    reader = stub(FuelSDK.ET_SentEvent(), fuel, ["SubscriberKey", "SendID"], flt)
    first = reader.get()
    assert first.status and first.message == "MoreDataAvailable" and first.more_results
    assert len(first.results) == PAGE
    rest = reader.getMoreResults()
    assert rest.status and rest.message == "OK" and not rest.more_results
    keys = [e.SubscriberKey for e in (*first.results, *rest.results)]
    assert len(keys) == n and set(keys) == {k for k, _ in pairs}
