"""The Titans character API: characters that answer by voice from their knowledge.

Paths and shapes as the seed documents them, so its clients work unchanged, plus what it lacks:
``PUT /update-character/{id}``, ``DELETE /delete-character/{id}``, token streaming
(``"stream": true``) and ``POST /ask-question-stream``, which speaks the answer sentence by
sentence while the model is still writing it.
"""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator, AsyncIterator
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import APIRouter, BackgroundTasks, File, Form, Request, UploadFile
from fastapi.responses import FileResponse, StreamingResponse
from pydantic import BaseModel, Field

from parla.api.auth import ADMIN, SPEAK, VOICES
from parla.api.deps import CharactersDep, EnginesDep, SettingsDep, SpeechDep
from parla.api.errors import error_body
from parla.api.voices import read_upload
from parla.characters.service import Answer, CharacterFields, CharacterPublic, CharacterUploads, Upload
from parla.characters.shapes import ENGINE_ALIASES
from parla.errors import InvalidInputError, ParlaError
from parla.offload import offload
from parla.settings import Settings

router = APIRouter(tags=["Titans character API"])

SEED_ENGINES = {"f5tts": "F5-TTS", "xtts": "XTTS-v2", "zonos": "Zonos"}
"""The Titans character API's voice-cloning models; each is a Parla engine worker when one is configured."""


class CharacterId(BaseModel):
    character_id: int = Field(..., ge=1)


class TextQuestion(CharacterId):
    question: str = Field(..., description="What to ask the character.")
    stream: bool = Field(False, description="Server-sent events: the answer token by token, then the audio URL.")


class DownloadModel(BaseModel):
    model_name: str = Field(..., min_length=1)
    model_type: Literal["huggingface", "openai", "gguf"] = "huggingface"


def _fields(
    name: str | None,
    llm_model: str | None,
    llm_config: str | None,
    voice_cloning_settings: str | None,
    stt_settings: str | None,
) -> CharacterFields:
    """The multipart form's text fields, the JSON ones parsed (a 400 naming the field when not JSON)."""
    return CharacterFields(
        name=name,
        llm_model=llm_model,
        llm_config=_json_field(llm_config, "llm_config"),
        voice_cloning_settings=_json_field(voice_cloning_settings, "voice_cloning_settings"),
        stt_settings=_json_field(stt_settings, "stt_settings"),
    )


def _json_field(raw: str | None, name: str) -> dict[str, Any] | None:
    if raw is None or not raw.strip():
        return None
    try:
        value = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise InvalidInputError(f"{name} is not valid JSON: {exc.msg}", param=name) from None
    if not isinstance(value, dict):
        raise InvalidInputError(f"{name} must be a JSON object", param=name)
    return value


async def _upload(file: UploadFile | None, limit: int) -> Upload | None:
    if file is None or not file.filename:
        return None
    data = await read_upload(file, limit)
    if not data:
        raise InvalidInputError(f"{file.filename} is empty", param=file.filename)
    return Upload(data=data, filename=file.filename)


async def _uploads(
    settings: Settings,
    character_image: UploadFile | None,
    knowledge_base_file: UploadFile | None,
    voice_cloning_audio: UploadFile | None,
    style_tuning_file: UploadFile | None,
) -> CharacterUploads:
    limit = settings.max_upload_bytes
    return CharacterUploads(
        character_image=await _upload(character_image, limit),
        knowledge_base_file=await _upload(knowledge_base_file, limit),
        voice_cloning_audio=await _upload(voice_cloning_audio, limit),
        style_tuning_file=await _upload(style_tuning_file, limit),
    )


def _public(request: Request, character: CharacterPublic) -> dict[str, Any]:
    image_url = (
        str(request.url_for("serve_image", character_id=character.id, filename=Path(character.image_file).name))
        if character.image_file
        else None
    )
    return {**character.model_dump(mode="json"), "image_url": image_url}


def _answer(request: Request, answer: Answer) -> dict[str, Any]:
    audio_url = (
        str(request.url_for("serve_audio", character_id=answer.character_id, filename=f"{answer.generation_id}.wav"))
        if answer.generation_id
        else None
    )
    return {
        "question": answer.question,
        "text_response": answer.text,
        "audio_url": audio_url,
        "knowledge_context": answer.knowledge_context,
        "knowledge_sources": [{"source": p.source, "score": p.score} for p in answer.passages],
        # Which path answered (generated, extracted, declined) and the passages that support it.
        "answer_source": answer.source,
        "supporting_passages": answer.supporting_passages,
        "character_name": answer.character_name,
        "generation_id": answer.generation_id,
        "warnings": answer.warnings,
        "status": "success",
    }


def _sse(event: dict[str, Any]) -> bytes:
    return f"data: {json.dumps(event)}\n\n".encode()


async def _event_stream(
    request: Request, events: AsyncGenerator[dict[str, Any], None], extra: dict[str, Any]
) -> StreamingResponse:
    """Server-sent events. The first event is awaited before the response starts, so what fails at
    once (an unknown character, an unreachable model) still gets its status code and JSON detail."""
    try:
        first = await anext(events)
    except StopAsyncIteration:
        first = None

    def encode(event: dict[str, Any]) -> bytes:
        if event["type"] == "speech.audio.done":
            return _sse({"type": "speech.audio.done", **extra, **_answer(request, event["answer"])})
        return _sse(event)

    async def body() -> AsyncIterator[bytes]:
        try:
            if first is not None:
                yield encode(first)
            async for event in events:
                yield encode(event)
        except ParlaError as exc:  # after the headers: the error travels as the last event
            yield _sse({"type": "error", "status_code": exc.status_code, **error_body(exc.status_code, exc.detail)})
        finally:
            await events.aclose()

    return StreamingResponse(body(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})


# -- characters --------------------------------------------------------------------------------


@router.post("/create-character", summary="Create a character (Titans character API)", dependencies=[VOICES])
async def create_character(
    request: Request,
    settings: SettingsDep,
    characters: CharactersDep,
    speech: SpeechDep,
    background: BackgroundTasks,
    name: Annotated[str, Form()],
    llm_model: Annotated[str | None, Form()] = None,
    llm_config: Annotated[str | None, Form(description="JSON: base_url, api_key, model_name, ...")] = None,
    voice_cloning_settings: Annotated[str | None, Form(description="JSON: model, reference_text, ...")] = None,
    stt_settings: Annotated[str | None, Form(description="JSON: model, model_size, language")] = None,
    character_image: Annotated[UploadFile | None, File()] = None,
    knowledge_base_file: Annotated[UploadFile | None, File()] = None,
    voice_cloning_audio: Annotated[UploadFile | None, File()] = None,
    style_tuning_file: Annotated[UploadFile | None, File()] = None,
) -> dict[str, Any]:
    fields = _fields(name, llm_model or None, llm_config, voice_cloning_settings, stt_settings)
    uploads = await _uploads(settings, character_image, knowledge_base_file, voice_cloning_audio, style_tuning_file)
    character = await offload(characters.create, fields, uploads)
    if character.voice_id:  # learnt now, so the first answer does not wait for it
        background.add_task(speech.warm_voice, character.voice_id)
    return {
        "message": "Character created successfully",
        "character_id": character.id,
        "character": _public(request, character),
        "status": "success",
    }


@router.put("/update-character/{character_id}", summary="Change a character (Parla)", dependencies=[VOICES])
async def update_character(
    character_id: int,
    request: Request,
    settings: SettingsDep,
    characters: CharactersDep,
    speech: SpeechDep,
    background: BackgroundTasks,
    name: Annotated[str | None, Form()] = None,
    llm_model: Annotated[str | None, Form()] = None,
    llm_config: Annotated[str | None, Form()] = None,
    voice_cloning_settings: Annotated[str | None, Form()] = None,
    stt_settings: Annotated[str | None, Form()] = None,
    character_image: Annotated[UploadFile | None, File()] = None,
    knowledge_base_file: Annotated[UploadFile | None, File()] = None,
    voice_cloning_audio: Annotated[UploadFile | None, File()] = None,
    style_tuning_file: Annotated[UploadFile | None, File()] = None,
) -> dict[str, Any]:
    fields = _fields(name, llm_model, llm_config, voice_cloning_settings, stt_settings)
    uploads = await _uploads(settings, character_image, knowledge_base_file, voice_cloning_audio, style_tuning_file)
    character = await offload(characters.update, character_id, fields, uploads)
    if character.voice_id and voice_cloning_audio is not None:
        background.add_task(speech.warm_voice, character.voice_id)
    return {"message": "Character updated", "character": _public(request, character), "status": "success"}


@router.delete("/delete-character/{character_id}", summary="Delete a character (Parla)", dependencies=[VOICES])
async def delete_character(character_id: int, characters: CharactersDep) -> dict[str, Any]:
    await offload(characters.delete, character_id)
    return {"message": f"Character {character_id} deleted", "status": "success"}


@router.get("/get-characters", summary="List characters (Titans character API)", dependencies=[SPEAK])
async def get_characters(request: Request, characters: CharactersDep) -> dict[str, Any]:
    found = await offload(characters.list_all)
    return {"characters": [_public(request, c) for c in found], "status": "success"}


@router.get("/get-character/{character_id}", summary="One character (Titans character API)", dependencies=[SPEAK])
async def get_character(character_id: int, request: Request, characters: CharactersDep) -> dict[str, Any]:
    character = await offload(characters.get, character_id)
    return {"character": _public(request, character), "status": "success"}


@router.post("/load-character", summary="Load a character's models (Titans character API)", dependencies=[SPEAK])
async def load_character(body: CharacterId, characters: CharactersDep) -> dict[str, Any]:
    character = await offload(characters.get, body.character_id)
    loaded = await characters.load(body.character_id)
    return {
        "message": f"Models loaded for character {character.name}",
        "character_id": character.id,
        "loaded": loaded,
        "status": "success",
    }


# -- questions ---------------------------------------------------------------------------------


@router.post(
    "/ask-question-text",
    summary="Ask by text; the answer as text and audio (Titans character API)",
    response_model=None,
    dependencies=[SPEAK],
)
async def ask_question_text(
    body: TextQuestion, request: Request, characters: CharactersDep
) -> dict[str, Any] | StreamingResponse:
    if body.stream:
        events = characters.converse(body.character_id, body.question, speak=False)
        return await _event_stream(request, events, {})
    answer = await characters.answer(body.character_id, body.question)
    return _answer(request, answer)


@router.post(
    "/ask-question-audio",
    summary="Ask by voice; the answer as text and audio (Titans character API)",
    response_model=None,
    dependencies=[SPEAK],
)
async def ask_question_audio(
    request: Request,
    settings: SettingsDep,
    characters: CharactersDep,
    character_id: Annotated[int, Form(ge=1)],
    audio_file: Annotated[UploadFile, File(description="The spoken question, any format FFmpeg reads.")],
    stream: Annotated[bool, Form()] = False,
) -> dict[str, Any] | StreamingResponse:
    data = await read_upload(audio_file, settings.max_upload_bytes)
    question = await offload(characters.transcribe_question, character_id, data)
    if stream:
        events = characters.converse(character_id, question, speak=True)
        return await _event_stream(request, events, {"transcribed_question": question})
    answer = await characters.answer(character_id, question)
    return {"transcribed_question": question, **_answer(request, answer)}


@router.post(
    "/ask-question-stream", summary="Ask; hear the answer while it is being written (Parla)", dependencies=[SPEAK]
)
async def ask_question_stream(body: TextQuestion, request: Request, characters: CharactersDep) -> StreamingResponse:
    """Server-sent events, OpenAI style (``data: {"type": ...}``): ``answer.delta`` as the model
    writes, ``speech.audio.delta`` (base64 24 kHz 16-bit mono PCM) for each sentence as soon as it
    is complete, ``answer.done`` with the whole text, then ``speech.audio.done`` with the Titans character API's
    answer fields (``audio_url`` of the whole answer as WAV)."""
    events = characters.converse(body.character_id, body.question, speak=True)
    return await _event_stream(request, events, {})


# -- models and files --------------------------------------------------------------------------


@router.post("/download-model", summary="Make a language model available (Titans character API)", dependencies=[ADMIN])
async def download_model(body: DownloadModel, characters: CharactersDep) -> dict[str, Any]:
    """Parla runs offline and downloads nothing at run time; this answers the documented success
    for a model that is already here, with its path, and otherwise says what to place where.

    Here means a file the embedded runtime can load: the bundled model (any of its names), a GGUF
    file in the data dir, ``PARLA_ALLOWED_PATHS`` or ``PARLA_MODELS_DIR``, or a Hugging Face
    repository (``org/name``, or ``org/name/file.gguf``) whose snapshot in the local hub cache
    (``HF_HUB_CACHE``, ``HF_HOME/hub`` or ``~/.cache/huggingface/hub``) or under
    ``PARLA_MODELS_DIR`` holds a GGUF file. A transformers model (a ``config.json`` and weights,
    no GGUF file) is found but refused: Parla has no runtime for it, so a character could not use it."""
    if body.model_type == "openai":
        message = "OpenAI-compatible models are used by URL; nothing to download"
        return {"model_path": None, "message": message, "status": "success"}
    path = await offload(characters.local_model, body.model_name.strip(), "model_name")
    return {"model_path": str(path), "status": "success"}


@router.get(
    "/get-tts-models", summary="Speech engines and whether they can run (Titans character API)", dependencies=[SPEAK]
)
async def get_tts_models(engines: EnginesDep) -> dict[str, Any]:
    models = []
    for engine in engines:
        reason = engine.unavailable_reason()
        models.append(
            {
                "name": engine.name,
                "available": reason is None,
                "cloning": engine.capabilities.cloning,
                "dependencies": [reason] if reason else [],
                "description": engine.description,
            }
        )
    names = set(engines.names())
    for name, title in SEED_ENGINES.items():
        alias = ENGINE_ALIASES.get(name)
        if name not in names and alias is not None and alias in names:  # a Parla engine speaks for it (f5tts: f5)
            reason = engines.get(alias).unavailable_reason()
            models.append(
                {
                    "name": name,
                    "available": reason is None,
                    "cloning": True,
                    "dependencies": [
                        f"the '{alias}' engine: {reason}; until then characters asking for it speak with the"
                        " 'clone' engine"
                    ]
                    if reason
                    else [],
                    "description": f"{title}, spoken by the '{alias}' engine",
                }
            )
        elif name not in names:
            models.append(
                {
                    "name": name,
                    "available": False,
                    "cloning": True,
                    "dependencies": [
                        f"a {title} worker: `parla serve-engine {name}` on a GPU machine and "
                        f"PARLA_ENGINES__{name.upper()}__URL; characters asking for it speak with the 'clone' engine"
                    ],
                    "description": title,
                }
            )
    return {"models": models, "status": "success"}


@router.get(
    "/serve-audio/{character_id}/{filename}",
    name="serve_audio",
    summary="A spoken answer (Titans character API)",
    dependencies=[SPEAK],
)
async def serve_audio(character_id: int, filename: str, characters: CharactersDep) -> FileResponse:
    path = await offload(characters.answer_audio, character_id, filename)
    return FileResponse(path, media_type="audio/wav", filename=filename)


@router.get(
    "/serve-image/{character_id}/{filename}",
    name="serve_image",
    summary="A character's image (Titans character API)",
    dependencies=[SPEAK],
)
async def serve_image(character_id: int, filename: str, characters: CharactersDep) -> FileResponse:
    path = await offload(characters.image_path, character_id, filename)
    return FileResponse(path)
