"""The MC clients against the local sandbox, over the network exactly as against real MC."""

from __future__ import annotations

import asyncio
import logging
import re
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from stream_app.mc import (
    ImportSummary,
    MarketingCloud,
    PermanentMCError,
    SendLogRow,
    SftpUploader,
    SoapClient,
    SubscriberRow,
    TransientMCError,
    error_report_path,
)
from stream_app.mc.soap import TriggeredEmail
from stream_app.mc.tracking import TrackingEvent
from stream_app.mc.transport import AiohttpTransport
from stream_app.settings import Settings
from tests.fixtures.sandbox import SandboxProcess, start_sandbox
from tests.integration.helpers import sandbox_settings

# Fixtures live on the session loop; the tests must run on it too.
pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="session")]
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def mc_box(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SandboxProcess]:
    """A sandbox of our own: these tests reset it and inject faults, which the shared one must not see."""
    sandbox = start_sandbox(tmp_path_factory.mktemp("mc_sandbox"))
    try:
        yield sandbox
    finally:
        sandbox.stop()


@pytest.fixture(scope="module")
def settings(mc_box: SandboxProcess) -> Settings:
    return sandbox_settings(mc_box)


@pytest.fixture
async def admin(mc_box: SandboxProcess) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=mc_box.http_url, timeout=10) as client:
        await client.post("/_sandbox/reset")
        await client.delete("/_sandbox/faults")
        yield client
        await client.delete("/_sandbox/faults")


@pytest.fixture
async def mc(settings: Settings, admin: httpx.AsyncClient) -> AsyncIterator[MarketingCloud]:
    cloud = MarketingCloud(settings)
    await cloud.start()
    yield cloud
    await cloud.close()


async def fault(
    admin: httpx.AsyncClient, target: str, mode: str, count: int = 1, seconds: float | None = None
) -> None:
    body: dict[str, Any] = {"target": target, "mode": mode, "count": count}
    if seconds is not None:
        body["seconds"] = seconds
    response = await admin.post("/_sandbox/faults", json=body)
    assert response.status_code in (200, 201), response.text


CSV = (
    b'"Subscriber Key","Email Address"\r\n'
    b'"M1001","ez@example.com"\r\n'
    b'"M2002","table@example.com"\r\n'
    b'"M3003","not-an-email"\r\n'
)


async def import_subscribers(mc: MarketingCloud, name: str, data: bytes = CSV) -> ImportSummary:
    await mc.sftp.upload(name, data)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        summary = await mc.soap.import_summary(name)
        if summary is not None and summary.done:
            return summary
        await asyncio.sleep(0.2)
    raise AssertionError(f"import of {name} did not complete")


async def test_token_is_cached(mc: MarketingCloud, admin: httpx.AsyncClient) -> None:
    before = (await admin.get("/_sandbox/stats")).json().get("token_requests")
    cloud = MarketingCloud(replace(mc.tokens._settings))
    started = time.perf_counter()
    await cloud.tokens.token()
    print(f"\ntoken fetch: {(time.perf_counter() - started) * 1000:.1f} ms")
    for _ in range(5):
        await cloud.tokens.token()
    after = (await admin.get("/_sandbox/stats")).json().get("token_requests")
    await cloud.close()
    assert after - before == 1


async def test_import_then_send(mc: MarketingCloud, admin: httpx.AsyncClient) -> None:
    started = time.perf_counter()
    summary = await import_subscribers(mc, "subscribers_it1.csv")
    print(f"\nupload -> import Completed: {(time.perf_counter() - started) * 1000:.0f} ms")
    assert summary.status == "Completed"
    assert (summary.total_rows, summary.succeeded, summary.errors) == (3, 2, 1)

    report = await mc.sftp.read_file(error_report_path("subscribers_it1.csv"))
    assert report is not None
    lines = report.decode().splitlines()
    assert lines[0].replace('"', "") == "SubscriberKey,EmailAddress,ErrorCode,ErrorMessage"
    assert any("M3003" in line for line in lines[1:])
    assert await mc.sftp.read_file("/Export/never_uploaded_errors.csv") is None

    timings = []
    for _ in range(5):
        started = time.perf_counter()
        await mc.soap.import_summary("subscribers_it1.csv")
        timings.append((time.perf_counter() - started) * 1000)
    print(f"SOAP Retrieve ImportResultsSummary: median {sorted(timings)[2]:.1f} ms")

    timings = []
    for _ in range(5):
        started = time.perf_counter()
        receipt = await mc.rest.send_email(
            "packet-drawn-drawer",
            to="ez@example.com",
            subscriber_key="M1001",
            from_name="TABLE via EZTABLE",
            attributes={"DrawerName": "EZ", "GiverName": "TABLE", "Amount": "250"},
        )
        timings.append((time.perf_counter() - started) * 1000)
    print(f"REST send_email: median {sorted(timings)[2]:.1f} ms")
    assert receipt.request_id
    messages = (await admin.get("/_sandbox/messages")).json()
    email = [m for m in messages if m["channel"] == "email"]
    assert len(email) == 5
    assert email[-1]["from_name"] == "TABLE via EZTABLE"
    assert email[-1]["subscriber_key"] == "M1001" and email[-1]["to"] == "ez@example.com"


async def test_send_refusals_are_permanent(mc: MarketingCloud) -> None:
    await import_subscribers(mc, "subscribers_it2.csv")
    with pytest.raises(PermanentMCError) as info:
        await mc.rest.send_email("packet-drawn-drawer", to="other@example.com", subscriber_key="M1001")
    assert info.value.code == 180008
    with pytest.raises(PermanentMCError) as info:
        await mc.rest.send_email("packet-drawn-drawer", to="", subscriber_key="M1001")
    with pytest.raises(PermanentMCError):
        await mc.rest.send_email("no-such-definition", to="ez@example.com", subscriber_key="M1001")


async def test_sms(mc: MarketingCloud, admin: httpx.AsyncClient) -> None:
    receipt = await mc.rest.send_sms(
        "packet-drawn-welcome", mobile_e164="+886912345678", text="hi", subscriber_key="M1001"
    )
    assert receipt.request_id
    sms = [m for m in (await admin.get("/_sandbox/messages")).json() if m["channel"] == "sms"]
    assert len(sms) == 1 and "886912345678" in str(sms[0]["to"])
    with pytest.raises(PermanentMCError):
        await mc.rest.send_sms("no-such-message", mobile_e164="+886912345678", text="hi")


@pytest.mark.parametrize("target", ["rest", "soap"])
async def test_injected_faults_are_transient(
    mc: MarketingCloud, admin: httpx.AsyncClient, target: str
) -> None:
    async def call() -> object:
        if target == "rest":
            return await mc.rest.send_email(
                "packet-drawn-drawer", to="ez@example.com", subscriber_key="M1001"
            )
        return await mc.soap.import_summary("whatever.csv")

    await fault(admin, target, "error500")
    with pytest.raises(TransientMCError):
        await call()
    await fault(admin, target, "error429")
    with pytest.raises(TransientMCError) as info:
        await call()
    if target == "rest":
        assert info.value.retry_after is not None
    await fault(admin, target, "disconnect")  # the connection dies with no answer
    with pytest.raises(TransientMCError):
        await call()
    # The dead connection leaves the pool: the next call gets MC's answer (to REST a refusal, since
    # the subscriber was never imported; to SOAP no summary for the unknown file).
    if target == "rest":
        with pytest.raises(PermanentMCError):
            await call()
    else:
        assert await call() is None


@pytest.mark.parametrize("target", ["rest", "soap"])
async def test_a_slow_answer_times_out_as_a_transient_error(
    settings: Settings, admin: httpx.AsyncClient, target: str
) -> None:
    limits = httpx.Limits(max_connections=4)
    http = httpx.AsyncClient(timeout=httpx.Timeout(0.5), transport=AiohttpTransport(limits))
    cloud = MarketingCloud(settings, http=http)
    try:
        await cloud.tokens.token()
        await fault(admin, target, "slow", seconds=3)
        started = time.monotonic()
        with pytest.raises(TransientMCError, match="timed out"):
            if target == "rest":
                await cloud.rest.send_email("packet-drawn-drawer", to="e@example.com", subscriber_key="M1")
            else:  # SOAP calls carry a timeout of their own
                await SoapClient(cloud.tokens, http, timeout=0.5).import_summary("whatever.csv")
        assert time.monotonic() - started < 2.5  # the client gave up, not the server's answer
    finally:
        await cloud.close()
        await http.aclose()


async def test_expired_token_is_refreshed(mc: MarketingCloud, admin: httpx.AsyncClient) -> None:
    await admin.post("/_sandbox/tokens/expire")
    assert await mc.soap.import_summary("nothing.csv") is None
    await admin.post("/_sandbox/tokens/expire")
    with pytest.raises(PermanentMCError):  # reaches MC with a fresh token, which refuses the unknown key
        await mc.rest.send_email("no-such-definition", to="ez@example.com", subscriber_key="M1001")


async def test_sftp_disconnect_is_transient_and_reconnects(
    mc: MarketingCloud, admin: httpx.AsyncClient
) -> None:
    await mc.sftp.upload("warmup_it.csv", b'"Subscriber Key","Email Address"\r\n')
    await fault(admin, "sftp", "disconnect")
    with pytest.raises(TransientMCError):
        await mc.sftp.upload("subscribers_it3.csv", CSV)
    path = await mc.sftp.upload("subscribers_it3.r2.csv", CSV)
    assert path == "/Import/subscribers_it3.r2.csv"


async def test_host_key_mismatch_is_refused(settings: Settings, tmp_path: Path) -> None:
    bogus = tmp_path / "known_hosts"
    key = "AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl"  # some other host's key
    bogus.write_text(f"[127.0.0.1]:{settings.mc_sftp_port} ssh-ed25519 {key}\n")
    uploader = SftpUploader(replace(settings, mc_sftp_known_hosts=bogus))
    with pytest.raises(PermanentMCError) as info:
        await uploader.upload("never.csv", b"x")
    assert info.value.code == "HostKeyMismatch"
    await uploader.close()


async def test_no_secret_is_logged(
    mc: MarketingCloud, admin: httpx.AsyncClient, settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    await admin.post("/_sandbox/tokens/expire")
    await mc.soap.import_summary("nothing.csv")
    await mc.rest.send_sms("packet-drawn-welcome", mobile_e164="+886912345678", text="hi")
    await mc.sftp.close()
    await mc.sftp.upload("logcheck_it.csv", b'"Subscriber Key","Email Address"\r\n')
    token = await mc.tokens.token()
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert caplog.records
    assert token not in text
    assert settings.mc_client_secret not in text
    # The sandbox's SFTP password is a plain word that also names its routes and its SFTP user.
    text = text.replace(f"user {settings.mc_sftp_user}", "user <name>")
    assert not re.search(rf"(?<![\w/-]){re.escape(settings.mc_sftp_password)}(?![\w/-])", text)


async def wait_send_log(mc: MarketingCloud, data_extension: str, notification_id: str) -> list[SendLogRow]:
    """MC logs a send at send time (the sandbox a second after acceptance): poll until the row is there."""
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        rows = await mc.soap.send_log(data_extension, notification_id)
        if rows:
            return rows
        await asyncio.sleep(0.2)
    raise AssertionError(f"no {data_extension} row for {notification_id}")


async def test_send_log_tells_two_sends_of_one_template_apart(mc: MarketingCloud) -> None:
    await import_subscribers(mc, "subscribers_it_sendlog.csv")
    first, second = f"n-{uuid.uuid4()}", f"n-{uuid.uuid4()}"
    for notification_id in (first, second):
        await mc.rest.send_email(
            "packet-drawn-drawer",
            to="ez@example.com",
            subscriber_key="M1001",
            attributes={"DrawerName": "EZ", "NotificationId": notification_id},
        )
    assert await wait_send_log(mc, "SendLog", first) == [SendLogRow(first, None, "M1001")]
    assert await wait_send_log(mc, "SendLog", second) == [SendLogRow(second, None, "M1001")]
    assert await mc.soap.send_log("SendLog", f"n-{uuid.uuid4()}") == []
    assert await mc.soap.send_log("SMSSendLog", first) == []
    with pytest.raises(PermanentMCError):
        await mc.soap.send_log("NoSuchSendLog", first)


async def test_sms_attributes_reach_the_sms_send_log(mc: MarketingCloud, admin: httpx.AsyncClient) -> None:
    notification_id = f"n-{uuid.uuid4()}"
    await mc.rest.send_sms(
        "packet-drawn-welcome",
        mobile_e164="+886912345678",
        text="hi",
        subscriber_key="M1001",
        attributes={"NotificationId": notification_id},
        # MC delivers (and logs) only to numbers subscribed to the keyword: the send subscribes it.
        subscribe_keyword="EZTABLE",
    )
    (sms,) = [m for m in (await admin.get("/_sandbox/messages")).json() if m["channel"] == "sms"]
    assert sms["attributes"] == {"NotificationId": notification_id}
    rows = await wait_send_log(mc, "SMSSendLog", notification_id)
    assert rows == [SendLogRow(notification_id, None, "M1001")]


async def test_a_soap_create_carries_many_emails_each_with_its_own_sender_and_result(
    mc: MarketingCloud, admin: httpx.AsyncClient
) -> None:
    """MC's batch for classic triggered sends (issue 23): one Create, one TriggeredSend object per
    email, each with its own Owner.FromName and attributes, each answered by its own result."""
    await import_subscribers(mc, "subscribers_it_batch.csv")
    ids = [f"n-{uuid.uuid4()}" for _ in range(3)]
    emails = [
        TriggeredEmail(
            "packet-drawn-drawer",
            "ez@example.com",
            "M1001",
            "TABLE via EZTABLE",
            None,
            {"DrawerName": "EZ", "NotificationId": ids[0]},
        ),
        TriggeredEmail(
            "packet-drawn-giver",
            "other@example.com",
            "M1001",
            "EZ via EZTABLE",
            None,
            {"GiverName": "TABLE", "NotificationId": ids[1]},
        ),  # not M1001's address
        TriggeredEmail(
            "packet-drawn-giver",
            "table@example.com",
            "M2002",
            "EZ via EZTABLE",
            None,
            {"GiverName": "TABLE", "NotificationId": ids[2]},
        ),
    ]
    before = len((await admin.get("/_sandbox/messages")).json())
    results = await mc.soap.send_triggered(emails)
    assert [r.ok for r in results] == [True, False, True]
    assert results[1].code == 180008 and results[1].subscriber_code is not None
    assert len({r.request_id for r in results}) == 1  # one call
    messages = (await admin.get("/_sandbox/messages")).json()[before:]
    assert sorted((m["from_name"], m["to"]) for m in messages) == [
        ("EZ via EZTABLE", "table@example.com"),
        ("TABLE via EZTABLE", "ez@example.com"),
    ]
    assert await wait_send_log(mc, "SendLog", ids[2]) == [SendLogRow(ids[2], None, "M2002")]


async def test_tracking_events_come_page_by_page_and_join_the_send_log_on_mcs_ids(
    mc: MarketingCloud, admin: httpx.AsyncClient
) -> None:
    """What the feedback stage reads (issue 18): BounceEvents of one definition in an EventDate range,
    a page at a time (RetrieveOptions BatchSize), joined to the send log by JobID/BatchID/SubscriberKey."""
    rows = [SubscriberRow(f"T{i}", f"t{i}@bounce.example") for i in range(7)]
    assert all(r.ok for r in await mc.soap.upsert_subscribers(rows))
    since = datetime.now(UTC) - timedelta(seconds=5)
    for i, row in enumerate(rows):
        await mc.rest.send_email(
            "packet-drawn-drawer",
            to=row.email,
            subscriber_key=row.subscriber_key,
            attributes={"NotificationId": f"n-{i}"},
        )
    object_id = await mc.soap.definition_object_id("packet-drawn-drawer")
    assert object_id and await mc.soap.definition_object_id("no-such-definition") is None

    async def pages() -> list[list[TrackingEvent]] | None:
        found = [
            page
            async for page in mc.soap.tracking_pages(
                "BounceEvent", object_id, since, datetime.now(UTC) + timedelta(seconds=5), batch_size=3
            )
        ]
        return found if sum(len(p) for p in found) == len(rows) else None

    found = await wait_until(pages)
    assert [len(p) for p in found] == [3, 3, 1]
    events = [e for page in found for e in page]
    assert {(e.event_type, e.smtp_code) for e in events} == {("HardBounce", "550")}
    (job,) = {e.send_id for e in events}
    assert job is not None
    entries = {
        e.message: e
        for e in await mc.soap.send_log_entries("SendLog", job, (e.batch_id or 0 for e in events))
    }
    joined = [entries[e.message] for e in events if e.message is not None]
    assert sorted(e.notification_id for e in joined) == sorted(f"n-{i}" for i in range(7))
    assert all(e.email == f"t{e.notification_id[2:]}@bounce.example" for e in joined)
    nothing = [p async for p in mc.soap.tracking_pages("UnsubEvent", object_id, since, datetime.now(UTC))]
    assert nothing == [[]]


async def test_sms_deliveries_say_where_the_message_got(mc: MarketingCloud) -> None:
    receipt = await mc.rest.send_sms(
        "packet-drawn-welcome",
        mobile_e164="+886912345670",
        text="hi",
        subscriber_key="M1",
        subscribe_keyword="EZTABLE",
    )

    async def finished() -> dict[str, Any] | None:
        found = await mc.rest.sms_deliveries("packet-drawn-welcome", receipt.request_id)
        return found if found["status"] == "Finished" else None

    found = await wait_until(finished)
    assert max(int(t["standardStatusCode"]) for t in found["tracking"]) == 4000
    with pytest.raises(PermanentMCError):
        await mc.rest.sms_deliveries("packet-drawn-welcome", "no-such-token")


async def wait_until(check: Any, timeout: float = 20.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = await check()
        if found:
            return found
        await asyncio.sleep(0.2)
    raise AssertionError(f"{check.__name__}: not within {timeout} s")
