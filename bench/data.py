"""The benchmark's input: members and packet.drawn events, generated deterministically."""

from __future__ import annotations

import random
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import orjson

from stream_app.contract.topics import INPUT_TOPICS

DRAWN_TOPIC = INPUT_TOPICS[0]  # packet.drawn: where these events go
MEMBERS = 20_000
NEW_MEMBER_BASE = 1_000_000  # members the pipeline has never seen (latency of the import path)
OCCURRED_AT = "2026-01-28T12:00:00+08:00"


def member(i: int, *, small: bool = False) -> dict[str, Any]:
    """A member's fixed profile: the same email and mobile in every event (so it stays 'known').

    `small`: a short name and no locale, for the ~300 B events of the big backlog."""
    profile: dict[str, Any] = {
        "member_id": f"M{i:07d}",
        "name": f"m{i}" if small else f"會員{i:07d} EZTABLE Bench Member",
        "email": f"member{i:07d}.bench-run@example.com",
        "mobile": f"+8869{i % 100_000_000:08d}" if i % 2 == 0 else None,
    }
    if not small:
        profile["locale"] = "zh-TW"
    return profile


@dataclass(frozen=True)
class Event:
    event_id: str
    key: bytes
    value: bytes
    notifications: int  # notifications the pipeline must produce for it (all addresses are valid)


def records(events: Iterable[Event]) -> Iterator[tuple[bytes | None, bytes]]:
    """Key and value of each event, as `bench.kafka.produce_all` takes them."""
    for e in events:
        yield e.key, e.value


def notifications_for(drawer: int) -> int:
    # drawer email + giver email, plus the drawer's SMS when the drawer has a mobile
    return 3 if drawer % 2 == 0 else 2


def drawn(event_id: str, drawer: int, giver: int, amount: int, *, small: bool = False) -> Event:
    packet_id = f"RP-{event_id}"
    body: dict[str, Any] = {
        "event_id": event_id,
        "occurred_at": OCCURRED_AT,
        "packet_id": packet_id,
        "amount": amount,
        "cashback_amount": 100,
        "drawer": member(drawer, small=small),
        "giver": member(giver, small=small),
    }
    return Event(event_id, packet_id.encode(), orjson.dumps(body), notifications_for(drawer))


def warmup_events(prefix: str) -> list[Event]:
    """Every one of the MEMBERS members appears once: odd drawer (no SMS), even giver."""
    return [drawn(f"{prefix}-w{k:06d}", 2 * k + 1, 2 * k, 100 + k % 900) for k in range(MEMBERS // 2)]


def known_events(
    prefix: str, count: int, seed: int, *, small: bool = False, first: int = 0, members: int = MEMBERS
) -> Iterator[Event]:
    """Random drawer/giver pairs among the (already imported) members first .. first + members - 1."""
    rng = random.Random(seed)
    for n in range(count):
        drawer = rng.randrange(members)
        giver = rng.randrange(members - 1)
        if giver >= drawer:
            giver += 1
        yield drawn(f"{prefix}-{n:07d}", first + drawer, first + giver, 100 + n % 900, small=small)


def new_member_events(prefix: str, count: int, start: int) -> list[Event]:
    """Events whose two parties MC has never seen (odd drawer: two emails, no SMS... and even: SMS)."""
    out = []
    for n in range(count):
        drawer = NEW_MEMBER_BASE + start + 2 * n + 1
        giver = NEW_MEMBER_BASE + start + 2 * n
        out.append(drawn(f"{prefix}-{n:06d}", drawer, giver, 100 + n % 900))
    return out
