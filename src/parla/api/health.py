"""``GET /health`` and ``GET /``: one answer carrying every reference API's fields (docs/architecture.md, "Clashes")."""

from __future__ import annotations

import resource
from pathlib import Path
from typing import Any

from fastapi import APIRouter

from parla import __version__
from parla.api.deps import ServicesDep

router = APIRouter(tags=["Health"])


def memory_rss_mb() -> float:
    """The server process's resident memory now (Linux ``/proc``), else its peak so far."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


@router.get("/health", summary="Health and engine status")
async def health(services: ServicesDep) -> dict[str, Any]:
    engines = [e.status().describe() for e in services.engines]
    default = services.engines.get(services.settings.default_engine).status()
    llm_runtime = services.characters.llm_runtime.state()
    return {
        "status": "healthy" if default.available else "degraded",
        "model_loaded": default.loaded,
        "device": default.device,
        "dependencies_available": default.available,
        "gpu_available": False,
        "vram_used_mb": 0.0,
        "memory_rss_mb": memory_rss_mb(),
        "version": __version__,
        "default_engine": default.name,
        "engines": engines,
        "broken_engines": services.engines.broken,
        "llm_runtime": {"state": llm_runtime.phase, "detail": llm_runtime.detail},
    }


@router.get("/", summary="Service information")
async def root(services: ServicesDep) -> dict[str, Any]:
    default = services.engines.get(services.settings.default_engine)
    return {
        "message": "Parla speech server - ready",
        "status": "success",
        "name": "parla",
        "version": __version__,
        "model": default.name,
        "model_description": default.description,
        "engines": services.engines.names(),
        "docs": "/docs",
    }
