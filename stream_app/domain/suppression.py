"""Who goes on the suppression list, by the records of `email.bounced` (pure functions).

- A hard bounce (tracking `HardBounce`, ENS `EmailBounced` with bounceCode HARD) or an unsubscribe
  (tracking `Unsubscribe`, ENS `EmailUnsubscribe`) suppresses the address at once.
- A soft (or other) bounce does not suppress alone: it is counted per address, and the address is
  suppressed when its bounces reach MC's own rule, SOFT_BOUNCE_LIMIT (3) spanning at least
  SOFT_BOUNCE_WINDOW_DAYS (15) (reference §2.6, "Held and Bounced"; §7.5).
- `Lifted` (an operator's `suppression lift`) takes the address off the list and forgets its soft
  bounces. It does not reactivate a subscriber MC itself holds (Held): MC's support or Email Studio
  does that.

Each bounce is counted once by its MC identity (`mc_event`), so a record relayed twice (a feedback
page repeated after a crash, ENS's at-least-once delivery) never counts twice.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import orjson

SUPPRESS, SOFT, LIFT = "suppress", "soft", "lift"
LIFTED = "Lifted"
SOFT_KINDS = frozenset({"SoftBounce", "OtherBounce"})
ENS_BOUNCE = "EmailBounced"
# Soft bounces remembered per address (the newest): more than the rule ever needs.
SOFT_BOUNCES_KEPT = 10


def action(kind: str, bounce_code: str | None) -> str:
    if kind == LIFTED:
        return LIFT
    if kind in SOFT_KINDS:
        return SOFT
    if kind == ENS_BOUNCE and (bounce_code or "").upper() == "SOFT":
        return SOFT
    # Hard bounces, unsubscribes, an ENS bounce saying no code (as every bounce suppressed before
    # soft ones were counted), and any kind this version does not know.
    return SUPPRESS


def _when(text: str) -> datetime | None:
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def add_soft_bounce(raw: bytes | None, identity: str, at: str) -> tuple[bytes, bool]:
    """The address's soft bounces with this one added (identity -> when); False if it was there."""
    bounces: dict[str, str] = orjson.loads(raw) if raw else {}
    if identity in bounces:
        return orjson.dumps(bounces), False
    bounces[identity] = at
    newest = sorted(bounces.items(), key=lambda item: item[1])[-SOFT_BOUNCES_KEPT:]
    return orjson.dumps(dict(newest)), True


def soft_rule_met(raw: bytes | None, limit: int, window_days: float) -> bool:
    """MC's rule: at least `limit` bounces spanning at least `window_days`."""
    bounces: dict[str, str] = orjson.loads(raw) if raw else {}
    dates = sorted(d for d in (_when(at) for at in bounces.values()) if d is not None)
    if len(dates) < max(1, limit):
        return False
    return dates[-1] - dates[0] >= timedelta(days=window_days)
