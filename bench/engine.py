"""The open-loop chat load: pre-planned sends on a fixed schedule, latencies from the scheduled time.

Every message has a scheduled send time on CLOCK_MONOTONIC. The loader holds
both ends of every conversation, so ``ack`` (sender), ``message.new``
(recipient devices) and ``message.created`` (event tap) are all timed on the
same clock, from the scheduled time — a loader that falls behind makes the
latencies worse, never hides them (no coordinated omission).
"""

from __future__ import annotations

import asyncio
import math
import random
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

import orjson

from bench.connections import Client
from bench.frames import encode_client_text
from bench.model import Account, Conversation
from bench.stats import Series

BODY = "Hello, I have a question about my order; could you check the delivery date please? Thanks!"


@dataclass
class StepRecord:
    """What one rate step (or one run) observed."""

    step: int
    rate: float
    duration_s: float
    planned: int = 0
    sent: int = 0
    send_failed: int = 0
    acked: int = 0
    expected_deliveries: int = 0
    delivered: int = 0
    echoes: int = 0
    events: int = 0
    out_of_order: int = 0  # a message.new whose seq was not above the last one on that connection
    errors: Counter[str] = field(default_factory=Counter)
    ack: Series = field(default_factory=lambda: Series("send_to_ack"))
    recipient: Series = field(default_factory=lambda: Series("send_to_recipient"))
    event: Series = field(default_factory=lambda: Series("send_to_event"))
    lag: Series = field(default_factory=lambda: Series("send_lag"))
    first_sched: float = math.inf
    last_sched: float = 0.0

    def complete(self) -> bool:
        return (
            self.acked + sum(self.errors.values()) >= self.sent and self.delivered >= self.expected_deliveries
        )

    def as_dict(self) -> dict[str, object]:
        return {
            "step": self.step,
            "rate": self.rate,
            "duration_s": self.duration_s,
            "planned": self.planned,
            "sent": self.sent,
            "send_failed": self.send_failed,
            "acked": self.acked,
            "expected_deliveries": self.expected_deliveries,
            "delivered": self.delivered,
            "lost_deliveries": max(0, self.expected_deliveries - self.delivered),
            "echoes": self.echoes,
            "events": self.events,
            "out_of_order": self.out_of_order,
            "errors": dict(self.errors),
            "latency_ms": {
                "send_to_ack": self.ack.summary(),
                "send_to_recipient": self.recipient.summary(),
                "send_to_event": self.event.summary(),
                "loader_send_lag": self.lag.summary(),
            },
        }


@dataclass
class Plan:
    """Pre-encoded frames with their offsets from the step start, in time order."""

    step: int
    at: list[float]
    idx: list[int]
    frames: list[bytes]
    clients: list[Client]


class ChatEngine:
    """Plans, sends and times chat messages across a fixed set of connected clients."""

    def __init__(self, conversations: Sequence[Conversation], clients: Sequence[Client], tag: str) -> None:
        self.conversations = list(conversations)
        self.tag = tag
        self._prefix = f"{tag}."
        self.by_account: dict[int, list[Client]] = {}
        for client in clients:
            self.by_account.setdefault(id(client.account), []).append(client)
            client.handler = self.on_frame
        self.usable = [c for c in self.conversations if self._clients(c.user) and self._clients(c.admin)]
        self.sched: list[float] = []
        self.step_of: list[int] = []
        self.sender: list[int] = []  # id() of the sending account
        self.acked: list[bool] = []
        self.steps: list[StepRecord] = []
        self.other_frames: Counter[str] = Counter()

    def _clients(self, account: Account) -> list[Client]:
        return self.by_account.get(id(account), [])

    def client_id(self, idx: int) -> str:
        return f"{self._prefix}{idx}"

    def _index(self, client_id: object) -> int | None:
        if isinstance(client_id, str) and client_id.startswith(self._prefix):
            try:
                idx = int(client_id[len(self._prefix) :])
            except ValueError:
                return None
            return idx if idx < len(self.sched) else None
        return None

    # --- planning -------------------------------------------------------------

    def plan(self, rate: float, duration_s: float, rng: random.Random, *, poisson: bool = True) -> Plan:
        """Messages at ``rate``/s for ``duration_s``: random consultation, random direction and device."""
        if not self.usable:
            raise RuntimeError("no conversation has both participants connected")
        sends: list[tuple[float, Conversation, Account]] = []
        t = 0.0
        while True:
            t += rng.expovariate(rate) if poisson else 1.0 / rate
            if t >= duration_s:
                break
            conv = rng.choice(self.usable)
            sends.append((t, conv, conv.user if rng.random() < 0.5 else conv.admin))
        return self.plan_sends(sends, rate, duration_s, rng)

    def plan_sends(
        self,
        sends: Sequence[tuple[float, Conversation, Account]],
        rate: float,
        duration_s: float,
        rng: random.Random,
    ) -> Plan:
        """Pre-encode given (offset, consultation, sender) sends; the sender must have a connection."""
        step = len(self.steps)
        record = StepRecord(step, rate, duration_s)
        self.steps.append(record)
        at: list[float] = []
        idxs: list[int] = []
        frames: list[bytes] = []
        clients: list[Client] = []
        for t, conv, sender in sends:
            client = rng.choice(self._clients(sender))
            idx = len(self.sched)
            self.sched.append(math.inf)
            self.step_of.append(step)
            self.sender.append(id(sender))
            self.acked.append(False)
            payload = orjson.dumps(
                {
                    "type": "message.send",
                    "conversation_id": conv.conversation_id,
                    "client_id": self.client_id(idx),
                    "body": BODY,
                    "ref": self.client_id(idx),  # echoed in an error frame, which has no client_id
                }
            )
            at.append(t)
            idxs.append(idx)
            frames.append(encode_client_text(payload))
            clients.append(client)
            record.expected_deliveries += len(self._clients(conv.other(sender)))
        record.planned = len(idxs)
        return Plan(step, at, idxs, frames, clients)

    # --- sending --------------------------------------------------------------

    async def run(self, plan: Plan, start_delay_s: float = 0.05) -> None:
        """Write each frame at its scheduled time; being late is recorded, never skipped."""
        record = self.steps[plan.step]
        t0 = time.monotonic() + start_delay_s
        sched = self.sched
        for offset, idx in zip(plan.at, plan.idx, strict=True):
            sched[idx] = t0 + offset
        if plan.idx:
            record.first_sched = t0 + plan.at[0]
            record.last_sched = t0 + plan.at[-1]
        n = len(plan.idx)
        lag = record.lag.values_ms
        i = 0
        monotonic = time.monotonic
        while i < n:
            now = monotonic()
            due = t0 + plan.at[i]
            if due > now:
                await asyncio.sleep(due - now)
                now = monotonic()
            while i < n and t0 + plan.at[i] <= now:
                transport = plan.clients[i].transport
                if transport.is_closing():
                    record.send_failed += 1
                else:
                    transport.write(plan.frames[i])
                    record.sent += 1
                lag.append((now - t0 - plan.at[i]) * 1000.0)
                i += 1

    async def drain(self, step: int, timeout_s: float) -> bool:
        """Wait until every ack and delivery of ``step`` arrived; False if some never did."""
        record = self.steps[step]
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if record.complete():
                return True
            await asyncio.sleep(0.02)
        return record.complete()

    # --- receiving ------------------------------------------------------------

    def on_frame(self, client: Client, raw: bytes, now: float) -> None:
        try:
            frame = orjson.loads(raw)
        except orjson.JSONDecodeError:
            self.other_frames["invalid-json"] += 1
            return
        kind = frame.get("type") if isinstance(frame, dict) else None
        if kind == "message.new":
            self._on_message(client, frame, now)
        elif kind == "ack":
            self._on_ack(frame, now)
        elif kind == "error":
            self._on_error(frame)
        else:
            self.other_frames[str(kind)] += 1

    def _lookup(self, frame: dict[str, object]) -> int | None:
        cid = frame.get("client_id") or frame.get("ref")
        if cid is None:
            inner = frame.get("message")
            if isinstance(inner, dict):
                cid = inner.get("client_id")
        return self._index(cid)

    def _on_message(self, client: Client, frame: dict[str, object], now: float) -> None:
        inner = frame.get("message")
        body = inner if isinstance(inner, dict) else frame
        idx = self._index(body.get("client_id"))
        conv = body.get("conversation_id")
        seq = body.get("seq")
        if isinstance(conv, str) and isinstance(seq, int):
            last = client.last_seq.get(conv, 0)
            if seq <= last:
                if idx is not None:
                    self.steps[self.step_of[idx]].out_of_order += 1
            else:
                client.last_seq[conv] = seq
        if idx is None:
            self.other_frames["message.new(foreign)"] += 1
            return
        record = self.steps[self.step_of[idx]]
        if self.sender[idx] == id(client.account):
            record.echoes += 1
        else:
            record.delivered += 1
            record.recipient.values_ms.append((now - self.sched[idx]) * 1000.0)

    def _on_ack(self, frame: dict[str, object], now: float) -> None:
        idx = self._lookup(frame)
        if idx is None or self.acked[idx]:
            self.other_frames["ack(unmatched)"] += 1
            return
        self.acked[idx] = True
        record = self.steps[self.step_of[idx]]
        record.acked += 1
        record.ack.values_ms.append((now - self.sched[idx]) * 1000.0)

    def _on_error(self, frame: dict[str, object]) -> None:
        code = frame.get("code")
        inner = frame.get("error")
        if code is None and isinstance(inner, dict):
            code = inner.get("code")
        idx = self._lookup(frame)
        if idx is None:
            self.other_frames[f"error:{code}"] += 1
            return
        self.steps[self.step_of[idx]].errors[str(code)] += 1

    def on_event(self, event: object, now: float) -> None:
        """A decoded ``message.created`` event seen by the tap on the events exchange."""
        payload = event.get("payload") if isinstance(event, dict) else None
        idx = self._index(payload.get("client_id")) if isinstance(payload, dict) else None
        if idx is None:
            return
        record = self.steps[self.step_of[idx]]
        record.events += 1
        record.event.values_ms.append((now - self.sched[idx]) * 1000.0)
