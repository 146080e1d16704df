"""Set-based work: a batch of due threads costs the same statements whatever its size."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import event

from services.notifier.bootstrap import NotifierRuntime
from tests.notifier.conftest import StartNotifier
from tests.notifier.helpers import FakeClock, notifications_of, presence, unread, user


@contextmanager
def statements(runtime: NotifierRuntime) -> Iterator[list[str]]:
    """Every SQL statement the runtime's engine sends while the block runs."""
    seen: list[str] = []

    def record(*args: Any) -> None:
        seen.append(args[2])

    engine = runtime.engine.sync_engine
    event.listen(engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        event.remove(engine, "before_cursor_execute", record)


async def _due_batch(runtime: NotifierRuntime, clock: FakeClock, size: int) -> list[uuid.UUID]:
    """``size`` offline recipients with one unread message each (half of them active), all due."""
    events: list[Any] = []
    ids: list[uuid.UUID] = []
    for n in range(size):
        recipient = user()
        rid = recipient.payload.user_id
        ids.append(rid)
        events += [recipient, unread(rid, uuid.uuid4(), 1)]
        if n % 2:
            events.append(presence(rid, "active", last_seen=clock.now))
    await runtime.consumer.handle_batch(events)
    clock.advance(61)
    return ids


async def test_deciding_a_batch_of_due_threads_takes_as_many_statements_for_two_as_for_forty(
    notifier: StartNotifier, clock: FakeClock
) -> None:
    runtime = await notifier(clock=clock, grace_window_s=60, batch_size=50, active_recheck_s=3600)
    await runtime.scheduler.stop()  # this test drives the passes itself
    await runtime.dispatcher.stop()
    counts = []
    for size in (2, 40):
        ids = await _due_batch(runtime, clock, size)
        with statements(runtime) as seen:
            assert await runtime.scheduler.run_once() == size
        counts.append(len(seen))
        sent = [len(await notifications_of(runtime.sessions, rid)) for rid in ids]
        assert sent == [0 if n % 2 else 1 for n in range(size)]  # the active half is deferred
    assert counts[0] == counts[1] <= 8
