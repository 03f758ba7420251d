"""``parla serve``'s heavy engine workers: started from their own environments, kept alive, stopped.

A heavy engine lives in its own virtual environment (``parla engines install NAME``), so the server
cannot import it: it runs it as a worker, ``<env>/bin/parla serve-engine NAME --port P`` on a free
local port, and registers that worker as the engine's remote section (``settings.engines[NAME].url``),
which the registry serves with a ``RemoteEngine`` like any configured worker. Requests route to it
by name; nothing else in the server knows it is supervised.

Which engines get a worker (``plan``): every catalogued engine (``parla.engines.catalog``) whose
environment is installed, whose weights are present (``parla.engines.weights``) and whose
environment has the engine, unless ``PARLA_ENGINES__<NAME>__URL`` names a worker for it already, or
it runs in this process on the environment's backend (its entry point is installed here and
available: the kokoro engine on kokoro-onnx runs here, but the kokoro environment is Kokoro on torch,
so once it is installed with its weights, its worker serves ``kokoro``). ``Plan.skipped`` says why
each of the others has none.

A worker that dies is started again on the same port (the URL the registry holds stays right),
after a pause that doubles from ``BACKOFF_S[0]`` up to ``BACKOFF_S[-1]`` while it keeps dying, and
starts from the beginning once it has stayed up ``STABLE_S``. Its output goes to
``<data_dir>/logs/engine-<name>.log``. It runs with ``HF_HUB_OFFLINE=1`` (nothing downloads), and
watches the server: if the server dies without stopping it (a ``kill -9``), it stops itself
(``watch_supervisor``). ``stop`` ends every worker (SIGTERM, then SIGKILL after ``STOP_TIMEOUT_S``).

While it runs, each worker's pid, port and URL are in ``<env>/worker.json``, so that ``parla
engines`` in another process can find it and ask it for its memory.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

from parla.engines.catalog import entries
from parla.engines.catalog import entry as catalog_entry
from parla.engines.envs import engine_env
from parla.engines.weights import find_weights, hub_offline
from parla.settings import EngineSection, Settings

log = logging.getLogger(__name__)

BACKOFF_S = (1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 60.0)
"""Pauses before restarting a worker that keeps dying, one step longer after each death."""
STABLE_S = 60.0
"""A worker up this long is well: its next death is restarted after the first pause again."""
STOP_TIMEOUT_S = 10.0
"""How long a worker has to stop after SIGTERM before it is killed."""
POLL_S = 0.25
SUPERVISOR_PID_VARIABLE = "PARLA_SUPERVISOR_PID"
"""Set in a worker's environment: the process that supervises it, which it outlives by no more than a second."""
STATE_FILE = "worker.json"


@dataclass(frozen=True)
class WorkerSpec:
    """One worker to run: engine ``name`` served by ``command`` (``--port`` is added)."""

    name: str
    command: tuple[str, ...]
    environment: Mapping[str, str]
    """Set over this process's environment for the worker."""
    log_path: Path
    state_path: Path | None = None
    timeout_s: float = 300.0
    """The registered section's wait for the worker's next bytes (its ``timeout_s``)."""


@dataclass
class Plan:
    workers: list[WorkerSpec] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)
    """Catalogued engines without a worker, and why."""


def served_in_process(settings: Settings, name: str) -> bool:
    """Whether engine ``name`` runs in this process as its catalogued environment would run it: its
    entry point is installed here, builds, says it is available (its packages importable and its
    weights found) and serves on the environment's backend (Kokoro on ONNX here does not stand in
    for Kokoro on torch). Cheap: engines build without loading anything."""
    wanted = catalog_entry(name).backend
    for ep in entry_points(group="parla.engines", name=name):
        try:
            engine = ep.load().from_settings(settings, name)
            if engine.unavailable_reason() is not None:
                return False
            # An operator who pinned another backend (PARLA_ENGINES__KOKORO__BACKEND=onnx) chose this process.
            chosen = str(getattr(engine.settings, "backend", "auto"))
            return not wanted or engine.backend == wanted or chosen not in ("auto", wanted)
        except Exception:  # an engine that cannot even be built here does not run here
            return False
    return False


def worker_environment(settings: Settings, name: str) -> dict[str, str]:
    """What a worker for ``name`` is told, over the server's own environment: the server's stores
    and directories (the settings may have come from arguments, not the environment), the engine's
    section, and no network for model hubs."""
    env = {
        "PARLA_DATA_DIR": str(settings.data_dir.resolve()),
        "PARLA_DATABASE_URL": settings.resolved_database_url,
        "PARLA_HOST": "127.0.0.1",
        "PARLA_LOG_LEVEL": settings.log_level,
        "PARLA_DEVICE": settings.device,
        "PARLA_ENGINE_IDLE_TTL_S": str(settings.engine_idle_ttl_s),
        "PARLA_ENGINE_IDLE_TRIM_S": str(settings.engine_idle_trim_s),
        "PARLA_MODELS_DIR": str(settings.resolved_models_dir.resolve()),
        "PARLA_ENGINES_DIR": str(settings.resolved_engines_dir.resolve()),
        "PARLA_SUPERVISE_ENGINES": "false",
        "PARLA_LLM_RUNTIME_AUTOINSTALL": "false",
        SUPERVISOR_PID_VARIABLE: str(os.getpid()),
        "PYTHONUNBUFFERED": "1",
    }
    if settings.allowed_paths:
        env["PARLA_ALLOWED_PATHS"] = ",".join(str(p.resolve()) for p in settings.allowed_paths)
    if settings.xtts_model_dir:
        env["PARLA_XTTS_MODEL_DIR"] = str(settings.xtts_model_dir.expanduser().resolve())
    section = settings.engines.get(name)
    if section is not None:
        prefix = f"PARLA_ENGINES__{name.upper()}__"
        own = section.engine_fields() | {"device": section.device, "idle_ttl_s": section.idle_ttl_s}
        for key, value in own.items():
            if value is not None:
                env[prefix + key.upper()] = _env_value(value)
    hub_offline(env)
    return env


def _env_value(value: object) -> str:
    """A setting as an environment variable holds it (what pydantic-settings reads back)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str | int | float | Path):
        return str(value)
    return json.dumps(value, default=str)


def plan(settings: Settings, *, in_process: Callable[[Settings, str], bool] | None = None) -> Plan:
    """The workers ``parla serve`` should run (see the module's docstring), and why the other
    catalogued engines get none. Reads the disk only. ``in_process``: whether an engine runs in this
    process (``served_in_process``)."""
    runs_here = in_process or served_in_process
    result = Plan()
    logs = settings.data_dir.resolve() / "logs"
    for entry in entries():
        name = entry.name
        section = settings.engines.get(name)
        if section is not None and section.url:
            result.skipped[name] = f"served by the worker at {section.url} (PARLA_ENGINES__{name.upper()}__URL)"
            continue
        env = engine_env(settings, name)
        if not env.installed:
            result.skipped[name] = f"not installed (`parla engines install {name}` makes {env.root})"
            continue
        weights = find_weights(
            name,
            entry.weights,
            models_dir=settings.resolved_models_dir,
            reference_dir=settings.engine_weights_dir(name),
        )
        if weights.reason is not None:
            result.skipped[name] = weights.reason
            continue
        if name not in env.engine_names():
            result.skipped[name] = (
                f"the Parla in {env.root} has no engine {name!r}; reinstall it (`parla engines install {name} --force`)"
            )
            continue
        if runs_here(settings, name):
            result.skipped[name] = "runs in this process (its packages and weights are here)"
            continue
        result.workers.append(
            WorkerSpec(
                name=name,
                command=(str(env.parla), "serve-engine", name),
                environment=worker_environment(settings, name),
                log_path=logs / f"engine-{name}.log",
                state_path=env.root / STATE_FILE,
                timeout_s=section.timeout_s if section is not None else EngineSection().timeout_s,
            )
        )
    return result


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass(frozen=True)
class WorkerState:
    """A supervised worker as ``parla engines`` and ``GET /v1/engines`` show it."""

    name: str
    url: str
    pid: int | None
    """``None`` while it is down (between a death and its restart)."""
    restarts: int
    log_path: Path
    last_exit: int | None

    def describe(self) -> dict[str, Any]:
        return {
            "url": self.url,
            "pid": self.pid,
            "restarts": self.restarts,
            "log": str(self.log_path),
            "last_exit_code": self.last_exit,
        }


class _Worker:
    def __init__(self, spec: WorkerSpec, port: int) -> None:
        self.spec = spec
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.process: subprocess.Popen[bytes] | None = None
        self.started_at = 0.0
        self.next_start = 0.0
        self.deaths = 0
        """Deaths in a row, without a stable run between them: picks the next pause."""
        self.restarts = 0
        self.last_exit: int | None = None

    def state(self) -> WorkerState:
        process = self.process
        pid = process.pid if process is not None and process.poll() is None else None
        return WorkerState(self.spec.name, self.url, pid, self.restarts, self.spec.log_path, self.last_exit)


class Supervisor:
    """Runs the workers of ``specs`` (see ``plan``) from ``start`` to ``stop``."""

    def __init__(self, specs: list[WorkerSpec], *, skipped: Mapping[str, str] | None = None) -> None:
        self._workers = {spec.name: _Worker(spec, free_port()) for spec in specs}
        self.skipped = dict(skipped or {})
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> Supervisor:
        planned = plan(settings)
        return cls(planned.workers, skipped=planned.skipped)

    # -- what the rest of the server sees -------------------------------------------------------

    def names(self) -> list[str]:
        return sorted(self._workers)

    def sections(self) -> dict[str, EngineSection]:
        """Each worker as an engine section: its URL (the worker has the engine's own settings)."""
        return {name: EngineSection(url=w.url, timeout_s=w.spec.timeout_s) for name, w in sorted(self._workers.items())}

    def apply(self, settings: Settings) -> Settings:
        """``settings`` with each worker registered as its engine's remote section."""
        if not self._workers:
            return settings
        return settings.model_copy(update={"engines": {**settings.engines, **self.sections()}})

    def state(self, name: str) -> WorkerState | None:
        with self._lock:
            worker = self._workers.get(name)
            return worker.state() if worker else None

    def states(self) -> list[WorkerState]:
        with self._lock:
            return [w.state() for _, w in sorted(self._workers.items())]

    # -- life -----------------------------------------------------------------------------------

    def start(self) -> None:
        """Start every worker now and watch them from a thread (idempotent). Does not wait for them
        to be ready: until a worker answers, its engine is unavailable, saying so."""
        if self._thread is not None or self._stop.is_set():
            return
        with self._lock:
            for worker in self._workers.values():
                self._spawn(worker)
        self._thread = threading.Thread(target=self._watch, name="engine-supervisor", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop watching, then stop every worker (SIGTERM, SIGKILL after ``STOP_TIMEOUT_S``)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5.0)
        with self._lock:
            workers = list(self._workers.values())
        for worker in workers:
            if worker.process is not None and worker.process.poll() is None:
                worker.process.terminate()
        deadline = time.monotonic() + STOP_TIMEOUT_S
        for worker in workers:
            if worker.spec.state_path is not None:
                worker.spec.state_path.unlink(missing_ok=True)
            process = worker.process
            if process is None:
                continue
            try:
                process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.warning("engine worker %s did not stop within %.0f s: killing it", worker.spec.name, STOP_TIMEOUT_S)
                process.kill()
                process.wait(timeout=5.0)

    def _spawn(self, worker: _Worker) -> None:
        spec = worker.spec
        command = [*spec.command, "--port", str(worker.port)]
        spec.log_path.parent.mkdir(parents=True, exist_ok=True)
        try:
            with open(spec.log_path, "ab") as output:
                stamp = datetime.now(UTC).isoformat(timespec="seconds")
                output.write(f"\n=== {stamp} starting: {' '.join(command)}\n".encode())
                output.flush()
                # Not its own URL (`parla serve --workers N` sets it for the server processes).
                inherited = {k: v for k, v in os.environ.items() if k != f"PARLA_ENGINES__{spec.name.upper()}__URL"}
                worker.process = subprocess.Popen(
                    command,
                    env={**inherited, **spec.environment},
                    stdin=subprocess.DEVNULL,
                    stdout=output,
                    stderr=subprocess.STDOUT,
                    # Its own session: a Ctrl-C at the terminal reaches the server, which stops the
                    # workers itself, in order, rather than every process at once.
                    start_new_session=True,
                )
        except OSError as exc:  # the environment went away (`parla engines remove`) or is broken
            log.warning("could not start the %s worker (%s); trying again later", spec.name, exc)
            worker.process = None
            self._schedule_restart(worker, None)
            return
        worker.started_at = time.monotonic()
        pid = worker.process.pid
        log.info("engine %s: worker started at %s (pid %d, log %s)", spec.name, worker.url, pid, spec.log_path)
        if spec.state_path is not None:
            with contextlib.suppress(OSError):
                spec.state_path.write_text(
                    json.dumps(
                        {
                            "pid": worker.process.pid,
                            "port": worker.port,
                            "url": worker.url,
                            "supervisor_pid": os.getpid(),
                            "log": str(spec.log_path),
                            "restarts": worker.restarts,
                        }
                    )
                )

    def _schedule_restart(self, worker: _Worker, code: int | None) -> None:
        if worker.started_at and time.monotonic() - worker.started_at >= STABLE_S:
            worker.deaths = 0
        pause = BACKOFF_S[min(worker.deaths, len(BACKOFF_S) - 1)]
        worker.deaths += 1
        worker.last_exit = code
        worker.next_start = time.monotonic() + pause
        if code is not None:
            log.warning(
                "engine %s: its worker exited (code %s); restarting it in %.0f s (log: %s)",
                worker.spec.name,
                code,
                pause,
                worker.spec.log_path,
            )

    def _watch(self) -> None:
        while not self._stop.wait(POLL_S):
            with self._lock:
                for worker in self._workers.values():
                    if self._stop.is_set():
                        return
                    process = worker.process
                    if process is not None:
                        code = process.poll()
                        if code is not None:
                            worker.process = None
                            self._schedule_restart(worker, code)
                    elif time.monotonic() >= worker.next_start:
                        worker.restarts += 1
                        self._spawn(worker)


def watch_supervisor() -> None:
    """In a worker: stop (SIGTERM to itself, so it shuts down as on Ctrl-C) once the server that
    supervises it is gone, so that a server killed outright leaves no worker behind."""
    try:
        expected = int(os.environ.get(SUPERVISOR_PID_VARIABLE, ""))
    except ValueError:
        return

    def watch() -> None:
        while os.getppid() == expected:
            time.sleep(1.0)
        os.kill(os.getpid(), signal.SIGTERM)

    if os.getppid() == expected:
        threading.Thread(target=watch, name="supervisor-watch", daemon=True).start()
