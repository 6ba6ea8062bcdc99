"""Every knob of the worker, read once from the environment.

Defaults run the embedded stack (`make run`): the local broker, the local Marketing Cloud and its
SFTP, with the credentials both sides agree on.
"""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

from stream_app.domain import quiet_hours
from stream_app.domain.quiet_hours import QuietHours

PROJECT_ROOT = Path(__file__).resolve().parent.parent
# The stages of the flow a worker can run (design.md's picture, left to right).
STAGES = ("intake", "batcher", "imports", "senders")

# RocksDB's defaults are sized for one big database (64 MB x 3 memtables, a 2 GB block cache); a
# worker opens one per table and partition, so keep each small: state lives on disk, not the heap.
ROCKSDB_OPTIONS = {
    "write_buffer_size": 4 * 1024**2,
    "max_write_buffer_number": 2,
    "block_cache_size": 8 * 1024**2,
    "block_cache_compressed_size": 1024**2,
}


def _env(name: str, default: str) -> str:
    return os.environ.get(name, default)


def _env_int(name: str, default: int) -> int:
    return int(os.environ.get(name, str(default)))


def _env_float(name: str, default: float) -> float:
    return float(os.environ.get(name, str(default)))


def _env_stages() -> tuple[str, ...]:
    raw = os.environ.get("WORKER_STAGES", "").strip()
    chosen = [s.strip() for s in raw.split(",") if s.strip()] if raw else list(STAGES)
    unknown = sorted(set(chosen) - set(STAGES))
    if unknown:
        raise ValueError(f"WORKER_STAGES: unknown stage(s) {', '.join(unknown)}; known: {', '.join(STAGES)}")
    return tuple(s for s in STAGES if s in chosen)


def is_loopback_host(host: str | None) -> bool:
    """127.0.0.0/8, ::1 or localhost: only this machine can reach a server bound there."""
    if not host:
        return False
    host = host.strip("[]").lower()
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def plain_http_problem(name: str, url: str) -> str | None:
    """Credentials and members' data go to MC: over TLS, except to a sandbox on this machine."""
    parsed = urlparse(url.strip())
    if parsed.scheme.lower() == "http" and not is_loopback_host(parsed.hostname):
        return f"{name}={url!r}: http:// is refused outside loopback hosts; use https://"
    return None


EMAIL_APIS = ("triggered", "transactional")
SMS_APIS = ("mobileconnect", "transactional")


class SettingsError(ValueError):
    """A setting a worker refuses to start with."""


@dataclass(frozen=True)
class Settings:
    app_id: str = field(default_factory=lambda: _env("APP_ID", "stream_app"))
    broker_url: str = field(default_factory=lambda: _env("BROKER_URL", "kafka://127.0.0.1:9092"))
    # A Confluent-compatible schema registry's API (Apicurio: http://host:port/apis/ccompat/v7; what
    # `python -m stream_app registry` prints): Avro-framed input records are decoded with the schemas
    # it holds, and `create-topics` registers schemas/*.avsc there. Empty: JSON only, and an
    # Avro-framed record goes to the DLQ saying no registry is configured.
    schema_registry_url: str = field(default_factory=lambda: _env("SCHEMA_REGISTRY_URL", ""))
    web_port: int = field(default_factory=lambda: _env_int("WEB_PORT", 6066))
    web_host: str = field(default_factory=lambda: _env("WEB_HOST", "127.0.0.1"))
    # The bearer token every operator view asks for (`Authorization: Bearer <token>`); unset is
    # allowed only on a loopback bind (see `problems`). /health/ and MC's ENS callback need none.
    web_auth_token: str = field(default_factory=lambda: _env("WEB_AUTH_TOKEN", ""), repr=False)
    # A `host:port` of its own for MC's ENS callback, so the operator port need not face MC.
    ens_listen: str = field(default_factory=lambda: _env("ENS_LISTEN", ""))
    state_dir: Path = field(default_factory=lambda: Path(_env("STATE_DIR", str(PROJECT_ROOT / ".state"))))
    # memory:// in tests and the embedded stack; rocksdb:// in production (needs the rocksdb extra).
    store: str = field(default_factory=lambda: _env("TABLE_STORE", "memory://"))
    topic_partitions: int = field(default_factory=lambda: _env_int("TOPIC_PARTITIONS", 4))
    # Replicas of every topic the service creates, changelogs included (1: the embedded single node;
    # production: 3). `min_insync_replicas` follows from it.
    topic_replication_factor: int = field(default_factory=lambda: _env_int("TOPIC_REPLICATION_FACTOR", 1))
    # Which stages this worker runs (all by default), e.g. intake without senders, whose MC pace
    # would otherwise set intake's (the bench measures intake so), or senders on workers of their
    # own. Workers with different sets share the group (tests/integration/test_stages.py).
    stages: tuple[str, ...] = field(default_factory=_env_stages)
    # How long the dedupe marks, the send ledgers and the event traces are kept in their changelogs:
    # the window in which a replayed record is recognised. Older changelog segments are deleted.
    state_retention_days: float = field(default_factory=lambda: _env_float("STATE_RETENTION_DAYS", 30.0))

    mc_auth_url: str = field(default_factory=lambda: _env("MC_AUTH_URL", "http://127.0.0.1:8780/"))
    mc_client_id: str = field(default_factory=lambda: _env("MC_CLIENT_ID", "sandbox-client"))
    mc_client_secret: str = field(
        default_factory=lambda: _env("MC_CLIENT_SECRET", "sandbox-secret"), repr=False
    )
    mc_account_id: str = field(default_factory=lambda: _env("MC_ACCOUNT_ID", "100000001"))
    mc_sftp_host: str = field(default_factory=lambda: _env("MC_SFTP_HOST", "127.0.0.1"))
    mc_sftp_port: int = field(default_factory=lambda: _env_int("MC_SFTP_PORT", 8722))
    mc_sftp_user: str = field(default_factory=lambda: _env("MC_SFTP_USER", "sandbox"))
    mc_sftp_password: str = field(default_factory=lambda: _env("MC_SFTP_PASSWORD", "sandbox"), repr=False)
    # OpenSSH known_hosts file holding MC's SFTP host key; the embedded sandbox writes its own here.
    mc_sftp_known_hosts: Path = field(
        default_factory=lambda: Path(
            _env("MC_SFTP_KNOWN_HOSTS", str(PROJECT_ROOT / ".state" / "mc_sandbox" / "known_hosts"))
        )
    )
    mc_sftp_folder: str = field(default_factory=lambda: _env("MC_SFTP_FOLDER", "/Import"))
    mc_from_address: str = field(default_factory=lambda: _env("MC_FROM_ADDRESS", "noreply@eztable.com"))
    # How emails go to MC: `triggered` (classic triggered sends, messageDefinitionSends, the sender
    # name as From.Name) or `transactional` (the Transactional Messaging API: a messageKey per
    # notification, MC's own idempotency, status lookups and ENS feedback; the sender name rides
    # as the FromName attribute the definition's sender profile uses). See the README.
    mc_email_api: str = field(default_factory=lambda: _env("MC_EMAIL_API", "triggered").strip().lower())
    # How the welcome SMS goes to MC: `mobileconnect` (messageContact, which honours quiet hours
    # through blackoutWindow) or `transactional` (/messaging/v1/sms/messages, which has no
    # blackoutWindow: only with SMS_QUIET_HOURS empty).
    mc_sms_api: str = field(default_factory=lambda: _env("MC_SMS_API", "mobileconnect").strip().lower())
    # Client-side pace of every MC call of this worker, REST and SOAP together (a token bucket,
    # 0 = off). 20/s is 1,200 calls a minute: the two workers of docker-compose.yml together stay
    # under MC's ~2,500 REST and ~2,000 SOAP calls a minute per account (reference §6). A fleet of
    # N workers: the account's budget divided by N.
    mc_max_requests_per_second: float = field(
        default_factory=lambda: _env_float("MC_MAX_REQUESTS_PER_SECOND", 20.0)
    )
    # The whole fleet's pace towards MC (0: off, each worker uses MC_MAX_REQUESTS_PER_SECOND): each
    # worker takes this divided by the members of its consumer group (ops/fleet_share.py).
    mc_fleet_requests_per_second: float = field(
        default_factory=lambda: _env_float("MC_FLEET_REQUESTS_PER_SECOND", 0.0)
    )
    # MC's account-level block (errorcode 50200) stops every MC call of the worker for this long,
    # then one call probes; a block met again doubles the pause (up to 15 min).
    mc_blocked_pause_seconds: float = field(
        default_factory=lambda: _env_float("MC_BLOCKED_PAUSE_SECONDS", 60.0)
    )

    batch_window_seconds: float = field(default_factory=lambda: _env_float("BATCH_WINDOW_SECONDS", 2.0))
    batch_max_rows: int = field(default_factory=lambda: _env_int("BATCH_MAX_ROWS", 1000))
    # MC shows no summary row until an import starts; a file it never picked up is uploaded again.
    import_start_timeout_seconds: float = field(
        default_factory=lambda: _env_float("IMPORT_START_TIMEOUT_SECONDS", 300)
    )
    import_timeout_seconds: float = field(default_factory=lambda: _env_float("IMPORT_TIMEOUT_SECONDS", 1800))
    # A SIGKILLed worker's partitions move after this long; Faust's 60 s default stalls recovery.
    session_timeout_seconds: float = field(
        default_factory=lambda: _env_float("SESSION_TIMEOUT_SECONDS", 10.0)
    )
    send_concurrency: int = field(default_factory=lambda: _env_int("SEND_CONCURRENCY", 256))
    # Classic emails per MC call: up to 50 TriggeredSend objects in one SOAP Create (MC's synchronous
    # batch), formed while MC is busy and never waited for when a sender is idle (mc/batching.py);
    # 1: one REST call per email. MC_CALLS_IN_FLIGHT such calls at once per worker; with
    # SEND_CONCURRENCY 256 that fills ~30 emails a call at load (`make bench`, mc budget phase).
    mc_send_batch: int = field(default_factory=lambda: _env_int("MC_SEND_BATCH", 50))
    mc_calls_in_flight: int = field(default_factory=lambda: _env_int("MC_CALLS_IN_FLIGHT", 2))
    retry_max_attempts: int = field(default_factory=lambda: _env_int("RETRY_MAX_ATTEMPTS", 8))
    retry_base_seconds: float = field(default_factory=lambda: _env_float("RETRY_BASE_SECONDS", 2.0))
    retry_max_seconds: float = field(default_factory=lambda: _env_float("RETRY_MAX_SECONDS", 900.0))
    # How long one MC HTTP request may take; a request MC still holds after it may yet be sent.
    mc_request_timeout_seconds: float = field(
        default_factory=lambda: _env_float("MC_REQUEST_TIMEOUT_SECONDS", 30.0)
    )
    # MC writes a send log row when it sends, which trails the API's answer by as long as its queue
    # holds the message: a send left `pending` by a crash is judged by the log only after this long.
    send_log_lag_seconds: float = field(default_factory=lambda: _env_float("SEND_LOG_LAG_SECONDS", 10.0))
    # The send logging data extensions (MC's SendLog and SMSSendLog templates, plus a Text field
    # `NotificationId`) in which MC records each send with the notification it belongs to.
    mc_send_log_email: str = field(default_factory=lambda: _env("MC_SEND_LOG_EMAIL", "SendLog"))
    mc_send_log_sms: str = field(default_factory=lambda: _env("MC_SEND_LOG_SMS", "SMSSendLog"))
    # SMS quiet hours, members' local time (HH:MM-HH:MM; empty: none), sent with every SMS as
    # MobileConnect's blackoutWindow: MC holds an SMS sent inside and sends it when the window ends.
    # Taiwan's SMS guidance and every notification platform keep marketing texts out of the night.
    sms_quiet_hours: str = field(default_factory=lambda: _env("SMS_QUIET_HOURS", "21:00-09:00"))
    sms_utc_offset: str = field(default_factory=lambda: _env("SMS_UTC_OFFSET", "+08:00"))
    # On a clean stop, how long the sends in flight may take to finish; the rest stay uncommitted.
    stop_grace_seconds: float = field(default_factory=lambda: _env_float("STOP_GRACE_SECONDS", 20.0))
    # A ledger entry `pending` for longer than this is counted, alerted on and settled by the sweep.
    pending_stale_seconds: float = field(default_factory=lambda: _env_float("PENDING_STALE_SECONDS", 300.0))
    # The keyword a welcome SMS subscribes its number to (MobileConnect delivers only to numbers
    # subscribed to the message's code and keyword; a STOPped number stays unsubscribed).
    mc_sms_keyword: str = field(default_factory=lambda: _env("MC_SMS_KEYWORD", "EZTABLE"))
    # MC's feedback (stages/feedback.py): how often the tracking objects and SMS deliveries are read
    # (0: never), how far behind now (MC writes a tracking row a while after its EventDate), and the
    # page size asked of MC (0: MC's own 2,500 rows).
    feedback_interval_seconds: float = field(
        default_factory=lambda: _env_float("FEEDBACK_INTERVAL_SECONDS", 30.0)
    )
    feedback_lag_seconds: float = field(default_factory=lambda: _env_float("FEEDBACK_LAG_SECONDS", 60.0))
    feedback_page_size: int = field(default_factory=lambda: _env_int("FEEDBACK_PAGE_SIZE", 0))
    # MC's own rule for soft bounces (reference §2.6): an address is suppressed once it has
    # SOFT_BOUNCE_LIMIT bounces spanning at least SOFT_BOUNCE_WINDOW_DAYS.
    soft_bounce_limit: int = field(default_factory=lambda: _env_int("SOFT_BOUNCE_LIMIT", 3))
    soft_bounce_window_days: float = field(
        default_factory=lambda: _env_float("SOFT_BOUNCE_WINDOW_DAYS", 15.0)
    )

    # Where MC's Event Notification Service reaches this worker (a URL of its own web server).
    ens_callback_url: str = field(default_factory=lambda: _env("ENS_CALLBACK_URL", ""))
    alert_webhook_url: str = field(default_factory=lambda: _env("ALERT_WEBHOOK_URL", ""))
    # Alert rules (stream_app/alerts.py): how often they run, how often one may repeat, thresholds.
    alert_interval_seconds: float = field(default_factory=lambda: _env_float("ALERT_INTERVAL_SECONDS", 5.0))
    alert_repeat_seconds: float = field(default_factory=lambda: _env_float("ALERT_REPEAT_SECONDS", 300.0))
    alert_failure_threshold: int = field(default_factory=lambda: _env_int("ALERT_FAILURE_THRESHOLD", 10))
    alert_failure_window_seconds: float = field(
        default_factory=lambda: _env_float("ALERT_FAILURE_WINDOW_SECONDS", 60.0)
    )
    alert_dlq_quiet_seconds: float = field(
        default_factory=lambda: _env_float("ALERT_DLQ_QUIET_SECONDS", 120.0)
    )
    alert_import_stuck_seconds: float = field(
        default_factory=lambda: _env_float("ALERT_IMPORT_STUCK_SECONDS", 300.0)
    )
    alert_lag_stall_seconds: float = field(
        default_factory=lambda: _env_float("ALERT_LAG_STALL_SECONDS", 120.0)
    )
    # Start on a faust-streaming/aiokafka/mode version the Faust patches were not verified against
    # (runtime/faust_patches/versions.py): for trying an upgrade, never for production.
    allow_unverified_faust: bool = field(default_factory=lambda: _env("ALLOW_UNVERIFIED_FAUST", "") == "1")
    # json: one object per line (collectors); text: for humans at a terminal.
    log_format: str = field(default_factory=lambda: _env("LOG_FORMAT", "json"))
    log_level: str = field(default_factory=lambda: _env("LOG_LEVEL", "INFO"))

    @property
    def broker_addresses(self) -> list[tuple[str, int]]:
        """Every broker of BROKER_URL (Faust's `kafka://h1:p1;h2:p2`, commas accepted too)."""
        found = []
        for part in self.broker_url.replace(",", ";").split(";"):
            part = part.strip()
            if part:
                parsed = urlparse(part if "://" in part else f"kafka://{part}")
                found.append((parsed.hostname or "127.0.0.1", parsed.port or 9092))
        return found or [("127.0.0.1", 9092)]

    @property
    def broker_host_port(self) -> tuple[str, int]:
        return self.broker_addresses[0]

    @property
    def min_insync_replicas(self) -> int:
        """2 from a factor of 3 (a write survives one broker down, and acks=all waits for two
        copies), else 1 (a smaller cluster could not take writes with one broker down)."""
        return 2 if self.topic_replication_factor >= 3 else 1

    @property
    def heartbeat_interval_seconds(self) -> float:
        """Faust's and the intake's consumers: a third of the session timeout, at most 3 s."""
        return min(3.0, self.session_timeout_seconds / 3)

    @property
    def bootstrap_servers(self) -> str:
        """All of BROKER_URL's brokers: a client started while the first is down still connects."""
        return ",".join(f"{host}:{port}" for host, port in self.broker_addresses)

    @property
    def quiet_hours(self) -> QuietHours | None:
        """SMS_QUIET_HOURS and SMS_UTC_OFFSET, parsed (None: no quiet hours); SettingsError if wrong."""
        try:
            return quiet_hours.parse(self.sms_quiet_hours, self.sms_utc_offset)
        except ValueError as exc:
            raise SettingsError(str(exc)) from None

    @property
    def ens_host_port(self) -> tuple[str, int] | None:
        """ENS_LISTEN as (host, port), or None: the callback is then served on the web port."""
        if not self.ens_listen.strip():
            return None
        host, sep, port = self.ens_listen.strip().rpartition(":")
        if not sep or not port.isdigit():
            raise SettingsError(f"ENS_LISTEN={self.ens_listen!r}: expected host:port")
        return host.strip("[]") or "0.0.0.0", int(port)

    @property
    def callback_url(self) -> str:
        if self.ens_callback_url:
            return self.ens_callback_url
        listen = self.ens_host_port
        host, port = listen if listen else (self.web_host, self.web_port)
        if host in ("0.0.0.0", "::"):  # bound to every interface: this machine answers on loopback
            host = "127.0.0.1"
        return f"http://{host}:{port}/mc/ens/"

    def problems(self) -> list[str]:
        """Why a worker must not start with these settings (empty: it may)."""
        found = []
        if not self.web_auth_token and not is_loopback_host(self.web_host):
            found.append(
                f"WEB_HOST={self.web_host!r} is not a loopback address and WEB_AUTH_TOKEN is unset: the "
                "operator views would be open to the network. Set WEB_AUTH_TOKEN (clients then send "
                "`Authorization: Bearer <token>`) or bind WEB_HOST=127.0.0.1"
            )
        try:
            self.ens_host_port  # noqa: B018 - parsed for its error
        except SettingsError as exc:
            found.append(str(exc))
        try:
            self.quiet_hours  # noqa: B018 - parsed for its error
        except SettingsError as exc:
            found.append(str(exc))
        if self.mc_email_api not in EMAIL_APIS:
            found.append(f"MC_EMAIL_API={self.mc_email_api!r}: expected one of {', '.join(EMAIL_APIS)}")
        if self.mc_sms_api not in SMS_APIS:
            found.append(f"MC_SMS_API={self.mc_sms_api!r}: expected one of {', '.join(SMS_APIS)}")
        elif self.mc_sms_api == "transactional" and self.sms_quiet_hours.strip():
            found.append(
                "MC_SMS_API=transactional cannot keep SMS_QUIET_HOURS: the Transactional Messaging API "
                "has no blackoutWindow (reference §3.2). Set SMS_QUIET_HOURS= (empty) or use "
                "MC_SMS_API=mobileconnect"
            )
        if not 1 <= self.mc_send_batch <= 50:
            found.append("MC_SEND_BATCH must be 1 to 50 (MC takes 50 objects per synchronous Create)")
        if self.mc_calls_in_flight < 1:
            found.append("MC_CALLS_IN_FLIGHT must be 1 or more")
        if self.mc_max_requests_per_second < 0:
            found.append("MC_MAX_REQUESTS_PER_SECOND must be 0 (off) or more")
        if self.mc_blocked_pause_seconds <= 0:
            found.append("MC_BLOCKED_PAUSE_SECONDS must be more than 0")
        problem = plain_http_problem("MC_AUTH_URL", self.mc_auth_url)
        if problem:
            found.append(problem)
        return found

    def check(self) -> None:
        """Raise SettingsError naming every problem (the worker's start-up check)."""
        found = self.problems()
        if found:
            raise SettingsError("refusing to start: " + "; ".join(found))


def load() -> Settings:
    return Settings()
