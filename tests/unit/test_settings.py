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
