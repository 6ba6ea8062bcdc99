"""Event tracking: every stage's step for one input event, for `GET /events/{event_id}/`.

Stages publish `TraceStep`s keyed by event_id; this agent keeps them in a table keyed the same way,
so the web view can route a question to the worker that owns the event's partition.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import orjson
from faust.types import StreamT

from stream_app.contract.internal import decode_record
from stream_app.contract.records import TraceStep
from stream_app.runtime.health import is_store_error
from stream_app.runtime.outputs import Outputs

if TYPE_CHECKING:
    from stream_app.runtime.app import Runtime

log = logging.getLogger("stream_app.tracking")

# An event has at most a few dozen steps; the cap keeps a replay storm from growing one row forever.
MAX_STEPS = 100
# What a notification's summary keeps from its steps (the latest value wins).
NOTE_FIELDS = (
    "window",
    "file",
    "import_status",
    "via",
    "status",
    "reason",
    "mc_request_id",
    "attempts",
    "channel",
    "locale",
)


def append_step(raw: bytes | None, step: TraceStep) -> bytes:
    steps: list[dict[str, Any]] = orjson.loads(raw) if raw else []
    detail = dict(step.detail)
    intake = detail.pop("intake", None)
    if isinstance(intake, dict):
        steps += intake_steps(steps, intake, detail.get("notification_id"))
    steps.append({"stage": step.stage, "at": step.at, **detail})
    return orjson.dumps(steps[-MAX_STEPS:])


def intake_steps(
    steps: list[dict[str, Any]], intake: dict[str, Any], notification_id: Any
) -> list[dict[str, Any]]:
    """The intake's received and ready steps, which rode with a fast-path notification to the sender
    (intake.py): received once per event, ready once per notification."""
    at = intake.get("at", "")
    found = []
    if not any(s["stage"] == "received" for s in steps):
        where = {k: intake[k] for k in ("topic", "partition", "offset", "notifications") if k in intake}
        found.append({"stage": "received", "at": at, **where})
    found.append(
        {"stage": "ready", "at": at, "notification_id": notification_id, "via": intake.get("via", "")}
    )
    return found


def summarise(event_id: str, raw: bytes | None) -> dict[str, Any]:
    """The steps of one event, and each notification's latest outcome."""
    steps: list[dict[str, Any]] = orjson.loads(raw) if raw else []
    notifications: dict[str, dict[str, Any]] = {}
    for step in steps:
        nid = step.get("notification_id")
        if not nid:
            continue
        note = notifications.setdefault(nid, {"notification_id": nid, "stages": []})
        note["stages"].append(step["stage"])
        for field in NOTE_FIELDS:
            if step.get(field) not in (None, ""):
                note[field] = step[field]
    return {
        "event_id": event_id,
        "found": bool(steps),
        "steps": steps,
        "notifications": list(notifications.values()),
    }


def install(runtime: Runtime) -> None:
    event_trace = runtime.event_trace

    out = Outputs(runtime.app)

    @runtime.app.agent(runtime.topics.trace, name="event-tracker")
    async def tracker(stream: StreamT) -> None:
        async for event in stream.events():
            try:
                step = decode_record(TraceStep, event.value)  # no schema: `detail` nests the intake's
                event_trace[step.event_id] = append_step(event_trace.get(step.event_id), step)
            except Exception as exc:  # stream_app.trace.dlq keeps the step with the reason
                if is_store_error(exc):  # not the step's fault: stop, unacked (runtime/health.py)
                    await runtime.health.halt("tracking", exc)
                log.exception("could not record a trace step")
                await out.dead_letter(event, exc)
