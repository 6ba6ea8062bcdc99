"""The HTTP transport under every MC call: httpx's API over aiohttp's connection pool.

httpx's own transport (httpcore on anyio) costs about 3-4 ms of CPU per request on these machines,
more with many pooled connections; aiohttp about 1 ms. A window's burst of sends (dozens at once)
ran 4-5 times longer on the worker's one thread, which every other stage waited for (measured with
a burst of 40 sends against the sandbox, see the README's Performance section). The clients keep
httpx's request and response types, timeouts and exceptions; only the wire part is aiohttp's.
"""

from __future__ import annotations

import asyncio

import aiohttp
import httpx

# aiohttp's failures as the httpx exceptions the MC clients classify (all are TransportErrors).
_ERRORS: tuple[tuple[type[BaseException], type[httpx.TransportError]], ...] = (
    (aiohttp.ConnectionTimeoutError, httpx.ConnectTimeout),
    (aiohttp.SocketTimeoutError, httpx.ReadTimeout),
    (asyncio.TimeoutError, httpx.ReadTimeout),
    (aiohttp.ClientConnectorError, httpx.ConnectError),
    (aiohttp.ServerDisconnectedError, httpx.RemoteProtocolError),
    (aiohttp.ClientResponseError, httpx.RemoteProtocolError),
    (aiohttp.ClientPayloadError, httpx.ReadError),
    (aiohttp.ClientError, httpx.NetworkError),
)


class AiohttpTransport(httpx.AsyncBaseTransport):
    def __init__(self, limits: httpx.Limits) -> None:
        self._limits = limits
        self._session: aiohttp.ClientSession | None = None

    def _open(self) -> aiohttp.ClientSession:
        # Created on first use: an aiohttp session belongs to the running event loop.
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(
                limit=self._limits.max_connections or 0,
                keepalive_timeout=self._limits.keepalive_expiry or 0,
                ssl=httpx.create_ssl_context(),  # the CA bundle httpx itself would use
            )
            self._session = aiohttp.ClientSession(connector=connector, auto_decompress=False)
        return self._session

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        timeout = request.extensions.get("timeout", {})
        body = await request.aread()
        try:
            async with self._open().request(
                request.method,
                str(request.url),
                headers=list(request.headers.multi_items()),
                data=body or None,
                allow_redirects=False,
                compress=False,
                timeout=aiohttp.ClientTimeout(
                    total=None,
                    connect=timeout.get("pool"),
                    sock_connect=timeout.get("connect"),
                    sock_read=timeout.get("read"),
                ),
            ) as response:
                content = await response.read()
        except Exception as exc:
            for theirs, ours in _ERRORS:
                if isinstance(exc, theirs):
                    raise ours(f"{type(exc).__name__}: {exc}", request=request) from exc
            raise
        # MC's answers are small: read whole, so the connection goes back to the pool at once.
        # The body is passed as received; httpx undoes any Content-Encoding as it would itself.
        return httpx.Response(
            status_code=response.status,
            headers=list(response.raw_headers),
            stream=httpx.ByteStream(content),
            request=request,
            extensions={"http_version": b"HTTP/1.1", "reason_phrase": (response.reason or "").encode()},
        )

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
