"""The wall around the patches (__init__.py, versions.py): importing patches nothing, `apply()` installs
every patch once and only on the verified versions, `revert()` puts every method back."""

from __future__ import annotations

import logging
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from aiokafka.consumer.fetcher import FetchResult
from faust.topics import Topic
from faust.transport import consumer as faust_consumer
from faust.transport.drivers import aiokafka as faust_aiokafka

from stream_app.runtime import faust_patches
from stream_app.runtime.faust_patches import commit, delivery, fetch, gaps, seek, versions
from stream_app.runtime.faust_patches.versions import VERIFIED_VERSIONS, UnverifiedVersionError

ROOT = Path(__file__).resolve().parents[3]

# Every method replaced: a patch added or dropped is a change to this table too.
EXPECTED = {
    ("faust.transport.consumer.Consumer", "_new_offset"): commit.new_offset,
    ("faust.transport.drivers.aiokafka.AIOKafkaConsumerThread", "seek_to_committed"): seek.seek_to_committed,
    ("faust.transport.consumer.Consumer", "perform_seek"): seek.perform_seek,
    ("faust.transport.consumer.Consumer", "getmany"): fetch.getmany,
    ("faust.transport.consumer.Consumer", "_add_gap"): gaps.add_gap,
    ("aiokafka.consumer.fetcher.FetchResult", "getall"): gaps.getall,
    ("faust.transport.consumer.Consumer", "_drain_messages"): delivery.drain_messages,
    ("faust.topics.Topic", "_get_producer"): delivery.get_producer,
}


def installed_now() -> dict[tuple[str, str], object]:
    return {
        (f"{p.owner.__module__}.{p.owner.__qualname__}", p.name): p.owner.__dict__[p.name]
        for p in faust_patches.PATCHES
    }


def test_importing_the_package_patches_nothing() -> None:
    # A fresh interpreter: in this one another test (or the app) may have applied them.
    check = (
        "import stream_app.runtime.faust_patches as fp\n"
        "assert not any(p.installed for p in fp.PATCHES)\n"
        "assert all(p.owner.__dict__[p.name] is p.original for p in fp.PATCHES)\n"
    )
    subprocess.run([sys.executable, "-c", check], cwd=ROOT, check=True)


@pytest.mark.usefixtures("unpatched")
def test_apply_installs_every_patch_once_and_revert_puts_each_method_back() -> None:
    originals = installed_now()
    assert not faust_patches.applied()
    faust_patches.apply()
    assert installed_now() == EXPECTED
    assert faust_patches.applied()
    # The classes Faust instantiates resolve to the patches (no override in between).
    assert faust_aiokafka.Consumer._new_offset is commit.new_offset
    assert faust_aiokafka.Consumer._drain_messages is delivery.drain_messages
    assert faust_aiokafka.AIOKafkaConsumerThread.seek_to_committed is seek.seek_to_committed
    faust_patches.apply()  # idempotent
    assert installed_now() == EXPECTED
    faust_patches.revert()
    assert installed_now() == originals
    assert not any(p.installed for p in faust_patches.PATCHES)
    for patch in faust_patches.PATCHES:
        assert patch.original.__module__.startswith(("faust.", "aiokafka.")), patch.label


def test_every_fix_has_its_patches() -> None:
    assert {fix for patch in faust_patches.PATCHES for fix in patch.fixes} == set(range(1, 8))


def test_the_patches_call_the_libraries_own_methods() -> None:
    def own(owner: type, name: str) -> object:
        return faust_patches.PATCHES[
            [(p.owner, p.name) for p in faust_patches.PATCHES].index((owner, name))
        ].original

    assert fetch.faust_getmany is own(faust_consumer.Consumer, "getmany")
    assert seek.faust_perform_seek is own(faust_consumer.Consumer, "perform_seek")
    assert gaps.aiokafka_getall is own(FetchResult, "getall")
    assert delivery.faust_get_producer is own(Topic, "_get_producer")


def newer_faust(monkeypatch: pytest.MonkeyPatch) -> None:
    installed = {**VERIFIED_VERSIONS, "faust-streaming": "0.16.0"}
    monkeypatch.setattr(versions, "installed_versions", lambda: installed)


@pytest.mark.usefixtures("unpatched")
def test_apply_refuses_to_start_on_a_version_not_verified(monkeypatch: pytest.MonkeyPatch) -> None:
    newer_faust(monkeypatch)
    with pytest.raises(UnverifiedVersionError) as refused:
        faust_patches.apply()
    message = str(refused.value)
    assert "faust-streaming 0.16.0 (verified: 0.15.3)" in message  # installed, and verified
    assert "faust-streaming 0.15.3, aiokafka 0.14.0, mode-streaming 0.7.1" in message  # all verified
    assert "ALLOW_UNVERIFIED_FAUST=1" in message
    assert not any(p.installed for p in faust_patches.PATCHES)


@pytest.mark.usefixtures("unpatched")
def test_allowed_it_applies_them_with_a_warning(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    newer_faust(monkeypatch)
    with caplog.at_level(logging.WARNING, logger="stream_app.faust_patches"):
        faust_patches.apply(allow_unverified=True)
    assert faust_patches.applied()
    assert "faust-streaming 0.16.0 (verified: 0.15.3)" in caplog.text


def test_a_library_missing_is_not_the_verified_version() -> None:
    def version(name: str) -> str:
        if name == "mode-streaming":
            raise versions.metadata.PackageNotFoundError(name)
        return VERIFIED_VERSIONS[name]

    installed = versions.installed_versions(version)
    assert versions.unverified(installed) == {"mode-streaming": "not installed"}
    assert versions.unverified(versions.installed_versions()) == {}  # this venv: the verified ones


def test_the_verified_versions_are_the_ones_the_lock_and_pyproject_pin() -> None:
    # Bumping a pin fails here until every patch is checked against the new version and
    # VERIFIED_VERSIONS moved with it (docs/faust-patches.md, "Upgrading").
    lock = dict(re.findall(r"^([A-Za-z0-9_.-]+)==(\S+)", (ROOT / "requirements.lock").read_text(), re.M))
    assert {name: lock[name] for name in VERIFIED_VERSIONS} == dict(VERIFIED_VERSIONS)
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    pinned = dict(spec.split("==", 1) for spec in project)
    assert {name: pinned[name] for name in VERIFIED_VERSIONS if name in pinned} == {
        "faust-streaming": VERIFIED_VERSIONS["faust-streaming"],
        "aiokafka": VERIFIED_VERSIONS["aiokafka"],
    }


@pytest.mark.usefixtures("unpatched")
def test_a_method_someone_else_replaced_is_refused_and_nothing_is_patched(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async def someone_elses(*args: object) -> None: ...

    monkeypatch.setattr(faust_consumer.Consumer, "_add_gap", someone_elses)
    with pytest.raises(faust_patches.PatchTargetError, match=r"Consumer\._add_gap was replaced"):
        faust_patches.apply(allow_unverified=True)
    assert not any(p.installed for p in faust_patches.PATCHES)


def test_a_method_missing_from_the_library_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    gone = faust_patches.Patch(faust_consumer.Consumer, "_gone", gaps.add_gap, (4,), None)
    monkeypatch.setattr(faust_patches, "PATCHES", (*faust_patches.PATCHES, gone))
    with pytest.raises(faust_patches.PatchTargetError, match=r"Consumer\._gone does not exist"):
        faust_patches.apply(allow_unverified=True)
    assert not gone.installed
