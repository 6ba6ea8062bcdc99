"""Small clients and polling helpers for the sandbox tests."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import httpx
from lxml import etree

T = TypeVar("T")
CREDS = {
    "grant_type": "client_credentials",
    "client_id": "sandbox-client",
    "client_secret": "sandbox-secret",
    "account_id": 100000001,
}


def token(base: str) -> str:
    r = httpx.post(f"{base}v2/token", json=CREDS, timeout=10)
    r.raise_for_status()
    return str(r.json()["access_token"])


def client(base: str, tok: str | None = None) -> httpx.Client:
    headers = {"Authorization": f"Bearer {tok or token(base)}"}
    return httpx.Client(base_url=base, headers=headers, timeout=10)


def wait_for(fn: Callable[[], T | None], timeout: float = 10.0, interval: float = 0.05, what: str = "") -> T:
    """Poll ``fn`` until it returns something truthy, or fail at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        value = fn()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what or fn}")
        time.sleep(interval)


def sftp(
    port: int, commands: list[str], tmp: Path, password: str = "sandbox"
) -> subprocess.CompletedProcess[str]:
    """OpenSSH sftp in batch mode through sshpass (BatchMode=no, since -b otherwise forbids passwords)."""
    batch = tmp / f"batch_{time.monotonic_ns()}.txt"
    batch.write_text("\n".join(commands) + "\n")
    return subprocess.run(
        [
            "sshpass",
            "-p",
            password,
            "sftp",
            "-o",
            "BatchMode=no",
            "-P",
            str(port),
            "-o",
            "StrictHostKeyChecking=no",
            "-o",
            "UserKnownHostsFile=/dev/null",
            "-b",
            str(batch),
            "sandbox@127.0.0.1",
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )


def upload(port: int, tmp: Path, name: str, content: str, remote_dir: str = "/Import") -> None:
    local = tmp / name
    local.write_text(content, encoding="utf-8")
    r = sftp(port, [f"put {local} {remote_dir}/{name}"], tmp)
    assert r.returncode == 0, r.stderr


def header(tok: str, namespace: str | None = "http://exacttarget.com") -> etree._Element:
    el = etree.Element(f"{{{namespace}}}fueloauth" if namespace else "fueloauth")
    el.text = tok
    return el


def get_json(base: str, path: str) -> Any:
    r = httpx.get(f"{base}{path}", timeout=10)
    r.raise_for_status()
    return r.json()


def imports_by_file(base: str, name: str) -> list[dict[str, Any]]:
    return [j for j in get_json(base, "_sandbox/imports") if j["file"].endswith("/" + name)]
