"""Deliver decided notifications: lease, send with bounded retries, record every attempt.

The decision row (status ``queued``) is committed before anything is sent. A
sender leases it (``sending`` until ``lease_until``), calls the provider and
records the outcome. A crash before the provider call leaves a lease that
expires and the work is sent once by whoever claims it next; the only window
that can repeat a send is between the provider's acceptance and our commit,
and emails carry a fixed Message-ID across such a repeat.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Sequence
from datetime import datetime, timedelta

from sqlalchemy.engine import RowMapping
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception_type,
    stop_after_attempt,
    wait_exponential_jitter,
)

from services.notifier.adapters import repository as repo
from services.notifier.metrics import FAILED, MESSAGE_TO_SEND, RETRIED, SENT, SUPPRESSED
from services.notifier.service_layer.failpoints import AFTER_SEND, BEFORE_SEND, Failpoints
from services.notifier.service_layer.ports import (
    Clock,
    EmailSender,
    OutgoingEmail,
    OutgoingSms,
    PermanentSendError,
    SmsSender,
    TransientSendError,
)
from shared.db import transaction
from shared.logging import get_logger

log = get_logger(__name__)

SECRET_KINDS = frozenset({"otp", "email_verification", "password_reset"})


class Expired(Exception):
    """The notification's content (an OTP, a link) is no longer valid: never send it."""


class Dispatcher:
    def __init__(
        self,
        *,
        sessions: async_sessionmaker[AsyncSession],
        email: EmailSender,
        sms: SmsSender,
        clock: Clock,
        failpoints: Failpoints,
        mail_domain: str,
        unsubscribe: str,
        lease_s: float = 120.0,
        attempts: int = 4,
        retry_initial_s: float = 0.5,
        retry_max_s: float = 10.0,
        concurrency: int = 8,
        poll_s: float = 1.0,
        shutdown_grace_s: float = 5.0,
    ) -> None:
        self.sessions = sessions
        self.email = email
        self.sms = sms
        self.clock = clock
        self.failpoints = failpoints
        self.mail_domain = mail_domain
        self.unsubscribe = unsubscribe
        self.lease = timedelta(seconds=lease_s)
        self.attempts = attempts
        self.retry_initial_s = retry_initial_s
        self.retry_max_s = retry_max_s
        self.concurrency = concurrency
        self.poll_s = poll_s
        self.shutdown_grace_s = shutdown_grace_s
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._inflight: set[asyncio.Task[None]] = set()

    def wake(self) -> None:
        self._wake.set()

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="notifier-dispatcher")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._inflight:
            # Let sends in progress finish and be recorded: cancelling one mid-call would widen
            # the ambiguous window. Whatever is still running then is re-sent after its lease.
            await asyncio.wait(set(self._inflight), timeout=self.shutdown_grace_s)
        for task in list(self._inflight):
            task.cancel()
        await asyncio.gather(*self._inflight, return_exceptions=True)

    async def _run(self) -> None:
        while True:
            self._wake.clear()
            try:
                if await self._fill():
                    continue  # there may be more work right away
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.exception("dispatcher_failed", error=type(exc).__name__)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.poll_s)

    async def _fill(self) -> bool:
        """Claim up to the free slots (OTPs even when full) and start them; True if slots filled up."""
        free = self.concurrency - len(self._inflight)
        rows = await self._claim(max(free, 1), urgent_only=free <= 0)
        if rows:
            self.failpoints.hit(BEFORE_SEND)
        for row in rows:
            task = asyncio.create_task(self.deliver(row), name=f"send-{row['id']}")
            self._inflight.add(task)
            task.add_done_callback(self._done)
        return free > 0 and len(rows) >= free

    def _done(self, task: asyncio.Task[None]) -> None:
        self._inflight.discard(task)
        self._wake.set()
        if not task.cancelled() and task.exception() is not None:
            # Typically the database went away while recording: the lease lapses and it is retried.
            log.error("delivery_crashed", task=task.get_name(), error=repr(task.exception())[:300])

    async def _claim(self, limit: int, *, urgent_only: bool = False) -> Sequence[RowMapping]:
        async with transaction(self.sessions) as session:
            return await repo.claim_sendable(
                session=session, limit=limit, lease=self.lease, max_priority=0 if urgent_only else None
            )

    async def run_once(self) -> int:
        """Claim one batch and deliver it before returning (for tests and tools)."""
        rows = await self._claim(self.concurrency)
        if rows:
            self.failpoints.hit(BEFORE_SEND)
            await asyncio.gather(*(self.deliver(row) for row in rows))
        return len(rows)

    async def deliver(self, row: RowMapping) -> None:
        renewer = asyncio.create_task(self._keep_lease(row["id"]), name=f"lease-{row['id']}")
        try:
            await self._deliver(row)
        finally:
            renewer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await renewer

    async def _keep_lease(self, notification_id: uuid.UUID) -> None:
        """Renew the lease while this process is alive and sending: only a dead sender loses it."""
        interval = self.lease.total_seconds() / 3
        while True:
            await asyncio.sleep(interval)
            try:
                async with transaction(self.sessions) as session:
                    await repo.renew_lease(session=session, notification_id=notification_id, lease=self.lease)
            except Exception as exc:
                log.warning(
                    "lease_renewal_failed", notification_id=str(notification_id), error=type(exc).__name__
                )

    async def _deliver(self, row: RowMapping) -> None:
        channel: str = row["channel"]
        try:
            if row["kind"] == "digest" and await self._read_meanwhile(row):
                await self._finish(row, "suppressed", reason="read")
                SUPPRESSED.labels("read").inc()
                return
            provider_id = await self._send_with_retries(row)
        except Expired:
            await self._finish(row, "expired", reason="expired before it could be sent")
            FAILED.labels(row["kind"], channel, "expired").inc()
            return
        except TransientSendError as exc:
            await self._finish(row, "failed", reason=f"gave up after retries: {exc}"[:500])
            FAILED.labels(row["kind"], channel, "exhausted").inc()
            return
        except PermanentSendError as exc:
            await self._finish(row, "failed", reason=f"permanent: {exc}"[:500])
            FAILED.labels(row["kind"], channel, "permanent").inc()
            return
        except Exception as exc:  # a bug or an unexpected SDK error: record, never loop
            log.exception("send_crashed", notification_id=str(row["id"]))
            await self._record(row, "permanent", error=f"{type(exc).__name__}: {exc}"[:500])
            await self._finish(row, "failed", reason=f"error: {type(exc).__name__}")
            FAILED.labels(row["kind"], channel, "error").inc()
            return
        self.failpoints.hit(AFTER_SEND)
        now = self.clock()
        await self._finish(row, "sent", provider_id=provider_id, sent_at=now)
        SENT.labels(row["kind"], channel).inc()
        if row["first_message_at"] is not None:
            MESSAGE_TO_SEND.labels(row["kind"], channel).observe(
                max(0.0, (now - row["first_message_at"]).total_seconds())
            )
        log.info(
            "notification_sent",
            notification_id=str(row["id"]),
            kind=row["kind"],
            channel=channel,
            messages=row["message_count"],
        )

    async def _read_meanwhile(self, row: RowMapping) -> bool:
        """Decide at send time: a digest whose messages were all read since the decision is dropped."""
        async with self.sessions() as session:
            read_seq = await repo.thread_read_seq(
                session=session, recipient_id=row["recipient_id"], conversation_id=row["conversation_id"]
            )
        return row["max_seq"] is not None and read_seq >= row["max_seq"]

    async def _send_with_retries(self, row: RowMapping) -> str:
        channel: str = row["channel"]

        async def before_sleep(state: RetryCallState) -> None:
            RETRIED.labels(channel).inc()

        retrying = AsyncRetrying(
            stop=stop_after_attempt(self.attempts),
            wait=wait_exponential_jitter(
                multiplier=self.retry_initial_s, jitter=self.retry_initial_s, max=self.retry_max_s
            ),
            retry=retry_if_exception_type(TransientSendError),
            before_sleep=before_sleep,
            reraise=True,
        )
        async for attempt in retrying:
            with attempt:
                return await self._attempt(row)
        raise AssertionError("unreachable")  # pragma: no cover

    async def _attempt(self, row: RowMapping) -> str:
        expires_at: datetime | None = row["expires_at"]
        if expires_at is not None and self.clock() >= expires_at:
            await self._record(row, "expired", error="expired")
            raise Expired()
        try:
            if row["channel"] == "email":
                provider_id = await self.email.send(self._email_of(row))
            else:
                provider_id = await self.sms.send(
                    OutgoingSms(to=row["destination"], text=row["body_text"], reference=str(row["id"]))
                )
        except TransientSendError as exc:
            await self._record(row, "transient", error=str(exc))
            log.warning("send_transient_failure", notification_id=str(row["id"]), error=str(exc)[:200])
            raise
        except PermanentSendError as exc:
            await self._record(row, "permanent", error=str(exc))
            log.warning("send_permanent_failure", notification_id=str(row["id"]), error=str(exc)[:200])
            raise
        await self._record(row, "sent", provider_id=provider_id)
        return provider_id

    def _email_of(self, row: RowMapping) -> OutgoingEmail:
        return OutgoingEmail(
            to=row["destination"],
            subject=row["subject"] or "",
            text=row["body_text"] or "",
            html=row["body_html"],
            message_id=f"<{row['id']}@{self.mail_domain}>",
            date=row["created_at"],
            unsubscribe=self.unsubscribe if row["kind"] == "digest" else None,
        )

    async def _record(
        self, row: RowMapping, status: str, *, provider_id: str | None = None, error: str | None = None
    ) -> None:
        async with transaction(self.sessions) as session:
            await repo.record_attempt(
                session=session,
                notification_id=row["id"],
                channel=row["channel"],
                status=status,
                provider_id=provider_id,
                error=error,
            )

    async def _finish(self, row: RowMapping, status: str, **values: object) -> None:
        if row["kind"] in SECRET_KINDS:
            values.update(body_text=None, body_html=None)  # codes and reset links do not outlive the send
        async with transaction(self.sessions) as session:
            await repo.finish_notification(
                session=session, notification_id=row["id"], status=status, **values
            )
