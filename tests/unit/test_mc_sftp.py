"""SFTP helpers that need no server."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from stream_app.mc import PermanentMCError, SftpUploader, attempt_name, error_report_path
from stream_app.settings import Settings


@pytest.mark.parametrize(
    ("base", "attempt", "expected"),
    [
        ("subscribers_w123.csv", 1, "subscribers_w123.csv"),
        ("subscribers_w123.csv", 2, "subscribers_w123.r2.csv"),
        ("subscribers_w123.csv", 10, "subscribers_w123.r10.csv"),
        ("noext", 3, "noext.r3"),
    ],
)
def test_attempt_name(base: str, attempt: int, expected: str) -> None:
    assert attempt_name(base, attempt) == expected


def test_error_report_path() -> None:
    assert error_report_path("/Import/subscribers_w123.r2.csv") == "/Export/subscribers_w123.r2_errors.csv"


async def test_missing_known_hosts_is_a_clear_permanent_error(tmp_path: Path) -> None:
    missing = tmp_path / "nope" / "known_hosts"
    uploader = SftpUploader(replace(Settings(), mc_sftp_known_hosts=missing, mc_sftp_port=1))
    with pytest.raises(PermanentMCError) as info:
        await uploader.upload("a.csv", b"x")
    assert info.value.code == "HostKeyMissing"
    assert str(missing) in info.value.reason


async def test_forbidden_file_names_are_refused() -> None:
    uploader = SftpUploader(Settings())
    with pytest.raises(PermanentMCError):
        await uploader.upload("a:b.csv", b"x")
