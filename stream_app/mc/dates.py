"""MC's dates as aware datetimes: the ones MC writes without a zone are Central Standard Time.

MC's servers keep Central Standard Time all year: always UTC-6, no daylight saving (Salesforce Help
000384850). Its dates without a zone suffix are that server time: the SOAP API's dateTime values in
its answers (tracking `EventDate`, reference §2.7; MC's "Incoming Date Normalization" page: a zone-less
value is server time, and answers present dates in server time), the Transactional Messaging status
`timestamp` (§3.2: CST, no DST, no suffix) and MobileConnect's `createDate`/`completeDate` (§4.2:
CST). Read as UTC, each would be six hours early. A date that carries `Z` or an offset is taken as
written; ENS's `timestampUTC` is epoch milliseconds in UTC (§7.2), read with `from_epoch_ms`.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

# MC's server time: Central Standard Time, never daylight time.
MC_ZONE = timezone(timedelta(hours=-6), "CST")


def mc_time(value: Any) -> datetime | None:
    """An MC date (ISO 8601 text, or a datetime as zeep parses a SOAP dateTime) as an aware datetime;
    zone-less ones are MC's CST. None for nothing or for text that is no date."""
    if value is None or value == "":
        return None
    if not isinstance(value, datetime):
        text = str(value).strip()
        if text.endswith(("Z", "z")):
            text = text[:-1] + "+00:00"
        try:
            value = datetime.fromisoformat(text)
        except ValueError:
            return None
    return value if value.tzinfo is not None else value.replace(tzinfo=MC_ZONE)


def from_epoch_ms(value: Any) -> datetime | None:
    """ENS's `timestampUTC` (and `unsubscribeDate`): epoch milliseconds, UTC."""
    try:
        return datetime.fromtimestamp(float(value) / 1000, UTC)
    except (TypeError, ValueError, OverflowError, OSError):
        return None


def iso_utc(value: datetime) -> str:
    """How this service writes a moment: RFC 3339 in UTC, microseconds, `Z`."""
    return value.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")
