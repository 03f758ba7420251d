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
import json
import os
import shutil
import subprocess
import sys
import time
import tomllib
from pathlib import Path

from parla.engines.catalog import Entry, entry
from parla.engines.envs import MARKER, EngineEnv, InstallBusyError, install, parla_source

CHECKOUT = Path(__file__).resolve().parents[1]
BUSY_WAIT_S = 1800.0
"""How long to wait for another process (a parallel test run) that is building the same environment."""


def cache_root() -> Path:
    return Path(os.environ.get("PARLA_TEST_ENGINES_DIR") or "~/.cache/parla/test-engines").expanduser()


def environment_key(engine: Entry) -> str:
    """What the environment holds, independent of the checkout's path: the recipe, and what Parla's
    ``pyproject.toml`` says it requires and provides (its dependencies, the engine's extra, its entry points)."""
    project = tomllib.loads((CHECKOUT / "pyproject.toml").read_text())["project"]
    parla = {
        "dependencies": project.get("dependencies", []),
        "extra": project.get("optional-dependencies", {}).get(engine.extra or "", []),
        "entry-points": project.get("entry-points", {}),
    }
    requirements = hashlib.sha256(json.dumps(parla, sort_keys=True).encode()).hexdigest()[:16]
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
