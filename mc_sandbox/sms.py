"""MobileConnect ``/sms/v1/messageContact/{messageId}/send``, its deliveries, and ``queueMO`` (§4).

A send is accepted (202 + tokenId) and its numbers delivered at send time, ``--send-log-delay`` seconds
later: those subscribed to the message's keyword then (mobile_subscriptions.py) get it (an SMSMTEvent,
an SMSSendLog row, tracking entries in the deliveries), the others are left out of the deliveries'
``count`` and get nothing. Until the send time the deliveries read ``Queuing`` with no tracking.
A send made inside its ``blackoutWindow`` (blackout.py) has its send time at the window's end.
Dates are in MC's CST with no zone suffix.
"""

from __future__ import annotations

import secrets
from datetime import timedelta
from typing import Any

from aiohttp import web

from . import blackout, mobile_subscriptions
from .context import Sandbox, sandbox_of
from .http import not_authorized, read_json, rest_authorized
from .sendlog import log_sms
from .state import Message, SmsSend, TrackingEvent, cst, utcnow
from .templates import SMS_DEFINITIONS, render

MAX_SUBSCRIBERS = 250


def _bool(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() == "true"
    return value is True


def _errors(*errors: str) -> web.Response:
    return web.json_response({"errors": list(errors)}, status=400)


async def send_handler(request: web.Request) -> web.Response:
    sb = sandbox_of(request)
    if not rest_authorized(request):
        return not_authorized()
    body, err = await read_json(request)
    if err:
        return err
    message_id = request.match_info["message_id"]
    definition = SMS_DEFINITIONS.get(message_id)
    if definition is None:
        return _errors(f"Message id {message_id} is not valid.")
    if not isinstance(body, dict):
        return _errors("The request body must be a JSON object.")
    # .NET JSON binding: field names are case-insensitive.
    fields = {str(k).lower(): v for k, v in body.items()}
    numbers_raw = fields.get("mobilenumbers")
    subscribers_raw = fields.get("subscribers")
    errors: list[str] = []
    if numbers_raw and subscribers_raw:
        return _errors(
            "An array of mobile numbers and an array of subscribers cannot be provided at the same time."
        )
    recipients: list[tuple[str, str, dict[str, str]]] = []  # (number, subscriber key, attributes)
    if subscribers_raw:
        if not isinstance(subscribers_raw, list):
            return _errors("Subscribers must be an array.")
        if len(subscribers_raw) > MAX_SUBSCRIBERS:
            return _errors(f"The count of subscribers cannot exceed {MAX_SUBSCRIBERS}.")
        for entry in subscribers_raw:
            e = {str(k).lower(): v for k, v in entry.items()} if isinstance(entry, dict) else {}
            number, key = e.get("mobilenumber"), e.get("subscriberkey")
            if not number or not key:
                errors.append(
                    "A subscriber object must have both a mobile number and subscriber key defined."
                )
                continue
            attrs = e.get("attributes") if isinstance(e.get("attributes"), dict) else {}
            recipients.append((str(number), str(key), {str(k): str(v) for k, v in (attrs or {}).items()}))
    elif numbers_raw:
        if not isinstance(numbers_raw, list):
            return _errors("mobileNumbers must be an array.")
        recipients = [(str(n), "", {}) for n in numbers_raw]
    else:
        return _errors("The count of mobile numbers or subscribers cannot be zero.")
    for number, _key, _attrs in recipients:
        if not number.isascii() or not number.isdigit():
            errors.append(f"{number} is not a numeric string")
    override = _bool(fields.get("override"))
    text_raw = fields.get("messagetext")
    if override and (not isinstance(text_raw, str) or not text_raw.strip()):
        errors.append("Cannot override message text with a blank message.")
    if not override and text_raw is not None:
        errors.append("MessageText is not applicable when Override is false.")
    subscribe = _bool(fields.get("subscribe")) or _bool(fields.get("resubscribe"))
    keyword = fields.get("keyword")
    if subscribe and not keyword:
        errors.append("Keyword cannot be blank when Subscribe or Resubscribe are true.")
    if not subscribe and keyword:
        errors.append("Keyword is not necessary when Subscribe and Resubscribe are false.")
    if keyword and str(keyword).upper() != definition.keyword.upper():
        errors.append(f"Keyword {keyword} is invalid for the code on the message.")
    try:
        window = blackout.parse(fields.get("blackoutwindow"))
    except blackout.BlackoutError as exc:
        errors.append(str(exc))
    if errors:
        return _errors(*errors)
    if subscribe:
        create, reset = _bool(fields.get("subscribe")), _bool(fields.get("resubscribe"))
        for number, _key, _attrs in recipients:
            mobile_subscriptions.subscribe(sb.state, number, definition.keyword, create=create, reset=reset)

    token_id = secrets.token_urlsafe(18)
    messages: list[Message] = []
    for number, key, attrs in recipients:
        msg = Message(
            id=f"{token_id}:{number}",
            channel="sms",
            definition_key=message_id,
            subscriber_key=key,
            to=number,
            from_name=None,
            attributes=attrs,
            text=str(text_raw) if override else render(definition.text, attrs),
            api="sms",
        )
        sb.state.messages.append(msg)
        sb.state.bump("sms_accepted")
        messages.append(msg)
    send = SmsSend(
        token_id=token_id, message_id=message_id, numbers=[r[0] for r in recipients], text=messages[0].text
    )
    sb.state.sms_sends[token_id] = send
    # Sent inside its blackout window, the request waits in MC's queue for the window's end.
    held_until = window.hold_until(utcnow()) if window else None
    if held_until is None:
        sb.state.later(
            sb.state.config.send_log_delay, lambda: _deliver(sb, send, messages, definition.keyword)
        )
    else:
        for msg in messages:
            msg.status, msg.scheduled_for = "scheduled", held_until
        sb.state.bump("sms_scheduled")
        sb.holds.hold(held_until, lambda: _deliver(sb, send, messages, definition.keyword))
    return web.json_response({"tokenId": token_id}, status=202)


def _deliver(sb: Sandbox, send: SmsSend, messages: list[Message], keyword: str) -> None:
    """Send time: the numbers subscribed to the keyword now get the message, the others nothing."""
    state = sb.state
    send.sent_at = utcnow()
    job = state.job_of(f"sms:{send.message_id}")
    for msg in messages:
        msg.sent_at = send.sent_at
        if not mobile_subscriptions.deliverable(state, msg.to, keyword):
            msg.status = "not_delivered"
            state.bump("sms_not_delivered")
            continue
        msg.status = "delivered"
        send.delivered.append(msg.to)
        state.events.append(
            TrackingEvent(
                kind="SMSMTEvent",
                subscriber_key=msg.subscriber_key,
                event_date=send.sent_at,
                send_id=job,
                definition_key=send.message_id,
                definition_object_id="",
                message_id=msg.id,
            )
        )
        log_sms(state, msg, send.token_id)


async def deliveries_handler(request: web.Request) -> web.Response:
    sb = sandbox_of(request)
    if not rest_authorized(request):
        return not_authorized()
    message_id = request.match_info["message_id"]
    token_id = request.match_info["token_id"]
    if message_id not in SMS_DEFINITIONS:
        return _errors(f"Message id {message_id} is not valid.")
    send = sb.state.sms_sends.get(token_id)
    if send is None:
        return _errors(f"Token id {token_id} is not valid.")
    if send.message_id != message_id:
        return _errors(f"TokenId {token_id} is not valid for MessageId {message_id}.")
    if send.sent_at is None:
        # Accepted, not sent yet: MC shows the request queuing, with no carrier tracking.
        return web.json_response(
            {
                "message": send.text,
                "count": len(send.numbers),
                "createDate": cst(send.created_at),
                "status": "Queuing",
                "tracking": [],
            }
        )
    tracking: list[dict[str, str]] = []
    for number in send.delivered:
        # Carrier order, not time order: the final state is the highest standardStatusCode.
        tracking.append(
            {
                "mobileNumber": number,
                "statusCode": "200",
                "message": "Carrier Success",
                "standardStatusCode": "4000",
                "description": "Delivered to handset",
            }
        )
        tracking.append(
            {
                "mobileNumber": number,
                "statusCode": "0",
                "message": "DELIVERED TO AGGREGATOR",
                "standardStatusCode": "2000",
                "description": "Message was Delivered to Aggregator",
            }
        )
    return web.json_response(
        {
            "message": send.text,
            # The numbers minus the unsubscribed ones (§4.2).
            "count": len(send.delivered),
            "createDate": cst(send.created_at),
            "completeDate": cst(send.sent_at + timedelta(milliseconds=50)),
            "status": "Finished",
            "tracking": tracking,
        }
    )


async def queue_mo_handler(request: web.Request) -> web.Response:
    """``POST /sms/v1/queueMO``: numbers texting ``messageText`` to ``shortCode`` (opt-in/out flows).

    The code's keyword subscribes them; a stop word unsubscribes them from every keyword of the code;
    any other text changes nothing. Error wordings are the sandbox's own [INF].
    """
    sb = sandbox_of(request)
    if not rest_authorized(request):
        return not_authorized()
    body, err = await read_json(request)
    if err:
        return err
    if not isinstance(body, dict):
        return _errors("The request body must be a JSON object.")
    fields = {str(k).lower(): v for k, v in body.items()}
    numbers = fields.get("mobilenumbers")
    code = str(fields.get("shortcode") or "")
    text = str(fields.get("messagetext") or "").strip().upper()
    keywords = {d.keyword.upper() for d in SMS_DEFINITIONS.values() if d.short_code == code}
    if not isinstance(numbers, list) or not numbers:
        return _errors("The count of mobile numbers cannot be zero.")
    bad = [str(n) for n in numbers if not str(n).isascii() or not str(n).isdigit()]
    if bad:
        return _errors(*(f"{n} is not a numeric string" for n in bad))
    if not keywords:
        return _errors(f"Short code {code} is not valid.")
    if not text:
        return _errors("MessageText cannot be blank.")
    for number in (str(n) for n in numbers):
        if text in keywords:
            mobile_subscriptions.subscribe(sb.state, number, text, create=True, reset=True)
        elif text in mobile_subscriptions.STOP_WORDS:
            mobile_subscriptions.stop(sb.state, number, keywords)
    return web.json_response({"tokenId": secrets.token_urlsafe(18)}, status=202)
