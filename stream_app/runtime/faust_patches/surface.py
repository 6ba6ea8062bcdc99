"""What the patches touch of Faust, aiokafka and mode, private names included, as Protocols.

Faust's `Consumer`, `Conductor`, `AIOKafkaConsumerThread` and `Topic`, and aiokafka's consumer,
subscription state and `FetchResult`, are typed here only as far as the patches read or write them:
this module is the list of what an upgrade must keep (`tests/unit/faust_patches/test_surface.py`
checks every member against the installed libraries' real objects). aiokafka ships no type
information, so without these Protocols every access below would be an unchecked `Any`.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, MutableMapping
from typing import Any, Protocol, TypeVar, runtime_checkable

from faust.types import TP

T = TypeVar("T")


@runtime_checkable
class MessageLike(Protocol):
    """faust.types.Message, as the drain loop and the checks read it."""

    @property
    def tp(self) -> TP: ...
    @property
    def topic(self) -> str: ...
    @property
    def offset(self) -> int: ...


@runtime_checkable
class QueueLike(Protocol):
    def qsize(self) -> int: ...
    def full(self) -> bool: ...


@runtime_checkable
class ChannelLike(Protocol):
    """A Faust channel (a stream's source): its queue of records handed on and not yet taken."""

    @property
    def queue(self) -> QueueLike: ...


@runtime_checkable
class ConductorLike(Protocol):
    """faust.transport.conductor.Conductor (`app.topics`)."""

    _topic_name_index: Mapping[str, Iterable[ChannelLike]]
    _tp_to_callback_lock: asyncio.Lock

    def acks_enabled_for(self, topic: str) -> bool: ...


@runtime_checkable
class ProducerBufferLike(Protocol):
    @property
    def size(self) -> int: ...
    @property
    def max_messages(self) -> int: ...


@runtime_checkable
class ProducerLike(Protocol):
    @property
    def started(self) -> bool: ...
    @property
    def buffer(self) -> ProducerBufferLike: ...


@runtime_checkable
class FlowControlLike(Protocol):
    def is_active(self) -> bool: ...


@runtime_checkable
class ConfLike(Protocol):
    @property
    def consumer_auto_offset_reset(self) -> str: ...


@runtime_checkable
class TablesLike(Protocol):
    @property
    def changelog_topics(self) -> set[str]: ...


@runtime_checkable
class AppLike(Protocol):
    """faust.App."""

    @property
    def rebalancing(self) -> bool: ...
    @property
    def in_transaction(self) -> bool: ...
    @property
    def should_stop(self) -> bool: ...
    @property
    def conf(self) -> ConfLike: ...
    @property
    def tables(self) -> TablesLike: ...
    @property
    def topics(self) -> ConductorLike: ...
    @property
    def producer(self) -> ProducerLike: ...
    @property
    def flow_control(self) -> FlowControlLike: ...


@runtime_checkable
class PartitionStateLike(Protocol):
    """aiokafka's TopicPartitionState: its position is the next offset it hands out."""

    @property
    def has_valid_position(self) -> bool: ...
    @property
    def position(self) -> int: ...


@runtime_checkable
class AssignmentLike(Protocol):
    """aiokafka's Assignment."""

    @property
    def tps(self) -> Iterable[TP]: ...
    def state_value(self, tp: TP) -> PartitionStateLike | None: ...


@runtime_checkable
class SubscriptionLike(Protocol):
    @property
    def assignment(self) -> AssignmentLike | None: ...


@runtime_checkable
class SubscriptionStateLike(Protocol):
    """aiokafka's SubscriptionState: `.subscription` is None before a subscription."""

    @property
    def subscription(self) -> SubscriptionLike | None: ...


@runtime_checkable
class KafkaConsumerLike(Protocol):
    """aiokafka.AIOKafkaConsumer, the client under Faust's consumer thread."""

    _subscription: SubscriptionStateLike

    async def seek_to_committed(self) -> Mapping[TP, int | None]: ...
    def seek(self, partition: TP, offset: int) -> None: ...
    async def beginning_offsets(self, partitions: list[TP]) -> Mapping[TP, int]: ...


@runtime_checkable
class ConsumerThreadLike(Protocol):
    """faust.transport.drivers.aiokafka.AIOKafkaConsumerThread."""

    @property
    def consumer(self) -> ConsumerLike: ...
    def _ensure_consumer(self) -> KafkaConsumerLike: ...
    async def call_thread(self, fun: Callable[[], Awaitable[T]]) -> T: ...


@runtime_checkable
class EventLike(Protocol):
    def is_set(self) -> bool: ...


@runtime_checkable
class DiagLike(Protocol):
    def set_flag(self, flag: str) -> None: ...
    def unset_flag(self, flag: str) -> None: ...


@runtime_checkable
class TransportLike(Protocol):
    @property
    def app(self) -> AppLike: ...


@runtime_checkable
class ServiceLike(Protocol):
    """A mode Service, as far as its stop is read (the Fetcher the drain loop runs for)."""

    _stopped: EventLike


@runtime_checkable
class ConsumerLike(Protocol):
    """faust.transport.drivers.aiokafka.Consumer (Faust's base Consumer and ThreadDelegateConsumer)."""

    app: AppLike
    transport: TransportLike
    callback: Callable[[MessageLike], Awaitable[None]]
    suspend_flow: asyncio.Event
    diag: DiagLike
    consumer_stopped_errors: tuple[type[BaseException], ...]
    _stopped: EventLike
    _thread: ConsumerThreadLike
    _acked: MutableMapping[TP, list[int]]
    _acked_index: MutableMapping[TP, set[int]]
    _committed_offset: MutableMapping[TP, int | None]
    _read_offset: MutableMapping[TP, int | None]
    _unacked_messages: Iterable[MessageLike]
    _commit_every: int | None
    _n_acked: int

    @property
    def should_stop(self) -> bool: ...
    def getmany(self, timeout: float) -> AsyncIterator[tuple[TP, MessageLike]]: ...
    async def seek(self, partition: TP, offset: int) -> None: ...
    async def earliest_offsets(self, *partitions: TP) -> Mapping[TP, int]: ...
    async def commit(self) -> bool: ...
    async def sleep(self, n: float) -> None: ...
    async def wait_first(self, *coros: Awaitable[Any]) -> object: ...
    async def _add_gap(self, tp: TP, offset_from: int, offset_to: int) -> None: ...


@runtime_checkable
class FetchResultLike(Protocol):
    """aiokafka.consumer.fetcher.FetchResult: one partition's chunk of a fetch."""

    _topic_partition: TP
    _assignment: AssignmentLike


@runtime_checkable
class TopicLike(Protocol):
    """faust.Topic, as its send path reads it."""

    @property
    def app(self) -> AppLike: ...
