"""Log lines an operator can grep and a collector can parse, with no address or phone number in them.

`LOG_FORMAT=json` (the default) writes one JSON object per line: ts, level, logger, message, then
`event_id` / `notification_id` and any other `extra={...}` the code passed. `LOG_FORMAT=text` is for
humans at a terminal. Either way `MaskingFilter` rewrites anything email-like or E.164-like, in the
message and in the extras, before a handler formats it: third-party libraries (aiokafka, asyncssh,
httpx) log what they like, so masking at the few call sites we own would not be enough.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import orjson

from stream_app.domain.notifications import mask_email, mask_phone

# Deliberately loose: an invalid address ("ez@@example", "a@b") is still somebody's address.
EMAIL_RE = re.compile(r"\w[\w.%+\-!#$&'=?^`{|}~]*@(?:[\w\-]+(?:\.[\w\-]+)*)?")
# E.164 (+, 7 to 15 digits), also written with spaces or dashes between digit groups.
PHONE_RE = re.compile(r"(?<![\w+])\+[1-9](?:[ \-]?\d){6,14}(?!\d)")

# Attributes every LogRecord has; anything else on a record came from `extra={...}`.
_STANDARD_ATTRS = frozenset(vars(logging.LogRecord("x", logging.INFO, "x", 0, "x", None, None)).keys()) | {
    "message",
    "asctime",
    "taskName",
}
_FIRST_KEYS = ("event_id", "notification_id")
# Faust and its libraries log at DEBUG/INFO on the hot path; the operator needs only their warnings.
QUIET_LOGGERS = ("faust", "aiokafka", "mode", "kafka", "asyncssh", "httpx", "httpcore", "zeep", "aiohttp")


def mask_text(text: str) -> str:
    """Mask every email-like and E.164-like substring of `text`."""
    if "@" in text:
        text = EMAIL_RE.sub(lambda m: mask_email(m.group(0)), text)
    if "+" in text:
        text = PHONE_RE.sub(lambda m: mask_phone(re.sub(r"[ \-]", "", m.group(0))), text)
    return text


def mask_value(value: Any) -> Any:
    """Mask strings inside any JSON-like value (dicts, lists, tuples), leaving other types alone."""
    if isinstance(value, str):
        return mask_text(value)
    if isinstance(value, bytes):
        return mask_text(value.decode("utf-8", "replace"))
    if isinstance(value, Mapping):
        return {str(k): mask_value(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [mask_value(v) for v in value]
    return value


def extras_of(record: logging.LogRecord) -> dict[str, Any]:
    return {k: v for k, v in vars(record).items() if k not in _STANDARD_ATTRS and not k.startswith("_")}


class MaskingFilter(logging.Filter):
    """Rewrites the record in place so every handler and formatter downstream sees masked text."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a malformed %-format from some library: log it raw rather than drop it
            message = f"{record.msg!s} {record.args!r}"
        record.msg = mask_text(message)
        record.args = None
        for key, value in extras_of(record).items():
            setattr(record, key, mask_value(value))
        if record.exc_info and not record.exc_text:
            # Exception text often quotes the failing input; format it now so it can be masked.
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = mask_text(record.exc_text)
        return True


def _rfc3339(created: float) -> str:
    return datetime.fromtimestamp(created, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, message, the ids, the other extras, exc."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": _rfc3339(record.created),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        extras = extras_of(record)
        for key in _FIRST_KEYS:
            if extras.get(key):
                line[key] = extras.pop(key)
        for key, value in extras.items():
            line.setdefault(key, value)
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            line["exc"] = record.exc_text
        if record.stack_info:
            line["stack"] = self.formatStack(record.stack_info)
        return orjson.dumps(line, default=str).decode()


class TextFormatter(logging.Formatter):
    """For humans: the classic line, with the ids appended when the record concerns one."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        ids = " ".join(f"{k}={getattr(record, k)}" for k in _FIRST_KEYS if getattr(record, k, None))
        return f"{text} [{ids}]" if ids else text


def logging_config(log_format: str, level: str) -> dict[str, Any]:
    """A `logging.config.dictConfig` dict; Faust's worker applies it instead of its colour handler."""
    formatter: dict[str, Any] = {"()": TextFormatter if log_format.lower() == "text" else JsonFormatter}
    return {
        "version": 1,
        # Module loggers (`stream_app.*`) exist before the worker configures logging: keep them.
        "disable_existing_loggers": False,
        "filters": {"mask": {"()": MaskingFilter}},
        "formatters": {"default": formatter},
        "handlers": {
            "default": {
                "class": "logging.StreamHandler",
                "stream": "ext://sys.stderr",
                "formatter": "default",
                "filters": ["mask"],
            }
        },
        "root": {"level": level.upper(), "handlers": ["default"]},
        # At DEBUG, the libraries' INFO lines too (Faust's rebalances and table recovery).
        "loggers": {
            name: {"level": "INFO" if level.upper() == "DEBUG" else "WARNING"} for name in QUIET_LOGGERS
        },
    }
