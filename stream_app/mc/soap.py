"""MC SOAP (partner API) through zeep: import status, subscriber upserts, sent-event and send log lookups."""

from __future__ import annotations

import asyncio
import logging
import posixpath
import threading
import time
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import httpx
import zeep
from lxml import etree
from zeep.exceptions import Error as ZeepError
from zeep.exceptions import Fault
from zeep.exceptions import TransportError as ZeepTransportError
from zeep.proxy import AsyncServiceProxy
from zeep.transports import AsyncTransport
from zeep.wsdl import Document

from stream_app.mc.auth import TokenManager
from stream_app.mc.errors import PermanentMCError, ThrottledMCError, TransientMCError, parse_retry_after
from stream_app.mc.tracking import KIND_FIELDS, SEND_LOG_JOIN_FIELDS, SendLogEntry, TrackingEvent

log = logging.getLogger(__name__)

_NS = "http://exacttarget.com/wsdl/partnerAPI"
_BINDING = f"{{{_NS}}}SoapBinding"
_MAX_OBJECTS_PER_CREATE = 50  # MC's soft limit for a synchronous Create
_MAX_PAGES = 20
# The WSDL imports this fault schema from webservice.exacttarget.com, yet no type in it is
# referenced; an empty stand-in keeps startup independent of that host being reachable.
_FAULT_XSD = b"""<?xml version="1.0"?>
<xsd:schema
   xmlns:xsd="http://www.w3.org/2001/XMLSchema" targetNamespace="urn:fault.partner.exacttarget.com"/>"""

_documents: dict[str, Document] = {}
_documents_lock = threading.Lock()


@dataclass(frozen=True)
class ImportSummary:
    """One row of ImportResultsSummary: MC's progress report for an import."""

    customer_key: str
    status: str
    total_rows: int
    succeeded: int
    errors: int
    duplicated: int = 0
    task_id: int | None = None

    @property
    def done(self) -> bool:
        return self.status in ("Completed", "Error")


@dataclass(frozen=True)
class SubscriberRow:
    subscriber_key: str
    email: str
    attributes: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class UpsertResult:
    subscriber_key: str
    ok: bool
    code: int | None = None
    message: str = ""


@dataclass(frozen=True)
class SendLogRow:
    """A row of a send logging data extension: MC's record that it sent one notification.

    MC writes it at send time (not when the API accepts the send) for every attempted send, so a row
    with no `error_code` is evidence that MC sent the notification; `error_code` is MC's reason
    when it stopped the send.
    """

    notification_id: str
    error_code: str | None
    subscriber_key: str | None


@dataclass(frozen=True)
class TriggeredEmail:
    """One email of a batched SOAP Create: its own definition, sender name, recipient, attributes."""

    definition_key: str
    to: str
    subscriber_key: str
    from_name: str | None = None
    from_address: str | None = None
    attributes: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class TriggeredResult:
    """MC's answer for one TriggeredSend object of a Create (by its OrdinalID): queued, or why not."""

    ok: bool
    request_id: str
    code: int | None = None
    message: str = ""
    subscriber_code: int | None = None

    def error(self) -> PermanentMCError:
        return PermanentMCError(
            self.message or "TriggeredSend refused", self.code, subscriber_code=self.subscriber_code
        )


class _Transport(AsyncTransport):
    """zeep transport over the shared httpx client.

    AsyncTransport.__init__ is skipped on purpose: it replaces the headers of the client it is
    given, and its post() logs whole envelopes at DEBUG, which would log the fueloauth token.
    """

    def __init__(self, http: httpx.AsyncClient, *, timeout: float, preloaded: Mapping[str, bytes] = {}):
        self.cache = None
        self._close_session = False
        self.client = http
        self.wsdl_client = None
        self.logger = log
        self._timeout = timeout
        self._preloaded = dict(preloaded)

    def load(self, url: str) -> bytes:
        if url in self._preloaded:
            return self._preloaded[url]
        if url.endswith("/ETFrameworkFault.xsd"):
            return _FAULT_XSD
        # Only reached while parsing, which runs in a worker thread, so a blocking fetch is fine.
        with httpx.Client(timeout=self._timeout) as client:
            response = client.get(url)
            response.raise_for_status()
            return response.content

    async def post(self, address: str, message: bytes, headers: Mapping[str, str]) -> httpx.Response:
        response = await self.client.post(
            address, content=message, headers=dict(headers), timeout=self._timeout
        )
        # zeep reads any non-SOAP error page as an "Unknown fault"; the HTTP status says more.
        if response.status_code != 200 and b"Envelope" not in response.content[:4096]:
            raise _classify_status("call", response.status_code, response.headers.get("Retry-After"))
        return response

    async def aclose(self) -> None:
        # The httpx client is shared and closed by its owner.
        return None


def _parse_wsdl(url: str, content: bytes, http: httpx.AsyncClient) -> Document:
    with _documents_lock:
        document = _documents.get(url)
        if document is None:
            started = time.perf_counter()
            transport = _Transport(http, timeout=30.0, preloaded={url: content})
            document = Document(url, transport, settings=_zeep_settings())  # type: ignore[arg-type]
            _documents[url] = document
            log.info(
                "parsed MC WSDL (%d bytes) in %.0f ms", len(content), (time.perf_counter() - started) * 1000
            )
        return document


def _zeep_settings() -> zeep.Settings:
    """Strict XML: no recover mode (a malformed answer is an error, not a best guess), no DTD and no
    entities (XXE, billion laughs). Sequence order stays lenient: the service is .NET and not always
    faithful to its own schema's ordering. (The one import the WSDL makes, its fault schema, is
    served from memory by `_Transport.load`.)"""
    return zeep.Settings(strict=True, forbid_dtd=True, forbid_entities=True, xsd_ignore_sequence_order=True)


class SoapClient:
    def __init__(self, tokens: TokenManager, http: httpx.AsyncClient, *, timeout: float = 60.0) -> None:
        self._tokens = tokens
        self._http = http
        self._timeout = timeout
        self._client: zeep.AsyncClient | None = None
        self._service: Any = None
        self._start_lock = asyncio.Lock()

    async def start(self) -> None:
        """Load the WSDL (once per process) and bind the service at the tenant's SOAP endpoint."""
        if self._service is not None:
            return
        async with self._start_lock:
            if self._service is not None:
                return
            await self._tokens.token()
            soap_base = self._tokens.soap_base
            wsdl_url = f"{soap_base}etframework.wsdl"
            document = _documents.get(wsdl_url)
            if document is None:
                try:
                    response = await self._http.get(wsdl_url, timeout=self._timeout)
                except httpx.TransportError as exc:
                    raise TransientMCError(f"WSDL download failed: {type(exc).__name__}") from exc
                if response.status_code != 200:
                    raise TransientMCError(f"WSDL download answered HTTP {response.status_code}")
                # Parsing 240 KB of schema takes a while and is synchronous: keep it off the loop.
                document = await asyncio.to_thread(_parse_wsdl, wsdl_url, response.content, self._http)
            transport = _Transport(self._http, timeout=self._timeout)
            client = zeep.AsyncClient(wsdl=document, transport=transport, settings=_zeep_settings())
            binding = client.wsdl.bindings[_BINDING]
            self._client = client
            self._service = AsyncServiceProxy(client, binding, address=f"{soap_base}Service.asmx")

    async def import_summary(self, file_name: str) -> ImportSummary | None:
        """MC's progress for the import of an uploaded file, or None while MC has no row for it.

        A File Drop import is correlated with its file through the import definition's customer
        key, which is the file's base name.
        """
        key = posixpath.basename(file_name)
        await self.start()
        rows = await self._retrieve(
            "ImportResultsSummary",
            [
                "ImportDefinitionCustomerKey",
                "ImportStatus",
                "StartDate",
                "EndDate",
                "TotalRows",
                "NumberSuccessful",
                "NumberDuplicated",
                "NumberErrors",
                "TaskResultID",
            ],
            self._simple("ImportDefinitionCustomerKey", "equals", key),
        )
        if not rows:
            return None
        # Several runs may share a key; the newest task is the one that matters.
        row = max(rows, key=lambda r: _int(getattr(r, "TaskResultID", None)) or 0)
        return ImportSummary(
            customer_key=str(getattr(row, "ImportDefinitionCustomerKey", None) or key),
            status=str(getattr(row, "ImportStatus", None) or "Unknown"),
            total_rows=_int(getattr(row, "TotalRows", None)) or 0,
            succeeded=_int(getattr(row, "NumberSuccessful", None)) or 0,
            errors=_int(getattr(row, "NumberErrors", None)) or 0,
            duplicated=_int(getattr(row, "NumberDuplicated", None)) or 0,
            task_id=_int(getattr(row, "TaskResultID", None)),
        )

    async def upsert_subscribers(self, rows: Iterable[SubscriberRow]) -> list[UpsertResult]:
        """Create-or-update subscribers (SaveAction UpdateAdd), 50 per call as MC asks."""
        await self.start()
        assert self._client is not None
        subscriber_type = self._client.get_type(f"{{{_NS}}}Subscriber")
        options = {"SaveOptions": {"SaveOption": [{"PropertyName": "*", "SaveAction": "UpdateAdd"}]}}
        pending = list(rows)
        results: list[UpsertResult] = []
        for start in range(0, len(pending), _MAX_OBJECTS_PER_CREATE):
            chunk = pending[start : start + _MAX_OBJECTS_PER_CREATE]
            objects = [
                subscriber_type(
                    EmailAddress=row.email,
                    Attributes=[{"Name": k, "Value": v} for k, v in row.attributes.items()] or None,
                    SubscriberKey=row.subscriber_key,
                )
                for row in chunk
            ]
            response = await self._call("Create", Options=options, Objects=objects)
            by_ordinal = {
                _int(getattr(r, "OrdinalID", None)): r for r in (getattr(response, "Results", None) or [])
            }
            for ordinal, row in enumerate(chunk):
                result = by_ordinal.get(ordinal)
                if result is None:
                    results.append(
                        UpsertResult(row.subscriber_key, False, None, "no result for this subscriber")
                    )
                    continue
                ok = str(getattr(result, "StatusCode", "")) == "OK"
                results.append(
                    UpsertResult(
                        row.subscriber_key,
                        ok,
                        _int(getattr(result, "ErrorCode", None)),
                        str(getattr(result, "StatusMessage", None) or ""),
                    )
                )
        return results

    async def send_triggered(self, emails: Sequence[TriggeredEmail]) -> list[TriggeredResult]:
        """Up to 50 emails in one synchronous Create, one TriggeredSend object each (MC's batch for
        classic triggered sends, reference §2.6): each keeps its own Owner.FromName and attributes,
        and each object's result (matched by OrdinalID) speaks for that email alone. A fault or an
        HTTP failure raises for all of them."""
        if len(emails) > _MAX_OBJECTS_PER_CREATE:
            raise ValueError(f"at most {_MAX_OBJECTS_PER_CREATE} emails per Create, not {len(emails)}")
        await self.start()
        assert self._client is not None
        send_type = self._client.get_type(f"{{{_NS}}}TriggeredSend")
        objects = []
        for email in emails:
            owner = {"FromName": email.from_name, "FromAddress": email.from_address}
            subscriber = {
                "Owner": {k: v for k, v in owner.items() if v} or None,
                "EmailAddress": email.to,
                "Attributes": [{"Name": k, "Value": v} for k, v in email.attributes.items()] or None,
                "SubscriberKey": email.subscriber_key,
            }
            objects.append(
                send_type(
                    TriggeredSendDefinition={"CustomerKey": email.definition_key}, Subscribers=[subscriber]
                )
            )
        response = await self._call("Create", Options={}, Objects=objects)
        request_id = str(getattr(response, "RequestID", None) or "")
        by_ordinal = {
            _int(getattr(r, "OrdinalID", None)): r for r in (getattr(response, "Results", None) or [])
        }
        results = []
        for ordinal in range(len(emails)):
            result = by_ordinal.get(ordinal)
            if result is None:
                results.append(TriggeredResult(False, request_id, None, "no result for this email"))
                continue
            failures = getattr(result, "SubscriberFailures", None) or []
            subscriber_code = _int(getattr(failures[0], "ErrorCodeID", None)) if failures else None
            message = str(getattr(result, "StatusMessage", None) or "")
            if failures:
                message = f"{message} {getattr(failures[0], 'ErrorDescription', '') or ''}".strip()
            results.append(
                TriggeredResult(
                    str(getattr(result, "StatusCode", "")) == "OK",
                    request_id,
                    _int(getattr(result, "ErrorCode", None)),
                    message,
                    subscriber_code,
                )
            )
        return results

    async def send_log(self, data_extension: str, notification_id: str) -> list[SendLogRow]:
        """The rows MC logged for one notification in a send logging data extension (e.g. `SendLog`
        for email, `SMSSendLog` for SMS), matched on its custom `NotificationId` field.

        Empty until MC has actually sent (a row trails the API's acceptance by MC's queue time).
        An unknown data extension or field raises PermanentMCError.
        """
        await self.start()
        rows = await self._retrieve(
            f"DataExtensionObject[{data_extension}]",
            ["NotificationId", "ErrorCode", "SubscriberKey"],
            self._simple("NotificationId", "equals", notification_id),
        )
        found: list[SendLogRow] = []
        for row in rows:
            values = _data_extension_values(row)
            error_code = (values.get("errorcode") or "").strip()
            found.append(
                SendLogRow(
                    notification_id=values.get("notificationid") or notification_id,
                    error_code=None if error_code in ("", "0") else error_code,
                    subscriber_key=values.get("subscriberkey") or None,
                )
            )
        return found

    async def definition_object_id(self, customer_key: str) -> str | None:
        """The ObjectID of the triggered send definition with this customer key (None: MC has none):
        tracking objects name their definition by ObjectID only."""
        rows = await self._retrieve(
            "TriggeredSendDefinition",
            ["ObjectID", "CustomerKey"],
            self._simple("CustomerKey", "equals", customer_key),
        )
        found = [str(getattr(row, "ObjectID", None) or "") for row in rows]
        return next((object_id for object_id in found if object_id), None)

    async def tracking_pages(
        self,
        kind: str,
        definition_object_id: str,
        since: datetime,
        until: datetime,
        *,
        batch_size: int | None = None,
    ) -> AsyncIterator[list[TrackingEvent]]:
        """The `kind` tracking events (SentEvent, NotSentEvent, BounceEvent, UnsubEvent) of one
        definition whose EventDate is in [since, until] (MC's `between`: both ends included), one
        list per page MC answers (2,500 rows; `batch_size`: ask for smaller pages)."""
        await self.start()
        assert self._client is not None
        simple_type = self._client.get_type(f"{{{_NS}}}SimpleFilterPart")
        filter_ = self._client.get_type(f"{{{_NS}}}ComplexFilterPart")(
            LeftOperand=self._simple("TriggeredSendDefinitionObjectID", "equals", definition_object_id),
            LogicalOperator="AND",
            RightOperand=simple_type(
                Property="EventDate", SimpleOperator="between", DateValue=[since, until]
            ),
        )
        async for rows in self._pages(kind, KIND_FIELDS[kind], filter_, batch_size=batch_size):
            yield [event for row in rows if (event := TrackingEvent.from_row(kind, row)) is not None]

    async def send_log_entries(
        self, data_extension: str, job_id: int, batch_ids: Iterable[int]
    ) -> list[SendLogEntry]:
        """The send log rows of these batches of one job (JobID = a tracking event's SendID): the
        join from MC's ids to the NotificationId each send carried."""
        await self.start()
        assert self._client is not None
        batches = sorted(set(batch_ids))
        if not batches:
            return []
        filter_ = self._client.get_type(f"{{{_NS}}}ComplexFilterPart")(
            LeftOperand=self._simple("JobID", "equals", str(job_id)),
            LogicalOperator="AND",
            RightOperand=self._client.get_type(f"{{{_NS}}}SimpleFilterPart")(
                Property="BatchID", SimpleOperator="IN", Value=[str(b) for b in batches]
            ),
        )
        rows = await self._retrieve(f"DataExtensionObject[{data_extension}]", SEND_LOG_JOIN_FIELDS, filter_)
        return [SendLogEntry.from_values(_data_extension_values(row)) for row in rows]

    async def _pages(
        self, object_type: str, properties: Sequence[str], filter_: Any, *, batch_size: int | None = None
    ) -> AsyncIterator[list[Any]]:
        """A Retrieve's results page by page (MoreDataAvailable, then ContinueRequest), for a caller
        that settles each page before asking for the next."""
        await self.start()
        assert self._client is not None
        request: dict[str, Any] = {
            "ObjectType": object_type,
            "Properties": list(properties),
            "Filter": filter_,
        }
        if batch_size:
            request["Options"] = self._client.get_type(f"{{{_NS}}}RetrieveOptions")(BatchSize=batch_size)
        while True:
            response = await self._call("Retrieve", RetrieveRequest=request)
            status = str(getattr(response, "OverallStatus", None) or "")
            if status.startswith("Error"):
                raise PermanentMCError(f"Retrieve {object_type}: {status}", code="Error")
            yield list(getattr(response, "Results", None) or [])
            if status != "MoreDataAvailable":
                return
            request = {"ObjectType": object_type, "ContinueRequest": getattr(response, "RequestID", None)}

    def _simple(
        self, prop: str, operator: str, value: str | None = None, *, date: datetime | None = None
    ) -> Any:
        assert self._client is not None
        simple_type = self._client.get_type(f"{{{_NS}}}SimpleFilterPart")
        if date is not None:
            return simple_type(Property=prop, SimpleOperator=operator, DateValue=[date])
        return simple_type(Property=prop, SimpleOperator=operator, Value=[value])

    async def _retrieve(self, object_type: str, properties: Sequence[str], filter_: Any) -> list[Any]:
        await self.start()
        results: list[Any] = []
        request: dict[str, Any] = {
            "ObjectType": object_type,
            "Properties": list(properties),
            "Filter": filter_,
        }
        for _ in range(_MAX_PAGES):
            response = await self._call("Retrieve", RetrieveRequest=request)
            status = str(getattr(response, "OverallStatus", None) or "")
            if status.startswith("Error"):
                raise PermanentMCError(f"Retrieve {object_type}: {status}", code="Error")
            results.extend(getattr(response, "Results", None) or [])
            if status != "MoreDataAvailable":
                return results
            request = {"ObjectType": object_type, "ContinueRequest": getattr(response, "RequestID", None)}
        log.warning("Retrieve %s stopped after %d pages", object_type, _MAX_PAGES)
        return results

    async def _call(self, operation: str, **kwargs: Any) -> Any:
        await self.start()
        for attempt in (1, 2):
            token = await self._tokens.token()
            header = etree.Element("{http://exacttarget.com}fueloauth")
            header.text = token
            started = time.perf_counter()
            try:
                return await getattr(self._service, operation)(**kwargs, _soapheaders=[header])
            except Fault as fault:
                message = str(fault.message or "")
                if message.strip() == "Token Expired" and attempt == 1:
                    self._tokens.invalidate(token)
                    continue
                raise _classify_fault(operation, message, str(fault.code or "")) from fault
            except ZeepTransportError as exc:
                # Non-XML answers: an HTTP error page from a proxy or the service itself.
                raise _classify_status(operation, exc.status_code) from exc
            except httpx.TimeoutException as exc:
                raise TransientMCError(f"SOAP {operation}: timed out ({type(exc).__name__})") from exc
            except httpx.TransportError as exc:
                raise TransientMCError(f"SOAP {operation}: {type(exc).__name__}") from exc
            except (ZeepError, etree.XMLSyntaxError) as exc:
                raise TransientMCError(f"SOAP {operation}: unreadable answer ({type(exc).__name__})") from exc
            finally:
                log.debug("SOAP %s took %.0f ms", operation, (time.perf_counter() - started) * 1000)
        raise TransientMCError(f"SOAP {operation}: token still expired after a refresh")


def _classify_fault(operation: str, message: str, code: str) -> Exception:
    lowered = message.lower()
    # "Rate Limited" arrives as a soap:Server fault too; any server-side fault is worth a retry,
    # while a soap:Client fault means the request itself is wrong.
    if "rate limit" in lowered:  # MC's throttle (fault code 17, reference §6): a pace, not a fault
        return ThrottledMCError(f"SOAP {operation}: {message}")
    if "token expired" in lowered or code.lower().endswith("server"):
        return TransientMCError(f"SOAP {operation}: {message}")
    return PermanentMCError(f"SOAP {operation}: {message}", code=code or "Fault")


def _classify_status(operation: str, status: int | None, retry_after: str | None = None) -> Exception:
    if status == 429:
        return ThrottledMCError(f"SOAP {operation}: HTTP 429", retry_after=parse_retry_after(retry_after))
    if status is None or status >= 500 or status == 408:
        return TransientMCError(
            f"SOAP {operation}: HTTP {status}", retry_after=parse_retry_after(retry_after)
        )
    return PermanentMCError(f"SOAP {operation}: HTTP {status}", code=status)


def _data_extension_values(row: Any) -> dict[str, str | None]:
    """A DataExtensionObject's Properties/Property name-value pairs, by lower-cased field name
    (MC's field names are case-insensitive)."""
    properties = getattr(row, "Properties", None)
    pairs = getattr(properties, "Property", None) or []
    values: dict[str, str | None] = {}
    for pair in pairs:
        name = getattr(pair, "Name", None)
        if name:
            value = getattr(pair, "Value", None)
            values[str(name).lower()] = None if value is None else str(value)
    return values


def _int(value: Any) -> int | None:
    if value is None or value == "":
        return None
    try:
        return int(value)
    except (TypeError, ValueError):
        return None
