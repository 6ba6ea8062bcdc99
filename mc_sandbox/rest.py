"""REST triggered sends: ``/messaging/v1/messageDefinitionSends/...`` (reference §3.1)."""

from __future__ import annotations

import uuid
from typing import Any

from aiohttp import web

from .context import sandbox_of
from .http import field, not_authorized, read_json, rest_authorized, rest_error
from .sends import NO_VALID_SUBSCRIBERS, accept_email, check_recipient, record_refusal
from .state import valid_email
from .templates import email_definition


async def send_handler(request: web.Request) -> web.Response:
    """Always 202 (bar auth, throttling and faults), refusals included, as MC does.

    Modelling choice: refusals are decided synchronously and returned in the 202 body for both ASYNC
    and SYNC requests (real MC may report an ASYNC refusal only via the delivery record).
    """
    sb = sandbox_of(request)
    if not rest_authorized(request):
        return not_authorized()
    body, err = await read_json(request)
    if err:
        return err
    ref = request.match_info["ref"]
    to = field(body, "To") or {}
    address = field(to, "Address")
    key = field(to, "SubscriberKey")
    if not isinstance(address, str) or not valid_email(address):
        return web.json_response(
            {"recipientSendId": "", "hasErrors": True, "messages": ["InvalidOrMissingToAddress"]}, status=202
        )
    request_id = str(uuid.uuid4())
    definition = email_definition(ref)
    detail: dict[str, Any] | None = None
    if definition is None or definition.status not in ("Active", "Inactive"):
        detail = {
            "messageErrorCode": 18002,
            "messageErrorStatus": "TriggeredSendUnableToCreateRequest: "
            f"no active triggered send definition '{ref}'.",
        }
    else:
        refusal = check_recipient(sb, key if isinstance(key, str) else None, address)
        if refusal is not None:
            detail = {
                "messageErrorCode": refusal.code_id,
                "messageErrorStatus": f"ErrorCodeID {refusal.code_id} {refusal.name}: {refusal.text}",
            }
    if detail is not None:
        record_refusal(sb, request_id, definition.key if definition else ref, detail["messageErrorStatus"])
        return web.json_response(
            {
                "requestId": request_id,
                "responses": [
                    {
                        "recipientSendId": request_id,
                        "hasErrors": True,
                        "messageErrors": [
                            {"messageErrorCode": 180008, "messageErrorStatus": NO_VALID_SUBSCRIBERS},
                            detail,
                        ],
                    }
                ],
            },
            status=202,
        )
    assert definition is not None and isinstance(key, str)
    from_name = field(field(body, "From"), "Name")
    attrs_raw = field(field(to, "ContactAttributes"), "SubscriberAttributes")
    attributes = (
        {str(k): "" if v is None else str(v) for k, v in (attrs_raw or {}).items()}
        if isinstance(attrs_raw, dict)
        else {}
    )
    accept_email(
        sb,
        definition,
        key,
        address,
        from_name if isinstance(from_name, str) else None,
        attributes,
        "rest",
        message_id=request_id,
    )
    return web.json_response(
        {
            "requestId": request_id,
            "responses": [{"recipientSendId": request_id, "hasErrors": False, "messages": ["Queued"]}],
        },
        status=202,
    )


async def delivery_record_handler(request: web.Request) -> web.Response:
    sb = sandbox_of(request)
    if not rest_authorized(request):
        return not_authorized()
    record = sb.state.delivery_records.get(request.match_info["rsid"])
    definition = email_definition(request.match_info["ref"])
    if record is None or definition is None or record["definitionKey"] != definition.key:
        return rest_error(404, 30003, "Object Not Found")
    out = {k: v for k, v in record.items() if k != "definitionKey"}
    return web.json_response(out)
