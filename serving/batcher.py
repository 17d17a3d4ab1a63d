"""Micro-batching: concurrent requests share one model call.

Items queue up; a worker takes what is waiting, waits at most `window_s` for more (up to
`max_items` or `max_tokens`), and runs one encode for all of them on the model's own thread.
While that call runs, new items queue, so under load batches fill without any waiting.
"""

import asyncio
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


class MicroBatcher:
    def __init__(
        self,
        encode: Callable[[list[str]], list[Encoded]],
        executor: Executor,
        window_s: float,
        max_items: int,
        max_tokens: int,
        on_batch: Callable[[int], None] = lambda _: None,
    ):
        self._encode = encode
        self._executor = executor
        self._window_s = window_s
        self._max_items = max_items
        self._max_tokens = max_tokens
        self._on_batch = on_batch
        self._queue: asyncio.Queue[_Pending] | None = None
        self._worker: asyncio.Task | None = None

    async def submit(self, texts: list[str]) -> list[Encoded]:
        """Results for `texts`, in order; the texts may be spread over several model calls."""
        if self._worker is None:
            self._queue = asyncio.Queue()
            self._worker = asyncio.get_running_loop().create_task(self._run())
        loop = asyncio.get_running_loop()
        pending = [_Pending(text, _size_estimate(text), loop.create_future()) for text in texts]
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
            await self._encode_batch(loop, batch)

    async def _encode_batch(self, loop, batch: list[_Pending]) -> None:
        live = [item for item in batch if not item.future.cancelled()]
        if not live:
            return
        self._on_batch(len(live))
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
