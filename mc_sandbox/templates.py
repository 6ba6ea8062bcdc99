"""The sandbox's default content: three triggered send definitions and one MobileConnect message."""

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
    )
}

SMS_DEFINITIONS: dict[str, SmsDefinition] = {
    d.message_id: d
    for d in (
        SmsDefinition(
            message_id="packet-drawn-welcome",
            name="Packet drawn welcome",
            text="%%GiverName%% 送你 $%%Amount%% 紅包！EZTABLE 訂位即可使用。",
        ),
    )
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
