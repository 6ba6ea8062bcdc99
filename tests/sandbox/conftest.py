"""Loads the sandbox fixtures when the root conftest has not registered them as a plugin."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.fixtures.sandbox import SandboxProcess, start_sandbox


def pytest_configure(config: pytest.Config) -> None:
    if not config.pluginmanager.has_plugin("tests.fixtures.sandbox"):
        config.pluginmanager.import_plugin("tests.fixtures.sandbox")


@pytest.fixture(scope="package")
def zeep_client(sandbox: SandboxProcess) -> Any:
    """A zeep client built from the WSDL the sandbox serves (no other network access)."""
    import zeep

    return zeep.Client(f"{sandbox.http_url}etframework.wsdl")


@pytest.fixture(scope="package")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SandboxProcess]:
    """The sandbox tests reset and break their sandbox on purpose: they get one of their own."""
    sp = start_sandbox(tmp_path_factory.mktemp("mc_sandbox"))
    try:
        yield sp
    finally:
        sp.stop()


# A short send delay, and one more hard-bounce domain than the default (MC's behaviour everywhere is
# the sandbox's only behaviour: no legacy kindness is left to switch off).
TRUTHFUL_ARGS = (
    "--send-log-delay",
    "0.3",
    "--hard-bounce-domains",
    "bounce.example,hard.example",
)


@pytest.fixture(scope="package")
def truthful(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SandboxProcess]:
    """A sandbox that tells the truth everywhere (no legacy kindness); reset it before use."""
    sp = start_sandbox(tmp_path_factory.mktemp("mc_sandbox_truthful"), *TRUTHFUL_ARGS)
    try:
        yield sp
    finally:
        sp.stop()


@pytest.fixture
def clean_truthful(truthful: SandboxProcess) -> SandboxProcess:
    httpx.post(f"{truthful.http_url}_sandbox/reset", timeout=10).raise_for_status()
    return truthful
