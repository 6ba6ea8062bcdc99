"""Suppression: addresses MC reported as bounced are never uploaded or mailed again.

At start-up the worker registers an Event Notification Service (ENS) callback with MC, as any ENS
client does: register, answer MC's verification POST, verify, subscribe to `EmailBounced`. Each
signed batch MC POSTs is checked against the signature key, relayed onto `email.bounced`, and the
`suppressed` global table (every worker holds all of it) is built from that topic.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from typing import TYPE_CHECKING, Any

import orjson
from faust.types import StreamT
from faust.web import Request, Response, View

from stream_app.contract.records import EmailBounced
from stream_app.domain.notifications import mask_email
from stream_app.mc import MCError, verify_ens_signature
from stream_app.runtime.outputs import Outputs, now_rfc3339

if TYPE_CHECKING:
    from stream_app.runtime.app import Runtime

log = logging.getLogger("stream_app.suppression")

BOUNCE_EVENTS = ("TransactionalSendEvents.EmailBounced",)


def bounces_from(batch: Any) -> list[EmailBounced]:
    """ENS delivers a JSON array of events; keep the bounces, whatever else it carries."""
    events = batch if isinstance(batch, list) else [batch]
    bounces = []
    for item in events:
        if not isinstance(item, dict) or item.get("eventCategoryType") not in BOUNCE_EVENTS:
            continue
        info = item.get("info") or {}
        address = str(info.get("to") or "").strip().lower()
        if not address:
            continue
        bounces.append(
            EmailBounced(
                email=address,
                subscriber_key=info.get("subscriberKey"),
                kind=str(item["eventCategoryType"]).rsplit(".", 1)[-1],
                bounce_code=info.get("bounceCode"),
                reason=str(info.get("bounceMessage") or info.get("smtpReason") or ""),
                definition_key=item.get("definitionKey"),
                at=now_rfc3339(),
            )
        )
    return bounces


class EnsRegistration:
    """This worker run's ENS callback: registered at start, removed on a clean stop."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.settings = runtime.settings
        # A fresh path per worker run: MC refuses a URL that is already registered.
        self.run_id = uuid.uuid4().hex[:12]
        self.callback_id = ""
        self.signature_key = ""
        self.verification: dict[str, str] = {}
        self.ready = asyncio.Event()

    @property
    def callback_url(self) -> str:
        return f"{self.settings.callback_url.rstrip('/')}/{self.run_id}/"

    async def register(self) -> None:
        rest = self.runtime.marketing_cloud().rest
        port = self.settings.web_port
        callback_id, signature_key = await rest.register_callback(f"stream_app-{port}", self.callback_url)
        self.callback_id, self.signature_key = callback_id, signature_key
        for _ in range(100):  # MC probes the URL during registration; the key is usually here already
            if callback_id in self.verification:
                break
            await asyncio.sleep(0.05)
        await rest.verify_callback(callback_id, self.verification.pop(callback_id, ""))
        await rest.subscribe(callback_id, f"bounces-{port}", BOUNCE_EVENTS)
        self.ready.set()
        log.info("registered ENS callback for bounces", extra={"callback_id": callback_id})

    async def register_until_done(self) -> None:
        delay = 1.0
        while True:
            try:
                await self.register()
                return
            except MCError as exc:
                log.warning("ENS registration failed (%s); retrying in %.0f s", exc, delay)
            except Exception:
                log.exception("ENS registration failed; retrying in %.0f s", delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 60.0)

    async def unregister(self) -> None:
        """A clean stop removes this run's callback (and with it its subscription): each run
        registers a URL of its own, and MC would otherwise keep one dead callback per restart. A
        SIGKILLed run's callback stays; MC suspends it after failed deliveries."""
        if self.callback_id:
            await self.runtime.marketing_cloud().rest.delete_callback(self.callback_id)
            log.info("removed ENS callback", extra={"callback_id": self.callback_id})


def install(runtime: Runtime) -> None:
    app, suppressed, bounced_topic = runtime.app, runtime.suppressed, runtime.topics.bounced
    out = Outputs(app)
    registration = EnsRegistration(runtime)
    runtime.before_mc_close(registration.unregister)

    @app.task
    async def ens_registration() -> None:
        await registration.register_until_done()

    @app.page("/mc/ens/{run_id}/")
    class EnsCallback(View):
        async def post(self, request: Request, run_id: str) -> Response:
            body = await request.read()
            try:
                payload = orjson.loads(body)
            except orjson.JSONDecodeError:
                return self.json({"error": "not JSON"}, status=400)
            if isinstance(payload, dict) and "verificationKey" in payload:
                # MC's liveness probe during registration: unsigned, answered at once.
                registration.verification[str(payload.get("callbackId"))] = str(payload["verificationKey"])
                return self.json({"ok": True})
            signature = request.headers.get("x-sfmc-ens-signature")
            if not registration.signature_key or not verify_ens_signature(
                body, signature, registration.signature_key
            ):
                log.warning("ENS batch with a bad signature refused")
                return self.json({"error": "bad signature"}, status=401)
            for bounce in bounces_from(payload):
                await bounced_topic.send(key=bounce.email.encode(), value=bounce)
                log.info("bounce received", extra={"email": mask_email(bounce.email)})
            return self.json({"ok": True})

    @app.agent(bounced_topic, name="suppression")
    async def suppression(stream: StreamT[EmailBounced]) -> None:
        async for event in stream.events():
            try:
                bounce = event.value
                suppressed[bounce.email.lower()] = bounce.dumps(serializer="json")
            except Exception as exc:  # keep the bounce: email.bounced.dlq replays it
                log.exception("could not record a bounce")
                await out.dead_letter(event, exc)

    @app.page("/suppressed/{address}/")
    class SuppressedView(View):
        """Is this address on the suppression list? (Every worker holds the whole list.)"""

        async def get(self, request: Request, address: str) -> Response:
            raw = suppressed.get(address.strip().lower())
            if raw is None:
                return self.json({"address": mask_email(address), "suppressed": False})
            bounce = orjson.loads(raw)
            return self.json(
                {
                    "address": mask_email(address),
                    "suppressed": True,
                    "kind": bounce.get("kind"),
                    "bounce_code": bounce.get("bounce_code"),
                    "since": bounce.get("at"),
                }
            )
