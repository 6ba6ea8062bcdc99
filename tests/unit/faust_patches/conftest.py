from __future__ import annotations

from collections.abc import Iterator

import pytest

from stream_app.runtime import faust_patches
from stream_app.runtime.faust_patches import gaps


@pytest.fixture(autouse=True)
def _no_absent_offsets_noted_by_other_tests() -> None:
    gaps.ABSENT.clear()


@pytest.fixture
def patched() -> Iterator[None]:
    """The patches installed for the test; afterwards as they were before it."""
    was_applied = faust_patches.applied()
    faust_patches.apply()
    yield
    if not was_applied:
        faust_patches.revert()


@pytest.fixture
def unpatched() -> Iterator[None]:
    """The libraries' own methods for the test; afterwards as they were before it."""
    was_applied = faust_patches.applied()
    faust_patches.revert()
    yield
    if was_applied:
        faust_patches.apply()
