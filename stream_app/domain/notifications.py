"""What an input event means for people: which notifications, to whom, with which words.

Pure functions only: the agents call them, the unit tests call them.
"""

from __future__ import annotations

import functools
import re
import unicodedata
from dataclasses import dataclass
from typing import Any

import orjson
import phonenumbers
from email_validator import EmailNotValidError, validate_email

from stream_app.contract.records import SubscriberReady
from stream_app.contract.schemas import SchemaError, validate
from stream_app.contract.topics import INPUT_TOPICS
from stream_app.contract.wire import MAGIC, AvroSchemas, WireFormatError
from stream_app.domain.templates import render_sms, resolve_locale

# The intake's hot path handles an event as the plain dict its schema validated and a notification
# as the dict that is SubscriberReady's JSON (the fields of `records.SubscriberReady`): building
# Faust records there cost more than the rest of the intake together (bench/README.md).
Event = dict[str, Any]
Ready = dict[str, Any]

EVENT_TYPES = INPUT_TOPICS
SENDER_SUFFIX = " via EZTABLE"
MAX_NAME_LENGTH = 200
MAX_ID_LENGTH = 200
# A member id is MC's SubscriberKey and a cell of the import CSV: letters, digits and . _ : -, a
# letter or digit first (so never a spreadsheet formula), at most 100 (schemas/party.avsc says so).
MEMBER_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:\-]{0,99}")
# A cell starting with one of these is run as a formula by a spreadsheet (OWASP CSV injection).
FORMULA_START = ("=", "+", "-", "@")

# Misspelt mailbox providers seen in sign-up forms; a send there bounces and hurts our reputation.
DOMAIN_TYPOS = {
    "gmial.com": "gmail.com",
    "gmai.com": "gmail.com",
    "gmail.co": "gmail.com",
    "gamil.com": "gmail.com",
    "gnail.com": "gmail.com",
    "gmail.con": "gmail.com",
    "yaho.com": "yahoo.com",
    "yahooo.com": "yahoo.com",
    "yahoo.con": "yahoo.com",
    "yaho.com.tw": "yahoo.com.tw",
    "yahoo.com.w": "yahoo.com.tw",
    "hotmial.com": "hotmail.com",
    "hotmal.com": "hotmail.com",
    "hotmai.com": "hotmail.com",
    "hotmail.con": "hotmail.com",
    "outlok.com": "outlook.com",
    "outloo.com": "outlook.com",
    "iclod.com": "icloud.com",
    "icoud.com": "icloud.com",
}


class InvalidEvent(ValueError):
    """The record cannot be processed at all: it goes to the topic's DLQ with this message."""


@dataclass(frozen=True)
class Rejected:
    """A notification that cannot be sent because of its recipient's data (status `invalid`)."""

    ready: Ready
    reason: str

    def record(self) -> SubscriberReady:
        return SubscriberReady.from_data(self.ready)


# Where Avro-framed records are decoded when no registry is configured: they go to the DLQ, saying so.
_NO_REGISTRY = AvroSchemas()


def decode_event(topic: str, raw: bytes | None, avro: AvroSchemas | None = None) -> Event:
    """Bytes from an input topic -> the validated event (defaults filled in), or InvalidEvent saying why.

    JSON, or Avro in the Confluent wire format (first byte 0x00, contract/wire.py) decoded with the
    writer's schema from `avro` (the registry's schemas the intake fetched for its batch); either
    way the value is then validated against the topic's schema."""
    if topic not in EVENT_TYPES:
        raise InvalidEvent(f"unknown event type {topic!r}")
    if raw is None or not raw.strip():
        raise InvalidEvent("empty value")
    if raw[0] == MAGIC:  # JSON text never starts with a NUL byte
        try:
            data = (_NO_REGISTRY if avro is None else avro).decode(raw)
        except WireFormatError as exc:
            raise InvalidEvent(str(exc)) from None
    else:
        try:
            data = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise InvalidEvent(f"not JSON: {exc}") from None
    if isinstance(data, dict) and "event_type" in data and data["event_type"] != topic:
        raise InvalidEvent(f"unknown event type {data['event_type']!r} on topic {topic}")
    try:
        clean = validate(topic, data)
    except SchemaError as exc:
        raise InvalidEvent(f"schema: {exc}") from None
    _check_text(clean)
    # packet.redeemed may leave `amount` out (design.md §4): None then, and no amount to check.
    amounts = (clean.get("amount"), clean["cashback_amount"], clean.get("spent_amount"))
    if any(a is not None and a < 0 for a in amounts):
        raise InvalidEvent("schema: amounts must not be negative")
    return clean


def _check_text(clean: dict[str, object]) -> None:
    for field in ("event_id", "packet_id"):
        value = str(clean[field])
        if not value.strip() or len(value) > MAX_ID_LENGTH or _has_control(value):
            raise InvalidEvent(f"schema: {field} must be 1-{MAX_ID_LENGTH} printable characters")
    for role in ("drawer", "giver"):
        party = clean[role]
        assert isinstance(party, dict)
        for field, limit in (("member_id", MAX_ID_LENGTH), ("name", MAX_NAME_LENGTH)):
            value = party[field]
            if not value.strip() or len(value) > limit or _has_control(value):
                raise InvalidEvent(f"schema: {role}.{field} must be 1-{limit} printable characters")


def _has_control(text: str) -> bool:
    """Whether `text` holds a control (Cc) or format (Cf) character other than the emoji joiner."""
    # Every Cc and Cf character is unprintable, so only the unprintable ones (rare: no-break or
    # ideographic spaces, controls) need their category looked up.
    return not text.isprintable() and any(
        unicodedata.category(ch) in {"Cc", "Cf"} and ch != "\u200d" for ch in text if not ch.isprintable()
    )


def check_member_id(member_id: str) -> str | None:
    """Return why `member_id` cannot be a SubscriberKey (and a CSV cell), or None when it can."""
    if MEMBER_ID_RE.fullmatch(member_id):
        return None
    return "invalid member_id: 1-100 of A-Z a-z 0-9 . _ : - starting with a letter or digit"


# Pure functions of the address, called for every party of every event: members recur, and
# email_validator / phonenumbers cost ~100 us a call (the top of the intake profile).
@functools.lru_cache(maxsize=65536)
def check_email(address: str | None) -> str | None:
    """Return why `address` cannot receive mail, or None when it can."""
    if address is None:
        return "no email address"
    if address.startswith(FORMULA_START):  # MC imports it verbatim from the CSV: no escaping it
        return f"invalid email {mask_email(address)}: starts with {address[0]!r}, a spreadsheet formula"
    if address != address.strip() or len(address) >= 100:
        return f"invalid email {mask_email(address)}: spaces or too long"
    try:
        # MC accepts ASCII addresses only; deliverability is MC's business, not a DNS look-up here.
        result = validate_email(address, check_deliverability=False, allow_smtputf8=False)
    except EmailNotValidError as exc:
        return f"invalid email {mask_email(address)}: {exc}"
    domain = result.domain.lower()
    if domain in DOMAIN_TYPOS:
        return f"invalid email {mask_email(address)}: did you mean @{DOMAIN_TYPOS[domain]}?"
    return None


@functools.lru_cache(maxsize=65536)
def check_mobile(number: str) -> str | None:
    """Return why `number` cannot receive SMS, or None when it is a valid E.164 number."""
    if not number.startswith("+") or not number[1:].isdigit():
        return f"invalid mobile {mask_phone(number)}: not E.164"
    try:
        parsed = phonenumbers.parse(number, None)
    except phonenumbers.NumberParseException as exc:
        return f"invalid mobile {mask_phone(number)}: {exc}"
    if not phonenumbers.is_valid_number(parsed):
        return f"invalid mobile {mask_phone(number)}: not a valid number"
    return None


def mask_email(address: str) -> str:
    local, _, domain = address.partition("@")
    return f"{local[:1]}***@{domain}" if domain else "***"


def mask_phone(number: str) -> str:
    return f"{number[:4]}***{number[-2:]}" if len(number) > 6 else "***"


# Which attribute names the recipient of each template (the CSV's Name column).
RECIPIENT_NAME = {
    "packet-drawn-drawer": "DrawerName",
    "packet-drawn-welcome": "DrawerName",
    "packet-drawn-giver": "GiverName",
    "packet-redeemed-giver": "GiverName",
}


def recipient_name(ready: SubscriberReady) -> str:
    return ready.attributes.get(RECIPIENT_NAME.get(ready.template, ""), "")


def sms_text(attributes: dict[str, str], locale: str | None = None) -> str:
    """The welcome SMS in the drawer's language, rendered here because MobileConnect sends it as an
    override text (the copy is in the template registry, domain/templates.py)."""
    return render_sms("packet-drawn-welcome", locale, attributes)


def plan(event_type: str, event: Event) -> tuple[list[Ready], list[Rejected]]:
    """The notifications an event asks for, split into sendable ones and those with bad addresses."""
    event_id = event["event_id"]
    drawer, giver = event["drawer"], event["giver"]
    attributes = {
        "EventId": event_id,
        "DrawerName": drawer["name"],
        "GiverName": giver["name"],
        "Cashback": str(event["cashback_amount"]),
    }
    # A redemption need not carry the packet's value (design.md §4); no text of it uses the amount.
    if event.get("amount") is not None:
        attributes["Amount"] = str(event["amount"])
    wanted: list[tuple[str, str, dict[str, Any], str]] = []  # channel, template, recipient, sender name
    if event_type == "packet.drawn":
        wanted.append(("email", "packet-drawn-drawer", drawer, giver["name"]))
        if drawer["mobile"] is not None:
            wanted.append(("sms", "packet-drawn-welcome", drawer, giver["name"]))
        wanted.append(("email", "packet-drawn-giver", giver, drawer["name"]))
    else:
        attributes["SpentAmount"] = str(event["spent_amount"])
        wanted.append(("email", "packet-redeemed-giver", giver, drawer["name"]))

    ready: list[Ready] = []
    rejected: list[Rejected] = []
    for channel, template, party, sender in wanted:
        email_problem = check_email(party["email"])
        notification = {
            "notification_id": f"{event_id}:{template}",
            "event_id": event_id,
            "event_type": event_type,
            "channel": channel,
            "template": template,
            "subscriber_key": party["member_id"],
            # An SMS goes to the number alone: a bad email must not hold it back from MC's import.
            "email": None if email_problem else party["email"],
            "mobile": party["mobile"],
            "from_name": f"{sender}{SENDER_SUFFIX}" if channel == "email" else None,
            "attributes": attributes,
            # The recipient's own language: the drawer's for the drawer's messages, the giver's for theirs.
            "locale": resolve_locale(party.get("locale")),
        }
        problem = check_member_id(party["member_id"]) or (
            email_problem if channel == "email" else check_mobile(party["mobile"] or "")
        )
        if problem:
            rejected.append(Rejected(notification, problem))
        else:
            ready.append(notification)
    return ready, rejected
