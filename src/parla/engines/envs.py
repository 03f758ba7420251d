"""Each heavy engine's own virtual environment: made from its catalogue recipe, and known afterwards.

``parla engines install NAME`` makes ``<engines_dir>/<name>`` (``PARLA_ENGINES_DIR``, by default
``<data_dir>/engines``), a virtual environment holding torch 2.13.0 (pinned, and kept by a
constraints file for every later step), Parla itself (the checkout it runs from, editable, so the
worker runs the same code; otherwise what it was installed from) with the engine's extra, and the
recipe's ``--no-deps`` steps (``parla.engines.catalog``). pip's output goes to a log file; what
the install did is recorded in a marker file holding the recipe's hash, written last, so that:

- a second install with the same recipe does nothing and says so (``force`` rebuilds);
- an install that was interrupted (no marker) or whose recipe changed is rebuilt from scratch;
- ``parla engines`` and the supervisor know an environment is whole by its marker alone.

A file lock per engine stops two installs of one engine at once. Wheels that pip had to build from
source (encodec, pyworld...) are copied to the machine's wheel cache (``~/.cache/parla/wheels``,
``PARLA_WHEELS_DIR``, as for the language model runtime), and every install looks there first, so
that no later environment on the machine builds them again.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
import tomllib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import IO, Any
from urllib.parse import unquote, urlsplit

from parla import __version__
from parla.characters.runtime import wheels_dir
from parla.engines.catalog import TORCH, Entry, Step
from parla.engines.registry import ENTRY_POINT_GROUP
from parla.settings import Settings

MARKER = ".parla-engine.json"
"""Written last by an install: the environment is whole, and built from the recipe it names."""
DEVICES = ("cpu", "cuda")


@dataclass(frozen=True)
class EngineEnv:
    """The environment of engine ``name`` at ``root`` (which may not exist)."""

    name: str
    root: Path

    @property
    def python(self) -> Path:
        return self.root / "bin" / "python"

    @property
    def parla(self) -> Path:
        """The ``parla`` command of the environment (what the supervisor runs ``serve-engine`` with)."""
        return self.root / "bin" / "parla"

    @property
    def marker(self) -> Path:
        return self.root / MARKER

    def record(self) -> dict[str, Any] | None:
        """What the install that made this environment recorded; ``None`` when it is not whole."""
        try:
            record = json.loads(self.marker.read_text())
        except (OSError, ValueError):
            return None
        return record if isinstance(record, dict) else None

    @property
    def installed(self) -> bool:
        return self.record() is not None and self.parla.exists()

    def site_packages(self) -> Path | None:
        found = sorted(self.root.glob("lib/python*/site-packages"))
        return found[0] if found else None

    def engine_names(self) -> set[str]:
        """The engines installed in this environment (its ``parla.engines`` entry points, read from
        its packages' metadata, nothing imported): what its ``parla serve-engine`` can serve."""
        site = self.site_packages()
        if site is None:
            return set()
        return {
            ep.name
            for dist in metadata.distributions(path=[str(site)])
            for ep in dist.entry_points
            if ep.group == ENTRY_POINT_GROUP
        }


def engine_env(settings: Settings, name: str) -> EngineEnv:
    return EngineEnv(name, settings.resolved_engines_dir.resolve() / name)


def install_log(settings: Settings, name: str) -> Path:
    """Where pip's output of engine ``name``'s install goes."""
    return settings.data_dir.resolve() / "logs" / f"engine-{name}-install.log"


# -- where Parla comes from -------------------------------------------------------------------------


@dataclass(frozen=True)
class ParlaSource:
    """How to install the Parla that is running into another environment."""

    description: str
    """For a person: ``the checkout at /src/parla (editable)``."""
    _args: Callable[[str | None], tuple[str, ...]] = field(repr=False)
    _key: Callable[[str | None], str] = field(repr=False)

    def args(self, extra: str | None) -> tuple[str, ...]:
        """pip's arguments that install Parla with ``extra``."""
        return self._args(extra)

    def requirements_key(self, extra: str | None) -> str:
        """Changes when what an environment of Parla with ``extra`` holds changes: Parla's own
        dependencies, that extra and its entry points (an engine added needs a new install; a test
        tool's new pin does not), or the version of a Parla installed from a package."""
        return self._key(extra)


def project_key(pyproject: Path, extra: str | None) -> str:
    """What an environment takes from a checkout's ``pyproject.toml``, hashed. Of the engines' entry
    points, only its own engine's (named as its extra) counts: an engine added to Parla does not
    make every other engine's environment of gigabytes be built again."""
    project = tomllib.loads(pyproject.read_text())["project"]
    entry_points = dict(project.get("entry-points", {}))
    engines = entry_points.pop(ENTRY_POINT_GROUP, {})
    entry_points[ENTRY_POINT_GROUP] = {extra: engines[extra]} if extra in engines else {}
    held = {
        "dependencies": project.get("dependencies", []),
        "extra": project.get("optional-dependencies", {}).get(extra or "", []),
        "entry-points": entry_points,
        "scripts": project.get("scripts", {}),  # the `parla` its workers are started with
    }
    return hashlib.sha256(json.dumps(held, sort_keys=True).encode()).hexdigest()[:16]


def _with_extra(base: str, extra: str | None) -> str:
    return f"{base}[{extra}]" if extra else base


def checkout_root() -> Path | None:
    """The source checkout this Parla runs from (``src/parla`` under a ``pyproject.toml`` naming
    ``parla``), as a ``git clone`` or an editable install leaves it; ``None`` for an installed package."""
    package = Path(__file__).resolve().parents[1]
    root = package.parents[1]
    pyproject = root / "pyproject.toml"
    if package.parent.name != "src" or not pyproject.is_file():
        return None
    return root if re.search(r'(?m)^name\s*=\s*"parla"', pyproject.read_text()) else None


def parla_source() -> ParlaSource:
    """The checkout Parla runs from (installed editable: the worker runs the same code, and an edit
    needs no reinstall); else the directory or wheel it was installed from (its PEP 610 record);
    else ``parla==<version>`` from the package index."""
    root = checkout_root()
    if root is not None:
        return ParlaSource(
            f"the checkout at {root} (editable)",
            lambda extra: ("-e", _with_extra(str(root), extra)),
            functools.partial(project_key, root / "pyproject.toml"),
        )
    try:
        direct = json.loads(metadata.distribution("parla").read_text("direct_url.json") or "null")
    except (metadata.PackageNotFoundError, ValueError):
        direct = None
    url = direct.get("url") if isinstance(direct, dict) else None
    if isinstance(url, str) and url.startswith("file://"):
        path = unquote(urlsplit(url).path)
        return ParlaSource(
            f"{path} (what this Parla was installed from)",
            lambda extra: (f"{_with_extra('parla', extra)} @ {url}",),
            lambda extra: f"{__version__}:{path}",
        )
    return ParlaSource(
        f"parla {__version__} from the package index",
        lambda extra: (f"{_with_extra('parla', extra)}=={__version__}",),
        lambda extra: __version__,
    )


# -- the install ----------------------------------------------------------------------------------


class InstallError(RuntimeError):
    """A step of an install failed; the message says which, with pip's last lines."""


class InstallBusyError(InstallError):
    """Another process is installing (or removing) the same engine's environment."""


@dataclass(frozen=True)
class InstallResult:
    env: EngineEnv
    skipped: bool
    """Nothing to do: the environment is whole and built from the same recipe."""
    seconds: float = 0.0
    recipe: str = ""


Progress = Callable[[int, int, str], None]
"""Told ``(step index, number of steps, step label)`` as each step starts."""


@contextlib.contextmanager
def exclusive(env: EngineEnv) -> Iterator[None]:
    """Hold engine ``env.name``'s install lock, or raise ``InstallBusyError`` at once."""
    env.root.parent.mkdir(parents=True, exist_ok=True)
    lock = env.root.parent / f".{env.name}.lock"
    with open(lock, "w") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise InstallBusyError(
                f"another process is installing or removing {env.name!r} ({lock} is locked); wait for it to finish"
            ) from None
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def recipe_of(entry: Entry, *, device: str, source: ParlaSource) -> str:
    return entry.recipe_hash(
        device=device, parla=source.args(entry.extra), parla_requirements=source.requirements_key(entry.extra)
    )


def install(
    entry: Entry,
    env: EngineEnv,
    *,
    device: str = "cpu",
    force: bool = False,
    log_path: Path,
    source: ParlaSource | None = None,
    wheels: Path | None = None,
    progress: Progress | None = None,
) -> InstallResult:
    """Build ``env`` from ``entry``'s recipe for ``device`` (see the module's docstring). Raises
    ``InstallBusyError`` when another install of the engine holds the lock, ``InstallError`` when a
    step fails (the environment is then left without its marker: the next install starts over)."""
    if device not in DEVICES:
        raise ValueError(f"device {device!r} is not one of {', '.join(DEVICES)}")
    source = source or parla_source()
    wheels = wheels or wheels_dir()
    recipe = recipe_of(entry, device=device, source=source)
    with exclusive(env):
        record = env.record()
        if not force and record is not None and record.get("recipe") == recipe and env.parla.exists():
            return InstallResult(env, skipped=True, recipe=recipe)
        started = time.monotonic()
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(log_path, "w") as log:
            log.write(f"# parla engines install {entry.name} --device {device}: recipe {recipe}\n")
            log.write(f"# Parla from {source.description}\n")
            log.flush()
            run = _Runner(env, log, wheels)
            actions: list[tuple[str, Callable[[], None]]] = [("create the environment", run.create)]
            steps = entry.steps(source.args(entry.extra))
            actions += [(step.label, functools.partial(run.pip, step)) for step in steps]
            if entry.torchaudio_shim:
                actions.append(("remove torchaudio's native libraries", run.strip_torchaudio))
            actions.append(("check that it imports", functools.partial(run.check, ("torch", "parla", *entry.imports))))
            actions.append(("keep built wheels for next time", run.keep_built_wheels))
            for index, (label, action) in enumerate(actions):
                if progress is not None:
                    progress(index, len(actions), label)
                log.write(f"\n# step {index + 1}/{len(actions)}: {label}\n")
                log.flush()
                action()
        seconds = time.monotonic() - started
        env.marker.write_text(
            json.dumps(
                {
                    "engine": entry.name,
                    "recipe": recipe,
                    "device": device,
                    "parla": source.description,
                    "torch": TORCH,
                    "installed_at": datetime.now(UTC).isoformat(timespec="seconds"),
                    "seconds": round(seconds, 1),
                },
                indent=2,
            )
        )
    return InstallResult(env, skipped=False, seconds=seconds, recipe=recipe)


def remove(env: EngineEnv) -> bool:
    """Delete ``env`` (under its install lock); ``False`` when there was nothing to delete."""
    with exclusive(env):
        if not env.root.exists():
            return False
        shutil.rmtree(env.root)
        return True


class _Runner:
    """The steps of one install, each a process whose output goes to the log."""

    def __init__(self, env: EngineEnv, log: IO[str], wheels: Path) -> None:
        self.env = env
        self.log = log
        self.wheels = wheels
        self.constraints = env.root / "constraints.txt"
        self.reports: list[Path] = []

    def _run(self, what: str, command: list[str], env: dict[str, str] | None = None) -> None:
        self.log.write("$ " + " ".join(command) + "\n")
        self.log.flush()
        result = subprocess.run(
            command,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env={**os.environ, "PIP_PROGRESS_BAR": "off", **(env or {})},
            check=False,
        )
        if result.returncode != 0:
            self.log.flush()
            raise InstallError(f"{what} failed (exit {result.returncode}): {_tail(Path(self.log.name))}")

    def create(self) -> None:
        # A half-made environment (an interrupted install, an older recipe) is started over:
        # what pip left behind cannot be trusted to match the recipe.
        if self.env.root.exists():
            shutil.rmtree(self.env.root)
        self._run("creating the environment", [sys.executable, "-m", "venv", str(self.env.root)])
        # torch stays this one for every later step, whatever a package declares.
        self.constraints.write_text(TORCH + "\n")

    def pip(self, step: Step) -> None:
        """One step; after the first (torch), torch is held to the very build it installed (the CPU
        build where pip found one), so that no later resolution may trade it for another build."""
        self.wheels.mkdir(parents=True, exist_ok=True)
        report = self.env.root / f"pip-report-{len(self.reports)}.json"
        self.reports.append(report)
        command = [str(self.env.python), "-m", "pip", "--disable-pip-version-check", "install"]
        command += ["--constraint", str(self.constraints), "--find-links", str(self.wheels), "--report", str(report)]
        command += ["--no-deps"] if step.no_deps else []
        self._run(f"installing {step.label}", [*command, *step.packages])
        if step.packages == (TORCH,):
            version = subprocess.run(
                [str(self.env.python), "-c", "from importlib.metadata import version; print(version('torch'))"],
                capture_output=True,
                text=True,
                check=False,
            ).stdout.strip()
            if version:
                self.constraints.write_text(f"torch=={version}\n")

    def strip_torchaudio(self) -> None:
        # torchaudio 2.11's native libraries are built for torch 2.11 and fail to load beside 2.13;
        # without them its Python modules (functional, transforms) still work.
        site = self.env.site_packages()
        for library in sorted((site / "torchaudio" / "lib").glob("*.so*")) if site else []:
            self.log.write(f"removing {library}\n")
            library.unlink()

    def check(self, modules: tuple[str, ...]) -> None:
        code = "; ".join(f"import {module}" for module in modules)
        self._run(f"importing {', '.join(modules)}", [str(self.env.python), "-c", code], env={"HF_HUB_OFFLINE": "1"})
        if not self.env.parla.exists():
            raise InstallError(f"the environment has no {self.env.parla}")

    def keep_built_wheels(self) -> None:
        """Copy the wheels pip built from source distributions into the machine's wheel cache."""
        for name, version in built_from_source(self.reports):
            stem = re.sub(r"[-_.]+", "_", name).lower()
            if any(p.name.lower().startswith(f"{stem}-{version}-") for p in self.wheels.glob("*.whl")):
                continue
            # pip takes the wheel it built a moment ago from its own cache: nothing is rebuilt.
            self._run(
                f"keeping the wheel of {name} {version}",
                [
                    *(str(self.env.python), "-m", "pip", "--disable-pip-version-check", "wheel", "--no-deps"),
                    *("--wheel-dir", str(self.wheels), "--find-links", str(self.wheels), f"{name}=={version}"),
                ],
            )
        for report in self.reports:
            report.unlink(missing_ok=True)


def built_from_source(reports: list[Path]) -> list[tuple[str, str]]:
    """The packages pip installed from a source distribution (not a wheel, not a local directory),
    by name and version, from its ``--report`` files."""
    built: dict[str, str] = {}
    for report in reports:
        try:
            items = json.loads(report.read_text()).get("install", [])
        except (OSError, ValueError):
            continue
        for item in items:
            info = item.get("download_info") or {}
            url = str(info.get("url") or "")
            if "archive_info" in info and not url.endswith(".whl"):
                built[item["metadata"]["name"]] = item["metadata"]["version"]
    return sorted(built.items())


def _tail(log: Path, lines: int = 12) -> str:
    try:
        text = [line for line in log.read_text(errors="replace").splitlines() if line.strip()]
    except OSError:
        return "no log"
    return "\n".join(text[-lines:]) + f"\n(the whole output: {log})"
