"""The one concurrency rule: blocking work never runs on the event loop.

Database reads and writes, file reads and hashing, audio decoding and encoding (PyAV), model
calls and HTTP probes of remote engines all block. An ``async`` route or service hands each such
call to ``offload``, which runs it on a worker thread; an engine's synthesis runs on that engine's
own runner thread instead (``engines/runner.py``), one request at a time. Plain ``def`` routes are
run on a thread by FastAPI and may block.

Work that yields as it goes (an engine's audio chunks, a language model's tokens) crosses to the
loop through ``iterate_in_thread``, the one thread-to-async bridge, so each item is sent on as soon
as it is made and a consumer that leaves stops the producer.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncGenerator, Callable, Iterator
from concurrent.futures import Executor
from typing import Generic, ParamSpec, TypeVar

P = ParamSpec("P")
T = TypeVar("T")


async def offload(function: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T:
    """``function(*args, **kwargs)`` on a worker thread, awaited."""
    return await asyncio.to_thread(function, *args, **kwargs)


class _End(Generic[T]):
    """The producer is done: ``error`` is what it raised, if anything. A type of its own, so no item
    the producer makes can be mistaken for the end."""

    def __init__(self, error: BaseException | None = None) -> None:
        self.error = error


async def iterate_in_thread(
    make: Callable[[], Iterator[T]], executor: Executor | None = None
) -> AsyncGenerator[T, None]:
    """Iterate ``make()`` on a thread of ``executor`` (asyncio's default pool when ``None``), and
    yield its items here as they arrive; what it raises is raised here.

    The iterator is made, advanced and closed on that thread only, so none of its blocking work
    runs on the loop. Nothing starts before the first item is asked for. Closing this generator
    early (a client went away) stops the producer before its next item and closes its iterator;
    the close does not wait for the item being made."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[T | _End[T]] = asyncio.Queue()
    stop = threading.Event()

    def send(item: T | _End[T]) -> None:
        try:
            loop.call_soon_threadsafe(queue.put_nowait, item)
        except RuntimeError:  # the loop is gone: nobody is listening any more
            stop.set()

    def produce() -> None:
        end: _End[T] = _End()
        try:
            if stop.is_set():  # closed while queued behind other work
                return
            items = make()
            try:
                for item in items:
                    if stop.is_set():
                        return
                    send(item)
            finally:
                # At once rather than when collected: a model's lock or connection is let go now.
                close = getattr(items, "close", None)
                if close is not None:
                    close()
        except BaseException as exc:
            end = _End(exc)
        finally:
            send(end)

    loop.run_in_executor(executor, produce)
    try:
        while True:
            item = await queue.get()
            if isinstance(item, _End):
                if item.error is not None:
                    raise item.error
                return
            yield item
    finally:
        stop.set()
