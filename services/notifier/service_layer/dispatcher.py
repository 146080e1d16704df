"""Deliver decided notifications: lease, send with bounded retries, record every attempt.

The decision row (status ``queued``) is committed before anything is sent. A
sender leases it (``sending`` until ``lease_until``), calls the provider and
records the outcome. A crash before the provider call leaves a lease that
expires and the work is sent once by whoever claims it next; the only window
that can repeat a send is between the provider's acceptance and our commit (the
"sent" attempt and the closed notification are one commit), and emails carry a
fixed Message-ID across such a repeat. A digest clearly refused for good gets one
second chance on the fallback channel, or gives its cooldown back.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy.engine import RowMapping
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception_type,
    stop_after_attempt,
    wait_exponential_jitter,
)

from services.notifier.adapters import repository as repo
from services.notifier.domain.model import Policy
from services.notifier.metrics import FAILED, MESSAGE_TO_SEND, RETRIED, SENT, SUPPRESSED
from services.notifier.service_layer.digests import DigestSettings, queue_fallback
from services.notifier.service_layer.failpoints import AFTER_RECORD, AFTER_SEND, BEFORE_SEND, Failpoints
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
        policy: Policy | None = None,
        digest: DigestSettings | None = None,
        autocommit: async_sessionmaker[AsyncSession] | None = None,
    ) -> None:
        self.sessions = sessions
        # Units of one statement (claim, record, lease) need no BEGIN/COMMIT round trips: a
        # statement is atomic on its own. Several statements always go through ``sessions``.
        self.single = autocommit or sessions
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
        self.policy = policy  # with ``digest``: enables the fallback channel after a clear refusal
        self.digest = digest
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
        if not rows:
            return False
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
        async with transaction(self.single) as session:
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
                async with transaction(self.single) as session:
                    await repo.renew_lease(session=session, notification_id=notification_id, lease=self.lease)
            except Exception as exc:
                log.warning(
                    "lease_renewal_failed", notification_id=str(notification_id), error=type(exc).__name__
                )

    async def _deliver(self, row: RowMapping) -> None:
        channel: str = row["channel"]
        # A lapsed lease means an earlier sender's outcome is unknown: treat it as maybe delivered.
        outcome = _Outcome(ambiguous=bool(row.get("reclaimed")))
        try:
            if row["read"]:  # checked by the claim, right before this send
                await self._close_unsent(row, "suppressed", reason="read", outcome=outcome)
                SUPPRESSED.labels("read").inc()
                return
            provider_id = await self._send_with_retries(row, outcome)
        except Expired:
            await self._finish(row, "expired", reason="expired before it could be sent")
            FAILED.labels(row["kind"], channel, "expired").inc()
            return
        except TransientSendError as exc:
            await self._close_unsent(
                row, "failed", reason=f"gave up after retries: {exc}"[:500], outcome=outcome
            )
            FAILED.labels(row["kind"], channel, "exhausted").inc()
            return
        except PermanentSendError as exc:
            await self._close_unsent(
                row, "failed", reason=f"permanent: {exc}"[:500], outcome=outcome, fallback=True
            )
            FAILED.labels(row["kind"], channel, "permanent").inc()
            return
        except SQLAlchemyError:
            # Our own database failed, not the provider: recording "failed" now would drop work
            # that is still due. The lease lapses and whoever claims it next tries again.
            raise
        except Exception as exc:  # a bug or an unexpected SDK error: record, never loop
            log.error(
                "send_crashed", notification_id=str(row["id"]), error=type(exc).__name__, at=_where(exc)
            )
            await self._record(row, "permanent", error=f"{type(exc).__name__} at {_where(exc)}")
            await self._finish(row, "failed", reason=f"error: {type(exc).__name__}")
            FAILED.labels(row["kind"], channel, "error").inc()
            return
        self.failpoints.hit(AFTER_RECORD)
        now = self.clock()
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
            provider_id=provider_id,
        )

    async def _close_unsent(
        self, row: RowMapping, status: str, *, reason: str, outcome: _Outcome, fallback: bool = False
    ) -> None:
        """Close a notification that reached no one; a digest clearly refused gets its second chance.

        After a clear refusal (never after an ambiguous outcome) a digest is queued once more on
        the fallback channel, or else gives back the cooldown it reserved, so the next message
        can still be told. Both in the transaction that records the failure.
        """
        queued = False
        async with transaction(self.sessions) as session:
            await repo.finish_notification(
                session=session, notification_id=row["id"], status=status, reason=reason, **_secrets_of(row)
            )
            if row["kind"] == "digest" and not outcome.ambiguous:
                if fallback and self.policy is not None and self.digest is not None:
                    queued = await queue_fallback(
                        session=session,
                        failed=row,
                        now=self.clock(),
                        policy=self.policy,
                        settings=self.digest,
                    )
                if not queued:
                    await repo.release_cooldown(session=session, notification=row, now=self.clock())
        if queued:
            log.info("notification_fallback_queued", notification_id=str(row["id"]), failed=row["channel"])
            self.wake()

    async def _send_with_retries(self, row: RowMapping, outcome: _Outcome) -> str:
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
                return await self._attempt(row, outcome)
        raise AssertionError("unreachable")  # pragma: no cover

    async def _attempt(self, row: RowMapping, outcome: _Outcome) -> str:
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
        except (TransientSendError, PermanentSendError) as exc:
            outcome.ambiguous = outcome.ambiguous or exc.ambiguous
            status = "transient" if isinstance(exc, TransientSendError) else "permanent"
            await self._record(row, status, error=str(exc))
            log.warning(
                f"send_{status}_failure",
                notification_id=str(row["id"]),
                error=str(exc)[:200],
                ambiguous=exc.ambiguous,
            )
            raise
        self.failpoints.hit(AFTER_SEND)
        # The acceptance and the closed notification commit together: once the attempt says
        # "sent", no lease can lapse and no other sender can send it again.
        await self._record(row, "sent", provider_id=provider_id, sent_at=self.clock())
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
        self,
        row: RowMapping,
        status: str,
        *,
        provider_id: str | None = None,
        error: str | None = None,
        sent_at: datetime | None = None,
    ) -> None:
        """Record one attempt; with ``sent_at`` also close the notification as sent, atomically
        (one statement: the ambiguous window after the provider's acceptance stays one round trip)."""
        async with transaction(self.single) as session:
            await repo.record_attempt(
                session=session,
                notification_id=row["id"],
                channel=row["channel"],
                status=status,
                provider_id=provider_id,
                error=error,
                sent_at=sent_at,
                drop_secrets=bool(_secrets_of(row)),
            )

    async def _finish(self, row: RowMapping, status: str, **values: object) -> None:
        async with transaction(self.single) as session:
            await repo.finish_notification(
                session=session, notification_id=row["id"], status=status, **values, **_secrets_of(row)
            )


@dataclass
class _Outcome:
    """What one delivery learned so far: whether the provider may have taken the message."""

    ambiguous: bool = False


def _secrets_of(row: RowMapping) -> dict[str, None]:
    """Codes and reset links do not outlive the send."""
    return {"body_text": None, "body_html": None} if row["kind"] in SECRET_KINDS else {}


def _where(exc: BaseException) -> str:
    """``file:line`` of the innermost frame: enough to find a bug, without the exception's text
    (an SDK's message can quote the number or the text it was given)."""
    tb = exc.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    if tb is None:
        return "?"
    return f"{tb.tb_frame.f_code.co_filename.rsplit('/', 1)[-1]}:{tb.tb_lineno}"
