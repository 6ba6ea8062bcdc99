"""The dashboard in a real browser: headless Chromium runs the page's script against a worker and we
assert on the DOM it rendered. `UPDATE_DOCS_SCREENSHOT=1` also keeps its screenshot for the README
(docs/dashboard.png); otherwise a test run leaves the working tree as it found it."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.integration.helpers import drawn_event, eventually, produce

pytestmark = [pytest.mark.integration, pytest.mark.browser]

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
REPO = Path(__file__).resolve().parents[2]
SCREENSHOT = REPO / "docs" / "dashboard.png"


def chromium(user_data_dir: Path, *args: str, timeout: float = 90) -> str:
    if not Path(CHROMIUM).exists():
        pytest.skip("chromium is not installed")
    cmd = [
        CHROMIUM,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={user_data_dir}",
        # Virtual time lets the page's fetch and its first render finish before the DOM is taken.
        "--virtual-time-budget=5000",
        *args,
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def element_text(dom: str, element_id: str) -> str:
    match = re.search(rf'id="{re.escape(element_id)}"[^>]*>(.*?)</', dom, re.S)
    assert match, f"#{element_id} not in the DOM"
    return match.group(1).strip()


async def test_dashboard_renders_live_figures(kafka: Any, pipeline: Any, tmp_path: Path) -> None:
    good = drawn_event()
    bad = drawn_event(drawer__email="browser@@example.com")
    await produce(kafka.bootstrap, "packet.drawn", good)
    await produce(kafka.bootstrap, "packet.drawn", bad)
    data_url = f"{pipeline.web_url}dashboard/data.json"

    def shows_both() -> bool:
        data = httpx.get(data_url, timeout=10).json()
        failures = {f.get("event_id") for f in data["recent_failures"]}
        sent = data["outcomes"].get("sent", 0)
        return bad["event_id"] in failures and sent >= 1 and bool(data["lag"]["partitions"])

    await eventually(shows_both, timeout=60)

    url = f"{pipeline.web_url}dashboard/"
    dom = chromium(tmp_path / "profile", "--dump-dom", url)
    assert element_text(dom, "status") == "live"
    assert re.fullmatch(r"\d+\.\d\d", element_text(dom, "rate-intake"))
    assert re.fullmatch(r"\d+", element_text(dom, "lag-total"))
    assert re.fullmatch(r"\d+", element_text(dom, "open-windows"))
    failures = dom[dom.index('id="failures"') :]
    assert bad["event_id"] in failures and ">invalid<" in failures
    assert 'data-rule="failure_burst"' in dom
    for secret in ("browser@@example.com", good["drawer"]["email"], good["drawer"]["mobile"]):
        assert secret not in dom

    screenshot = tmp_path / "dashboard.png"
    chromium(tmp_path / "profile", "--window-size=1280,900", f"--screenshot={screenshot}", url)
    assert screenshot.stat().st_size > 10_000
    if os.environ.get("UPDATE_DOCS_SCREENSHOT") == "1":
        shutil.copyfile(screenshot, SCREENSHOT)
