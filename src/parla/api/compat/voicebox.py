"""The voicebox API (the Qwen3-TTS voicebox backend): ``/profiles``, ``/history``, ``/audio/{id}``, ``/models/*``.

A thin dialect: profiles are library voices, history is Parla's history (every API's generations,
the documented superset, with ``profile_id`` set where a profile spoke), shaped as voicebox's
clients expect (``profile_id``, ``reference_text``, ``audio_path``). ``POST /generate`` with a
``profile_id`` and ``POST /transcribe`` live with the other forms of those paths.

A profile is a library voice, found by id or by name among the library voices only: a profile
named ``nova`` is that profile here, while the OpenAI API's ``nova`` stays the built-in preset. An
unknown profile is the voicebox API's 404 ``{"detail": "Profile not found"}`` (Parla's error
body adds its ``error`` object).

voicebox is built around Qwen3-TTS: profiles speak through the ``qwen3`` engine whenever it is
available (installed, its weights found, its worker up), otherwise through the default cloning
engine, and every answer that says which engine spoke says why it is not ``qwen3`` (``engine_note``).
``/models/load?model_size=1.7B|0.6B`` loads that size of Qwen3-TTS (each from its own directory,
see ``parla.engines.qwen3``), which then speaks the profiles' generations; where ``qwen3`` is not
available, there are no sizes, and a size is refused saying why.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass, field
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, File, Form, Query, UploadFile
from fastapi.responses import FileResponse
from pydantic import BaseModel, Field

from parla.api.auth import ADMIN, SPEAK, VOICES
from parla.api.deps import EnginesDep, HistoryDep, SettingsDep, VoicesDep
from parla.api.voices import read_upload
from parla.engines.base import Engine
from parla.engines.qwen3 import SIZES, Qwen3Engine, model_size
from parla.engines.registry import EngineRegistry
from parla.errors import InvalidInputError, NotFoundError
from parla.offload import offload
from parla.services.history import GenerationPublic, HistoryFilter, HistoryService
from parla.services.voices import SamplePublic, VoiceCreate, VoiceLibrary, VoicePublic, VoiceUpdate
from parla.settings import Settings

router = APIRouter(tags=["voicebox API"])

PROFILE_NOT_FOUND = "Profile not found"
"""The voicebox API's own words for an unknown profile, which its clients may match."""


def profile_id_of(voices: VoiceLibrary, profile_id: str) -> str:
    """The library id of the profile ``profile_id`` names (an id, or a name among library voices:
    built-in voices are no profiles). Blocking. A 404 in the voicebox API's words when there is none;
    ``POST /generate`` with a ``profile_id`` speaks the id this returns."""
    try:
        return voices.get(profile_id).id
    except NotFoundError:
        raise NotFoundError(PROFILE_NOT_FOUND, param="profile_id") from None


class ProfileCreate(BaseModel):
    """The voicebox API's profile fields, with the library's limits (checked here: a 422, not a 500)."""

    name: str = Field(..., min_length=1, max_length=100)
    description: str | None = Field(None, max_length=2000)
    language: str = Field("en", min_length=2, max_length=16)


class ProfileUpdate(BaseModel):
    name: str | None = Field(None, min_length=1, max_length=100)
    description: str | None = Field(None, max_length=2000)
    language: str | None = Field(None, min_length=2, max_length=16)


def _profile(voice: VoicePublic) -> dict[str, Any]:
    return {
        "id": voice.id,
        "name": voice.name,
        "description": voice.description,
        "language": voice.language,
        "created_at": voice.created_at,
        "updated_at": voice.updated_at,
        "sample_count": len(voice.samples),
    }


def _sample(voices: VoiceLibrary, sample: SamplePublic) -> dict[str, Any]:
    path = voices.sample_path(sample.voice_id, sample.id)
    return {
        "id": sample.id,
        "profile_id": sample.voice_id,
        "audio_path": str(path),
        "reference_text": sample.transcript,
    }


def _record(history: HistoryService, generation: GenerationPublic, profiles: set[str]) -> dict[str, Any]:
    path = history.audio(generation.id)[0] if generation.has_audio else None
    return {
        "id": generation.id,
        "profile_id": generation.voice_id if generation.voice_id in profiles else None,
        "text": generation.text,
        "language": str(generation.parameters.get("language", "en")),
        "audio_path": str(path) if path else None,
        "duration": round(generation.duration_s, 3),
        "seed": generation.seed,
        "created_at": generation.created_at,
    }


def _profile_ids(voices: VoiceLibrary) -> set[str]:
    """The ids of the library voices: a generation spoken by one of them has a profile."""
    return {v.id for v in voices.list_library()}


@router.post("/profiles", summary="Create a voice profile", dependencies=[VOICES])
def create_profile(body: ProfileCreate, voices: VoicesDep) -> dict[str, Any]:
    created = voices.create(VoiceCreate(name=body.name, description=body.description, language=body.language))
    return _profile(created)


@router.get("/profiles", summary="All voice profiles", dependencies=[SPEAK])
def list_profiles(voices: VoicesDep) -> list[dict[str, Any]]:
    return [_profile(v) for v in voices.list_library()]


@router.get("/profiles/{profile_id}", summary="One voice profile", dependencies=[SPEAK])
def get_profile(profile_id: str, voices: VoicesDep) -> dict[str, Any]:
    return _profile(voices.get(profile_id_of(voices, profile_id)))


@router.put("/profiles/{profile_id}", summary="Update a voice profile", dependencies=[VOICES])
def update_profile(profile_id: str, body: ProfileUpdate, voices: VoicesDep) -> dict[str, Any]:
    changes = VoiceUpdate(**body.model_dump(exclude_unset=True, exclude_none=True))
    return _profile(voices.update(profile_id_of(voices, profile_id), changes))


@router.delete("/profiles/{profile_id}", summary="Delete a profile and all its samples", dependencies=[VOICES])
def delete_profile(profile_id: str, voices: VoicesDep) -> dict[str, str]:
    voices.delete(profile_id_of(voices, profile_id))
    return {"message": "Profile deleted successfully"}


@router.post("/profiles/{profile_id}/samples", summary="Add a sample to a profile", dependencies=[VOICES])
async def add_sample(
    profile_id: str,
    settings: SettingsDep,
    voices: VoicesDep,
    file: Annotated[UploadFile, File()],
    reference_text: Annotated[str | None, Form()] = None,
) -> dict[str, Any]:
    voice_id = await offload(profile_id_of, voices, profile_id)
    data = await read_upload(file, settings.max_upload_bytes)
    added = await offload(voices.add_sample, voice_id, data, reference_text)
    return _sample(voices, added.sample) | {"warnings": added.warnings}


@router.get("/profiles/{profile_id}/samples", summary="A profile's samples", dependencies=[SPEAK])
def list_samples(profile_id: str, voices: VoicesDep) -> list[dict[str, Any]]:
    return [_sample(voices, s) for s in voices.list_samples(profile_id_of(voices, profile_id))]


@router.delete("/profiles/samples/{sample_id}", summary="Delete one sample", dependencies=[VOICES])
def delete_sample(sample_id: str, voices: VoicesDep) -> dict[str, str]:
    for voice in voices.list_library():
        if any(s.id == sample_id for s in voice.samples):
            voices.delete_sample(voice.id, sample_id)
            return {"message": "Sample deleted successfully"}
    raise NotFoundError(f"sample {sample_id!r} not found")


@router.get("/history", summary="Generation history", dependencies=[SPEAK])
def list_history(
    voices: VoicesDep,
    history: HistoryDep,
    profile_id: str | None = None,
    search: str | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> list[dict[str, Any]]:
    voice_id = profile_id_of(voices, profile_id) if profile_id else None
    page = history.list_page(HistoryFilter(search=search, voice_id=voice_id), limit=limit, offset=offset)
    profiles = _profile_ids(voices)
    return [_record(history, g, profiles) for g in page.items]


@router.get("/history/stats", summary="Generation statistics", dependencies=[SPEAK])
def history_stats(voices: VoicesDep, history: HistoryDep) -> dict[str, Any]:
    stats = history.stats()
    profiles = _profile_ids(voices)
    by_profile = {id_: count for id_, count in history.counts_by_voice_id().items() if id_ in profiles}
    return {
        "total_generations": stats.total_generations,
        "total_duration_seconds": round(stats.total_duration_seconds, 3),
        "generations_by_profile": by_profile,
    }


@router.get("/history/{generation_id}", summary="One generation", dependencies=[SPEAK])
def get_history(generation_id: str, voices: VoicesDep, history: HistoryDep) -> dict[str, Any]:
    return _record(history, history.get(generation_id), _profile_ids(voices))


@router.delete("/history/{generation_id}", summary="Delete a generation", dependencies=[SPEAK])
def delete_history(generation_id: str, history: HistoryDep) -> dict[str, str]:
    history.delete(generation_id)
    return {"message": "Generation deleted successfully"}


@router.get("/audio/{generation_id}", summary="A generation's audio file", dependencies=[SPEAK])
def get_audio(generation_id: str, history: HistoryDep) -> FileResponse:
    path, fmt = history.audio(generation_id)
    return FileResponse(path, media_type=f"audio/{'mpeg' if fmt == 'mp3' else fmt}", filename=f"{generation_id}.{fmt}")


QWEN3_ENGINE = "qwen3"
"""The engine the voicebox backend was built around: profiles speak through it whenever it is available."""

_chosen_sizes: weakref.WeakKeyDictionary[EngineRegistry, str] = weakref.WeakKeyDictionary()
"""The Qwen3-TTS size each server's voicebox clients loaded last (``/models/load?model_size=``), by
the server's registry: it goes with each of their generations, so that a worker, which holds one
model and is shared by every gateway, speaks them in that size."""


def speaking_engine(settings: Settings, engines: EngineRegistry) -> Engine:
    """The engine profiles speak through: Qwen3-TTS when it is installed, its weights found and its
    worker up; otherwise the default cloning engine (and ``engine_note`` says why). Blocking: a local
    engine's availability looks for its packages and weights."""
    if QWEN3_ENGINE in engines.names():
        qwen3 = engines.get(QWEN3_ENGINE)
        if qwen3.unavailable_reason() is None:
            return qwen3
    return engines.get(settings.default_clone_engine)


def engine_note(engines: EngineRegistry, engine: Engine) -> str | None:
    """Why profiles do not speak through Qwen3-TTS here (``None`` when they do)."""
    if engine.name == QWEN3_ENGINE:
        return None
    if QWEN3_ENGINE in engines.names():
        reason = engines.get(QWEN3_ENGINE).unavailable_reason()
    else:
        reason = "the qwen3 engine is not installed"
    return f"Qwen3-TTS is not available here, so profiles speak through engine {engine.name!r}: {reason}"


@dataclass(frozen=True)
class ProfileSpeech:
    """How a profile's generation is spoken: the engine to ask for (``None``: the server's choice, as
    every API makes it), the engine parameters it adds, and the note on the engine."""

    model: str | None
    parameters: dict[str, Any] = field(default_factory=dict)
    engine_note: str | None = None


def profile_speech(settings: Settings, engines: EngineRegistry, voices: VoiceLibrary, voice_id: str) -> ProfileSpeech:
    """How ``POST /generate`` with a ``profile_id`` speaks the profile ``voice_id`` (a library id):
    through Qwen3-TTS, in the size the voicebox clients loaded, when it is available and the profile
    has samples to clone; else as the server would. Blocking."""
    engine = speaking_engine(settings, engines)
    note = engine_note(engines, engine)
    if engine.name != QWEN3_ENGINE:
        return ProfileSpeech(None, {}, note)
    if not voices.resolve(voice_id).samples:
        return ProfileSpeech(None, {}, "the profile has no samples for Qwen3-TTS to clone: the server's engine speaks")
    size = _chosen_sizes.get(engines)
    return ProfileSpeech(QWEN3_ENGINE, {"model_size": size} if size else {}, note)


def _size_of(engine: Engine, note: str | None, asked: str | None) -> str | None:
    """The Qwen3-TTS size ``asked`` means, checked against the engine that serves profiles; a 400
    saying what is offered when it is no size of that engine. Without Qwen3-TTS, the engine's own
    name is its one model, and is accepted as such."""
    if asked is None:
        return None
    if engine.name != QWEN3_ENGINE:
        if asked == engine.name:
            return asked
        # Echoing a size back would tell the client it was honoured: there are no sizes without Qwen3-TTS.
        raise InvalidInputError(
            f"model_size {asked!r} is not offered: {note}; that engine has one model and "
            "no sizes: leave model_size out",
            param="model_size",
        )
    size = model_size(asked)
    if size is None:
        raise InvalidInputError(
            f"model_size {asked!r} is not one of Qwen3-TTS's sizes: give {' or '.join(SIZES)}", param="model_size"
        )
    return size


@router.post(
    "/models/load", summary="Load the speech model (model_size: Qwen3-TTS's 1.7B or 0.6B)", dependencies=[ADMIN]
)
async def load_model(settings: SettingsDep, engines: EnginesDep, model_size: str | None = None) -> dict[str, Any]:
    engine = await offload(speaking_engine, settings, engines)
    note = await offload(engine_note, engines, engine)
    size = _size_of(engine, note, model_size)
    if size in SIZES and isinstance(engine, Qwen3Engine):
        # Here, in this process: that size is loaded now, on the engine's thread, in place of the other.
        local: Qwen3Engine = engine
        await engines.runner(engine.name).call(lambda: local.use_size(size))
    else:
        # A worker loads its model now; the size, which only a request can carry to it, goes with each
        # profile's generation from now on (the worker switches at the first).
        await engines.load(engine.name)
    if size in SIZES:
        _chosen_sizes[engines] = size
    named = f"{engine.name} ({size})" if size in SIZES else engine.name
    return {
        "message": f"Model {named} loaded successfully",
        "model_size": size,
        "loaded_at": datetime.now(),
        "engine": engine.name,
        "engine_note": note,
    }


@router.post("/models/unload", summary="Unload the speech model", dependencies=[ADMIN])
async def unload_model(settings: SettingsDep, engines: EnginesDep) -> dict[str, str]:
    engine = await offload(speaking_engine, settings, engines)
    await engines.unload(engine.name)
    return {"message": f"Model {engine.name} unloaded successfully"}
