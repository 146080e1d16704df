"""Retention without a cron: the scheduler loop prunes old rows in small batches, never live work."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from sqlalchemy import func, insert, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.notifier.adapters.tables import attempts, inbox, message_tombstones, notifications
from services.notifier.bootstrap import NotifierRuntime
from services.notifier.domain.model import Policy
from services.notifier.service_layer.digests import DigestSettings
from services.notifier.service_layer.failpoints import Failpoints
from services.notifier.service_layer.ports import system_clock
from services.notifier.service_layer.scheduler import Retention, Scheduler
from shared.db import transaction
from tests.notifier.conftest import StartNotifier
from tests.notifier.helpers import wait_until

OLD = datetime.now(UTC) - timedelta(days=40)


async def _seed(sessions: async_sessionmaker[AsyncSession], *, old_finished: int) -> dict[str, uuid.UUID]:
    """Old finished notifications (each with an attempt), old inbox ids and tombstones, plus rows
    that must stay: old work still queued or being sent, and a fresh finished notification."""
    keep = {"queued": uuid.uuid4(), "sending": uuid.uuid4(), "fresh": uuid.uuid4()}
    rows = [
        {"id": uuid.uuid4(), "status": status, "created_at": OLD}
        for status in ("sent", "failed", "suppressed", "expired")
        for _ in range((old_finished + 3) // 4)
    ][:old_finished]
    rows += [
        {"id": keep["queued"], "status": "queued", "created_at": OLD},
        {"id": keep["sending"], "status": "sending", "created_at": OLD},
        {"id": keep["fresh"], "status": "sent", "created_at": datetime.now(UTC)},
    ]
    async with transaction(sessions) as session:
        for row in rows:
            await session.execute(
                insert(notifications).values(
                    **row,
                    idempotency_key=f"test:{row['id']}",
                    kind="digest",
                    priority=2,
                    channel="email",
                    destination="someone@example.test",
                    lease_until=datetime.now(UTC) + timedelta(days=1) if row["status"] == "sending" else None,
                )
            )
            await session.execute(
                insert(attempts).values(
                    notification_id=row["id"], attempt=1, channel="email", status="sent", at=row["created_at"]
                )
            )
        for _ in range(old_finished):
            await session.execute(insert(inbox).values(event_id=uuid.uuid4(), handled_at=OLD))
            await session.execute(insert(message_tombstones).values(message_id=uuid.uuid4(), deleted_at=OLD))
    return keep


async def _counts(sessions: async_sessionmaker[AsyncSession]) -> dict[str, int]:
    async with sessions() as session:
        return {
            "notifications": (
                await session.execute(select(func.count()).select_from(notifications))
            ).scalar_one(),
            "attempts": (await session.execute(select(func.count()).select_from(attempts))).scalar_one(),
            "old_inbox": (
                await session.execute(
                    select(func.count())
                    .select_from(inbox)
                    .where(inbox.c.handled_at < OLD + timedelta(days=1))
                )
            ).scalar_one(),
            "tombstones": (
                await session.execute(select(func.count()).select_from(message_tombstones))
            ).scalar_one(),
        }


async def _remaining_ids(runtime: NotifierRuntime) -> set[uuid.UUID]:
    async with runtime.sessions() as session:
        return {i for (i,) in (await session.execute(select(notifications.c.id))).all()}


async def test_the_scheduler_loop_prunes_old_finished_rows_and_keeps_live_work(
    notifier: StartNotifier,
) -> None:
    runtime = await notifier(retention_days=30, retention_batch=2, retention_interval_s=0.05)
    await runtime.dispatcher.stop()  # keep the old queued row queued: it must survive as it is
    keep = await _seed(runtime.sessions, old_finished=5)

    async def pruned() -> dict[str, int] | None:
        counts = await _counts(runtime.sessions)
        return counts if counts["notifications"] == 3 and counts["old_inbox"] == 0 else None

    counts = await wait_until(pruned, what="the scheduler loop to prune past retention")
    assert counts == {"notifications": 3, "attempts": 3, "old_inbox": 0, "tombstones": 0}
    assert await _remaining_ids(runtime) == set(keep.values())


async def test_each_retention_pass_deletes_at_most_one_batch_per_table(notifier: StartNotifier) -> None:
    # The running loop keeps a year, so only the pass under test (30 days, 2 rows) prunes here.
    runtime = await notifier(retention_days=365)
    await runtime.dispatcher.stop()
    scheduler = Scheduler(
        sessions=runtime.sessions,
        policy=Policy(),
        digest=DigestSettings("http://localhost:3000", "http://localhost:3000/settings"),
        clock=system_clock,
        failpoints=Failpoints(None),
        on_queued=lambda: None,
        retention=Retention(keep=timedelta(days=30), batch=2),
    )
    keep = await _seed(runtime.sessions, old_finished=5)

    assert await scheduler.prune_once() == 2
    assert (await _counts(runtime.sessions))["notifications"] == 5 + 3 - 2
    assert await scheduler.prune_once() == 2
    assert await scheduler.prune_once() == 1
    assert await scheduler.prune_once() == 0
    assert await _remaining_ids(runtime) == set(keep.values())
    assert (await _counts(runtime.sessions))["attempts"] == 3
