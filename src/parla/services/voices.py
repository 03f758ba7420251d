"""Voices: the built-in ones and the library of profiles, each with samples (audio + transcript).

Built-in voices carry the OpenAI names so OpenAI clients work unchanged. Library voices are
rows in ``voices``/``voice_samples`` with cleaned WAVs under ``<data_dir>/voices/<id>/``.
Every change either completes or leaves nothing behind: files are written before their rows and
removed again if the rows fail.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import shutil
import zipfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError

from parla.audio.decode import decode_upload
from parla.audio.dsp import FloatArray, resample
from parla.audio.encode import encode_audio
from parla.audio.quality import (
    MAX_SECONDS,
    MAX_VOICE_SECONDS,
    SAMPLE_RATE,
    QualityReport,
    UnusableAudioError,
    analyse,
    check,
    clean,
)
from parla.engines.base import VoiceRef
from parla.errors import ConflictError, InvalidInputError, NotFoundError, TooLargeError
from parla.languages import UnknownLanguageError, base_language, language_code
from parla.services.keys import caller_key_id, may_see, visible
from parla.services.transcription import Transcriber
from parla.settings import Settings
from parla.store.blobs import LocalBlobStore
from parla.store.db import Database
from parla.store.models import Voice, VoiceSample, new_id, utcnow

EXPORT_FORMAT = "parla-voice"
EXPORT_VERSION = 1


# -- built-in voices --------------------------------------------------------------------------------


@dataclass(frozen=True)
class BuiltinVoice:
    """A voice every server has. What it sounds like on each engine is that engine's business
    (``Engine.voice_presets``, by this name); the library asks the engines through a callable."""

    name: str
    description: str
    gender: str

    def ref(self, presets: Mapping[str, Mapping[str, Any]] | None = None) -> VoiceRef:
        return VoiceRef(name=self.name, presets=presets or {}, key=f"builtin:{self.name}", id=self.name)

    def describe(self) -> dict[str, Any]:
        return {
            "id": self.name,
            "name": self.name,
            "description": self.description,
            "gender": self.gender,
            "language": "en",
            "builtin": True,
            "samples": 0,
        }


BUILTIN_VOICES: tuple[BuiltinVoice, ...] = (
    BuiltinVoice("joe", "The bundled Piper voice (US English, male), unmodified.", "male"),
    BuiltinVoice("alloy", "Neutral and even.", "neutral"),
    BuiltinVoice("echo", "Calm and unhurried.", "male"),
    BuiltinVoice("fable", "Expressive, a storyteller.", "male"),
    BuiltinVoice("nova", "Bright and brisk.", "female"),
    BuiltinVoice("onyx", "Deep and deliberate.", "male"),
    BuiltinVoice("shimmer", "Light and lively.", "female"),
)

PresetSource = Callable[[str], Mapping[str, Mapping[str, Any]]]
"""Per-engine presets of a built-in voice, by the voice's name (``EngineRegistry.voice_presets``)."""


def no_presets(name: str) -> Mapping[str, Mapping[str, Any]]:
    """Built-in voices as every engine speaks them unconfigured (a library without engines)."""
    return {}


EngineVoices = Callable[[], Sequence[Mapping[str, Any]]]
"""The voices engines bring themselves, described for listings (``EngineRegistry.engine_voices``)."""
EngineVoiceLookup = Callable[[str], VoiceRef | None]
"""One of the engines' own voices by name, or ``None`` (``EngineRegistry.engine_voice``)."""


def no_engine_voices() -> Sequence[Mapping[str, Any]]:
    return ()


def no_engine_voice(name: str) -> VoiceRef | None:
    return None


# OpenAI's newer voice names, so clients that send them get the closest built-in voice.
ALIASES = {
    "ash": "onyx",
    "ballad": "fable",
    "coral": "nova",
    "sage": "alloy",
    "verse": "echo",
    "marin": "shimmer",
    "cedar": "onyx",
}


def clean_recording(data: bytes, *, param: str) -> tuple[FloatArray, QualityReport]:
    """A reference recording decoded, checked and cleaned (24 kHz), with its quality report.
    Unusable audio raises ``InvalidInputError`` naming ``param`` and saying why."""
    samples, rate = decode_upload(
        data, max_seconds=MAX_SECONDS, grace_s=1, param=param, advice=": cut it into shorter samples"
    )
    try:
        report, regions = analyse(samples, rate)
        report = check(report)
    except UnusableAudioError as exc:
        raise InvalidInputError(f"the recording cannot be used: {exc}", param=param) from None
    return clean(samples, rate, regions), report


# -- request and response shapes --------------------------------------------------------------------


class VoiceBase(BaseModel):
    description: str | None = Field(None, max_length=2000)
    language: str = Field("en", min_length=2, max_length=16)
    tags: list[str] = Field(default_factory=list, max_length=32)


class VoiceCreate(VoiceBase):
    name: str = Field(..., min_length=1, max_length=100)
    blend: str | None = Field(
        None, max_length=1000, description="Make this voice a blend of others: alloy(2)+Ada(1) (no samples then)."
    )


class VoiceUpdate(BaseModel):
    name: str | None = Field(None, min_length=1, max_length=100)
    description: str | None = Field(None, max_length=2000)
    language: str | None = Field(None, min_length=2, max_length=16)
    tags: list[str] | None = Field(None, max_length=32)


class SamplePublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    voice_id: str
    transcript: str
    transcript_source: str
    language: str | None = None
    """The language the sample is spoken in (``None``: stored before languages were kept; its voice's)."""
    duration_s: float
    sample_rate: int
    report: dict[str, Any]
    created_at: datetime


class VoicePublic(VoiceBase):
    id: str
    name: str
    builtin: bool = False
    blend: str | None = None
    samples: list[SamplePublic] = Field(default_factory=list)
    total_duration_s: float = 0.0
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, voice: Voice) -> VoicePublic:
        samples = [SamplePublic.model_validate(s) for s in voice.samples]
        return cls(
            id=voice.id,
            name=voice.name,
            description=voice.description,
            language=voice.language,
            tags=list(voice.tags or []),
            blend=voice.blend,
            samples=samples,
            total_duration_s=round(sum(s.duration_s for s in samples), 3),
            created_at=voice.created_at,
            updated_at=voice.updated_at,
        )


class SampleAdded(BaseModel):
    sample: SamplePublic
    warnings: list[str]


# -- the library ------------------------------------------------------------------------------------


def _voice_key(voice: Voice) -> str:
    """A hash of what the voice sounds like: the samples' audio, transcripts and languages, in order.

    A sample in English (any variant), the language every voice had before languages were kept, adds no language,
    so voices made then keep their keys and the conditioning engines cached for them."""
    digest = hashlib.sha256()
    for sample in voice.samples:
        digest.update(sample.sha256.encode())
        digest.update(sample.transcript.encode())
        language = _sample_language(sample, voice)
        if base_language(language) != "en":  # English in any variant is read alike (clone.CloneEngine.script)
            digest.update(f"\0{language}".encode())
    return digest.hexdigest()[:32]


def _sample_language(sample: VoiceSample, voice: Voice) -> str:
    """The language a sample is spoken in: its own, else (stored before languages were kept) its voice's."""
    return sample.language or voice.language


def _archived_language(raw: Any) -> str | None:
    """A sample's language as an archive's manifest gives it, or ``None`` when it gives none it can."""
    try:
        return language_code(raw) if isinstance(raw, str) and raw.strip() else None
    except UnknownLanguageError:
        return None


BLEND_PART = re.compile(r"\s*([^()+]+?)\s*(?:\(\s*([0-9]*\.?[0-9]+)\s*\))?\s*")
MAX_BLEND_PARTS = 8


def parse_blend(spec: str) -> list[tuple[str, float]] | None:
    """``alloy(2)+Ada(1)`` (Kokoro-FastAPI's syntax; a part without a weight weighs 1) as names and
    weights summing to 1; None when ``spec`` is not a blend. A blend that is malformed is a 400."""
    if "+" not in spec:
        return None
    parts = []
    for raw in spec.split("+"):
        match = BLEND_PART.fullmatch(raw)
        if match is None or not match.group(1).strip():
            raise InvalidInputError(f"voice blend {spec!r}: write parts as name(weight)+name(weight)", param="voice")
        weight = float(match.group(2)) if match.group(2) else 1.0
        if weight <= 0:
            raise InvalidInputError(f"voice blend {spec!r}: weights are above 0", param="voice")
        parts.append((match.group(1).strip(), weight))
    if len(parts) > MAX_BLEND_PARTS:
        raise InvalidInputError(f"voice blend {spec!r}: at most {MAX_BLEND_PARTS} voices", param="voice")
    total = sum(weight for _, weight in parts)
    return [(name, weight / total) for name, weight in parts]


class VoiceLibrary:
    def __init__(
        self,
        *,
        settings: Settings,
        db: Database,
        blobs: LocalBlobStore,
        transcriber: Transcriber,
        aliases: Callable[[str], VoiceRef | None] | None = None,
        presets: PresetSource = no_presets,
        engine_voices: EngineVoices = no_engine_voices,
        engine_voice: EngineVoiceLookup = no_engine_voice,
    ) -> None:
        self.settings = settings
        self.db = db
        self.blobs = blobs
        self.transcriber = transcriber
        self._builtin = {v.name: v for v in BUILTIN_VOICES}
        self.aliases = aliases
        """Other names a voice may go by (the Dia server API's voice mappings), consulted after the library."""
        self.presets = presets
        """The engines' presets of a built-in voice, asked at each lookup (a remote engine's arrive
        with its worker's answer)."""
        self.engine_voices = engine_voices
        self.engine_voice = engine_voice
        """The voices engines bring themselves (Kokoro's styles and their blends): listed after the
        built-in voices, looked up after the library and the aliases, so a name the user gave a
        library voice or a mapping keeps meaning it."""

    # -- lookup ---------------------------------------------------------------------------------

    def builtin_names(self) -> list[str]:
        return list(self._builtin)

    def _builtin_for(self, name: str) -> BuiltinVoice | None:
        key = name.strip().lower()
        return self._builtin.get(ALIASES.get(key, key))

    def _find(self, session: Any, id_or_name: str) -> Voice | None:
        """A library voice the caller may see (its key's own, or any for admin), by id or name."""
        voice = session.get(Voice, id_or_name)
        if voice is None:
            voice = session.scalar(select(Voice).where(func.lower(Voice.name) == id_or_name.strip().lower()))
        if voice is not None and not may_see(voice.owner_key_id):
            return None
        return voice  # type: ignore[no-any-return]

    def _get(self, session: Any, id_or_name: str) -> Voice:
        voice = self._find(session, id_or_name)
        if voice is None:
            raise NotFoundError(f"voice {id_or_name!r} not found")
        return voice

    def resolve(self, id_or_name: str) -> VoiceRef:
        """The voice to speak in, by name or id: built-in names first (case-insensitive, OpenAI
        aliases included), then the library. ``InvalidInputError`` when there is none.

        Names are scoped: a library voice may carry a built-in name (a voicebox profile called
        ``Nova``), yet where a voice is named without saying which kind (the OpenAI API's ``voice``)
        the name keeps meaning the built-in preset, so OpenAI clients never change voice because a
        profile was made. That library voice is spoken by its id, which no built-in shares, and the
        APIs whose names are library names (voicebox profiles, XTTS speakers) look it up with ``get``."""
        builtin = self._builtin_for(id_or_name)
        if builtin is not None:
            return builtin.ref(self.presets(builtin.name))
        if "+" in id_or_name and not self._exists(id_or_name):
            # An engine's own blend first (Kokoro mixes its style vectors itself), then Parla's.
            own = self.engine_voice(id_or_name)
            if own is not None:
                return own
            parts = parse_blend(id_or_name)
            if parts is not None:
                return self._blend(id_or_name, parts)
        with self.db.session() as session:
            voice = self._find(session, id_or_name)
            alias = self.aliases(id_or_name) if voice is None and self.aliases else None
            if alias is not None:
                return alias
            own = self.engine_voice(id_or_name) if voice is None else None
            if own is not None:
                return own
            if voice is None:
                known = ", ".join(self.builtin_names())
                by_engine: dict[str, list[str]] = {}
                for listed in self.engine_voices():
                    by_engine.setdefault(str(listed.get("engine")), []).append(str(listed["name"]))
                engines = "".join(f", {engine}'s own voice ({', '.join(names)})" for engine, names in by_engine.items())
                raise InvalidInputError(
                    f"unknown voice {id_or_name!r}: not a built-in voice ({known}){engines} or a library voice name "
                    "or id",
                    param="voice",
                )
            if voice.blend:
                blend = self._blend(voice.blend, parse_blend(voice.blend) or [])
                return replace(blend, name=voice.name, id=voice.id, language=voice.language)
            if not voice.samples:
                raise InvalidInputError(f"voice {voice.name!r} has no samples yet: add one first", param="voice")
            return VoiceRef(
                name=voice.name,
                id=voice.id,
                language=voice.language,
                samples=tuple((self.blobs.path(s.file), s.transcript or None) for s in voice.samples),
                sample_languages=tuple(_sample_language(s, voice) for s in voice.samples),
                key=_voice_key(voice),
            )

    def _checked_blend(self, spec: str | None) -> str | None:
        """A blend to keep as a voice: it must be one, and each of its voices must exist now."""
        if spec is None:
            return None
        parts = parse_blend(spec)
        if parts is None or len(parts) < 2:
            raise InvalidInputError(f"blend {spec!r}: name two voices or more, as alloy(2)+Ada(1)", param="blend")
        self._blend(spec, parts)
        return spec.strip()

    def _exists(self, id_or_name: str) -> bool:
        with self.db.session() as session:
            return self._find(session, id_or_name) is not None

    def _blend(self, spec: str, parts: list[tuple[str, float]]) -> VoiceRef:
        """The voices of a blend, each resolved as it would be alone, with their weights."""
        refs = []
        for name, weight in parts:
            try:
                ref = self.resolve(name)
            except InvalidInputError as exc:
                raise InvalidInputError(f"in the blend {spec!r}: {exc.detail}", param="voice") from None
            if ref.engine is not None:
                raise InvalidInputError(
                    f"in the blend {spec!r}: {name!r} is engine {ref.engine!r}'s own voice, which only it speaks",
                    param="voice",
                )
            refs.append((ref, weight))
        canonical = "+".join(f"{ref.id or ref.name}({weight:.4g})" for ref, weight in refs)
        return VoiceRef(
            name=spec,
            id=canonical,
            language=refs[0][0].language,
            key=hashlib.sha256("|".join(f"{ref.key or ref.name}:{w:.6f}" for ref, w in refs).encode()).hexdigest(),
            blend=tuple(refs),
        )

    def list_all(self) -> list[dict[str, Any]]:
        with self.db.session() as session:
            voices = session.scalars(select(Voice).where(visible(Voice.owner_key_id)).order_by(Voice.name)).all()
            library = [VoicePublic.of(v).model_dump(mode="json") | {"samples": len(v.samples)} for v in voices]
        return [v.describe() for v in BUILTIN_VOICES] + [dict(v) for v in self.engine_voices()] + library

    def list_library(self) -> list[VoicePublic]:
        with self.db.session() as session:
            voices = session.scalars(select(Voice).where(visible(Voice.owner_key_id)).order_by(Voice.name)).all()
            return [VoicePublic.of(v) for v in voices]

    def get(self, id_or_name: str) -> VoicePublic:
        with self.db.session() as session:
            return VoicePublic.of(self._get(session, id_or_name))

    # -- profiles -------------------------------------------------------------------------------

    def _check_name(self, name: str) -> str:
        # A built-in name is allowed: library names and built-in names are separate scopes (see
        # ``resolve``), and the voicebox API lets a profile be called anything unique among profiles.
        name = name.strip()
        if not name:
            raise InvalidInputError("a voice needs a name", param="name")
        return name

    @staticmethod
    def _refuse_taken(session: Any, name: str, own_id: str | None = None) -> None:
        """Library names are looked up in any case, so they must be unique in any case too: ``Alloy``
        and ``alloy`` side by side would make a name mean whichever row comes first. (The column's
        constraint is case-sensitive; this check is what keeps the scope unambiguous.)"""
        taken = session.scalar(select(Voice.id).where(func.lower(Voice.name) == name.lower()))
        if taken is not None and taken != own_id:
            raise ConflictError(f"a voice named {name!r} already exists", param="name")

    def create(self, data: VoiceCreate) -> VoicePublic:
        name = self._check_name(data.name)
        try:
            with self.db.session() as session:
                self._refuse_taken(session, name)
                voice = Voice(
                    name=name,
                    description=data.description,
                    language=data.language,
                    tags=data.tags,
                    blend=self._checked_blend(data.blend),
                    owner_key_id=caller_key_id(),
                )
                session.add(voice)
                session.flush()
                session.refresh(voice, ["samples"])
                return VoicePublic.of(voice)
        except IntegrityError:
            raise ConflictError(f"a voice named {name!r} already exists", param="name") from None

    def create_with_samples(
        self, data: VoiceCreate, samples: list[tuple[bytes, str | None, str, str | None]]
    ) -> tuple[VoicePublic, list[SampleAdded]]:
        """A new voice with its samples (``(audio, transcript, transcript_source, language)`` each;
        ``language`` ``None``: see ``add_sample``), all or nothing: when a sample is refused, the
        voice is deleted again and the refusal raised."""
        created = self.create(data)
        try:
            added = [
                self.add_sample(created.id, audio, words, transcript_source=source, language=language)
                for audio, words, source, language in samples
            ]
        except BaseException:
            self.delete(created.id)
            raise
        return self.get(created.id), added

    def create_with_sample(
        self, data: VoiceCreate, audio: bytes, transcript: str | None = None
    ) -> tuple[VoicePublic, SampleAdded]:
        """A new voice from one recording, all or nothing (see ``create_with_samples``)."""
        voice, added = self.create_with_samples(data, [(audio, transcript, "user", None)])
        return voice, added[0]

    def update(self, id_or_name: str, data: VoiceUpdate) -> VoicePublic:
        changes = data.model_dump(exclude_unset=True)
        if "name" in changes:
            if changes["name"] is None:
                raise InvalidInputError("a voice needs a name", param="name")
            changes["name"] = self._check_name(changes["name"])
        try:
            with self.db.session() as session:
                voice = self._get(session, id_or_name)
                if "name" in changes:
                    self._refuse_taken(session, changes["name"], voice.id)
                old_key = _voice_key(voice)
                for key, value in changes.items():
                    setattr(voice, key, value)
                voice.updated_at = utcnow()
                session.flush()
                public = VoicePublic.of(voice)
                # Samples stored before languages were kept are in the voice's language: a new one
                # changes how they are read, so what was learned from them goes.
                changed = _voice_key(voice) != old_key
        except IntegrityError:
            raise ConflictError(f"a voice named {changes.get('name')!r} already exists", param="name") from None
        if changed:
            self.forget_conditioning(old_key)
        return public

    def delete(self, id_or_name: str) -> None:
        """Delete the voice, its samples, their files and any conditioning cached for it."""
        with self.db.session() as session:
            voice = self._get(session, id_or_name)
            voice_id, key = voice.id, _voice_key(voice)
            session.delete(voice)
        shutil.rmtree(self.blobs.path(f"voices/{voice_id}"), ignore_errors=True)
        self.forget_conditioning(key)

    def forget_conditioning(self, key: str) -> None:
        cache = self.blobs.path("cache")
        if key and cache.is_dir():
            for path in cache.glob(f"*/{key}*"):
                path.unlink(missing_ok=True)

    # -- samples --------------------------------------------------------------------------------

    def add_sample(
        self,
        id_or_name: str,
        data: bytes,
        transcript: str | None = None,
        *,
        transcript_source: str = "user",
        language: str | None = None,
    ) -> SampleAdded:
        """Check, clean, transcribe (if no transcript is given) and store one recording.

        ``language``: what the recording is spoken in, when the caller knows. Otherwise, a recording
        Whisper transcribes is in the language Whisper heard (or was told: the voice's), and one that
        comes with its transcript is in the voice's language."""
        if len(data) > self.settings.max_upload_bytes:
            raise TooLargeError(
                f"the upload is {len(data)} bytes; the limit is {self.settings.max_upload_bytes}", param="file"
            )
        with self.db.session() as session:
            voice = self._get(session, id_or_name)
            voice_id, voice_language = voice.id, voice.language
            used = sum(s.duration_s for s in voice.samples)
        cleaned, report = clean_recording(data, param="file")
        duration = cleaned.size / SAMPLE_RATE
        if used + duration > MAX_VOICE_SECONDS:
            raise InvalidInputError(
                f"a voice holds at most {MAX_VOICE_SECONDS:g} s of samples; it has {used:.1f} s and this adds "
                f"{duration:.1f} s",
                param="file",
            )
        source = transcript_source
        transcript = (transcript or "").strip()
        if not transcript:
            # A voice's language defaults to English: a recording in another language is heard as what
            # it is (Whisper detects it), so its transcript is in the language it was spoken in.
            told = language or voice_language
            hint = told if told and base_language(told) != "en" else None
            heard = self.transcriber.transcribe(resample(cleaned, SAMPLE_RATE, 16_000), language=hint)
            transcript, source = heard.text.strip(), "whisper"
            language = heard.language or told
            if not transcript:  # cloning learns from what was said: without words it has nothing to pair
                raise InvalidInputError(
                    "no words were recognised in this recording; send its transcript with it", param="transcript"
                )
        wav = encode_audio(cleaned, SAMPLE_RATE, "wav")
        sample_id = new_id()
        key = f"voices/{voice_id}/{sample_id}.wav"
        writer = self.blobs.writer(key)
        writer.write(wav)
        path = writer.commit()
        try:
            with self.db.session() as session:
                voice = self._get(session, voice_id)
                sample = VoiceSample(
                    id=sample_id,
                    voice_id=voice_id,
                    file=key,
                    sha256=hashlib.sha256(wav).hexdigest(),
                    transcript=transcript,
                    transcript_source=source,
                    language=language or voice_language,
                    duration_s=duration,
                    sample_rate=SAMPLE_RATE,
                    report=report.as_dict(),
                )
                session.add(sample)
                voice.updated_at = utcnow()
                session.flush()
                return SampleAdded(sample=SamplePublic.model_validate(sample), warnings=report.warnings)
        except BaseException:
            path.unlink(missing_ok=True)
            raise

    def _get_sample(self, session: Any, id_or_name: str, sample_id: str) -> VoiceSample:
        voice = self._get(session, id_or_name)
        sample = session.get(VoiceSample, sample_id)
        if sample is None or sample.voice_id != voice.id:
            raise NotFoundError(f"sample {sample_id!r} not found in voice {id_or_name!r}")
        return sample  # type: ignore[no-any-return]

    def list_samples(self, id_or_name: str) -> list[SamplePublic]:
        return self.get(id_or_name).samples

    def sample_path(self, id_or_name: str, sample_id: str) -> Path:
        with self.db.session() as session:
            return self.blobs.path(self._get_sample(session, id_or_name, sample_id).file)

    def update_sample(self, id_or_name: str, sample_id: str, transcript: str) -> SamplePublic:
        """Correct a transcript (it then counts as the user's, not Whisper's)."""
        if not transcript.strip():
            raise InvalidInputError("the transcript is empty", param="transcript")
        with self.db.session() as session:
            sample = self._get_sample(session, id_or_name, sample_id)
            old_key = _voice_key(sample.voice)
            sample.transcript, sample.transcript_source = transcript.strip(), "user"
            sample.voice.updated_at = utcnow()
            session.flush()
            public = SamplePublic.model_validate(sample)
        self.forget_conditioning(old_key)
        return public

    def delete_sample(self, id_or_name: str, sample_id: str) -> None:
        with self.db.session() as session:
            sample = self._get_sample(session, id_or_name, sample_id)
            old_key, file = _voice_key(sample.voice), sample.file
            sample.voice.updated_at = utcnow()
            session.delete(sample)
        self.blobs.delete(file)
        self.forget_conditioning(old_key)

    # -- export and import ----------------------------------------------------------------------

    def export(self, id_or_name: str) -> tuple[str, bytes]:
        """One zip archive: ``manifest.json`` and the samples as WAV. Returns (file name, bytes)."""
        with self.db.session() as session:
            voice = self._get(session, id_or_name)
            entries = [
                {
                    "file": f"samples/{i:02d}.wav",
                    "transcript": s.transcript,
                    "source": s.transcript_source,
                    "language": _sample_language(s, voice),
                }
                for i, s in enumerate(voice.samples, start=1)
            ]
            manifest = {
                "format": EXPORT_FORMAT,
                "version": EXPORT_VERSION,
                "voice": {
                    "name": voice.name,
                    "description": voice.description,
                    "language": voice.language,
                    "tags": list(voice.tags or []),
                },
                "samples": entries,
            }
            files = [self.blobs.path(s.file) for s in voice.samples]
            name = voice.name
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
            archive.writestr("manifest.json", json.dumps(manifest, indent=2))
            for entry, path in zip(entries, files, strict=True):
                archive.write(path, entry["file"])
        safe = "".join(c if c.isalnum() or c in "-_" else "_" for c in name) or "voice"
        return f"{safe}.parla-voice.zip", buffer.getvalue()

    def import_(self, data: bytes, *, name: str | None = None) -> VoicePublic:
        """Create a voice from an exported archive; all of it or nothing."""
        if len(data) > self.settings.max_upload_bytes * 4:
            raise TooLargeError("the archive is too large", param="file")
        try:
            archive = zipfile.ZipFile(io.BytesIO(data))
            manifest = json.loads(archive.read("manifest.json"))
        except (zipfile.BadZipFile, KeyError, json.JSONDecodeError, UnicodeDecodeError):
            raise InvalidInputError("not a Parla voice archive (a zip with manifest.json)", param="file") from None
        if not isinstance(manifest, dict) or manifest.get("format") != EXPORT_FORMAT:
            raise InvalidInputError("not a Parla voice archive (unknown manifest format)", param="file")
        meta = manifest.get("voice") or {}
        entries = manifest.get("samples") or []
        if not isinstance(meta, dict) or not isinstance(entries, list) or not entries:
            raise InvalidInputError("the archive holds no samples", param="file")
        members = {info.filename: info for info in archive.infolist()}
        blobs: list[tuple[bytes, str, str, str | None]] = []
        for entry in entries:
            info = members.get(str(entry.get("file", ""))) if isinstance(entry, dict) else None
            if info is None or info.file_size > self.settings.max_upload_bytes:
                raise InvalidInputError("the archive's manifest names a missing or oversized sample", param="file")
            source = "whisper" if entry.get("source") == "whisper" else "user"
            # archives made before samples kept their language have none: the voice's is used
            spoken = _archived_language(entry.get("language"))
            blobs.append((archive.read(info), str(entry.get("transcript") or ""), source, spoken))
        voice, _ = self.create_with_samples(
            VoiceCreate(
                name=name or str(meta.get("name") or ""),
                description=meta.get("description"),
                language=str(meta.get("language") or "en"),
                tags=[str(t) for t in meta.get("tags") or []],
            ),
            [(audio, transcript or None, source, spoken) for audio, transcript, source, spoken in blobs],
        )
        return voice
