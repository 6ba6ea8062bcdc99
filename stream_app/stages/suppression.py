"""Suppression: addresses MC reported as bounced or unsubscribed are never uploaded or mailed again.

`email.bounced` feeds the `suppressed` global table (every worker holds all of it): the bounces and
unsubscribes the feedback stage reads from MC's tracking objects (stages/feedback.py), those ENS
reports (Transactional Messaging sends), and an operator's `suppression lift`. A hard bounce or an
unsubscribe suppresses at once; soft bounces are counted per address (the `soft-bounces` table) and
suppress once they meet MC's own rule (domain/suppression.py).

At start-up the worker registers an Event Notification Service (ENS) callback with MC, as any ENS
client does: register, answer MC's verification POST, verify, subscribe. ENS reports Transactional
Messaging sends only (reference §7.1); the subscription takes the events that say what became of a
message after `sent` (domain/feedback.py ENS_EVENTS: EmailSent, EmailNotSent, EmailBounced,
EmailUnsubscribe, SmsSent, SmsNotSent, SmsDelivered, SmsBounced). Each signed batch MC POSTs is
checked against the signature key and its events relayed onto `stream_app.feedback`, where the
feedback stage's owner joins each to its notification by messageKey (the send's watch), dedupes
ENS's repeated deliveries and reports the status, the bounces and unsubscribes going to
`email.bounced` (stages/feedback.py).

The callback answers MC 2xx only once Kafka has acknowledged every event of the batch (5xx
otherwise: MC delivers the batch again), is verified by its signature alone (no operator token), and
is served on the web port or, with `ENS_LISTEN=host:port`, on a listener of its own that serves
nothing else, so that the operator port need not face MC. Unsigned verification probes are taken
only on this run's callback path while it registers, and only a few.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from typing import TYPE_CHECKING, Any

import mode
import orjson
from aiohttp import web as aiohttp_web
from faust.types import StreamT
from faust.web import Request, Response, View

from stream_app.contract.internal import decode_record, encode_record
from stream_app.contract.records import EmailBounced
from stream_app.contract.topics import BOUNCED_TOPIC, FEEDBACK_TOPIC
from stream_app.domain import feedback as feedback_rules
from stream_app.domain import suppression as rules
from stream_app.domain.notifications import mask_email
from stream_app.mc import MCError, verify_ens_signature
from stream_app.runtime.health import is_store_error
from stream_app.runtime.outputs import Out, Outputs
from stream_app.stages.feedback import ens_report

if TYPE_CHECKING:
    from stream_app.runtime.app import Runtime

log = logging.getLogger("stream_app.suppression")

ENS_PATH = "/mc/ens/{run_id}/"
SIGNATURE_HEADER = "x-sfmc-ens-signature"
# Verification probes kept while registering (MC sends one per registration; the rest is noise).
MAX_PROBES = 4
# How long a batch's events may take to reach Kafka before MC is told to deliver it again.
BOUNCE_ACK_SECONDS = 15.0


def reports_from(batch: Any) -> list[Out]:
    """ENS delivers a JSON array of events (§7.2): each one this service subscribed to, as the
    record the feedback stage reads (stages/feedback.py joins it to its message)."""
    events = batch if isinstance(batch, list) else [batch]
    return [
        ens_report(item)
        for item in events
        if isinstance(item, dict) and item.get("eventCategoryType") in feedback_rules.ENS_EVENTS
    ]


class SuppressionList:
    """The `suppressed` global table and the soft bounces per address, fed by `email.bounced`
    (domain/suppression.py says who goes on the list)."""

    def __init__(self, runtime: Runtime) -> None:
        self.settings = runtime.settings
        self.suppressed = runtime.suppressed
        # One partition, like email.bounced that writes it: on the worker of the suppression agent.
        self.soft_bounces: Any = runtime.table("soft-bounces", partitions=1)

    def apply(self, bounce: EmailBounced) -> None:
        address = bounce.email.strip().lower()
        what = rules.action(bounce.kind, bounce.bounce_code)
        if what == rules.LIFT:
            was = self.suppressed.pop(address, None)
            self.soft_bounces.pop(address, None)
            # The audit trail: who asked is in the reason (`suppression lift --reason`).
            log.warning(
                "suppression lifted" if was is not None else "suppression lift for an address not suppressed",
                extra={"email": mask_email(address), "reason": bounce.reason[:300]},
            )
            return
        if what == rules.SOFT:
            identity = bounce.mc_event or f"{bounce.definition_key}:{bounce.event_date or bounce.at}"
            raw, added = rules.add_soft_bounce(
                self.soft_bounces.get(address), identity, bounce.event_date or bounce.at
            )
            if not added:
                return
            self.soft_bounces[address] = raw
            limit, days = self.settings.soft_bounce_limit, self.settings.soft_bounce_window_days
            if not rules.soft_rule_met(raw, limit, days) or address in self.suppressed:
                return
            bounce = EmailBounced(
                email=address,
                kind=bounce.kind,
                at=bounce.at,
                subscriber_key=bounce.subscriber_key,
                bounce_code=bounce.bounce_code,
                reason=f"{limit} soft bounces spanning {days:g}+ days (MC's rule); last: {bounce.reason}",
                definition_key=bounce.definition_key,
                mc_event=bounce.mc_event,
                event_date=bounce.event_date,
                notification_id=bounce.notification_id,
            )
        elif address in self.suppressed:
            return  # the first reason stays (a repeated bounce or a later unsubscribe changes nothing)
        self.suppressed[address] = encode_record(bounce)
        log.info("address suppressed", extra={"email": mask_email(address), "kind": bounce.kind})


class EnsRegistration:
    """This worker run's ENS callback: registered at start, removed on a clean stop."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.settings = runtime.settings
        # A fresh path per worker run: MC refuses a URL that is already registered.
        self.run_id = uuid.uuid4().hex[:12]
        self.callback_id = ""
        self.signature_key = ""
        self.verification: dict[str, str] = {}  # callback id -> key, at most MAX_PROBES
        self.registering = False
        self.ready = asyncio.Event()

    def take_probe(self, run_id: str, payload: dict[str, Any]) -> bool:
        """MC's unsigned verification POST: taken only on this run's path while it registers."""
        if run_id != self.run_id or not self.registering:
            return False
        while len(self.verification) >= MAX_PROBES:
            self.verification.pop(next(iter(self.verification)))
        self.verification[str(payload.get("callbackId"))] = str(payload["verificationKey"])[:200]
        return True

    @property
    def callback_url(self) -> str:
        return f"{self.settings.callback_url.rstrip('/')}/{self.run_id}/"

    async def register(self) -> None:
        rest = self.runtime.marketing_cloud().rest
        port = self.settings.web_port
        self.registering = True
        try:
            callback_id, signature_key = await rest.register_callback(f"stream_app-{port}", self.callback_url)
            self.callback_id, self.signature_key = callback_id, signature_key
            for _ in range(100):  # MC probes the URL during registration; the key is usually here already
                if callback_id in self.verification:
                    break
                await asyncio.sleep(0.05)
            await rest.verify_callback(callback_id, self.verification.pop(callback_id, ""))
        finally:
            self.registering = False
            self.verification.clear()
        await rest.subscribe(callback_id, f"feedback-{port}", feedback_rules.ENS_EVENTS)
        self.ready.set()
        log.info("registered ENS callback for MC's feedback", extra={"callback_id": callback_id})

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


class EnsCallback:
    """What MC's POSTs to this run's callback are answered, whichever server they reach."""

    def __init__(self, registration: EnsRegistration, feedback_topic: Any) -> None:
        self.registration = registration
        self.feedback_topic = feedback_topic

    async def answer(self, run_id: str, body: bytes, signature: str | None) -> tuple[int, dict[str, Any]]:
        registration = self.registration
        if run_id != registration.run_id:  # another run's path (a restarted worker's old callback)
            return 404, {"error": "unknown callback"}
        try:
            payload = orjson.loads(body)
        except orjson.JSONDecodeError:
            return 400, {"error": "not JSON"}
        if isinstance(payload, dict) and "verificationKey" in payload:
            # MC's liveness probe during registration: unsigned, answered at once.
            if not registration.take_probe(run_id, payload):
                return 409, {"error": "not registering"}
            return 200, {"ok": True}
        if not registration.signature_key or not verify_ens_signature(
            body, signature, registration.signature_key
        ):
            log.warning("ENS batch with a bad signature refused")
            return 401, {"error": "bad signature"}
        reports = reports_from(payload)
        try:
            await asyncio.wait_for(self.relay(reports), BOUNCE_ACK_SECONDS)
        except Exception as exc:  # MC delivers the batch again; the feedback stage dedupes
            log.warning("ENS batch not relayed to Kafka (%s); MC will deliver it again", type(exc).__name__)
            return 503, {"error": "events not stored; deliver again"}
        log.info("ENS events received", extra={"events": len(reports)})
        return 200, {"ok": True}

    async def relay(self, reports: list[Out]) -> None:
        """Every event onto `stream_app.feedback`, returning once Kafka acknowledged all of them."""
        delivered = [
            await self.feedback_topic.send(key=out.key, value=out.value, force=True) for out in reports
        ]
        await asyncio.gather(*delivered)


class EnsListener(mode.Service):
    """`ENS_LISTEN`: an aiohttp server of its own for MC's callback, serving nothing else."""

    def __init__(self, callback: EnsCallback, host: str, port: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.callback, self.host, self.port = callback, host, port
        self.listening = asyncio.Event()
        self._runner: aiohttp_web.AppRunner | None = None

    async def handle(self, request: aiohttp_web.Request) -> aiohttp_web.Response:
        status, answer = await self.callback.answer(
            request.match_info["run_id"], await request.read(), request.headers.get(SIGNATURE_HEADER)
        )
        return aiohttp_web.json_response(answer, status=status)

    async def on_start(self) -> None:
        web_app = aiohttp_web.Application(client_max_size=8 * 1024**2)
        web_app.router.add_post(ENS_PATH, self.handle)
        self._runner = aiohttp_web.AppRunner(web_app, access_log=None)
        await self._runner.setup()
        await aiohttp_web.TCPSite(self._runner, self.host, self.port).start()
        self.listening.set()
        log.info("ENS callback listening", extra={"listen": f"{self.host}:{self.port}"})

    async def on_stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()


def install(runtime: Runtime) -> None:
    app, suppressed, bounced_topic = runtime.app, runtime.suppressed, runtime.topics.bounced
    out = Outputs(app)
    registration = EnsRegistration(runtime)
    runtime.before_mc_close(registration.unregister)
    # Every worker's callback relays onto the feedback stage's one-partition topic (its owner joins
    # and dedupes them); a worker without the senders only produces to it.
    feedback_topic = app.topic(FEEDBACK_TOPIC, value_type=bytes, value_serializer="raw", partitions=1)
    callback = EnsCallback(registration, feedback_topic)
    listen = runtime.settings.ens_host_port
    listener: list[EnsListener] = []

    if listen is None:

        @app.page(ENS_PATH)
        class EnsCallbackView(View):
            async def post(self, request: Request, run_id: str) -> Response:
                status, answer = await callback.answer(
                    run_id, await request.read(), request.headers.get(SIGNATURE_HEADER)
                )
                return self.json(answer, status=status)

    else:

        @app.service
        class WorkerEnsListener(EnsListener):
            def __init__(self, **kwargs: Any) -> None:
                assert listen is not None
                super().__init__(callback, *listen, **kwargs)
                listener.append(self)

    @app.task
    async def ens_registration() -> None:
        if listener:  # MC probes the callback while it registers: the listener must be up
            await listener[0].listening.wait()
        await registration.register_until_done()

    suppression_list = SuppressionList(runtime)

    @app.agent(bounced_topic, name="suppression")
    async def suppression(stream: StreamT) -> None:
        async for event in stream.events():
            try:
                suppression_list.apply(decode_record(EmailBounced, event.value, BOUNCED_TOPIC))
            except Exception as exc:  # keep the bounce: email.bounced.dlq replays it
                if is_store_error(exc):  # not the bounce's fault: stop, unacked (runtime/health.py)
                    await runtime.health.halt("suppression", exc)
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
