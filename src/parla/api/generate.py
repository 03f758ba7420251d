"""``POST /generate``: the Dia server API's form (audio back, ``?async_mode=true`` for a job), or the voicebox API's
form when the body names a ``profile_id`` (a JSON generation record back) — docs/architecture.md, "Clashes"."""

from __future__ import annotations

import json
import re
from typing import Any, Literal

from fastapi import APIRouter, Query
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from parla.api.auth import SPEAK
from parla.api.compat import voicebox
from parla.api.compat.dia import DIA_ENGINE, model_for
from parla.api.compat.voicebox import profile_id_of
from parla.api.deps import DialogueDep, EnginesDep, JobsDep, MappingsDep, SettingsDep, SpeechDep, VoicesDep
from parla.api.streams import started
from parla.audio.encode import CONTENT_TYPES, AudioFormat
from parla.engines.registry import EngineRegistry
from parla.errors import InvalidInputError, NotFoundError
from parla.offload import offload
from parla.services.dialogue import DialogueRequest, DialogueService
from parla.services.jobs import JobService
from parla.services.mappings import VoiceMappings
from parla.services.speech import SpeechOptions, SpeechService, ignored_header
from parla.services.voices import VoiceLibrary
from parla.settings import Settings
from parla.text.dialogue import ROLE_SPEAKERS

router = APIRouter(tags=["Dia server API", "voicebox API"])

_SPEAKER_TAG = re.compile(r"\[\s*[Ss]\d+\s*\]")
SEED_MODELS = ("dia", "qwen3-tts")
"""Model names the reference APIs' own clients send; they mean the default engine here, except that a
dialogue of two speakers or more speaks through Dia where it can (``compat.dia.model_for``)."""
SAMPLING_PARAMETERS = ("temperature", "cfg_scale", "top_p", "max_tokens", "use_torch_compile")


class GenerateRequest(BaseModel):
    """The Dia server API's fields (also its JavaScript client's ``input``/``voice``), or the voicebox API's."""

    model_config = ConfigDict(extra="ignore")

    text: str | None = Field(None, description="The text; may hold [S1]/[S2] speaker tags.")
    input: str | None = Field(None, description="Same as text (the Dia server API's JavaScript client sends it).")
    voice_id: str | None = Field(None, description="A voice: built-in name, library voice, or mapping.")
    voice: str | None = None
    model: str | None = None
    response_format: AudioFormat = "wav"
    speed: float = Field(1.0, ge=0.25, le=4.0)
    role: Literal["user", "assistant", "system"] | None = None
    # The ranges the Dia server API documents for its model's knobs.
    temperature: float | None = Field(None, ge=0.1, le=2.0)
    cfg_scale: float | None = Field(None, ge=1.0, le=10.0)
    top_p: float | None = Field(None, ge=0.0, le=1.0)
    max_tokens: int | None = Field(None, ge=100, le=10_000)
    use_torch_compile: bool | None = None
    seed: int | None = Field(None, ge=0, le=2**31 - 1)
    language: str | None = None
    profile_id: str | None = Field(None, description="The voicebox API: speak in this voice profile, answer a record.")

    def words(self) -> str:
        text = self.text if self.text is not None else self.input
        if text is None or not text.strip():
            raise InvalidInputError("give the text to speak in 'text'", param="text")
        return text

    def engine_parameters(self) -> dict[str, Any]:
        # Dia's sampling knobs go to the engine, which uses those it has and ignores the rest.
        return {name: getattr(self, name) for name in SAMPLING_PARAMETERS if getattr(self, name) is not None}


@router.post(
    "/generate", summary="Generate speech (Dia server form, or voicebox form with profile_id)", dependencies=[SPEAK]
)
async def generate(
    body: GenerateRequest,
    speech: SpeechDep,
    dialogue: DialogueDep,
    jobs: JobsDep,
    mappings: MappingsDep,
    voices: VoicesDep,
    settings: SettingsDep,
    engines: EnginesDep,
    async_mode: bool = Query(False, description="Queue a job and answer its id instead of the audio."),
) -> Response:
    # Two APIs' forms on one path: the Dia server's (speech, dialogue, jobs, its voice mappings) and
    # voicebox's (speech in a library voice); each form is given only the services it uses.
    if body.profile_id:
        return await _voicebox_generate(body, body.profile_id, voices, speech, settings, engines)
    try:
        return await _dia_generate(body, speech, dialogue, jobs, mappings, engines, async_mode)
    except InvalidInputError as exc:
        voice = body.voice_id or body.voice
        if exc.param == "voice" and voice:
            # The Dia server answers an unknown voice with a 404 worded like this.
            raise NotFoundError(f"Voice '{voice}' not found", param="voice") from None
        raise


async def _dia_generate(
    body: GenerateRequest,
    speech: SpeechService,
    dialogue: DialogueService,
    jobs: JobService,
    mappings: VoiceMappings,
    engines: EngineRegistry,
    async_mode: bool,
) -> Response:
    text = body.words()
    voice = body.voice_id or body.voice
    model = None if body.model is None or body.model.lower() in SEED_MODELS else body.model
    mapping = await offload(mappings.find, voice) if voice else None
    if body.role and not _SPEAKER_TAG.search(text):
        # A chat role is a speaker tag: user is S1, assistant and system S2.
        text = f"[{ROLE_SPEAKERS[body.role]}] {text}"
    if _SPEAKER_TAG.search(text):
        # The API was built around Dia: its dialogues speak through it where it can (a plain def:
        # a local engine's availability looks on disk); the other clients' names as above.
        chosen = await offload(model_for, engines, body.model, text)
        seed_model = chosen is not None and chosen != DIA_ENGINE and chosen.lower() in SEED_MODELS
        model = None if seed_model else chosen
        request = DialogueRequest(
            text=text,
            voice=voice,
            # A voice mapping's voice speaks its primary speaker's lines; another voice the rest.
            primary_speaker=mapping.primary_speaker if mapping else None,
            model=model,
            response_format=body.response_format,
            speed=body.speed,
            seed=body.seed,
            language=body.language,
            parameters=body.engine_parameters(),
        )
        if async_mode:
            job = await offload(jobs.submit_dialogue, request, source="generate")
            return JSONResponse(job.model_dump(mode="json"), status_code=202)
        plan = await offload(dialogue.prepare, request, source="generate")
        rendered = await dialogue.render(plan)
        headers = {
            "X-Generation-Id": plan.record.id,
            "X-Turns": json.dumps(plan.timings),
            **ignored_header(plan.ignored),
        }
        return Response(rendered.audio, media_type=CONTENT_TYPES[body.response_format], headers=headers)
    options = SpeechOptions(
        input=text,
        voice=voice,
        model=model,
        response_format=body.response_format,
        speed=body.speed,
        seed=body.seed,
        language=body.language,
        # A mapping without an audio prompt speaks a built-in voice in its style ("calm", "expressive").
        instructions=mapping.style if mapping and not mapping.audio_prompt and mapping.style != "neutral" else None,
        parameters=body.engine_parameters(),
    )
    if async_mode:
        job = await offload(jobs.submit, options, source="generate")
        return JSONResponse(job.model_dump(mode="json"), status_code=202)
    speech_plan = await offload(speech.prepare, options, source="generate")
    headers = {"X-Generation-Id": speech_plan.id, **ignored_header(speech_plan.ignored)}
    if body.response_format == "wav":
        # The Dia server answers a whole file; a WAV is sent whole, with its true sizes.
        rendered = await speech.render(speech_plan)
        return Response(rendered.audio, media_type="audio/wav", headers=headers)
    return StreamingResponse(
        await started(speech.stream(speech_plan)),
        media_type=CONTENT_TYPES[body.response_format],
        headers=headers,
    )


async def _voicebox_generate(
    body: GenerateRequest,
    profile_id: str,
    voices: VoiceLibrary,
    speech: SpeechService,
    settings: Settings,
    engines: EngineRegistry,
) -> Response:
    voice = await offload(profile_id_of, voices, profile_id)
    # voicebox speaks through Qwen3-TTS, in the size its client loaded, where it is available.
    spoken = await offload(voicebox.profile_speech, settings, engines, voices, voice)
    options = SpeechOptions(
        input=body.words(),
        voice=voice,
        model=spoken.model,
        parameters=spoken.parameters,
        response_format="wav",
        seed=body.seed,
        language=body.language,
    )
    plan = await offload(speech.prepare, options, source="voicebox")
    rendered = await speech.render(plan)
    return JSONResponse(
        {
            "id": plan.id,
            "profile_id": voice,
            "text": plan.text,
            "language": plan.language,
            "audio_path": str(rendered.path) if rendered.path else None,
            "duration": round(rendered.duration, 3),
            "seed": plan.seed,
            "created_at": rendered.created_at.isoformat().replace("+00:00", "Z"),
            "engine": plan.engine,
            "engine_note": spoken.engine_note,
        }
    )
