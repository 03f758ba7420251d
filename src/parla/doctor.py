"""``parla doctor``: what is installed, which engines can run and why not, where the data lives,
and whether the services the settings name (PostgreSQL, Redis, Chroma, a language model endpoint)
answer. Each check is quick and reads only; nothing is started or changed."""

from __future__ import annotations

import platform
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import httpx

from parla import __version__
from parla.settings import Settings

Status = Literal["ok", "warn", "fail", "off"]
"""``fail``: something configured or needed for speech does not work; ``warn``: an optional part is
missing; ``off``: not configured."""

TIMEOUT_S = 3.0


@dataclass(frozen=True)
class Check:
    name: str
    status: Status
    detail: str


def _safe_url(url: str) -> str:
    """A connection URL without its password."""
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # not an SQLAlchemy URL (redis://, http://): cut out what sits before '@'
        scheme, sep, rest = url.partition("://")
        return f"{scheme}{sep}{rest.rpartition('@')[2]}" if sep else url


def _attempt(name: str, probe: Callable[[], str]) -> Check:
    try:
        return Check(name, "ok", probe())
    except Exception as exc:
        return Check(name, "fail", f"{type(exc).__name__}: {exc}".strip()[:300])


def check_database(settings: Settings) -> Check:
    from sqlalchemy import create_engine, text

    url = settings.resolved_database_url
    if url.startswith("sqlite"):
        path = Path(url.split("///", 1)[-1])
        if not path.exists():  # reading only: the file is made by the first start, not by a check
            return Check("database", "ok", f"SQLite at {path.resolve()} (made on the first start)")

    def probe() -> str:
        engine = create_engine(url, connect_args={} if url.startswith("sqlite") else {"connect_timeout": 3})
        try:
            with engine.connect() as connection:
                connection.execute(text("SELECT 1"))
        finally:
            engine.dispose()
        return f"{_safe_url(url)} answers"

    return _attempt("database", probe)


def check_queue(settings: Settings) -> Check:
    if not settings.redis_url:
        return Check(
            "job queue", "ok", f"huey on SQLite under {settings.data_dir.resolve()} (a consumer inside the server)"
        )
    url = settings.redis_url

    def probe() -> str:
        import redis

        client = redis.Redis.from_url(url, socket_connect_timeout=TIMEOUT_S, socket_timeout=TIMEOUT_S)
        try:
            client.ping()
        finally:
            client.close()
        return f"huey on Redis at {_safe_url(url)} answers (start consumers with `parla worker`)"

    return _attempt("job queue", probe)


def check_http(name: str, url: str | None, path: str, off: str) -> Check:
    if not url:
        return Check(name, "off", off)

    def probe() -> str:
        response = httpx.get(url.rstrip("/") + path, timeout=TIMEOUT_S)
        if response.status_code >= 500:
            raise RuntimeError(f"{_safe_url(url)} answered {response.status_code}")
        return f"{_safe_url(url)} answers"

    return _attempt(name, probe)


def check_engines(settings: Settings) -> list[Check]:
    from parla.engines.registry import EngineRegistry
    from parla.engines.remote import RemoteEngine

    registry = EngineRegistry.from_entry_points(settings)
    registry.start()  # asks the workers of remote engines how they are
    try:
        checks = []
        for engine in registry:
            state = engine.status()
            where = f"worker at {engine.url}" if isinstance(engine, RemoteEngine) else "in process"
            if state.available:
                checks.append(Check(f"engine {engine.name}", "ok", f"{engine.description} ({where})"))
            else:
                needed = engine.name in (settings.default_engine, settings.default_clone_engine)
                level: Status = "fail" if needed else "warn"
                checks.append(Check(f"engine {engine.name}", level, state.reason or "unavailable"))
        checks.extend(Check(f"engine {name}", "fail", reason) for name, reason in registry.broken.items())
    finally:
        registry.shutdown()
    return checks


def check_engine_environments(settings: Settings) -> list[Check]:
    """Each heavy engine's own environment and weights (``parla engines install NAME``)."""
    from parla.engines.catalog import entries
    from parla.engines.envs import engine_env
    from parla.engines.weights import find_weights

    checks = []
    for entry in entries():
        env = engine_env(settings, entry.name)
        name = f"environment {entry.name}"
        if not env.installed:
            checks.append(Check(name, "off", f"not installed (`parla engines install {entry.name}`)"))
            continue
        found = find_weights(
            entry.name,
            entry.weights,
            models_dir=settings.resolved_models_dir,
            reference_dir=settings.engine_weights_dir(entry.name),
        )
        if found.reason is not None:
            checks.append(Check(name, "warn", f"installed in {env.root}; {found.reason}"))
        else:
            checks.append(Check(name, "ok", f"installed in {env.root}; weights: {found.where()}"))
    return checks


def check_models() -> list[Check]:
    from parla.characters.llm import bundled_model_path
    from parla.engines.piper import bundled_model
    from parla.knowledge.embedder import bundled_model_dir
    from parla.services.transcription import bundled_model_path as whisper_path

    found: list[tuple[str, Callable[[], Path]]] = [
        ("Piper voice (joe)", lambda: bundled_model()[0]),
        ("Whisper tiny.en", whisper_path),
        ("SmolLM2-135M (characters)", bundled_model_path),
        ("all-MiniLM-L6-v2 (knowledge)", bundled_model_dir),
    ]
    checks = []
    for name, locate in found:
        try:
            path = locate()
            checks.append(Check(name, "ok" if path.exists() else "fail", str(path)))
        except Exception as exc:
            checks.append(Check(name, "fail", f"not installed: {exc}"))
    return checks


def check_llm_runtime(settings: Settings) -> Check:
    from parla.characters.runtime import LlamaRuntime, cached_wheel

    runtime = LlamaRuntime(settings.data_dir / "logs" / "llm-runtime.log")
    state = runtime.state()
    detail = state.detail
    wheel = cached_wheel(runtime.wheels)
    if not state.ready and wheel is not None:
        detail += f"; a built wheel is cached ({wheel.name})"
    status: Status = "ok" if state.ready else "warn"
    return Check("language model runtime", status, detail)


def check_data_dir(settings: Settings) -> Check:
    path = settings.data_dir.resolve()
    probe_dir = path if path.exists() else next(p for p in path.parents if p.exists())
    free_gb = shutil.disk_usage(probe_dir).free / 1e9
    if not probe_dir.is_dir() or not _writable(probe_dir):
        return Check("data dir", "fail", f"{path} is not writable")
    made = "" if path.exists() else " (made on the first start)"
    return Check("data dir", "ok" if free_gb > 1 else "warn", f"{path}{made}, {free_gb:.1f} GB free")


def _writable(path: Path) -> bool:
    import os

    return os.access(path, os.W_OK)


def check_program(name: str, program: str, why: str) -> Check:
    found = shutil.which(program)
    if not found:
        return Check(name, "warn", f"{program} not found: {why}")
    try:
        version = subprocess.run(
            [found, "--version"], capture_output=True, text=True, timeout=10, check=False
        ).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        version = ""
    return Check(name, "ok", f"{found} {version.splitlines()[0] if version else ''}".strip())


def run_checks(settings: Settings) -> list[Check]:
    checks = [
        Check("parla", "ok", f"{__version__} on Python {platform.python_version()} ({sys.executable})"),
        check_data_dir(settings),
        check_database(settings),
        check_queue(settings),
        *check_engines(settings),
        *check_engine_environments(settings),
        *check_models(),
        check_llm_runtime(settings),
        check_http(
            "language model endpoint",
            settings.llm_base_url,
            "/models",
            "characters use the embedded model (set PARLA_LLM_BASE_URL for an OpenAI-compatible endpoint)",
        ),
        check_http(
            "knowledge base",
            settings.chroma_url,
            "/api/v2/heartbeat",
            f"embedded Chroma under {settings.resolved_chroma_path.resolve()} (PARLA_CHROMA_URL for a server)",
        ),
        check_program("Chromium", "chromium", "only the web studio's browser tests need it"),
    ]
    return checks
