"""Consumer base class: owns prefetch, decoding, the ack decision and dead-lettering.

A subclass names its service and implements ``handle``; the message is acked
only after ``handle`` returned, so its effect must be committed by then. A
payload that does not decode is dead-lettered at once with its reason; a
handler that keeps raising is retried with backoff up to the delivery limit,
then dead-lettered with the last error, and the consumer goes on.
"""

from __future__ import annotations

import asyncio
import contextlib
from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any

from aio_pika.abc import AbstractIncomingMessage, AbstractQueue, AbstractRobustChannel
from pydantic import ValidationError

from shared.events import EventBase, parse_event, parse_event_pack
from shared.logging import get_logger
from shared.messaging.connection import Broker
from shared.messaging.packing import is_packed
from shared.messaging.publisher import Publisher
from shared.messaging.topology import (
    DEAD_LETTER_REASON_HEADER,
    declare_service_queue,
)

log = get_logger(__name__)


def delivery_count(message: AbstractIncomingMessage) -> int:
    """How many times a quorum queue has already delivered this message before."""
    raw = (message.headers or {}).get("x-delivery-count", 0)
    return int(raw) if isinstance(raw, int | str) else 0


class Consumer(ABC):
    """Consume one service's event queue; subclasses only decide what an event does."""

    service: str
    retry_backoff_s: float = 0.2

    def __init__(self, broker: Broker, *, bindings: tuple[str, ...] | None = None) -> None:
        self.broker = broker
        self.bindings = bindings
        self.delivery_limit = broker.topology.delivery_limit
        self._channel: AbstractRobustChannel | None = None
        self._queue: AbstractQueue | None = None
        self._dead_letters: Publisher | None = None

    @abstractmethod
    async def handle(self, event: EventBase) -> None:
        """Apply the event and commit; raising means 'try again later'."""

    async def start(self) -> None:
        self._channel = await self.broker.consumer_channel()
        self._queue = await declare_service_queue(
            self._channel, self.broker.topology, self.service, self.bindings
        )
        self._dead_letters = Publisher(self._channel, self.broker.topology)
        await self._queue.consume(self._on_message)

    async def stop(self) -> None:
        if self._channel is not None and not self._channel.is_closed:
            await self._channel.close()

    async def _on_message(self, message: AbstractIncomingMessage) -> None:
        events = await self._decode(message)
        if events is not None:
            await self._process(message, events)

    async def _decode(self, message: AbstractIncomingMessage) -> list[EventBase] | None:
        """The message's events (one, or a pack); ``None`` once a malformed one is dead-lettered."""
        try:
            if is_packed(message.headers):
                return parse_event_pack(message.body)
            return [parse_event(message.body)]
        except (ValidationError, ValueError) as exc:
            await self._dead_letter(message, f"malformed: {_short(exc)}")
            return None

    async def apply(self, events: Sequence[EventBase]) -> None:
        """Apply one message's events; a pack is retried as a whole, so effects must be idempotent."""
        for event in events:
            await self.handle(event)

    async def _process(self, message: AbstractIncomingMessage, events: Sequence[EventBase]) -> None:
        """Handle one message's events; ack after they returned, else retry with backoff or dead-letter."""
        try:
            await self.apply(events)
        except asyncio.CancelledError:
            with contextlib.suppress(Exception):  # shutting down: the channel may be gone already
                await message.nack(requeue=True)
            raise
        except Exception as exc:
            attempts = delivery_count(message) + 1
            log.warning(
                "handler_failed",
                event_type=events[0].type,  # type: ignore[attr-defined]
                event_id=str(events[0].id),
                events=len(events),
                attempt=attempts,
                error=_short(exc),
            )
            if attempts >= self.delivery_limit:
                await self._dead_letter(message, f"failed {attempts}x: {_short(exc)}")
            else:
                # Back off so a poisoned message is never a hot loop, then let the broker redeliver.
                await asyncio.sleep(self.retry_backoff_s * 2 ** (attempts - 1))
                await message.nack(requeue=True)
            return
        await message.ack()

    async def _dead_letter(self, message: AbstractIncomingMessage, reason: str) -> None:
        """Copy the message to the dead-letter exchange with its reason, then ack the original."""
        assert self._dead_letters is not None
        headers: dict[str, Any] = {
            k: v for k, v in (message.headers or {}).items() if isinstance(v, str | int)
        }
        headers.update(
            {
                DEAD_LETTER_REASON_HEADER: reason[:500],
                "x-original-routing-key": message.routing_key or "",
                "x-original-queue": self.broker.topology.service_queue(self.service),
            }
        )
        await self._dead_letters.publish(
            self.broker.topology.dead_letter_exchange,
            "",
            message.body,
            headers=headers,
            message_id=message.message_id,
        )
        log.error("dead_lettered", routing_key=message.routing_key, reason=reason[:200])
        await message.ack()


class BatchConsumer(Consumer):
    """Handle everything prefetched while the previous batch was in flight in ONE call (one
    transaction), then ack each of its messages: one commit instead of one per event.

    At most one batch is in flight per consumer; deliveries that arrive meanwhile wait and form the
    next batch (group commit), so a quiet queue still handles each event at once. Acks still
    follow the commit. When a batch fails, its messages are retried one by one (a pack of events
    is one message), so only the failing message is retried, backed off and finally
    dead-lettered, and the others are acked.
    """

    max_batch: int = 100
    # How long a batch waits for company before its transaction starts when the queue is not
    # backed up: a consumer whose effects are not urgent trades that much latency for fewer commits.
    linger_s: float = 0.0

    def __init__(self, broker: Broker, *, bindings: tuple[str, ...] | None = None) -> None:
        super().__init__(broker, bindings=bindings)
        self._pending: list[tuple[AbstractIncomingMessage, list[EventBase]]] = []
        self._flushing = False

    @abstractmethod
    async def handle_batch(self, events: Sequence[EventBase]) -> None:
        """Apply the events, in order, in one transaction and commit; raising rejects all of them."""

    async def handle(self, event: EventBase) -> None:
        await self.handle_batch([event])

    async def apply(self, events: Sequence[EventBase]) -> None:
        await self.handle_batch(events)

    async def _on_message(self, message: AbstractIncomingMessage) -> None:
        events = await self._decode(message)
        if events is None:
            return
        self._pending.append((message, events))
        if self._flushing:
            return  # the task flushing now takes it with the next batch
        self._flushing = True
        try:
            if self.linger_s > 0:
                # Only when the queue was idle: deliveries that piled up behind a running batch
                # (a backlog) go next without waiting.
                await asyncio.sleep(self.linger_s)
            while self._pending:
                await self._flush(self._next_batch())
        finally:
            self._flushing = False

    def _next_batch(self) -> list[tuple[AbstractIncomingMessage, list[EventBase]]]:
        """Whole messages, in order, up to ``max_batch`` events (always at least one message)."""
        taken, count = 0, 0
        for _, events in self._pending:
            if taken and count + len(events) > self.max_batch:
                break
            taken += 1
            count += len(events)
        batch = self._pending[:taken]
        del self._pending[:taken]
        return batch

    async def _flush(self, batch: list[tuple[AbstractIncomingMessage, list[EventBase]]]) -> None:
        if len(batch) == 1:
            await self._process(*batch[0])
            return
        try:
            await self.handle_batch([event for _, events in batch for event in events])
        except asyncio.CancelledError:
            for message, _ in batch:
                with contextlib.suppress(Exception):
                    await message.nack(requeue=True)
            raise
        except Exception as exc:
            log.warning("batch_failed", size=len(batch), error=_short(exc))
            await asyncio.gather(*(self._process(message, events) for message, events in batch))
            return
        for message, _ in batch:
            try:
                await message.ack()
            except Exception as exc:  # channel gone (reconnect): redelivered, the inbox dedupes
                log.warning("ack_failed", error=_short(exc))


def _short(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}"
    return text if len(text) <= 300 else text[:297] + "..."
