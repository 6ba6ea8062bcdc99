"""The Faust patches: seven fixes to faust-streaming 0.15.3 (aiokafka 0.14.0, mode 0.7.1), behind a guard.

Importing this package changes nothing. `apply()` checks that the installed faust-streaming,
aiokafka and mode are the versions the patches were verified against (`versions.py`), refuses to
start otherwise (unless `allow_unverified`, from ALLOW_UNVERIFIED_FAUST=1), and then replaces the
methods listed in PATCHES; `revert()` puts the libraries' own back (for tests). One module per
concern, each saying what Faust does, what it does instead and which test shows it:

- commit.py       fix 1 (and the checks of 3, 4): `Consumer._new_offset`
- seek.py         fix 2: `AIOKafkaConsumerThread.seek_to_committed`, `Consumer.perform_seek`
- rewind.py       fix 3: the seek back to records fetched and never processed, shared by 3, 5 and 7
- gaps.py         fix 4: `Consumer._add_gap`, `FetchResult.getall` (aiokafka)
- fetch.py        fixes 2, 3, 5 (bookkeeping): `Consumer.getmany`
- undelivered.py  fix 5: records aiokafka handed out that the drain loop never handed on
- delivery.py     fix 6 (and part of 2): `Consumer._drain_messages`, `Topic._get_producer`
- stall.py        fix 7: a partition with lag and nothing moving
- surface.py      every Faust/aiokafka/mode name the patches use, as Protocols
- state.py        what the patches keep per consumer

Each fix, its incident history and an upstream-ready report: docs/faust-patches.md.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from aiokafka.consumer.fetcher import FetchResult
from faust.topics import Topic
from faust.transport.consumer import Consumer
from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread

from stream_app.runtime.faust_patches import commit, delivery, fetch, gaps, seek, versions
from stream_app.runtime.faust_patches.versions import VERIFIED_VERSIONS, UnverifiedVersionError

__all__ = [
    "PATCHES",
    "VERIFIED_VERSIONS",
    "Patch",
    "PatchTargetError",
    "UnverifiedVersionError",
    "applied",
    "apply",
    "revert",
]

log = logging.getLogger("stream_app.faust_patches")

# The packages whose methods may be replaced: anything else in their place was put there by someone.
_UPSTREAM = ("faust.", "aiokafka.", "mode.")


class PatchTargetError(RuntimeError):
    """A method to replace is missing, or is not the library's own (patched by someone else)."""


@dataclass(frozen=True)
class Patch:
    """One method replaced: `owner.name` becomes `replacement`; `original` is the library's own."""

    owner: type
    name: str
    replacement: Callable[..., object]
    fixes: tuple[int, ...]
    original: object  # owner.__dict__[name] when this package was imported; None if missing

    @property
    def label(self) -> str:
        return f"{self.owner.__module__}.{self.owner.__qualname__}.{self.name}"

    @property
    def installed(self) -> bool:
        return self.owner.__dict__.get(self.name) is self.replacement

    def problem(self) -> str | None:
        """Why this patch cannot be installed, or None."""
        current = self.owner.__dict__.get(self.name)
        if self.original is None:
            return f"{self.label} does not exist"
        module = str(getattr(self.original, "__module__", ""))
        if not module.startswith(_UPSTREAM):
            return f"{self.label} was already replaced (by {module}) before the patches were imported"
        if current is not self.original and current is not self.replacement:
            return f"{self.label} was replaced by something else ({current!r})"
        return None


def _patch(owner: type, name: str, replacement: Callable[..., object], *fixes: int) -> Patch:
    return Patch(owner, name, replacement, fixes, owner.__dict__.get(name))


# Every method replaced, in no particular order: `apply()` installs them all or none.
PATCHES: tuple[Patch, ...] = (
    _patch(Consumer, "_new_offset", commit.new_offset, 1, 3, 4),
    _patch(AIOKafkaConsumerThread, "seek_to_committed", seek.seek_to_committed, 2),
    _patch(Consumer, "perform_seek", seek.perform_seek, 2, 3, 5),
    _patch(Consumer, "getmany", fetch.getmany, 2, 3, 5, 7),
    _patch(Consumer, "_add_gap", gaps.add_gap, 4),
    _patch(FetchResult, "getall", gaps.getall, 4),
    _patch(Consumer, "_drain_messages", delivery.drain_messages, 2, 6),
    _patch(Topic, "_get_producer", delivery.get_producer, 6),
)


def applied() -> bool:
    """Is every patch installed?"""
    return all(patch.installed for patch in PATCHES)


def apply(*, allow_unverified: bool = False) -> None:
    """Install every patch, once; a second call does nothing.

    Raises UnverifiedVersionError, naming the installed and the verified versions, when faust-streaming,
    aiokafka or mode is not the version the patches were verified against, unless `allow_unverified`
    (then it logs a WARNING and goes on); and PatchTargetError when a method to replace is missing or
    was replaced by someone else, whatever `allow_unverified` says.
    """
    if applied():
        return
    installed = versions.installed_versions()
    if versions.unverified(installed):
        if not allow_unverified:
            raise UnverifiedVersionError(versions.refusal(installed))
        log.warning(
            "ALLOW_UNVERIFIED_FAUST is set: applying the Faust patches to versions they were not "
            "verified against: %s",
            versions.describe(installed),
        )
    problems = [problem for patch in PATCHES if (problem := patch.problem()) is not None]
    if problems:
        raise PatchTargetError("cannot apply the Faust patches: " + "; ".join(problems))
    for patch in PATCHES:
        setattr(patch.owner, patch.name, patch.replacement)
    log.debug("Faust patches applied: %s", ", ".join(patch.label for patch in PATCHES))


def revert() -> None:
    """Put the libraries' own methods back wherever a patch is installed (for tests)."""
    for patch in PATCHES:
        if patch.installed:
            setattr(patch.owner, patch.name, patch.original)
