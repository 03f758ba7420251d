"""Which accelerators this process can use, and how much memory a process or its models hold, asked
without importing torch (the core install has none)."""

from __future__ import annotations

import functools
import resource
import sys
from pathlib import Path


@functools.cache
def cuda_device_count() -> int:
    """CUDA devices this process can see, counted by CTranslate2 (already here for Whisper).
    Counted once: devices do not come and go under a running process; 0 when there is no CUDA
    runtime or driver, which means no GPU to use rather than a crash."""
    try:
        import ctranslate2  # type: ignore[import-untyped]

        return int(ctranslate2.get_cuda_device_count())
    except Exception:
        return 0


def memory_rss_mb(pid: int | None = None) -> float | None:
    """A process's resident memory now, in MiB (Linux ``/proc``): this one's by default (else its
    peak so far, where there is no ``/proc``); ``None`` for another process that is gone."""
    try:
        for line in Path(f"/proc/{pid or 'self'}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return round(int(line.split()[1]) / 1024, 1)
    except (OSError, ValueError, IndexError):
        pass
    if pid is not None:
        return None
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def torch_vram_mb() -> float:
    """GPU memory this process's tensors hold (torch's ``memory_allocated``, over every GPU), in
    MiB; 0 where torch has not been imported or has not touched CUDA. Never imports torch itself:
    a process without a torch engine holds no tensors."""
    torch = sys.modules.get("torch")
    if torch is None:
        return 0.0
    try:
        if not torch.cuda.is_available() or not torch.cuda.is_initialized():
            return 0.0
        allocated = sum(int(torch.cuda.memory_allocated(index)) for index in range(torch.cuda.device_count()))
    except Exception:  # a broken CUDA runtime: nothing measurable is held
        return 0.0
    return round(allocated / 2**20, 1)
