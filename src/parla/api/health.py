"""``GET /health`` and ``GET /``: one answer carrying every reference API's fields (docs/architecture.md, "Clashes")."""

from __future__ import annotations

import os
import shutil
import subprocess
from typing import Any

from fastapi import APIRouter

from parla import __version__
from parla.api.auth import PUBLIC
from parla.api.deps import CharactersDep, EnginesDep, SettingsDep, TranscriberDep
from parla.characters.service import CharacterService
from parla.devices import cuda_device_count, memory_rss_mb
from parla.engines.base import Engine
from parla.engines.registry import UnknownEngineError
from parla.engines.remote import RemoteEngine
from parla.offload import offload
from parla.services.transcription import Transcriber

router = APIRouter(tags=["Health"])


def process_vram_mb() -> float | None:
    """GPU memory this process holds, from ``nvidia-smi``; ``None`` when it cannot be read."""
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return None
    try:
        out = subprocess.run(
            [smi, "--query-compute-apps=pid,used_memory", "--format=csv,noheader,nounits"],
            capture_output=True,
            text=True,
            timeout=2,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    used = 0.0
    for line in out.splitlines():
        pid, _, mib = line.partition(",")
        if pid.strip() == str(os.getpid()):
            try:
                used += float(mib)
            except ValueError:
                return None
    return round(used, 1)


def _on_gpu(device: str) -> bool:
    return device.lower().startswith(("cuda", "gpu"))


def gpu_state(engine: Engine) -> tuple[bool, float | None]:
    """``gpu_available`` and ``vram_used_mb`` of ``engine`` (the voicebox API's fields, about its model):
    measured, never assumed. A local engine has a GPU when this process sees one, and holds GPU
    memory only while it is loaded on one; a worker's engine has one when the worker reports a GPU
    device, and what it holds there is the worker's to say (``None``: not known here)."""
    status = engine.status()
    if isinstance(engine, RemoteEngine):
        on_gpu = _on_gpu(status.device)
        return on_gpu, None if on_gpu and status.loaded else 0.0
    if not (status.loaded and _on_gpu(status.device)):
        return cuda_device_count() > 0, 0.0
    return cuda_device_count() > 0, process_vram_mb()


def loaded_subsystems(
    described: list[dict[str, Any]], transcriber: Transcriber, characters: CharacterService
) -> dict[str, Any]:
    """What this process holds in memory now (``/health``'s ``loaded``). Only the default engines
    load at start-up; everything else on its first use, saying so in the log: ``engines``, those
    with a model loaded; ``whisper``, the Whisper models (the server's by size, characters' own by
    folder name); ``knowledge_store``, whether Chroma is open; ``embedder``, whether the MiniLM
    embedder is; ``language_models``, the characters' embedded GGUF models by file name."""
    characters_loaded = characters.loaded()
    return {
        "engines": [e["name"] for e in described if e["loaded"]],
        "whisper": transcriber.loaded_models + characters_loaded["whisper_models"],
        "knowledge_store": characters_loaded["knowledge_store"],
        "embedder": characters_loaded["embedder"],
        "language_models": characters_loaded["language_models"],
    }


@router.get("/health", summary="Health and engine status", dependencies=[PUBLIC])
async def health(
    settings: SettingsDep, engines: EnginesDep, characters: CharactersDep, transcriber: TranscriberDep
) -> dict[str, Any]:
    # No status read here does network I/O (a remote engine's is refreshed in the background and
    # only read), but a local engine's looks for its packages and files: off the event loop.
    described = await offload(lambda: [e.status().describe() for e in engines])
    default = await offload(engines.get(settings.default_engine).status)
    # The voicebox API's GPU fields are about the model that speaks its profiles: the cloning engine.
    # Off the event loop: the first count initialises CUDA, and nvidia-smi is a process.
    gpu_available: bool
    vram_used_mb: float | None
    clone_ready = True
    try:
        clone = engines.get(settings.default_clone_engine)
    except UnknownEngineError:  # not installed here: no model of it, so nothing on a GPU either
        gpu_available, vram_used_mb = await offload(cuda_device_count) > 0, 0.0
    else:
        gpu_available, vram_used_mb = await offload(gpu_state, clone)
        clone_status = await offload(clone.status)
        clone_ready = clone_status.loaded or not clone_status.available
    llm_runtime = await offload(characters.llm_runtime.state)  # file lock, import system
    return {
        "status": "healthy" if default.available else "degraded",
        # The engines that speak when a request names none (plain voices', and the cloning engine
        # that speaks presets and profiles): both are preloaded at start-up, and readiness probes
        # wait for this.
        "model_loaded": default.loaded and clone_ready,
        "device": default.device,
        "dependencies_available": default.available,
        "gpu_available": gpu_available,
        "vram_used_mb": vram_used_mb,
        "memory_rss_mb": memory_rss_mb(),
        "version": __version__,
        "default_engine": default.name,
        "engines": described,
        "broken_engines": engines.broken,
        "llm_runtime": {"state": llm_runtime.phase, "detail": llm_runtime.detail},
        "loaded": loaded_subsystems(described, transcriber, characters),
    }


@router.get("/", summary="Service information", dependencies=[PUBLIC])
async def root(settings: SettingsDep, engines: EnginesDep) -> dict[str, Any]:
    default = engines.get(settings.default_engine)
    return {
        "message": "Parla speech server - ready",
        "status": "success",
        "name": "parla",
        "version": __version__,
        "model": default.name,
        "model_description": default.description,
        "engines": engines.names(),
        "docs": "/docs",
    }
