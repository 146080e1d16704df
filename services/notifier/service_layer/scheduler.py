"""Claim due pending threads and decide at send time: one digest, a final suppression, or a deferral.

The same loop also prunes what is past retention, a bounded batch at a time (no cron needed).
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.engine import RowMapping
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.notifier.adapters import due_threads as due
from services.notifier.adapters import repository as repo
from services.notifier.domain.model import Decision, Defer, Policy, Recipient, Suppress, Thread
from services.notifier.domain.rules import decide, effective_level
from services.notifier.metrics import SUPPRESSED
from services.notifier.service_layer.digests import DigestSettings, digest_content
from services.notifier.service_layer.events import PRIORITY_DIGEST
from services.notifier.service_layer.failpoints import AFTER_DECISION, Failpoints
from services.notifier.service_layer.ports import Clock
from shared.db import transaction
from shared.logging import get_logger

log = get_logger(__name__)


@dataclass(frozen=True)
class Retention:
    """Finished notifications, their attempts, handled event ids and tombstones older than
    ``keep`` are deleted, ``batch`` rows per table per pass, a pass every ``every_s`` seconds
    (right away again while a pass found a full batch)."""

    keep: timedelta
    batch: int = 500
    every_s: float = 60.0


class Scheduler:
    """Runs in every replica; ``FOR UPDATE SKIP LOCKED`` keeps them off each other's rows."""

    def __init__(
        self,
        *,
        sessions: async_sessionmaker[AsyncSession],
        policy: Policy,
        digest: DigestSettings,
        clock: Clock,
        failpoints: Failpoints,
        on_queued: Callable[[], None],
        poll_s: float = 1.0,
        batch_size: int = 50,
        retention: Retention | None = None,
        min_wait_s: float = 0.05,
    ) -> None:
        self.sessions = sessions
        self.policy = policy
        self.digest = digest
        self.clock = clock
        self.failpoints = failpoints
        self.on_queued = on_queued
        self.poll_s = poll_s
        self.batch_size = batch_size
        self.retention = retention
        self.min_wait_s = min_wait_s
        self._next_due: datetime | None = None  # earliest due_at seen by the last pass
        self._next_prune = 0.0  # loop.time() of the next retention pass
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def wake(self) -> None:
        self._wake.set()

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="notifier-scheduler")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        while True:
            try:
                while await self.run_once() >= self.batch_size:
                    pass
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.exception("scheduler_failed", error=type(exc).__name__)
            await self._maybe_prune()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.next_wait_s())
            self._wake.clear()

    def next_wait_s(self) -> float:
        """Sleep until the next thread falls due rather than a whole poll (a digest then leaves
        right after its grace window), but at least ``min_wait_s`` so that a steady stream of
        due threads is still decided in batches, and at most ``poll_s``."""
        if self._next_due is None:
            return self.poll_s
        until = (self._next_due - self.clock()).total_seconds()
        return min(self.poll_s, max(self.min_wait_s, until))

    async def _maybe_prune(self) -> None:
        """One bounded retention pass when one is due; never lets a failure stop the loop."""
        loop = asyncio.get_running_loop()
        if self.retention is None or loop.time() < self._next_prune:
            return
        try:
            full = await self.prune_once() >= self.retention.batch
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.warning("retention_failed", error=type(exc).__name__)
            full = False
        self._next_prune = loop.time() + (0.0 if full else self.retention.every_s)

    async def prune_once(self) -> int:
        """Delete at most one batch per table of what is past retention; returns the largest count."""
        if self.retention is None:
            return 0
        before = self.clock() - self.retention.keep
        limit = self.retention.batch
        async with transaction(self.sessions) as session:
            counts = (
                await repo.prune_finished_notifications(session=session, before=before, limit=limit),
                await repo.prune_inbox(session=session, before=before, limit=limit),
                await repo.prune_tombstones(session=session, before=before, limit=limit),
            )
        if any(counts):
            log.info("retention_pruned", notifications=counts[0], inbox=counts[1], tombstones=counts[2])
        return max(counts)

    async def run_once(self) -> int:
        """Decide every due thread of one batch in one transaction; returns how many were due."""
        now = self.clock()
        queued = 0
        async with transaction(self.sessions) as session:
            rows = await repo.claim_due_threads(session=session, now=now, limit=self.batch_size)
            if rows:
                queued = await self._decide_batch(session, rows, now)
            # After this pass's own updates: when to look again.
            self._next_due = await repo.next_due_at(session=session)
        if queued:
            self.failpoints.hit(AFTER_DECISION)
            self.on_queued()
        return len(rows)

    async def _decide_batch(self, session: AsyncSession, rows: Sequence[RowMapping], now: datetime) -> int:
        """Decide the claimed threads as a set: a fixed number of statements for the whole batch.

        Returns how many digests were queued. Threads of a recipient whose profile or presence
        is changing right now are left as they are, for the next pass.
        """
        locked = await due.try_lock_recipients(session=session, user_ids=(r["recipient_id"] for r in rows))
        rows = [r for r in rows if r["recipient_id"] in locked]
        if not rows:
            return 0
        profiles = await due.load_profiles(session=session, user_ids=locked)
        unread = await due.load_unread(
            session=session, pairs=[(r["recipient_id"], r["conversation_id"]) for r in rows]
        )
        plans: list[_Plan] = []
        for row in rows:
            thread = repo.thread_from(row, unread.get((row["recipient_id"], row["conversation_id"]), ()))
            recipient, presence = profiles.get(row["recipient_id"], (None, None))
            decision = decide(
                now=now, recipient=recipient, presence=presence, thread=thread, policy=self.policy
            )
            plans.append(_Plan(row, thread, decision, self._notification(thread, recipient, decision, now)))
        inserted = await due.insert_notifications(
            session=session, rows=[p.notification for p in plans if p.notification is not None]
        )
        updates: list[dict[str, Any]] = []
        queued = 0
        for plan in plans:
            state = due.thread_state(plan.row)
            decision = plan.decision
            if isinstance(decision, Defer):
                SUPPRESSED.labels(decision.reason).inc()
                state.update(due_at=decision.until, defer_reason=decision.reason)
            else:
                state.update(due_at=None, defer_reason=None, opened_at=None)
                if isinstance(decision, Suppress):
                    SUPPRESSED.labels(decision.reason).inc()
                elif plan.notification is not None and plan.notification["idempotency_key"] in inserted:
                    # A new digest reserves the cooldown; one decided before changes nothing else.
                    thread = plan.thread
                    level = effective_level(thread.cooldown_level, thread.last_notified_at, now, self.policy)
                    state.update(
                        last_notified_at=now,
                        notified_seq=plan.notification["max_seq"],
                        cooldown_level=level + 1,
                    )
                    queued += 1
            updates.append(state)
        await due.update_threads(session=session, rows=updates)
        return queued

    def _notification(
        self, thread: Thread, recipient: Recipient | None, decision: Decision, now: datetime
    ) -> dict[str, Any] | None:
        """The ``notifications`` row a decision records: a queued digest, a suppression, or none."""
        recipient_id, conversation_id = thread.recipient_id, thread.conversation_id
        common = {
            "id": uuid.uuid4(),
            "kind": "digest",
            "priority": PRIORITY_DIGEST,
            "recipient_id": recipient_id,
            "conversation_id": conversation_id,
            "created_at": now,
        }
        if isinstance(decision, Defer):
            return None
        if isinstance(decision, Suppress):
            max_seq = max((m.seq for m in thread.unread), default=thread.read_seq)
            return common | {
                "idempotency_key": f"digest:{recipient_id}:{conversation_id}:{max_seq}:{decision.reason}",
                "message_count": len(thread.visible_unread()),
                "max_seq": max_seq,
                "status": "suppressed",
                "reason": decision.reason,
            }
        assert recipient is not None
        sent_seq = max(m.seq for m in decision.messages)
        content = digest_content(
            channel=decision.channel,
            recipient=recipient,
            conversation_id=conversation_id,
            messages=decision.messages,
            settings=self.digest,
        )
        return (
            common
            | content
            | {
                "idempotency_key": f"digest:{recipient_id}:{conversation_id}:{sent_seq}",
                "channel": decision.channel,
                "destination": decision.destination,
                "message_count": len(decision.messages),
                "max_seq": sent_seq,
                "first_message_at": min(m.created_at for m in decision.messages),
                "status": "queued",
                # What the thread's cooldown was before this digest: given back if it never arrives.
                "prior_notified_at": thread.last_notified_at,
                "prior_notified_seq": thread.notified_seq,
                "prior_cooldown_level": thread.cooldown_level,
            }
        )


@dataclass(frozen=True)
class _Plan:
    """One claimed thread: its locked row, what the rules decided and the row that records it."""

    row: RowMapping
    thread: Thread
    decision: Decision
    notification: dict[str, Any] | None
