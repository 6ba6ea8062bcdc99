"""Salesforce Marketing Cloud clients: OAuth2 tokens, REST sends, SOAP lookups, SFTP imports.

Everything talks to MC over the network exactly as documented, so the same code runs against the
real service or the local sandbox.
"""

from __future__ import annotations

import httpx

from stream_app.mc.auth import TokenManager
from stream_app.mc.errors import (
    PACING_ERRORS,
    AuthError,
    BlockedMCError,
    DuplicateMessageKeyError,
    MCError,
    PermanentMCError,
    ThrottledMCError,
    TransientMCError,
    may_have_reached_mc,
)
from stream_app.mc.pacing import PacedTransport, Pacer
from stream_app.mc.rest import RestClient, SendReceipt, TransactionalStatus, verify_ens_signature
from stream_app.mc.sftp import SftpUploader, attempt_name, error_report_path
from stream_app.mc.soap import (
    ImportSummary,
    SendLogRow,
    SoapClient,
    SubscriberRow,
    UpsertResult,
)
from stream_app.mc.transport import AiohttpTransport
from stream_app.settings import Settings

__all__ = [
    "PACING_ERRORS",
    "AuthError",
    "BlockedMCError",
    "DuplicateMessageKeyError",
    "ImportSummary",
    "MCError",
    "MarketingCloud",
    "Pacer",
    "PermanentMCError",
    "RestClient",
    "SendLogRow",
    "SendReceipt",
    "SftpUploader",
    "SoapClient",
    "SubscriberRow",
    "ThrottledMCError",
    "TokenManager",
    "TransactionalStatus",
    "TransientMCError",
    "UpsertResult",
    "attempt_name",
    "error_report_path",
    "may_have_reached_mc",
    "verify_ens_signature",
]


class MarketingCloud:
    """The MC clients of one worker, sharing one token and one pool of HTTP connections."""

    def __init__(self, settings: Settings, *, http: httpx.AsyncClient | None = None) -> None:
        self._owns_http = http is None
        limits = httpx.Limits(max_connections=32, max_keepalive_connections=32, keepalive_expiry=60)
        # One pace for all of this worker's REST and SOAP calls (mc/pacing.py); a client passed in
        # (tests) is not paced unless its transport is a PacedTransport of this pacer.
        self.pacer = Pacer(
            settings.mc_max_requests_per_second, blocked_pause=settings.mc_blocked_pause_seconds
        )
        self.http = http or httpx.AsyncClient(
            timeout=httpx.Timeout(settings.mc_request_timeout_seconds, connect=10.0),
            transport=PacedTransport(AiohttpTransport(limits), self.pacer),
        )
        self.tokens = TokenManager(settings, self.http)
        self.rest = RestClient(self.tokens, self.http, from_address=settings.mc_from_address)
        # The same timeout as REST: the crash window is judged by it (ledger.settle_at), whichever
        # API carried the send.
        self.soap = SoapClient(self.tokens, self.http, timeout=settings.mc_request_timeout_seconds)
        self.sftp = SftpUploader(settings)

    async def start(self) -> None:
        """Fetch a token and load the WSDL now, so bad credentials show at startup."""
        await self.tokens.token()
        await self.soap.start()

    async def close(self) -> None:
        await self.sftp.close()
        if self._owns_http:
            await self.http.aclose()
