"""surface.py: every name of Faust, aiokafka and mode the patches use exists on the installed
libraries' real objects (each Protocol is runtime-checkable: isinstance checks every member)."""

from __future__ import annotations

from aiokafka import AIOKafkaConsumer
from aiokafka.consumer.fetcher import FetchResult
from aiokafka.consumer.subscription_state import SubscriptionState
from aiokafka.structs import TopicPartition
from faust.types import Message

from stream_app.runtime.faust_patches import surface

from .fakes import faust_app


async def test_faust_s_objects_have_every_name_the_patches_use() -> None:
    app = faust_app()
    consumer = app.consumer
    topic = app.topic("stream_app.intents")
    assert isinstance(app, surface.AppLike)
    assert isinstance(app.conf, surface.ConfLike)
    assert isinstance(app.tables, surface.TablesLike)
    assert isinstance(app.topics, surface.ConductorLike)
    assert isinstance(app.producer, surface.ProducerLike)
    assert isinstance(app.producer.buffer, surface.ProducerBufferLike)
    assert isinstance(app.flow_control, surface.FlowControlLike)
    assert isinstance(consumer, surface.ConsumerLike)
    assert isinstance(consumer, surface.ServiceLike)  # mode's Service (the Fetcher is one too)
    assert isinstance(consumer.diag, surface.DiagLike)
    assert isinstance(consumer.transport, surface.TransportLike)
    assert isinstance(consumer._thread, surface.ConsumerThreadLike)
    assert isinstance(topic, surface.TopicLike)
    assert isinstance(topic, surface.ChannelLike)
    assert isinstance(topic.queue, surface.QueueLike)
    message = Message("stream_app.intents", 0, 5, 0.0, 0, None, None, b"{}", None)
    assert isinstance(message, surface.MessageLike)


async def test_aiokafka_s_objects_have_every_name_the_patches_use() -> None:
    kafka = AIOKafkaConsumer(bootstrap_servers="127.0.0.1:1")
    assert isinstance(kafka, surface.KafkaConsumerLike)
    state = SubscriptionState()
    tp = TopicPartition("stream_app.intents", 0)
    state.assign_from_user({tp})
    state.seek(tp, 5)
    assert isinstance(state, surface.SubscriptionStateLike)
    assert isinstance(state.subscription, surface.SubscriptionLike)
    assignment = state.subscription.assignment
    assert isinstance(assignment, surface.AssignmentLike)
    assert isinstance(assignment.state_value(tp), surface.PartitionStateLike)
    result = FetchResult(tp, assignment=assignment, partition_records=iter(()), backoff=0)
    assert isinstance(result, surface.FetchResultLike)
