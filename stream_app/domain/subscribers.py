"""What MC knows of a subscriber, and whether a notification may go to its address."""

from __future__ import annotations

from collections.abc import Container

from stream_app.contract.records import SubscriberReady

KNOWN_SUBSCRIBERS_TABLE = "known-subscribers"
SEP = "\x1f"


def subscriber_signature(email: str | None, mobile: str | None) -> bytes:
    """What the known-subscribers table keeps of a subscriber MC has: its imported email and mobile."""
    return f"{email or ''}{SEP}{mobile or ''}".encode()


def needs_import(email: str | None, mobile: str | None, known: bytes | None) -> bool:
    """Upload the subscriber unless MC has it with this very email and mobile.

    A notification without an email (an SMS whose party's email was invalid) needs no email
    subscriber: MobileConnect sends to the number.
    """
    if email is None:
        return False
    return known != subscriber_signature(email, mobile)


def is_suppressed(ready: SubscriberReady, suppressed: Container[str]) -> bool:
    """An email to an address on the suppression list (it bounced or unsubscribed) is not sent."""
    return ready.channel == "email" and bool(ready.email) and (ready.email or "").lower() in suppressed


SUPPRESSED_REASON = "address on the suppression list (bounced or unsubscribed)"
