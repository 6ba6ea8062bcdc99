"""The ENS events a send produces (reference §7.2), and the one rule of who gets them (§7.1).

The rule, as MC's: ENS reports **Transactional Messaging API** sends only (transactional.py). Classic
triggered sends (REST ``messageDefinitionSends``, SOAP ``Create TriggeredSend``) and MobileConnect
``messageContact`` sends produce no callback; their feedback is polled from the SOAP tracking objects
(tracking.py) and the delivery-record routes.
"""

from __future__ import annotations

from typing import Any

from .context import Sandbox
from .outcomes import Bounce
from .sendlog import LIST_ID as _LIST_ID
from .state import Message, utcnow

SENT = "TransactionalSendEvents.EmailSent"
NOT_SENT = "TransactionalSendEvents.EmailNotSent"
BOUNCED = "TransactionalSendEvents.EmailBounced"
UNSUBSCRIBED = "EngagementEvents.EmailUnsubscribe"
SMS_SENT = "TransactionalSendEvents.SmsSent"
SMS_NOT_SENT = "TransactionalSendEvents.SmsNotSent"
SMS_DELIVERED = "TransactionalSendEvents.SmsDelivered"

TRANSACTIONAL_APIS = frozenset({"transactional", "transactional-sms"})
LIST_ID = str(_LIST_ID)
EMAIL_ID = "297967"


def epoch_ms() -> int:
    """Now as ENS writes its dates: epoch milliseconds (UTC)."""
    return int(utcnow().timestamp() * 1000)


def reported(sb: Sandbox, msg: Message) -> bool:
    """Whether ENS reports this message at all: Transactional Messaging sends only, as MC's."""
    return msg.api in TRANSACTIONAL_APIS


def emit(
    sb: Sandbox,
    category: str,
    msg: Message,
    definition_id: str,
    ids: tuple[int, int, int],
    info: dict[str, Any],
) -> None:
    """Build and publish one event of ``msg``, if ENS reports that message at all."""
    if reported(sb, msg):
        sb.ens.publish(event(sb, category, msg, definition_id, ids, info))


def _mid(sb: Sandbox) -> int | str:
    account = sb.config.account_id
    return int(account) if account.isdigit() else account


def event(
    sb: Sandbox,
    category: str,
    msg: Message,
    definition_id: str,
    ids: tuple[int, int, int],
    info: dict[str, Any],
) -> dict[str, Any]:
    """One event: ``ids`` are (jobId, batchId, subscriberId), the keys MC joins engagement events on."""
    job_id, batch_id, subscriber_id = (str(i) for i in ids)
    engagement = category.startswith("EngagementEvents.")
    out: dict[str, Any] = {
        "eventCategoryType": category,
        # Epoch milliseconds, UTC (§7.2), of the sandbox's clock (clock.py), as every date it reports.
        "timestampUTC": epoch_ms(),
        "compositeId": f"{definition_id}.{job_id}.{LIST_ID}.{batch_id}.{subscriber_id}",
        "composite": {
            "jobId": job_id,
            "batchId": batch_id,
            "listId": LIST_ID,
            "subscriberId": subscriber_id,
            "emailId": EMAIL_ID,
        },
        # Engagement events carry "NA" for the definition, and the channel.
        "definitionKey": "NA" if engagement else msg.definition_key,
        "definitionId": "NA" if engagement else definition_id,
        "mid": _mid(sb),
        "eid": _mid(sb),
        "info": info,
    }
    if engagement:
        out["channel"] = "email"
    return out


def base_info(msg: Message) -> dict[str, Any]:
    return {"to": msg.to, "subscriberKey": msg.subscriber_key, "messageKey": msg.id}


def sent_info(msg: Message, subject: str) -> dict[str, Any]:
    return {**base_info(msg), "status": "Sent", "renderedSubject": subject}


def not_sent_info(msg: Message, code: int, name: str, reason: str) -> dict[str, Any]:
    return {**base_info(msg), "reason": reason, "statusCode": str(code), "statusMessage": name}


def bounced_info(msg: Message, bounce: Bounce) -> dict[str, Any]:
    return {
        **base_info(msg),
        "bounceCode": bounce.ens_code,
        "bounceMessage": bounce.ens_message,
        "smtpReason": bounce.ens_smtp_reason,
    }


def unsubscribed_info(msg: Message, at_ms: int) -> dict[str, Any]:
    return {
        "to": msg.to,
        "domain": msg.to.rsplit("@", 1)[-1],
        "unsubscribeDate": at_ms,
        "unsubscribeMethod": "Click",
    }


def sms_info(msg: Message, status_code: str, status_message: str, **extra: Any) -> dict[str, Any]:
    return {
        **base_info(msg),
        "statusCode": status_code,
        "statusMessage": status_message,
        "fromAddress": "",
        "countryCode": "",
        "ordinal": 0,
        **extra,
    }
