"""ENS state and delivery: callbacks, subscriptions, and signed, retried POSTs of event batches (§7.4).

The HTTP routes that register callbacks and subscriptions are in ens.py; this module knows nothing of
requests, so that what publishes events (the sends) need not import any route.

Delivery rules, as MC's: a batch is retried up to 3 times (4 attempts) when the callback does not answer
2xx within 2 s, then dropped; 2 consecutive dropped batches within 5 minutes suspend the callback for 10
minutes (events arriving meanwhile are dropped).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import json
import time
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from .state import State, iso, utcnow

# What a subscription may ask for (§7.2); ens_events.py says which of them the sandbox ever emits.
CATEGORIES = (
    "TransactionalSendEvents.EmailSent",
    "TransactionalSendEvents.EmailNotSent",
    "TransactionalSendEvents.EmailBounced",
    "EngagementEvents.EmailOpen",
    "EngagementEvents.EmailClick",
    "EngagementEvents.EmailUnsubscribe",
    "TransactionalSendEvents.SmsSent",
    "TransactionalSendEvents.SmsNotSent",
    "TransactionalSendEvents.SmsTransient",
    "TransactionalSendEvents.SmsDelivered",
    "TransactionalSendEvents.SmsBounced",
)
DELIVERY_TIMEOUT = 2.0
RETRIES = 3
RETRY_DELAYS = (0.5, 1.0, 2.0)
SUSPEND_WINDOW = 300.0
SUSPEND_SECONDS = 600.0
PROBE_TIMEOUT = 10.0


def sign(signature_key: str, body: bytes) -> str:
    """``x-sfmc-ens-signature``: base64 HMAC-SHA256 of the raw body, keyed by the key's UTF-8 bytes."""
    return base64.b64encode(hmac.new(signature_key.encode("utf-8"), body, hashlib.sha256).digest()).decode()


@dataclass
class Callback:
    callback_id: str
    name: str
    url: str
    signature_key: str
    verification_key: str
    max_batch_size: int = 1000
    verified: bool = False
    failed_batches: list[float] = field(default_factory=list)
    suspended_until: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return {
            "callbackId": self.callback_id,
            "callbackName": self.name,
            "url": self.url,
            "maxBatchSize": self.max_batch_size,
            "status": "suspended"
            if time.monotonic() < self.suspended_until
            else ("verified" if self.verified else "unverified"),
        }


@dataclass
class Subscription:
    subscription_id: str
    callback_id: str
    name: str
    categories: list[str]
    filters: list[str]
    status: str = "active"

    def to_json(self) -> dict[str, Any]:
        return {
            "subscriptionId": self.subscription_id,
            "subscriptionName": self.name,
            "callbackId": self.callback_id,
            "eventCategoryTypes": list(self.categories),
            "filters": list(self.filters),
            "status": self.status,
        }

    def matches(self, event: dict[str, Any]) -> bool:
        if event["eventCategoryType"] not in self.categories:
            return False
        info = event.get("info", {})
        for f in self.filters:
            name, _, value = f.partition("=")
            name = name.strip()
            actual = event.get(name, info.get(name))
            if str(actual) != value.strip():
                return False
        return True


class EnsManager:
    def __init__(self, state: State) -> None:
        self.state = state
        self.callbacks: dict[str, Callback] = {}
        self.subscriptions: dict[str, Subscription] = {}
        self.deliveries: list[dict[str, Any]] = []  # attempt log, for /_sandbox/ens
        self._tasks: set[asyncio.Task[None]] = set()
        self._session: aiohttp.ClientSession | None = None

    def session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession()
        return self._session

    async def close(self) -> None:
        for t in list(self._tasks):
            t.cancel()
        for t in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        if self._session is not None:
            await self._session.close()

    def reset(self) -> None:
        for t in list(self._tasks):
            t.cancel()
        self._tasks.clear()
        self.callbacks.clear()
        self.subscriptions.clear()
        self.deliveries.clear()

    def _spawn(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def publish(self, event: dict[str, Any]) -> None:
        """Every active subscription the event matches delivers it: a callback subscribed to it twice
        gets it twice [INF]. Never kinder than MC, whose delivery is at least once (§7.4): a client
        must take an event delivered again."""
        targets: list[str] = []
        for sub in self.subscriptions.values():
            cb = self.callbacks.get(sub.callback_id)
            if sub.status == "active" and cb is not None and cb.verified and sub.matches(event):
                targets.append(cb.callback_id)
        for cb_id in targets:
            cb = self.callbacks[cb_id]
            if time.monotonic() < cb.suspended_until:
                self.deliveries.append(
                    {"callbackId": cb_id, "outcome": "dropped_suspended", "at": iso(utcnow())}
                )
                continue
            self._spawn(self._deliver(cb, [event]))

    async def _deliver(self, cb: Callback, batch: list[dict[str, Any]]) -> None:
        body = json.dumps(batch, ensure_ascii=False).encode("utf-8")
        headers = {"Content-Type": "application/json", "x-sfmc-ens-signature": sign(cb.signature_key, body)}
        for attempt in range(RETRIES + 1):
            outcome: str
            try:
                async with self.session().post(
                    cb.url, data=body, headers=headers, timeout=aiohttp.ClientTimeout(total=DELIVERY_TIMEOUT)
                ) as resp:
                    ok = 200 <= resp.status <= 204
                    outcome = f"http {resp.status}"
            except (aiohttp.ClientError, TimeoutError) as exc:
                ok, outcome = False, f"error {type(exc).__name__}"
            self.deliveries.append(
                {
                    "callbackId": cb.callback_id,
                    "attempt": attempt + 1,
                    "ok": ok,
                    "outcome": outcome,
                    "events": len(batch),
                    "at": iso(utcnow()),
                }
            )
            if ok:
                self.state.bump("ens_deliveries")
                cb.failed_batches.clear()
                return
            self.state.bump("ens_delivery_failures")
            if attempt < RETRIES:
                await asyncio.sleep(RETRY_DELAYS[attempt])
        now = time.monotonic()
        cb.failed_batches = [t for t in cb.failed_batches if now - t < SUSPEND_WINDOW] + [now]
        if len(cb.failed_batches) >= 2:
            cb.suspended_until = now + SUSPEND_SECONDS
            cb.failed_batches.clear()

    async def probe(self, cb: Callback) -> str | None:
        """MC's liveness probe on registration: an error text, or None when the callback answered 2xx."""
        payload = json.dumps({"callbackId": cb.callback_id, "verificationKey": cb.verification_key}).encode()
        try:
            async with self.session().post(
                cb.url,
                data=payload,
                headers={"Content-Type": "application/json"},
                timeout=aiohttp.ClientTimeout(total=PROBE_TIMEOUT),
            ) as resp:
                if 200 <= resp.status < 300:
                    return None
                return f"callback answered HTTP {resp.status}"
        except (aiohttp.ClientError, TimeoutError) as exc:
            return f"callback unreachable ({type(exc).__name__})"
