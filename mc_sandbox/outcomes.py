"""What becomes of an email after MC sent it, decided by its address's domain (sandbox configuration).

MC learns a message's fate from the receiving mail server, after the send; the sandbox stands in for
that server with three domain lists (flags of ``python -m mc_sandbox``, comma-separated, empty = none).
Every other address is delivered.

``--hard-bounce-domains`` (default ``bounce.example``)
    a hard bounce: 550 5.1.1 user unknown. MC sets the subscriber Held at once, as it does for one hard
    bounce from a "trusted" domain (reference §2.6); Held subscribers are refused from then on.
``--soft-bounce-domains`` (default ``soft.example``)
    a soft bounce: 452 4.2.2 mailbox full. The subscriber becomes Bounced, which MC still sends to,
    until MC's hold rule (reference §2.6) holds it: three bounces spanning at least 15 days (on the
    sandbox's clock, which a test moves with ``POST /_sandbox/clock``).
``--unsub-domains`` (default ``unsub.example``)
    delivered, then the recipient unsubscribes through the message's link: the subscriber becomes
    Unsubscribed (a master unsubscribe).

The fate arrives ``Config.bounce_delay`` seconds after the send time. Where it is reported (SOAP
tracking objects for classic sends, ENS for Transactional Messaging sends) is up to the caller.
BounceCategory/BounceType values and SMTP texts are MC-shaped guesses: the reference could not verify
them [INF].
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from .state import Config, State, utcnow


class Outcome(StrEnum):
    DELIVERED = "delivered"
    HARD_BOUNCE = "hard_bounce"
    SOFT_BOUNCE = "soft_bounce"
    UNSUBSCRIBE = "unsubscribe"


@dataclass(frozen=True)
class Bounce:
    """How MC describes one kind of bounce: SOAP BounceEvent fields and ENS EmailBounced info."""

    event_type: str  # the WSDL's EventType
    category: str  # BounceEvent.BounceCategory
    bounce_type: str  # BounceEvent.BounceType
    smtp_code: str  # BounceEvent.SMTPCode
    smtp_reason: str  # BounceEvent.SMTPReason
    ens_code: str  # EmailBounced info.bounceCode
    ens_message: str  # EmailBounced info.bounceMessage
    ens_smtp_reason: str  # EmailBounced info.smtpReason (the enhanced status code)
    subscriber_status: str  # what the bounce makes of the subscriber


HARD = Bounce(
    event_type="HardBounce",
    category="Hard bounce",
    bounce_type="immediate",
    smtp_code="550",
    smtp_reason="550 5.1.1 User unknown",
    ens_code="HARD",
    ens_message="5.1.1 (bad destination mailbox address) User Unknown",
    ens_smtp_reason="5.1.1",
    subscriber_status="Held",
)
SOFT = Bounce(
    event_type="SoftBounce",
    category="Soft bounce",
    bounce_type="delayed",
    smtp_code="452",
    smtp_reason="452 4.2.2 Mailbox full",
    ens_code="SOFT",
    ens_message="4.2.2 (mailbox full) Over quota",
    ens_smtp_reason="4.2.2",
    subscriber_status="Bounced",
)
BOUNCES = {Outcome.HARD_BOUNCE: HARD, Outcome.SOFT_BOUNCE: SOFT}


HOLD_BOUNCES = 3
HOLD_SPAN = timedelta(days=15)


def held_by_bounces(bounce_dates: Sequence[datetime]) -> bool:
    """MC's hold rule (reference §2.6): three bounces spanning at least 15 days make a subscriber Held.

    One or two bounces leave it Bounced, and so do three within fewer days: the span is what holds."""
    return len(bounce_dates) >= HOLD_BOUNCES and max(bounce_dates) - min(bounce_dates) >= HOLD_SPAN


def parse_domains(value: str) -> tuple[str, ...]:
    """``"a.example, b.example"`` -> the lower-cased domains; an empty string gives none."""
    return tuple(d.strip().lower() for d in value.split(",") if d.strip())


def outcome_for(config: Config, email: str) -> Outcome:
    domain = email.rsplit("@", 1)[-1].lower()
    if domain in config.hard_bounce_domains:
        return Outcome.HARD_BOUNCE
    if domain in config.soft_bounce_domains:
        return Outcome.SOFT_BOUNCE
    if domain in config.unsub_domains:
        return Outcome.UNSUBSCRIBE
    return Outcome.DELIVERED


def apply_to_subscriber(state: State, subscriber_key: str, outcome: Outcome) -> None:
    """The subscriber status MC sets for the outcome; a Held subscriber stays Held (only support lifts it)."""
    sub = state.subscribers.get(subscriber_key)
    if outcome is Outcome.DELIVERED:
        return
    state.bump(
        {Outcome.HARD_BOUNCE: "bounces", Outcome.SOFT_BOUNCE: "soft_bounces"}.get(outcome, "unsubscribes")
    )
    if sub is None or sub.status == "Held":
        return
    bounce = BOUNCES.get(outcome)
    if bounce is not None:
        sub.bounce_dates.append(utcnow())
        # A soft bounce leaves an Unsubscribed subscriber Unsubscribed; a hard one holds anyone, and
        # so does the bounce that meets the hold rule.
        if bounce is HARD or held_by_bounces(sub.bounce_dates):
            sub.status = "Held"
        elif sub.status == "Active":
            sub.status = bounce.subscriber_status
    else:
        sub.status = "Unsubscribed"
    sub.updated_at = utcnow()
