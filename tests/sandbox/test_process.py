from __future__ import annotations

import signal
import time
from pathlib import Path

import httpx

from mc_sandbox import launch
from tests.fixtures.sandbox import start_sandbox

from .helpers import CREDS, wait_for


def test_startup_rate_limit_token_ttl_and_sigint(tmp_path: Path) -> None:
    t0 = time.monotonic()
    sp = start_sandbox(tmp_path, "--rate-limit", "5", "--token-ttl", "1", "--message-cap", "2")
    try:
        assert time.monotonic() - t0 < 2.0, "startup took too long"
        assert sp.ready_line.startswith(
            f"mc_sandbox ready http=http://127.0.0.1:{sp.http_port}/ " f"sftp=127.0.0.1:{sp.sftp_port}"
        )
        base = sp.http_url
        assert launch.answers(base)
        tok = httpx.post(f"{base}v2/token", json=CREDS).json()
        assert tok["expires_in"] >= 1
        headers = {"Authorization": f"Bearer {tok['access_token']}"}
        url = f"{base}sms/v1/messageContact/packet-drawn-welcome/send"
        codes = [httpx.post(url, json={"mobileNumbers": ["886912345678"]}, headers=headers) for _ in range(8)]
        limited = [r for r in codes if r.status_code == 429]
        assert [r.status_code for r in codes[:5]] == [202] * 5 and limited
        assert limited[0].headers["Retry-After"] and limited[0].json()["errorcode"] == 50100
        assert len(httpx.get(f"{base}_sandbox/messages").json()) == 2  # --message-cap
        # Token expires after its TTL (1 s here).
        wait_for(
            lambda: httpx.post(url, json={"mobileNumbers": ["1"]}, headers=headers).status_code == 401,
            timeout=5,
            interval=0.25,
            what="token expiry",
        )
    finally:
        code = sp.stop(signal.SIGINT)
    out = "".join(sp.output)
    assert code == 0, out
    assert "Traceback" not in out
