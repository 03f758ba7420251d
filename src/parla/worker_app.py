"""``parla serve-engine NAME``: one local engine alone, served as a worker for gateways.

A worker answers the model microservice API (``api.standard``, ``/health``, ``/``) for its one
engine, and additions that a gateway's ``RemoteEngine`` uses: ``GET /v1/engine`` (name,
capabilities, status, the engine's own voices), ``GET /v1/engine/voices/{name}`` (one of those
voices, or a blend, resolved by the engine), ``POST /v1/voices/prepare`` (the engine learns a voice
ahead of use) and ``POST /v1/text-to-speech/{voice_id}/stream``, the engine's own audio chunks,
framed, as they are made. The stream is engine-level: the gateway has already normalised and split
the text, resolved the voice and checked the parameters, and records the generation.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import aclosing, asynccontextmanager
from typing import Any

from fastapi import APIRouter, FastAPI, Response
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, Field

from parla import __version__
from parla.api import errors, health, standard
from parla.api.deps import EnginesDep, SettingsDep, SpeechDep, VoicesDep
from parla.devices import memory_rss_mb, torch_vram_mb
from parla.engines.base import AudioChunk, Engine, EngineUnavailableError, SynthesisRequest, VoiceRef
from parla.engines.registry import EngineRegistry
from parla.engines.remote import FRAMES_MEDIA_TYPE, audio_frame, end_frame
from parla.errors import InvalidInputError, NotFoundError, ServiceUnavailableError
from parla.offload import offload
from parla.paths import PathPolicy
from parla.services import Services
from parla.settings import Settings

log = logging.getLogger(__name__)

DEFAULT_PORTS = {"dia": 8003, "chatterbox": 8004, "higgs": 8005, "mock": 8999}
"""The model microservice API's port assignments."""
OTHER_PORT = 8006
"""The model microservice API: "8006+: future models"."""

router = APIRouter(tags=["Worker"])


def default_port(name: str) -> int:
    return DEFAULT_PORTS.get(name, OTHER_PORT)


def local_engine(settings: Settings, name: str) -> Engine:
    """The installed engine ``name`` (never a remote one: a worker does the work itself).
    Raises ``UnknownEngineError`` or, when its package fails to import, ``EngineUnavailableError``."""
    registry = EngineRegistry.from_entry_points(settings, remote=False)
    if name in registry.broken:
        raise EngineUnavailableError(f"engine {name!r} cannot be imported here: {registry.broken[name]}")
    return registry.get(name)


class VoiceSpec(BaseModel):
    """A gateway's resolved voice (``VoiceRef``), so the worker speaks exactly what it would."""

    name: str = Field(..., min_length=1)
    samples: list[tuple[str, str | None]] = Field(default_factory=list)
    presets: dict[str, dict[str, Any]] = Field(default_factory=dict)
    language: str = "en"
    sample_languages: list[str | None] = Field(
        default_factory=list, description="The language each sample is spoken in (none: the voice's)."
    )
    key: str = ""


class StreamRequest(BaseModel):
    text: str = Field(..., min_length=1, description="One piece of text, spoken as it is.")
    voice: VoiceSpec | None = Field(
        None, description="The voice; without it, voice_id is resolved as the model microservice API does."
    )
    speed: float = Field(1.0, ge=0.25, le=4.0)
    seed: int | None = Field(None, ge=0, le=2**31 - 1)
    language: str = "en"
    instructions: str | None = None
    parameters: dict[str, Any] = Field(default_factory=dict)


def _engine(settings: Settings, engines: EngineRegistry) -> Engine:
    return engines.get(settings.default_engine)


def _voice(settings: Settings, spec: VoiceSpec) -> VoiceRef:
    """The gateway's voice, its sample files held to this worker's allowed directories."""
    policy = PathPolicy.from_settings(settings)
    samples = []
    for raw, transcript in spec.samples:
        path = policy.resolve(raw, param="voice.samples")
        if not path.is_file():
            raise InvalidInputError(f"voice sample {raw!r} is not a file this worker can read", param="voice.samples")
        samples.append((path, transcript))
    return VoiceRef(
        spec.name,
        samples=tuple(samples),
        presets=spec.presets,
        language=spec.language,
        key=spec.key,
        sample_languages=tuple(spec.sample_languages),
    )


@router.get("/v1/engine", summary="This worker's engine: name, capabilities, status")
async def engine_info(settings: SettingsDep, engines: EnginesDep) -> dict[str, Any]:
    engine = _engine(settings, engines)
    return {
        "name": engine.name,
        "description": engine.description,
        "version": __version__,
        "capabilities": engine.capabilities.describe(),
        "status": engine.status().describe(),
        # The engine's own presets of the built-in voices: a gateway's voice library asks its engines
        # for them, and for this engine, the gateway has only this answer.
        "voice_presets": {voice: dict(preset) for voice, preset in engine.voice_presets.items()},
        # The engine's own voices (Kokoro's styles): the gateway lists them as its engine's.
        "voices": [v.describe(engine.name) for v in engine.voices()],
        # This process's memory: the worker is the engine, so its memory is the engine's.
        "memory": {"rss_mb": memory_rss_mb(), "vram_mb": await offload(torch_vram_mb)},
    }


@router.get("/v1/engine/voices/{name:path}", summary="One of the engine's own voices, or a blend of them")
async def engine_voice(name: str, settings: SettingsDep, engines: EnginesDep) -> dict[str, Any]:
    # The engine's own reading of the name (Engine.voice): a blend is resolved here, where the voices are.
    engine = _engine(settings, engines)
    voice = await offload(engine.voice, name)
    if voice is None:
        raise NotFoundError(f"engine {engine.name!r} has no voice {name!r}", param="voice")
    # Samples are never part of an engine's own voice.
    return {
        "name": voice.name,
        "id": voice.id,
        "presets": {key: dict(preset) for key, preset in voice.presets.items()},
        "language": voice.language,
        "key": voice.key,
        "engine": voice.engine,
    }


@router.post("/v1/voices/prepare", status_code=204, summary="Have the engine learn a voice now, ahead of use")
async def prepare_voice(body: VoiceSpec, settings: SettingsDep, engines: EnginesDep) -> Response:
    engine = _engine(settings, engines)
    voice = _voice(settings, body)
    reason = engine.unavailable_reason()
    if reason:
        raise ServiceUnavailableError(f"engine {engine.name!r} is unavailable: {reason}")
    try:
        await engines.runner(engine.name).call(lambda: engine.prepare_voice(voice))
    except ValueError as exc:  # what the engine cannot learn from the voice (a sample without a transcript)
        raise InvalidInputError(str(exc), param="voice") from None
    return Response(status_code=204)


@router.post("/v1/text-to-speech/{voice_id:path}/stream", summary="The engine's audio as it is made (frames)")
async def stream_speech(
    voice_id: str,
    body: StreamRequest,
    settings: SettingsDep,
    engines: EnginesDep,
    speech: SpeechDep,
    voices: VoicesDep,
) -> StreamingResponse:
    # Speech and voices only for a voice_id to resolve (no voice given): as the model microservice API does.
    engine = _engine(settings, engines)
    if body.voice is not None:
        voice = _voice(settings, body.voice)
    else:
        controls = standard.Controls.of(body.parameters)
        voice, _ = await offload(
            standard.voice_of,
            settings,
            speech,
            voices,
            voice_id,
            transcript=controls.transcription,
            engine=None,
            language=controls.language,
        )
    reason = engine.unavailable_reason()
    if reason:
        raise ServiceUnavailableError(f"engine {engine.name!r} is unavailable: {reason}")
    try:
        params = engine.resolve_parameters(body.parameters, voice.preset(engine.name))
    except ValueError as exc:
        raise InvalidInputError(str(exc), param="parameters") from None
    request = SynthesisRequest(
        text=body.text,
        voice=voice,
        speed=body.speed,
        seed=body.seed,
        language=body.language,
        instructions=body.instructions,
        parameters=params,
    )
    chunks = engines.runner(engine.name).stream(lambda: engine.synthesize(request))
    # The first chunk is awaited here, so that a failure to start (the model cannot load) is an
    # HTTP error status rather than a stream that ends in an error frame.
    try:
        first: AudioChunk | None = await anext(chunks)
    except StopAsyncIteration:
        first = None
    except BaseException:
        await chunks.aclose()
        raise
    rate = first.sample_rate if first else engine.capabilities.sample_rate
    return StreamingResponse(_frames(first, chunks), media_type=FRAMES_MEDIA_TYPE, headers={"X-Sample-Rate": str(rate)})


async def _frames(first: AudioChunk | None, chunks: AsyncGenerator[AudioChunk, None]) -> AsyncIterator[bytes]:
    async with aclosing(chunks):
        try:
            if first is not None:
                yield audio_frame(first)
            async for chunk in chunks:
                yield audio_frame(chunk)
        except Exception as exc:  # the status is sent already: say what failed in the last frame
            log.exception("synthesis failed mid-stream")
            yield end_frame(f"{type(exc).__name__}: {exc}")
            return
    yield end_frame()


def _report_load(future: asyncio.Future[None]) -> None:
    if not future.cancelled() and future.exception() is not None:
        # Not fatal: /health and /v1/engine report the engine unavailable, requests get a 503.
        log.warning("could not load the engine: %s", future.exception())


def create_worker_app(name: str, settings: Settings, services: Services | None = None) -> FastAPI:
    """The worker for engine ``name`` (see ``local_engine`` for the errors)."""
    # The one engine is the default for every request, cloned voices included; other engines'
    # sections (workers, settings) are not this worker's business, its own engine's settings are.
    engines = {key: section for key, section in settings.engines.items() if key == name}
    settings = settings.model_copy(update={"default_engine": name, "default_clone_engine": name, "engines": engines})
    engine = services.engines.get(name) if services else local_engine(settings, name)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        owned = services is None
        if services is None:
            # The idle TTL applies here, where the model is: a gateway never unloads a worker's model.
            section = settings.engines.get(name)
            ttl = section.idle_ttl_s if section is not None and section.idle_ttl_s is not None else None
            registry = EngineRegistry(
                [engine],
                idle_ttl_s=settings.engine_idle_ttl_s if ttl is None else ttl,
                idle_trim_s=settings.engine_idle_trim_s,
            )
            app.state.services = await offload(Services.build, settings, engines=registry)
        else:
            app.state.services = services
        # Load in the background on the engine's thread: /health answers at once, requests queue.
        preload = asyncio.ensure_future(app.state.services.engines.load(name))
        preload.add_done_callback(_report_load)
        try:
            yield
        finally:
            if owned:
                app.state.services.close()

    app = FastAPI(
        title=f"Parla worker: {name}",
        version=__version__,
        description=f"The {name!r} engine alone, with the model microservice API and streaming.",
        lifespan=lifespan,
    )
    errors.install(app)
    app.include_router(health.router)
    app.include_router(router)  # before the standard router, whose {voice_id:path} would take ".../stream"
    app.include_router(standard.router)
    return app
