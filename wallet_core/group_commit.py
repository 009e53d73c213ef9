"""Group commit: concurrent calls are coalesced into one Postgres transaction.

Each call waits in a FIFO queue. A flusher takes up to `batch_max` of them, after waiting at
most `wait_us` for more to arrive (by yielding to the event loop, not by a timer, so the bound
holds below a millisecond), and hands them to the ledger as one batch while at most
`batches_max` batches are in flight. Under load the slots are busy, so the queue fills and
batches grow by themselves; at low load a call waits `wait_us` at most.

A batch keeps every call's own outcome: a rejected bet is recorded as such and its
neighbours commit. The ledger decides how to run a batch (Ledger._run_batch). The queue holds
only calls in flight (the server's maximum_concurrent_rpcs bounds them); a call whose caller
gave up is dropped before its batch runs.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

Call = TypeVar("Call")
Result = TypeVar("Result")
Failure = TypeVar("Failure", bound=Exception)


class GroupCommit(Generic[Call, Result, Failure]):
    def __init__(self, run: Callable[[list[Call]], Awaitable[list[Result | Failure]]], *,
                 wait_us: int, batch_max: int, batches_max: int) -> None:
        if batch_max < 1 or batches_max < 1 or wait_us < 0:
            raise ValueError("group commit: batch_max and batches_max >= 1, wait_us >= 0")
        self._run = run
        self._wait_s = wait_us / 1_000_000
        self._batch_max = batch_max
        self._slots = asyncio.Semaphore(batches_max)
        self._queue: deque[tuple[Call, asyncio.Future[Result | Failure]]] = deque()
        self._flusher: asyncio.Task[None] | None = None
        self._batches: set[asyncio.Task[None]] = set()
        self._closed = False
        self.batch_sizes_total = 0
        self.batches_total = 0

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
                deadline = time.perf_counter() + self._wait_s
                # Yielding, not a timer: libuv timers have millisecond granularity, and the
                # wait must stay well under one. Bounded by `deadline`.
                while len(self._queue) < self._batch_max and time.perf_counter() < deadline:  # noqa: ASYNC110
                    await asyncio.sleep(0)  # let calls that are already arriving join
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
