"""One engine's model lifetime: where it runs, when it loads, and when it is let go.

A ``ModelManager`` owns an engine's runner thread and is the one way the rest of the server loads
or unloads a model (``EngineRegistry.load``/``unload``, the routes and the start-up preload call
it). Loading and unloading run on the engine's runner thread, behind the requests already
queued, so a model is never swapped under a synthesis in progress.

After ``PARLA_ENGINE_IDLE_TRIM_S`` seconds without a request (30 by default) an engine gives back
the working memory its requests left behind (``Engine.release_memory``: onnxruntime's arena, the
heap's freed pages), keeping its model; the next request takes it again.

With an idle TTL (``PARLA_ENGINE_IDLE_TTL_S``, or ``PARLA_ENGINES__<NAME>__IDLE_TTL_S``) a model
unused for that long is unloaded; the next request loads it again (engines load lazily in
``synthesize``). That is what lets several heavy models share one GPU. 0, the default, keeps
models loaded for the life of the process.

The device an engine's model goes to is decided here too (``resolve_device``): the engine gets it
in its ``EngineContext`` and reports where its model actually is in ``Engine.device``.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from parla.devices import cuda_device_count
from parla.engines.runner import EngineRunner

if TYPE_CHECKING:
    from parla.engines.base import Engine

log = logging.getLogger(__name__)

_CLOCK_SLACK_S = 0.01
"""A timer may wake a hair early by the monotonic clock; an unload that much early is still idle."""


def resolve_device(requested: str) -> str:
    """The device for a model from what the operator asked (``PARLA_DEVICE`` or the engine's section):
    ``auto`` is ``cuda`` where this process sees a CUDA GPU and ``cpu`` elsewhere; anything else
    (``cuda``, ``cuda:1``, ``cpu``) is taken as said (``parla serve`` refuses ``cuda`` without a GPU)."""
    requested = requested.strip().lower()
    if requested == "auto":
        return "cuda" if cuda_device_count() > 0 else "cpu"
    return requested


class ModelManager:
    """Loads and unloads one engine's model on its runner thread; unloads it after ``idle_ttl_s``
    seconds unused (0: never), and releases its working memory after ``idle_trim_s`` (0: never)."""

    def __init__(self, engine: Engine, *, idle_ttl_s: float = 0.0, idle_trim_s: float = 0.0) -> None:
        self.engine = engine
        self.idle_ttl_s = idle_ttl_s
        self.idle_trim_s = idle_trim_s
        self.runner = EngineRunner(engine, on_idle=self._arm if idle_ttl_s > 0 or idle_trim_s > 0 else None)
        self._lock = threading.Lock()
        self._timer: threading.Timer | None = None
        self._trim_timer: threading.Timer | None = None
        self._closed = False

    async def load(self) -> None:
        """Load the model (a no-op when it is loaded). Raises ``EngineUnavailableError``."""
        await self.runner.call(self.engine.load)

    async def unload(self) -> None:
        """Free the model; the next request loads it again."""
        await self.runner.call(self.engine.unload, alone=True)

    # -- idle TTL ---------------------------------------------------------------------------------

    def _arm(self) -> None:
        """The runner has nothing left to do: give back working memory in ``idle_trim_s`` and unload
        in ``idle_ttl_s``, unless it is used before."""
        with self._lock:
            if self._closed:
                return
            if self.idle_trim_s > 0:
                self._trim_timer = self._restart(self._trim_timer, self.idle_trim_s, self._unused_trim, "trim")
            if self.idle_ttl_s > 0:
                self._timer = self._restart(self._timer, self.idle_ttl_s, self._expire, "idle")

    def _restart(
        self, timer: threading.Timer | None, after_s: float, then: Callable[[], None], what: str
    ) -> threading.Timer:
        if timer is not None:
            timer.cancel()
        timer = threading.Timer(after_s, then)
        timer.name = f"engine-{self.engine.name}-{what}"
        timer.daemon = True  # a pending unload must not keep the process alive
        timer.start()
        return timer

    def _expire(self) -> None:
        # Handed to the runner, so it waits for any request queued meanwhile, and checks then. After
        # shutdown the runner refuses it: there is nothing left to unload on.
        with contextlib.suppress(RuntimeError):
            self.runner.submit(self._unload_if_idle)

    def _unused_trim(self) -> None:
        with contextlib.suppress(RuntimeError):
            self.runner.submit(self._trim_if_idle)

    def _trim_if_idle(self) -> None:
        idle_for = time.monotonic() - self.runner.last_used
        if self.runner.pending or idle_for < self.idle_trim_s - _CLOCK_SLACK_S or not self.engine.loaded:
            return
        started = time.perf_counter()
        try:
            self.engine.release_memory()
        except Exception:  # giving memory back is a courtesy: a failure must not reach a request
            log.exception("engine %s could not give back its working memory", self.engine.name)
            return
        log.debug(
            "engine %s gave back its working memory in %.0f ms",
            self.engine.name,
            1000 * (time.perf_counter() - started),
        )

    def _unload_if_idle(self) -> None:
        idle_for = time.monotonic() - self.runner.last_used
        if self.runner.pending or idle_for < self.idle_ttl_s - _CLOCK_SLACK_S or not self.engine.loaded:
            return  # used again since the timer was set (a newer timer covers that), or nothing to free
        log.info("unloading engine %s: unused for %.0f s", self.engine.name, idle_for)
        self.engine.unload()

    def close(self) -> None:
        """Stop the idle timer and the runner thread (the model itself is the registry's to free)."""
        with self._lock:
            self._closed = True
            for timer in (self._timer, self._trim_timer):
                if timer is not None:
                    timer.cancel()
        self.runner.shutdown()
