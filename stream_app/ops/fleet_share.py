"""The worker's share of the fleet's MC call budget (`MC_FLEET_REQUESTS_PER_SECOND`).

MC's budget is per account, whatever the number of workers: each worker paces itself at the fleet's
rate divided by the members of its consumer group (read from the broker every
`SHARE_REFRESH_SECONDS`). A worker joining or leaving changes every share at the next refresh; until
then the fleet may spend one worker's share too much (or too little) for at most that long, and
MC's own 429 / Retry-After holds every caller of a worker back meanwhile (mc/pacing.py).
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

from aiokafka.admin import AIOKafkaAdminClient

if TYPE_CHECKING:
    from stream_app.runtime.app import Runtime

log = logging.getLogger("stream_app.fleet_share")

SHARE_REFRESH_SECONDS = 30.0


def share(fleet_rate: float, members: int) -> float:
    """This worker's calls a second: the fleet's rate split evenly (a worker alone gets all of it)."""
    return fleet_rate / max(1, members)


def group_members(descriptions: list[Any], group_id: str) -> int:
    """Members of `group_id` in aiokafka's raw DescribeGroups answers (error code, id, state, protocol
    type, protocol, members, ...)."""
    for response in descriptions:
        for group in getattr(response, "groups", []):
            if group[1] == group_id and group[0] == 0:
                return len(group[5])
    return 0


async def refresh(runtime: Runtime) -> None:
    settings = runtime.settings
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.bootstrap_servers)
    await admin.start()
    try:
        members = group_members(await admin.describe_consumer_groups([settings.app_id]), settings.app_id)
    finally:
        await admin.close()
    rate = share(settings.mc_fleet_requests_per_second, members)
    bucket = runtime.marketing_cloud().pacer.bucket
    if abs(bucket.rate - rate) > 1e-9:
        fleet = settings.mc_fleet_requests_per_second
        log.info("MC call share: %.2f/s of the fleet's %.2f/s (%d workers)", rate, fleet, members)
        bucket.rate, bucket.capacity = rate, max(1.0, rate)


def install(runtime: Runtime) -> None:
    if runtime.settings.mc_fleet_requests_per_second <= 0:
        return

    @runtime.app.task
    async def refresh_share() -> None:
        while not runtime.app.should_stop:
            try:
                await refresh(runtime)
            except Exception as exc:  # keep the last share; the next round tries again
                log.warning("could not refresh the MC call share: %s", exc)
            await asyncio.sleep(SHARE_REFRESH_SECONDS)
