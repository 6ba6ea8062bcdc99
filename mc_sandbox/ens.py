"""Event Notification Service routes: callbacks, verification and subscriptions (reference §7.3).

Modelling choice: the sandbox accepts ``http://127.0.0.1:<port>`` (and ``localhost``) callback URLs,
where real MC demands HTTPS with no port. Which sends produce which events is in ens_events.py (only
Transactional Messaging API sends, as MC's); delivery, signing, retries and suspension are in
ens_manager.py.
"""

from __future__ import annotations

import base64
import secrets
import uuid
from typing import Any
from urllib.parse import urlsplit

from aiohttp import web

from .context import sandbox_of
from .ens_manager import CATEGORIES, Callback, EnsManager, Subscription
from .http import not_authorized, read_json, rest_authorized, rest_error


def _url_allowed(url: str) -> bool:
    parts = urlsplit(url)
    if parts.query or parts.fragment:
        return False
    if parts.scheme == "https":
        return bool(parts.hostname)
    return parts.scheme == "http" and parts.hostname in ("127.0.0.1", "localhost")


def _ens(request: web.Request) -> EnsManager:
    return sandbox_of(request).ens


async def create_callbacks(request: web.Request) -> web.Response:
    if not rest_authorized(request):
        return not_authorized()
    body, err = await read_json(request)
    if err:
        return err
    if not isinstance(body, list) or not body:
        return rest_error(400, 10002, "The body must be a non-empty array of callbacks.")
    ens = _ens(request)
    out: list[dict[str, Any]] = []
    for item in body:
        if not isinstance(item, dict) or not item.get("callbackName") or not item.get("url"):
            return rest_error(400, 10002, "callbackName and url are required.")
        url = str(item["url"])
        if not _url_allowed(url):
            return rest_error(
                400, 10005, f"Invalid callback url {url}: HTTPS without a query string is required."
            )
        if any(cb.url == url for cb in ens.callbacks.values()):
            return web.Response(status=304)
        size = int(item.get("maxBatchSize", 1000))
        if not 100 <= size <= 1000:
            return rest_error(400, 10005, "maxBatchSize must be between 100 and 1000.")
        cb = Callback(
            callback_id=str(uuid.uuid4()),
            name=str(item["callbackName"]),
            url=url,
            signature_key=base64.b64encode(secrets.token_bytes(32)).decode(),
            verification_key=secrets.token_hex(16),
            max_batch_size=size,
        )
        problem = await ens.probe(cb)
        if problem is not None:
            return rest_error(400, 30000, f"MCMS_UWH_Runtime_GeneralFailure_probeCallbackLiveness: {problem}")
        ens.callbacks[cb.callback_id] = cb
        out.append(
            {
                "callbackName": cb.name,
                "callbackId": cb.callback_id,
                "url": cb.url,
                "signatureKey": cb.signature_key,
                "maxBatchSize": cb.max_batch_size,
            }
        )
    return web.json_response(out, status=201)


async def verify_callback(request: web.Request) -> web.Response:
    if not rest_authorized(request):
        return not_authorized()
    body, err = await read_json(request)
    if err:
        return err
    ens = _ens(request)
    cb = ens.callbacks.get(str((body or {}).get("callbackId", ""))) if isinstance(body, dict) else None
    if cb is None or not isinstance(body, dict) or body.get("verificationKey") != cb.verification_key:
        return rest_error(404, 30003, "Callback not found or verification key does not match.")
    cb.verified = True
    return web.json_response({"callbackId": cb.callback_id, "verified": True})


async def get_callback(request: web.Request) -> web.Response:
    if not rest_authorized(request):
        return not_authorized()
    cb = _ens(request).callbacks.get(request.match_info["cb"])
    if cb is None:
        return rest_error(404, 30003, "Object Not Found")
    return web.json_response(cb.to_json())


async def delete_callback(request: web.Request) -> web.Response:
    if not rest_authorized(request):
        return not_authorized()
    ens = _ens(request)
    cb = ens.callbacks.pop(request.match_info["cb"], None)
    if cb is None:
        return rest_error(404, 30003, "Object Not Found")
    for sid in [s.subscription_id for s in ens.subscriptions.values() if s.callback_id == cb.callback_id]:
        del ens.subscriptions[sid]
    return web.json_response({"callbackId": cb.callback_id, "deleted": True})


async def create_subscriptions(request: web.Request) -> web.Response:
    if not rest_authorized(request):
        return not_authorized()
    body, err = await read_json(request)
    if err:
        return err
    if not isinstance(body, list) or not body:
        return rest_error(400, 10002, "The body must be a non-empty array of subscriptions.")
    ens = _ens(request)
    created: list[Subscription] = []
    for item in body:
        if not isinstance(item, dict):
            return rest_error(400, 10002, "Each subscription must be an object.")
        cb = ens.callbacks.get(str(item.get("callbackId", "")))
        if cb is None:
            return rest_error(404, 30003, "Callback not found.")
        if not cb.verified:
            return rest_error(400, 30001, "The callback must be verified before subscribing.")
        cats = item.get("eventCategoryTypes")
        if not isinstance(cats, list) or not cats or any(c not in CATEGORIES for c in cats):
            return rest_error(
                400, 10005, f"eventCategoryTypes must be a non-empty subset of {list(CATEGORIES)}."
            )
        filters = item.get("filters") or []
        if not isinstance(filters, list) or any("=" not in str(f) for f in filters):
            return rest_error(400, 10005, "filters must be strings of the form field=value.")
        if sum(1 for s in ens.subscriptions.values() if s.callback_id == cb.callback_id) >= 200:
            return rest_error(400, 10005, "At most 200 subscriptions per callback.")
        created.append(
            Subscription(
                subscription_id=str(uuid.uuid4()),
                callback_id=cb.callback_id,
                name=str(item.get("subscriptionName", "")),
                categories=[str(c) for c in cats],
                filters=[str(f) for f in filters],
            )
        )
    for s in created:
        ens.subscriptions[s.subscription_id] = s
    return web.json_response([s.to_json() for s in created], status=201)


async def subscriptions_by_callback(request: web.Request) -> web.Response:
    if not rest_authorized(request):
        return not_authorized()
    cb_id = request.match_info["cb"]
    ens = _ens(request)
    if cb_id not in ens.callbacks:
        return rest_error(404, 30003, "Object Not Found")
    return web.json_response([s.to_json() for s in ens.subscriptions.values() if s.callback_id == cb_id])


async def get_subscription(request: web.Request) -> web.Response:
    if not rest_authorized(request):
        return not_authorized()
    sub = _ens(request).subscriptions.get(request.match_info["sid"])
    if sub is None:
        return rest_error(404, 30003, "Object Not Found")
    return web.json_response(sub.to_json())


async def delete_subscription(request: web.Request) -> web.Response:
    if not rest_authorized(request):
        return not_authorized()
    sub = _ens(request).subscriptions.pop(request.match_info["sid"], None)
    if sub is None:
        return rest_error(404, 30003, "Object Not Found")
    return web.json_response({"subscriptionId": sub.subscription_id, "deleted": True})
