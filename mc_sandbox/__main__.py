"""``python -m mc_sandbox``: a local Salesforce Marketing Cloud for development and tests."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .call_budget import BudgetError, parse_per_minute
from .outcomes import parse_domains
from .server import run
from .state import Config

DEFAULT_STATE_DIR = Path(__file__).resolve().parent.parent / ".state" / "mc_sandbox"


def parse_args(argv: list[str] | None = None) -> Config:
    p = argparse.ArgumentParser(prog="python -m mc_sandbox", description=__doc__)
    p.add_argument("--http-port", type=int, default=8780, help="auth, SOAP, REST, SMS, ENS and /_sandbox")
    p.add_argument("--sftp-port", type=int, default=8722)
    p.add_argument("--import-delay", type=float, default=1.0, help="seconds from upload/start to processing")
    p.add_argument(
        "--send-log-delay",
        type=float,
        default=1.0,
        help="seconds from an accepted send to its send time (send log row, tracking event, final status)",
    )
    p.add_argument("--state-dir", type=Path, default=DEFAULT_STATE_DIR)
    p.add_argument("--rate-limit", type=int, default=0, help="requests/s over SOAP+REST+SMS; 0 = off")
    p.add_argument("--message-cap", type=int, default=1_000_000, help="messages kept for inspection")
    p.add_argument("--token-ttl", type=float, default=1200.0, help="OAuth token lifetime in seconds")
    fate = p.add_argument_group("what happens to an email after it was sent, by its address's domain")
    fate.add_argument("--hard-bounce-domains", default="bounce.example", help="comma-separated; '' = none")
    fate.add_argument("--soft-bounce-domains", default="soft.example", help="comma-separated; '' = none")
    fate.add_argument(
        "--unsub-domains", default="unsub.example", help="delivered, then unsubscribed; '' = none"
    )
    budget = p.add_argument_group(
        "MC's API call budget (off unless asked for, see mc_sandbox/call_budget.py)"
    )
    budget.add_argument(
        "--calls-per-minute",
        default="off",
        help="rest=N,soap=N per sliding minute, or mc (rest=2500,soap=2000), or off",
    )
    budget.add_argument(
        "--max-concurrent-calls", type=int, default=0, help="REST calls in flight; 0 = no bound"
    )
    budget.add_argument("--no-call-budget", action="store_true", help="neither limit, whatever else says")
    a = p.parse_args(argv)
    try:
        per_minute = parse_per_minute(a.calls_per_minute)
    except BudgetError as exc:
        p.error(str(exc))
    return Config(
        http_port=a.http_port,
        sftp_port=a.sftp_port,
        import_delay=a.import_delay,
        send_log_delay=a.send_log_delay,
        state_dir=a.state_dir.resolve(),
        rate_limit=a.rate_limit,
        message_cap=a.message_cap,
        token_ttl=a.token_ttl,
        hard_bounce_domains=parse_domains(a.hard_bounce_domains),
        soft_bounce_domains=parse_domains(a.soft_bounce_domains),
        unsub_domains=parse_domains(a.unsub_domains),
        calls_per_minute={} if a.no_call_budget else per_minute,
        max_concurrent_calls=0 if a.no_call_budget else max(0, a.max_concurrent_calls),
    )


def main(argv: list[str] | None = None) -> int:
    return run(parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
