"""Masking filter and JSON formatter of stream_app.logs."""

from __future__ import annotations

import io
import logging
import logging.config
from collections.abc import Iterator

import orjson
import pytest

from stream_app.ops.logs import (
    JsonFormatter,
    MaskingFilter,
    TextFormatter,
    logging_config,
    mask_text,
    mask_value,
)


@pytest.mark.parametrize(
    ("raw", "masked"),
    [
        ("to ez@example.com now", "to e***@example.com now"),
        ("a.b+tag@mail.example.co.uk", "a***@mail.example.co.uk"),
        ("bad ez@@example", "bad ***@example"),
        ("sms +886912345678 sent", "sms +886***78 sent"),
        ("sms +886 912 345 678 sent", "sms +886***78 sent"),
        ("offset 12345678, amount +250", "offset 12345678, amount +250"),
        ("already e***@example.com", "already e***@example.com"),
    ],
)
def test_mask_text(raw: str, masked: str) -> None:
    assert mask_text(raw) == masked


def test_mask_value_walks_nested_values() -> None:
    value = {"to": ["ez@example.com", {"mobile": "+886912345678"}], "n": 3, "b": b"x@example.com"}
    assert mask_value(value) == {
        "to": ["e***@example.com", {"mobile": "+886***78"}],
        "n": 3,
        "b": "x***@example.com",
    }


@pytest.fixture
def captured() -> Iterator[tuple[logging.Logger, io.StringIO]]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    handler.addFilter(MaskingFilter())
    logger = logging.getLogger("test.stream_app.logs")
    logger.handlers[:] = [handler]
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    yield logger, stream
    logger.handlers.clear()


def lines(stream: io.StringIO) -> list[dict[str, object]]:
    return [orjson.loads(line) for line in stream.getvalue().splitlines()]


def test_json_line_has_the_fields_and_ids_first(captured: tuple[logging.Logger, io.StringIO]) -> None:
    logger, stream = captured
    logger.warning(
        "send to %s failed",
        "ez@example.com",
        extra={"notification_id": "d-1:packet-drawn-drawer", "event_id": "d-1", "mobile": "+886912345678"},
    )
    (line,) = lines(stream)
    assert list(line)[:6] == ["ts", "level", "logger", "message", "event_id", "notification_id"]
    assert line["level"] == "WARNING" and line["logger"] == "test.stream_app.logs"
    assert line["message"] == "send to e***@example.com failed"
    assert line["mobile"] == "+886***78"
    assert str(line["ts"]).endswith("Z")


def test_exception_text_is_masked(captured: tuple[logging.Logger, io.StringIO]) -> None:
    logger, stream = captured
    try:
        raise ValueError("refused ez@example.com")
    except ValueError:
        logger.exception("boom")
    (line,) = lines(stream)
    assert "ez@example.com" not in stream.getvalue()
    assert "e***@example.com" in str(line["exc"])


def test_text_format_appends_ids() -> None:
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "hello", None, None)
    record.event_id = "d-9"
    assert TextFormatter().format(record).endswith("x: hello [event_id=d-9]")


def test_logging_config_is_accepted_by_dict_config() -> None:
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    try:
        logging.config.dictConfig(logging_config("json", "INFO"))
        assert isinstance(root.handlers[0].formatter, JsonFormatter)
        assert logging.getLogger("aiokafka").level == logging.WARNING
        logging.config.dictConfig(logging_config("text", "DEBUG"))
        assert isinstance(root.handlers[0].formatter, TextFormatter)
    finally:
        root.handlers[:], level = saved
        root.setLevel(level)
