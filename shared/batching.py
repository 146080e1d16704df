"""Group commit: concurrent requests share one flush; a lone request is never delayed.

The store batches sends into one transaction with it, the gateway batches sends
into one RPC round trip.

A request starts a flush at once while fewer than ``max_in_flight`` flushes
run. Requests that arrive while every slot is busy wait for the next flush to
finish, which then takes all of them together — so the batch size grows with
the load and there is no timer anywhere. Several flushes in flight keep the
pipeline busy while one waits for its commit to reach the disk.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")

# A flush returns one outcome per request: a result, or the exception meant for that caller.
Flush = Callable[[list[T]], Awaitable[list[R | BaseException]]]


class GroupCommit(Generic[T, R]):
    def __init__(self, flush: Flush[T, R], *, max_batch: int = 256, max_in_flight: int = 1) -> None:
        self._flush = flush
        self.max_batch = max_batch
        self.max_in_flight = max_in_flight
        self._pending: list[tuple[T, asyncio.Future[R]]] = []
        self._in_flight = 0
        self._tasks: set[asyncio.Task[None]] = set()
        self.batches = 0
        self.largest = 0

    async def submit(self, item: T) -> R:
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._pending.append((item, future))
        if self._in_flight < self.max_in_flight:
            self._in_flight += 1
            task = asyncio.get_running_loop().create_task(self._run())
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        return await future

    async def _run(self) -> None:
        try:
            while self._pending:
                batch = self._pending[: self.max_batch]
                del self._pending[: self.max_batch]
                self.batches += 1
                self.largest = max(self.largest, len(batch))
                try:
                    outcomes = await self._flush([item for item, _ in batch])
                except Exception as exc:  # the whole flush failed: every caller learns it
                    outcomes = [exc] * len(batch)
                for (_, future), outcome in zip(batch, outcomes, strict=True):
                    if future.done():
                        continue
                    if isinstance(outcome, BaseException):
                        future.set_exception(outcome)
                    else:
                        future.set_result(outcome)
        finally:
            self._in_flight -= 1
