"""What the benchmarks share: the server as a child process (``parla serve``, so its memory is its
own), the memory and CPU time of a process, and how busy the machine is."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

import httpx
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

PCM_RATE = 24_000
"""The sample rate of the server's ``pcm`` format."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def memory_mb(pid: int) -> tuple[float, float]:
    """(current RSS, peak RSS) of a process in MiB, from /proc."""
    values = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            values[key] = int(rest.split()[0]) / 1024
    return values["VmRSS"], values["VmHWM"]


def _children(pid: int) -> list[int]:
    """A process's live children, from each of its threads' ``/proc/<pid>/task/<tid>/children``."""
    found: list[int] = []
    try:
        tasks = list(Path(f"/proc/{pid}/task").iterdir())
    except OSError:
        return found
    for task in tasks:
        with suppress(OSError, ValueError):
            found += [int(child) for child in (task / "children").read_text().split()]
    return found


def cpu_seconds(pid: int, *, descendants: bool = True) -> float:
    """CPU time a process has used, in seconds: user + system time of all its threads (the process's
    counters in ``/proc/<pid>/stat`` hold them), of its children it has waited for, and, with
    ``descendants``, of its live descendants too. A process that is gone counts 0."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    todo, seen = [pid], set()
    while todo:
        current = todo.pop()
        if current in seen:
            continue
        seen.add(current)
        try:
            stat = Path(f"/proc/{current}/stat").read_text()
        except OSError:
            continue
        # Fields after the command name (which may hold spaces and parentheses): state is field 3,
        # utime, stime, cutime, cstime are fields 14-17.
        fields = stat[stat.rindex(")") + 2 :].split()
        total += sum(int(value) for value in fields[11:15])
        if descendants:
            todo += _children(current)
    return total / tick


def machine_busy_seconds() -> float:
    """CPU seconds the whole machine has spent busy since boot, every CPU added up (``/proc/stat``:
    user, nice, system, irq, softirq, steal; not idle or iowait)."""
    fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(v) for v in fields[:8])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def cpu_count() -> int:
    """The CPUs this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


@contextmanager
def serve_in_child(
    prepare: Callable[[Path], None] | None = None,
) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """``parla serve`` on a free port with a data dir of its own, until the block ends; yields its URL
    and process once its default engine is loaded. ``prepare(data_dir)`` runs before it starts."""
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="parla-bench-") as data:
        if prepare is not None:
            prepare(Path(data))
        env = {**os.environ, "PARLA_DATA_DIR": data, "PARLA_LOG_LEVEL": "warning", "PARLA_DATABASE_URL": ""}
        proc = subprocess.Popen(
            [sys.executable, "-m", "parla", "serve", "--port", str(port)], env=env, stdin=subprocess.DEVNULL
        )
        url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 60
            while True:
                try:
                    if httpx.get(f"{url}/health", timeout=1).json().get("model_loaded"):
                        break
                except httpx.HTTPError:
                    pass
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("the server did not start")
                time.sleep(0.2)
            yield url, proc
        finally:
            proc.terminate()
            proc.wait(timeout=30)


def step_bar(console: Console) -> Progress:
    """The bar long work shows: what it is on, how far, and for how long (gone once it ends)."""
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    )
