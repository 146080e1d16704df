"""Consumers: failures are retried a bounded number of times, then dead-lettered with a reason."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence

import pytest
from aio_pika.abc import AbstractIncomingMessage

from shared.events import EventBase, MessageRead, MessageReadPayload
from shared.messaging.connection import Broker
from shared.messaging.consumer import BatchConsumer, Consumer
from shared.messaging.packing import PACKED_HEADER, pack
from shared.messaging.topology import DEAD_LETTER_REASON_HEADER

pytestmark = pytest.mark.timeout(60)


class RecordingConsumer(Consumer):
    service = "kernel"
    retry_backoff_s = 0.01

    def __init__(self, broker: Broker, poison_seq: int) -> None:
        super().__init__(broker, bindings=("message.read",))
        self.poison_seq = poison_seq
        self.attempts: dict[int, int] = {}
        self.handled: list[int] = []

    async def handle(self, event: EventBase) -> None:
        assert isinstance(event, MessageRead)
        seq = event.payload.seq
        self.attempts[seq] = self.attempts.get(seq, 0) + 1
        if seq == self.poison_seq:
            raise RuntimeError("handler keeps failing")
        self.handled.append(seq)


async def dead_letters(broker: Broker) -> asyncio.Queue[AbstractIncomingMessage]:
    channel = await broker.consumer_channel()
    queue = await channel.get_queue(broker.topology.dead_letter_queue)
    received: asyncio.Queue[AbstractIncomingMessage] = asyncio.Queue()

    async def on_message(message: AbstractIncomingMessage) -> None:
        await received.put(message)
        await message.ack()

    await queue.consume(on_message)
    return received


def read(seq: int) -> MessageRead:
    return MessageRead(
        payload=MessageReadPayload(conversation_id=uuid.uuid4(), reader_id=uuid.uuid4(), seq=seq)
    )


async def test_failing_handler_is_dead_lettered_after_the_delivery_limit_and_consumer_goes_on(
    broker: Broker,
) -> None:
    consumer = RecordingConsumer(broker, poison_seq=1)
    await consumer.start()
    dead = await dead_letters(broker)
    await broker.publisher.publish_event(read(1))
    await broker.publisher.publish_event(read(2))

    message = await asyncio.wait_for(dead.get(), 15)
    assert (message.headers or {})[DEAD_LETTER_REASON_HEADER].startswith("failed 3x: RuntimeError")
    assert (message.headers or {})["x-original-routing-key"] == "message.read"
    assert consumer.attempts[1] == broker.topology.delivery_limit == 3

    await broker.publisher.publish_event(read(3))
    for _ in range(500):
        if consumer.handled == [2, 3] or consumer.handled == [3, 2]:
            break
        await asyncio.sleep(0.01)
    assert sorted(consumer.handled) == [2, 3]
    await consumer.stop()


async def test_malformed_payload_is_dead_lettered_at_once_with_its_reason(broker: Broker) -> None:
    consumer = RecordingConsumer(broker, poison_seq=-1)
    await consumer.start()
    dead = await dead_letters(broker)
    await broker.publisher.publish(broker.topology.events_exchange, "message.read", b"{not json")

    message = await asyncio.wait_for(dead.get(), 10)
    assert message.body == b"{not json"
    assert (message.headers or {})[DEAD_LETTER_REASON_HEADER].startswith("malformed:")
    assert consumer.attempts == {}

    await broker.publisher.publish_event(read(5))
    for _ in range(500):
        if consumer.handled:
            break
        await asyncio.sleep(0.01)
    assert consumer.handled == [5]
    await consumer.stop()


class RecordingBatchConsumer(BatchConsumer):
    """Each ``handle_batch`` call stands for one transaction; it is slow so deliveries pile up."""

    service = "kernel"
    retry_backoff_s = 0.01
    delay_s = 0.05

    def __init__(self, broker: Broker, poison_seq: int) -> None:
        super().__init__(broker, bindings=("message.read",))
        self.poison_seq = poison_seq
        self.calls: list[list[int]] = []
        self.committed: list[int] = []

    async def handle_batch(self, events: Sequence[EventBase]) -> None:
        seqs = [event.payload.seq for event in events if isinstance(event, MessageRead)]
        self.calls.append(seqs)
        await asyncio.sleep(self.delay_s)
        if self.poison_seq in seqs:
            raise RuntimeError("handler keeps failing")
        self.committed.extend(seqs)


async def test_batch_consumer_commits_prefetched_events_together_and_dead_letters_only_the_poison(
    broker: Broker,
) -> None:
    consumer = RecordingBatchConsumer(broker, poison_seq=27)
    await consumer.start()
    dead = await dead_letters(broker)
    for seq in range(1, 21):
        await broker.publisher.publish_event(read(seq))
    for _ in range(500):
        if len(consumer.committed) >= 20:
            break
        await asyncio.sleep(0.01)
    assert consumer.committed == list(range(1, 21))  # in delivery order
    # Fewer transactions than events: what arrived during one batch went into the next.
    assert len(consumer.calls) < 20

    for seq in range(21, 31):
        await broker.publisher.publish_event(read(seq))
    message = await asyncio.wait_for(dead.get(), 15)
    assert (message.headers or {})[DEAD_LETTER_REASON_HEADER].startswith("failed 3x: RuntimeError")
    for _ in range(500):
        if len(consumer.committed) >= 29:
            break
        await asyncio.sleep(0.01)
    assert sorted(consumer.committed) == [s for s in range(1, 31) if s != 27]

    # Everything was acked (or dead-lettered): after a restart nothing is delivered again.
    await consumer.stop()
    again = RecordingBatchConsumer(broker, poison_seq=-1)
    await again.start()
    await broker.publisher.publish_event(read(99))
    for _ in range(500):
        if again.committed:
            break
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.2)
    assert again.committed == [99]
    await again.stop()


async def test_a_lingering_batch_consumer_groups_a_trickle_of_events_into_fewer_commits(
    broker: Broker,
) -> None:
    consumer = RecordingBatchConsumer(broker, poison_seq=-1)
    consumer.linger_s = 0.3  # longer than publishing the trickle below takes
    consumer.delay_s = 0  # a fast handler: without the linger every event would be its own batch
    await consumer.start()
    for seq in range(1, 11):
        await broker.publisher.publish_event(read(seq))
    for _ in range(500):
        if len(consumer.committed) >= 10:
            break
        await asyncio.sleep(0.01)
    assert consumer.committed == list(range(1, 11))
    assert len(consumer.calls) < 10
    await consumer.stop()


async def publish_pack(broker: Broker, events: list[MessageRead]) -> None:
    await broker.publisher.publish(
        broker.topology.events_exchange,
        "message.read",
        pack([event.to_json() for event in events]),
        headers={PACKED_HEADER: len(events)},
    )


async def test_a_packed_message_is_handled_as_its_events_in_order_and_acked_once(broker: Broker) -> None:
    consumer = RecordingBatchConsumer(broker, poison_seq=-1)
    consumer.delay_s = 0
    await consumer.start()
    await publish_pack(broker, [read(seq) for seq in range(1, 6)])
    await broker.publisher.publish_event(read(6))
    for _ in range(500):
        if len(consumer.committed) >= 6:
            break
        await asyncio.sleep(0.01)
    assert consumer.committed == [1, 2, 3, 4, 5, 6]
    await consumer.stop()

    again = RecordingBatchConsumer(broker, poison_seq=-1)  # nothing left unacked to redeliver
    await again.start()
    await asyncio.sleep(0.3)
    assert again.committed == []
    await again.stop()


async def test_a_pack_holding_a_malformed_event_is_dead_lettered_whole_at_once(broker: Broker) -> None:
    consumer = RecordingBatchConsumer(broker, poison_seq=-1)
    await consumer.start()
    dead = await dead_letters(broker)
    body = pack([read(1).to_json(), b'{"type": "message.read", "version": 1}'])
    await broker.publisher.publish(
        broker.topology.events_exchange, "message.read", body, headers={PACKED_HEADER: 2}
    )
    message = await asyncio.wait_for(dead.get(), 10)
    assert message.body == body
    assert (message.headers or {})[DEAD_LETTER_REASON_HEADER].startswith("malformed:")
    assert consumer.calls == []
    await consumer.stop()
