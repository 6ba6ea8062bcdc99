"""Wires the HTTP app (auth, SOAP, REST, SMS, ENS, inspection) and the SFTP server together."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys
from collections.abc import Awaitable, Callable

import asyncssh
from aiohttp import web

from . import auth, call_budget, ens, inspection, rest, sms, soap, transactional
from .context import SANDBOX, Sandbox
from .ens_manager import EnsManager
from .faults import FaultRegistry, RateLimiter, accepted_since
from .http import DOC_URL
from .imports import ImportManager
from .sftp import empty_folders, load_host_key, start_sftp, write_known_hosts
from .state import Config, State

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def target_of(path: str) -> str | None:
    p = path.lower()
    if p.startswith("/_sandbox") or p in ("/etframework.wsdl", "/etframeworkfault.xsd"):
        return None
    if p in ("/v2/token", "/v1/requesttoken"):
        return "auth"
    if p == "/service.asmx":
        return "soap"
    if p.startswith("/sms/"):
        return "sms"
    return "rest"


def _rest_429(retry_after: int, message: str = "Rate limit exceeded") -> web.Response:
    return web.json_response(
        {"message": message, "errorcode": 50100, "retryAfter": retry_after, "documentation": DOC_URL},
        status=429,
        headers={"Retry-After": str(retry_after)},
    )


def _soap_rate_limited(sb: Sandbox, status: int = 500, retry_after: int | None = 1) -> web.Response:
    return soap.fault_response(
        "Rate Limited",
        faultcode="soap:Server",
        code=17,
        status=status,
        actor=f"{sb.config.base_url}Service.asmx",
        headers=None if retry_after is None else {"Retry-After": str(retry_after)},
    )


def _rest_blocked() -> web.Response:
    # Too many concurrent requests: MC gives no Retry-After, the caller has to slow down by itself.
    return web.json_response(
        {"message": "Your requests are temporarily blocked.", "errorcode": 50200, "documentation": DOC_URL},
        status=429,
    )


def _error500(sb: Sandbox, target: str) -> web.Response:
    if target == "soap":
        return soap.fault_response(
            "Server was unable to process request.",
            faultcode="soap:Server",
            actor=f"{sb.config.base_url}Service.asmx",
        )
    if target == "auth":
        return web.json_response(
            {
                "error": "server_error",
                "error_description": "An internal error occurred.",
                "error_uri": "https://developer.salesforce.com/docs",
            },
            status=500,
        )
    return web.json_response(
        {"message": "Internal Server Error", "errorcode": 0, "documentation": DOC_URL}, status=500
    )


def _drop(request: web.Request) -> web.Response:
    transport = request.transport
    if transport is not None:
        transport.abort()  # RST-like: the client sees the connection die with no response
    raise asyncio.CancelledError  # aiohttp treats it as a vanished client and writes nothing


@web.middleware
async def gate(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Counts calls, then applies the rate limit and injected faults before the real handler."""
    sb = request.app[SANDBOX]
    target = target_of(request.path)
    if target is None:
        return await handler(request)
    if target not in ("soap", "rest", "sms"):
        return await _faulted(request, handler, sb, target)
    sb.state.bump(f"{target}_calls")
    allowed, retry_after = sb.limiter.allow()
    if not allowed:
        sb.state.bump("rate_limited")
        return _soap_rate_limited(sb) if target == "soap" else _rest_429(retry_after)
    family = "soap" if target == "soap" else "rest"
    budget = request.app[call_budget.BUDGET]
    verdict = budget.admit(family)
    if verdict.outcome == "rate":
        sb.state.bump("rate_limited")
        return (
            _soap_rate_limited(sb, retry_after=None) if family == "soap" else _rest_429(verdict.retry_after)
        )
    if verdict.outcome == "concurrency":
        sb.state.bump("rate_limited")
        return _rest_blocked()
    try:
        return await _faulted(request, handler, sb, target)
    finally:
        budget.release(family)


async def _faulted(request: web.Request, handler: Handler, sb: Sandbox, target: str) -> web.StreamResponse:
    """Injected faults, then the real handler."""
    fault = sb.faults.take(target)
    if fault is not None:
        sb.state.bump("faults_injected")
        if fault.mode == "error500":
            return _error500(sb, target)
        if fault.mode == "error429":
            # Per the fault contract every target answers 429 + Retry-After: 1; SOAP keeps MC's fault body.
            return _soap_rate_limited(sb, status=429) if target == "soap" else _rest_429(1)
        if fault.mode == "disconnect":
            return _drop(request)
        await asyncio.sleep(fault.seconds)
        if fault.mode == "timeout":
            return web.json_response({"message": "Gateway Timeout", "errorcode": 0}, status=504)
    if sb.faults.holds_for(target):
        # The body in hand first: the handler then runs to its answer without yielding, so the
        # messages added meanwhile are this call's own (faults.py, hold_answer).
        await request.read()
        last = sb.state.messages[-1] if sb.state.messages else None
        response = await _answer(request, handler, target)
        await sb.faults.hold(target, accepted_since(sb.state.messages, last))
        return response
    return await _answer(request, handler, target)


async def _answer(request: web.Request, handler: Handler, target: str) -> web.StreamResponse:
    if target == "soap":
        if request.method == "POST":
            return await soap.soap_handler(request)
        return await wsdl_handler(request)
    return await handler(request)


async def wsdl_handler(request: web.Request) -> web.Response:
    return web.Response(body=request.app[WSDL], content_type="text/xml", charset="utf-8")


async def xsd_handler(request: web.Request) -> web.Response:
    return web.Response(body=request.app[XSD], content_type="text/xml", charset="utf-8")


async def not_found(request: web.Request) -> web.Response:
    return web.json_response(
        {"message": "Object Not Found", "errorcode": 30003, "documentation": DOC_URL}, status=404
    )


WSDL: web.AppKey[bytes] = web.AppKey("wsdl", bytes)
XSD: web.AppKey[bytes] = web.AppKey("xsd", bytes)


def build_app(sb: Sandbox) -> web.Application:
    app = web.Application(middlewares=[gate], client_max_size=64 * 1024 * 1024)
    app[SANDBOX] = sb
    app[WSDL], app[XSD] = soap.load_wsdl(sb.config.base_url)
    budget = call_budget.CallBudget(sb.config.calls_per_minute, sb.config.max_concurrent_calls)
    app[call_budget.BUDGET] = budget
    sb.on_reset.append(budget.reset)
    r = app.router
    r.add_post("/v2/token", auth.token_handler)
    r.add_post("/v1/requestToken", auth.legacy_token_handler)
    r.add_get("/etframework.wsdl", wsdl_handler)
    r.add_get("/ETFrameworkFault.xsd", xsd_handler)
    r.add_post("/messaging/v1/messageDefinitionSends/{ref}/send", rest.send_handler)
    r.add_get(
        "/messaging/v1/messageDefinitionSends/{ref}/deliveryRecords/{rsid}", rest.delivery_record_handler
    )
    r.add_post("/sms/v1/messageContact/{message_id}/send", sms.send_handler)
    r.add_get("/sms/v1/messageContact/{message_id}/deliveries/{token_id}", sms.deliveries_handler)
    r.add_post("/sms/v1/queueMO", sms.queue_mo_handler)
    transactional.add_routes(app)
    r.add_post("/platform/v1/ens-callbacks", ens.create_callbacks)
    r.add_get("/platform/v1/ens-callbacks/{cb}", ens.get_callback)
    r.add_delete("/platform/v1/ens-callbacks/{cb}", ens.delete_callback)
    r.add_post("/platform/v1/ens-verify", ens.verify_callback)
    r.add_post("/platform/v1/ens-subscriptions", ens.create_subscriptions)
    r.add_get("/platform/v1/ens-subscriptions/{sid}", ens.get_subscription)
    r.add_delete("/platform/v1/ens-subscriptions/{sid}", ens.delete_subscription)
    r.add_get("/platform/v1/ens-subscriptions-by-cb/{cb}", ens.subscriptions_by_callback)
    inspection.add_routes(app)
    r.add_get("/_sandbox/calls", call_budget.calls_handler)
    r.add_post("/_sandbox/calls", call_budget.configure_handler)
    # Service.asmx is matched case-insensitively in the middleware; this catch-all lets it get there.
    r.add_route("*", "/{tail:.*}", not_found)
    return app


async def serve(config: Config) -> int:
    config.state_dir.mkdir(parents=True, exist_ok=True)
    state = State(config)
    faults = FaultRegistry()
    imports = ImportManager(state, faults, config.sftp_root)
    ens_manager = EnsManager(state)
    sb = Sandbox(config, state, faults, RateLimiter(config.rate_limit), imports, ens_manager)
    sb.on_reset.append(lambda: empty_folders(config.sftp_root))

    host_key = load_host_key(config.state_dir)
    write_known_hosts(config.state_dir, config.sftp_port, host_key)

    runner = web.AppRunner(build_app(sb), access_log=None, handle_signals=False, shutdown_timeout=1.0)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", config.http_port, reuse_address=True)
    await site.start()
    sftp_server, policy = await start_sftp(sb, host_key)
    sb.on_reset.append(policy.reset)
    imports.start()

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    print(
        f"mc_sandbox ready http={config.base_url} sftp=127.0.0.1:{config.sftp_port} state={config.state_dir}",
        flush=True,
    )
    await stop.wait()

    sftp_server.close()
    with contextlib.suppress(Exception):
        await asyncio.wait_for(sftp_server.wait_closed(), 2.0)
    await imports.stop()
    await ens_manager.close()
    await runner.cleanup()
    print("mc_sandbox stopped", flush=True)
    return 0


def run(config: Config) -> int:
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="%(asctime)s %(name)s %(message)s")
    # asyncssh logs every connection at INFO; keep the console for problems.
    asyncssh.set_log_level(logging.WARNING)
    try:
        return asyncio.run(serve(config))
    except KeyboardInterrupt:  # a second Ctrl-C during shutdown
        return 0
