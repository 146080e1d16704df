"""The notifier's event queue: one transaction per batch of prefetched events, deduplicated by the inbox."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import timedelta

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.notifier.adapters.repository import record_unreads
from services.notifier.adapters.tables import inbox
from services.notifier.domain.model import Window
from services.notifier.service_layer.events import apply_event
from services.notifier.service_layer.ports import Clock
from shared.db import transaction
from shared.events import EventBase, MessageUnread, MessageUnreadPayload
from shared.inbox import first_deliveries
from shared.messaging.connection import Broker
from shared.messaging.consumer import BatchConsumer


class NotifierConsumer(BatchConsumer):
    service = "notifier"
    # No linger of its own: the store's relay already gathers a moment's message events into one
    # pack per type (``STORE_OUTBOX_EVENT_LINGER_S``), and a busy queue batches by itself.

    def __init__(
        self,
        broker: Broker,
        *,
        sessions: async_sessionmaker[AsyncSession],
        window: Window,
        clock: Clock,
        wake_scheduler: Callable[[], None],
        wake_dispatcher: Callable[[], None],
    ) -> None:
        super().__init__(broker)
        self.sessions = sessions
        self.window = window
        self.clock = clock
        self.wake_scheduler = wake_scheduler
        self.wake_dispatcher = wake_dispatcher

    async def handle_batch(self, events: Sequence[EventBase]) -> None:
        """Apply the events in delivery order in one transaction; replays are skipped by the inbox."""
        wake_scheduler = wake_dispatcher = False
        async with transaction(self.sessions) as session:
            fresh = await first_deliveries(session, inbox, [event.id for event in events])
            unread: list[MessageUnreadPayload] = []  # a run of consecutive message.unread
            for event in events:
                if event.id not in fresh:
                    continue
                fresh.discard(event.id)  # the same event twice in one batch is applied once
                if isinstance(event, MessageUnread):
                    unread.append(event.payload)
                    continue
                wake_scheduler |= await self._record_unread(session, unread)
                unread = []
                effect = await apply_event(session=session, event=event, now=self.clock(), window=self.window)
                wake_scheduler |= effect.wake_scheduler
                wake_dispatcher |= effect.wake_dispatcher
            wake_scheduler |= await self._record_unread(session, unread)
        # Only after the commit: the workers must see what these events changed.
        if wake_dispatcher:
            self.wake_dispatcher()
        if wake_scheduler:
            self.wake_scheduler()

    async def _record_unread(self, session: AsyncSession, unread: list[MessageUnreadPayload]) -> bool:
        """The hot event, set-based: a run of them costs a few statements, not five each."""
        if not unread:
            return False
        opened = await record_unreads(
            session=session,
            messages=unread,
            now=self.clock(),
            window=self.window,
        )
        return opened and self.window.grace <= timedelta(0)
