"""One engine's model lifetime: where it runs, when it loads, and when it is let go.

A ``ModelManager`` owns an engine's runner thread and is the one way the rest of the server loads
or unloads a model (``EngineRegistry.load``/``unload``, the routes and the start-up preload call
it). Loading and unloading run on the engine's runner thread, behind the requests already
queued, so a model is never swapped under a synthesis in progress.

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
    seconds unused (0: never)."""

    def __init__(self, engine: Engine, *, idle_ttl_s: float = 0.0) -> None:
        self.engine = engine
        self.idle_ttl_s = idle_ttl_s
        self.runner = EngineRunner(engine, on_idle=self._arm if idle_ttl_s > 0 else None)
        self._lock = threading.Lock()
        self._timer: threading.Timer | None = None
        self._closed = False

    async def load(self) -> None:
        """Load the model (a no-op when it is loaded). Raises ``EngineUnavailableError``."""
        await self.runner.call(self.engine.load)

    async def unload(self) -> None:
        """Free the model; the next request loads it again."""
        await self.runner.call(self.engine.unload)

    # -- idle TTL ---------------------------------------------------------------------------------

    def _arm(self) -> None:
        """The runner has nothing left to do: unload in ``idle_ttl_s`` unless it is used before."""
        with self._lock:
            if self._closed:
                return
            if self._timer is not None:
                self._timer.cancel()
            self._timer = threading.Timer(self.idle_ttl_s, self._expire)
            self._timer.name = f"engine-{self.engine.name}-idle"
            self._timer.daemon = True  # a pending unload must not keep the process alive
            self._timer.start()

    def _expire(self) -> None:
        # Handed to the runner, so it waits for any request queued meanwhile, and checks then. After
        # shutdown the runner refuses it: there is nothing left to unload on.
        with contextlib.suppress(RuntimeError):
            self.runner.submit(self._unload_if_idle)

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
            if self._timer is not None:
                self._timer.cancel()
        self.runner.shutdown()
