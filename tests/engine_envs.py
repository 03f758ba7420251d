"""Heavy engines' environments for the tests: built once per machine, kept outside the checkout.

A heavy engine's test runs Parla's adapter inside the engine's own environment, as a worker
(``parla serve-engine NAME``), against a tiny model made there. The environment is made by Parla's
own installer, ``parla.engines.envs.install`` (what ``parla engines install NAME`` runs), from the
catalogue's recipe (``parla.engines.catalog``), into ``~/.cache/parla/test-engines/<name>-<key>``
(``PARLA_TEST_ENGINES_DIR``). ``key`` hashes what the environment holds (the recipe, Parla's own
requirements and entry points) but not where the checkout is: CI tests a fresh clone in a new folder
every time and must find the environment an earlier run built. Workers run this checkout's code all
the same: ``worker_environ`` puts its ``src`` first on ``PYTHONPATH``.

Built wheels go to the machine's wheel cache (``~/.cache/parla/wheels``) as for any install. The
first build takes a few minutes (XTTS-v2: about four on two busy cores, 2.6 GB); later sessions
reuse it in seconds. An environment whose key is no longer current is deleted once the new one is whole.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import numpy.typing as npt
import pytest

from parla.app import create_app
from parla.audio import decode_audio
from parla.engines.catalog import Entry, entry
from parla.engines.envs import MARKER, EngineEnv, InstallBusyError, install, parla_source, project_key
from parla.services import Services
from tests.conftest import _free_port, mock_settings, serving, someone_saying, wait_for

CHECKOUT = Path(__file__).resolve().parents[1]
BUSY_WAIT_S = 1800.0
"""How long to wait for another process (a parallel test run) that is building the same environment."""


def cache_root() -> Path:
    return Path(os.environ.get("PARLA_TEST_ENGINES_DIR") or "~/.cache/parla/test-engines").expanduser()


def environment_key(engine: Entry) -> str:
    """What the environment holds, independent of the checkout's path: the recipe, and what Parla's
    ``pyproject.toml`` says it requires and provides (its dependencies, the engine's extra, its entry
    points), as the installer keys it (``parla.engines.envs.project_key``)."""
    requirements = project_key(CHECKOUT / "pyproject.toml", engine.extra)
    placeholder = ("-e", f"parla[{engine.extra}]" if engine.extra else "parla")
    return engine.recipe_hash(device="cpu", parla=placeholder, parla_requirements=requirements)


def environment(name: str) -> EngineEnv:
    """Engine ``name``'s test environment, built if it is not whole yet (see the module's docstring).
    Raises ``parla.engines.envs.InstallError`` with pip's last lines when a step fails."""
    engine = entry(name)
    root = cache_root()
    key = environment_key(engine)
    env = EngineEnv(name, root / f"{name}-{key}")
    if env.installed:
        return env
    log = root / f"{name}-{key}.log"
    started = time.monotonic()
    while True:
        try:
            result = install(engine, env, device="cpu", log_path=log, source=parla_source())
            break
        except InstallBusyError:  # a parallel run is building it: wait, then take what it built
            if env.installed:
                return env
            if time.monotonic() - started > BUSY_WAIT_S:
                raise
            time.sleep(5)
    if not result.skipped:
        print(f"\nbuilt the {name} engine environment in {result.seconds:.0f} s: {env.root}", file=sys.stderr)
    for old in root.glob(f"{name}-*"):
        if old.is_dir() and old != env.root and (old / MARKER).exists():
            shutil.rmtree(old, ignore_errors=True)  # an older recipe's: gigabytes nothing will use again
            (root / f"{old.name}.log").unlink(missing_ok=True)
    return env


def worker_environ(**variables: str) -> dict[str, str]:
    """The environment of a worker process run from an engine environment: this checkout's code first
    (the environment's own editable install may point at the checkout that built it), plus ``variables``."""
    inherited = os.environ.get("PYTHONPATH")
    path = str(CHECKOUT / "src") + (os.pathsep + inherited if inherited else "")
    return {**os.environ, "PYTHONPATH": path, **variables}


def run_in(env: EngineEnv, *args: str, timeout: float = 600) -> str:
    """``python ARGS`` in the environment (this checkout's code first); its output, or a failure with it."""
    result = subprocess.run(
        [str(env.python), *args],
        env=worker_environ(),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(f"{env.python} {' '.join(args)} failed ({result.returncode}):\n{result.stderr[-3000:]}")
    return result.stdout


# -- a worker from an engine's environment, behind a gateway -----------------------------------------


def tiny_model(env: EngineEnv, script: Path, *, made: str, inside: str = "", args: tuple[str, ...] = ()) -> Path:
    """A directory beside the environment holding a tiny random model that ``script`` makes there with
    the engine's own classes (``python SCRIPT DIR ARGS``), once per version of the script. ``inside``:
    the sub-directory the script writes (a models directory's ``<engine>/``); ``made``: a file, relative
    to the returned directory, that exists once the model is whole."""
    directory = env.root / f"{script.stem}-{hashlib.sha256(script.read_bytes()).hexdigest()[:12]}"
    if not (directory / made).is_file():
        building = directory.with_name(f"{directory.name}.{os.getpid()}.part")
        shutil.rmtree(building, ignore_errors=True)
        run_in(env, str(script), str(building / inside if inside else building), *args)
        try:
            building.replace(directory)
        except OSError:  # a parallel run made it first: same script, same model
            shutil.rmtree(building)
            assert (directory / made).is_file()
    return directory


@dataclass
class EngineStack:
    """A worker (``parla serve-engine NAME`` from the engine's environment) behind a gateway whose
    engine ``NAME`` is that worker; the gateway's data directory is shared with the worker."""

    engine: str
    worker_url: str
    worker_log: Path
    worker_data: Path
    gateway_url: str
    services: Services
    voice: str
    request: dict[str, Any] = field(default_factory=dict)
    """What every ``speak`` adds to the speech request (the engine's parameters)."""
    heard: dict[int, npt.NDArray[np.float32]] = field(default_factory=dict)

    def speak(self, seed: int, text: str) -> tuple[npt.NDArray[np.float32], list[float]]:
        """The gateway's streamed WAV, decoded, and when each part of it arrived (seconds after the first)."""
        body = {
            "model": self.engine,
            "input": text,
            "voice": self.voice,
            "response_format": "wav",
            "seed": seed,
            **self.request,
        }
        arrivals: list[float] = []
        parts: list[bytes] = []
        with httpx.stream("POST", f"{self.gateway_url}/v1/audio/speech", json=body, timeout=600) as response:
            assert response.status_code == 200, response.read()
            started = time.monotonic()
            for part in response.iter_bytes():
                arrivals.append(time.monotonic() - started)
                parts.append(part)
        samples, rate = decode_audio(b"".join(parts))
        assert rate == self.info()["capabilities"]["sample_rate"]  # the engine's own rate, not resampled
        return samples, arrivals

    def audio(self, seed: int, text: str) -> npt.NDArray[np.float32]:
        """``speak(seed, text)``'s audio, once per seed."""
        if seed not in self.heard:
            self.heard[seed] = self.speak(seed, text)[0]
        return self.heard[seed]

    def log(self) -> str:
        return self.worker_log.read_text(errors="replace")

    def info(self) -> dict[str, Any]:
        """The worker's ``GET /v1/engine``."""
        answer: dict[str, Any] = httpx.get(f"{self.worker_url}/v1/engine", timeout=10).json()
        return answer

    def unload(self) -> None:
        """Unload the engine through the gateway, and check that the worker and the gateway say so."""
        unloaded = httpx.post(f"{self.gateway_url}/v1/unload-model?engine={self.engine}", timeout=60)
        assert unloaded.status_code == 200, unloaded.text
        assert self.info()["status"]["loaded"] is False
        engines = httpx.get(f"{self.gateway_url}/health", timeout=10).json()["engines"]
        assert next(e for e in engines if e["name"] == self.engine)["loaded"] is False


@contextmanager
def engine_stack(
    env: EngineEnv,
    name: str,
    tmp_path_factory: pytest.TempPathFactory,
    *,
    variables: Mapping[str, str],
    clone: tuple[str, str] | None = None,
    voice: str = "Ada",
) -> Iterator[EngineStack]:
    """``parla serve-engine NAME`` from ``env`` with ``variables`` (where its weights are, caps for
    random weights), on the CPU, offline, with an empty Hugging Face cache, once its model is loaded;
    and a gateway in front of it. ``clone``: (voice name, what it says): a library voice made first from
    someone saying it; ``voice``: the voice ``speak`` asks for."""
    shared = tmp_path_factory.mktemp(f"{name}-gateway")  # the gateway's data dir: the worker reads voices there
    worker_data = tmp_path_factory.mktemp(f"{name}-worker")
    port = _free_port()
    worker_url = f"http://127.0.0.1:{port}"
    log = worker_data / "worker.log"
    environ = worker_environ(
        PARLA_DATA_DIR=str(worker_data),
        PARLA_ALLOWED_PATHS=str(shared),
        PARLA_DEVICE="cpu",
        PARLA_LOG_LEVEL="info",
        PARLA_LLM_RUNTIME_AUTOINSTALL="false",
        OMP_NUM_THREADS="1",  # two shared cores: torch's spinning threads would only fight each other
        HF_HUB_OFFLINE="1",
        HF_HOME=str(worker_data / "hf"),  # an empty cache: nothing may come from it, nor from the network
        **variables,
    )
    with open(log, "wb") as sink:
        process = subprocess.Popen(
            [str(env.parla), "serve-engine", name, "--port", str(port)],
            env=environ,
            cwd=worker_data,
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
    try:

        def ready() -> bool:
            assert process.poll() is None, f"the {name} worker exited:\n{log.read_text(errors='replace')[-3000:]}"
            return bool(httpx.get(f"{worker_url}/health", timeout=2).json()["model_loaded"])

        wait_for(ready, f"the {name} worker did not load the tiny model; its log: {log}", timeout=600)
        settings = mock_settings(shared, engines={name: {"url": worker_url}}, in_process_worker=False)
        services = Services.build(settings)
        try:
            with serving(create_app(services=services)) as gateway_url:
                if clone is not None:
                    voice, said = clone
                    created = httpx.post(
                        f"{gateway_url}/v1/voices/clone",
                        data={"name": voice, "transcript": said},
                        files={"file": ("voice.wav", someone_saying(said), "audio/wav")},
                        timeout=120,
                    )
                    assert created.status_code == 201, created.text
                yield EngineStack(name, worker_url, log, worker_data, gateway_url, services, voice)
        finally:
            services.close()
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
