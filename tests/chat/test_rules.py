"""Unit tests of the chat rules: no network, no database."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta

import orjson
import pytest

from services.gateway.domain.frames import FrameError, ResumeFrame, SendFrame, parse_frame
from services.gateway.domain.presence import InstanceShare, aggregate, is_idle, local_state
from services.gateway.domain.ratelimit import TokenBucket
from services.gateway.domain.sequencing import Step, decide, gap_too_large
from services.gateway.domain.tokens import chosen_subprotocol, token_from_request
from services.store.domain.rules import (
    ConversationState,
    DomainError,
    Who,
    admit_flood,
    admit_send,
    can_access,
    check_body,
    count_sent,
    next_seq,
    participants,
    read_target,
)
from shared.batching import GroupCommit

USER, ADMIN, OTHER_ADMIN, STRANGER = (uuid.uuid4() for _ in range(4))


def conv(**kw: object) -> ConversationState:
    values: dict[str, object] = {"status": "OPEN", **kw}
    return ConversationState(id=uuid.uuid4(), user_id=USER, admin_id=ADMIN, **values)  # type: ignore[arg-type]


# --- sequencing and membership ----------------------------------------------


def test_seq_is_gapless_and_increasing_per_conversation() -> None:
    c = conv(last_seq=7)
    assert [next_seq(c) for _ in range(3)] == [8, 9, 10]
    assert c.new_seqs == [8, 9, 10]


def test_only_participants_and_scoped_admins_access_a_conversation() -> None:
    c = conv()
    assert can_access(Who(USER, False), c, "assigned")
    assert can_access(Who(ADMIN, True), c, "assigned")
    assert not can_access(Who(STRANGER, False), c, "assigned")
    assert not can_access(Who(OTHER_ADMIN, True), c, "assigned")
    assert can_access(Who(OTHER_ADMIN, True), c, "all")
    assert not can_access(Who(ADMIN, False), c, "all")  # a USER token with an admin's id is still a user


def test_a_foreign_sender_gets_not_found_not_forbidden() -> None:
    with pytest.raises(DomainError) as caught:
        admit_send(Who(STRANGER, False), conv(), admin_scope="assigned", reopen_on_user_message=True)
    assert caught.value.status == 404 and caught.value.code == "not_found"


def test_a_user_message_reopens_a_closed_consultation_but_an_admin_one_does_not() -> None:
    c = conv(status="CLOSED")
    admit_send(Who(USER, False), c, admin_scope="assigned", reopen_on_user_message=True)
    assert c.status == "OPEN" and c.reopened
    with pytest.raises(DomainError) as caught:
        admit_send(
            Who(ADMIN, True), conv(status="CLOSED"), admin_scope="assigned", reopen_on_user_message=True
        )
    assert caught.value.code == "conversation_closed"
    with pytest.raises(DomainError):
        admit_send(
            Who(USER, False), conv(status="CLOSED"), admin_scope="assigned", reopen_on_user_message=False
        )


def test_sending_reads_up_to_the_own_message_and_counts_unread_for_the_other_side() -> None:
    c = conv(admin_unread=2)
    count_sent(Who(USER, False), c, 5)
    assert (c.user_read_seq, c.user_unread, c.admin_unread) == (5, 0, 3)


def test_participants_include_a_supervising_sender_once() -> None:
    c = conv()
    assert participants(c) == [USER, ADMIN]
    assert participants(c, also=OTHER_ADMIN) == [USER, ADMIN, OTHER_ADMIN]
    assert participants(c, also=USER) == [USER, ADMIN]


def test_read_positions_never_move_backwards_or_past_the_end() -> None:
    assert read_target(5, 3, 10) == 5
    assert read_target(5, 8, 10) == 8
    assert read_target(5, 99, 10) == 10


def test_body_limits() -> None:
    assert check_body("hi", 10) == "hi"
    for bad, code in (("   ", "invalid_body"), ("x" * 11, "body_too_long")):
        with pytest.raises(DomainError) as caught:
            check_body(bad, 10)
        assert caught.value.code == code


# --- flood cap ----------------------------------------------------------------


def test_flood_cap_counts_per_minute_window_and_says_when_to_retry() -> None:
    c = conv()
    start = datetime(2026, 1, 1, tzinfo=UTC)
    for i in range(3):
        admit_flood(c, start + timedelta(seconds=i), 3)
    with pytest.raises(DomainError) as caught:
        admit_flood(c, start + timedelta(seconds=10), 3)
    assert caught.value.code == "flood_limited" and caught.value.extra["retry_after_s"] == 50
    admit_flood(c, start + timedelta(seconds=61), 3)  # a new window
    assert c.flood_count == 1


# --- group commit -------------------------------------------------------------


async def test_group_commit_runs_a_lone_request_at_once_and_batches_concurrent_ones() -> None:
    batches: list[list[int]] = []

    async def flush(items: list[int]) -> list[int | BaseException]:
        batches.append(list(items))
        await asyncio.sleep(0.01)
        return [ValueError("odd") if i == 13 else i * 10 for i in items]

    gc: GroupCommit[int, int] = GroupCommit(flush, max_batch=100)
    assert await gc.submit(1) == 10
    assert batches == [[1]]  # alone: flushed at once, by itself
    first = asyncio.ensure_future(gc.submit(2))
    await asyncio.sleep(0.001)  # its flush is now in progress
    results = await asyncio.gather(first, *(gc.submit(i) for i in range(3, 12)))
    assert results == [i * 10 for i in range(2, 12)]
    assert batches[1:] == [[2], list(range(3, 12))]  # the rest waited for one shared flush
    with pytest.raises(ValueError):
        await gc.submit(13)


# --- presence -----------------------------------------------------------------


def test_presence_aggregates_devices_and_instances_and_ignores_dead_instances() -> None:
    assert aggregate([]) == "offline"
    assert aggregate([InstanceShare(2, False, True)]) == "idle"
    assert aggregate([InstanceShare(1, False, True), InstanceShare(1, True, True)]) == "active"
    assert aggregate([InstanceShare(1, True, False), InstanceShare(1, False, True)]) == "idle"
    assert aggregate([InstanceShare(3, True, False)]) == "offline"
    assert local_state(0, 0) == "offline" and local_state(2, 0) == "idle" and local_state(2, 1) == "active"
    assert is_idle(0.0, 60.0, 60.0) and not is_idle(1.0, 60.0, 60.0)


# --- resume gap logic ---------------------------------------------------------


def test_resume_and_live_order_decisions() -> None:
    assert decide(None, 17) is Step.SEND  # first frame of a conversation on this connection
    assert decide(4, 5) is Step.SEND
    assert decide(5, 5) is Step.DROP and decide(5, 2) is Step.DROP
    assert decide(5, 7) is Step.GAP
    assert not gap_too_large(3, 10, 6) and gap_too_large(3, 11, 6)


# --- frames -------------------------------------------------------------------


def test_valid_frames_parse_to_typed_models() -> None:
    cid = uuid.uuid4()
    frame = parse_frame(
        orjson.dumps({"type": "message.send", "conversation_id": str(cid), "client_id": "c", "body": "hi"}),
        1000,
    )
    assert isinstance(frame, SendFrame) and frame.conversation_id == cid
    resume = parse_frame(orjson.dumps({"type": "resume", "conversations": {str(cid): 4}}), 1000)
    assert isinstance(resume, ResumeFrame) and resume.conversations == {cid: 4}


@pytest.mark.parametrize(
    ("raw", "code"),
    [
        (b"{nope", "bad_json"),
        (b"[1, 2]", "bad_frame"),
        (b'{"type": "explode"}', "unknown_type"),
        (b'{"no_type": 1}', "unknown_type"),
        (b'{"type": "read", "conversation_id": "not-a-uuid", "seq": 1}', "invalid_frame"),
        (
            b'{"type": "read", "conversation_id": "%s", "seq": -1}' % str(uuid.uuid4()).encode(),
            "invalid_frame",
        ),
        (b'{"type": "ping", "extra": true}', "invalid_frame"),
        (b'{"type": "ping", "pad": "' + b"x" * 100 + b'"}', "frame_too_large"),
    ],
)
def test_bad_frames_raise_stable_codes(raw: bytes, code: str) -> None:
    with pytest.raises(FrameError) as caught:
        parse_frame(raw, 100)
    assert caught.value.code == code


def test_the_error_keeps_the_client_ref() -> None:
    with pytest.raises(FrameError) as caught:
        parse_frame(b'{"type": "read", "ref": "r1"}', 1000)
    assert caught.value.ref == "r1"


# --- rate limit and tokens ----------------------------------------------------


def test_token_bucket_allows_bursts_then_paces() -> None:
    bucket = TokenBucket(rate=2.0, burst=3, now=0.0)
    assert [bucket.take(0.0) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert bucket.take(0.0) == pytest.approx(0.5)
    assert bucket.take(0.5) == 0.0


def test_token_sources_in_order_and_the_token_is_never_echoed_as_subprotocol() -> None:
    assert (
        token_from_request({"authorization": "Bearer abc"}, {"access_token": "cookie"}, "access_token")
        == "abc"
    )
    headers = {"sec-websocket-protocol": "chat.v1, bearer.xyz"}
    assert token_from_request(headers, {}, "access_token") == "xyz"
    assert chosen_subprotocol(headers, "chat.v1") == "chat.v1"
    assert chosen_subprotocol({"sec-websocket-protocol": "bearer.xyz"}, "chat.v1") is None
    assert token_from_request({}, {"access_token": "c"}, "access_token") == "c"
    assert token_from_request({"authorization": "Basic zzz"}, {}, "access_token") is None
