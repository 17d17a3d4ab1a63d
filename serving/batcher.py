"""Micro-batching: concurrent requests share one model call.

Items queue up; a worker takes what is waiting, waits at most `window_s` for more (up to
`max_items` or `max_tokens`), and runs one encode for all of them on the model's own thread.
While that call runs, new items queue, so under load batches fill without any waiting.

A batcher may yield to another (bulk work yields to online work): before each of its batches it
waits until the other is idle, for at most `max_yield_s`, so the other's requests never queue
behind more than one of its (small) batches, and it is never starved for good.
"""

import asyncio
import time
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Encoded:
    """One item's result: its vector and its token count, or why it could not be embedded."""

    vector: np.ndarray | None
    tokens: int
    # (error code, message) when the text cannot be embedded.
    problem: tuple[str, str] | None = None


@dataclass
class _Pending:
    text: str
    size: int
    future: asyncio.Future
    queued_at: float


class MicroBatcher:
    def __init__(
        self,
        encode: Callable[[list[str]], list[Encoded]],
        executor: Executor,
        window_s: float,
        max_items: int,
        max_tokens: int,
        on_batch: Callable[[int], None] = lambda _: None,
        on_wait: Callable[[float], None] = lambda _: None,
        yield_to: "MicroBatcher | None" = None,
        max_yield_s: float = 0.25,
    ):
        self._encode = encode
        self._executor = executor
        self._window_s = window_s
        self._max_items = max_items
        self._max_tokens = max_tokens
        self._on_batch = on_batch
        self._on_wait = on_wait
        self._yield_to = yield_to
        self._max_yield_s = max_yield_s
        self._queue: asyncio.Queue[_Pending] | None = None
        self._worker: asyncio.Task | None = None
        self._encoding = 0
        self._idle: asyncio.Event | None = None

    def queued(self) -> int:
        """Items waiting for a model call (not those in the call running now)."""
        return self._queue.qsize() if self._queue is not None else 0

    def busy(self) -> bool:
        return self.queued() > 0 or self._encoding > 0

    async def wait_idle(self, timeout_s: float) -> None:
        """Return once nothing is queued or encoding here, or after `timeout_s`."""
        deadline = time.monotonic() + timeout_s
        while self.busy() and (remaining := deadline - time.monotonic()) > 0:
            self._idle = self._idle or asyncio.Event()
            self._idle.clear()
            try:
                await asyncio.wait_for(self._idle.wait(), remaining)
            except TimeoutError:
                return

    def _note_idle(self) -> None:
        if self._idle is not None and not self.busy():
            self._idle.set()

    async def submit(self, texts: list[str]) -> list[Encoded]:
        """Results for `texts`, in order; the texts may be spread over several model calls."""
        if self._worker is None:
            self._queue = asyncio.Queue()
            self._worker = asyncio.get_running_loop().create_task(self._run())
        loop = asyncio.get_running_loop()
        now = time.monotonic()
        pending = [_Pending(text, _size_estimate(text), loop.create_future(), now) for text in texts]
        for item in pending:
            self._queue.put_nowait(item)
        return list(await asyncio.gather(*(item.future for item in pending)))

    async def close(self) -> None:
        if self._worker is not None:
            self._worker.cancel()

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = [await self._queue.get()]
            self._encoding += 1  # busy from the first item taken, through the window, to the call's end
            try:
                await self._fill_and_encode(loop, batch)
            finally:
                self._encoding -= 1
                self._note_idle()

    async def _fill_and_encode(self, loop, batch: list[_Pending]) -> None:
        size = batch[0].size
        deadline = loop.time() + self._window_s
        while len(batch) < self._max_items and size < self._max_tokens:
            if self._queue.empty():
                remaining = deadline - loop.time()
                if remaining <= 0:
                    break
                try:
                    item = await asyncio.wait_for(self._queue.get(), remaining)
                except TimeoutError:
                    break
            else:
                item = self._queue.get_nowait()
            batch.append(item)
            size += item.size
        if self._yield_to is not None:
            await self._yield_to.wait_idle(self._max_yield_s)
        await self._encode_batch(loop, batch)

    async def _encode_batch(self, loop, batch: list[_Pending]) -> None:
        live = [item for item in batch if not item.future.cancelled()]
        if not live:
            return
        self._on_batch(len(live))
        now = time.monotonic()
        for item in live:
            self._on_wait(now - item.queued_at)
        try:
            results = await loop.run_in_executor(self._executor, self._encode, [item.text for item in live])
        except Exception as error:  # the callers see the model's failure; the worker carries on
            for item in live:
                if not item.future.done():
                    item.future.set_exception(error)
            return
        for item, result in zip(live, results):
            if not item.future.done():
                item.future.set_result(result)


def _size_estimate(text: str) -> int:
    """Tokens before tokenizing (about four characters a token): only to bound a batch's size."""
    return max(1, len(text) // 4)
