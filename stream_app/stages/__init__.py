"""The stages of the flow (design.md's picture, left to right), found one way: this list.

Each stage module has `install(runtime)`, which defines its agents, tables, timers and views on the
runtime's Faust app. `WORKER_STAGES` picks among `settings.STAGES`; every worker runs `EVERY_WORKER`.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from stream_app.settings import STAGES

if TYPE_CHECKING:
    from stream_app.runtime.app import Runtime

FLOW: dict[str, tuple[str, ...]] = {stage: (f"stream_app.stages.{stage}",) for stage in STAGES}
# MC's feedback on the sends (stages/feedback.py) goes with the senders: the workers that talk to MC
# for sends, whose SMS it follows; one of them (the owner of its one-partition topic) polls for all.
FLOW["senders"] += ("stream_app.stages.feedback",)
# Bounces feed the suppression list every sender and batcher reads; traces, the web views,
# /metrics, the dashboard and the alerts answer for whatever stages the worker runs.
EVERY_WORKER = (
    "stream_app.stages.suppression",
    "stream_app.stages.tracking",
    "stream_app.ops.web",
    "stream_app.ops.dashboard",
    "stream_app.ops.fleet_share",
)


def install(runtime: Runtime, stages: tuple[str, ...]) -> None:
    for module in (*(module for stage in stages for module in FLOW[stage]), *EVERY_WORKER):
        importlib.import_module(module).install(runtime)
