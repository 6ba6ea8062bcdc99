"""OAuth2 client-credentials tokens (``POST /v2/token``); a request's token is checked in http.py."""

from __future__ import annotations

import asyncio
import base64
import json
import secrets
from typing import Any

from aiohttp import web

from .context import sandbox_of
from .http import DOC_URL

SCOPE = (
    "email_read email_write email_send list_and_subscribers_read list_and_subscribers_write "
    "automations_read automations_execute sms_read sms_send tracking_events_read "
    "event_notification_callback_create event_notification_callback_read "
    "event_notification_subscription_create event_notification_subscription_read"
)

INVALID_CLIENT = {
    "error": "invalid_client",
    "error_description": "Client authentication failed. Make sure that the client ID and client secret "
    "are valid and that the package is installed and enabled.",
    "error_uri": "https://developer.salesforce.com/docs",
}


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def new_token(account_id: str) -> str:
    """A JWT-looking opaque string, as real MC tokens are (clients must not parse them)."""
    header = _b64(json.dumps({"alg": "HS256", "kid": "4", "ver": "1", "typ": "JWT"}).encode())
    payload = _b64(json.dumps({"mid": account_id, "jti": secrets.token_hex(16)}).encode())
    return f"{header}.{payload}.{_b64(secrets.token_bytes(32))}"


def expires_in_for(ttl: float) -> int:
    # MC reports the lifetime two minutes early (1079 for its 1200 s tokens); tiny test TTLs keep >= 1.
    return int(ttl - 121) if ttl > 242 else max(1, int(ttl) - 1)


async def token_handler(request: web.Request) -> web.Response:
    sb = sandbox_of(request)
    sb.state.bump("token_requests")
    try:
        body: Any = await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        body = None
    if not isinstance(body, dict):
        sb.state.bump("token_failures")
        return web.json_response(
            {
                "error": "invalid_request",
                "error_description": "The request body must be JSON.",
                "error_uri": "https://developer.salesforce.com/docs",
            },
            status=400,
        )
    if body.get("grant_type") != "client_credentials":
        sb.state.bump("token_failures")
        return web.json_response(
            {
                "error": "unsupported_grant_type",
                "error_description": "Use client_credentials.",
                "error_uri": "https://developer.salesforce.com/docs",
            },
            status=400,
        )
    cfg = sb.config
    account = body.get("account_id")
    ok = (
        body.get("client_id") == cfg.client_id
        and body.get("client_secret") == cfg.client_secret
        and (account is None or str(account) == cfg.account_id)
    )
    if not ok:
        sb.state.bump("token_failures")
        return web.json_response(INVALID_CLIENT, status=401)
    now = asyncio.get_running_loop().time()
    # Drop expired tokens so that the table does not grow without bound on a long run.
    for tok, exp in list(sb.state.tokens.items()):
        if exp <= now:
            del sb.state.tokens[tok]
    token = new_token(cfg.account_id)
    sb.state.tokens[token] = now + cfg.token_ttl
    scope = body.get("scope")
    return web.json_response(
        {
            "access_token": token,
            "token_type": "Bearer",
            "expires_in": expires_in_for(cfg.token_ttl),
            "scope": SCOPE if scope is None else str(scope),
            "soap_instance_url": cfg.base_url,
            "rest_instance_url": cfg.base_url,
        }
    )


async def legacy_token_handler(request: web.Request) -> web.Response:
    # Enhanced (OAuth 2.0) packages are refused on the legacy route.
    return web.json_response(
        {
            "message": "This endpoint is not supported for enhanced packages. Use /v2/token.",
            "errorcode": 10007,
            "documentation": DOC_URL,
        },
        status=400,
    )
