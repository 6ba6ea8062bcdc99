"""Import watcher: closed windows become one CSV on MC's SFTP, then subscribers MC confirmed.

The batches of one close round (every partition's window of a slot, closed together) are merged
into one file, with any others that arrive meanwhile, so a worker uploads at most once per window.
The upload is a File Drop: MC starts the import when the file is completely written, and this stage
polls `ImportResultsSummary` for that file with backoff. Rows MC imported go on to
`subscriber.ready`; rows it rejected end as `failed` with MC's reason. A broken upload is retried
under a new file name, and an import whose row count differs from what was written is redone, since
MC may have read a partial file.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections import deque
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from faust.types import EventT, StreamT

from stream_app.contract.internal import decode_record, encode_record
from stream_app.contract.records import BatcherInput, SubscriberBatch, SubscriberReady
from stream_app.contract.topics import BATCHES_TOPIC
from stream_app.domain.retry import RetriesExhausted, RetryPolicy, call_with_retries
from stream_app.domain.subscriber_csv import build_csv, parse_error_report, subscriber_rows
from stream_app.mc import AuthError, ImportSummary, TransientMCError, attempt_name, error_report_path
from stream_app.ops import metrics
from stream_app.runtime.outputs import Outputs

if TYPE_CHECKING:
    from stream_app.runtime.app import Runtime

log = logging.getLogger("stream_app.imports")

# A file of batches closed by size (a backlog's, in a burst) waits this long after its latest batch
# for another, and at most MERGE_AT_MOST_SECONDS in all; a file with a close round goes as soon as
# the round is complete.
MERGE_WITHIN_SECONDS = 0.1
MERGE_AT_MOST_SECONDS = 0.5
# How long a file waits for the rest of an incomplete round: a round's closes run one after
# another, each after Kafka acked the one before, and a window's close request can be lost with
# its worker (the next owner asks again, in a round of its own).
ROUND_AT_MOST_SECONDS = 5.0
MAX_BATCHES_PER_FILE = 64
# Files whose import is watched at once; MC runs imports one after another anyway.
MAX_IMPORTS_IN_FLIGHT = 4
POLL_FIRST_SECONDS = 0.2
POLL_MAX_SECONDS = 5.0
# Poll at the first pace this long before backing off: a small file is often imported within a
# second or two, and a backoff that has already grown to ~0.7 s adds that much to every new
# subscriber's draw-to-send latency (measured by `make bench`).
POLL_FAST_SECONDS = 3.0
# Around the time MC's recent imports took, polls come this often, from POLL_LEAD_SECONDS before it
# to POLL_NEAR_SECONDS after (see ImportPace).
POLL_CLOSE_SECONDS = 0.05
POLL_LEAD_SECONDS = 0.1
POLL_NEAR_SECONDS = 0.5


class ImportPace:
    """How long MC's latest imports took, from the end of the upload to the summary saying done.

    A steady 0.2 s pace cost ~6 SOAP calls per import (~10 ms of the worker's CPU each, zeep) and up
    to 0.2 s of every new subscriber's latency. Polling from just before the time recent imports
    needed, and often then, costs ~3 calls and at most POLL_CLOSE_SECONDS. An import slower than
    those (a bigger file, a busy MC) is polled at the usual pace after that.
    """

    def __init__(self, remember: int = 8) -> None:
        self._recent: deque[float] = deque(maxlen=remember)

    def record(self, seconds: float) -> None:
        self._recent.append(seconds)

    def expected(self) -> float | None:
        return min(self._recent) if self._recent else None


def poll_pause(waited: float, expected: float | None) -> float:
    """Seconds to sleep before the next poll of an import watched for `waited` seconds, when recent
    imports took at least `expected` seconds (None: nothing known yet)."""
    if expected is not None:
        if waited < expected - POLL_LEAD_SECONDS:
            return expected - POLL_LEAD_SECONDS - waited
        if waited < expected + POLL_NEAR_SECONDS:
            return POLL_CLOSE_SECONDS
    if waited < POLL_FAST_SECONDS:
        return POLL_FIRST_SECONDS
    return min(POLL_MAX_SECONDS, waited / 4)  # backing off: MC is slow today, or the file big


class ImportFailed(TransientMCError):
    """MC's import of our file went wrong as a whole; uploading again may succeed."""


@dataclass(frozen=True)
class ImportOutcome:
    file_name: str
    summary: ImportSummary
    rejected: dict[str, str]


def file_base_name(now: datetime) -> str:
    return f"subscribers_{now:%Y%m%dT%H%M%S}_{uuid.uuid4().hex[:8]}.csv"


class MergedFile:
    """The batches one file takes, and when it stops taking them (no I/O; the clock is passed in)."""

    def __init__(self, now: float) -> None:
        self.events: list[EventT] = []
        self.first = self.last = now
        self.closed = False
        self.arrived = asyncio.Event()  # wakes the file's task: a batch may have completed its round
        self._rounds: dict[str, tuple[int, set[str]]] = {}  # round -> its size, the windows seen

    def add(self, event: EventT, now: float) -> None:
        self.events.append(event)
        self.last = now
        self.arrived.set()
        batch: SubscriberBatch = event.value  # type: ignore[assignment]
        if batch.close_round:
            # Windows, not batches, are counted: Faust may deliver a record twice around a restart.
            self._rounds.setdefault(batch.close_round, (batch.round_size, set()))[1].add(batch.window_id)

    def rounds_complete(self) -> bool:
        return all(len(windows) >= size for size, windows in self._rounds.values())

    def full(self) -> bool:
        return len(self.events) >= MAX_BATCHES_PER_FILE

    def due(self) -> float:
        """When the file stops taking batches, unless another one comes first."""
        if self._rounds:  # a round's last window is known: no waiting on a guess
            return self.last if self.rounds_complete() else self.first + ROUND_AT_MOST_SECONDS
        return min(self.last + MERGE_WITHIN_SECONDS, self.first + MERGE_AT_MOST_SECONDS)


class ImportWatcher:
    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.settings = runtime.settings
        self.intents = runtime.topics.intents
        self.out = Outputs(runtime.app)
        self._pace = ImportPace()
        self._in_flight: set[asyncio.Task[None]] = set()

    async def wait_for_import(self, file_name: str, expected_rows: int) -> ImportOutcome:
        """Poll MC until the import of `file_name` is over; never assume it is done after a delay."""
        mc = self.runtime.marketing_cloud()
        started = time.monotonic()
        expected = self._pace.expected()
        while True:
            await asyncio.sleep(poll_pause(time.monotonic() - started, expected))
            summary = await mc.soap.import_summary(file_name)
            waited = time.monotonic() - started
            if summary is not None and summary.done:
                break
            if summary is None and waited > self.settings.import_start_timeout_seconds:
                raise ImportFailed(f"MC did not start importing {file_name} within {waited:.0f} s")
            if waited > self.settings.import_timeout_seconds:
                raise ImportFailed(f"import of {file_name} not finished after {waited:.0f} s")
        self._pace.record(waited)
        if summary.status != "Completed":
            raise ImportFailed(f"MC import of {file_name} ended with status {summary.status}")
        if summary.total_rows != expected_rows:
            raise ImportFailed(
                f"MC read {summary.total_rows} rows of {file_name}, {expected_rows} were written"
            )
        rejected: dict[str, str] = {}
        if summary.errors:
            report = await mc.sftp.read_file(error_report_path(file_name))
            rejected = parse_error_report(report) if report else {}
        return ImportOutcome(file_name, summary, rejected)

    async def import_subscribers(self, notifications: list[SubscriberReady]) -> ImportOutcome:
        rows = subscriber_rows(notifications)
        metrics.BATCH_SIZE.observe(len(rows))
        data = build_csv(rows)
        base = file_base_name(datetime.now(UTC))
        mc = self.runtime.marketing_cloud()

        async def attempt(number: int) -> ImportOutcome:
            name = attempt_name(base, number)
            try:
                await mc.sftp.upload(name, data)
            except AuthError as exc:  # a wrong password blocks every batch: back off, do not drop
                raise TransientMCError(str(exc)) from exc
            log.info("uploaded subscriber file", extra={"file": name, "rows": len(rows)})
            with metrics.import_pending(name, len(rows)):  # dashboard, stuck-import alert, duration
                return await self.wait_for_import(name, len(rows))

        async def on_retry(number: int, exc: TransientMCError, wait: float) -> None:
            log.warning("import attempt %d failed, retrying in %.1f s: %s", number, wait, exc)

        policy = RetryPolicy.from_settings(self.settings)
        outcome, _ = await call_with_retries(attempt, policy, on_retry)
        return outcome

    async def handle(self, events: list[EventT]) -> None:
        batches: list[SubscriberBatch] = [event.value for event in events]  # type: ignore[misc]
        notifications = [row for batch in batches for row in batch.rows]
        if not notifications:  # only a round's reports of windows with nothing left to import
            return
        windows = [batch.window_id for batch in batches if batch.rows]
        try:
            outcome = await self.import_subscribers(notifications)
        except RetriesExhausted as exc:
            for event in events:
                await self.out.dead_letter(event, exc)
            for ready in notifications:
                await self.out.status(ready, "failed", reason=f"subscriber import failed: {exc}")
            return
        imported = outcome.summary
        metrics.rows_imported(imported.succeeded, imported.errors)
        detail = {
            "windows": ",".join(windows),
            "file": outcome.file_name,
            "import_status": imported.status,
            "total_rows": imported.total_rows,
            "succeeded": imported.succeeded,
            "errors": imported.errors,
        }
        for ready in notifications:
            reason = outcome.rejected.get(ready.subscriber_key)
            if reason is not None:
                await self.out.trace(
                    ready.event_id, "import-rejected", notification_id=ready.notification_id, **detail
                )
                await self.out.status(ready, "failed", reason=reason)
            else:
                await self.out.ready(ready, via=f"import {outcome.file_name}", **detail)
        confirmed = {r.subscriber_key: r for r in notifications if r.subscriber_key not in outcome.rejected}
        for key, ready in confirmed.items():
            confirmation = BatcherInput(
                kind="confirmed", subscriber_key=key, email=ready.email, mobile=ready.mobile
            )
            await self.intents.send(key=key.encode(), value=encode_record(confirmation), force=True)

    def watch(self, file: MergedFile, slots: asyncio.Semaphore) -> None:
        task = asyncio.create_task(self._merge_then_import(file, slots))
        # Referenced here so that it is not garbage-collected mid-import.
        self._in_flight.add(task)
        task.add_done_callback(self._in_flight.discard)

    async def _merge_then_import(self, file: MergedFile, slots: asyncio.Semaphore) -> None:
        try:
            while (wait := file.due() - time.monotonic()) > 0:
                file.arrived.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(file.arrived.wait(), wait)
            file.closed = True
            if not file.rounds_complete():
                log.warning("a close round is incomplete; its missing windows will go in another file")
            try:
                await self.handle(file.events)
            except Exception as exc:  # never stop the stage; the batch is kept in the DLQ
                log.exception("import stage failed")
                for event in file.events:
                    await self.out.dead_letter(event, exc)
        finally:
            slots.release()
        # Not reached when a stop cancelled the import (see abandon_imports): unacked, the batches
        # are read again by the partition's next owner.
        for event in file.events:
            event.ack()

    async def connect_to_mc(self) -> None:
        """Load the WSDL and open the SFTP connection as the worker starts: done by the first
        window's import, they added ~0.4 s (zeep parsing MC's WSDL) and an SSH handshake to its
        subscribers' latency, and a wrong SFTP host key or password shows now rather than with the
        first batch."""
        mc = self.runtime.marketing_cloud()
        for what, step in (("SOAP", mc.soap.start), ("SFTP", mc.sftp.connect)):
            try:
                await step()
            except Exception as exc:  # never stop the worker: the first import tries again, with retries
                log.warning("could not connect to MC %s at start: %r", what, exc)

    async def abandon_imports(self) -> None:
        """A stop cancels the imports still watched, before the MC client closes under them:
        failing on the closed client, they went to the DLQ and were acked, so nobody would redo
        them."""
        tasks = list(self._in_flight)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if tasks:
            log.info("stop: %d imports left for the next owner of their batches", len(tasks))


def install(runtime: Runtime) -> None:
    watcher = ImportWatcher(runtime)
    runtime.before_mc_close(watcher.abandon_imports)

    @runtime.app.agent(runtime.topics.batches, name="import-watcher")
    async def import_watcher(stream: StreamT) -> None:
        """Merge the batches of a close round (one per partition of a window slot), and any others
        that arrive meanwhile (those waiting after a backlog), into one file, then watch its import
        in a task of its own, so the next window's upload does not wait for this one's import (MC
        takes a second or more; windows close every `BATCH_WINDOW_SECONDS`). (Faust's take_events
        is no help: its timeout runs from the previous take, not from the batches.)

        Each event keeps one more reference until its import is over, so its offset is not
        committed before: a worker killed mid-import gets the batch again and redoes it (the
        ledger absorbs the repeated ready records).
        """
        slots = asyncio.Semaphore(MAX_IMPORTS_IN_FLIGHT)
        file: MergedFile | None = None  # the file still taking batches
        async for event in stream.events():
            try:  # raw bytes, decoded here: a record that does not decode goes to the DLQ, acked
                event.value = decode_record(SubscriberBatch, event.value, BATCHES_TOPIC)
            except Exception as exc:
                log.exception("not a subscriber batch", extra={"offset": event.message.offset})
                await watcher.out.dead_letter(event, exc)
                continue
            event.message.incref()
            if file is None or file.closed or file.full():
                await slots.acquire()  # every slot busy: stop taking batches (backpressure)
                file = MergedFile(time.monotonic())
                watcher.watch(file, slots)
            file.add(event, time.monotonic())

    @runtime.app.task
    async def connect_to_mc() -> None:
        await watcher.connect_to_mc()
