"""MC REST: classic triggered email sends, MobileConnect SMS, Transactional Messaging (email and SMS)
and ENS callback registration."""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import httpx

from stream_app.mc.auth import TokenManager
from stream_app.mc.errors import (
    AuthError,
    BlockedMCError,
    DuplicateMessageKeyError,
    PermanentMCError,
    ThrottledMCError,
    TransientMCError,
    parse_retry_after,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SendReceipt:
    """MC's acknowledgement of one send.

    For email `request_id` is MC's requestId and `recipient_send_id` the id of the delivery record;
    for SMS `request_id` is the MobileConnect tokenId. Through Transactional Messaging (either
    channel) `request_id` is the request's requestId and `recipient_send_id` the messageKey.
    """

    request_id: str
    recipient_send_id: str = ""
    # Transactional Messaging: MC refused the messageKey as already used (109110) and its status
    # route says it has the message: an earlier request (a crashed worker's, a timed-out try) sent it.
    already_sent: bool = False


# Transactional Messaging's refusal of a messageKey used within the prior 72 hours (reference §3.2).
DUPLICATE_MESSAGE_KEY = "109110"
# MC's limits per request (reference §3.2, §4.1): Transactional Messaging takes 2,000 recipients
# (500 recommended when they carry attributes, as ours do), MobileConnect 250 Subscribers.
MAX_TRANSACTIONAL_RECIPIENTS = 500
MAX_SMS_SUBSCRIBERS = 250


@dataclass(frozen=True)
class TransactionalRecipient:
    """One recipient of a multi-recipient Transactional Messaging request; for SMS `to` is the number."""

    message_key: str
    contact_key: str
    to: str
    attributes: Mapping[str, str]


@dataclass(frozen=True)
class SmsSubscriber:
    """One entry of MobileConnect's `Subscribers`: the stored message text renders its attributes."""

    mobile: str  # MC's form: the country code and digits, no "+" (sms_digits)
    subscriber_key: str
    attributes: Mapping[str, str]


def sms_digits(mobile: str) -> str | None:
    """A number in MobileConnect's form (country code and digits only, no "+", §4.1), or None when it
    has anything else: MC would refuse it, and with it the whole request it rode in."""
    digits = mobile.strip().removeprefix("+")
    return digits if digits.isascii() and digits.isdigit() else None


@dataclass(frozen=True)
class TransactionalStatus:
    """`GET /messaging/v1/{channel}/messages/{messageKey}`: `state` is Sent, NotSent or Queued."""

    state: str
    request_id: str = ""
    status_code: str = ""
    status_message: str = ""

    @property
    def accepted(self) -> bool:
        """MC has the message and sends it (Queued) or sent it."""
        return self.state in ("Sent", "Queued")


class RestClient:
    """Stateless wrapper over the REST routes; it never retries except once after a 401.

    The caller owns the retry policy: every failure surfaces as TransientMCError or
    PermanentMCError so it can back off or give up.
    """

    def __init__(self, tokens: TokenManager, http: httpx.AsyncClient, *, from_address: str = "") -> None:
        self._tokens = tokens
        self._http = http
        self._from_address = from_address

    async def send_email(
        self,
        definition_key: str,
        *,
        to: str,
        subscriber_key: str,
        from_name: str | None = None,
        from_address: str | None = None,
        attributes: Mapping[str, str] | None = None,
    ) -> SendReceipt:
        sender: dict[str, str] = {}
        if from_address or self._from_address:
            sender["Address"] = from_address or self._from_address
        if from_name:
            sender["Name"] = from_name
        recipient: dict[str, Any] = {"Address": to, "SubscriberKey": subscriber_key}
        if attributes:
            recipient["ContactAttributes"] = {"SubscriberAttributes": dict(attributes)}
        body: dict[str, Any] = {"To": recipient, "Options": {"RequestType": "SYNC"}}
        if sender:
            body["From"] = sender
        path = f"messaging/v1/messageDefinitionSends/key:{quote(definition_key, safe='')}/send"
        response = await self._request("POST", path, body)
        return _email_receipt(_json(response))

    async def send_sms(
        self,
        message_id: str,
        *,
        mobile_e164: str,
        text: str,
        subscriber_key: str = "",
        attributes: Mapping[str, str] | None = None,
        blackout_window: Mapping[str, str] | None = None,
        subscribe_keyword: str | None = None,
    ) -> SendReceipt:
        """Send `text` to one number. `attributes` (e.g. NotificationId, which MC then writes to the
        SMSSendLog data extension) travel only with a `subscriber_key`: MobileConnect takes
        attributes in its Subscribers form alone, and that form requires a key.

        `subscribe_keyword`: `Subscribe: true` with this keyword, so MC subscribes a number that has
        no subscription to the code yet (MobileConnect delivers only to subscribed numbers, §4.1). A
        number that texted STOP stays unsubscribed: no `Resubscribe`.

        `blackout_window` (`{"UtcOffset", "WindowStart", "WindowEnd"}`, reference §4.1): MC holds a
        message sent inside the window and sends it when the window ends; the answer is the same
        202 and tokenId either way."""
        # MobileConnect wants the country code and digits only; a "+" or separators are refused.
        digits = sms_digits(mobile_e164)
        if digits is None:
            raise PermanentMCError("mobile number is not E.164 digits", code="InvalidPhoneNumber")
        # With a subscriber key MC ties the SMS to the contact (its history, its opt-outs).
        recipients: dict[str, Any]
        if subscriber_key:
            recipient: dict[str, Any] = {"MobileNumber": digits, "SubscriberKey": subscriber_key}
            if attributes:
                recipient["Attributes"] = dict(attributes)
            recipients = {"Subscribers": [recipient]}
        else:
            recipients = {"mobileNumbers": [digits]}
        body = {**recipients, "Override": True, "messageText": text}
        return await self._message_contact(message_id, body, blackout_window, subscribe_keyword)

    async def send_sms_subscribers(
        self,
        message_id: str,
        subscribers: Sequence[SmsSubscriber],
        *,
        blackout_window: Mapping[str, str] | None = None,
        subscribe_keyword: str | None = None,
    ) -> SendReceipt:
        """One MobileConnect request for up to 250 `Subscribers` (§4.1), without `Override`: MC sends
        the message's stored text, rendering each subscriber's `Attributes` (README, "Batched sends").
        One tokenId for all of them; the deliveries of that token list each number's own tracking
        (§4.2). MC's refusals are request-level 400s (`{"errors": [...]}`): one bad number fails the
        whole request, so the caller sends only numbers in MC's form (sms_digits)."""
        if not 1 <= len(subscribers) <= MAX_SMS_SUBSCRIBERS:
            raise ValueError(f"1 to {MAX_SMS_SUBSCRIBERS} subscribers per request, not {len(subscribers)}")
        entries: list[dict[str, Any]] = []
        for subscriber in subscribers:
            if sms_digits(subscriber.mobile) != subscriber.mobile:
                raise ValueError(f"not in MobileConnect's form: {subscriber.mobile!r} (use sms_digits)")
            entry: dict[str, Any] = {
                "MobileNumber": subscriber.mobile,
                "SubscriberKey": subscriber.subscriber_key,
            }
            if subscriber.attributes:
                entry["Attributes"] = dict(subscriber.attributes)
            entries.append(entry)
        return await self._message_contact(
            message_id, {"Subscribers": entries}, blackout_window, subscribe_keyword
        )

    async def _message_contact(
        self,
        message_id: str,
        body: dict[str, Any],
        blackout_window: Mapping[str, str] | None,
        subscribe_keyword: str | None,
    ) -> SendReceipt:
        """POST a MobileConnect send (§4.1); its tokenId is the receipt's request id."""
        if subscribe_keyword:
            body["Subscribe"] = True
            body["keyword"] = subscribe_keyword
        if blackout_window:
            body["blackoutWindow"] = dict(blackout_window)
        path = f"sms/v1/messageContact/{quote(message_id, safe='')}/send"
        response = await self._request("POST", path, body)
        payload = _json(response)
        token_id = payload.get("tokenId") if isinstance(payload, dict) else None
        if not token_id:
            raise PermanentMCError("SMS send answered without a tokenId", code=response.status_code)
        return SendReceipt(request_id=str(token_id))

    async def sms_deliveries(self, message_id: str, token_id: str) -> dict[str, Any]:
        """MobileConnect's delivery status of one send (§4.2): `status` (New, Queuing, Started,
        Finished, Error), `count` (the numbers minus the unsubscribed ones) and `tracking`, whose
        entry with the highest standardStatusCode is the final state. An unknown token is a
        PermanentMCError (400)."""
        path = f"sms/v1/messageContact/{quote(message_id, safe='')}/deliveries/{quote(token_id, safe='')}"
        payload = _json(await self._request("GET", path, None))
        if not isinstance(payload, dict):
            raise PermanentMCError("SMS deliveries answered with an unexpected body")
        return payload

    async def send_transactional(
        self,
        channel: str,
        definition_key: str,
        message_key: str,
        *,
        to: str,
        contact_key: str,
        attributes: Mapping[str, str] | None = None,
        text: str | None = None,
    ) -> SendReceipt:
        """One message through the Transactional Messaging API (`POST /messaging/v1/{email|sms}/
        messages/{messageKey}`, reference §3.2). `messageKey` is the caller's idempotency key: MC
        refuses a key used in the prior 72 hours with 109110, raised as DuplicateMessageKeyError.
        `text` (SMS) overrides the definition's content; for SMS `to` is the mobile number."""
        if channel == "sms":
            digits = sms_digits(to)
            if digits is None:
                raise PermanentMCError("mobile number is not E.164 digits", code="InvalidPhoneNumber")
            to = digits
        recipient: dict[str, Any] = {"contactKey": contact_key, "to": to}
        if attributes:
            recipient["attributes"] = dict(attributes)
        body: dict[str, Any] = {"definitionKey": definition_key, "recipient": recipient}
        if text is not None:
            body["content"] = {"message": text}
        path = f"messaging/v1/{channel}/messages/{quote(message_key, safe='')}"
        try:
            response = await self._request("POST", path, body)
        except PermanentMCError as exc:
            if str(exc.code) == DUPLICATE_MESSAGE_KEY:
                raise DuplicateMessageKeyError(exc.reason, exc.code) from exc
            raise
        return _transactional_receipt(_json(response), message_key)

    async def send_transactional_many(
        self, channel: str, definition_key: str, recipients: Sequence[TransactionalRecipient]
    ) -> list[SendReceipt | PermanentMCError]:
        """Many messages of one definition in one request (`POST /messaging/v1/{channel}/messages/`,
        `recipients`, reference §3.2), each under its own messageKey; no `content` override (SMS: the
        definition's stored text renders each recipient's attributes). One result per recipient, in
        order, from its own `responses[]` item: a SendReceipt, DuplicateMessageKeyError (109110) or
        PermanentMCError. A request-level failure (429, 5xx, a timeout, an answer without responses)
        raises for all. SMS numbers not in MC's form are refused here, not sent."""
        if len(recipients) > MAX_TRANSACTIONAL_RECIPIENTS:
            raise ValueError(f"at most {MAX_TRANSACTIONAL_RECIPIENTS} recipients per request")
        results: list[SendReceipt | PermanentMCError | None] = [None] * len(recipients)
        body_recipients: list[dict[str, Any]] = []
        sent: list[int] = []  # the index in `recipients` of each recipient of the request
        for index, r in enumerate(recipients):
            to = r.to
            if channel == "sms":
                digits = sms_digits(r.to)
                if digits is None:
                    results[index] = PermanentMCError(
                        "mobile number is not E.164 digits", code="InvalidPhoneNumber"
                    )
                    continue
                to = digits
            item: dict[str, Any] = {"contactKey": r.contact_key, "to": to, "messageKey": r.message_key}
            if r.attributes:
                item["attributes"] = dict(r.attributes)
            body_recipients.append(item)
            sent.append(index)
        if body_recipients:
            body = {"definitionKey": definition_key, "recipients": body_recipients}
            # MC answers 400 when no recipient was queued; its responses still say why, each its own.
            response = await self._request("POST", f"messaging/v1/{channel}/messages/", body, answers=(400,))
            payload = _json(response)
            items = payload.get("responses") if isinstance(payload, dict) else None
            if not isinstance(items, list) or len(items) != len(sent):
                if response.status_code == 400:
                    _raise_for_status(response, f"POST messaging/v1/{channel}/messages/", force=True)
                raise TransientMCError(
                    f"transactional send answered {len(items) if isinstance(items, list) else 'no'} "
                    f"responses for {len(sent)} recipients"
                )
            request_id = str(payload.get("requestId") or "")
            by_key = {str(i.get("messageKey")): i for i in items if isinstance(i, dict)}
            for position, index in enumerate(sent):
                key = recipients[index].message_key
                answer = by_key.get(key, items[position])
                results[index] = _recipient_result(answer, request_id, key)
        return [r if r is not None else PermanentMCError("no result") for r in results]

    async def transactional_status(self, channel: str, message_key: str) -> TransactionalStatus | None:
        """The message's status at MC, or None when MC has no message with this key (404)."""
        path = f"messaging/v1/{channel}/messages/{quote(message_key, safe='')}"
        try:
            payload = _json(await self._request("GET", path, None))
        except PermanentMCError as exc:
            if exc.code in (404, 30003, "30003"):
                return None
            raise
        if not isinstance(payload, dict):
            raise TransientMCError("message status answered with an unexpected body")
        category = str(payload.get("eventCategoryType") or "").rsplit(".", 1)[-1]
        state = category.removeprefix("Email").removeprefix("SMS").removeprefix("Sms")
        if state not in ("Sent", "NotSent", "Queued"):
            raise TransientMCError(f"message status {category!r} not understood")
        info = payload.get("info")
        if not isinstance(info, dict):
            info = {}  # a queued message's status has none
        return TransactionalStatus(
            state=state,
            request_id=str(payload.get("requestId") or ""),
            status_code=str(info.get("statusCode") or ""),
            status_message=str(info.get("statusMessage") or ""),
        )

    async def register_callback(self, name: str, url: str, *, max_batch_size: int = 1000) -> tuple[str, str]:
        """Register an ENS callback; returns (callbackId, signatureKey).

        MC shows the signature key only in this answer, so the caller must store it.
        """
        body = [{"callbackName": name, "url": url, "maxBatchSize": max_batch_size}]
        payload = _json(await self._request("POST", "platform/v1/ens-callbacks", body))
        item = payload[0] if isinstance(payload, list) and payload else payload
        try:
            return str(item["callbackId"]), str(item["signatureKey"])
        except (KeyError, TypeError) as exc:
            raise PermanentMCError("ENS callback registration answered without callbackId") from exc

    async def delete_callback(self, callback_id: str) -> None:
        await self._request("DELETE", f"platform/v1/ens-callbacks/{callback_id}", None)

    async def verify_callback(self, callback_id: str, verification_key: str) -> None:
        body = {"callbackId": callback_id, "verificationKey": verification_key}
        await self._request("POST", "platform/v1/ens-verify", body)

    async def subscribe(
        self,
        callback_id: str,
        name: str,
        event_types: Sequence[str],
        *,
        filters: Sequence[str] = (),
    ) -> str:
        """Subscribe a verified callback to event types; returns the subscriptionId."""
        body = [
            {
                "callbackId": callback_id,
                "subscriptionName": name,
                "eventCategoryTypes": list(event_types),
                "filters": list(filters),
            }
        ]
        payload = _json(await self._request("POST", "platform/v1/ens-subscriptions", body))
        item = payload[0] if isinstance(payload, list) and payload else payload
        return str(item.get("subscriptionId", "")) if isinstance(item, dict) else ""

    async def _request(
        self, method: str, path: str, body: Any, answers: tuple[int, ...] = ()
    ) -> httpx.Response:
        """The response, or the error its status means; a status in `answers` is returned as it is."""
        for attempt in (1, 2):
            token = await self._tokens.token()
            url = f"{self._tokens.rest_base}{path}"
            try:
                response = await self._http.request(
                    method, url, json=body, headers={"Authorization": f"Bearer {token}"}
                )
            except httpx.TimeoutException as exc:
                raise TransientMCError(f"{method} {path}: timed out ({type(exc).__name__})") from exc
            except httpx.TransportError as exc:
                raise TransientMCError(f"{method} {path}: {type(exc).__name__}") from exc
            if response.status_code == 401:
                # The token may have expired early or been revoked: one fresh token, then give up.
                self._tokens.invalidate(token)
                if attempt == 1:
                    continue
                raise AuthError(f"{method} {path}: MC rejected a fresh token", code=401)
            if response.status_code not in answers:
                _raise_for_status(response, f"{method} {path}")
            return response
        raise AssertionError("unreachable")


def verify_ens_signature(body: bytes, header: str | None, key: str) -> bool:
    """Check ENS's `x-sfmc-ens-signature`: base64 HMAC-SHA256 of the raw body, keyed with the
    signature key's UTF-8 bytes (not base64-decoded)."""
    if not header or not key:
        return False
    expected = base64.b64encode(hmac.new(key.encode("utf-8"), body, hashlib.sha256).digest())
    return hmac.compare_digest(expected, header.strip().encode("ascii", "replace"))


def _json(response: httpx.Response) -> Any:
    if not response.content:
        return {}
    try:
        return response.json()
    except ValueError as exc:
        raise TransientMCError(f"HTTP {response.status_code} with a body that is not JSON") from exc


def _raise_for_status(response: httpx.Response, what: str, *, force: bool = False) -> None:
    status = response.status_code
    if status < 400 and not force:
        return
    message, code, body_retry = _error_fields(response)
    if status == 429 or status >= 500 or status == 408:
        retry_after = parse_retry_after(response.headers.get("Retry-After"))
        if retry_after is None:
            retry_after = body_retry
        reason = f"{what}: HTTP {status} {message}".rstrip()
        if status == 429 and str(code) == "50200":  # the account's calls blocked (reference §6)
            raise BlockedMCError(reason)
        if status == 429:
            raise ThrottledMCError(reason, retry_after=retry_after)
        raise TransientMCError(reason, retry_after=retry_after)
    raise PermanentMCError(
        f"{what}: HTTP {status} {message}".rstrip(), code=code if code is not None else status
    )


def _error_fields(response: httpx.Response) -> tuple[str, int | str | None, float | None]:
    try:
        body = response.json()
    except ValueError:
        return response.reason_phrase, None, None
    if not isinstance(body, dict):
        return response.reason_phrase, None, None
    # MobileConnect answers {"errors": [...]}, the platform {"message", "errorcode"}.
    errors = body.get("errors")
    if isinstance(errors, list) and errors:
        message = "; ".join(str(e.get("message", e)) if isinstance(e, dict) else str(e) for e in errors)
    else:
        message = str(body.get("message") or body.get("error_description") or response.reason_phrase)
    code = body.get("errorcode", body.get("errorCode"))
    retry = body.get("retryAfter")
    try:
        retry_after = float(retry) if retry is not None else None
    except (TypeError, ValueError):
        retry_after = None
    return message, code, retry_after


def _email_receipt(payload: Any) -> SendReceipt:
    if not isinstance(payload, dict):
        raise PermanentMCError("triggered send answered with an unexpected body")
    responses = payload.get("responses")
    # A missing or invalid To.Address comes back unwrapped, without `responses`.
    item = responses[0] if isinstance(responses, list) and responses else payload
    if not isinstance(item, dict):
        raise PermanentMCError("triggered send answered with an unexpected body")
    if item.get("hasErrors"):
        raise _send_refusal(item)
    request_id = str(payload.get("requestId") or item.get("recipientSendId") or "")
    if not request_id:
        raise PermanentMCError("triggered send answered without a requestId")
    return SendReceipt(
        request_id=request_id, recipient_send_id=str(item.get("recipientSendId") or request_id)
    )


def _transactional_receipt(payload: Any, message_key: str) -> SendReceipt:
    if not isinstance(payload, dict):
        raise PermanentMCError("transactional send answered with an unexpected body")
    responses = payload.get("responses")
    item = responses[0] if isinstance(responses, list) and responses else {}
    result = _recipient_result(item, str(payload.get("requestId") or ""), message_key)
    if isinstance(result, PermanentMCError):
        raise result
    return result


def _recipient_result(item: Any, request_id: str, message_key: str) -> SendReceipt | PermanentMCError:
    """One `responses[]` item of a multi-recipient send: accepted, or its own refusal."""
    if not isinstance(item, dict):
        return PermanentMCError("transactional send answered with an unexpected response")
    # The docs' examples spell the per-response code `errorcode`, the OpenAPI spec `errorCode`.
    code = item.get("errorcode", item.get("errorCode"))
    if code not in (None, 0, "0"):
        reason = str(item.get("message") or f"transactional send refused ({code})")
        if str(code) == DUPLICATE_MESSAGE_KEY:
            return DuplicateMessageKeyError(reason, code)
        return PermanentMCError(reason, code=code)
    if not request_id:
        return PermanentMCError("transactional send answered without a requestId")
    return SendReceipt(request_id=request_id, recipient_send_id=message_key)


def _send_refusal(item: Mapping[str, Any]) -> PermanentMCError:
    reasons: list[str] = []
    code: int | str | None = None
    subscriber_code: int | None = None
    for error in item.get("messageErrors") or []:
        if not isinstance(error, dict):
            continue
        error_code = error.get("messageErrorCode")
        if code is None:
            code = error_code
        elif subscriber_code is None and isinstance(error_code, int):
            subscriber_code = error_code
        status = error.get("messageErrorStatus")
        if status:
            reasons.append(str(status))
    messages = [str(m) for m in item.get("messages") or []]
    if code is None and messages:
        code = messages[0]
    reasons.extend(m for m in messages if m not in reasons)
    return PermanentMCError(
        "; ".join(reasons) or "triggered send refused", code=code, subscriber_code=subscriber_code
    )
