"""`python -m stream_app registry`'s parts that need no JVM: the pinned release, the build's cache
marker, the address it listens on."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from stream_app.localkafka import registry
from stream_app.localkafka.errors import BrokerError
from stream_app.localkafka.registry import LocalRegistry, apicurio_version, host_port


def test_the_pom_pins_the_apicurio_release() -> None:
    assert apicurio_version() == "2.4.2.Final"


def test_the_address_comes_from_schema_registry_url_or_defaults_to_loopback_8781() -> None:
    assert host_port("") == ("127.0.0.1", 8781)
    assert host_port("http://127.0.0.1:18081/apis/ccompat/v7") == ("127.0.0.1", 18081)
    assert host_port("http://localhost/apis/ccompat/v7") == ("localhost", 8781)
    assert LocalRegistry(port=9999).url == "http://127.0.0.1:9999/apis/ccompat/v7"


def test_a_build_counts_only_with_its_runner_and_the_marker_of_this_pom(tmp_path: Path) -> None:
    assert not registry._built(tmp_path, "abc")
    (tmp_path / registry.RUNNER).write_bytes(b"jar")
    assert not registry._built(tmp_path, "abc")  # no marker: an interrupted build
    (tmp_path / registry.MARKER).write_text("abc\n")
    assert registry._built(tmp_path, "abc")
    assert not registry._built(tmp_path, "changed-pom")


def test_without_maven_the_build_fails_saying_how_to_get_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(registry, "APP_DIR", tmp_path / "app")
    which = shutil.which
    monkeypatch.setattr(shutil, "which", lambda name: None if name == "mvn" else which(name))
    with pytest.raises(BrokerError, match="mvn not found: .*apt-get install -y maven"):
        registry.ensure_registry()


def test_a_taken_port_is_refused_before_any_jvm_starts() -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(BrokerError, match=f"127.0.0.1:{port} is in use"):
            LocalRegistry(port=port).start()
