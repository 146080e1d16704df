"""The notifier's event queue: one transaction per event, deduplicated by the inbox."""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.notifier.adapters.tables import inbox
from services.notifier.service_layer.events import Window, apply_event
from services.notifier.service_layer.ports import Clock
from shared.db import transaction
from shared.events import EventBase
from shared.inbox import first_delivery
from shared.messaging.connection import Broker
from shared.messaging.consumer import Consumer


class NotifierConsumer(Consumer):
    service = "notifier"

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

    async def handle(self, event: EventBase) -> None:
        async with transaction(self.sessions) as session:
            if not await first_delivery(session, inbox, event.id):
                return
            effect = await apply_event(session=session, event=event, now=self.clock(), window=self.window)
        # Only after the commit: the workers must see what this event changed.
        if effect.wake_dispatcher:
            self.wake_dispatcher()
        if effect.wake_scheduler:
            self.wake_scheduler()
