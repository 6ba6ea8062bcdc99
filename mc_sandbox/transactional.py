"""Transactional Messaging API (reference §3.2): email and SMS messages tracked by ``messageKey``.

Routes (``{channel}`` is ``email`` or ``sms``):

- ``POST /messaging/v1/{channel}/messages/{messageKey}``: one recipient (``recipient``).
- ``POST /messaging/v1/{channel}/messages/``: up to 2,000 ``recipients``, each answered in
  ``responses[]`` in request order (a missing ``messageKey`` is generated).
- ``GET /messaging/v1/{channel}/messages/{messageKey}``: the message's status.
- ``GET /messaging/v1/{channel}/messages/?type=notSent&$pageSize=&lastEventId=``: messages not sent.
- ``GET /messaging/v1/{channel}/definitions`` and ``/definitions/{definitionKey}`` (read-only: the
  sandbox's definitions are fixed, see templates.py).

Rules, as MC's (§3.2): answers are 202, refusals per recipient inside them (``errorcode`` 109001 when
some failed); a ``messageKey`` used in the prior 72 hours, or twice in one request, is refused with
``109110 MCMS_UTM_Validation_DuplicateMessageKey``; ``contactKey`` is required (109105), ``to`` too
(109106); more than 2,000 recipients is 109101. An unknown contact is added (the definitions'
``autoAddSubscriber``), a known one is not updated. At send time (``--send-log-delay`` after
acceptance) a Held subscriber is not sent to (``EmailNotSent``, statusCode 2); an Unsubscribed one is
(a transactional classification); an inactive definition keeps its messages queued. The address's fate
follows as for classic sends (outcomes.py). SMS: a number that STOPped the definition's keyword is not
sent to unless ``subscriptions.resubscribe``; one with no subscription is added. An email's From.Name
is its definition's sender profile From Name, which reads the ``FromName`` attribute
(templates.FROM_NAME_AMPSCRIPT); an SMS's ``content.message`` overrides the definition's text.

Everything that happens is reported through ENS (ens_events.py) and the status route; nothing is
written to the send logs or the SOAP tracking objects.

Modelling choices [INF]: a request whose every recipient was refused (or a single send refused) is
answered 400 with the refusal's code at the top level; status timestamps are MC's CST, no zone suffix.
"""

from __future__ import annotations

import base64
import secrets
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from aiohttp import web

from . import ens_events, mobile_subscriptions
from .context import Sandbox, sandbox_of
from .http import field as ci_field
from .http import not_authorized, read_json, rest_authorized, rest_error
from .outcomes import BOUNCES, Outcome, apply_to_subscriber, outcome_for
from .state import Message, cst, utcnow, valid_email
from .templates import TX_DEFINITIONS, TransactionalDefinition, render

MAX_RECIPIENTS = 2000
MAX_KEY_LENGTH = 100
KEY_REUSE_WINDOW = timedelta(hours=72)
EVENT_PREFIX = "TransactionalSendEvents."
# The status route's names (§3.2) differ from ENS's for SMS (SMSSent there, SmsSent in ENS).
STATUS_NAMES = {"email": "Email", "sms": "SMS"}


@dataclass
class TxMessage:
    """A message accepted by this API, as its status route and the notSent list see it."""

    msg: Message
    definition: TransactionalDefinition
    channel: str
    accepted_at: datetime
    ids: tuple[int, int, int] = (0, 0, 0)  # jobId, batchId, subscriberId once sent
    status: str = "Queued"  # Queued | Sent | NotSent
    timestamp: datetime = field(default_factory=utcnow)
    status_code: int | None = None
    status_message: str | None = None
    resubscribe: bool = False

    def status_json(self, request_id: str) -> dict[str, Any]:
        out: dict[str, Any] = {
            "requestId": request_id,
            "eventCategoryType": f"{EVENT_PREFIX}{STATUS_NAMES[self.channel]}{self.status}",
            "timestamp": cst(self.timestamp),
        }
        if self.status == "Queued":
            return out  # queued responses have no info and no compositeId
        job, batch, sub = self.ids
        out["compositeId"] = f"{self.definition.definition_id}.{job}.{ens_events.LIST_ID}.{batch}.{sub}"
        info: dict[str, Any] = {
            "messageKey": self.msg.id,
            "contactKey": self.msg.subscriber_key,
            "to": self.msg.to,
        }
        if self.status == "NotSent":
            info["statusCode"] = self.status_code
            info["statusMessage"] = self.status_message
        out["info"] = info
        return out


@dataclass(frozen=True)
class Refused:
    errorcode: int
    message: str


def _code(errorcode: int, name: str, text: str) -> Refused:
    return Refused(errorcode, f"{name}: {text}")


def _generated_key() -> str:
    # MC's generated keys look like "GV1LhQ6NFkqFUAE1IsoQ9Q": 16 random bytes, base64url, unpadded.
    return base64.urlsafe_b64encode(secrets.token_bytes(16)).rstrip(b"=").decode()


def _definition(channel: str, body: dict[str, Any]) -> TransactionalDefinition | Refused:
    key = ci_field(body, "definitionKey")
    if not isinstance(key, str) or not key:
        return _code(
            109107, "MCMS_UTM_Validation_MissingRequiredField_definitionKey", "definitionKey is required"
        )
    definition = TX_DEFINITIONS[channel].get(key)
    if definition is None:
        return _code(109111, "MCMS_UTM_Validation_InvalidValue_definitionKey", f"no definition '{key}'")
    return definition


def _check_recipient(sb: Sandbox, channel: str, recipient: Any, key: str, seen: set[str]) -> Refused | None:
    if len(key) > MAX_KEY_LENGTH or not key.strip():
        return _code(109108, "MCMS_UTM_Validation_InvalidValue_messageKey", "Invalid messageKey")
    if key in seen or _recently_used(sb, key):
        return _code(109110, "MCMS_UTM_Validation_DuplicateMessageKey", "Duplicate messageKey")
    contact = ci_field(recipient, "contactKey")
    if not isinstance(contact, str) or not contact:
        return _code(109105, "MCMS_UTM_Validation_MissingRequiredField_subscriberKey", "Invalid subscriber")
    to = ci_field(recipient, "to")
    if not isinstance(to, str) or not to:
        return _code(109106, "MCMS_UTM_Validation_MissingRequiredField_to", "Invalid subscriber")
    valid = valid_email(to) if channel == "email" else to.isascii() and to.isdigit()
    if not valid:
        return _code(109121, "MCMS_UTM_Validation_InvalidValue_to", "Invalid subscriber")
    return None


def _recently_used(sb: Sandbox, key: str) -> bool:
    tx = sb.state.tx_messages.get(key)
    return tx is not None and utcnow() - tx.accepted_at < KEY_REUSE_WINDOW


def _attributes(raw: Any) -> dict[str, str]:
    if not isinstance(raw, dict):
        return {}
    return {str(k): "" if v is None else str(v) for k, v in raw.items()}


def _accept(
    sb: Sandbox,
    channel: str,
    definition: TransactionalDefinition,
    recipient: dict[str, Any],
    key: str,
    shared: dict[str, str],
    resubscribe: bool,
    content: str = "",
) -> None:
    state = sb.state
    contact = str(ci_field(recipient, "contactKey"))
    to = str(ci_field(recipient, "to"))
    attrs = {**shared, **_attributes(ci_field(recipient, "attributes"))}
    if channel == "email" and contact not in state.subscribers:
        state.upsert_subscriber(contact, to)  # the definition's autoAddSubscriber
    sub = state.subscribers.get(contact)
    merged = {**(sub.attributes if sub else {}), **attrs}
    msg = Message(
        id=key,
        channel=channel,
        definition_key=definition.key,
        subscriber_key=contact,
        to=to,
        from_name=definition.from_name(merged),
        attributes=attrs,
        text=render(content or definition.text, merged),
        api="transactional" if channel == "email" else "transactional-sms",
    )
    state.messages.append(msg)
    state.bump("transactional_accepted")
    tx = TxMessage(msg, definition, channel, accepted_at=msg.received_at, resubscribe=resubscribe)
    state.tx_messages[key] = tx
    if definition.status == "Active":
        state.later(state.config.send_log_delay, lambda: _send(sb, tx))


def _send(sb: Sandbox, tx: TxMessage) -> None:
    state, msg, definition = sb.state, tx.msg, tx.definition
    sub = state.subscribers.get(msg.subscriber_key)
    tx.ids = (
        state.job_of(f"tx:{tx.channel}:{definition.key}"),
        state.next_batch(f"tx:{tx.channel}:{definition.key}"),
        sub.id if sub else 0,
    )
    msg.sent_at = tx.timestamp = utcnow()
    if tx.channel == "sms":
        _send_sms(sb, tx)
        return
    if sub is not None and sub.status == "Held":
        _not_sent(sb, tx, 2, "Held", "The subscriber's status is held.")
        return
    tx.status, msg.status = "Sent", "sent"
    info = ens_events.sent_info(msg, definition.subject)
    ens_events.emit(sb, ens_events.SENT, msg, definition.definition_id, tx.ids, info)
    outcome = outcome_for(state.config, msg.to)
    if outcome is not Outcome.DELIVERED:
        state.later(state.config.bounce_delay, lambda: _fate(sb, tx, outcome))


def _send_sms(sb: Sandbox, tx: TxMessage) -> None:
    state, msg, definition = sb.state, tx.msg, tx.definition
    current = mobile_subscriptions.status(state, msg.to, definition.keyword)
    mobile_subscriptions.subscribe(state, msg.to, definition.keyword, create=True, reset=tx.resubscribe)
    if current == mobile_subscriptions.UNSUBSCRIBED and not tx.resubscribe:
        _not_sent(sb, tx, 1, "Unsubscribed", "The mobile number is unsubscribed from the keyword.")
        return
    tx.status, msg.status = "Sent", "delivered"
    extra = {"fromAddress": definition.short_code}
    info = ens_events.sms_info(msg, "3001", "SentToCarrier", **extra)
    ens_events.emit(sb, ens_events.SMS_SENT, msg, definition.definition_id, tx.ids, info)
    delivered = ens_events.sms_info(msg, "4000", "Delivered", **extra)
    state.later(
        state.config.bounce_delay,
        lambda: ens_events.emit(
            sb, ens_events.SMS_DELIVERED, msg, definition.definition_id, tx.ids, delivered
        ),
    )


def _not_sent(sb: Sandbox, tx: TxMessage, code: int, name: str, reason: str) -> None:
    state, msg = sb.state, tx.msg
    tx.status, tx.status_code, tx.status_message = "NotSent", code, name
    msg.status = "not_sent" if tx.channel == "email" else "not_delivered"
    state.bump("not_sent")
    state.tx_not_sent.append({"eventID": len(state.tx_not_sent) + 1, "tx": tx, "reason": reason})
    category = ens_events.NOT_SENT if tx.channel == "email" else ens_events.SMS_NOT_SENT
    info = ens_events.not_sent_info(msg, code, name, reason)
    ens_events.emit(sb, category, msg, tx.definition.definition_id, tx.ids, info)


def _fate(sb: Sandbox, tx: TxMessage, outcome: Outcome) -> None:
    msg, definition_id = tx.msg, tx.definition.definition_id
    apply_to_subscriber(sb.state, msg.subscriber_key, outcome)
    bounce = BOUNCES.get(outcome)
    if bounce is not None:
        msg.status = "bounced"
        info = ens_events.bounced_info(msg, bounce)
        ens_events.emit(sb, ens_events.BOUNCED, msg, definition_id, tx.ids, info)
        return
    msg.status = "unsubscribed"
    info = ens_events.unsubscribed_info(msg, ens_events.epoch_ms())
    ens_events.emit(sb, ens_events.UNSUBSCRIBED, msg, definition_id, tx.ids, info)


# ------------------------------------------------------------------------------------------- routes


def _answer(request_id: str, responses: list[dict[str, Any]], refused: int, single: bool) -> web.Response:
    """202 with one response per recipient; 400 when nothing was queued (a single send: its refusal)."""
    body: dict[str, Any] = {"requestId": request_id, "errorcode": 0, "responses": responses}
    if refused and refused == len(responses):
        if single:
            body["errorcode"], body["message"] = responses[0]["errorcode"], responses[0]["message"]
        else:
            body["errorcode"] = 109103
            body["message"] = "MCMS_UTM_Validation_NoValidSubscribers: no subscriber was queued"
        return web.json_response(body, status=400)
    if refused:
        body["errorcode"] = 109001
        body["message"] = (
            f"MCMS_UTM_ResponsesHasErrors: {refused} subscribers failed to queue out of {len(responses)}"
        )
    return web.json_response(body, status=202)


def _request_error(request_id: str, refused: Refused) -> web.Response:
    return web.json_response(
        {"requestId": request_id, "errorcode": refused.errorcode, "message": refused.message}, status=400
    )


async def _body(request: web.Request) -> tuple[dict[str, Any] | None, web.Response | None]:
    if not rest_authorized(request):
        return None, not_authorized()
    body, err = await read_json(request)
    if err:
        return None, err
    if not isinstance(body, dict):
        return None, rest_error(400, 10001, "MCMS_UTM_Validation_InvalidDataType: the body must be an object")
    return body, None


def _content(channel: str, body: dict[str, Any]) -> str:
    """SMS: ``content.message`` overrides the definition's text (reference §3.2)."""
    value = ci_field(ci_field(body, "content"), "message") if channel == "sms" else None
    return value if isinstance(value, str) else ""


def _resubscribe(body: dict[str, Any]) -> bool:
    value = ci_field(ci_field(body, "subscriptions"), "resubscribe")
    return value is True or (isinstance(value, str) and value.lower() == "true")


async def send_one(request: web.Request) -> web.Response:
    sb = sandbox_of(request)
    channel, key = request.match_info["channel"], request.match_info["key"]
    body, err = await _body(request)
    if body is None:
        return err or not_authorized()
    request_id = str(uuid.uuid4())
    definition = _definition(channel, body)
    if isinstance(definition, Refused):
        return _request_error(request_id, definition)
    recipient = ci_field(body, "recipient")
    if ci_field(body, "recipients") is not None or not isinstance(recipient, dict):
        return _request_error(
            request_id, _code(10002, "MCMS_UTM_Validation_MissingRequiredField", "use one recipient object")
        )
    refused = _check_recipient(sb, channel, recipient, key, set())
    if refused is not None:
        sb.state.bump("transactional_refused")
        response = {"messageKey": key, "errorcode": refused.errorcode, "message": refused.message}
        return _answer(request_id, [response], 1, single=True)
    shared = _attributes(ci_field(body, "attributes"))
    _accept(sb, channel, definition, recipient, key, shared, _resubscribe(body), _content(channel, body))
    return _answer(request_id, [{"messageKey": key}], 0, single=True)


async def send_many(request: web.Request) -> web.Response:
    sb = sandbox_of(request)
    channel = request.match_info["channel"]
    body, err = await _body(request)
    if body is None:
        return err or not_authorized()
    request_id = str(uuid.uuid4())
    definition = _definition(channel, body)
    if isinstance(definition, Refused):
        return _request_error(request_id, definition)
    recipients = ci_field(body, "recipients")
    if ci_field(body, "recipient") is not None and recipients is not None:
        return _request_error(
            request_id,
            _code(10005, "MCMS_UTM_Validation_InvalidValue", "use recipient or recipients, not both"),
        )
    if not isinstance(recipients, list) or not recipients:
        return _request_error(request_id, _code(109102, "MCMS_UTM_Validation_NoSubscribers", "no recipients"))
    if len(recipients) > MAX_RECIPIENTS:
        return _request_error(
            request_id,
            _code(109101, "MCMS_UTM_Validation_TooManySubscribers", f"at most {MAX_RECIPIENTS} recipients"),
        )
    shared = _attributes(ci_field(body, "attributes"))
    resubscribe = _resubscribe(body)
    responses: list[dict[str, Any]] = []
    seen: set[str] = set()
    refused_count = 0
    for recipient in recipients:
        given = ci_field(recipient, "messageKey")
        key = str(given) if given is not None else _generated_key()
        refused = (
            _check_recipient(sb, channel, recipient, key, seen)
            if isinstance(recipient, dict)
            else _code(109106, "MCMS_UTM_Validation_MissingRequiredField_to", "Invalid subscriber")
        )
        if refused is not None:
            refused_count += 1
            sb.state.bump("transactional_refused")
            responses.append({"messageKey": key, "errorcode": refused.errorcode, "message": refused.message})
            continue
        seen.add(key)
        assert isinstance(recipient, dict)
        _accept(sb, channel, definition, recipient, key, shared, resubscribe, _content(channel, body))
        responses.append({"messageKey": key})
    return _answer(request_id, responses, refused_count, single=False)


async def status(request: web.Request) -> web.Response:
    sb = sandbox_of(request)
    if not rest_authorized(request):
        return not_authorized()
    channel, key = request.match_info["channel"], request.match_info["key"]
    tx = sb.state.tx_messages.get(key)
    if tx is None or tx.channel != channel:
        return rest_error(404, 30003, f"MCMS_UTM_Runtime_ObjectNotFound: no message with the key '{key}'")
    return web.json_response(tx.status_json(str(uuid.uuid4())))


async def not_sent(request: web.Request) -> web.Response:
    sb = sandbox_of(request)
    if not rest_authorized(request):
        return not_authorized()
    channel = request.match_info["channel"]
    if request.query.get("type") != "notSent":
        return rest_error(400, 10005, "MCMS_UTM_Validation_InvalidValue: type=notSent is the only type")
    try:
        page_size = int(request.query.get("$pageSize", "1000"))
        last = int(request.query.get("lastEventId", "0"))
    except ValueError:
        return rest_error(
            400, 10001, "MCMS_UTM_Validation_InvalidDataType: $pageSize and lastEventId are numbers"
        )
    page_size = max(1, min(page_size, 1000))
    found = [e for e in sb.state.tx_not_sent if e["tx"].channel == channel and e["eventID"] > last][
        :page_size
    ]
    messages = []
    for e in found:
        tx: TxMessage = e["tx"]
        messages.append(
            {
                "eventCategoryType": f"{EVENT_PREFIX}{STATUS_NAMES[channel]}NotSent",
                "timestamp": cst(tx.timestamp),
                "definitionKey": tx.definition.key,
                "eventID": e["eventID"],
                "statusCode": tx.status_code,
                "statusMessage": tx.status_message,
                "info": {"messageKey": tx.msg.id, "contactKey": tx.msg.subscriber_key, "to": tx.msg.to},
            }
        )
    return web.json_response(
        {
            "lastEventID": found[-1]["eventID"] if found else last,
            "messages": messages,
            "count": len(messages),
            "pageSize": page_size,
            "requestId": str(uuid.uuid4()),
        }
    )


async def definitions(request: web.Request) -> web.Response:
    if not rest_authorized(request):
        return not_authorized()
    defs = TX_DEFINITIONS[request.match_info["channel"]].values()
    return web.json_response(
        {"requestId": str(uuid.uuid4()), "definitions": [d.to_json() for d in defs], "count": len(defs)}
    )


async def definition(request: web.Request) -> web.Response:
    if not rest_authorized(request):
        return not_authorized()
    found = TX_DEFINITIONS[request.match_info["channel"]].get(request.match_info["key"])
    if found is None:
        return rest_error(404, 30003, "MCMS_UTM_Runtime_ObjectNotFound")
    return web.json_response({"requestId": str(uuid.uuid4()), **found.to_json()})


def add_routes(app: web.Application) -> None:
    base = "/messaging/v1/{channel:email|sms}"
    r = app.router
    r.add_post(f"{base}/messages/", send_many)
    r.add_post(f"{base}/messages", send_many)
    r.add_get(f"{base}/messages/", not_sent)
    r.add_get(f"{base}/messages", not_sent)
    r.add_post(base + "/messages/{key:.+}", send_one)
    r.add_get(base + "/messages/{key:.+}", status)
    r.add_get(f"{base}/definitions", definitions)
    r.add_get(base + "/definitions/{key}", definition)
