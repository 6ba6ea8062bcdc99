"""Small clients and polling helpers for the sandbox tests."""

from __future__ import annotations

import asyncio
import json
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import httpx
from aiohttp import web
from lxml import etree

from mc_sandbox.launch import free_port

T = TypeVar("T")
CREDS = {
    "grant_type": "client_credentials",
    "client_id": "sandbox-client",
    "client_secret": "sandbox-secret",
    "account_id": 100000001,
}


def token(base: str) -> str:
    r = httpx.post(f"{base}v2/token", json=CREDS, timeout=10)
    r.raise_for_status()
    return str(r.json()["access_token"])


def client(base: str, tok: str | None = None) -> httpx.Client:
    headers = {"Authorization": f"Bearer {tok or token(base)}"}
    return httpx.Client(base_url=base, headers=headers, timeout=10)


def wait_for(fn: Callable[[], T | None], timeout: float = 30.0, interval: float = 0.05, what: str = "") -> T:
    """Poll ``fn`` until it returns something truthy, or fail at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        value = fn()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what or fn}")
        time.sleep(interval)


def sftp(
    port: int, commands: list[str], tmp: Path, password: str = "sandbox"
) -> subprocess.CompletedProcess[str]:
    """OpenSSH sftp in batch mode through sshpass (BatchMode=no, since -b otherwise forbids passwords)."""
    batch = tmp / f"batch_{time.monotonic_ns()}.txt"
    batch.write_text("\n".join(commands) + "\n")
    return subprocess.run(
        [
            "sshpass",
            "-p",
            password,
            "sftp",
            "-o",
            "BatchMode=no",
            "-P",
            str(port),
            "-o",
            "StrictHostKeyChecking=no",
            "-o",
            "UserKnownHostsFile=/dev/null",
            "-b",
            str(batch),
            "sandbox@127.0.0.1",
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )


def upload(port: int, tmp: Path, name: str, content: str, remote_dir: str = "/Import") -> None:
    local = tmp / name
    local.write_text(content, encoding="utf-8")
    r = sftp(port, [f"put {local} {remote_dir}/{name}"], tmp)
    assert r.returncode == 0, r.stderr


def header(tok: str, namespace: str | None = "http://exacttarget.com") -> etree._Element:
    el = etree.Element(f"{{{namespace}}}fueloauth" if namespace else "fueloauth")
    el.text = tok
    return el


def get_json(base: str, path: str) -> Any:
    r = httpx.get(f"{base}{path}", timeout=10)
    r.raise_for_status()
    return r.json()


def imports_by_file(base: str, name: str) -> list[dict[str, Any]]:
    return [j for j in get_json(base, "_sandbox/imports") if j["file"].endswith("/" + name)]


class Receiver:
    """An ENS callback endpoint on a free port: keeps every POST; fails the first ``fail_first`` batches."""

    def __init__(self, fail_first: int = 0) -> None:
        self.bodies: list[tuple[bytes, dict[str, str]]] = []
        self.fail_first = fail_first
        self.port = free_port()
        self.runner: web.AppRunner | None = None

    async def handle(self, request: web.Request) -> web.Response:
        raw = await request.read()
        self.bodies.append((raw, dict(request.headers)))
        if self.fail_first > 0 and isinstance(json.loads(raw), list):
            self.fail_first -= 1
            return web.Response(status=500)
        return web.Response(status=200)

    async def __aenter__(self) -> Receiver:
        app = web.Application()
        app.router.add_post("/ens", self.handle)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", self.port).start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.runner is not None
        await self.runner.cleanup()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/ens"

    def events(self) -> list[tuple[list[dict[str, Any]], bytes, dict[str, str]]]:
        return [(json.loads(b), b, h) for b, h in self.bodies if isinstance(json.loads(b), list)]


async def until(cond: Callable[[], Any], timeout: float = 30.0) -> None:
    """Await until ``cond()`` is truthy, or fail at the deadline."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not cond():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.05)


async def ens_subscribe(c: httpx.AsyncClient, rec: Receiver, categories: list[str]) -> dict[str, Any]:
    """Register ``rec`` as a callback, verify it and subscribe it to ``categories``; the callback."""
    r = await c.post("platform/v1/ens-callbacks", json=[{"callbackName": "cb", "url": rec.url}])
    assert r.status_code == 201, r.text
    cb: dict[str, Any] = r.json()[0]
    probe = json.loads(rec.bodies[0][0])
    assert (await c.post("platform/v1/ens-verify", json=probe)).status_code == 200
    body = [{"callbackId": cb["callbackId"], "subscriptionName": "all", "eventCategoryTypes": categories}]
    assert (await c.post("platform/v1/ens-subscriptions", json=body)).status_code == 201
    return cb


# ----------------------------------------------------------------------------------- raw SOAP calls

NS = "http://exacttarget.com/wsdl/partnerAPI"
XSI = "http://www.w3.org/2001/XMLSchema-instance"


def soap(base: str, tok: str, body: str) -> etree._Element:
    """POST one SOAP envelope around ``body``; the parsed response envelope (raw XML: fast in bulk)."""
    env = (
        f'<soap:Envelope xmlns:soap="http://schemas.xmlsoap.org/soap/envelope/" xmlns:xsi="{XSI}">'
        f'<soap:Header><fueloauth xmlns="http://exacttarget.com">{tok}</fueloauth></soap:Header>'
        f"<soap:Body>{body}</soap:Body></soap:Envelope>"
    )
    r = httpx.post(
        f"{base}Service.asmx", content=env.encode(), headers={"Content-Type": "text/xml"}, timeout=60
    )
    return etree.fromstring(r.content)


def found(doc: etree._Element, path: str) -> list[etree._Element]:
    """Elements under ``doc`` by a path of partner-API local names, e.g. ``Results/SubscriberFailures``."""
    return list(doc.iterfind(".//" + "/".join(f"{{{NS}}}{p}" for p in path.split("/"))))


def value(el: etree._Element, name: str) -> str | None:
    child = el.find(f"{{{NS}}}{name}")
    return None if child is None else (child.text or "")


def create_subscribers(base: str, tok: str, pairs: list[tuple[str, str]], status: str | None = None) -> None:
    status_xml = f"<Status>{status}</Status>" if status else ""
    objects = "".join(
        f'<Objects xsi:type="Subscriber"><EmailAddress>{email}</EmailAddress>'
        f"<SubscriberKey>{key}</SubscriberKey>{status_xml}</Objects>"
        for key, email in pairs
    )
    save = (
        "<Options><SaveOptions><SaveOption><PropertyName>*</PropertyName><SaveAction>UpdateAdd</SaveAction>"
        "</SaveOption></SaveOptions></Options>"
    )
    doc = soap(base, tok, f'<CreateRequest xmlns="{NS}">{save}{objects}</CreateRequest>')
    assert [e.text for e in found(doc, "OverallStatus")] == ["OK"], etree.tostring(doc)[:2000]


def triggered_send(base: str, tok: str, tsd: str, pairs: list[tuple[str, str]]) -> etree._Element:
    subs = "".join(
        f"<Subscribers><EmailAddress>{email}</EmailAddress><SubscriberKey>{key}</SubscriberKey></Subscribers>"
        for key, email in pairs
    )
    body = (
        f'<CreateRequest xmlns="{NS}"><Options/><Objects xsi:type="TriggeredSend">'
        f"<TriggeredSendDefinition><CustomerKey>{tsd}</CustomerKey></TriggeredSendDefinition>{subs}"
        "</Objects></CreateRequest>"
    )
    return soap(base, tok, body)


def retrieve(
    base: str, tok: str, object_type: str, props: list[str], flt: str = "", cont: str | None = None
) -> etree._Element:
    """A Retrieve; ``flt`` is the Filter element's XML (see ``simple``), ``cont`` a ContinueRequest id."""
    if cont is not None:
        inner = f"<ContinueRequest>{cont}</ContinueRequest>"
    else:
        inner = f"<ObjectType>{object_type}</ObjectType>" + "".join(
            f"<Properties>{p}</Properties>" for p in props
        )
        inner += flt
    return soap(
        base,
        tok,
        f'<RetrieveRequestMsg xmlns="{NS}"><RetrieveRequest>{inner}</RetrieveRequest></RetrieveRequestMsg>',
    )


def simple(prop: str, op: str, *values: str, tag: str = "Filter") -> str:
    vals = "".join(f"<Value>{v}</Value>" for v in values)
    return (
        f'<{tag} xsi:type="SimpleFilterPart"><Property>{prop}</Property>'
        f"<SimpleOperator>{op}</SimpleOperator>{vals}</{tag}>"
    )


def both(left: str, right: str) -> str:
    """A ComplexFilterPart: ``left`` AND ``right``, made with ``simple(..., tag="LeftOperand")`` and
    ``simple(..., tag="RightOperand")``."""
    return (
        f'<Filter xsi:type="ComplexFilterPart">{left}<LogicalOperator>AND</LogicalOperator>{right}</Filter>'
    )


def rows(doc: etree._Element) -> list[dict[str, str | None]]:
    """Retrieve Results as {local name: text}, nil ones left out; nested ones (List) as their text."""
    out = []
    for res in found(doc, "Results"):
        out.append(
            {
                etree.QName(c).localname: ("".join(c.itertext()) or None)
                for c in res
                if c.get(f"{{{XSI}}}nil") != "true"
            }
        )
    return out


def de_rows(doc: etree._Element) -> list[dict[str, str | None]]:
    """DataExtensionObject Results as {property name: value}."""
    return [
        {value(p, "Name") or "": value(p, "Value") for p in found(res, "Properties/Property")}
        for res in found(doc, "Results")
    ]
