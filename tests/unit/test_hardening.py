"""Issue 19's smaller findings, each pinned by a test: secrets out of reprs, no plain http to MC, a
web port open to the network only with a token, zeep without DTDs, a replayed resend sent once, and
the batcher's memory of revoked partitions dropped."""

from __future__ import annotations

from dataclasses import replace
from types import SimpleNamespace

import httpx
import orjson
import pytest
from faust.types import TP

from stream_app.cli.resend import replay_headers
from stream_app.contract.topics import FORWARDED_HEADER, INTENTS_TOPIC, READY_TOPIC, RESEND_HEADER
from stream_app.domain.ledger import SENT, Decision, Entry, decide, ledger_key
from stream_app.domain.notifications import check_email, check_member_id, decode_event, plan
from stream_app.domain.subscriber_csv import build_csv
from stream_app.mc import AuthError, SoapClient, TokenManager, TransientMCError
from stream_app.runtime.app import Runtime
from stream_app.settings import Settings, SettingsError, is_loopback_host
from stream_app.stages.batcher import Batcher, window_partition
from stream_app.stages.senders import first_produced_at

# --- settings ------------------------------------------------------------------------------------


def test_the_settings_repr_carries_no_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MC_CLIENT_SECRET", "s3cr3t-client")
    monkeypatch.setenv("MC_SFTP_PASSWORD", "s3cr3t-sftp")
    monkeypatch.setenv("WEB_AUTH_TOKEN", "s3cr3t-token")
    settings = Settings()
    text = repr(settings) + str(settings)
    assert settings.mc_client_secret == "s3cr3t-client"  # still there to use
    for secret in ("s3cr3t-client", "s3cr3t-sftp", "s3cr3t-token"):
        assert secret not in text
    assert "mc_client_id" in text  # the rest of the repr is still useful


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.8.9.10", True),
        ("::1", True),
        ("[::1]", True),
        ("localhost", True),
        ("LocalHost", True),
        ("0.0.0.0", False),
        ("::", False),
        ("10.0.0.5", False),
        ("worker-1", False),
        ("", False),
    ],
)
def test_loopback_hosts(host: str, loopback: bool) -> None:
    assert is_loopback_host(host) is loopback


def test_a_web_port_open_to_the_network_needs_a_token() -> None:
    base = replace(Settings(), web_auth_token="", ens_listen="")
    assert base.web_host == "127.0.0.1" and base.problems() == []
    for host in ("127.0.0.1", "::1", "localhost"):
        replace(base, web_host=host).check()
    exposed = replace(base, web_host="0.0.0.0")
    with pytest.raises(SettingsError, match="WEB_AUTH_TOKEN is unset") as caught:
        exposed.check()
    assert "WEB_HOST='0.0.0.0'" in str(caught.value)
    replace(exposed, web_auth_token="t0ken").check()  # with a token it may listen anywhere


def test_the_worker_refuses_to_start_open_to_the_network(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from stream_app.cli import worker

    monkeypatch.setenv("WEB_HOST", "0.0.0.0")
    monkeypatch.delenv("WEB_AUTH_TOKEN", raising=False)
    monkeypatch.setattr(worker, "build", lambda *a: pytest.fail("built a runtime"))
    assert worker.main([]) == 2
    assert "refusing to start" in capsys.readouterr().err


def test_plain_http_to_mc_is_refused_outside_loopback() -> None:
    base = replace(Settings(), web_auth_token="", ens_listen="")
    replace(base, mc_auth_url="http://127.0.0.1:8780/").check()  # the sandbox
    replace(base, mc_auth_url="https://abc.auth.marketingcloudapis.com/").check()
    with pytest.raises(SettingsError, match="MC_AUTH_URL.*http:// is refused"):
        replace(base, mc_auth_url="http://abc.auth.marketingcloudapis.com/").check()


def test_ens_listen_is_host_and_port() -> None:
    base = replace(Settings(), ens_listen="", ens_callback_url="")
    assert base.ens_host_port is None
    assert base.callback_url == f"http://127.0.0.1:{base.web_port}/mc/ens/"
    ens = replace(base, ens_listen="0.0.0.0:6070")
    assert ens.ens_host_port == ("0.0.0.0", 6070)
    assert ens.callback_url == "http://127.0.0.1:6070/mc/ens/"
    assert replace(base, ens_listen="[::1]:6071").ens_host_port == ("::1", 6071)
    with pytest.raises(SettingsError, match="ENS_LISTEN"):
        replace(base, ens_listen="6070").check()


# --- MC clients ----------------------------------------------------------------------------------


def _token_answer(rest: str, soap: str) -> httpx.MockTransport:
    def answer(request: httpx.Request) -> httpx.Response:
        return httpx.Response(
            200,
            json={
                "access_token": "tok",
                "expires_in": 1079,
                "rest_instance_url": rest,
                "soap_instance_url": soap,
            },
        )

    return httpx.MockTransport(answer)


async def test_mc_bases_in_plain_http_are_refused() -> None:
    settings = replace(Settings(), mc_auth_url="https://auth.mc.test/")
    http = httpx.AsyncClient(transport=_token_answer("http://rest.mc.test/", "https://soap.mc.test/"))
    with pytest.raises(AuthError, match="rest_instance_url.*http:// is refused"):
        await TokenManager(settings, http).token()
    http = httpx.AsyncClient(transport=_token_answer("https://rest.mc.test/", "https://soap.mc.test/"))
    assert await TokenManager(settings, http).token() == "tok"
    # No client secret goes out over plain http to another host, whatever the settings say.
    sent: list[httpx.Request] = []

    def spy_answer(request: httpx.Request) -> httpx.Response:
        sent.append(request)
        return httpx.Response(500)

    spy = httpx.AsyncClient(transport=httpx.MockTransport(spy_answer))
    with pytest.raises(AuthError, match="MC_AUTH_URL"):
        await TokenManager(replace(settings, mc_auth_url="http://auth.mc.test/"), spy).token()
    assert not sent


async def test_zeep_refuses_a_dtd_and_parses_strictly() -> None:
    from stream_app.mc import soap as soap_module
    from stream_app.mc.soap import _zeep_settings

    zs = _zeep_settings()
    assert zs.forbid_dtd and zs.forbid_entities and zs.strict
    from tests.fixtures.fake_soap import WSDL, FakeSoap, retrieve_response

    if WSDL is None:
        pytest.skip("etframework.wsdl not available")
    doctype = '<?xml version="1.0"?>\n<!DOCTYPE lol [<!ELEMENT lol ANY>]>\n'
    answer = retrieve_response().replace('<?xml version="1.0" encoding="utf-8"?>\n', doctype)
    fake = FakeSoap(lambda doc, n: (200, answer))
    http = httpx.AsyncClient(transport=httpx.MockTransport(fake))
    settings = replace(Settings(), mc_auth_url="https://auth.mc.test/")
    soap = SoapClient(TokenManager(settings, http), http)
    try:
        with pytest.raises(TransientMCError, match="DTDForbidden"):
            await soap.import_summary("subscribers_w1.csv")
    finally:  # test_mc_soap counts its own first WSDL download
        soap_module._documents.pop("https://soap.mc.test/etframework.wsdl", None)


# --- DLQ replay of a resend ----------------------------------------------------------------------


def _ledger_key_of(partition: int, offset: int, headers: list[tuple[str, bytes]]) -> str:
    """The ledger key the sender gives a subscriber.ready record read at partition:offset."""
    found = dict(headers)
    event = SimpleNamespace(message=SimpleNamespace(partition=partition, offset=offset))
    resend = found.get(RESEND_HEADER, b"").strip() == b"1"
    return ledger_key("d-1:packet-drawn-drawer", first_produced_at(event, found) if resend else None)  # type: ignore[arg-type]


def test_a_failed_resend_replayed_twice_meets_one_ledger_entry() -> None:
    # The operator's resend was produced at 2:17, its send failed, it went to the DLQ.
    original = _ledger_key_of(2, 17, [(RESEND_HEADER, b"1")])
    dlq_headers = [
        (RESEND_HEADER, b"1"),
        ("error.class", b"RetriesExhausted"),
        ("error.message", b"MC down"),
        ("source.topic", READY_TOPIC.encode()),
        ("source.partition", b"2"),
        ("source.offset", b"17"),
    ]
    replayed = replay_headers(dlq_headers)
    assert not any(k.startswith(("error.", "source.")) for k, _ in replayed)
    assert (FORWARDED_HEADER, b"2:17") in replayed
    # Replayed twice, the copies land at new offsets: both are the original resend's entry, which
    # the first replay's send marks sent, so the second is a duplicate.
    first, second = _ledger_key_of(2, 40, replayed), _ledger_key_of(2, 41, replayed)
    assert first == second == original
    assert decide(Entry(SENT, 0.0)) is Decision.DUPLICATE


def test_a_forwarded_resend_keeps_its_first_origin_through_a_replay() -> None:
    headers = [(RESEND_HEADER, b"1"), (FORWARDED_HEADER, b"0:5")]
    source = [("source.topic", READY_TOPIC.encode()), ("source.partition", b"3"), ("source.offset", b"9")]
    dlq = [*headers, *source]
    assert replay_headers(dlq) == headers
    assert _ledger_key_of(3, 50, replay_headers(dlq)) == _ledger_key_of(3, 9, headers)


def test_a_replay_of_an_ordinary_record_is_left_as_it_was() -> None:
    dlq = [("trace-id", b"x"), ("source.topic", READY_TOPIC.encode()), ("source.partition", b"1")]
    assert replay_headers(dlq) == [("trace-id", b"x")]


# --- batcher -------------------------------------------------------------------------------------


def test_the_batcher_forgets_the_windows_of_revoked_partitions() -> None:
    batcher = Batcher(Runtime(Settings()))
    batcher._current_window = {1: "p1-1000-aaaaaa", 2: "p2-1000-bbbbbb"}
    batcher._rows = {"p1-1000-aaaaaa": ["k1"], "p2-1000-bbbbbb": ["k2"], "p12-1000-cccccc": ["k3"]}
    batcher._close_requested = {"p1-998-dddddd": 1.0, "p2-998-eeeeee": 2.0}
    batcher.forget({TP(INTENTS_TOPIC, 1), TP(INTENTS_TOPIC, 12), TP(READY_TOPIC, 2)})
    assert batcher._current_window == {2: "p2-1000-bbbbbb"}
    assert batcher._rows == {"p2-1000-bbbbbb": ["k2"]}
    assert batcher._close_requested == {"p2-998-eeeeee": 2.0}
    assert window_partition("p12-1000-cccccc") == 12 and window_partition("odd") is None


# --- import CSV and member ids -------------------------------------------------------------------


@pytest.mark.parametrize("member_id", ["M1001", "M1-0a9f", "a.b_c:d-e", "1", "x" * 100])
def test_member_ids_of_the_safe_set_pass(member_id: str) -> None:
    assert check_member_id(member_id) is None


@pytest.mark.parametrize(
    "member_id",
    ["=HYPERLINK(1)", "+1", "-1", "@SUM(A1)", "M 1", "M,1", 'M"1', "M\t1", "", "x" * 101, "紅包", ".M1"],
)
def test_member_ids_outside_the_safe_set_are_refused(member_id: str) -> None:
    assert "invalid member_id" in (check_member_id(member_id) or "")


def _event(**drawer: object) -> dict[str, object]:
    party = {"name": "EZ", "email": "ez@example.com", "mobile": "+886912345678", "locale": "zh-TW"}
    raw = orjson.dumps(
        {
            "event_id": "d-csv",
            "occurred_at": "2026-01-28T12:00:00+08:00",
            "packet_id": "RP-1",
            "amount": 250,
            "drawer": {**party, "member_id": "M1", **drawer},
            "giver": {**party, "member_id": "M2", "email": "table@example.com", "mobile": None},
        }
    )
    return decode_event("packet.drawn", raw)


def test_a_party_with_an_unsafe_member_id_gets_invalid_outcomes_not_a_dlq_record() -> None:
    ready, rejected = plan("packet.drawn", _event(member_id="=cmd|' /C calc'!A0"))
    assert sorted(r.ready["template"] for r in rejected) == ["packet-drawn-drawer", "packet-drawn-welcome"]
    assert all(r.reason.startswith("invalid member_id") for r in rejected)
    assert [r["template"] for r in ready] == ["packet-drawn-giver"]  # the other party is served


@pytest.mark.parametrize("address", ["=1+1@example.com", "+cmd@example.com", "-x@example.com"])
def test_an_email_starting_with_a_formula_character_is_invalid(address: str) -> None:
    assert "spreadsheet formula" in (check_email(address) or "")
    ready, rejected = plan("packet.drawn", _event(email=address))
    assert [r.ready["template"] for r in rejected] == ["packet-drawn-drawer"]
    assert address not in rejected[0].reason  # masked


def test_every_csv_cell_is_neutralised() -> None:
    text = build_csv(
        [("=1", "+a@example.com", "-1", "@SUM(A1)"), ("M1", "ez@example.com", "886912345678", "EZ")]
    )
    assert text.decode().splitlines() == [
        '"SubscriberKey","EmailAddress","MobileNumber","Name"',
        '"\'=1","\'+a@example.com","\'-1","\'@SUM(A1)"',
        '"M1","ez@example.com","886912345678","EZ"',
    ]
