"""TokenManager and RestClient against canned MC answers (httpx.MockTransport, no network)."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
from dataclasses import replace

import httpx
import pytest

from stream_app.mc import (
    AuthError,
    PermanentMCError,
    RestClient,
    SendReceipt,
    TokenManager,
    TransientMCError,
    verify_ens_signature,
)
from tests.fixtures.fake_rest import SETTINGS, Clock, FakeMC, make


async def test_token_is_cached_and_request_is_client_credentials() -> None:
    fake = FakeMC()
    tokens, _ = make(fake)
    assert await tokens.token() == "tok-1"
    assert await tokens.token() == "tok-1"
    assert len(fake.token_requests) == 1
    sent = fake.token_requests[0]
    assert sent["grant_type"] == "client_credentials"
    assert sent["client_id"] == SETTINGS.mc_client_id
    assert sent["account_id"] == int(SETTINGS.mc_account_id)
    assert tokens.rest_base == "https://mcTEST.rest.marketingcloudapis.com/"
    assert tokens.soap_base == "https://mcTEST.soap.marketingcloudapis.com/"


async def test_bare_instance_urls_are_normalised() -> None:
    tokens, _ = make(FakeMC(bare_urls=True))
    await tokens.token()
    assert tokens.rest_base == "https://mcTEST.rest.marketingcloudapis.com/"
    assert tokens.soap_base == "https://mcTEST.soap.marketingcloudapis.com/"


async def test_token_refreshes_ahead_of_expiry() -> None:
    fake, clock = FakeMC(expires_in=1079), Clock()
    tokens, _ = make(fake, clock=clock)
    await tokens.token()
    clock.now += 1079 - 190  # still more than margin + jitter (120 + 60) before expiry
    assert await tokens.token() == "tok-1"
    clock.now += 100  # now inside the refresh window, before the real expiry
    assert await tokens.token() == "tok-2"
    assert len(fake.token_requests) == 2


async def test_concurrent_callers_share_one_token_request() -> None:
    gate = asyncio.Event()
    fake = FakeMC()
    inner = fake.__call__

    async def slow(request: httpx.Request) -> httpx.Response:
        await gate.wait()
        return inner(request)

    class SlowTransport(httpx.AsyncBaseTransport):
        async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
            await request.aread()
            return await slow(request)

    http = httpx.AsyncClient(transport=SlowTransport())
    tokens = TokenManager(SETTINGS, http)
    waiters = [asyncio.create_task(tokens.token()) for _ in range(20)]
    await asyncio.sleep(0.01)
    gate.set()
    assert set(await asyncio.gather(*waiters)) == {"tok-1"}
    assert len(fake.token_requests) == 1


async def test_invalidate_only_drops_the_rejected_token() -> None:
    fake = FakeMC()
    tokens, _ = make(fake)
    await tokens.token()
    tokens.invalidate("some-older-token")
    assert await tokens.token() == "tok-1"
    tokens.invalidate("tok-1")
    assert await tokens.token() == "tok-2"


async def test_bad_credentials_are_an_auth_error_without_the_secret() -> None:
    settings = replace(SETTINGS, mc_client_secret="wrong-secret-value")
    tokens, _ = make(FakeMC(), settings=settings)
    with pytest.raises(AuthError) as info:
        await tokens.token()
    assert info.value.code == "invalid_client"
    assert "wrong-secret-value" not in str(info.value)


async def test_token_endpoint_outage_is_transient() -> None:
    def down(request: httpx.Request) -> httpx.Response:
        return httpx.Response(503, headers={"Retry-After": "7"})

    tokens = TokenManager(SETTINGS, httpx.AsyncClient(transport=httpx.MockTransport(down)))
    with pytest.raises(TransientMCError) as info:
        await tokens.token()
    assert info.value.retry_after == 7


# --- email ------------------------------------------------------------------------------------

ACCEPTED = {
    "requestId": "0b6f1f0c-1111-4c6e-9a3e-000000000001",
    "responses": [
        {
            "recipientSendId": "0b6f1f0c-1111-4c6e-9a3e-000000000001",
            "hasErrors": False,
            "messages": ["Queued"],
        }
    ],
}


async def send(rest: RestClient) -> SendReceipt:
    return await rest.send_email(
        "packet-drawn-drawer",
        to="ez@example.com",
        subscriber_key="M1001",
        from_name="TABLE via EZTABLE",
        attributes={"Amount": "250"},
    )


async def test_send_email_accepted() -> None:
    fake = FakeMC(lambda r: httpx.Response(202, json=ACCEPTED))
    _, rest = make(fake)
    receipt = await send(rest)
    assert receipt == SendReceipt(ACCEPTED["requestId"], ACCEPTED["requestId"])  # type: ignore[arg-type]
    request = fake.api_requests[0]
    assert str(request.url) == (
        "https://mctest.rest.marketingcloudapis.com/messaging/v1/messageDefinitionSends/key:packet-drawn-drawer/send"
    )
    assert request.headers["Authorization"] == "Bearer tok-1"
    body = json.loads(request.content)
    assert body == {
        "From": {"Address": "noreply@eztable.com", "Name": "TABLE via EZTABLE"},
        "To": {
            "Address": "ez@example.com",
            "SubscriberKey": "M1001",
            "ContactAttributes": {"SubscriberAttributes": {"Amount": "250"}},
        },
        "Options": {"RequestType": "SYNC"},
    }


async def test_send_email_180008_is_permanent_with_subscriber_reason() -> None:
    refused = {
        "requestId": "21977680-0000-469d-9162-000000000002",
        "responses": [
            {
                "recipientSendId": "21977680-0000-469d-9162-000000000002",
                "hasErrors": True,
                "messageErrors": [
                    {
                        "messageErrorCode": 180008,
                        "messageErrorStatus": "Unable to queue Triggered Send request. "
                        "There are no valid subscribers.",
                    },
                    {"messageErrorCode": 14, "messageErrorStatus": "ErrorCodeID 14 EmailAddressMismatch"},
                ],
            }
        ],
    }
    _, rest = make(FakeMC(lambda r: httpx.Response(202, json=refused)))
    with pytest.raises(PermanentMCError) as info:
        await send(rest)
    assert info.value.code == 180008
    assert info.value.subscriber_code == 14
    assert "no valid subscribers" in info.value.reason
    assert "EmailAddressMismatch" in info.value.reason


async def test_send_email_180008_doc_shape() -> None:
    refused = {
        "requestId": "r",
        "responses": [
            {
                "recipientSendId": "r",
                "hasErrors": True,
                "messageErrors": [
                    {"messageErrorCode": 180008, "messageErrorStatus": "no valid subscribers."}
                ],
            }
        ],
    }
    _, rest = make(FakeMC(lambda r: httpx.Response(202, json=refused)))
    with pytest.raises(PermanentMCError) as info:
        await send(rest)
    assert (info.value.code, info.value.subscriber_code) == (180008, None)


async def test_send_email_unwrapped_invalid_address() -> None:
    body = {"recipientSendId": "", "hasErrors": True, "messages": ["InvalidOrMissingToAddress"]}
    _, rest = make(FakeMC(lambda r: httpx.Response(202, json=body)))
    with pytest.raises(PermanentMCError) as info:
        await send(rest)
    assert info.value.code == "InvalidOrMissingToAddress"


async def test_401_refreshes_the_token_once() -> None:
    def api(request: httpx.Request) -> httpx.Response:
        if request.headers["Authorization"] == "Bearer tok-1":
            return httpx.Response(401, json={"errorcode": 0, "message": "Not Authorized"})
        return httpx.Response(202, json=ACCEPTED)

    fake = FakeMC(api)
    _, rest = make(fake)
    assert (await send(rest)).request_id == ACCEPTED["requestId"]
    assert len(fake.token_requests) == 2
    assert len(fake.api_requests) == 2


async def test_401_twice_gives_up_with_auth_error() -> None:
    fake = FakeMC(lambda r: httpx.Response(401, json={"errorcode": 0, "message": "Not Authorized"}))
    _, rest = make(fake)
    with pytest.raises(AuthError):
        await send(rest)
    assert len(fake.api_requests) == 2


async def test_429_is_transient_with_retry_after_header() -> None:
    body = {"message": "Rate limit exceeded", "errorcode": 50100, "retryAfter": 5}
    fake = FakeMC(lambda r: httpx.Response(429, json=body, headers={"Retry-After": "3"}))
    _, rest = make(fake)
    with pytest.raises(TransientMCError) as info:
        await send(rest)
    assert info.value.retry_after == 3
    assert len(fake.api_requests) == 1  # no retry inside the client


async def test_429_without_header_uses_body_retry_after() -> None:
    body = {"message": "Rate limit exceeded", "errorcode": 50100, "retryAfter": 5}
    _, rest = make(FakeMC(lambda r: httpx.Response(429, json=body)))
    with pytest.raises(TransientMCError) as info:
        await send(rest)
    assert info.value.retry_after == 5


@pytest.mark.parametrize("status", [500, 502, 503])
async def test_5xx_is_transient(status: int) -> None:
    _, rest = make(FakeMC(lambda r: httpx.Response(status, text="oops")))
    with pytest.raises(TransientMCError) as info:
        await send(rest)
    assert info.value.retry_after is None


@pytest.mark.parametrize(
    "exc", [httpx.ReadTimeout("slow"), httpx.ConnectError("refused"), httpx.RemoteProtocolError("x")]
)
async def test_network_failures_are_transient(exc: Exception) -> None:
    def api(request: httpx.Request) -> httpx.Response:
        raise exc

    _, rest = make(FakeMC(api))
    with pytest.raises(TransientMCError):
        await send(rest)


async def test_unknown_definition_is_permanent() -> None:
    body = {"message": "Object Not Found", "errorcode": 30003}
    _, rest = make(FakeMC(lambda r: httpx.Response(404, json=body)))
    with pytest.raises(PermanentMCError) as info:
        await send(rest)
    assert info.value.code == 30003


# --- SMS --------------------------------------------------------------------------------------


async def test_send_sms_digits_only_and_override() -> None:
    fake = FakeMC(lambda r: httpx.Response(202, json={"tokenId": "c21NCNSDN2sMMWM2miosdjEHH"}))
    _, rest = make(fake)
    receipt = await rest.send_sms(
        "MzA6Nzg6MA", mobile_e164="+886912345678", text="hi", subscriber_key="M1001"
    )
    assert receipt.request_id == "c21NCNSDN2sMMWM2miosdjEHH"
    request = fake.api_requests[0]
    assert request.url.path == "/sms/v1/messageContact/MzA6Nzg6MA/send"
    assert json.loads(request.content) == {
        "Subscribers": [{"MobileNumber": "886912345678", "SubscriberKey": "M1001"}],
        "Override": True,
        "messageText": "hi",
    }
    await rest.send_sms("MzA6Nzg6MA", mobile_e164="+886912345678", text="hi")
    assert json.loads(fake.api_requests[1].content)["mobileNumbers"] == ["886912345678"]


async def test_send_sms_passes_the_blackout_window_as_mobileconnect_takes_it() -> None:
    fake = FakeMC(lambda r: httpx.Response(202, json={"tokenId": "t"}))
    _, rest = make(fake)
    window = {"UtcOffset": "+0800", "WindowStart": "2100", "WindowEnd": "0900"}
    await rest.send_sms("m", mobile_e164="+886912345678", text="hi", blackout_window=window)
    assert json.loads(fake.api_requests[0].content)["blackoutWindow"] == window
    await rest.send_sms("m", mobile_e164="+886912345678", text="hi", blackout_window=None)
    assert "blackoutWindow" not in json.loads(fake.api_requests[1].content)


async def test_send_sms_attributes_go_with_the_subscriber() -> None:
    fake = FakeMC(lambda r: httpx.Response(202, json={"tokenId": "t"}))
    _, rest = make(fake)
    attrs = {"NotificationId": "n-1"}
    await rest.send_sms("m", mobile_e164="+886912345678", text="hi", subscriber_key="M1", attributes=attrs)
    assert json.loads(fake.api_requests[0].content)["Subscribers"] == [
        {"MobileNumber": "886912345678", "SubscriberKey": "M1", "Attributes": {"NotificationId": "n-1"}}
    ]
    # MobileConnect's mobileNumbers form carries no attributes: without a key they cannot be sent.
    await rest.send_sms("m", mobile_e164="+886912345678", text="hi", attributes=attrs)
    assert json.loads(fake.api_requests[1].content) == {
        "mobileNumbers": ["886912345678"],
        "Override": True,
        "messageText": "hi",
    }


async def test_send_sms_400_errors_are_permanent() -> None:
    body = {"errors": ["Message id bogus is not valid.", "Invalid phone number"]}
    _, rest = make(FakeMC(lambda r: httpx.Response(400, json=body)))
    with pytest.raises(PermanentMCError) as info:
        await rest.send_sms("bogus", mobile_e164="+886912345678", text="hi")
    assert "Message id bogus is not valid." in info.value.reason
    assert "Invalid phone number" in info.value.reason


async def test_send_sms_rejects_non_e164_locally() -> None:
    fake = FakeMC()
    _, rest = make(fake)
    with pytest.raises(PermanentMCError):
        await rest.send_sms("m", mobile_e164="1-317-555-1212", text="hi")
    assert fake.api_requests == []


# --- ENS --------------------------------------------------------------------------------------


async def test_ens_registration_flow() -> None:
    def api(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        if request.url.path == "/platform/v1/ens-callbacks":
            item = body[0]
            return httpx.Response(
                201, json=[{**item, "callbackId": "cb-1", "signatureKey": "c2lnbmF0dXJlLWtleQ=="}]
            )
        if request.url.path == "/platform/v1/ens-verify":
            assert body == {"callbackId": "cb-1", "verificationKey": "vk"}
            return httpx.Response(200, json={})
        if request.url.path == "/platform/v1/ens-subscriptions":
            assert body[0]["eventCategoryTypes"] == ["TransactionalSendEvents.EmailBounced"]
            return httpx.Response(201, json=[{**body[0], "subscriptionId": "sub-1", "status": "active"}])
        return httpx.Response(404)

    _, rest = make(FakeMC(api))
    assert await rest.register_callback("cb", "https://h.example/ens") == ("cb-1", "c2lnbmF0dXJlLWtleQ==")
    await rest.verify_callback("cb-1", "vk")
    assert await rest.subscribe("cb-1", "bounces", ["TransactionalSendEvents.EmailBounced"]) == "sub-1"


def sign(body: bytes, key: str) -> str:
    return base64.b64encode(hmac.new(key.encode(), body, hashlib.sha256).digest()).decode()


def test_ens_signature() -> None:
    key = "c2lnbmF0dXJlLWtleQ=="  # looks base64 but is used as UTF-8 bytes
    body = b'[{"eventCategoryType":"TransactionalSendEvents.EmailBounced"}]'
    header = sign(body, key)
    assert verify_ens_signature(body, header, key)
    assert not verify_ens_signature(body + b" ", header, key)  # tampered body
    assert not verify_ens_signature(body, sign(body, "other-key"), key)  # wrong key
    assert not verify_ens_signature(body, "not base64 ✓", key)
    assert not verify_ens_signature(body, "", key)
    assert not verify_ens_signature(body, None, key)
