"""Engines are found through the ``parla.engines`` entry points, built-ins included, so a
third-party package adds an engine by declaring one.

The registry holds each engine with its ``ModelManager`` (its runner thread, its model's
lifetime). ``load``/``unload`` are the one way to load or free a model; ``voice_presets`` gathers
what each engine says about a built-in voice; ``start``/``shutdown`` bracket the background work
(remote engines' refreshers, idle timers).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Iterator, Mapping
from importlib.metadata import EntryPoint, entry_points
from typing import Any

from pydantic import ValidationError

from parla.engines.base import Engine, EngineContext, VoiceRef
from parla.engines.manager import ModelManager
from parla.engines.remote import PROBE_TIMEOUT, RemoteEngine
from parla.engines.runner import EngineRunner
from parla.errors import InvalidInputError, ServiceUnavailableError
from parla.settings import Settings

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "parla.engines"
FIRST_ANSWER_WAIT_S = (PROBE_TIMEOUT.connect or 0.5) + (PROBE_TIMEOUT.read or 2.0)
"""How long ``start`` waits for the workers' first answers, so that what a server says of its remote
engines from its first request on is what they answered, not "not asked yet"."""


class UnknownEngineError(InvalidInputError):
    """No engine of that name is installed (a 400 naming the ones that are)."""

    def __init__(self, name: str, known: Iterable[str]) -> None:
        self.name = name
        self.known = sorted(known)
        super().__init__(f"unknown engine {name!r}; available: {', '.join(self.known)}", param="engine")


def _build(ep: EntryPoint, settings: Settings) -> Engine:
    """The engine of entry point ``ep``, configured from ``settings``."""
    engine_cls: Any = ep.load()
    if not (isinstance(engine_cls, type) and issubclass(engine_cls, Engine)):
        raise TypeError(f"{ep.value} is not a subclass of parla.engines.Engine")
    try:
        return engine_cls.from_settings(settings, ep.name)
    except ValidationError as exc:
        if exc.title != engine_cls.settings_model.__name__:
            raise
        # Its section holds a setting the engine refuses: name the variables, as the operator set them.
        problems = (
            f"PARLA_ENGINES__{ep.name.upper()}__{'__'.join(map(str, e['loc'])).upper()}: {e['msg']}"
            for e in exc.errors()
        )
        raise ValueError("; ".join(problems)) from None


class EngineRegistry:
    def __init__(
        self, engines: Iterable[Engine], *, idle_ttl_s: Mapping[str, float] | float = 0.0, idle_trim_s: float = 0.0
    ) -> None:
        """``idle_ttl_s``: seconds unused after which an engine's model is unloaded (0: never), for
        all engines or by name; ``idle_trim_s``: after which its working memory is given back. Never
        for a remote engine: the worker's model is the worker's."""
        self._engines = {e.name: e for e in engines}

        def ttl(engine: Engine) -> float:
            if isinstance(engine, RemoteEngine):
                return 0.0
            return idle_ttl_s.get(engine.name, 0.0) if isinstance(idle_ttl_s, Mapping) else idle_ttl_s

        self._managers = {
            name: ModelManager(e, idle_ttl_s=ttl(e), idle_trim_s=0.0 if isinstance(e, RemoteEngine) else idle_trim_s)
            for name, e in self._engines.items()
        }
        self.broken: dict[str, str] = {}
        """Entry points that failed to import, with the reason (shown by /health)."""

    @classmethod
    def from_entry_points(cls, settings: Settings, *, remote: bool = True) -> EngineRegistry:
        """The installed engines, each built by ``Engine.from_settings`` from its section of
        ``settings.engines``, or replaced by a ``RemoteEngine`` where its section names a worker
        (``remote=False``: local engines only, as a worker serves them)."""
        engines: dict[str, Engine] = {}
        broken: dict[str, str] = {}
        for ep in entry_points(group=ENTRY_POINT_GROUP):
            section = settings.engines.get(ep.name)
            if remote and section is not None and section.url:
                continue  # served by a worker: its dependencies need not be installed here
            try:
                engines[ep.name] = _build(ep, settings)
            except Exception as exc:  # a broken plugin must not take the server down
                log.warning("engine %s failed to load: %s", ep.name, exc)
                broken[ep.name] = f"{type(exc).__name__}: {exc}"
        for name, section in settings.engines.items():
            if remote and section.url:
                engines[name] = RemoteEngine(name, section, context=EngineContext(data_dir=settings.data_dir))
            elif name not in engines and name not in broken and not section.url:
                # Settings for an engine that is not installed: said, rather than silently unused.
                broken[name] = f"configured (PARLA_ENGINES__{name.upper()}__...) but no such engine is installed"

        def idle_ttl_s(name: str) -> float:
            section = settings.engines.get(name)
            if section is not None and section.idle_ttl_s is not None:
                return section.idle_ttl_s
            return settings.engine_idle_ttl_s

        registry = cls(
            engines.values(),
            idle_ttl_s={name: idle_ttl_s(name) for name in engines},
            idle_trim_s=settings.engine_idle_trim_s,
        )
        registry.broken = broken
        return registry

    # -- lookup -----------------------------------------------------------------------------------

    def names(self) -> list[str]:
        return sorted(self._engines)

    def get(self, name: str) -> Engine:
        try:
            return self._engines[name]
        except KeyError:
            raise UnknownEngineError(name, self._engines) from None

    def manager(self, name: str) -> ModelManager:
        self.get(name)
        return self._managers[name]

    def runner(self, name: str) -> EngineRunner:
        return self.manager(name).runner

    def __iter__(self) -> Iterator[Engine]:
        return iter(self._engines[name] for name in self.names())

    def voice_presets(self, voice: str) -> dict[str, Mapping[str, Any]]:
        """What each engine says about built-in voice ``voice``, by engine name (``VoiceRef.presets``).
        Engines own their presets, so the voice library needs no list of engines."""
        return {e.name: e.voice_presets[voice] for e in self if voice in e.voice_presets}

    def engine_voices(self) -> list[dict[str, Any]]:
        """The voices the engines bring themselves (Kokoro's styles), described for the listings.
        An engine that fails to say is left out, never the listing."""
        listed: list[dict[str, Any]] = []
        for engine in self:
            try:
                listed.extend(v.describe(engine.name) for v in engine.voices())
            except Exception as exc:  # a third-party engine's bug must not break every voice listing
                log.warning("engine %s could not list its voices: %s", engine.name, exc)
        return listed

    def engine_voice(self, name: str) -> VoiceRef | None:
        """The first engine's own voice called ``name`` (``Engine.voice``), or ``None``. Raises
        ``InvalidInputError`` where an engine says the name is meant for it but wrong, and
        ``ServiceUnavailableError`` where the name is one of an engine's that cannot say now (a
        worker that is down): "unknown voice" would be wrong."""
        for engine in self:
            try:
                found = engine.voice(name)
            except (InvalidInputError, ServiceUnavailableError):
                raise
            except Exception as exc:
                log.warning("engine %s could not look up voice %r: %s", engine.name, name, exc)
                continue
            if found is not None:
                return found
        return None

    # -- models -----------------------------------------------------------------------------------

    async def load(self, name: str) -> None:
        """Load engine ``name``'s model, on its runner thread. Raises ``UnknownEngineError``,
        ``EngineUnavailableError``."""
        await self.manager(name).load()

    async def unload(self, name: str) -> None:
        """Free engine ``name``'s model, on its runner thread: after the requests already queued,
        never under one in progress."""
        await self.manager(name).unload()

    # -- life -------------------------------------------------------------------------------------

    def start(self) -> None:
        """Start the background work: each remote engine's refresher, whose first answers this waits
        for (at most ``FIRST_ANSWER_WAIT_S`` in all). Idempotent; blocking, so call it off the event loop."""
        remotes = [e for e in self._engines.values() if isinstance(e, RemoteEngine)]
        for engine in remotes:
            engine.start()
        deadline = time.monotonic() + FIRST_ANSWER_WAIT_S
        for engine in remotes:
            engine.wait_answered(max(0.0, deadline - time.monotonic()))

    def shutdown(self) -> None:
        for manager in self._managers.values():
            manager.close()
        for engine in self._engines.values():
            if isinstance(engine, RemoteEngine):
                engine.close()  # the worker's model is the worker's: other gateways may be using it
            else:
                engine.unload()
