"""Loads the sandbox fixtures when the root conftest has not registered them as a plugin."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

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
