"""The XTTS service API (a service around XTTS-v2): ``/api/v1/tts/synthesize`` answering base64 WAV in JSON,
``/api/v1/tts/voices`` (list; register by base64 or URL) and ``/api/v1/tts/config``."""

from __future__ import annotations

import base64
import hashlib
import json
import threading
from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel, Field, model_validator

from parla.api.auth import SPEAK, VOICES
from parla.api.deps import EnginesDep, SettingsDep, SpeechDep, VoicesDep
from parla.api.voices import SampleJSON, audio_from_json
from parla.engines.base import Engine
from parla.engines.registry import EngineRegistry
from parla.engines.xtts import LANGUAGES as XTTS_LANGUAGES
from parla.errors import NotFoundError
from parla.offload import offload
from parla.services.speech import SpeechOptions
from parla.services.voices import VoiceCreate, VoiceLibrary
from parla.settings import Settings

router = APIRouter(prefix="/api/v1/tts", tags=["XTTS service API"])

DEFAULT_SPEAKER = "default"
_default_lock = threading.Lock()


class SynthesizeRequest(BaseModel):
    text: str = Field(..., min_length=1)
    language: str = "en"
    speaker_id: str = DEFAULT_SPEAKER
    speed: float = Field(1.0, ge=0.25, le=4.0)
    store_generated_audio: bool = False
    seed: int | None = Field(
        None, ge=0, le=2**31 - 1, description="Parla's addition; without it the seed is derived from the request."
    )

    def derived_seed(self) -> int:
        """The seed of this request when it names none. The XTTS service API promises deterministic
        synthesis: the same request gives the same audio. So the seed is a hash of everything that
        shapes the audio (not ``store_generated_audio``), and a different text gives a different one."""
        if self.seed is not None:
            return self.seed
        shaping = self.model_dump(include={"text", "language", "speaker_id", "speed"})
        digest = hashlib.sha256(json.dumps(shaping, sort_keys=True).encode()).digest()
        return int.from_bytes(digest[:4], "big") % 2**31


class RegisterVoice(BaseModel):
    """A voice sample by base64 or URL (the API's two ways), with an id to call it by."""

    speaker_id: str | None = Field(None, min_length=1, max_length=100)
    name: str | None = Field(None, min_length=1, max_length=100)
    audio_base64: str | None = None
    audio_url: str | None = None
    url: str | None = None
    language: str = "en"
    transcript: str | None = None

    @model_validator(mode="after")
    def _named(self) -> RegisterVoice:
        if not (self.speaker_id or self.name):
            raise ValueError("give the voice a speaker_id (or name)")
        return self


def default_speaker(settings: Settings, voices: VoiceLibrary) -> str:
    """``default``: the clip configured by ``PARLA_DEFAULT_SPEAKER_CLIP`` (the XTTS service API's
    ``XTTS_DEFAULT_VOICE``), imported once into the library; else the default voice."""
    clip = settings.default_speaker_clip
    if clip is None:
        return settings.default_voice
    with _default_lock:
        try:
            return voices.get(DEFAULT_SPEAKER).id
        except NotFoundError:
            fields = VoiceCreate(name=DEFAULT_SPEAKER, description=f"from {clip}")
            return voices.create_with_sample(fields, clip.read_bytes())[0].id


XTTS_ENGINE = "xtts"
"""The engine the XTTS service API was built around: it speaks through it whenever it is available."""


def speaking_engine(settings: Settings, engines: EngineRegistry) -> Engine:
    """The engine this API speaks through: XTTS-v2 when it is installed, its weights found and its
    worker up; otherwise the default cloning engine (and ``/config`` says which)."""
    if XTTS_ENGINE in engines.names():
        xtts = engines.get(XTTS_ENGINE)
        if xtts.unavailable_reason() is None:
            return xtts
    return engines.get(settings.default_clone_engine)


def spoken_languages(settings: Settings, engines: EngineRegistry) -> list[str]:
    """What this API can speak now without XTTS-v2: its speakers are recorded voices, so the languages
    of the default cloning engine and of the cloning engines a request in another language would go
    to (``settings.language_engines``), those available. One that speaks any language (a plain model
    microservice, the mock engine) stands for XTTS-v2's own list."""
    spoken: set[str] = set()
    names = set(engines.names())
    for name in dict.fromkeys([settings.default_clone_engine, *settings.language_engines]):
        engine = engines.get(name) if name in names else None
        if engine is None or not engine.capabilities.cloning or engine.unavailable_reason():
            continue
        declared = engine.capabilities.languages
        spoken |= set(XTTS_LANGUAGES) if "*" in declared else set(declared)
    return sorted(spoken)


@router.get("/config", summary="Languages and synthesis defaults", dependencies=[SPEAK])
def config(settings: SettingsDep, engines: EnginesDep) -> dict[str, Any]:
    """Plain ``def``: a local engine's availability looks for its packages and weights (on a thread)."""
    engine = speaking_engine(settings, engines)
    if engine.name == XTTS_ENGINE:
        languages = sorted(lang for lang in engine.capabilities.languages if lang != "*")
    else:
        languages = spoken_languages(settings, engines)
    xtts_reason = engines.get(XTTS_ENGINE).unavailable_reason() if XTTS_ENGINE in engines.names() else None
    return {
        "engine": engine.name,
        "engine_note": None if engine.name == XTTS_ENGINE else f"XTTS-v2 is not available here: {xtts_reason}",
        "languages": languages,
        "default_language": "en",
        "default_speaker": DEFAULT_SPEAKER,
        "default_speaker_configured": settings.default_speaker_clip is not None,
        "sample_rate": engine.capabilities.sample_rate,
        "format": "wav",
        "defaults": {"language": "en", "speaker_id": DEFAULT_SPEAKER, "speed": 1.0, "store_generated_audio": False},
        "store_dir": str(settings.data_dir / "generations"),
    }


@router.get("/voices", summary="Registered voices", dependencies=[SPEAK])
def list_voices(library: VoicesDep) -> dict[str, Any]:
    voices = [
        {
            "id": v["id"],
            "speaker_id": v["name"],
            "name": v["name"],
            "language": v.get("language", "en"),
            "builtin": v.get("builtin", False),
            "samples": v.get("samples", 0),
        }
        for v in library.list_all()
    ]
    return {"voices": [{"id": DEFAULT_SPEAKER, "speaker_id": DEFAULT_SPEAKER, "name": DEFAULT_SPEAKER}, *voices]}


@router.post("/voices", status_code=201, summary="Register a voice by base64 WAV or URL", dependencies=[VOICES])
def register_voice(body: RegisterVoice, settings: SettingsDep, voices: VoicesDep) -> dict[str, Any]:
    sample = SampleJSON(audio_base64=body.audio_base64, url=body.audio_url or body.url, transcript=body.transcript)
    data = audio_from_json(settings, sample)
    name = str(body.speaker_id or body.name)
    voice, added = voices.create_with_sample(VoiceCreate(name=name, language=body.language), data, body.transcript)
    return {"id": voice.id, "speaker_id": name, "name": name, "language": body.language, "warnings": added.warnings}


def speaker_voice(settings: Settings, voices: VoiceLibrary, speaker_id: str) -> str:
    """The voice a ``speaker_id`` names. A registered voice (a library voice, by name or id) wins over a
    built-in voice of the same name: a client that registered ``nova`` means its own recording. Any
    other name (``alloy``, a voice mapping) is resolved as every API resolves voices."""
    if speaker_id == DEFAULT_SPEAKER:
        return default_speaker(settings, voices)
    try:
        return voices.get(speaker_id).id
    except NotFoundError:
        return speaker_id


def _model_for(settings: Settings, engines: EngineRegistry, voices: VoiceLibrary, speaker: str) -> str | None:
    """XTTS-v2 for a speaker it can speak (a recorded voice, or a built-in one it has a studio
    speaker for); else the server's choice, as every API makes it."""
    engine = speaking_engine(settings, engines)
    if engine.name != XTTS_ENGINE:
        return None
    voice = voices.resolve(speaker)
    return XTTS_ENGINE if voice.samples or voice.preset(XTTS_ENGINE) else None


@router.post("/synthesize", summary="Synthesize speech; base64 WAV in JSON", dependencies=[SPEAK])
async def synthesize(
    body: SynthesizeRequest, settings: SettingsDep, voices: VoicesDep, speech: SpeechDep, engines: EnginesDep
) -> dict[str, Any]:
    speaker = await offload(speaker_voice, settings, voices, body.speaker_id)
    options = SpeechOptions(
        input=body.text,
        model=await offload(_model_for, settings, engines, voices, speaker),
        voice=speaker,
        language=body.language,
        speed=body.speed,
        seed=body.derived_seed(),
        response_format="wav",
    )
    plan = await offload(speech.prepare, options, source="xtts")
    rendered = await speech.render(plan)
    stored = str(rendered.path) if body.store_generated_audio and rendered.path else None
    return {
        "audio_base64": base64.b64encode(rendered.audio).decode(),
        "format": "wav",
        "sample_rate": rendered.sample_rate,
        "duration": round(rendered.duration, 3),
        "speaker_id": body.speaker_id,
        "language": body.language,
        "generation_id": plan.id,
        "engine": plan.engine,
        "stored_path": stored,
    }
