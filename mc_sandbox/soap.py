"""SOAP 1.1 ``Service.asmx`` (partner API "etframework"), routed on the body's root element.

Responses copy the real envelope (WS-Addressing + a wsu:Timestamp) and write elements in the WSDL's
``xs:sequence`` order, since zeep (and .NET) parse by sequence.

Retrieve answers at most 2,500 rows; with more, ``MoreDataAvailable`` and a RequestID whose
``ContinueRequest`` returns the next page. ``DataExtensionObject[<name or key>]`` reads the send logs
(sendlog.py) as Properties/Property name-value pairs; ``DataExtension`` lists them (Name, CustomerKey).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from xml.sax.saxutils import escape

from aiohttp import web
from lxml import etree

from . import tracking
from .context import Sandbox, sandbox_of
from .http import token_valid
from .sendlog import DATA_EXTENSIONS, DataExtension, data_extension, value_text
from .sendlog import rows as send_log_rows
from .sends import NO_VALID_SUBSCRIBERS, Refusal, accept_email, check_recipient
from .state import CST, ImportDefinition, ImportJob, Subscriber, cst, mc_date_string, valid_email
from .templates import EMAIL_DEFINITIONS, email_definition

NS = "http://exacttarget.com/wsdl/partnerAPI"
SOAP_ENV = "http://schemas.xmlsoap.org/soap/envelope/"
SOAP12_ENV = "http://www.w3.org/2003/05/soap-envelope"
XSI = "http://www.w3.org/2001/XMLSchema-instance"
FAULT_NS = "urn:fault.partner.exacttarget.com"
MAX_RETRIEVE = 2500
MAX_CURSORS = 100  # Retrieves with pages left to continue; the oldest is forgotten first
DATA_EXTENSION_OBJECT = "DataExtensionObject"

_PARSER = etree.XMLParser(resolve_entities=False, no_network=True, huge_tree=False, remove_comments=True)


# ---------------------------------------------------------------------------------------------- XML in


def lname(el: etree._Element) -> str:
    return etree.QName(el).localname if isinstance(el.tag, str) else ""


def kids(el: etree._Element | None, name: str) -> list[etree._Element]:
    if el is None:
        return []
    return [c for c in el if isinstance(c.tag, str) and lname(c) == name]


def kid(el: etree._Element | None, name: str) -> etree._Element | None:
    found = kids(el, name)
    return found[0] if found else None


def text(el: etree._Element | None, name: str) -> str | None:
    c = kid(el, name)
    if c is None or c.get(f"{{{XSI}}}nil") == "true":
        return None
    return (c.text or "").strip()


def xsi_type(el: etree._Element) -> str:
    value = el.get(f"{{{XSI}}}type") or ""
    return value.rsplit(":", 1)[-1]


def attributes_of(el: etree._Element) -> dict[str, str]:
    out: dict[str, str] = {}
    for a in kids(el, "Attributes"):
        name = text(a, "Name")
        if name:
            out[name] = text(a, "Value") or ""
    return out


def as_bool(value: str | None, default: bool) -> bool:
    if value is None or value == "":
        return default
    return value.strip().lower() in ("true", "1")


# --------------------------------------------------------------------------------------------- XML out


def x(name: str, value: Any, xsi_t: str | None = None) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        value = "true" if value else "false"
    elif isinstance(value, datetime):
        value = cst(value)  # MC answers in its server time: CST, no zone suffix (state.cst)
    t = f' xsi:type="{xsi_t}"' if xsi_t else ""
    return f"<{name}{t}>{escape(str(value))}</{name}>"


def nil(name: str) -> str:
    return f'<{name} xsi:nil="true"/>'


def envelope(action: str, body: str) -> str:
    now = datetime.now(UTC).replace(microsecond=0)
    created = now.isoformat().replace("+00:00", "Z")
    expires = (now + timedelta(minutes=5)).isoformat().replace("+00:00", "Z")
    return (
        '<?xml version="1.0" encoding="utf-8"?>'
        f'<soap:Envelope xmlns:soap="{SOAP_ENV}" xmlns:xsi="{XSI}" '
        'xmlns:xsd="http://www.w3.org/2001/XMLSchema" '
        'xmlns:wsa="http://schemas.xmlsoap.org/ws/2004/08/addressing" '
        'xmlns:wsse="http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-secext-1.0.xsd" '
        'xmlns:wsu="http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-utility-1.0.xsd">'
        "<soap:Header>"
        f"<wsa:Action>{escape(action)}</wsa:Action>"
        f"<wsa:MessageID>urn:uuid:{uuid.uuid4()}</wsa:MessageID>"
        f"<wsa:RelatesTo>urn:uuid:{uuid.uuid4()}</wsa:RelatesTo>"
        "<wsa:To>http://schemas.xmlsoap.org/ws/2004/08/addressing/role/anonymous</wsa:To>"
        f'<wsse:Security><wsu:Timestamp wsu:Id="Timestamp-{uuid.uuid4()}">'
        f"<wsu:Created>{created}</wsu:Created><wsu:Expires>{expires}</wsu:Expires>"
        "</wsu:Timestamp></wsse:Security>"
        "</soap:Header>"
        f"<soap:Body>{body}</soap:Body></soap:Envelope>"
    )


def xml_response(payload: str, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(
        body=payload.encode("utf-8"), status=status, content_type="text/xml", charset="utf-8", headers=headers
    )


def fault_response(
    faultstring: str,
    faultcode: str = "soap:Client",
    code: int | None = None,
    status: int = 500,
    actor: str = "",
    headers: dict[str, str] | None = None,
) -> web.Response:
    detail = ""
    if code is not None:
        detail = (
            f'<detail><apifault xmlns="{FAULT_NS}"><Code>{code}</Code>'
            f"<Message>{escape(faultstring)}</Message></apifault></detail>"
        )
    body = (
        f"<soap:Fault><faultcode>{faultcode}</faultcode><faultstring>{escape(faultstring)}</faultstring>"
        f"<faultactor>{escape(actor)}</faultactor>{detail}</soap:Fault>"
    )
    return xml_response(
        envelope("http://schemas.xmlsoap.org/ws/2004/08/addressing/fault", body), status, headers
    )


def overall(statuses: list[str]) -> str:
    if not statuses or all(s == "OK" for s in statuses):
        return "OK"
    if all(s == "Error" for s in statuses):
        return "Error"
    return "HasErrors"


# ------------------------------------------------------------------------------------------- handler


class ClientFault(Exception):
    """A request an operation answers with a ``soap:Client`` fault rather than a result status."""


@dataclass
class Ctx:
    sb: Sandbox
    request_id: str


async def soap_handler(request: web.Request) -> web.Response:
    sb = sandbox_of(request)
    actor = f"{sb.config.base_url}Service.asmx"
    raw = await request.read()
    try:
        doc = etree.fromstring(raw, _PARSER)
    except etree.XMLSyntaxError:
        return fault_response("Bad Request: the request is not well-formed XML.", actor=actor)
    if lname(doc) != "Envelope" or etree.QName(doc).namespace not in (SOAP_ENV, SOAP12_ENV):
        return fault_response("Bad Request: a SOAP Envelope is required.", actor=actor)
    header = kid(doc, "Header")
    token = None
    if header is not None:
        for el in header.iter():
            # fueloauth with no namespace (the docs) or in http://exacttarget.com (the SDKs).
            if (
                isinstance(el.tag, str)
                and lname(el) == "fueloauth"
                and etree.QName(el).namespace in (None, "http://exacttarget.com")
            ):
                token = (el.text or "").strip()
    if not token_valid(sb.state, token):
        return fault_response("Token Expired", faultcode="soap:Client", actor=actor)
    body = kid(doc, "Body")
    op = next((c for c in (body if body is not None else []) if isinstance(c.tag, str)), None)
    if op is None:
        return fault_response("Bad Request: empty SOAP Body.", actor=actor)
    ctx = Ctx(sb, str(uuid.uuid4()))
    handler = OPERATIONS.get(lname(op))
    if handler is None:
        return fault_response(
            f"The operation {lname(op)} is not supported by this sandbox.",
            faultcode="soap:Client",
            actor=actor,
        )
    try:
        action, payload = handler(ctx, op)
    except ClientFault as exc:
        return fault_response(str(exc), faultcode="soap:Client", actor=actor)
    return xml_response(envelope(action, payload))


# --------------------------------------------------------------------------------------------- Create


def _save_action(op: etree._Element) -> str:
    for so in kids(kid(kid(op, "Options"), "SaveOptions"), "SaveOption"):
        if text(so, "PropertyName") in ("*", None, "") and text(so, "SaveAction"):
            return text(so, "SaveAction") or "Default"
    return "Default"


def _result(
    status: str,
    message: str,
    ordinal: int,
    error_code: int | None = None,
    rest: str = "",
    xsi_t: str | None = None,
) -> str:
    t = f' xsi:type="{xsi_t}"' if xsi_t else ""
    return (
        f"<Results{t}>{x('StatusCode', status)}{x('StatusMessage', message)}{x('OrdinalID', ordinal)}"
        f"{x('ErrorCode', error_code)}{rest}</Results>"
    )


def _subscriber_object(sub: Subscriber) -> str:
    return (
        f'<Object xsi:type="Subscriber">{nil("PartnerKey")}{x("ID", sub.id)}{nil("ObjectID")}'
        f"{x('EmailAddress', sub.email)}{x('SubscriberKey', sub.subscriber_key)}</Object>"
    )


def _mobile_of(obj: etree._Element, attrs: dict[str, str]) -> str | None:
    sms = kid(obj, "PrimarySMSAddress")
    if sms is not None and text(sms, "Address"):
        return text(sms, "Address")
    for name in list(attrs):
        if name.lower() in ("mobilenumber", "mobile number"):
            return attrs.pop(name) or None
    return None


def _upsert_subscriber(
    ctx: Ctx, obj: etree._Element, ordinal: int, save_action: str, update: bool
) -> tuple[str, str]:
    state = ctx.sb.state
    key = text(obj, "SubscriberKey")
    email = text(obj, "EmailAddress")
    status = text(obj, "Status")
    attrs = attributes_of(obj)
    mobile = _mobile_of(obj, attrs)
    if status in ("Bounced", "Deleted") and not update:
        return "Error", _result(
            "Error", "A Create cannot set Status to Bounced or Deleted.", ordinal, 12016, x("NewID", 0)
        )
    if status and status not in ("Active", "Bounced", "Held", "Unsubscribed", "Deleted"):
        return "Error", _result(
            "Error", f"Invalid subscriber Status {status}.", ordinal, 12004, x("NewID", 0)
        )
    if not key:
        return "Error", _result("Error", "SubscriberKey is required.", ordinal, 12015, x("NewID", 0))
    existing = state.subscribers.get(key)
    upsert = save_action == "UpdateAdd"
    if (email is not None or existing is None) and not valid_email(email):
        return "Error", _result("Error", "InvalidEmailAddress", ordinal, 12000, x("NewID", 0))
    if not update and existing is not None and not upsert:
        return "Error", _result(
            "Error", "SubscriberAlreadyExists: The subscriber already exists.", ordinal, 12014, x("NewID", 0)
        )
    if update and existing is None and not upsert:
        return "Error", _result("Error", "Subscriber Key Not Found.", ordinal, 12015, x("NewID", 0))
    if not update and save_action == "UpdateOnly" and existing is None:
        return "Error", _result("Error", "Subscriber Key Not Found.", ordinal, 12015, x("NewID", 0))
    sub, created = state.upsert_subscriber(
        key, email or (existing.email if existing else ""), mobile, attrs, status
    )
    message = "Created Subscriber." if created else "Updated Subscriber."
    # UpdateResult has no NewID: its sequence is Object, UpdateResults, ParentPropertyName.
    new_id = "" if update else x("NewID", sub.id if created else 0)
    return "OK", _result("OK", message, ordinal, None, new_id + _subscriber_object(sub))


def _subscriber_failure(obj_email: str | None, obj_key: str | None, refusal: Refusal, ordinal: int) -> str:
    return (
        "<SubscriberFailures><Subscriber>"
        f"{x('EmailAddress', obj_email or '')}{x('SubscriberKey', obj_key or '')}</Subscriber>"
        f"{x('ErrorCode', 'TriggeredSendSubscriberProcessingError')}"
        f"{x('ErrorDescription', refusal.description)}"
        f"{x('Ordinal', ordinal)}{x('ErrorCodeID', refusal.code_id)}</SubscriberFailures>"
    )


def _triggered_send(ctx: Ctx, obj: etree._Element, ordinal: int) -> tuple[str, str]:
    tsd_el = kid(obj, "TriggeredSendDefinition")
    ref = text(tsd_el, "CustomerKey") or text(tsd_el, "ObjectID") or ""
    t = "TriggeredSendCreateResult"
    definition = email_definition(ref) if ref else None
    if definition is None or definition.status not in ("Active", "Inactive"):
        return "Error", _result(
            "Error",
            "TriggeredSendUnableToCreateRequest: the TriggeredSendDefinition was not found or is not Active.",
            ordinal,
            18002,
            x("NewID", 0),
            t,
        )
    subs = kids(obj, "Subscribers")
    if not subs:
        return "Error", _result(
            "Error",
            "The Triggered Send Object must have subscribers associated with it",
            ordinal,
            180007,
            x("NewID", 0),
            t,
        )
    shared = attributes_of(obj)
    failures: list[str] = []
    accepted = 0
    batch: int | None = None  # one batch per request, allocated with its first accepted subscriber
    for i, s in enumerate(subs):
        key, email = text(s, "SubscriberKey"), text(s, "EmailAddress")
        refusal = check_recipient(ctx.sb, key, email)
        if refusal is not None:
            failures.append(_subscriber_failure(email, key, refusal, i))
            continue
        attrs = dict(shared)
        attrs.update(attributes_of(s))
        from_name = text(kid(s, "Owner"), "FromName")
        if batch is None:
            batch = ctx.sb.state.next_batch(definition.key)
        accept_email(ctx.sb, definition, key or "", email or "", from_name, attrs, "soap", batch_id=batch)
        accepted += 1
    for _ in failures:
        ctx.sb.state.bump("emails_refused")
    if accepted == 0:
        return "Error", _result(
            "Error", NO_VALID_SUBSCRIBERS, ordinal, 180008, x("NewID", 0) + "".join(failures), t
        )
    return "OK", _result("OK", "Created TriggeredSend", ordinal, None, x("NewID", 0) + "".join(failures), t)


def _import_definition(ctx: Ctx, obj: etree._Element, ordinal: int, save_action: str) -> tuple[str, str]:
    key = text(obj, "CustomerKey")
    if not key:
        return "Error", _result("Error", "Customer Key Not Specified", ordinal, 43000, x("NewID", 0))
    defs = ctx.sb.state.import_definitions
    if key in defs and save_action != "UpdateAdd":
        return "Error", _result(
            "Error",
            f"An ImportDefinition with CustomerKey {key} already exists.",
            ordinal,
            43030,
            x("NewID", 0),
        )
    spec = text(obj, "FileSpec")
    if not spec:
        return "Error", _result(
            "Error", "Validation Error: FileSpec is required.", ordinal, 43060, x("NewID", 0)
        )
    d = ImportDefinition(
        customer_key=key,
        name=text(obj, "Name") or key,
        file_spec=spec,
        allow_errors=as_bool(text(obj, "AllowErrors"), False),
        update_type=text(obj, "UpdateType") or "AddAndUpdate",
    )
    defs[key] = d
    return "OK", _result(
        "OK",
        "ImportDefinition created.",
        ordinal,
        None,
        x("NewID", 0)
        + x("NewObjectID", d.object_id)
        + f'<Object xsi:type="ImportDefinition">{x("ObjectID", d.object_id)}{x("CustomerKey", key)}</Object>',
    )


def _unsupported_result(kind: str, obj_type: str, ordinal: int) -> tuple[str, str]:
    return "Error", _result(
        "Error",
        f"{kind} of {obj_type or 'this object'} is not supported by this sandbox.",
        ordinal,
        15,
        x("NewID", 0),
    )


def op_create(ctx: Ctx, op: etree._Element) -> tuple[str, str]:
    save_action = _save_action(op)
    results: list[str] = []
    statuses: list[str] = []
    for i, obj in enumerate(kids(op, "Objects")):
        kind = xsi_type(obj)
        if kind == "Subscriber":
            st, xml = _upsert_subscriber(ctx, obj, i, save_action, update=False)
        elif kind == "TriggeredSend":
            st, xml = _triggered_send(ctx, obj, i)
        elif kind == "ImportDefinition":
            st, xml = _import_definition(ctx, obj, i, save_action)
        else:
            st, xml = _unsupported_result("Create", kind, i)
        statuses.append(st)
        results.append(xml)
    body = (
        f'<CreateResponse xmlns="{NS}">{"".join(results)}{x("RequestID", ctx.request_id)}'
        f'{x("OverallStatus", overall(statuses))}</CreateResponse>'
    )
    return "CreateResponse", body


def op_update(ctx: Ctx, op: etree._Element) -> tuple[str, str]:
    save_action = _save_action(op)
    results: list[str] = []
    statuses: list[str] = []
    for i, obj in enumerate(kids(op, "Objects")):
        kind = xsi_type(obj)
        if kind == "Subscriber":
            st, xml = _upsert_subscriber(ctx, obj, i, save_action, update=True)
        else:
            st, xml = _unsupported_result("Update", kind, i)
        statuses.append(st)
        results.append(xml.replace("<NewID>0</NewID>", ""))
    body = (
        f'<UpdateResponse xmlns="{NS}">{"".join(results)}{x("RequestID", ctx.request_id)}'
        f'{x("OverallStatus", overall(statuses))}</UpdateResponse>'
    )
    return "UpdateResponse", body


def op_delete(ctx: Ctx, op: etree._Element) -> tuple[str, str]:
    results: list[str] = []
    statuses: list[str] = []
    for i, obj in enumerate(kids(op, "Objects")):
        kind = xsi_type(obj)
        key = text(obj, "SubscriberKey")
        if kind == "Subscriber" and key and key in ctx.sb.state.subscribers:
            del ctx.sb.state.subscribers[key]
            statuses.append("OK")
            results.append(_result("OK", "Subscriber deleted", i))
        elif kind == "Subscriber":
            statuses.append("Error")
            results.append(_result("Error", "Subscriber Key Not Found.", i, 12015))
        else:
            st, xml = _unsupported_result("Delete", kind, i)
            statuses.append(st)
            results.append(xml.replace("<NewID>0</NewID>", ""))
    body = (
        f'<DeleteResponse xmlns="{NS}">{"".join(results)}{x("RequestID", ctx.request_id)}'
        f'{x("OverallStatus", overall(statuses))}</DeleteResponse>'
    )
    return "DeleteResponse", body


# -------------------------------------------------------------------------------------------- Perform


def op_perform(ctx: Ctx, op: etree._Element) -> tuple[str, str]:
    action = (text(op, "Action") or "").lower()
    results: list[str] = []
    statuses: list[str] = []
    for i, d in enumerate(kids(kid(op, "Definitions"), "Definition")):
        kind = xsi_type(d)
        key = text(d, "CustomerKey") or ""
        obj_type = escape(kind or "APIObject")
        obj = f'<Object xsi:type="{obj_type}">{nil("ObjectID")}{x("CustomerKey", key)}</Object>'
        job: ImportJob | None = None
        if kind != "ImportDefinition" or action != "start":
            status, msg, code = (
                "Error",
                f"Perform {action or '(none)'} on {kind or 'object'} is not supported.",
                15,
            )
        else:
            definition = ctx.sb.state.import_definitions.get(key)
            if definition is None:
                status, msg, code = "Error", "ImportDefinition Not Found", 43010
            else:
                job = ctx.sb.imports.perform_start(definition)
                status, msg, code = "OK", f"ImportDefinition performed AsyncID:{job.task_id}", 0
        task = (
            f"<Task>{x('StatusCode', status)}{x('StatusMessage', 'OK' if job else msg)}"
            f"{x('ID', job.task_id if job else None)}"
            f"{x('InteractionObjectID', job.object_id if job else None)}</Task>"
        )
        statuses.append(status)
        results.append(
            f"<Result>{x('StatusCode', status)}{x('StatusMessage', msg)}{x('OrdinalID', i)}"
            f"{x('ErrorCode', code if code else None)}{obj}{task}</Result>"
        )
    ov = overall(statuses)
    body = (
        f'<PerformResponseMsg xmlns="{NS}"><Results>{"".join(results)}</Results>{x("OverallStatus", ov)}'
        f"<OverallStatusMessage/>{x('RequestID', ctx.request_id)}</PerformResponseMsg>"
    )
    return "PerformResponse", body


# ------------------------------------------------------------------------------------------- Retrieve

Record = dict[str, Any]


@dataclass(frozen=True)
class RetrieveType:
    fields: tuple[str, ...]  # retrievable properties, in the WSDL sequence order of the output
    rows: Callable[[Sandbox], list[Record]]
    render: Callable[[Record, list[str]], str] | None = None
    aliases: tuple[tuple[str, str], ...] = ()
    xsi_type: str | None = None  # of the Results, when it is not the ObjectType
    fold_case: bool = False  # data extension field names match whatever their case

    def canon(self, prop: str) -> str:
        prop = dict(self.aliases).get(prop, prop)
        if self.fold_case:
            return next((f for f in self.fields if f.lower() == prop.lower()), prop)
        return prop


@dataclass
class Cursor:
    """What a Retrieve answered with MoreDataAvailable has left for its ContinueRequests."""

    rtype: RetrieveType
    xsi_type: str
    props: list[str]
    rows: list[Record]
    offset: int = 0
    page_size: int = MAX_RETRIEVE


def _subscriber_rows(sb: Sandbox) -> list[Record]:
    return [
        {
            "ID": s.id,
            "CreatedDate": s.created_at,
            "ModifiedDate": s.updated_at,
            "EmailAddress": s.email,
            "SubscriberKey": s.subscriber_key,
            "Status": s.status,
            "UnsubscribedDate": None,
            "EmailTypePreference": "HTML",
        }
        for s in sb.state.subscribers.values()
    ]


def _import_rows(sb: Sandbox) -> list[Record]:
    rows = []
    for j in sb.state.imports.values():
        if j.status == "New":
            continue  # MC returns no row until the import has started processing
        rows.append(
            {
                "ObjectID": j.object_id,
                "ImportDefinitionCustomerKey": j.definition_key,
                "StartDate": mc_date_string(j.started_at),
                "EndDate": mc_date_string(j.ended_at),
                "DestinationID": "1",
                "NumberSuccessful": j.succeeded,
                "NumberDuplicated": 0,
                "NumberRestricted": 0,
                "NumberErrors": len(j.errors),
                "TotalRows": j.total_rows,
                "ImportType": "Lists",
                "ImportStatus": j.status,
                "TaskResultID": j.task_id,
            }
        )
    return rows


def _event_rows(kind: str) -> Callable[[Sandbox], list[Record]]:
    return lambda sb: tracking.rows(sb.state, kind)


def _tsd_rows(sb: Sandbox) -> list[Record]:
    return [
        {
            "ObjectID": d.guid,
            "CustomerKey": d.key,
            "Name": d.name,
            "Description": None,
            "TriggeredSendStatus": d.status,
            "EmailSubject": d.subject,
        }
        for d in EMAIL_DEFINITIONS.values()
    ]


def _data_extension_rows(sb: Sandbox) -> list[Record]:
    """The account's data extensions (the send logs, sendlog.py) as Retrieve DataExtension rows.

    Clients look a data extension's Name up by its CustomerKey, or the reverse, before they read its
    rows: FuelSDK's ``ET_DataExtension_Row`` does (reference §2.8). Not sendable: a send log is not a
    sendable data extension."""
    return [
        {
            "ObjectID": str(uuid.uuid5(_DE_NS, de.name)),
            "CustomerKey": de.customer_key,
            "Name": de.name,
            "Description": None,
            "IsSendable": False,
            "IsTestable": False,
        }
        for de in DATA_EXTENSIONS.values()
    ]


_DE_NS = uuid.UUID("0d3c9a8e-5b1f-4f7e-8a61-2c4d8e9b7a10")  # stable ObjectIDs across restarts


def _import_definition_rows(sb: Sandbox) -> list[Record]:
    return [
        {
            "ObjectID": d.object_id,
            "CustomerKey": d.customer_key,
            "Name": d.name,
            "AllowErrors": d.allow_errors,
            "FileSpec": d.file_spec,
            "UpdateType": d.update_type,
        }
        for d in sb.state.import_definitions.values()
    ]


def _render_unsub(rec: Record, props: list[str]) -> str:
    # UnsubEvent's List is a List object: its ID, in APIObject's place in the sequence.
    out = nil("PartnerKey")
    for f in tracking.UNSUB_FIELDS:
        if f not in props:
            continue
        if f == "List":
            out += f"<List>{x('ID', rec.get(f))}</List>"
        else:
            out += x(f, rec.get(f))
    return out


def _render_smsmt(rec: Record, props: list[str]) -> str:
    # SMSMTEvent sequence: SMSTriggeredSend, Subscriber, MOCode, EventDate, Carrier.
    out = ""
    if "Subscriber.SubscriberKey" in props:
        out += f"<Subscriber>{x('SubscriberKey', rec['Subscriber.SubscriberKey'])}</Subscriber>"
    for p in ("MOCode", "EventDate", "Carrier"):
        if p in props:
            out += x(p, rec.get(p))
    return out


RETRIEVE_TYPES: dict[str, RetrieveType] = {
    "Subscriber": RetrieveType(
        (
            "CreatedDate",
            "ModifiedDate",
            "ID",
            "EmailAddress",
            "SubscriberKey",
            "UnsubscribedDate",
            "Status",
            "EmailTypePreference",
        ),
        _subscriber_rows,
    ),
    "ImportResultsSummary": RetrieveType(
        (
            "ObjectID",
            "ImportDefinitionCustomerKey",
            "StartDate",
            "EndDate",
            "DestinationID",
            "NumberSuccessful",
            "NumberDuplicated",
            "NumberRestricted",
            "NumberErrors",
            "TotalRows",
            "ImportType",
            "ImportStatus",
            "TaskResultID",
        ),
        _import_rows,
    ),
    **{
        kind: RetrieveType(fields, _event_rows(kind), _render_unsub if kind == "UnsubEvent" else None)
        for kind, fields in tracking.EMAIL_KINDS.items()
    },
    "SMSMTEvent": RetrieveType(
        ("Subscriber.SubscriberKey", "MOCode", "EventDate", "Carrier"),
        _event_rows("SMSMTEvent"),
        _render_smsmt,
        (("SubscriberKey", "Subscriber.SubscriberKey"), ("Subscriber", "Subscriber.SubscriberKey")),
    ),
    "TriggeredSendDefinition": RetrieveType(
        ("ObjectID", "CustomerKey", "Name", "Description", "TriggeredSendStatus", "EmailSubject"),
        _tsd_rows,
    ),
    "ImportDefinition": RetrieveType(
        ("ObjectID", "CustomerKey", "Name", "AllowErrors", "FileSpec", "UpdateType"),
        _import_definition_rows,
    ),
    # APIObject's ObjectID and CustomerKey, then DataExtension's own sequence (WSDL).
    "DataExtension": RetrieveType(
        ("ObjectID", "CustomerKey", "Name", "Description", "IsSendable", "IsTestable"),
        _data_extension_rows,
    ),
}


def _render_data_extension_row(rec: Record, props: list[str]) -> str:
    # APIObject's PartnerKey and ObjectID, then ObjectExtension's Properties (WSDL sequence order).
    pairs = "".join(f"<Property>{x('Name', p)}{x('Value', value_text(rec.get(p)))}</Property>" for p in props)
    return f"{nil('PartnerKey')}{nil('ObjectID')}<Properties>{pairs}</Properties>"


def _data_extension_type(de: DataExtension) -> RetrieveType:
    return RetrieveType(
        de.fields,
        lambda sb: send_log_rows(sb.state, de),
        _render_data_extension_row,
        xsi_type=DATA_EXTENSION_OBJECT,
        fold_case=True,
    )


def _retrieve_type(object_type: str) -> RetrieveType | str:
    """The type to retrieve, or the Error status for an ObjectType this account has no such thing of."""
    prefix = f"{DATA_EXTENSION_OBJECT}["
    if object_type.startswith(prefix) and object_type.endswith("]"):
        ref = object_type[len(prefix) : -1]
        de = data_extension(ref)
        if de is None:
            return f"Error: Unable to find a data extension with the name or customer key '{ref}'."
        return _data_extension_type(de)
    rtype = RETRIEVE_TYPES.get(object_type)
    if rtype is None:
        return f"Error: Unable to retrieve objects of type {object_type or '(none)'} in this sandbox."
    return rtype


DATE_PROPS = {"EventDate", "CreatedDate", "ModifiedDate"}


class FilterError(ValueError):
    pass


def _parse_dt(value: str) -> datetime:
    try:
        dt = datetime.fromisoformat(value.strip())
    except ValueError:
        dt = datetime.strptime(value.strip(), "%m/%d/%Y %I:%M:%S %p")  # MC's data extension dates
    # MC's "Incoming Date Normalization": a value without a zone is server time (CST, UTC-6 all year).
    return dt if dt.tzinfo else dt.replace(tzinfo=CST)


def _compare(actual: Any, op: str, values: list[str], prop: str) -> bool:
    op_l = op.lower()
    if op_l == "isnull":
        return actual is None or actual == ""
    if op_l == "isnotnull":
        return not (actual is None or actual == "")
    if actual is None:
        return False
    if isinstance(actual, datetime) or prop in DATE_PROPS:
        try:
            a: Any = actual if isinstance(actual, datetime) else _parse_dt(str(actual))
            vals: list[Any] = [_parse_dt(v) for v in values]
        except ValueError as exc:
            raise FilterError(f"Invalid date value for {prop}") from exc
    elif isinstance(actual, bool):
        a, vals = str(actual).lower(), [v.lower() for v in values]
    elif isinstance(actual, int):
        try:
            a, vals = actual, [int(v) for v in values]
        except ValueError:
            a, vals = str(actual), values
    else:
        a, vals = str(actual), values
    if not vals and op_l not in ("isnull", "isnotnull"):
        raise FilterError(f"The filter on {prop} has no value")
    v0 = vals[0] if vals else None
    match op_l:
        case "equals":
            return bool(a == v0)
        case "notequals":
            return bool(a != v0)
        case "in":
            return a in vals
        case "greaterthan":
            return bool(a > v0)
        case "lessthan":
            return bool(a < v0)
        case "greaterthanorequal":
            return bool(a >= v0)
        case "lessthanorequal":
            return bool(a <= v0)
        case "between":
            if len(vals) < 2:
                raise FilterError("between needs two values")
            return bool(vals[0] <= a <= vals[1])
        case "like" | "contains" | "existsinstring":
            return str(v0).strip("%").lower() in str(a).lower()
        case "beginswith":
            return str(a).lower().startswith(str(v0).lower())
        case "endswith":
            return str(a).lower().endswith(str(v0).lower())
    raise FilterError(f"The SimpleOperator {op} is not supported")


def _filter_fn(el: etree._Element | None, rtype: RetrieveType) -> Callable[[Record], bool]:
    if el is None:
        return lambda _r: True
    if kid(el, "LeftOperand") is not None:
        left = _filter_fn(kid(el, "LeftOperand"), rtype)
        right = _filter_fn(kid(el, "RightOperand"), rtype)
        extra = [_filter_fn(o, rtype) for o in kids(kid(el, "AdditionalOperands"), "Operand")]
        parts = [left, right, *extra]
        if (text(el, "LogicalOperator") or "AND").upper() == "OR":
            return lambda r: any(p(r) for p in parts)
        return lambda r: all(p(r) for p in parts)
    prop = rtype.canon(text(el, "Property") or "")
    if prop not in rtype.fields and prop not in ("SubscriberKey",):
        raise FilterError(f"The Filter Property {prop} is not a retrievable property")
    op = text(el, "SimpleOperator") or "equals"
    values = [(v.text or "").strip() for v in kids(el, "Value")] + [
        (v.text or "").strip() for v in kids(el, "DateValue")
    ]
    return lambda r: _compare(r.get(prop), op, values, prop)


def op_retrieve(ctx: Ctx, op: etree._Element) -> tuple[str, str]:
    req = kid(op, "RetrieveRequest")
    cursors: dict[str, Cursor] = ctx.sb.state.retrieve_cursors

    def reply(status: str, results: str = "", request_id: str = ctx.request_id) -> tuple[str, str]:
        return "RetrieveResponse", (
            f'<RetrieveResponseMsg xmlns="{NS}">{x("OverallStatus", status)}{x("RequestID", request_id)}'
            f"{results}</RetrieveResponseMsg>"
        )

    def page(request_id: str, cursor: Cursor) -> tuple[str, str]:
        chunk = cursor.rows[cursor.offset : cursor.offset + cursor.page_size]
        cursor.offset += len(chunk)
        cursors.pop(request_id, None)
        status = "OK"
        if cursor.offset < len(cursor.rows):
            status = "MoreDataAvailable"
            cursors[request_id] = cursor  # the newest last, so the oldest goes first
            while len(cursors) > MAX_CURSORS:
                del cursors[next(iter(cursors))]
        out: list[str] = []
        for r in chunk:
            if cursor.rtype.render is not None:
                inner = cursor.rtype.render(r, cursor.props)
            else:
                inner = nil("PartnerKey") + "".join(
                    x(f, r.get(f)) for f in cursor.rtype.fields if f in cursor.props
                )
            out.append(f'<Results xsi:type="{escape(cursor.xsi_type)}">{inner}</Results>')
        return reply(status, "".join(out), request_id)

    continue_id = text(req, "ContinueRequest")
    if continue_id:
        # The rows were chosen by the first request; the later pages return what was left of them.
        cursor = cursors.get(continue_id)
        if cursor is None:
            return reply(f"Error: The ContinueRequest {continue_id} is not valid or has expired.")
        return page(continue_id, cursor)

    object_type = text(req, "ObjectType") or ""
    rtype = _retrieve_type(object_type)
    if isinstance(rtype, str):
        return reply(rtype)
    props = list(
        dict.fromkeys(rtype.canon(p) for p in ((c.text or "").strip() for c in kids(req, "Properties")) if p)
    )
    if not props:
        return reply("Error: Request must include at least one property to retrieve.")
    bad = [p for p in props if p not in rtype.fields]
    shown = rtype.xsi_type or object_type
    if bad:
        return reply(
            f"Error: The Request Property(s) {', '.join(bad)} do not match with the fields of "
            f"{shown} retrieve"
        )
    try:
        keep = _filter_fn(kid(req, "Filter"), rtype)
        rows = [r for r in rtype.rows(ctx.sb) if keep(r)]
    except FilterError as exc:
        return reply(f"Error: {exc}")
    return page(ctx.request_id, Cursor(rtype, shown, props, rows, page_size=_batch_size(req)))


def _batch_size(req: etree._Element | None) -> int:
    """RetrieveOptions/BatchSize (WSDL): smaller pages when a client asks for them, never more than
    MC's 2,500. Whether MC itself honours a smaller BatchSize is not documented [INF]; a client
    that reads page by page works with either."""
    raw = text(kid(req, "Options"), "BatchSize")
    try:
        size = int(raw) if raw else MAX_RETRIEVE
    except ValueError:
        size = MAX_RETRIEVE
    return size if 0 < size <= MAX_RETRIEVE else MAX_RETRIEVE


# ------------------------------------------------------------------------------------------- Describe


def op_describe(ctx: Ctx, op: etree._Element) -> tuple[str, str]:
    """``DefinitionRequestMsg``: one ObjectDefinition per ObjectDefinitionRequest (WSDL), naming the
    properties a Retrieve of that type accepts. FuelSDK describes an object before a ``get()`` that
    names no properties. MC lists more properties than the sandbox retrieves; a client that reads
    what Describe lists and retrieves exactly those works with either [INF]."""
    out: list[str] = []
    for req in kids(kid(op, "DescribeRequests"), "ObjectDefinitionRequest"):
        object_type = text(req, "ObjectType") or ""
        rtype = _retrieve_type(object_type)
        if isinstance(rtype, str):
            # DefinitionResponseMsg has no per-request status to carry the error in: a fault [INF].
            raise ClientFault(f"Unable to describe objects of type {object_type or '(none)'}.")
        props = "".join(
            f"<Properties>{x('Name', f)}{x('DataType', 'String')}{x('IsUpdatable', False)}"
            f"{x('IsRetrievable', True)}</Properties>"
            for f in rtype.fields
        )
        out.append(
            f"<ObjectDefinition>{x('ObjectType', object_type)}{x('Name', object_type)}"
            f"{x('IsRetrievable', True)}{props}</ObjectDefinition>"
        )
    return "DescribeResponse", (
        f'<DefinitionResponseMsg xmlns="{NS}">{"".join(out)}{x("RequestID", ctx.request_id)}'
        "</DefinitionResponseMsg>"
    )


OPERATIONS: dict[str, Callable[[Ctx, etree._Element], tuple[str, str]]] = {
    "CreateRequest": op_create,
    "UpdateRequest": op_update,
    "DeleteRequest": op_delete,
    "RetrieveRequestMsg": op_retrieve,
    "PerformRequestMsg": op_perform,
    "DefinitionRequestMsg": op_describe,
}


# ------------------------------------------------------------------------------------------------ WSDL


def load_wsdl(base_url: str) -> tuple[bytes, bytes]:
    """The WSDL and fault XSD, rewritten to point at this sandbox so zeep needs no network."""
    from importlib import resources

    folder = resources.files("mc_sandbox") / "wsdl"
    wsdl = (folder / "etframework.wsdl").read_text(encoding="utf-8")
    wsdl = wsdl.replace("https://webservice.exacttarget.com/Service.asmx", f"{base_url}Service.asmx")
    wsdl = wsdl.replace(
        "https://webservice.exacttarget.com/ETFrameworkFault.xsd", f"{base_url}ETFrameworkFault.xsd"
    )
    xsd = (folder / "ETFrameworkFault.xsd").read_bytes()
    return wsdl.encode("utf-8"), xsd
