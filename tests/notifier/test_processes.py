"""Real notifier processes: a crash between decision and send, and two replicas side by side."""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Iterator, Sequence
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select
from sqlalchemy.engine import RowMapping
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.notifier.adapters.tables import attempts, notifications
from shared.db import make_engine, make_sessionmaker
from tests.notifier.conftest import Publish
from tests.notifier.helpers import notifications_of, unread, user, wait_until
from tests.support.processes import ServiceProcess, service
from tests.support.smtp import SmtpServer
from tests.support.vonage_stub import StubReply, VonageStub

pytestmark = pytest.mark.e2e


@pytest.fixture
async def sessions(database_url: str, clean_db: None) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    engine = make_engine(database_url, pool_size=2)
    try:
        yield make_sessionmaker(engine)
    finally:
        await engine.dispose()


@pytest.fixture
def env(common_env: dict[str, str], prefix: str) -> dict[str, str]:
    return {
        **common_env,
        "CHAT_AMQP_PREFIX": prefix,
        "CHAT_LOG_JSON": "false",
        "NOTIFIER_GRACE_WINDOW_S": "0",
        "NOTIFIER_SCHEDULER_POLL_S": "0.2",
        "NOTIFIER_RETRY_INITIAL_S": "0.05",
        "NOTIFIER_SEND_LEASE_S": "3",  # renewed every second while a send runs
    }


@pytest.fixture
def processes() -> Iterator[list[ServiceProcess]]:
    started: list[ServiceProcess] = []
    yield started
    for proc in started:
        proc.stop()


async def _start(processes: list[ServiceProcess], name: str, env: dict[str, str]) -> ServiceProcess:
    proc = service(name, env)
    processes.append(proc)
    proc.start()
    await proc.wait_ready(timeout=60)
    return proc


@pytest.mark.parametrize("failpoint", ["after_decision", "before_send"])
async def test_killing_the_notifier_between_decision_and_send_then_restarting_delivers_exactly_once(
    failpoint: str,
    env: dict[str, str],
    processes: list[ServiceProcess],
    publish: Publish,
    smtp: SmtpServer,
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    doomed = await _start(processes, "notifier", {**env, "NOTIFIER_FAILPOINT": failpoint})
    recipient = user()
    rid = recipient.payload.user_id
    await publish(recipient)
    await publish(unread(rid, uuid.uuid4(), 1, body="survive the crash"))

    async def died() -> bool:
        return doomed.proc is not None and doomed.proc.poll() is not None

    await wait_until(died, timeout=60, what="the failpoint to kill the notifier")
    assert doomed.proc is not None and doomed.proc.returncode == 86
    [decided] = await notifications_of(sessions, rid)
    # Decided, not sent (a dispatcher poll may have leased it just before the crash).
    assert decided["status"] in (("queued", "sending") if failpoint == "after_decision" else ("sending",))
    assert decided["attempts"] == 0
    assert smtp.sink.to(recipient.payload.email or "") == []

    await _start(processes, "notifier#2", env)
    [mail] = await smtp.sink.wait_for(1, to=recipient.payload.email, timeout=60)
    assert "survive the crash" in mail.text()
    assert mail.message["Message-ID"] == f"<{decided['id']}@chat.localhost>"

    async def recorded() -> Sequence[RowMapping] | None:
        rows = await notifications_of(sessions, rid)
        return rows if rows and rows[0]["status"] == "sent" else None

    rows = await wait_until(recorded, timeout=30, what="the send to be recorded")
    assert rows is not None
    assert len(rows) == 1 and rows[0]["attempts"] == 1  # nothing left that could send again
    assert len(smtp.sink.to(recipient.payload.email or "")) == 1


async def test_two_notifier_replicas_never_send_the_same_notification(
    env: dict[str, str],
    processes: list[ServiceProcess],
    publish: Publish,
    smtp: SmtpServer,
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    await asyncio.gather(_start(processes, "notifier#a", env), _start(processes, "notifier#b", env))
    recipients = [user() for _ in range(10)]
    conversations = {r.payload.user_id: [uuid.uuid4() for _ in range(3)] for r in recipients}
    for r in recipients:
        await publish(r)
    for seq in (1, 2):
        for r in recipients:
            for conv in conversations[r.payload.user_id]:
                await publish(unread(r.payload.user_id, conv, seq))

    expected = sum(len(c) for c in conversations.values())

    async def all_settled() -> bool:
        async with sessions() as session:
            result = await session.execute(select(notifications.c.status))
            statuses = [s for (s,) in result.all()]
        return len(statuses) >= expected and all(s == "sent" for s in statuses)

    await wait_until(all_settled, timeout=60, what="every conversation to be notified")
    per_conversation = Counter(
        next(line for line in m.text().splitlines() if "/conversations/" in line) for m in smtp.sink.messages
    )
    # Each digest goes out exactly once, whichever replica decided it (a second digest for the
    # same conversation would need the cooldown to pass; a double send would repeat a link).
    assert len(per_conversation) == expected
    assert set(per_conversation.values()) == {1}
    async with sessions() as session:
        keys = [k for (k,) in (await session.execute(select(notifications.c.idempotency_key))).all()]
    assert len(keys) == len(set(keys)) == expected


async def test_the_log_sms_provider_fills_the_dev_inbox_masks_the_log_and_counts_metrics(
    env: dict[str, str], processes: list[ServiceProcess], publish: Publish
) -> None:
    import httpx

    from shared.events import OtpRequested, OtpRequestedPayload

    proc = await _start(processes, "notifier", {**env, "NOTIFIER_SMS_PROVIDER": "log"})
    await publish(
        OtpRequested(
            payload=OtpRequestedPayload(
                user_id=uuid.uuid4(),
                phone="+14155550142",
                code="987654",
                expires_at=datetime.now(UTC) + timedelta(minutes=5),
            )
        )
    )
    async with httpx.AsyncClient(base_url=proc.url) as client:

        async def inbox():  # type: ignore[no-untyped-def]
            return (await client.get("/dev/sms.json")).json()["messages"]

        [entry] = await wait_until(inbox, timeout=30, what="the OTP in the dev inbox")
        assert entry["to"] == "+14155550142" and "987654" in entry["text"]
        page = await client.get("/dev/sms")
        assert page.status_code == 200 and "987654" in page.text

        async def counted() -> bool:
            metrics = (await client.get("/metrics")).text
            return 'notifier_sent_total{channel="sms",kind="otp"} 1.0' in metrics

        await wait_until(counted, timeout=30, what="the sent counter")
    log = proc.log_path.read_text()
    assert "sms_logged" in log and "4155550142" not in log and "987654" not in log


async def test_a_send_recorded_as_accepted_is_never_sent_again_after_a_crash(
    env: dict[str, str],
    processes: list[ServiceProcess],
    publish: Publish,
    smtp: SmtpServer,
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    """Once the acceptance is recorded nothing may lease the notification again: the attempt
    and the closed notification commit together (they once were two commits)."""
    doomed = await _start(processes, "notifier", {**env, "NOTIFIER_FAILPOINT": "after_record"})
    recipient = user()
    rid = recipient.payload.user_id
    await publish(recipient)
    await publish(unread(rid, uuid.uuid4(), 1, body="only once"))

    async def died() -> bool:
        return doomed.proc is not None and doomed.proc.poll() is not None

    await wait_until(died, timeout=60, what="the failpoint to kill the notifier")
    assert doomed.proc is not None and doomed.proc.returncode == 86
    died_at = asyncio.get_running_loop().time()
    [row] = await notifications_of(sessions, rid)
    assert (row["status"], row["attempts"], row["lease_until"]) == ("sent", 1, None)

    await _start(processes, "notifier#2", env)
    # Let a lease taken before the crash lapse (3 s), then prove the new process is sending.
    await asyncio.sleep(max(0.0, died_at + 4 - asyncio.get_running_loop().time()))
    marker = user()
    await publish(marker)
    await publish(unread(marker.payload.user_id, uuid.uuid4(), 1))
    await smtp.sink.wait_for(1, to=marker.payload.email, timeout=30)
    assert len(smtp.sink.to(recipient.payload.email or "")) == 1
    [row] = await notifications_of(sessions, rid)
    assert (row["status"], row["attempts"]) == ("sent", 1)


async def test_an_unreadable_provider_reply_is_recorded_once_without_the_number_in_log_or_database(
    env: dict[str, str],
    processes: list[ServiceProcess],
    publish: Publish,
    sessions: async_sessionmaker[AsyncSession],
    vonage: VonageStub,
) -> None:
    """The SDK's error quotes what it could not read (here the number, without a "+" that the
    log scrubber would recognise): only the error's type and place may be logged or stored.
    Vonage took the SMS, so it is neither retried nor sent again on another channel."""
    proc = await _start(processes, "notifier", {**env, **vonage.env(), "NOTIFIER_CHANNELS_USER": "sms,email"})
    vonage.state.fail_next = [StubReply(to_as_number=True)]
    recipient = user(phone="+14155550188", sms_enabled=True)
    rid = recipient.payload.user_id
    await publish(recipient)
    await publish(unread(rid, uuid.uuid4(), 1))

    async def settled() -> Sequence[RowMapping] | None:
        rows = await notifications_of(sessions, rid)
        return rows if rows and rows[0]["status"] == "failed" else None

    rows = await wait_until(settled, timeout=30, what="the unreadable reply to be recorded")
    assert rows is not None
    [row] = rows
    assert row["reason"] == "error: ValidationError"
    async with sessions() as session:
        errors = [e for (e,) in (await session.execute(select(attempts.c.error))).all()]
    assert len(errors) == 1 and errors[0].startswith("ValidationError at ")
    assert len(vonage.state.to("+14155550188")) == 1
    log = proc.log_path.read_text()
    assert "send_crashed" in log and "4155550188" not in log
