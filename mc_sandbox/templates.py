"""The sandbox's default content.

Three Email Studio triggered send definitions (TSDs) and one MobileConnect message for the classic
routes; and, for the Transactional Messaging API, email send definitions with the same keys and
content plus an inactive one, and an SMS send definition on the MobileConnect message's code and
keyword. Transactional definitions are separate objects from TSDs in MC, with ids of their own.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass, field

_NS = uuid.UUID("6f1c1c52-2f43-4b7e-9c1d-3f1a6c0b5e00")


@dataclass(frozen=True)
class EmailDefinition:
    """An Email Studio triggered send definition (TSD)."""

    key: str
    name: str
    text: str
    status: str = "Active"
    object_id: str = field(default="")
    subject: str = ""

    @property
    def guid(self) -> str:
        # Stable across restarts so that a client may cache the key -> ObjectID mapping.
        return self.object_id or str(uuid.uuid5(_NS, "tsd:" + self.key))


@dataclass(frozen=True)
class SmsDefinition:
    """An outbound MobileConnect message with send method "API Trigger"; its API key is ``message_id``."""

    message_id: str
    name: str
    text: str
    keyword: str = "EZTABLE"
    short_code: str = "88588"


@dataclass(frozen=True)
class TransactionalDefinition:
    """A Transactional Messaging API send definition (``/messaging/v1/{email|sms}/definitions``)."""

    key: str
    name: str
    channel: str  # "email" | "sms"
    text: str
    subject: str = ""
    status: str = "Active"  # Inactive: messages stay queued (EmailQueued) until it is Active
    keyword: str = ""  # sms: the keyword the definition subscribes numbers to
    short_code: str = ""
    # email: the sender profile's From Name. This API takes no From in its send body (reference
    # §3.2); a per-message sender name comes from an attribute through AMPscript in the From Name,
    # FROM_NAME_AMPSCRIPT below, which the sandbox evaluates as: the attribute if not empty, else
    # the default.
    from_name_attribute: str = ""
    from_name_default: str = ""

    def from_name(self, attributes: dict[str, str]) -> str | None:
        if self.channel != "email":
            return None
        lowered = {k.lower(): v for k, v in attributes.items()}
        value = lowered.get(self.from_name_attribute.lower(), "") if self.from_name_attribute else ""
        return value.strip() or self.from_name_default or None

    @property
    def definition_id(self) -> str:
        return str(uuid.uuid5(_NS, f"tx:{self.channel}:{self.key}"))

    def to_json(self) -> dict[str, object]:
        out: dict[str, object] = {
            "definitionKey": self.key,
            "definitionId": self.definition_id,
            "name": self.name,
            "status": self.status,
        }
        if self.channel == "sms":
            out["content"] = {"message": self.text}
            out["subscriptions"] = {
                "shortCode": self.short_code,
                "countryCode": "TW",
                "keyword": self.keyword,
                "autoAddSubscriber": True,
            }
        else:
            out["content"] = {"subject": self.subject}
            out["subscriptions"] = {"autoAddSubscriber": True, "updateSubscriber": False}
        return out


EMAIL_DEFINITIONS: dict[str, EmailDefinition] = {
    d.key: d
    for d in (
        EmailDefinition(
            key="packet-drawn-drawer",
            name="Packet drawn (drawer)",
            subject="紅包",
            text="親愛的 %%DrawerName%% 恭喜你好手氣抽到 %%GiverName%% 送的紅包 $%%Amount%%！"
            "訂餐廳吃飯可直接用！",
        ),
        EmailDefinition(
            key="packet-drawn-giver",
            name="Packet drawn (giver)",
            subject="紅包",
            text="你的朋友 %%DrawerName%% 抽到你發的 $%%Amount%% EZCASH 紅包！"
            "只要他消費你就能得到 $%%Cashback%% 回饋！",
        ),
        EmailDefinition(
            key="packet-redeemed-giver",
            name="Packet redeemed (giver)",
            subject="紅包",
            text="你的朋友 %%DrawerName%% 用了你送的紅包，你獲得 $%%Cashback%% EZCASH 回饋！",
        ),
        # The English twins, for members whose locale is `en` (stream_app/domain/templates.py).
        EmailDefinition(
            key="packet-drawn-drawer-en",
            name="Packet drawn (drawer, English)",
            subject="A red envelope for you",
            text="Dear %%DrawerName%%, lucky you! You drew the $%%Amount%% red envelope %%GiverName%% "
            "sent. Use it straight away on a restaurant booking!",
        ),
        EmailDefinition(
            key="packet-drawn-giver-en",
            name="Packet drawn (giver, English)",
            subject="Your red envelope was drawn",
            text="Your friend %%DrawerName%% drew your $%%Amount%% EZCASH red envelope! "
            "As soon as they spend it, you get $%%Cashback%% back!",
        ),
        EmailDefinition(
            key="packet-redeemed-giver-en",
            name="Packet redeemed (giver, English)",
            subject="You earned a cashback",
            text="Your friend %%DrawerName%% used your red envelope: you earned $%%Cashback%% EZCASH!",
        ),
    )
}

# The stored texts of the MobileConnect messages (and of the transactional SMS definitions, which
# share them): stream_app's sms_text renders the same words (stream_app/domain/templates.py), which
# a batched send leaves to MC, each subscriber's attributes filling them in (README, "Batched sends").
SMS_DEFINITIONS: dict[str, SmsDefinition] = {
    d.message_id: d
    for d in (
        SmsDefinition(
            message_id="packet-drawn-welcome",
            name="Packet drawn welcome",
            text="%%GiverName%% 送你 $%%Amount%% 紅包！EZTABLE 訂位即可使用，祝 %%DrawerName%% 用餐愉快。",
        ),
        SmsDefinition(
            message_id="packet-drawn-welcome-en",
            name="Packet drawn welcome (English)",
            text="%%GiverName%% sent you a $%%Amount%% red envelope! Use it on any EZTABLE booking. "
            "Enjoy your meal, %%DrawerName%%.",
        ),
    )
}

# The sender profile From Name of the transactional email definitions: the FromName attribute
# ("X via EZTABLE", stream_app's senders set it), else EZTABLE.
FROM_NAME_AMPSCRIPT = '%%=IIF(Empty(AttributeValue("FromName")), "EZTABLE", AttributeValue("FromName"))=%%'

TX_DEFINITIONS: dict[str, dict[str, TransactionalDefinition]] = {
    "email": {
        d.key: d
        for d in (
            *(
                TransactionalDefinition(
                    t.key,
                    t.name,
                    "email",
                    t.text,
                    subject=t.subject,
                    from_name_attribute="FromName",
                    from_name_default="EZTABLE",
                )
                for t in EMAIL_DEFINITIONS.values()
            ),
            TransactionalDefinition(
                "paused-notice", "Paused notice", "email", "Paused.", subject="Paused", status="Inactive"
            ),
        )
    },
    "sms": {
        d.message_id: TransactionalDefinition(
            d.message_id, d.name, "sms", d.text, keyword=d.keyword, short_code=d.short_code
        )
        for d in SMS_DEFINITIONS.values()
    },
}

_PLACEHOLDER = re.compile(r"%%([A-Za-z0-9_]+)%%")


def render(text: str, attributes: dict[str, str]) -> str:
    """Substitute ``%%Name%%`` (case-insensitive, like AMPscript); unknown names render empty, as in MC."""
    lowered = {k.lower(): v for k, v in attributes.items()}
    return _PLACEHOLDER.sub(lambda m: str(lowered.get(m.group(1).lower(), "")), text)


def email_definition(ref: str) -> EmailDefinition | None:
    """Look a TSD up by ``key:xxx``, bare key or ObjectID (case-insensitive keys, as MC's external keys)."""
    if ref.lower().startswith("key:"):
        ref = ref[4:]
    for d in EMAIL_DEFINITIONS.values():
        if d.key.lower() == ref.lower() or d.guid.lower() == ref.lower():
            return d
    return None
