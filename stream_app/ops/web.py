"""Faust web views every worker serves (design.md section 8), and what guards all of them.

Every route of the web server, Faust's own blueprints included, sits behind two aiohttp middlewares:

- `require_token`: with `WEB_AUTH_TOKEN` set, a request needs `Authorization: Bearer <token>`, or is
  answered 401, whatever its path (an unknown path too: the routes are not advertised). Open are only
  `/health/` (probes) and MC's ENS callback (`/mc/ens/{run_id}/`, verified by its signature, see
  stages/suppression.py), the latter only when it is not on a listener of its own (`ENS_LISTEN`).
  Unset, the worker runs only on a loopback bind (`Settings.problems`), and nothing is asked.
- `mask_answers`: every JSON or plain-text answer goes through `ops.logs.mask_text`, so no view can
  hand out an address or a number, whatever it reads (belt and braces: the views mask their own data).

Faust's `/table/` blueprint answered a key with the stored value's bytes repr (the raw email and
phone); it stays off, and `/table/` is served here in its place, with the same routes, answering the
decoded value with emails and phones masked.
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import orjson
from aiohttp import web as aiohttp_web
from faust import web
from faust.exceptions import SameNode
from faust.tables import GlobalTable
from faust.web import Request, Response, View

from stream_app.domain.subscribers import KNOWN_SUBSCRIBERS_TABLE, SEP
from stream_app.ops.logs import mask_text, mask_value
from stream_app.stages.tracking import summarise

if TYPE_CHECKING:
    from stream_app.runtime.app import Runtime

HEALTH_PATH = "/health/"
ENS_PATH = "/mc/ens/{run_id}/"
MASKED_TYPES = ("application/json", "text/plain")

Handler = Callable[[aiohttp_web.Request], Awaitable[aiohttp_web.StreamResponse]]


def route_path(request: aiohttp_web.Request) -> str | None:
    """The route pattern a request matched (`/events/{event_id}/`), or None for no route."""
    resource = request.match_info.route.resource
    return resource.canonical if resource is not None else None


def bearer_ok(header: str | None, token: str) -> bool:
    scheme, _, given = (header or "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), token.encode())


def auth_middleware(token: str, open_paths: frozenset[str]) -> Any:
    @aiohttp_web.middleware
    async def require_token(request: aiohttp_web.Request, handler: Handler) -> aiohttp_web.StreamResponse:
        if (
            token
            and route_path(request) not in open_paths
            and not bearer_ok(request.headers.get("Authorization"), token)
        ):
            return aiohttp_web.json_response(
                {"error": "unauthorized: send Authorization: Bearer <WEB_AUTH_TOKEN>"},
                status=401,
                headers={"WWW-Authenticate": 'Bearer realm="stream_app"'},
            )
        return await handler(request)

    return require_token


@aiohttp_web.middleware
async def mask_answers(request: aiohttp_web.Request, handler: Handler) -> aiohttp_web.StreamResponse:
    response = await handler(request)
    if isinstance(response, aiohttp_web.Response) and response.content_type in MASKED_TYPES:
        body = response.body
        if isinstance(body, bytes | bytearray) and body:
            text = bytes(body).decode(response.charset or "utf-8", "replace")
            masked = mask_text(text)
            if masked != text:
                response.body = masked.encode(response.charset or "utf-8")
    return response


def readable(table: str, raw: Any) -> Any:
    """A table value as an operator may see it: decoded (JSON, or the known-subscribers signature)
    and masked. Values are raw bytes each stage encodes itself (runtime/app.py `Runtime.table`)."""
    if isinstance(raw, bytes | bytearray):
        try:
            raw = orjson.loads(raw)
        except orjson.JSONDecodeError:
            raw = bytes(raw).decode("utf-8", "replace")
            if table == KNOWN_SUBSCRIBERS_TABLE and SEP in raw:
                email, _, mobile = raw.partition(SEP)
                raw = {"email": email or None, "mobile": mobile or None}
    return mask_value(raw)


tables = web.Blueprint("stream_app-tables")


@tables.route("/", name="list")
class TableList(View):
    """The tables of this worker."""

    async def get(self, request: Request) -> Response:
        return self.json([{"name": t.name, "help": t.help} for t in self.app.tables.values()])


@tables.route("/{name}/", name="detail")
class TableDetail(View):
    async def get(self, request: Request, name: str) -> Response:
        table = self.app.tables.get(name)
        if table is None:
            return self.json({"error": "unknown table", "name": mask_text(name)}, status=404)
        return self.json({"name": table.name, "help": table.help})


@tables.route("/{name}/{key}/", name="key-detail")
class TableKeyDetail(View):
    """One key's value, decoded and masked; asked of any worker, answered by the key's owner (the
    request is forwarded with its headers, the token included)."""

    async def get(self, request: Request, name: str, key: str) -> Response:
        table: Any = self.app.tables.get(name)
        if table is None:
            return self.json({"error": "unknown table", "name": mask_text(name)}, status=404)
        if not isinstance(table, GlobalTable):  # a global table is whole on every worker
            try:
                return await self.app.router.route_req(name, key, self.web, request)
            except SameNode:
                pass
        raw = table.get(key)
        if raw is None:
            return self.json({"error": "key not found", "table": name, "key": mask_text(key)}, status=404)
        return self.json(readable(name, raw))


def install(runtime: Runtime) -> None:
    app, event_trace, settings = runtime.app, runtime.event_trace, runtime.settings
    open_paths = {HEALTH_PATH} if settings.ens_host_port else {HEALTH_PATH, ENS_PATH}
    web_app: aiohttp_web.Application = app.web.web_app  # type: ignore[attr-defined]  # the aiohttp driver's
    web_app.middlewares.append(auth_middleware(settings.web_auth_token, frozenset(open_paths)))
    web_app.middlewares.append(mask_answers)
    app.web.blueprints.add("/table", tables)

    @app.page("/events/{event_id}/")
    class EventView(View):
        """What happened to one input event, stage by stage; asked of any worker, answered by the
        owner of the event's partition."""

        @app.table_route(table=event_trace, match_info="event_id")  # type: ignore[arg-type]
        async def get(self, request: Request, event_id: str) -> Response:
            return self.json(mask_value(summarise(event_id, event_trace.get(event_id))))

    health = runtime.health

    @app.page(HEALTH_PATH)
    class HealthView(View):
        """Ready once the worker owns partitions and has restored its tables (probes and tests);
        unhealthy for good once its state store failed (runtime/health.py): restart it."""

        async def get(self, request: Request) -> Response:
            if not health.healthy:
                return self.json({"ready": False, "store_failure": health.store_failure}, status=503)
            assigned = len(app.consumer.assignment()) if app.consumer else 0
            recovered = app.tables.recovery.completed.is_set()  # type: ignore[attr-defined]
            ready = assigned > 0 and not app.rebalancing and recovered
            return self.json({"ready": ready, "assigned_partitions": assigned}, status=200 if ready else 503)
