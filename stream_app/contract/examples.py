"""The example event of design.md section 4: `make run` prints it ready to produce, tests build on it."""

from __future__ import annotations

import copy
from typing import Any

_DRAWN: dict[str, Any] = {
    "event_id": "d-000123",
    "occurred_at": "2026-01-28T12:00:00+08:00",
    "packet_id": "RP-0001",
    "amount": 250,
    "cashback_amount": 100,
    "drawer": {
        "member_id": "M1001",
        "name": "EZ",
        "email": "ez@example.com",
        "mobile": "+886912345678",
        "locale": "zh-TW",
    },
    "giver": {
        "member_id": "M2002",
        "name": "TABLE",
        "email": "table@example.com",
        "mobile": None,
        "locale": "zh-TW",
    },
}


def drawn_example(**fields: Any) -> dict[str, Any]:
    """A fresh copy of the example packet.drawn event, top-level `fields` replaced."""
    return {**copy.deepcopy(_DRAWN), **fields}


def redeemed_example(**fields: Any) -> dict[str, Any]:
    """packet.redeemed to the letter of design.md section 4: "the same parties, plus `spent_amount` and
    `cashback_amount`", and no `amount` (which "may be given and is not required")."""
    event = {k: v for k, v in copy.deepcopy(_DRAWN).items() if k != "amount"}
    return {**event, "event_id": "r-000123", "spent_amount": 800, "cashback_amount": 100, **fields}
