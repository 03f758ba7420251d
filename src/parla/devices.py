"""Which accelerators this process can use, asked without torch (the core install has none)."""

from __future__ import annotations

import functools


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
