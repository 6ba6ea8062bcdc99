"""The Faust ceiling: the least a Faust agent does per intake event, on the baseline's records.

`python -m bench.faust_agent` runs a one-agent Faust app (same Faust, aiokafka, uvloop, commit interval
and table store as the worker, loggers at WARNING): consume, orjson-decode, one table write (what
intake's dedupe costs), produce. No validation, no batching, no trace. Its rate divided by the baseline
is the highest `ratio` any per-event Faust intake can reach on this machine.
"""

from __future__ import annotations

import os
import sys

import faust
import orjson
from faust.types import StreamT

from stream_app.settings import ROCKSDB_OPTIONS

app = faust.App(
    os.environ["APP_ID"],
    broker=os.environ["BROKER_URL"],
    store=os.environ.get("TABLE_STORE", "rocksdb://"),
    datadir=os.environ["STATE_DIR"],
    web_host="127.0.0.1",
    web_bind="127.0.0.1",
    web_port=int(os.environ["WEB_PORT"]),
    consumer_auto_offset_reset="earliest",
    broker_commit_interval=0.5,
    topic_partitions=int(os.environ.get("PARTITIONS", "4")),
)
source = app.topic(os.environ["SOURCE"], key_type=bytes, value_type=bytes, value_serializer="raw")
sink = app.topic(os.environ["SINK"], key_type=bytes, value_type=bytes, value_serializer="raw")
# The worker's RocksDB tuning, without importing the worker's app.
seen = app.Table("seen", key_type=str, value_type=bytes, options=ROCKSDB_OPTIONS)


@app.agent(source)
async def forward(stream: StreamT) -> None:
    async for event in stream.events():
        value = orjson.loads(event.value)
        seen[value["event_id"]] = b"1"
        await sink.send(key=event.key, value=orjson.dumps(value), force=True)


if __name__ == "__main__":
    sys.argv = ["bench.faust_agent", "--loop", "uvloop", "worker", "--loglevel", "warn"]
    app.main()
