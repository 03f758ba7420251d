"""The embedded language model's runtime, llama-cpp-python: installed, being installed, or how to get it.

llama-cpp-python has no wheel on PyPI, so it is compiled from source (about eight minutes on two
cores), and without native CPU flags: its default ``-march=native`` build crashes on the first
decode on some CPUs. The wheel is kept outside any checkout (``~/.cache/parla/wheels``, or
``PARLA_WHEELS_DIR``), so every later environment on the machine installs it in seconds.

Only characters on the embedded model need it, so it must never stand between a fresh machine and
its first audio: ``parla serve`` starts at once and installs it in a background process
(``LlamaRuntime.start_install``, at the lowest CPU priority), and characters answer 503 with the
install's progress until it is ready. ``parla llm-runtime install`` does the same in the foreground.
"""

from __future__ import annotations

import contextlib
import fcntl
import importlib
import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Literal

VERSION = "0.3.36"
"""The llama-cpp-python release Parla is tested with (also the ``llm`` extra's pin)."""
CMAKE_ARGS = "-DGGML_NATIVE=OFF"
PACKAGE = "llama-cpp-python"
BUILD_MINUTES = 8
"""About how long the compile takes on two cores, for messages."""


def wheels_dir() -> Path:
    """Where built wheels are kept: ``PARLA_WHEELS_DIR``, else ``~/.cache/parla/wheels``."""
    configured = os.environ.get("PARLA_WHEELS_DIR")
    if configured:
        return Path(configured).expanduser()
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "parla" / "wheels"


def cached_wheel(wheels: Path) -> Path | None:
    """The built wheel of ``VERSION`` in ``wheels``, if there is one."""
    found = sorted(wheels.glob(f"llama_cpp_python-{VERSION}-*.whl"))
    return found[-1] if found else None


_found = False
"""Once found, the package stays: every question need not search the import path again."""


def is_installed() -> bool:
    """Whether ``import llama_cpp`` would find the package now (also after an install that happened
    while this process ran: the import system's directory caches are refreshed first)."""
    global _found
    if not _found:
        importlib.invalidate_caches()
        _found = importlib.util.find_spec("llama_cpp") is not None
    return _found


@contextlib.contextmanager
def _exclusive(wheels: Path, *, wait: bool) -> Iterator[bool]:
    """One build per wheels dir at a time, across processes; yields whether the lock was taken."""
    wheels.mkdir(parents=True, exist_ok=True)
    with open(wheels / ".llama-cpp-python.lock", "w") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def install_in_progress(wheels: Path) -> bool:
    """Whether some process (this server's child, another clone's ``make``) is building or installing now."""
    with _exclusive(wheels, wait=False) as taken:
        return not taken


def install(wheels: Path, *, say: Callable[[str], None], output: IO[str] | None = None) -> None:
    """Build the wheel unless it is cached, then install it into this interpreter's environment.

    Waits for a build another process is running and reuses its wheel. A build that fails or is
    killed leaves no wheel behind (pip writes it into a scratch folder that is moved at the end).
    Raises ``RuntimeError`` with pip's last lines when a step fails."""
    with _exclusive(wheels, wait=True):
        wheel = cached_wheel(wheels)
        if wheel is None:
            say(
                f"building {PACKAGE} {VERSION} without native CPU flags (about {BUILD_MINUTES} minutes on two cores;"
                f" once per machine, kept in {wheels})"
            )
            with tempfile.TemporaryDirectory(dir=wheels, prefix=".build-") as scratch:
                _pip(
                    ["wheel", "--no-deps", "--no-cache-dir", "-w", scratch, f"{PACKAGE}=={VERSION}"],
                    env={"CMAKE_ARGS": CMAKE_ARGS},
                    output=output,
                )
                built = next(Path(scratch).glob("*.whl"))
                wheel = wheels / built.name
                shutil.move(built, wheel)
        say(f"installing {PACKAGE} {VERSION} from {wheel}")
        _pip(
            ["install", "--find-links", str(wheels), "--only-binary", PACKAGE, f"{PACKAGE}=={VERSION}"],
            output=output,
        )


def _pip(args: list[str], *, env: dict[str, str] | None = None, output: IO[str] | None) -> None:
    command = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q", *args]
    result = subprocess.run(
        command,
        env={**os.environ, **(env or {})},
        stdout=output or subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        tail = "\n".join((result.stdout or "").strip().splitlines()[-15:])
        raise RuntimeError(f"pip {args[0]} failed (exit {result.returncode}){': ' + tail if tail else ''}")


Phase = Literal["ready", "installing", "failed", "missing"]


@dataclass(frozen=True)
class RuntimeState:
    phase: Phase
    detail: str
    """One sentence for a person: what is happening and what to do."""

    @property
    def ready(self) -> bool:
        return self.phase == "ready"


class LlamaRuntime:
    """The runtime as this server sees it, and the background install it may have started."""

    def __init__(self, log_path: Path, wheels: Path | None = None) -> None:
        self.log_path = log_path
        self.wheels = wheels or wheels_dir()
        self._process: subprocess.Popen[bytes] | None = None
        self._started_at = 0.0

    def start_install(self) -> bool:
        """Install in a child process at the lowest CPU priority, unless installed or already under
        way. The child outlives a server that stops meanwhile, so the work is not lost."""
        if is_installed() or self._process is not None:
            return False
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            self._process = subprocess.Popen(
                [sys.executable, "-m", "parla", "llm-runtime", "install"],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=lambda: os.nice(19),  # speech requests keep the CPU
            )
        self._started_at = time.monotonic()
        return True

    def state(self) -> RuntimeState:
        if is_installed():
            return RuntimeState("ready", f"{PACKAGE} {VERSION} is installed")
        process = self._process
        if process is not None and process.poll() not in (None, 0):
            return RuntimeState(
                "failed",
                f"installing {PACKAGE} failed (exit {process.returncode}): {self._log_tail()}; see {self.log_path},"
                " then run `parla llm-runtime install`",
            )
        if (process is not None and process.poll() is None) or install_in_progress(self.wheels):
            elapsed = f", {int(time.monotonic() - self._started_at)} s so far" if process is not None else ""
            return RuntimeState(
                "installing",
                f"the embedded language model's runtime ({PACKAGE}) is being built in the background"
                f" (about {BUILD_MINUTES} minutes on two cores the first time{elapsed}; progress in {self.log_path});"
                " try again when it is ready, or give the character an llm_config base_url",
            )
        return RuntimeState(
            "missing",
            f"the embedded language model's runtime ({PACKAGE}) is not installed: run `parla llm-runtime install`"
            " (or set PARLA_LLM_RUNTIME_AUTOINSTALL=true), or give the character an llm_config base_url",
        )

    def _log_tail(self) -> str:
        try:
            lines = [line for line in self.log_path.read_text(errors="replace").splitlines() if line.strip()]
        except OSError:
            return "no log"
        return lines[-1][:300] if lines else "no output"
