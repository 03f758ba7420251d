"""What the benchmarks share: the server as a child process (``parla serve``, so its memory is its
own) and the memory of a process."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

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


@contextmanager
def serve_in_child() -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """``parla serve`` on a free port with a data dir of its own, until the block ends; yields its URL
    and process once its default engine is loaded."""
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="parla-bench-") as data:
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
