"""The Dia server API: ``/models``, ``/voices``, ``/voice_mappings``, ``/audio_prompts``.

``/generate``, the job paths, ``/config``, ``/logs`` and ``/cleanup`` are shared with other
dialects and live in their own routers.

The API was built around Dia: it speaks its dialogues through the ``dia`` engine whenever that is
installed, its weights found and its worker up (``speaking_engine``, ``model_for``), and through
today's engines otherwise; ``/models`` says which, and why.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, File, Form, UploadFile

from parla.api.auth import SPEAK, VOICES
from parla.api.deps import EnginesDep, MappingsDep, SettingsDep, VoicesDep
from parla.api.voices import read_upload
from parla.engines.base import Engine
from parla.engines.registry import EngineRegistry
from parla.offload import offload
from parla.services.mappings import MappingIn, MappingPublic, MappingUpdate
from parla.settings import Settings
from parla.text.dialogue import DialogueSyntaxError, parse_speaker_tags

router = APIRouter(tags=["Dia server API"])

DIA_ENGINE = "dia"
"""The engine the Dia server API was built around: its dialogues go through it whenever it is available."""
DIA_MODELS = ("dia", "dia-1.6b", "nari-labs/dia-1.6b", "nari-labs/dia-1.6b-0626")
"""Model names the Dia server's own clients send: they mean the ``dia`` engine where it can speak."""


def dia_reason(engines: EngineRegistry) -> str | None:
    """Why the ``dia`` engine cannot speak here (not installed, its environment or weights missing, its
    worker down), or ``None`` when it can. Plain ``def`` callers only: a local engine's availability
    looks for its packages and weights on disk."""
    if DIA_ENGINE not in engines.names():
        return "the dia engine is not installed"
    return engines.get(DIA_ENGINE).unavailable_reason()


def speaking_engine(settings: Settings, engines: EngineRegistry) -> Engine:
    """The engine this API's dialogues speak through: Dia when it can speak here; otherwise the
    server's default engine (each voice's own engine, as every API chooses it)."""
    if dia_reason(engines) is None:
        return engines.get(DIA_ENGINE)
    return engines.get(settings.default_engine)


def model_for(engines: EngineRegistry, model: str | None, text: str) -> str | None:
    """The engine a ``/generate`` request speaks through: the one it names, unless it names Dia by
    one of its own clients' names (or nothing); then Dia for a dialogue of two speakers or more where
    Dia can speak, else ``None`` (the server's choice, as every API makes it). Dia makes dialogue
    only, so a one-speaker text stays with today's engines rather than being refused."""
    if model is not None and model.lower() not in DIA_MODELS:
        return model
    try:
        speakers = {turn.speaker for turn in parse_speaker_tags(text)}
    except DialogueSyntaxError:
        return None  # the dialogue service words the syntax error
    return DIA_ENGINE if len(speakers) >= 2 and dia_reason(engines) is None else None


@router.get("/models", summary="Available models", dependencies=[SPEAK])
def list_models(settings: SettingsDep, engines: EnginesDep) -> dict[str, Any]:
    """Plain ``def``: a local engine's availability looks for its packages and weights (on a thread).
    ``engine`` is the one this API's dialogues speak through; ``engine_note`` says why, when not Dia."""
    models = [
        {
            "id": e.name,
            "name": e.name,
            "description": e.description,
            "available": e.status().available,
            "loaded": e.loaded,
            "capabilities": e.capabilities.describe(),
        }
        for e in engines
    ]
    speaking = speaking_engine(settings, engines)
    reason = dia_reason(engines)
    note = None if reason is None else f"Dia is not available here ({reason}): dialogues speak through {speaking.name}"
    return {
        "models": models,
        "default": settings.default_engine,
        "engine": speaking.name,
        "engine_note": note,
        "object": "list",
        "data": models,
    }


@router.get(
    "/voices", summary="Available voices: built-in OpenAI names, library voices, mappings", dependencies=[SPEAK]
)
def list_voices(library: VoicesDep, mappings: MappingsDep) -> dict[str, Any]:
    voices = library.list_all()
    names = {v["name"] for v in voices}
    mapped = [
        {
            "id": m.voice_id,
            "name": m.voice_id,
            "style": m.style,
            "primary_speaker": m.primary_speaker,
            "audio_prompt": m.audio_prompt,
            "builtin": False,
            "mapping": True,
        }
        for m in mappings.list()
        if not m.builtin and m.voice_id not in names
    ]
    return {"voices": voices + mapped}


@router.get("/voice_mappings", summary="Voice configurations", dependencies=[SPEAK])
def list_mappings(mappings: MappingsDep) -> list[MappingPublic]:
    return mappings.list()


@router.post("/voice_mappings", summary="Create a custom voice", dependencies=[VOICES])
def create_mapping(body: MappingIn, mappings: MappingsDep) -> MappingPublic:
    return mappings.create(body)


@router.put("/voice_mappings/{voice_id}", summary="Update a voice", dependencies=[VOICES])
def update_mapping(voice_id: str, body: MappingUpdate, mappings: MappingsDep) -> MappingPublic:
    return mappings.update(voice_id, body)


@router.delete("/voice_mappings/{voice_id}", summary="Delete a custom voice", dependencies=[VOICES])
def delete_mapping(voice_id: str, mappings: MappingsDep) -> dict[str, str]:
    mappings.delete(voice_id)
    return {"status": "success", "message": f"voice mapping {voice_id} deleted"}


@router.post("/audio_prompts/upload", summary="Upload a voice sample (kept as a WAV file)", dependencies=[VOICES])
async def upload_prompt(
    settings: SettingsDep,
    mappings: MappingsDep,
    prompt_id: Annotated[str, Form(min_length=1, max_length=100)],
    audio_file: Annotated[UploadFile, File()],
) -> dict[str, Any]:
    data = await read_upload(audio_file, settings.max_upload_bytes)
    info = await offload(mappings.upload_prompt, prompt_id, data)
    return {"status": "success", "message": f"audio prompt {prompt_id} saved"} | info


@router.get("/audio_prompts", summary="Uploaded prompts with file info", dependencies=[SPEAK])
def list_prompts(mappings: MappingsDep) -> dict[str, Any]:
    prompts = mappings.list_prompts()
    return {"audio_prompts": prompts, "count": len(prompts)}


@router.delete("/audio_prompts/{prompt_id}", summary="Delete a prompt and its file", dependencies=[VOICES])
def delete_prompt(prompt_id: str, mappings: MappingsDep) -> dict[str, str]:
    mappings.delete_prompt(prompt_id)
    return {"status": "success", "message": f"audio prompt {prompt_id} deleted"}
