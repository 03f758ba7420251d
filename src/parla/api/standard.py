"""The model microservice API: ``/v1/text-to-speech/{voice_id}``,
``/v1/text-to-dialogue``, ``/v1/load-model``, ``/v1/unload-model`` (``/health`` and ``/`` are in
``health``). What a ``parla serve-engine`` worker serves, and what the gateway answers too.

A thin translation onto the speech and dialogue services. The dialect's own conventions: a voice
is a file path (``voice_id``, URL-encoded) of reference audio, the audio is written to
``output_filepath`` (WAV, or the format its extension names) and the answer says where. Both paths
must lie inside the allowed directories (``parla.paths``). A ``voice_id`` that is no file may name
a voice (``alloy``, a library voice); otherwise the default voice speaks and the answer says so.
"""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Query
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from parla.api.deps import ServicesDep
from parla.audio.encode import FORMATS
from parla.engines.base import Engine, VoiceRef
from parla.engines.registry import UnknownEngineError
from parla.errors import InvalidInputError, validation_detail
from parla.offload import offload
from parla.paths import PathPolicy
from parla.services import Services
from parla.services.dialogue import DialoguePlan, TurnPlan
from parla.services.speech import SpeechPlan
from parla.store.blobs import BlobWriter
from parla.text.dialogue import NONVERBAL_PAUSE_S, is_cue, split_cues

router = APIRouter(tags=["Model microservice API"])

ENGINE_QUERY = Query(None, description="Engine to use (see /v1/models); default: the server's.")
SUFFIX_FORMATS = {"ogg": "opus", "wave": "wav"}


# -- the API's shared models -------------------------------------------------------------------


class DialogueInput(BaseModel):
    text: str = Field(..., min_length=1, description="What this speaker says.")
    voice_id: str = Field(..., min_length=1, description="Reference audio file of this speaker's voice.")


class TextToSpeechRequest(BaseModel):
    text: str = Field(..., min_length=1, description="Text to generate.")
    output_filepath: str = Field(..., description="Where to write the audio (inside the allowed directories).")
    parameters: dict[str, Any] = Field(
        default_factory=dict,
        description="seed, speed, language, instructions, transcription (of the voice file), and the engine's own "
        "parameters (see /v1/models); others are ignored.",
    )


class TextToDialogueRequest(BaseModel):
    inputs: list[DialogueInput] = Field(..., min_length=1)
    output_filepath: str = Field(..., description="Where to write the audio (inside the allowed directories).")
    parameters: dict[str, Any] = Field(
        default_factory=dict,
        description="As for text-to-speech, plus audio_transcriptions (one per input) and pause_s.",
    )


class GenerationResponse(BaseModel):
    status: str = "success"
    output_filepath: str
    message: str
    ignored_parameters: list[str] = Field(
        default_factory=list, description="Parameters given that the engine does not use (accepted, not applied)."
    )

    @classmethod
    def of(cls, output: Path, what: str, note: str, engine: str, ignored: list[str]) -> GenerationResponse:
        unused = f" (not used by {engine}: {', '.join(ignored)})" if ignored else ""
        message = f"{what} generated successfully{note}{unused}"
        return cls(output_filepath=str(output), message=message, ignored_parameters=ignored)


class ModelResponse(BaseModel):
    """The API's ``LoadModelResponse`` and ``UnloadModelResponse``, naming the engine (the one named, or
    the default engine) and every engine that was acted on."""

    status: str = "success"
    message: str
    engine: str
    engines: list[str]


class Controls(BaseModel):
    """The parameters the dialect acts on itself. All parameters also go to the engine, which
    checks the ones it knows and ignores the rest (the model microservice API: "all parameters accepted")."""

    model_config = ConfigDict(extra="ignore")

    seed: int | None = Field(None, ge=0, le=2**31 - 1)
    speed: float = Field(1.0, ge=0.25, le=4.0)
    language: str | None = None
    instructions: str | None = None
    transcription: str | None = None
    audio_transcriptions: list[str | None] | None = None
    pause_s: float = Field(0.35, ge=0.0, le=5.0)

    @classmethod
    def of(cls, parameters: dict[str, Any]) -> Controls:
        try:
            return cls.model_validate(parameters)
        except ValidationError as exc:
            raise InvalidInputError(validation_detail(exc.errors(), "parameters")[0], param="parameters") from None


# -- translation --------------------------------------------------------------------------------


def plan_speech(
    services: Services,
    voice_id: str,
    *,
    text: str,
    parameters: dict[str, Any],
    controls: Controls,
    engine: str | None,
    fmt: str = "wav",
    transcript: str | None = None,
) -> tuple[SpeechPlan, str]:
    """The plan for speaking ``text`` in the voice ``voice_id`` names, and a note for the answer's
    message when the voice was not found. Blocking: it may read and transcribe the voice file."""
    path = PathPolicy.from_settings(services.settings).resolve(voice_id, param="voice_id")
    options: dict[str, Any] = {
        "text": text,
        "model": engine,
        "fmt": fmt,
        "speed": controls.speed,
        "seed": controls.seed,
        "language": controls.language,
        "instructions": controls.instructions,
        "parameters": parameters,
        "source": "standard",
    }
    if path.is_file():
        return services.speech.prepare_file_voice(path, transcript=transcript, **options), ""
    try:
        voice: VoiceRef | None = services.voices.resolve(voice_id)
    except InvalidInputError:
        voice = None
    default = services.settings.default_voice
    note = "" if voice else f" (voice file {voice_id!r} not found: used the default voice {default!r})"
    return services.speech.prepare(voice=voice, **options), note


def _engine(services: Services, name: str | None) -> Engine:
    try:
        return services.engines.get(name or services.settings.default_engine)
    except UnknownEngineError as exc:
        raise InvalidInputError(str(exc), param="engine") from None


def _format_of(path: Path) -> str:
    suffix = path.suffix.lower().lstrip(".")
    suffix = SUFFIX_FORMATS.get(suffix, suffix)
    return suffix if suffix in FORMATS else "wav"


def _write(path: Path, fmt: str, audio: bytes) -> None:
    """Put the file in place whole (a temporary file beside it, then a rename), so a reader never
    sees half of it. (The rendered audio is whole already: a WAV carries its real sizes.)"""
    writer = BlobWriter(path)
    try:
        writer.write(audio)
        writer.commit()
    except BaseException:
        writer.abort()
        raise


def _dialogue_plan(
    services: Services, body: TextToDialogueRequest, controls: Controls, engine: str | None, fmt: str
) -> tuple[DialoguePlan, str]:
    """The dialogue service's plan, with each turn spoken in its input's voice file. The same
    file is the same speaker (the model microservice API: automatic speaker mapping); cues become pauses as in
    every dialogue."""
    seed = controls.seed if controls.seed is not None else secrets.randbelow(2**31)
    controls = controls.model_copy(update={"seed": seed})
    transcripts = controls.audio_transcriptions or []
    speakers: dict[str, str] = {}
    turns: list[TurnPlan] = []
    notes: list[str] = []
    for i, item in enumerate(body.inputs):
        speaker = speakers.setdefault(item.voice_id, f"S{len(speakers) + 1}")
        pieces = split_cues(item.text)
        spoken = " ".join(p for p in pieces if not is_cue(p))
        if not spoken.strip():
            raise InvalidInputError(f"input {i + 1} has nothing to say besides cues", param="inputs")
        transcript = transcripts[i] if i < len(transcripts) else None
        first, note = plan_speech(
            services,
            item.voice_id,
            text=spoken,
            parameters=body.parameters,
            controls=controls,
            engine=engine,
            fmt=fmt,
            transcript=transcript,
        )
        if note and note not in notes:
            notes.append(note)
        parts: list[SpeechPlan | float] = [first]
        if len(pieces) > 1:  # speak around the cues in the voice just found
            parts = [
                NONVERBAL_PAUSE_S if is_cue(p) else services.speech.prepare(**_same_as(first, p, engine))
                for p in pieces
            ]
        turns.append(TurnPlan(speaker, item.voice_id, item.text, parts))
    source = next(p for p in turns[0].parts if isinstance(p, SpeechPlan)).source
    plan = services.dialogue.assemble(turns, pause_s=controls.pause_s, model=engine, source=source)
    return plan, "".join(notes)


def _same_as(plan: SpeechPlan, text: str, engine: str | None) -> dict[str, Any]:
    """``prepare``'s arguments for more text in the voice and settings of ``plan``."""
    return {
        "text": text,
        "voice": plan.voice,
        "model": engine,
        "fmt": plan.format,
        "speed": plan.speed,
        "seed": plan.seed,
        "language": plan.language,
        "instructions": plan.instructions,
        "parameters": plan.parameters,
        "source": plan.source,
    }


# -- endpoints ----------------------------------------------------------------------------------


@router.post("/v1/text-to-speech/{voice_id:path}", summary="Single-speaker speech to a file (model microservice API)")
async def text_to_speech(
    voice_id: str, body: TextToSpeechRequest, services: ServicesDep, engine: str | None = ENGINE_QUERY
) -> GenerationResponse:
    output = PathPolicy.from_settings(services.settings).output(body.output_filepath)
    controls = Controls.of(body.parameters)
    fmt = _format_of(output)
    plan, note = await offload(
        plan_speech,
        services,
        voice_id,
        text=body.text,
        parameters=body.parameters,
        controls=controls,
        engine=engine,
        fmt=fmt,
        transcript=controls.transcription,
    )
    services.speech.single_speaker(plan)
    audio = await services.speech.render(plan)
    await offload(_write, output, fmt, audio)
    return GenerationResponse.of(output, "Audio", note, plan.engine.name, list(plan.ignored))


@router.post("/v1/text-to-dialogue", summary="Multi-speaker dialogue to a file (model microservice API)")
async def text_to_dialogue(
    body: TextToDialogueRequest, services: ServicesDep, engine: str | None = ENGINE_QUERY
) -> GenerationResponse:
    output = PathPolicy.from_settings(services.settings).output(body.output_filepath)
    controls = Controls.of(body.parameters)
    plan, note = await offload(_dialogue_plan, services, body, controls, engine, _format_of(output))
    audio = await services.dialogue.render(plan)
    await offload(_write, output, plan.record.format, audio)
    return GenerationResponse.of(output, "Dialogue", note, plan.record.engine.name, plan.ignored)


def _model_engines(services: Services, engine: str | None) -> list[Engine]:
    """The engines ``/v1/load-model`` and ``/v1/unload-model`` act on: the one named, or else the
    engines this API's requests go to by default. That is the default engine, and the default cloning
    engine too, which speaks every voice file and preset voice: unloading only the default engine
    would leave the model that served the files in memory. A worker has one engine for both."""
    if engine:
        return [_engine(services, engine)]
    first = _engine(services, None)
    try:
        clone = services.engines.get(services.settings.default_clone_engine)
    except UnknownEngineError:  # not installed here (a broken plugin): nothing of it to load or free
        return [first]
    return [first] if clone is first else [first, clone]


@router.post("/v1/load-model", summary="Load an engine's model (model microservice API)")
async def load_model(services: ServicesDep, engine: str | None = ENGINE_QUERY) -> ModelResponse:
    targets = _model_engines(services, engine)
    loaded = []
    for index, target in enumerate(targets):
        # The engine asked for, or the default one, must load (or the answer is its 503); the cloning
        # engine that comes along is loaded where it can run, and the answer lists it only then.
        if index and target.unavailable_reason():
            continue
        await services.engines.runner(target.name).call(target.load)
        loaded.append(target.name)
    return ModelResponse(message="Model loaded successfully", engine=targets[0].name, engines=loaded)


@router.post("/v1/unload-model", summary="Unload an engine's model and free its memory (model microservice API)")
async def unload_model(services: ServicesDep, engine: str | None = ENGINE_QUERY) -> ModelResponse:
    targets = _model_engines(services, engine)
    for target in targets:
        # On the engine's thread: after the requests already queued, never under one in progress.
        await services.engines.runner(target.name).call(target.unload)
    return ModelResponse(
        message="Model unloaded successfully", engine=targets[0].name, engines=[t.name for t in targets]
    )
