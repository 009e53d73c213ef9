"""Group commit: concurrent calls are coalesced into one Postgres transaction.

Each call waits in a FIFO queue. Whenever one of the `batches_max` slots is free, a flusher
takes up to `batch_max` waiting calls at once and hands them to the batch engine as one
batch. There is no wait for company, neither a timer nor a spin: a call that arrives while a
slot is free starts its transaction on the next turn of the event loop, alone. Batches grow only from
calls that arrive while every slot is busy, so they grow with the load by themselves and an
idle server adds no latency (the "natural batching" of TigerBeetle and the LMAX disruptor).

A batch keeps every call's own outcome: a rejected bet is recorded as such and its
neighbours commit. The batch engine decides how to run a batch (operations/engine.py). The
queue holds only calls in flight (the server's maximum_concurrent_rpcs bounds them); a call whose caller
gave up is dropped before its batch runs.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

Call = TypeVar("Call")
Result = TypeVar("Result")
Failure = TypeVar("Failure", bound=Exception)


class GroupCommit(Generic[Call, Result, Failure]):
    def __init__(self, run: Callable[[list[Call]], Awaitable[list[Result | Failure]]], *,
                 batch_max: int, batches_max: int) -> None:
        if batch_max < 1 or batches_max < 1:
            raise ValueError("group commit: batch_max and batches_max must be >= 1")
        self._run = run
        self._batch_max = batch_max
        self._slots = asyncio.Semaphore(batches_max)
        self._queue: deque[tuple[Call, asyncio.Future[Result | Failure]]] = deque()
        self._flusher: asyncio.Task[None] | None = None
        self._batches: set[asyncio.Task[None]] = set()
        self._closed = False
        self.batch_sizes_total = 0
        self.batches_total = 0

    @property
    def batches_in_flight(self) -> int:
        """Batches running now (a batch's own run counts itself)."""
        return len(self._batches)

    async def submit(self, call: Call) -> Result:
        """The call's outcome; its own error (or the whole batch's failure) is raised."""
        if self._closed:
            raise RuntimeError("group commit is closed: the server is shutting down")
        future: asyncio.Future[Result | Failure] = asyncio.get_running_loop().create_future()
        self._queue.append((call, future))
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush(), name="group-commit-flusher")
        result = await future
        if isinstance(result, Exception):
            raise result
        return result

    async def _flush(self) -> None:
        while self._queue:
            await self._slots.acquire()
            started = False
            try:
                batch = self._take()
                if batch:
                    task = asyncio.create_task(self._run_one(batch))
                    self._batches.add(task)
                    task.add_done_callback(self._batch_done)
                    started = True
            finally:
                if not started:
                    self._slots.release()

    def _take(self) -> list[tuple[Call, asyncio.Future[Result | Failure]]]:
        """Up to batch_max waiting calls; a call whose caller gave up (deadline passed,
        cancelled) is dropped here rather than run for nobody."""
        batch: list[tuple[Call, asyncio.Future[Result | Failure]]] = []
        while self._queue and len(batch) < self._batch_max:
            entry = self._queue.popleft()
            if not entry[1].cancelled():
                batch.append(entry)
        return batch

    def _batch_done(self, task: asyncio.Task[None]) -> None:
        self._batches.discard(task)
        self._slots.release()

    async def _run_one(self, batch: list[tuple[Call, asyncio.Future[Result | Failure]]],
                       ) -> None:
        self.batches_total += 1
        self.batch_sizes_total += len(batch)
        try:
            results = await self._run([call for call, _ in batch])
        except Exception as exc:  # the whole batch failed (database down): every call sees it
            for _, future in batch:
                if not future.done():
                    future.set_exception(exc)
            return
        for (_, future), result in zip(batch, results, strict=True):
            if not future.done():  # a caller whose deadline passed no longer waits
                future.set_result(result)

    async def close(self) -> None:
        """Refuses new calls and waits for the batches in flight (their callers get their
        answers)."""
        self._closed = True
        pending = [t for t in (self._flusher, *self._batches) if t is not None]
        if pending:
            await asyncio.wait(pending)
