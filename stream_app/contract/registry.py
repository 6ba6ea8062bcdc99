"""A client of a Confluent-compatible schema registry's REST API (`SCHEMA_REGISTRY_URL`): Confluent
Schema Registry itself, Apicurio's `/apis/ccompat/v7` (what `python -m stream_app registry` runs),
Karapace, Redpanda.

Two calls only: the schema of an id (`GET /schemas/ids/{id}`), fetched for a whole fetched batch
by `prefetch` before the intake decodes its records synchronously from `schemas` (a cache by id:
a schema id never changes meaning), and the registration of a schema under a subject
(`POST /subjects/{subject}/versions`), which `create-topics` uses.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Iterable
from typing import Any

import httpx

from stream_app.contract.wire import AvroSchemas

log = logging.getLogger("stream_app.registry")

CONTENT_TYPE = "application/vnd.schemaregistry.v1+json"
# The error code of "Schema not found" in Confluent's API (Apicurio's ccompat answers the same).
SCHEMA_NOT_FOUND = 40403


class RegistryError(RuntimeError):
    """The registry could not be asked, or answered with an error that is not "no such schema"."""


class SchemaRegistry:
    """`url`: the API's base, e.g. http://127.0.0.1:8781/apis/ccompat/v7 (Apicurio) or
    http://registry:8081 (Confluent)."""

    def __init__(
        self,
        url: str,
        *,
        timeout: float = 10.0,
        attempts: int = 3,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.url = url.rstrip("/")
        self.schemas = AvroSchemas(self.url)
        self.timeout = timeout
        self.attempts = attempts
        self._transport = transport  # tests: an httpx.MockTransport
        self._client: httpx.AsyncClient | None = None

    def _http(self) -> httpx.AsyncClient:
        if self._client is None:
            self._client = httpx.AsyncClient(
                timeout=self.timeout,
                headers={"Accept": CONTENT_TYPE, "Content-Type": CONTENT_TYPE},
                transport=self._transport,
            )
        return self._client

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    async def prefetch(self, ids: Iterable[int]) -> None:
        """Fetch the schemas of `ids` not yet held into `schemas`; an id the registry does not have
        is noted as missing (its records go to the DLQ). RegistryError when the registry cannot be
        asked: the caller reads its batch again rather than dead-lettering records that are fine."""
        wanted = self.schemas.wanted(ids)
        if wanted:
            await asyncio.gather(*(self._fetch(i) for i in wanted))

    async def _fetch(self, schema_id: int) -> None:
        response = await self._request("GET", f"/schemas/ids/{schema_id}")
        if response.status_code == 404:
            # Only the API's own "no such schema": a 404 of another kind is a wrong URL, which must
            # not send every Avro record to the DLQ.
            if _error_code(response) != SCHEMA_NOT_FOUND:
                raise RegistryError(
                    f"GET {self.url}/schemas/ids/{schema_id}: HTTP 404 {response.text[:300]!r}; "
                    "is SCHEMA_REGISTRY_URL the API's base (Apicurio: .../apis/ccompat/v7)?"
                )
            self.schemas.missing(schema_id, f"unknown to the schema registry at {self.url}")
            log.warning("unknown Avro schema id", extra={"schema_id": schema_id, "registry": self.url})
            return
        body = _json_or_error(response, f"GET {self.url}/schemas/ids/{schema_id}")
        kind = body.get("schemaType", "AVRO")
        if kind != "AVRO":
            self.schemas.missing(schema_id, f"a {kind} schema, not Avro")
        elif body.get("references"):
            self.schemas.missing(schema_id, "its schema has references, which this service does not resolve")
        else:
            self.schemas.add(schema_id, body["schema"])

    async def register(self, subject: str, schema: str | dict[str, Any]) -> int:
        """Register an Avro schema under `subject`; returns its id (the same id when registered before)."""
        text = schema if isinstance(schema, str) else json.dumps(schema)
        response = await self._request("POST", f"/subjects/{subject}/versions", json={"schema": text})
        body = _json_or_error(response, f"POST {self.url}/subjects/{subject}/versions")
        return int(body["id"])

    async def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """One request, tried again on a connection error or a 5xx (the registry restarting)."""
        problem = ""
        for attempt in range(self.attempts):
            if attempt:
                await asyncio.sleep(0.2 * 2**attempt)
            try:
                response = await self._http().request(method, self.url + path, **kwargs)
            except httpx.HTTPError as exc:
                problem = f"{type(exc).__name__}: {exc}"
                continue
            if response.status_code < 500:
                return response
            problem = f"HTTP {response.status_code}: {response.text[:300]}"
        raise RegistryError(f"schema registry at {self.url} unavailable ({method} {path}): {problem}")


def _error_code(response: httpx.Response) -> int | None:
    try:
        code = response.json().get("error_code")
    except (ValueError, AttributeError):
        return None
    return code if isinstance(code, int) else None


def _json_or_error(response: httpx.Response, what: str) -> dict[str, Any]:
    if response.status_code >= 300:
        raise RegistryError(f"{what}: HTTP {response.status_code}: {response.text[:300]}")
    try:
        body = response.json()
    except ValueError:
        raise RegistryError(f"{what}: not JSON: {response.text[:300]}") from None
    if not isinstance(body, dict):
        raise RegistryError(f"{what}: unexpected answer {body!r:.300}")
    return body


def topic_schemas(topics: Iterable[str]) -> dict[str, str]:
    """`<topic>-value` -> the self-contained JSON of `schemas/<topic>.avsc` (named types it uses,
    like Party, written out in place), for every topic of `topics` that has a schema file."""
    from stream_app.contract.schemas import schemas

    loaded = schemas()
    return {f"{t}-value": json.dumps(loaded[t].to_json()) for t in sorted(set(topics)) if t in loaded}
