"""Running blocking engines off the event loop, one request at a time per engine.

Each engine gets one worker thread. Requests queue in arrival order, so concurrent clients
never share a model mid-utterance (no mixed audio) and memory stays flat; on a small CPU,
parallel synthesis gains no throughput anyway. Chunks flow back to the event loop as they are
made, so responses stream.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncGenerator, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from parla.engines.base import AudioChunk, Engine

T = TypeVar("T")
_DONE = object()


class _Failure:
    def __init__(self, exc: BaseException) -> None:
        self.exc = exc


class EngineRunner:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"engine-{engine.name}")

    async def call(self, fn: Callable[[], T]) -> T:
        """Run ``fn`` on the engine's thread, after the requests already queued."""
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn)

    def call_sync(self, fn: Callable[[], T]) -> T:
        return self._executor.submit(fn).result()

    async def stream(self, make: Callable[[], Iterator[AudioChunk]]) -> AsyncGenerator[AudioChunk, None]:
        """Iterate ``make()`` on the engine's thread, yielding its chunks here as they arrive.

        Closing this iterator early (a client went away) stops the synthesis at its next chunk.
        """
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[object] = asyncio.Queue()
        stop = threading.Event()

        def send(item: object) -> None:
            try:
                loop.call_soon_threadsafe(queue.put_nowait, item)
            except RuntimeError:  # the loop is gone: nobody is listening any more
                stop.set()

        def produce() -> None:
            try:
                if stop.is_set():
                    return
                for chunk in make():
                    if stop.is_set():
                        return
                    send(chunk)
            except BaseException as exc:
                send(_Failure(exc))
            finally:
                send(_DONE)

        loop.run_in_executor(self._executor, produce)
        try:
            while True:
                item = await queue.get()
                if item is _DONE:
                    return
                if isinstance(item, _Failure):
                    raise item.exc
                assert isinstance(item, AudioChunk)
                yield item
        finally:
            stop.set()

    def shutdown(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
