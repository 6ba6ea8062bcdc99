"""The sandbox's own JSON API under ``/_sandbox/`` (design §6): what it received, and test controls."""

from __future__ import annotations

import json
from datetime import datetime

from aiohttp import web

from . import clock
from .context import sandbox_of
from .faults import FaultError
from .sendlog import DATA_EXTENSIONS, value_text
from .state import iso


async def messages(request: web.Request) -> web.Response:
    sb = sandbox_of(request)
    channel = request.query.get("channel")
    key = request.query.get("subscriber_key")
    status = request.query.get("status")  # queued, sent, not_sent, bounced, unsubscribed, delivered, ...
    out = [
        m.to_json()
        for m in sb.state.messages
        if (channel is None or m.channel == channel)
        and (key is None or m.subscriber_key == key)
        and (status is None or m.status == status)
    ]
    return web.json_response(out)


async def mobile_subscriptions(request: web.Request) -> web.Response:
    """MobileConnect subscriptions as [{mobileNumber, keyword, status}] (mobile_subscriptions.py)."""
    subs = sandbox_of(request).state.mobile_subscriptions
    return web.json_response([{"mobileNumber": n, "keyword": k, "status": v} for (n, k), v in subs.items()])


async def subscribers(request: web.Request) -> web.Response:
    return web.json_response([s.to_json() for s in sandbox_of(request).state.subscribers.values()])


async def imports(request: web.Request) -> web.Response:
    return web.json_response([j.to_json() for j in sandbox_of(request).state.imports.values()])


async def send_log(request: web.Request) -> web.Response:
    """Both send logs, as {name: [row]}, values as SOAP returns them except LogDate (ISO, for tests)."""
    state = sandbox_of(request).state
    out = {
        name: [
            {f: iso(v) if isinstance(v, datetime) else value_text(v) for f, v in row.items()}
            for row in state.send_logs.get(name, ())
        ]
        for name in DATA_EXTENSIONS
    }
    return web.json_response(out)


async def stats(request: web.Request) -> web.Response:
    sb = sandbox_of(request)
    out = dict(sb.state.stats)
    out["messages"] = len(sb.state.messages)
    out["subscribers"] = len(sb.state.subscribers)
    out["imports"] = len(sb.state.imports)
    out["active_tokens"] = len(sb.state.tokens)
    return web.json_response(out)


async def faults_get(request: web.Request) -> web.Response:
    return web.json_response(sandbox_of(request).faults.to_json())


async def faults_post(request: web.Request) -> web.Response:
    sb = sandbox_of(request)
    try:
        body = await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        return web.json_response({"error": "body must be JSON"}, status=400)
    items = body if isinstance(body, list) else [body]
    try:
        added = [sb.faults.add(item if isinstance(item, dict) else {}) for item in items]
    except (FaultError, TypeError, ValueError) as exc:
        return web.json_response({"error": str(exc)}, status=400)
    return web.json_response(
        [f.to_json() for f in added] if isinstance(body, list) else added[0].to_json(), status=201
    )


async def faults_delete(request: web.Request) -> web.Response:
    sandbox_of(request).faults.clear()
    return web.json_response([])


async def held_get(request: web.Request) -> web.Response:
    """Answers held by ``hold_answer`` faults (faults.py): each call's accepted sends, and whether its
    answer is still held; a test awaits this rather than sleeping into the window."""
    return web.json_response([h.to_json() for h in sandbox_of(request).faults.held])


async def held_delete(request: web.Request) -> web.Response:
    """Let every held answer go now, or only the one named by ``?id=``."""
    raw = request.query.get("id")
    if raw is not None and not raw.isdigit():
        return web.json_response({"error": "id must be a held answer's id"}, status=400)
    held_id = int(raw) if raw is not None else None
    return web.json_response({"released": sandbox_of(request).faults.release_all(held_id)})


async def reset(request: web.Request) -> web.Response:
    sandbox_of(request).reset()
    return web.json_response({"reset": True})


async def expire_tokens(request: web.Request) -> web.Response:
    """Test hook: every issued token expires now (clients then see 401 / Token Expired)."""
    sb = sandbox_of(request)
    count = len(sb.state.tokens)
    for token in sb.state.tokens:
        sb.state.tokens[token] = 0.0
    return web.json_response({"expired": count})


async def ens(request: web.Request) -> web.Response:
    manager = sandbox_of(request).ens
    return web.json_response(
        {
            "callbacks": [cb.to_json() for cb in manager.callbacks.values()],
            "subscriptions": [s.to_json() for s in manager.subscriptions.values()],
            "deliveries": list(manager.deliveries),
        }
    )


async def health(request: web.Request) -> web.Response:
    return web.json_response({"ok": True})


async def clock_get(request: web.Request) -> web.Response:
    return web.json_response({"now": iso(clock.now()), "offset_seconds": clock.offset_seconds()})


async def clock_post(request: web.Request) -> web.Response:
    """Test clock: ``{"now": "<ISO 8601>"}`` sets it, ``{"advance_seconds": N}`` moves it on,
    ``{"now": null}`` puts it back on real time. SMS held by a blackout window go out when it reads
    their window's end (blackout.Holds); a reset also puts the clock back."""
    sb = sandbox_of(request)
    try:
        body = await request.json()
        if not isinstance(body, dict):
            raise ValueError("body must be a JSON object")
        if "advance_seconds" in body:
            clock.advance(float(body["advance_seconds"]))
        elif body.get("now") is None:
            clock.reset()
        else:
            when = datetime.fromisoformat(str(body["now"]).replace("Z", "+00:00"))
            if when.tzinfo is None:
                raise ValueError("now needs a UTC offset")
            clock.set_now(when)
    except (json.JSONDecodeError, UnicodeDecodeError, TypeError, ValueError) as exc:
        return web.json_response({"error": f"expected now (ISO 8601) or advance_seconds: {exc}"}, status=400)
    sb.holds.rearm()
    return await clock_get(request)


def add_routes(app: web.Application) -> None:
    app.router.add_get("/_sandbox/messages", messages)
    app.router.add_get("/_sandbox/subscribers", subscribers)
    app.router.add_get("/_sandbox/mobile-subscriptions", mobile_subscriptions)
    app.router.add_get("/_sandbox/imports", imports)
    app.router.add_get("/_sandbox/send-log", send_log)
    app.router.add_get("/_sandbox/stats", stats)
    app.router.add_get("/_sandbox/faults", faults_get)
    app.router.add_post("/_sandbox/faults", faults_post)
    app.router.add_delete("/_sandbox/faults", faults_delete)
    app.router.add_get("/_sandbox/held", held_get)
    app.router.add_delete("/_sandbox/held", held_delete)
    app.router.add_post("/_sandbox/reset", reset)
    app.router.add_post("/_sandbox/tokens/expire", expire_tokens)
    app.router.add_get("/_sandbox/ens", ens)
    app.router.add_get("/_sandbox/health", health)
    app.router.add_get("/_sandbox/clock", clock_get)
    app.router.add_post("/_sandbox/clock", clock_post)
