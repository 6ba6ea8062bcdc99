"""The intake's dedupe marks: for every event_id, the input record it was first read from.

Marks are kept per input partition, in memory, for the partitions this worker's intake owns: a cheap
first filter for a record re-produced by a client that partitions as the original producer did. A
replay onto another partition (kcat's CRC32 partitioner, `-p N`) is not seen here; the send ledger,
partitioned by notification id (senders.py), turns its notifications into `duplicate` outcomes.
Marks are made durable one record per intake batch and input partition on the log topic
`<APP_ID>-intake-seen` (cleanup `delete` after `STATE_RETENTION_DAYS`): a per-event changelog record
cost as much as the event's notifications, and no compaction is needed when each record holds a batch.
When a partition is assigned, its marks are read back from the log before its first record is handled.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Iterable, MutableMapping
from pathlib import Path

import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition

from stream_app.ops import metrics
from stream_app.stages.intake.outbox import Outbox

log = logging.getLogger("stream_app.seen")


def is_duplicate(mark: int | None, offset: int) -> bool:
    """Whether an event first read at offset `mark` of this partition is a duplicate when read at `offset`.

    The same record read again is not: that happens when a worker died before its offset was
    committed, and its marks may have reached Kafka while its notifications had not. It is handled
    again; the send ledger absorbs what did go out.
    """
    return mark is not None and mark != offset


Marks = MutableMapping[str, int]  # event_id -> offset


class BadMarks(ValueError):
    """A record of the dedupe log that is not one this module wrote."""


def read_marks(raw: bytes | None) -> tuple[TopicPartition, dict[str, int]]:
    """One dedupe log record -> the input partition it is about and its marks (event_id -> offset)."""
    try:
        data = orjson.loads(raw or b"")
    except orjson.JSONDecodeError as exc:
        raise BadMarks(f"not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise BadMarks(f"expected an object, got {type(data).__name__}")
    topic, partition, seen = data.get("topic"), data.get("partition"), data.get("seen")
    if not isinstance(topic, str) or not isinstance(partition, int) or not isinstance(seen, dict):
        raise BadMarks("expected topic (string), partition (integer) and seen (object)")
    return TopicPartition(topic, partition), seen


class SeenMarks:
    """`directory`: keep each partition's marks in a RocksDB there (TABLE_STORE=rocksdb://), not in
    the heap, where they would grow by ~150 B per event handled; rebuilt from the log on assignment."""

    def __init__(
        self, bootstrap_servers: str, topic: str, log_partitions: int, directory: Path | None = None
    ) -> None:
        self.bootstrap_servers = bootstrap_servers
        self.topic = topic
        self.log_partitions = log_partitions
        self.directory = directory
        self._marks: dict[TopicPartition, Marks] = {}
        self._new: dict[TopicPartition, dict[str, int]] = {}

    def log_partition(self, tp: TopicPartition) -> int:
        return tp.partition % self.log_partitions

    def _new_store(self, tp: TopicPartition) -> Marks:
        if self.directory is None:
            return {}
        from rocksdict import Options, Rdict  # the rocksdb extra, only where it is configured

        path = self.directory / f"{tp.topic}-{tp.partition}"
        shutil.rmtree(path, ignore_errors=True)  # the log is the truth: rebuilt on every assignment
        path.parent.mkdir(parents=True, exist_ok=True)
        options = Options()
        options.set_write_buffer_size(4 * 1024**2)
        store: Marks = Rdict(str(path), options)  # type: ignore[assignment]  # a mapping in all but its stubs
        return store

    def _close(self, marks: Marks) -> None:
        close = getattr(marks, "close", None)
        if close is not None:
            close()

    def load(self, tp: TopicPartition, marks: dict[str, int]) -> None:
        """Take the marks of a partition as they were restored."""
        store = self._new_store(tp)
        for event_id, offset in marks.items():
            store[event_id] = offset
        self._marks[tp] = store

    def of(self, tp: TopicPartition) -> Marks:
        """The marks of a restored partition (event_id -> offset); write new ones with `mark`."""
        return self._marks[tp]

    def mark(self, tp: TopicPartition, event_id: str, offset: int) -> None:
        self._marks[tp][event_id] = offset
        self._new.setdefault(tp, {})[event_id] = offset

    def write_new(self, outbox: Outbox) -> None:
        """Put the marks made since the last call into `outbox`: one log record per input partition."""
        for tp, marks in self._new.items():
            value = orjson.dumps({"topic": tp.topic, "partition": tp.partition, "seen": marks})
            key = f"{tp.topic}:{tp.partition}".encode()
            outbox.add(self.topic, key, value, partition=self.log_partition(tp))
        self._new = {}

    def forget(self, tps: Iterable[TopicPartition]) -> None:
        for tp in tps:
            marks = self._marks.pop(tp, None)
            if marks is not None:
                self._close(marks)
            self._new.pop(tp, None)

    async def restore(self, tps: Iterable[TopicPartition]) -> None:
        """Read the marks of these input partitions back from the log (from its start to its end now);
        partitions already restored are skipped."""
        wanted = {tp: self._new_store(tp) for tp in tps if tp not in self._marks}
        if not wanted:
            return
        by_log: dict[int, list[TopicPartition]] = {}
        for tp in wanted:
            by_log.setdefault(self.log_partition(tp), []).append(tp)
        reader = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap_servers, enable_auto_commit=False, auto_offset_reset="earliest"
        )
        await reader.start()
        try:
            parts = [TopicPartition(self.topic, p) for p in by_log]
            reader.assign(parts)
            ends = await reader.end_offsets(parts)
            await reader.seek_to_beginning(*parts)
            todo = {tp for tp in parts if ends[tp] > 0}
            records = 0
            while todo:
                fetched = await reader.getmany(*todo, timeout_ms=1000)
                for part, batch in fetched.items():
                    for record in batch:
                        records += 1
                        try:
                            found = read_marks(record.value)
                        except BadMarks as exc:
                            # Skipped, not the end of the intake: its marks only filter replays early,
                            # the send ledger still turns a replay into `duplicate`.
                            metrics.SEEN_LOG_BAD_RECORDS.inc()
                            log.error(
                                "unreadable record on the dedupe log skipped: %s",
                                exc,
                                extra={
                                    "topic": self.topic,
                                    "partition": part.partition,
                                    "offset": record.offset,
                                },
                            )
                            continue
                        target = wanted.get(found[0])
                        if target is not None:
                            for event_id, offset in found[1].items():
                                target[event_id] = offset
                    if batch and batch[-1].offset + 1 >= ends[part]:
                        todo.discard(part)
                for part in list(todo):
                    if await reader.position(part) >= ends[part]:
                        todo.discard(part)
        except BaseException:
            for marks in wanted.values():
                self._close(marks)
            raise
        finally:
            await reader.stop()
        self._marks.update(wanted)
        log.info(
            "dedupe marks restored",
            extra={"partitions": len(wanted), "records": records},
        )
