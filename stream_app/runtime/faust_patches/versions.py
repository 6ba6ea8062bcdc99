"""The guard: the versions of faust-streaming, aiokafka and mode the patches were verified against.

The patches replace private methods of these libraries and read their private names
(`surface.py`), so any other version may have moved what they replace: `apply()` refuses to start on
one unless told to (`ALLOW_UNVERIFIED_FAUST=1`). VERIFIED_VERSIONS is what requirements.lock pins;
`tests/unit/faust_patches/test_apply.py` checks the two agree, so a bump of the lock fails the unit
tests until the patches are verified again (docs/faust-patches.md says how) and this constant moved.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from importlib import metadata

# Distribution name -> the version every patch was verified against (requirements.lock's pins).
VERIFIED_VERSIONS: Mapping[str, str] = {
    "faust-streaming": "0.15.3",
    "aiokafka": "0.14.0",
    "mode-streaming": "0.7.1",
}

NOT_INSTALLED = "not installed"


class UnverifiedVersionError(RuntimeError):
    """An installed faust-streaming, aiokafka or mode is not the version the patches were verified on."""


def installed_versions(version: Callable[[str], str] = metadata.version) -> dict[str, str]:
    """The installed version of each distribution in VERIFIED_VERSIONS."""
    found: dict[str, str] = {}
    for name in VERIFIED_VERSIONS:
        try:
            found[name] = version(name)
        except metadata.PackageNotFoundError:
            found[name] = NOT_INSTALLED
    return found


def unverified(installed: Mapping[str, str]) -> dict[str, str]:
    """The distributions whose installed version is not the verified one, with that version."""
    return {
        name: installed.get(name, NOT_INSTALLED)
        for name, verified in VERIFIED_VERSIONS.items()
        if installed.get(name) != verified
    }


def describe(installed: Mapping[str, str]) -> str:
    """What differs, as "faust-streaming 0.16.0 (verified: 0.15.3), ..."."""
    return ", ".join(
        f"{name} {version} (verified: {VERIFIED_VERSIONS[name]})"
        for name, version in unverified(installed).items()
    )


def refusal(installed: Mapping[str, str]) -> str:
    """The error `apply()` raises on unverified versions."""
    verified = ", ".join(f"{name} {version}" for name, version in VERIFIED_VERSIONS.items())
    return (
        f"refusing to start: the Faust patches (stream_app/runtime/faust_patches) replace private "
        f"methods of faust-streaming, aiokafka and mode and were verified against {verified}; "
        f"installed: {describe(installed)}. Check every patch against the installed versions "
        f"(docs/faust-patches.md, 'Upgrading') and update VERIFIED_VERSIONS in "
        f"stream_app/runtime/faust_patches/versions.py, or set ALLOW_UNVERIFIED_FAUST=1 to start anyway."
    )
