"""The one exception of the embedded Kafka: every module here raises it, so it lives below them all."""

from __future__ import annotations


class BrokerError(RuntimeError):
    """The embedded broker or its tooling could not do what was asked; the message says why."""
