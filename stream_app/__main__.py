"""`python -m stream_app <command>`: the one entry point operators and `make` use."""

from __future__ import annotations

import sys

USAGE = """usage: python -m stream_app COMMAND [ARGS]

commands:
  worker                 one Faust worker against BROKER_URL (several may run side by side)
  dev                    broker + sandbox + one worker in the foreground (what `make run` runs)
  broker                 the embedded Apache Kafka (KRaft) alone, in the foreground
  registry               a schema registry (Apicurio, in-memory) for Avro producers, in the foreground
  create-topics          create every topic with its partition count (idempotent)
  resend                 re-send one event's notifications, or replay a DLQ to its source
  suppression lift ADDRESS --reason TEXT
                         take an address off the suppression list (audited in the log)
  kafka-console-producer | kafka-console-consumer | kafka-topics | kafka-consumer-groups | kafka-configs
                         the Apache Kafka tools from the pinned jars
"""


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in {"-h", "--help", "help"}:
        print(USAGE)
        return 0
    command, rest = args[0], args[1:]
    if command == "worker":
        from stream_app.cli.worker import main as worker_main

        return worker_main(rest)
    if command == "dev":
        from stream_app.cli.devstack import main as dev_main

        return dev_main(rest)
    if command == "broker":
        from stream_app.localkafka.cli import main as broker_main

        return broker_main(rest)
    if command == "registry":
        from stream_app.localkafka.registry_cli import main as registry_main

        return registry_main(rest)
    if command.startswith("kafka-"):
        from stream_app.localkafka.tools import run_tool

        return run_tool(command, rest)
    if command == "create-topics":
        from stream_app.cli.topics import main as topics_main

        return topics_main(rest)
    if command == "suppression":
        from stream_app.cli.suppression import main as suppression_main

        return suppression_main(rest)
    if command == "resend":
        from stream_app.cli.resend import main as resend_main

        return resend_main(rest)
    print(f"unknown command {command!r}\n\n{USAGE}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
