"""Request helpers every REST route shares: bearer-token checks, MC's error bodies, JSON bodies.

They live apart from the routes so that no route module has to borrow them from another (that
borrowing is what once tied auth, rest, ens and sends into an import circle).
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from aiohttp import web

from .context import sandbox_of
from .state import State

DOC_URL = "https://developer.salesforce.com/docs/atlas.en-us.mc-apis.meta/mc-apis/error-handling.htm"

NOT_AUTHORIZED = {"documentation": DOC_URL, "errorcode": 0, "message": "Not Authorized"}


def token_valid(state: State, token: str | None) -> bool:
    if not token:
        return False
    expiry = state.tokens.get(token)
    return expiry is not None and asyncio.get_running_loop().time() < expiry


def bearer(request: web.Request) -> str | None:
    value = request.headers.get("Authorization", "")
    if value[:7].lower() == "bearer ":
        return value[7:].strip()
    return None


def rest_authorized(request: web.Request) -> bool:
    return token_valid(sandbox_of(request).state, bearer(request))


def not_authorized() -> web.Response:
    return web.json_response(NOT_AUTHORIZED, status=401)


def rest_error(status: int, errorcode: int, message: str) -> web.Response:
    return web.json_response(
        {"message": message, "errorcode": errorcode, "documentation": DOC_URL}, status=status
    )


async def read_json(request: web.Request) -> tuple[Any, web.Response | None]:
    try:
        return await request.json(), None
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None, rest_error(400, 10004, "InvalidMessageFormat: the request body is not valid JSON.")


def field(obj: Any, name: str) -> Any:
    """Case-insensitive field lookup, as MC's .NET JSON binding does."""
    if not isinstance(obj, dict):
        return None
    low = name.lower()
    for k, v in obj.items():
        if isinstance(k, str) and k.lower() == low:
            return v
    return None
