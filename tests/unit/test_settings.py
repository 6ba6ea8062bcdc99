"""Settings read from the environment."""

from __future__ import annotations

import pytest

from stream_app.settings import STAGES, Settings


def test_a_worker_runs_every_stage_unless_told(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WORKER_STAGES", raising=False)
    assert Settings().stages == STAGES
    monkeypatch.setenv("WORKER_STAGES", " senders , intake ")
    assert Settings().stages == ("intake", "senders")  # in flow order


def test_an_unknown_stage_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WORKER_STAGES", "intake,mailer")
    with pytest.raises(ValueError, match="mailer"):
        Settings()


def test_per_event_state_is_kept_thirty_days_unless_told(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("STATE_RETENTION_DAYS", raising=False)
    assert Settings().state_retention_days == 30.0
    monkeypatch.setenv("STATE_RETENTION_DAYS", "7.5")
    assert Settings().state_retention_days == 7.5


def test_every_broker_of_the_url_is_a_bootstrap_server() -> None:
    # A client that knew only the first broker could not start while that broker was down.
    settings = Settings(broker_url="kafka://10.0.0.1:9092;10.0.0.2:9092,10.0.0.3:9093")
    assert settings.bootstrap_servers == "10.0.0.1:9092,10.0.0.2:9092,10.0.0.3:9093"
    assert Settings(broker_url="kafka://127.0.0.1:9092").bootstrap_servers == "127.0.0.1:9092"
