"""Faust web views every worker serves (design.md section 8)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from faust.web import Request, Response, View

from stream_app.stages.tracking import summarise

if TYPE_CHECKING:
    from stream_app.runtime.app import Runtime


def install(runtime: Runtime) -> None:
    app, event_trace = runtime.app, runtime.event_trace

    @app.page("/events/{event_id}/")
    class EventView(View):
        """What happened to one input event, stage by stage; asked of any worker, answered by the
        owner of the event's partition."""

        @app.table_route(table=event_trace, match_info="event_id")  # type: ignore[arg-type]
        async def get(self, request: Request, event_id: str) -> Response:
            return self.json(summarise(event_id, event_trace.get(event_id)))

    @app.page("/health/")
    class HealthView(View):
        """Ready once the worker owns partitions and has restored its tables (probes and tests)."""

        async def get(self, request: Request) -> Response:
            assigned = len(app.consumer.assignment()) if app.consumer else 0
            recovered = app.tables.recovery.completed.is_set()  # type: ignore[attr-defined]
            ready = assigned > 0 and not app.rebalancing and recovered
            return self.json({"ready": ready, "assigned_partitions": assigned}, status=200 if ready else 503)
