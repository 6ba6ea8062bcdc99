"""Subscriber imports: CSV files in the SFTP ``/Import`` folder, run one at a time.

File-drop modelling: a file fully written into ``/Import`` stands for the upload that triggers a File
Drop automation whose Import activity reads ``%%FILENAME_FROM_TRIGGER%%``. Its ImportResultsSummary row
therefore carries ``ImportDefinitionCustomerKey`` = the file's base name (e.g. ``subscribers_w123.csv``):
that is how a client correlates its upload with the import it triggered. Imports started through SOAP
``Perform start`` on an ImportDefinition carry that definition's CustomerKey instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import io
import re
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path

from .faults import FaultRegistry
from .state import ImportDefinition, ImportJob, ImportRowError, State, utcnow, valid_email

KEY_COLUMNS = ("subscriberkey", "subscriber key")
EMAIL_COLUMNS = ("emailaddress", "email address")
MOBILE_COLUMNS = ("mobilenumber", "mobile number")
IGNORED_SUFFIXES = (".part", ".tmp")
ERROR_REPORT_HEADER = ["SubscriberKey", "EmailAddress", "ErrorCode", "ErrorMessage"]


def triggers_import(path: str) -> bool:
    """Whether a completed upload at this SFTP path starts a file-drop import."""
    parts = [p for p in path.split("/") if p]
    return (
        len(parts) >= 2
        and parts[0] == "Import"
        and not parts[-1].startswith(".")
        and not parts[-1].lower().endswith(IGNORED_SUFFIXES)
    )


def file_spec_regex(spec: str, now: datetime) -> re.Pattern[str]:
    subs = {"%%YEAR%%": f"{now.year:04d}", "%%MONTH%%": f"{now.month:02d}", "%%DAY%%": f"{now.day:02d}"}
    out = ""
    i = 0
    while i < len(spec):
        for token, value in subs.items():
            if spec[i:].upper().startswith(token):
                out += re.escape(value)
                i += len(token)
                break
        else:
            out += ".*" if spec[i] == "*" else re.escape(spec[i])
            i += 1
    return re.compile(f"^{out}$", re.IGNORECASE)


class ImportManager:
    def __init__(self, state: State, faults: FaultRegistry, root: Path) -> None:
        self.state = state
        self.faults = faults
        self.root = root
        self._queue: asyncio.Queue[ImportJob] = asyncio.Queue()
        self._tasks: set[asyncio.Task[None]] = set()
        self._worker: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._worker = asyncio.create_task(self._run(), name="mc-import-worker")

    async def stop(self) -> None:
        tasks = [t for t in (self._worker, *self._tasks) if t is not None]
        for t in tasks:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        self._tasks.clear()
        self._worker = None

    def reset(self) -> None:
        # Jobs already queued belong to the previous generation; the worker skips them.
        for t in list(self._tasks):
            t.cancel()
        self._tasks.clear()
        self._queue = asyncio.Queue()
        if self._worker is not None:
            self._worker.cancel()
        self.start()

    def _spawn(self, job: ImportJob) -> None:
        generation = self.state.generation

        async def enqueue_later() -> None:
            # Models the File Drop / Perform latency before MC picks the import up.
            await asyncio.sleep(self.state.config.import_delay)
            if generation == self.state.generation:
                self._queue.put_nowait(job)

        task = asyncio.create_task(enqueue_later())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def file_dropped(self, path: str) -> ImportJob | None:
        if not triggers_import(path):
            return None
        name = path.rsplit("/", 1)[-1]
        job = ImportJob(task_id=self.state.next_task_id(), definition_key=name, file=path)
        self.state.imports[job.task_id] = job
        self._spawn(job)
        return job

    def perform_start(self, definition: ImportDefinition) -> ImportJob:
        path = self._newest_match(definition.file_spec)
        job = ImportJob(
            task_id=self.state.next_task_id(),
            definition_key=definition.customer_key,
            file=path or "",
            allow_errors=definition.allow_errors,
            source="perform",
        )
        self.state.imports[job.task_id] = job
        self._spawn(job)
        return job

    def _newest_match(self, spec: str) -> str | None:
        pattern = file_spec_regex(spec, datetime.now(UTC))
        best: tuple[float, str] | None = None
        base = self.root / "Import"
        if not base.is_dir():
            return None
        for p in base.rglob("*"):
            rel = "/" + p.relative_to(self.root).as_posix()
            if p.is_file() and triggers_import(rel) and pattern.match(p.name):
                mtime = p.stat().st_mtime
                if best is None or mtime > best[0]:
                    best = (mtime, rel)
        return best[1] if best else None

    async def _run(self) -> None:
        # One worker: imports run strictly one after another, as MC queues them.
        while True:
            job = await self._queue.get()
            if self.state.imports.get(job.task_id) is not job:
                continue  # reset since it was queued
            try:
                await self._process(job)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a broken file must never kill the worker
                job.status = "Error"
                job.error_message = f"Internal error: {exc}"
                job.ended_at = utcnow()

    async def _process(self, job: ImportJob) -> None:
        cfg = self.state.config
        job.status = "Processing"
        job.started_at = utcnow()
        self.state.bump("imports_started")
        fault = self.faults.take("import")
        if fault is not None:
            self.state.bump("faults_injected")
            if fault.mode == "slow":
                await asyncio.sleep(fault.seconds)
            elif fault.mode == "timeout":
                await asyncio.sleep(fault.seconds)
                return self._fail(job, "Import timed out (injected fault).")
            else:
                await asyncio.sleep(cfg.import_processing_seconds)
                return self._fail(job, f"Import failed (injected fault {fault.mode}).")
        if not job.file:
            await asyncio.sleep(cfg.import_processing_seconds)
            return self._fail(job, "No file matching the ImportDefinition's FileSpec was found in Import.")
        local = self.root / job.file.lstrip("/")
        try:
            raw = local.read_bytes()
            rows = self._parse(raw)
        except (OSError, UnicodeDecodeError, csv.Error, ValueError) as exc:
            await asyncio.sleep(cfg.import_processing_seconds)
            return self._fail(job, f"The file could not be read: {exc}")
        await asyncio.sleep(cfg.import_processing_seconds + 0.00005 * len(rows))
        if self.state.imports.get(job.task_id) is not job:
            return  # reset meanwhile
        self._apply(job, rows)
        if job.errors:
            self._write_error_report(job)
        if job.errors and not job.allow_errors:
            job.succeeded = 0
            return self._fail(job, "Import stopped at the first error (AllowErrors=false).")
        job.status = "Completed"
        job.ended_at = utcnow()
        self.state.bump("imports_completed")

    def _fail(self, job: ImportJob, message: str) -> None:
        job.status = "Error"
        job.error_message = message
        job.ended_at = utcnow()

    @staticmethod
    def _parse(raw: bytes) -> list[dict[str, str]]:
        text = raw.decode("utf-8-sig")
        reader = csv.reader(io.StringIO(text, newline=""), strict=True)
        header = next(reader, None)
        if not header:
            raise ValueError("the file is empty (a header row is required)")
        names = [h.strip() for h in header]
        lowered = [n.lower() for n in names]
        if not any(n in KEY_COLUMNS for n in lowered) or not any(n in EMAIL_COLUMNS for n in lowered):
            raise ValueError("the header row must have Subscriber Key and Email Address columns")
        rows: list[dict[str, str]] = []
        for record in reader:
            if not record or all(not c for c in record):
                continue
            if len(record) > len(names):
                raise ValueError(f"row {reader.line_num} has more fields than the header")
            rows.append({names[i]: record[i] for i in range(len(record))})
        return rows

    def _apply(self, job: ImportJob, rows: Iterable[dict[str, str]]) -> None:
        valid: list[tuple[str, str, str | None, dict[str, str]]] = []
        total = 0
        for index, row in enumerate(rows, start=1):
            total += 1
            key = email = ""
            mobile: str | None = None
            attrs: dict[str, str] = {}
            for name, value in row.items():
                low = name.lower()
                if low in KEY_COLUMNS:
                    key = value
                elif low in EMAIL_COLUMNS:
                    email = value
                elif low in MOBILE_COLUMNS:
                    mobile = value or None
                else:
                    attrs[name] = value
            if not key.strip():
                job.errors.append(ImportRowError(index, key, email, 12015, "Subscriber Key is missing."))
            elif not valid_email(email):
                job.errors.append(
                    ImportRowError(
                        index,
                        key,
                        email,
                        12000,
                        "InvalidEmailAddress: the email address is not valid (user@domain.tld, ASCII, "
                        "under 100 characters, no leading or trailing spaces).",
                    )
                )
            else:
                valid.append((key, email, mobile, attrs))
        job.total_rows = total
        if job.errors and not job.allow_errors:
            return
        for key, email, mobile, attrs in valid:
            self.state.upsert_subscriber(key, email, mobile, attrs)
        job.succeeded = len(valid)

    def _write_error_report(self, job: ImportJob) -> None:
        stem = Path(job.file).stem
        out = self.root / "Export" / f"{stem}_errors.csv"
        out.parent.mkdir(parents=True, exist_ok=True)
        buf = io.StringIO(newline="")
        writer = csv.writer(buf, lineterminator="\r\n")
        writer.writerow(ERROR_REPORT_HEADER)
        for e in job.errors:
            writer.writerow([e.subscriber_key, e.email, e.error_code, e.message])
        tmp = out.with_suffix(".csv.tmp")
        tmp.write_text(buf.getvalue(), encoding="utf-8")
        tmp.replace(out)
