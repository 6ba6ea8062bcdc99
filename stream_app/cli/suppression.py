"""`python -m stream_app suppression`: an operator takes an address off the suppression list.

  suppression lift someone@example.com --reason "mailbox fixed, ticket OPS-123"

The lift is a record on `email.bounced` (kind `Lifted`, the reason and the operator in it), which the
suppression agent applies like any bounce: the address leaves the `suppressed` table and its soft
bounces are forgotten. Both the command and the agent log it (the address masked): the audit trail.

Lifting here does not reactivate a subscriber MC itself holds (status Held after a hard bounce): MC
keeps refusing sends to it until MC's support or Email Studio reactivates it.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import logging
import logging.config

from aiokafka import AIOKafkaProducer

from stream_app.contract.internal import encode_record
from stream_app.contract.records import EmailBounced
from stream_app.contract.topics import BOUNCED_TOPIC
from stream_app.domain.notifications import mask_email
from stream_app.domain.suppression import LIFTED
from stream_app.ops.logs import logging_config
from stream_app.runtime.outputs import now_rfc3339
from stream_app.settings import Settings, load

log = logging.getLogger("stream_app.suppression.cli")


def lift_record(address: str, reason: str, operator: str) -> EmailBounced:
    return EmailBounced(
        email=address.strip().lower(), kind=LIFTED, at=now_rfc3339(), reason=f"lifted by {operator}: {reason}"
    )


async def lift(settings: Settings, record: EmailBounced) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=settings.bootstrap_servers, acks="all")
    await producer.start()
    try:
        await producer.send_and_wait(BOUNCED_TOPIC, encode_record(record), key=record.email.encode())
    finally:
        await producer.stop()


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m stream_app suppression",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", required=True)
    lifting = commands.add_parser("lift", help="take an address off the suppression list")
    lifting.add_argument("address")
    lifting.add_argument("--reason", required=True, help="why (kept in the record and the logs)")
    args = parser.parse_args(argv)
    address, reason = args.address.strip(), args.reason.strip()
    if "@" not in address:
        parser.error("the address must be an email address")
    if not reason:
        parser.error("--reason must say why")
    settings = load()
    logging.config.dictConfig(logging_config(settings.log_format, settings.log_level))
    operator = getpass.getuser()
    record = lift_record(address, reason, operator)
    asyncio.run(lift(settings, record))
    log.warning(
        "suppression lift requested",
        extra={"email": mask_email(record.email), "operator": operator, "reason": reason[:300]},
    )
    print(f"lift of {mask_email(record.email)} sent to {BOUNCED_TOPIC}; the suppression agent applies it")
    return 0
