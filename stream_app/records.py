"""The records of every topic, modelled once; each mirrors its schema in `schemas/`.

`include_metadata=False` keeps Faust's own `__faust` field out of the JSON, so the values on the
wire are exactly the contract of design.md and any producer or console tool can read them.
"""

from collections.abc import Mapping
from typing import Any, NamedTuple, Optional, TypeVar

import faust
from faust.models.fields import FieldDescriptor, IntegerField, StringField

R = TypeVar("R", bound=faust.Record)

# Field types whose Faust `__set__` stores the value unchanged when the field does not coerce.
_PLAIN_DESCRIPTORS = (FieldDescriptor, IntegerField, StringField)


class Party(faust.Record, include_metadata=False):
    member_id: str
    name: str
    email: str | None = None
    mobile: str | None = None
    locale: str | None = None


class PacketDrawn(faust.Record, include_metadata=False):
    event_id: str
    occurred_at: str
    packet_id: str
    amount: int
    drawer: Party
    giver: Party
    cashback_amount: int = 100


class PacketRedeemed(faust.Record, include_metadata=False):
    event_id: str
    occurred_at: str
    packet_id: str
    amount: int
    spent_amount: int
    drawer: Party
    giver: Party
    cashback_amount: int = 100


PacketEvent = PacketDrawn | PacketRedeemed


class SubscriberReady(faust.Record, include_metadata=False):
    notification_id: str
    event_id: str
    event_type: str
    channel: str
    template: str
    subscriber_key: str
    attributes: dict[str, str]
    email: str | None = None
    mobile: str | None = None
    from_name: str | None = None


class NotificationStatus(faust.Record, include_metadata=False):
    notification_id: str
    event_id: str
    channel: str
    template: str
    subscriber_key: str
    status: str
    at: str
    reason: str = ""
    mc_request_id: str = ""
    attempts: int = 0


class EmailBounced(faust.Record, include_metadata=False):
    email: str
    kind: str
    at: str
    subscriber_key: str | None = None
    bounce_code: str | None = None
    reason: str = ""
    definition_key: str | None = None


class BatcherInput(faust.Record, include_metadata=False):
    kind: str  # intent | confirmed | close
    ready: Optional[SubscriberReady] = None  # noqa: UP007 - Faust only revives Optional[Record]
    subscriber_key: str | None = None
    email: str | None = None
    mobile: str | None = None
    window_id: str | None = None
    received_at: float = 0.0


class SubscriberBatch(faust.Record, include_metadata=False):
    window_id: str
    closed_at: float
    rows: list[SubscriberReady]


class TraceStep(faust.Record, include_metadata=False):
    event_id: str
    stage: str
    at: str
    detail: dict[str, Any]


def build(cls: type[R], values: Mapping[str, Any]) -> R:
    """`cls(**values)` for `values` naming every field of `cls`, at a third of the cost.

    Faust's `__init__` sends each field through its descriptor's `__set__` (~0.25 us a field), which
    for the records of the intake's hot path (no coercion, validation, tags or `__post_init__`) only
    stores the value. Those records get the same instance state built directly; any other call, or a
    record that gains one of those features, goes through Faust.
    """
    try:
        plain = _plain[cls]
    except KeyError:
        plain = _plain[cls] = _plain_record(cls)
    if plain is None or values.keys() != plain.names:
        return cls(**values)
    record = cls.__new__(cls)
    state = record.__dict__
    state["__evaluated_fields__"] = set()  # what Faust's __init__ starts with: nothing read lazily yet
    # In Faust's order, which its repr shows.
    for name in plain.order:
        state[name] = values[name]
    # Faust fills an optional field's default in place of None.
    for name, default in plain.defaults:
        if state[name] is None:
            state[name] = default
    return record


class _Plain(NamedTuple):
    order: tuple[str, ...]  # the fields, in the order Faust's __init__ sets them
    names: frozenset[str]
    defaults: tuple[tuple[str, Any], ...]  # the defaults other than None


_plain: dict[type[faust.Record], _Plain | None] = {}


def _plain_record(cls: type[faust.Record]) -> _Plain | None:
    """The fields of `cls` when its `__init__` only stores values, else None."""
    options = cls._options
    if (
        options.coerce
        or options.validation
        or hasattr(cls, "__post_init__")
        or not all(_stores_as_is(field) for field in options.descriptors.values())
    ):
        return None
    order = tuple(options.fieldpos.values())
    defaults = tuple((name, value) for name, value in options.defaults.items() if value is not None)
    return _Plain(order, frozenset(order), defaults)


def _stores_as_is(field: object) -> bool:
    # Exactly these types: a subclass may override prepare_value.
    return (
        isinstance(field, FieldDescriptor)
        and type(field) in _PLAIN_DESCRIPTORS
        and not field.coerce
        and field.tag is None
    )
