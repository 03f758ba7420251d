"""The Dia server API: ``/models``, ``/voices``, ``/voice_mappings``, ``/audio_prompts``.

``/generate``, the job paths, ``/config``, ``/logs`` and ``/cleanup`` are shared with other
dialects and live in their own routers.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, File, Form, UploadFile

from parla.api.deps import EnginesDep, MappingsDep, SettingsDep, VoicesDep
from parla.api.voices import read_upload
from parla.offload import offload
from parla.services.mappings import MappingIn, MappingPublic, MappingUpdate

router = APIRouter(tags=["Dia server API"])


@router.get("/models", summary="Available models")
def list_models(settings: SettingsDep, engines: EnginesDep) -> dict[str, Any]:
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
    return {"models": models, "default": settings.default_engine, "object": "list", "data": models}


@router.get("/voices", summary="Available voices: built-in OpenAI names, library voices, mappings")
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


@router.get("/voice_mappings", summary="Voice configurations")
def list_mappings(mappings: MappingsDep) -> list[MappingPublic]:
    return mappings.list()


@router.post("/voice_mappings", summary="Create a custom voice")
def create_mapping(body: MappingIn, mappings: MappingsDep) -> MappingPublic:
    return mappings.create(body)


@router.put("/voice_mappings/{voice_id}", summary="Update a voice")
def update_mapping(voice_id: str, body: MappingUpdate, mappings: MappingsDep) -> MappingPublic:
    return mappings.update(voice_id, body)


@router.delete("/voice_mappings/{voice_id}", summary="Delete a custom voice")
def delete_mapping(voice_id: str, mappings: MappingsDep) -> dict[str, str]:
    mappings.delete(voice_id)
    return {"status": "success", "message": f"voice mapping {voice_id} deleted"}


@router.post("/audio_prompts/upload", summary="Upload a voice sample (kept as a WAV file)")
async def upload_prompt(
    settings: SettingsDep,
    mappings: MappingsDep,
    prompt_id: Annotated[str, Form(min_length=1, max_length=100)],
    audio_file: Annotated[UploadFile, File()],
) -> dict[str, Any]:
    data = await read_upload(audio_file, settings.max_upload_bytes)
    info = await offload(mappings.upload_prompt, prompt_id, data)
    return {"status": "success", "message": f"audio prompt {prompt_id} saved"} | info


@router.get("/audio_prompts", summary="Uploaded prompts with file info")
def list_prompts(mappings: MappingsDep) -> dict[str, Any]:
    prompts = mappings.list_prompts()
    return {"audio_prompts": prompts, "count": len(prompts)}


@router.delete("/audio_prompts/{prompt_id}", summary="Delete a prompt and its file")
def delete_prompt(prompt_id: str, mappings: MappingsDep) -> dict[str, str]:
    mappings.delete_prompt(prompt_id)
    return {"status": "success", "message": f"audio prompt {prompt_id} deleted"}
