"""Running blocking engines off the event loop, one request at a time per engine.

Each engine gets one worker thread. Requests queue in arrival order, so concurrent clients
never share a model mid-utterance (no mixed audio) and memory stays flat; on a small CPU,
parallel synthesis gains no throughput anyway. Chunks flow back to the event loop as they are
made, so responses stream.

An engine that declares ``concurrency`` above 1 gets that many threads: it has said that its
requests may overlap (``clone``: one request's voice conversion beside the next one's Piper,
which would otherwise leave a core idle at the end of every request). Unloading still needs the
engine to itself: it waits for the requests running, and the requests queued wait for it.

The runner also counts what is queued or running, and says when the last of it is done
(``on_idle``): that is how the engine's ``ModelManager`` knows how long its model has gone unused.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import threading
import time
from collections.abc import AsyncGenerator, Callable, Iterator
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from typing import ParamSpec, TypeVar

from parla.engines.base import AudioChunk, Engine
from parla.offload import iterate_in_thread

T = TypeVar("T")
P = ParamSpec("P")


class EngineRunner:
    def __init__(self, engine: Engine, *, on_idle: Callable[[], None] | None = None) -> None:
        self.engine = engine
        self.workers = max(1, engine.concurrency)
        self._executor = ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix=f"engine-{engine.name}")
        self._gate = _Gate()
        self._on_idle = on_idle
        self._count_lock = threading.Lock()
        self._pending = 0
        self.last_used = time.monotonic()
        """When the last job finished (monotonic clock)."""

    @property
    def pending(self) -> int:
        """Jobs queued or running (housekeeping handed in with ``submit`` not included)."""
        return self._pending

    def _begin(self) -> None:
        with self._count_lock:
            self._pending += 1

    def _end(self) -> None:
        with self._count_lock:
            self._pending -= 1
            self.last_used = time.monotonic()
            idle = self._pending == 0
        if idle and self._on_idle is not None:
            self._on_idle()

    def _counted(self, fn: Callable[[], T], *, alone: bool = False) -> Callable[[], T]:
        def job() -> T:
            try:
                with self._gate.held(alone=alone):
                    return fn()
            finally:
                self._end()

        return job

    async def call(self, fn: Callable[[], T], *, alone: bool = False) -> T:
        """Run ``fn`` on the engine's thread, after the requests already queued. ``alone``: with no
        other job of this engine running meanwhile (unloading), where it has several threads."""
        self._begin()
        try:
            future = asyncio.get_running_loop().run_in_executor(self._executor, self._counted(fn, alone=alone))
        except BaseException:  # never queued (the runner is shut down): it was never pending either
            self._end()
            raise
        return await future

    def submit(self, fn: Callable[[], T]) -> Future[T]:
        """Queue ``fn`` on the engine's thread without counting it as use (the manager's own
        housekeeping, which must not keep a model alive), alone (it may unload). Raises
        ``RuntimeError`` after shutdown."""

        def job() -> T:
            with self._gate.held(alone=True):
                return fn()

        return self._executor.submit(job)

    def stream(self, make: Callable[[], Iterator[AudioChunk]]) -> AsyncGenerator[AudioChunk, None]:
        """Iterate ``make()`` on the engine's thread, after the requests already queued, yielding
        its chunks here as they arrive (the shared bridge, ``iterate_in_thread``).

        Closing this iterator early (a client went away) stops the synthesis at its next chunk.
        """
        return iterate_in_thread(make, _CountedJobs(self))

    def shutdown(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)


class _CountedJobs(Executor):
    """The engine's thread as an ``Executor`` whose jobs count as use (``pending``, ``on_idle``),
    as ``call``'s do: what the bridge queues there keeps the model loaded until it is done."""

    def __init__(self, runner: EngineRunner) -> None:
        self._runner = runner

    def submit(self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> Future[T]:
        runner = self._runner
        runner._begin()
        try:
            return runner._executor.submit(runner._counted(functools.partial(fn, *args, **kwargs)))
        except BaseException:  # never queued (the runner is shut down): it was never pending either
            runner._end()
            raise


class _Gate:
    """Jobs that share the engine, and jobs that need it alone: an ``alone`` job waits for those
    running, and jobs that come after it wait for it (so a stream of requests cannot starve an
    unload). With one thread every job is alone anyway, and nothing ever waits here."""

    def __init__(self) -> None:
        self._changed = threading.Condition()
        self._running = 0
        self._waiting_alone = 0
        self._alone = False

    @contextlib.contextmanager
    def held(self, *, alone: bool) -> Iterator[None]:
        with self._changed:
            if alone:
                self._waiting_alone += 1
                self._changed.wait_for(lambda: self._running == 0 and not self._alone)
                self._waiting_alone -= 1
                self._alone = True
            else:
                self._changed.wait_for(lambda: not self._alone and not self._waiting_alone)
                self._running += 1
        try:
            yield
        finally:
            with self._changed:
                if alone:
                    self._alone = False
                else:
                    self._running -= 1
                self._changed.notify_all()
