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

from pathlib import Path
from typing import Any, cast

from fastapi import APIRouter, Query
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from parla.api.auth import ADMIN
from parla.api.deps import DialogueDep, EnginesDep, SettingsDep, SpeechDep, VoicesDep
from parla.audio.encode import FORMATS, AudioFormat
from parla.engines.base import Engine, VoiceRef
from parla.engines.registry import EngineRegistry, UnknownEngineError
from parla.errors import InvalidInputError, validation_detail
from parla.offload import offload
from parla.paths import PathPolicy
from parla.services.dialogue import DialoguePlan, DialogueRequest, DialogueService, TurnIn
from parla.services.speech import SpeechOptions, SpeechPlan, SpeechService
from parla.services.voices import VoiceLibrary
from parla.settings import Settings
from parla.store.blobs import BlobWriter

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


def voice_of(
    settings: Settings,
    speech: SpeechService,
    voices: VoiceLibrary,
    voice_id: str,
    *,
    transcript: str | None,
    engine: str | None,
    language: str | None,
) -> tuple[VoiceRef, str]:
    """The voice ``voice_id`` names: a reference file (with what it says, when given), else a voice
    by name; else the default voice, with a note for the answer's message. Blocking: it may read
    and transcribe the voice file."""
    path = PathPolicy.from_settings(settings).resolve(voice_id, param="voice_id")
    if path.is_file():
        return speech.file_voice(path, transcript=transcript, model=engine, language=language), ""
    try:
        return voices.resolve(voice_id), ""
    except InvalidInputError:
        default = settings.default_voice
        note = f" (voice file {voice_id!r} not found: used the default voice {default!r})"
        return voices.resolve(default), note


def _options(
    text: str, parameters: dict[str, Any], controls: Controls, engine: str | None, fmt: AudioFormat
) -> SpeechOptions:
    return SpeechOptions(
        input=text,
        model=engine,
        response_format=fmt,
        speed=controls.speed,
        seed=controls.seed,
        language=controls.language,
        instructions=controls.instructions,
        parameters=parameters,
    )


def _speech_plan(
    settings: Settings,
    speech: SpeechService,
    voices: VoiceLibrary,
    voice_id: str,
    body: TextToSpeechRequest,
    engine: str | None,
    fmt: AudioFormat,
) -> tuple[SpeechPlan, str]:
    controls = Controls.of(body.parameters)
    voice, note = voice_of(
        settings, speech, voices, voice_id, transcript=controls.transcription, engine=engine, language=controls.language
    )
    options = _options(body.text, body.parameters, controls, engine, fmt)
    return speech.prepare(options, source="standard", voice=voice), note


def _dialogue_plan(
    settings: Settings,
    speech: SpeechService,
    voices: VoiceLibrary,
    dialogue: DialogueService,
    body: TextToDialogueRequest,
    engine: str | None,
    fmt: AudioFormat,
) -> tuple[DialoguePlan, str]:
    """The dialogue service's plan, each turn in its input's voice. The same file is the same
    speaker (the model microservice API: automatic speaker mapping), learned from the first
    transcription given for it."""
    controls = Controls.of(body.parameters)
    transcripts = controls.audio_transcriptions or []
    speakers: dict[str, str] = {}  # voice_id: speaker tag, in order of first appearance
    said: dict[str, str] = {}  # voice_id: the first transcription given for it
    for i, item in enumerate(body.inputs):
        speakers.setdefault(item.voice_id, f"S{len(speakers) + 1}")
        if i < len(transcripts) and transcripts[i]:
            said.setdefault(item.voice_id, transcripts[i] or "")
    resolved: dict[str, VoiceRef] = {}
    notes: list[str] = []
    for voice_id, speaker in speakers.items():
        resolved[speaker], note = voice_of(
            settings, speech, voices, voice_id, transcript=said.get(voice_id), engine=engine, language=controls.language
        )
        if note and note not in notes:
            notes.append(note)
    request = DialogueRequest(
        turns=[TurnIn(text=item.text, speaker=speakers[item.voice_id]) for item in body.inputs],
        voices={speaker: voice_id for voice_id, speaker in speakers.items()},
        model=engine,
        response_format=fmt,
        speed=controls.speed,
        seed=controls.seed,
        language=controls.language,
        instructions=controls.instructions,
        pause_s=controls.pause_s,
        parameters=body.parameters,
    )
    return dialogue.prepare(request, source="standard", resolved=resolved), "".join(notes)


def _engine(settings: Settings, engines: EngineRegistry, name: str | None) -> Engine:
    try:
        return engines.get(name or settings.default_engine)
    except UnknownEngineError as exc:
        raise InvalidInputError(str(exc), param="engine") from None


def _format_of(path: Path) -> AudioFormat:
    suffix = path.suffix.lower().lstrip(".")
    suffix = SUFFIX_FORMATS.get(suffix, suffix)
    return cast(AudioFormat, suffix) if suffix in FORMATS else "wav"


def _write(path: Path, audio: bytes) -> None:
    """Put the file in place whole (a temporary file beside it, then a rename), so a reader never
    sees half of it. (The rendered audio is whole already: a WAV carries its real sizes.)"""
    writer = BlobWriter(path)
    try:
        writer.write(audio)
        writer.commit()
    except BaseException:
        writer.abort()
        raise


# -- endpoints ----------------------------------------------------------------------------------


@router.post(
    "/v1/text-to-speech/{voice_id:path}",
    summary="Single-speaker speech to a file (model microservice API)",
    dependencies=[ADMIN],
)
async def text_to_speech(
    voice_id: str,
    body: TextToSpeechRequest,
    settings: SettingsDep,
    speech: SpeechDep,
    voices: VoicesDep,
    engine: str | None = ENGINE_QUERY,
) -> GenerationResponse:
    output = PathPolicy.from_settings(settings).output(body.output_filepath)
    plan, note = await offload(_speech_plan, settings, speech, voices, voice_id, body, engine, _format_of(output))
    rendered = await speech.render(plan)
    await offload(_write, output, rendered.audio)
    return GenerationResponse.of(output, "Audio", note, plan.engine, list(plan.ignored))


@router.post(
    "/v1/text-to-dialogue", summary="Multi-speaker dialogue to a file (model microservice API)", dependencies=[ADMIN]
)
async def text_to_dialogue(
    body: TextToDialogueRequest,
    settings: SettingsDep,
    speech: SpeechDep,
    voices: VoicesDep,
    dialogue: DialogueDep,
    engine: str | None = ENGINE_QUERY,
) -> GenerationResponse:
    # Four services, each used: a voice file is read by the speech service, a voice name resolved
    # by the library, and the turns planned and spoken by the dialogue service.
    output = PathPolicy.from_settings(settings).output(body.output_filepath)
    plan, note = await offload(_dialogue_plan, settings, speech, voices, dialogue, body, engine, _format_of(output))
    rendered = await dialogue.render(plan)
    await offload(_write, output, rendered.audio)
    return GenerationResponse.of(output, "Dialogue", note, plan.record.engine, plan.ignored)


def _model_engines(settings: Settings, engines: EngineRegistry, engine: str | None) -> list[Engine]:
    """The engines ``/v1/load-model`` and ``/v1/unload-model`` act on: the one named, or else the
    engines this API's requests go to by default. That is the default engine, and the default cloning
    engine too, which speaks every voice file and preset voice: unloading only the default engine
    would leave the model that served the files in memory. A worker has one engine for both."""
    if engine:
        return [_engine(settings, engines, engine)]
    first = _engine(settings, engines, None)
    try:
        clone = engines.get(settings.default_clone_engine)
    except UnknownEngineError:  # not installed here (a broken plugin): nothing of it to load or free
        return [first]
    return [first] if clone is first else [first, clone]


@router.post("/v1/load-model", summary="Load an engine's model (model microservice API)", dependencies=[ADMIN])
async def load_model(settings: SettingsDep, engines: EnginesDep, engine: str | None = ENGINE_QUERY) -> ModelResponse:
    targets = _model_engines(settings, engines, engine)
    loaded = []
    for index, target in enumerate(targets):
        # The engine asked for, or the default one, must load (or the answer is its 503); the cloning
        # engine that comes along is loaded where it can run, and the answer lists it only then.
        if index and target.unavailable_reason():
            continue
        await engines.load(target.name)
        loaded.append(target.name)
    return ModelResponse(message="Model loaded successfully", engine=targets[0].name, engines=loaded)


@router.post(
    "/v1/unload-model",
    summary="Unload an engine's model and free its memory (model microservice API)",
    dependencies=[ADMIN],
)
async def unload_model(settings: SettingsDep, engines: EnginesDep, engine: str | None = ENGINE_QUERY) -> ModelResponse:
    targets = _model_engines(settings, engines, engine)
    for target in targets:
        # On the engine's thread: after the requests already queued, never under one in progress.
        await engines.unload(target.name)
    return ModelResponse(
        message="Model unloaded successfully", engine=targets[0].name, engines=[t.name for t in targets]
    )
