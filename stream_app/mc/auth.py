"""OAuth2 client-credentials tokens for MC, cached and refreshed ahead of expiry."""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable
from typing import Any

import httpx

from stream_app.mc.errors import AuthError, TransientMCError, parse_retry_after
from stream_app.settings import Settings, plain_http_problem

log = logging.getLogger(__name__)


def _normalise_base(url: str) -> str:
    # MC's docs show bare hosts while real responses carry scheme and slash; accept both.
    url = url.strip()
    if "://" not in url:
        url = f"https://{url}"
    if not url.endswith("/"):
        url += "/"
    return url


class TokenManager:
    """Hands out a valid access token; at most one token request is in flight at a time.

    MC asks for roughly one token request per 20 minutes per machine, so the token is reused until
    shortly before `expires_in`; the lead time is jittered so workers started together don't all
    refresh in the same second.
    """

    def __init__(
        self,
        settings: Settings,
        http: httpx.AsyncClient,
        *,
        refresh_margin: float = 120.0,
        refresh_jitter: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._settings = settings
        self._http = http
        self._margin = refresh_margin
        self._jitter = refresh_jitter
        self._clock = clock
        self._lock = asyncio.Lock()
        self._token: str | None = None
        self._refresh_at = 0.0
        self._rest_base: str | None = None
        self._soap_base: str | None = None

    @property
    def rest_base(self) -> str:
        if self._rest_base is None:
            raise RuntimeError("no token fetched yet: await token() first")
        return self._rest_base

    @property
    def soap_base(self) -> str:
        if self._soap_base is None:
            raise RuntimeError("no token fetched yet: await token() first")
        return self._soap_base

    async def token(self) -> str:
        token = self._token
        if token is not None and self._clock() < self._refresh_at:
            return token
        async with self._lock:
            # Another task may have refreshed while this one waited for the lock.
            if self._token is not None and self._clock() < self._refresh_at:
                return self._token
            return await self._fetch()

    def invalidate(self, token: str | None = None) -> None:
        """Drop the cached token after MC rejected it (REST 401, SOAP "Token Expired").

        Passing the rejected token makes this a no-op when another task already replaced it, so a
        burst of concurrent 401s costs one refresh, not one each.
        """
        if token is None or token == self._token:
            self._token = None
            self._refresh_at = 0.0

    async def _fetch(self) -> str:
        url = f"{_normalise_base(self._settings.mc_auth_url)}v2/token"
        problem = plain_http_problem("MC_AUTH_URL", url)
        if problem:  # never send the client secret in clear
            raise AuthError(problem, code="plain_http")
        account: Any = self._settings.mc_account_id
        if isinstance(account, str) and account.isdigit():
            account = int(account)
        payload: dict[str, Any] = {
            "grant_type": "client_credentials",
            "client_id": self._settings.mc_client_id,
            "client_secret": self._settings.mc_client_secret,
        }
        if account:
            payload["account_id"] = account
        started = time.perf_counter()
        try:
            response = await self._http.post(url, json=payload)
        except httpx.TransportError as exc:
            raise TransientMCError(f"token request failed: {type(exc).__name__}") from exc
        if response.status_code in (400, 401, 403):
            error, description = _oauth_error(response)
            raise AuthError(f"MC refused the API credentials: {error}: {description}", code=error)
        if response.status_code == 429 or response.status_code >= 500:
            raise TransientMCError(
                f"token request answered HTTP {response.status_code}",
                retry_after=parse_retry_after(response.headers.get("Retry-After")),
            )
        if response.status_code != 200:
            raise AuthError(f"token request answered HTTP {response.status_code}", code=response.status_code)
        try:
            body = response.json()
            token = str(body["access_token"])
            expires_in = float(body.get("expires_in", 1079))
            rest_base = _normalise_base(str(body["rest_instance_url"]))
            soap_base = _normalise_base(str(body["soap_instance_url"]))
        except (ValueError, KeyError, TypeError) as exc:
            raise TransientMCError(f"unreadable token response: {type(exc).__name__}") from exc
        for name, base in (("rest_instance_url", rest_base), ("soap_instance_url", soap_base)):
            problem = plain_http_problem(name, base)
            if problem:  # the token and members' data would cross the network in clear
                raise AuthError(f"MC token response refused: {problem}", code="plain_http")
        lead = min(self._margin + random.uniform(0.0, self._jitter), expires_in / 2)
        self._token = token
        self._refresh_at = self._clock() + expires_in - lead
        self._rest_base, self._soap_base = rest_base, soap_base
        log.info(
            "MC token obtained in %.0f ms, expires in %.0f s, refresh in %.0f s",
            (time.perf_counter() - started) * 1000,
            expires_in,
            expires_in - lead,
        )
        return token


def _oauth_error(response: httpx.Response) -> tuple[str, str]:
    try:
        body = response.json()
    except ValueError:
        return str(response.status_code), response.reason_phrase
    if not isinstance(body, dict):
        return str(response.status_code), response.reason_phrase
    error = body.get("error") or body.get("errorcode") or response.status_code
    description = body.get("error_description") or body.get("message") or ""
    return str(error), str(description)
