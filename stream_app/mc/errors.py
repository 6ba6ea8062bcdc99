"""The three ways a Marketing Cloud call can fail, as the caller's retry policy needs to see them."""

from __future__ import annotations

from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

import httpx


class MCError(Exception):
    """Any failure talking to Marketing Cloud."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class TransientMCError(MCError):
    """Worth retrying later: throttling, 5xx, timeouts, dropped connections.

    `retry_after` is MC's own hint in seconds when it gave one; the caller's backoff should not go
    below it.
    """

    def __init__(self, reason: str, retry_after: float | None = None) -> None:
        super().__init__(reason)
        self.retry_after = retry_after

    def __repr__(self) -> str:
        return f"TransientMCError({self.reason!r}, retry_after={self.retry_after!r})"


class ThrottledMCError(TransientMCError):
    """MC asked for a slower pace: REST 429 (errorcode 50100, `Retry-After`) or the SOAP "Rate
    Limited" fault (code 17). Says nothing about the request itself: not worth one of its tries."""


class BlockedMCError(TransientMCError):
    """MC blocks the account's calls: errorcode 50200 "Your requests are temporarily blocked." (too
    many concurrent requests, no Retry-After), or the client's circuit breaker held the call back
    for it (mc/pacing.py). Nothing was sent; not worth one of the request's tries either."""


class PermanentMCError(MCError):
    """MC refused the request itself; sending it again unchanged gives the same answer.

    `code` is MC's code as it gave it (e.g. 180008, 30003, "InvalidOrMissingToAddress");
    `subscriber_code` the subscriber-level ErrorCodeID behind a 180008 when MC named one (13 key
    mismatch, 14 email mismatch, ...), which tells the caller whether an upsert could fix it.
    """

    def __init__(
        self, reason: str, code: int | str | None = None, *, subscriber_code: int | None = None
    ) -> None:
        super().__init__(reason)
        self.code = code
        self.subscriber_code = subscriber_code

    def __repr__(self) -> str:
        return (
            f"PermanentMCError({self.reason!r}, code={self.code!r}, subscriber_code={self.subscriber_code!r})"
        )


class AuthError(MCError):
    """The credentials (API or SFTP) were refused: a configuration problem, not a per-message one."""

    def __init__(self, reason: str, code: int | str | None = None) -> None:
        super().__init__(reason)
        self.code = code


def parse_retry_after(value: str | None) -> float | None:
    """Read a Retry-After header: delta-seconds, or an HTTP date (RFC 9110 allows both)."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


class DuplicateMessageKeyError(PermanentMCError):
    """Transactional Messaging refused the messageKey as used within the prior 72 hours (109110
    MCMS_UTM_Validation_DuplicateMessageKey): MC already has this very message."""


# Whether an error is about MC's pace rather than the request (not counted as one of its tries).
PACING_ERRORS = (ThrottledMCError, BlockedMCError)


# Failures of a call that never reached MC: no connection was made, or no token to send it with.
_NEVER_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout, AuthError)


def may_have_reached_mc(exc: TransientMCError) -> bool:
    """Whether MC may have carried out a call that failed this way: its answer timed out or was
    cut, or MC answered an error (a 5xx can come after the work is done). A pace (429, rate fault,
    50200) and a call that never left are known not to have been carried out."""
    if isinstance(exc, PACING_ERRORS):
        return False
    return not isinstance(exc.__cause__, _NEVER_SENT)
