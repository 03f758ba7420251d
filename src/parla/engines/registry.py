"""Engines are found through the ``parla.engines`` entry points, built-ins included, so a
third-party package adds an engine by declaring one."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from importlib.metadata import entry_points
from typing import Any

from parla.engines.base import Engine
from parla.engines.remote import RemoteEngine
from parla.engines.runner import EngineRunner
from parla.errors import InvalidInputError
from parla.settings import Settings

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "parla.engines"


class UnknownEngineError(InvalidInputError):
    """No engine of that name is installed (a 400 naming the ones that are)."""

    def __init__(self, name: str, known: Iterable[str]) -> None:
        self.name = name
        self.known = sorted(known)
        super().__init__(f"unknown engine {name!r}; available: {', '.join(self.known)}", param="engine")


class EngineRegistry:
    def __init__(self, engines: Iterable[Engine]) -> None:
        self._engines = {e.name: e for e in engines}
        self._runners = {name: EngineRunner(e) for name, e in self._engines.items()}
        self.broken: dict[str, str] = {}
        """Entry points that failed to import, with the reason (shown by /health)."""

    @classmethod
    def from_entry_points(cls, settings: Settings, *, remote: bool = True) -> EngineRegistry:
        """The installed engines, each replaced by a ``RemoteEngine`` where ``settings.engines``
        names a worker for it (``remote=False``: local engines only, as a worker serves them)."""
        engines: dict[str, Engine] = {}
        broken: dict[str, str] = {}
        for ep in entry_points(group=ENTRY_POINT_GROUP):
            if remote and ep.name in settings.engines:
                continue  # served by a worker: its dependencies need not be installed here
            try:
                engine_cls: Any = ep.load()
                engines[ep.name] = engine_cls(settings)
            except Exception as exc:  # a broken plugin must not take the server down
                log.warning("engine %s failed to load: %s", ep.name, exc)
                broken[ep.name] = f"{type(exc).__name__}: {exc}"
        if remote:
            for name, worker in settings.engines.items():
                engines[name] = RemoteEngine(settings, name, worker)
        registry = cls(engines.values())
        registry.broken = broken
        return registry

    def names(self) -> list[str]:
        return sorted(self._engines)

    def get(self, name: str) -> Engine:
        try:
            return self._engines[name]
        except KeyError:
            raise UnknownEngineError(name, self._engines) from None

    def runner(self, name: str) -> EngineRunner:
        self.get(name)
        return self._runners[name]

    def __iter__(self) -> Any:
        return iter(self._engines[name] for name in self.names())

    def shutdown(self) -> None:
        for runner in self._runners.values():
            runner.shutdown()
        for engine in self._engines.values():
            if isinstance(engine, RemoteEngine):
                engine.close()  # the worker's model is the worker's: other gateways may be using it
            else:
                engine.unload()
