"""The CSV file MC imports: one row per subscriber, RFC 4180 quoting, safe to open in a spreadsheet."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable

from stream_app.contract.records import SubscriberReady
from stream_app.domain.notifications import recipient_name

HEADER = ("SubscriberKey", "EmailAddress", "MobileNumber", "Name")
FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")


def neutralise(cell: str) -> str:
    """Stop a spreadsheet from running a cell as a formula (OWASP CSV injection)."""
    return f"'{cell}" if cell.startswith(FORMULA_PREFIXES) else cell


def subscriber_rows(notifications: Iterable[SubscriberReady]) -> list[tuple[str, str, str, str]]:
    """One row per subscriber key; a later notification's address wins, as MC's add-and-update would."""
    rows: dict[str, tuple[str, str, str, str]] = {}
    for ready in notifications:
        if ready.email is None:
            continue
        old = rows.get(ready.subscriber_key)
        mobile = (ready.mobile or "").lstrip("+") or (old[2] if old else "")
        name = recipient_name(ready) or (old[3] if old else "")
        rows[ready.subscriber_key] = (ready.subscriber_key, ready.email, mobile, name)
    return list(rows.values())


def build_csv(rows: list[tuple[str, str, str, str]]) -> bytes:
    """Every cell is neutralised and quoted, so commas, quotes and newlines survive and no cell is
    a formula. MC matches key and email byte for byte, so validation keeps those from ever needing
    it: a member id is of a safe character set and an email's first character no formula prefix
    (domain/notifications.py; such a party's notifications are `invalid`). A mobile number that
    starts with one (an email notification carries the party's number unchecked) loses nothing
    MC could have used."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, quoting=csv.QUOTE_ALL, lineterminator="\r\n")
    writer.writerow(HEADER)
    for row in rows:
        writer.writerow([neutralise(cell) for cell in row])
    return buffer.getvalue().encode("utf-8")


def parse_error_report(data: bytes) -> dict[str, str]:
    """MC's per-row import errors (`/Export/<file>_errors.csv`) -> {subscriber_key: reason}."""
    reader = csv.DictReader(io.StringIO(data.decode("utf-8-sig")))
    errors: dict[str, str] = {}
    for row in reader:
        key = row.get("SubscriberKey") or ""
        errors[key] = f"MC import error {row.get('ErrorCode', '')}: {row.get('ErrorMessage', '')}".strip()
    return errors
