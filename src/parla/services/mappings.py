"""The Dia server API's audio prompts and voice mappings.

An audio prompt is a recording kept as a WAV file under ``<data_dir>/audio_prompts/`` (so it
survives restarts). A voice mapping gives a voice id a style, a primary speaker and optionally an
audio prompt with its transcript; such a voice id then works wherever a voice is named, spoken by
the cloning engine from the prompt. Mappings are aliases in the voice library's lookup.
"""

from __future__ import annotations

import hashlib
import re
from datetime import datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import select

from parla.audio.decode import decode_audio
from parla.audio.dsp import resample
from parla.audio.encode import encode_audio
from parla.audio.quality import SAMPLE_RATE
from parla.engines.base import VoiceRef
from parla.errors import ConflictError, InvalidInputError, NotFoundError, TooLargeError
from parla.services.transcription import Transcriber
from parla.services.voices import BUILTIN_VOICES, PresetSource, clean_recording, no_presets
from parla.settings import Settings
from parla.store.db import Database
from parla.store.models import VoiceMapping, utcnow

_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")
_TAGS = re.compile(r"\[\s*[Ss]\d+\s*\]")


class MappingIn(BaseModel):
    voice_id: str = Field(..., min_length=1, max_length=100)
    style: str = Field("neutral", max_length=64)
    primary_speaker: str = Field("S1", pattern=r"^S\d+$")
    audio_prompt: str | None = None
    audio_prompt_transcript: str | None = None


class MappingUpdate(BaseModel):
    style: str | None = Field(None, max_length=64)
    primary_speaker: str | None = Field(None, pattern=r"^S\d+$")
    audio_prompt: str | None = None
    audio_prompt_transcript: str | None = None


class MappingPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    voice_id: str
    style: str
    primary_speaker: str
    audio_prompt: str | None
    audio_prompt_transcript: str | None
    builtin: bool = False
    created_at: datetime | None = None
    updated_at: datetime | None = None


def _check_id(value: str, what: str) -> str:
    if not _ID.match(value):
        raise InvalidInputError(f"{what} {value!r} may hold only letters, digits, '_', '-' and '.'", param=what)
    return value


class VoiceMappings:
    def __init__(
        self, *, settings: Settings, db: Database, transcriber: Transcriber, presets: PresetSource = no_presets
    ) -> None:
        self.settings = settings
        self.db = db
        self.transcriber = transcriber
        self.presets = presets
        """The engines' presets of a built-in voice: a mapping without a prompt speaks as the default one."""
        self.prompts_dir = settings.data_dir / "audio_prompts"

    # -- audio prompts ---------------------------------------------------------------------------

    def prompt_path(self, prompt_id: str) -> Path:
        return self.prompts_dir / f"{_check_id(prompt_id, 'prompt_id')}.wav"

    def upload_prompt(self, prompt_id: str, data: bytes) -> dict[str, Any]:
        """Check, clean and keep a recording as ``<prompt_id>.wav`` (replacing one of that id)."""
        target = self.prompt_path(prompt_id)
        if len(data) > self.settings.max_upload_bytes:
            raise TooLargeError(f"the upload is larger than the limit of {self.settings.max_upload_bytes} bytes")
        cleaned, report = clean_recording(data, param="audio_file")
        self.prompts_dir.mkdir(parents=True, exist_ok=True)
        tmp = target.with_suffix(".part")
        tmp.write_bytes(encode_audio(cleaned, SAMPLE_RATE, "wav"))
        tmp.replace(target)
        return self._prompt_info(target) | {"warnings": report.warnings}

    def _prompt_info(self, path: Path) -> dict[str, Any]:
        stat = path.stat()
        samples, rate = decode_audio(path)
        return {
            "prompt_id": path.stem,
            "file_path": str(path),
            "duration": round(samples.size / rate, 3),
            "sample_rate": rate,
            "size_bytes": stat.st_size,
            "created_at": datetime.fromtimestamp(stat.st_mtime).isoformat(),
        }

    def list_prompts(self) -> list[dict[str, Any]]:
        if not self.prompts_dir.is_dir():
            return []
        return [self._prompt_info(p) for p in sorted(self.prompts_dir.glob("*.wav"))]

    def delete_prompt(self, prompt_id: str) -> None:
        path = self.prompt_path(prompt_id)
        if not path.is_file():
            raise NotFoundError(f"audio prompt {prompt_id!r} not found")
        path.unlink()

    # -- mappings --------------------------------------------------------------------------------

    def list(self) -> list[MappingPublic]:
        builtins = [
            MappingPublic(
                voice_id=v.name,
                style="neutral",
                primary_speaker="S1",
                audio_prompt=None,
                audio_prompt_transcript=None,
                builtin=True,
            )
            for v in BUILTIN_VOICES
        ]
        with self.db.session() as session:
            custom = [
                MappingPublic.model_validate(m)
                for m in session.scalars(select(VoiceMapping).order_by(VoiceMapping.voice_id))
            ]
        return builtins + custom

    def _transcript(self, prompt: str | None, transcript: str | None) -> str | None:
        if prompt is None:
            return transcript
        if not self.prompt_path(prompt).is_file():
            raise NotFoundError(f"audio prompt {prompt!r} not found: upload it to /audio_prompts/upload first")
        if transcript and transcript.strip():
            return transcript.strip()
        # The cloning engine learns from what is said: without a transcript, Whisper writes one.
        samples, rate = decode_audio(self.prompt_path(prompt))
        return "[S1] " + self.transcriber.transcribe(resample(samples, rate, 16_000)).text

    def create(self, data: MappingIn) -> MappingPublic:
        voice_id = _check_id(data.voice_id, "voice_id")
        if any(v.name == voice_id.lower() for v in BUILTIN_VOICES):
            raise ConflictError(f"{voice_id!r} is a built-in voice", param="voice_id")
        transcript = self._transcript(data.audio_prompt, data.audio_prompt_transcript)
        with self.db.session() as session:
            if session.get(VoiceMapping, voice_id) is not None:
                raise ConflictError(f"voice mapping {voice_id!r} already exists", param="voice_id")
            mapping = VoiceMapping(
                **(data.model_dump() | {"voice_id": voice_id, "audio_prompt_transcript": transcript})
            )
            session.add(mapping)
            session.flush()
            return MappingPublic.model_validate(mapping)

    def update(self, voice_id: str, data: MappingUpdate) -> MappingPublic:
        changes = data.model_dump(exclude_unset=True)
        # A mapping always has a style and a primary speaker: null there leaves them as they are
        # (the Dia server's clients send every field, unset ones as null).
        for required in ("style", "primary_speaker"):
            if changes.get(required, "") is None:
                del changes[required]
        with self.db.session() as session:
            mapping = session.get(VoiceMapping, voice_id)
            if mapping is None:
                raise NotFoundError(f"voice mapping {voice_id!r} not found")
            if "audio_prompt" in changes or "audio_prompt_transcript" in changes:
                prompt = changes.get("audio_prompt", mapping.audio_prompt)
                given = changes.get("audio_prompt_transcript")
                changes["audio_prompt_transcript"] = self._transcript(prompt, given)
            for key, value in changes.items():
                setattr(mapping, key, value)
            mapping.updated_at = utcnow()
            session.flush()
            return MappingPublic.model_validate(mapping)

    def delete(self, voice_id: str) -> None:
        with self.db.session() as session:
            mapping = session.get(VoiceMapping, voice_id)
            if mapping is None:
                raise NotFoundError(f"voice mapping {voice_id!r} not found")
            session.delete(mapping)

    def find(self, voice_id: str) -> MappingPublic | None:
        """The stored mapping of ``voice_id`` (not the built-in voices' listing), if there is one."""
        with self.db.session() as session:
            mapping = session.get(VoiceMapping, voice_id)
            return MappingPublic.model_validate(mapping) if mapping is not None else None

    def resolve(self, voice_id: str) -> VoiceRef | None:
        """The voice a mapped id speaks with, or ``None`` when the id is not a mapping. A mapping
        without an audio prompt speaks with the default built-in voice (the Dia server API's
        ``/generate`` gives the engine its style as instructions)."""
        with self.db.session() as session:
            mapping = session.get(VoiceMapping, voice_id)
            if mapping is None:
                return None
            prompt, transcript = mapping.audio_prompt, mapping.audio_prompt_transcript
        if prompt is None:
            builtin = next((v for v in BUILTIN_VOICES if v.name == self.settings.default_voice), BUILTIN_VOICES[0])
            presets = self.presets(builtin.name)
            return VoiceRef(name=voice_id, id=voice_id, presets=presets, key=f"mapping:{builtin.name}")
        path = self.prompt_path(prompt)
        if not path.is_file():
            raise InvalidInputError(f"voice {voice_id!r} uses audio prompt {prompt!r}, which is gone", param="voice")
        # What the prompt says, without its speaker tags: a voice is a person, and which speaker it is
        # is the dialogue's to say (a script's voice tags each speaker's prompt by its place in it,
        # ``services.dialogue.script_voice``); an engine that reads transcripts as words never sees tags.
        words = _TAGS.sub(" ", transcript or "").strip() or None
        digest = hashlib.sha256(path.read_bytes() + (words or "").encode()).hexdigest()[:32]
        return VoiceRef(name=voice_id, id=voice_id, samples=((path, words),), key=f"prompt-{digest}")
