"""Loads the sandbox fixtures when the root conftest has not registered them as a plugin."""

from __future__ import annotations

import pytest


def pytest_configure(config: pytest.Config) -> None:
    if not config.pluginmanager.has_plugin("tests.fixtures.sandbox"):
        config.pluginmanager.import_plugin("tests.fixtures.sandbox")


@pytest.fixture(scope="session")
def zeep_client(sandbox):  # type: ignore[no-untyped-def]
    """A zeep client built from the WSDL the sandbox serves (no other network access)."""
    import zeep

    return zeep.Client(f"{sandbox.http_url}etframework.wsdl")
