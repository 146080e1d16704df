"""The one place that picks concrete adapters and wires the notifier's workers together."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import timedelta

from services.notifier.adapters.email import SmtpEmailSender
from services.notifier.adapters.sms import DevInbox, build_sms_sender
from services.notifier.domain.model import Policy, Window
from services.notifier.entrypoints.consumers import NotifierConsumer
from services.notifier.entrypoints.rpc import make_handlers
from services.notifier.service_layer.digests import DigestSettings
from services.notifier.service_layer.dispatcher import Dispatcher
from services.notifier.service_layer.failpoints import Failpoints
from services.notifier.service_layer.ports import Clock, EmailSender, SmsSender, system_clock
from services.notifier.service_layer.scheduler import Retention, Scheduler
from services.notifier.settings import NotifierSettings
from shared.db import database_ready, make_engine, make_sessionmaker
from shared.logging import get_logger
from shared.messaging.connection import Broker
from shared.messaging.rpc import RpcServer
from shared.messaging.topology import Topology
from shared.settings import CommonSettings

log = get_logger(__name__)
STOP_STEP_TIMEOUT_S = 10.0


def policy_from(settings: NotifierSettings) -> Policy:
    return Policy(
        idle_after=timedelta(seconds=settings.idle_after_s),
        presence_stale=timedelta(seconds=settings.presence_stale_s),
        active_recheck=timedelta(seconds=settings.active_recheck_s),
        cooldowns=tuple(timedelta(seconds=s) for s in settings.cooldowns_s),
        cooldown_reset=timedelta(seconds=settings.cooldown_reset_s),
        channels={"USER": tuple(settings.channels_user), "ADMIN": tuple(settings.channels_admin)},
        fallback={"USER": settings.fallback_user, "ADMIN": settings.fallback_admin},
    )


@dataclass
class NotifierRuntime:
    """Everything long-lived in one notifier process; the app's lifespan starts and stops it."""

    settings: NotifierSettings
    common: CommonSettings
    clock: Clock = system_clock
    email: EmailSender | None = None
    sms: SmsSender | None = None
    inbox: DevInbox = field(default_factory=DevInbox)

    def __post_init__(self) -> None:
        s, c = self.settings, self.common
        self.inbox.size = s.dev_inbox_size
        self.engine = make_engine(c.database_url, pool_size=s.db_pool_size)
        self.sessions = make_sessionmaker(self.engine)
        self.broker = Broker(
            c.amqp_url,
            Topology(prefix=c.amqp_prefix, delivery_limit=c.amqp_delivery_limit),
            service="notifier",
            heartbeat_s=c.amqp_heartbeat_s,
            prefetch=c.amqp_prefetch,
        )
        failpoints = Failpoints(s.failpoint)
        policy = policy_from(s)
        digest = DigestSettings(s.frontend_url, s.unsubscribe_link, s.digest_max_items)
        self.smtp = SmtpEmailSender(s) if self.email is None else None  # ours to close
        email: EmailSender = self.email or self.smtp or SmtpEmailSender(s)
        self.dispatcher = Dispatcher(
            sessions=self.sessions,
            email=email,
            sms=self.sms or build_sms_sender(s, self.inbox),
            clock=self.clock,
            failpoints=failpoints,
            mail_domain=s.mail_domain,
            unsubscribe=s.unsubscribe_link,
            lease_s=s.send_lease_s,
            attempts=s.send_attempts,
            retry_initial_s=s.retry_initial_s,
            retry_max_s=s.retry_max_s,
            concurrency=s.send_concurrency,
            poll_s=s.scheduler_poll_s,
            policy=policy,
            digest=digest,
            autocommit=make_sessionmaker(self.engine.execution_options(isolation_level="AUTOCOMMIT")),
        )
        self.scheduler = Scheduler(
            sessions=self.sessions,
            policy=policy,
            digest=digest,
            clock=self.clock,
            failpoints=failpoints,
            on_queued=self.dispatcher.wake,
            # A thread opened just after a pass is first seen by the next one: with a grace window
            # shorter than the poll, poll that often (a zero window wakes the scheduler directly).
            poll_s=min(s.scheduler_poll_s, max(s.grace_window_s, 0.05))
            if s.grace_window_s > 0
            else s.scheduler_poll_s,
            batch_size=s.batch_size,
            retention=Retention(
                keep=timedelta(days=s.retention_days),
                batch=s.retention_batch,
                every_s=s.retention_interval_s,
            ),
        )
        self.consumer = NotifierConsumer(
            self.broker,
            sessions=self.sessions,
            window=Window(
                grace=timedelta(seconds=s.grace_window_s),
                max_window=timedelta(seconds=s.max_window_s),
                settle=timedelta(seconds=s.settle_s),
            ),
            clock=self.clock,
            wake_scheduler=self.scheduler.wake,
            wake_dispatcher=self.dispatcher.wake,
        )
        self.rpc = RpcServer(self.broker, "notifier", make_handlers(self.sessions))

    async def start(self) -> None:
        await self.broker.start()
        # Workers first: work committed before a restart goes out before new events arrive.
        self.dispatcher.start()
        self.scheduler.start()
        await self.consumer.start()
        await self.rpc.start()

    async def stop(self) -> None:
        """Stop intake first, then the workers (sends in progress may finish), then connections.

        Each step is bounded: a broker that blocks its connections (resource alarm) or a dead
        database must not keep the process from exiting; what was not finished is leased work
        or unacked messages, both picked up again after the restart.
        """
        steps = (
            ("rpc", self.rpc.stop),
            ("consumer", self.consumer.stop),
            ("scheduler", self.scheduler.stop),
            ("dispatcher", self.dispatcher.stop),
            ("smtp", self._close_smtp),
            ("broker", self.broker.close),
            ("database", self.engine.dispose),
        )
        for name, step in steps:
            try:
                await asyncio.wait_for(step(), STOP_STEP_TIMEOUT_S)
            except Exception as exc:  # includes TimeoutError
                log.warning("stop_step_failed", step=name, error=type(exc).__name__)

    async def _close_smtp(self) -> None:
        if self.smtp is not None:
            await self.smtp.close()

    async def database_ready(self) -> bool:
        return await database_ready(self.engine)

    async def broker_ready(self) -> bool:
        return self.broker.is_ready()
