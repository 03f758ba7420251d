"""Speech: text in, audio out, every synthesis recorded.

``prepare`` checks a request and decides everything (engine, voice, pieces, parameters, seed)
before any audio is made, so bad input fails fast with a clear error. ``encoded`` then streams
the encoded bytes as the engine produces audio, writes the file and records the generation once
the last byte is out; a request that stops halfway leaves no file and no row.
"""

from __future__ import annotations

import hashlib
import logging
import re
import secrets
import time
from collections.abc import AsyncGenerator, Callable, Collection, Iterator, Mapping
from contextlib import aclosing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator

from parla.audio.decode import AudioDecodeError, AudioTooLongError, decode_audio
from parla.audio.encode import (
    FORMATS,
    AudioFormat,
    StreamEncoder,
    finalize_wav,
    open_encoder,
    output_sample_rate,
    sized_wav,
)
from parla.audio.quality import MAX_SECONDS
from parla.engines.base import AudioChunk, Engine, SynthesisRequest, VoiceRef
from parla.engines.registry import EngineRegistry, UnknownEngineError
from parla.engines.runner import EngineRunner
from parla.errors import InvalidInputError, ServiceUnavailableError, TooLargeError
from parla.offload import offload
from parla.services.runtime_config import GOVERNED_SOURCES
from parla.services.voices import VoiceLibrary
from parla.settings import Settings
from parla.store.blobs import LocalBlobStore
from parla.store.db import Database
from parla.store.models import Generation, new_id
from parla.text import normalize_text, split_for_speech

log = logging.getLogger(__name__)

OPENAI_MODELS = ("tts-1", "tts-1-hd", "gpt-4o-mini-tts")
"""OpenAI model names; they select the default engine."""
MIN_SPEED, MAX_SPEED = 0.25, 4.0
REQUEST_CONTROLS = frozenset(
    {"seed", "speed", "language", "instructions", "transcription", "audio_transcriptions", "pause_s"}
)
"""Names in ``parameters`` that the request layer acts on itself (the model microservice API sends
everything there): used, so never reported as ignored."""


def ignored_header(names: Collection[str]) -> dict[str, str]:
    """The response header that names parameters the engine did not use (none when all were).
    Names are percent-encoded: a client may send any text as a name, and headers are latin-1."""
    return {"X-Ignored-Parameters": ", ".join(quote(name, safe="_-.~") for name in sorted(names))} if names else {}


_SPEAKABLE = re.compile(r"[^\W_]")
"""A letter or a digit: a piece without one (punctuation, symbols) has nothing to say."""

CROSSFADE_S = 0.01
"""Overlap between consecutive pieces of a long text."""

Progress = Callable[[int, int], None]
"""Called with (pieces done, pieces in all) as synthesis advances."""


class SpeechOptions(BaseModel):
    """What to say and how: the OpenAI speech request's fields, plus Parla's ``seed``,
    ``language`` and ``parameters``. Every path that makes speech (HTTP, jobs) takes these."""

    model_config = ConfigDict(extra="ignore")

    input: str = Field(..., min_length=1, description="The text to speak.")
    voice: str | None = Field(None, description="A voice name or id; OpenAI names work.")
    model: str | None = Field(None, description="tts-1, tts-1-hd, gpt-4o-mini-tts or an engine name.")
    response_format: AudioFormat = "mp3"
    speed: float = Field(1.0, ge=0.25, le=4.0)
    instructions: str | None = Field(None, description="Style instructions, used by engines that can.")
    seed: int | None = Field(None, ge=0, le=2**31 - 1, description="Same seed, same audio.")
    language: str | None = None
    parameters: dict[str, Any] = Field(default_factory=dict, description="Engine parameters (see /v1/models).")

    @field_validator("voice", mode="before")
    @classmethod
    def _voice_object(cls, value: Any) -> Any:
        # OpenAI's newer API also sends a voice as {"id": "..."}.
        return value.get("id") if isinstance(value, dict) else value


@dataclass(frozen=True)
class SpeechPlan:
    """A checked request: everything needed to synthesise, decided up front."""

    id: str
    text: str
    pieces: list[str]
    engine: Engine
    runner: EngineRunner
    voice: VoiceRef
    model: str
    format: str
    speed: float
    seed: int
    language: str
    instructions: str | None
    parameters: dict[str, Any]
    source: str
    ignored: tuple[str, ...] = ()
    """Parameters the client gave that the engine does not use: reported, never silently dropped."""
    extra: dict[str, Any] = field(default_factory=dict)

    def requests(self) -> list[SynthesisRequest]:
        return [
            SynthesisRequest(
                text=piece,
                voice=self.voice,
                speed=self.speed,
                seed=self.seed,
                language=self.language,
                instructions=self.instructions,
                parameters=self.parameters,
            )
            for piece in self.pieces
        ]

    def synthesize(self, progress: Progress | None = None) -> Iterator[AudioChunk]:
        """All pieces in order, joined with short crossfades (blocking; runs on the engine's
        thread). ``progress(done, total)`` is called after each piece."""
        requests = self.requests()

        def pieces() -> Iterator[AudioChunk]:
            for done, request in enumerate(requests, start=1):
                yield from self.engine.synthesize(request)
                if progress:
                    progress(done, len(requests))

        return crossfaded(pieces(), CROSSFADE_S)


def crossfaded(chunks: Iterator[AudioChunk], seconds: float) -> Iterator[AudioChunk]:
    """Overlap consecutive chunks by ``seconds`` with linear fades, so that joins between
    separately synthesised pieces never click. Holds back only the last few milliseconds."""
    tail: AudioChunk | None = None
    for chunk in chunks:
        x, rate = chunk.samples, chunk.sample_rate
        n = int(seconds * rate)
        if tail is not None and tail.sample_rate == rate:
            k = min(n, tail.samples.size, x.size)
            ramp = np.linspace(0.0, 1.0, k, dtype=np.float32)
            head = tail.samples[: tail.samples.size - k]
            blend = tail.samples[tail.samples.size - k :] * (1 - ramp) + x[:k] * ramp
            x = np.concatenate([head, blend, x[k:]]).astype(np.float32)
        elif tail is not None:
            yield tail
        if x.size > n:
            yield AudioChunk(x[: x.size - n], rate)
            tail = AudioChunk(x[x.size - n :], rate)
        else:
            tail = AudioChunk(x, rate)
    if tail is not None:
        yield tail


class _Output:
    """Where one generation's audio goes: encoded for the client, written to its file as it
    comes, and the file kept only once everything succeeded (``abort`` removes all traces)."""

    def __init__(self, plan: SpeechPlan, blobs: LocalBlobStore | None) -> None:
        self.format = plan.format
        self.key = f"generations/{plan.id}.{plan.format}"
        self.writer = blobs.writer(self.key) if blobs else None
        self.started = time.perf_counter()
        self.first_audio: float | None = None
        self.elapsed = 0.0
        self.encoder: StreamEncoder | None = None
        self.rate = 0
        self.samples = 0
        self.committed: Path | None = None
        self.engine = plan.engine.name

    @property
    def duration(self) -> float:
        return self.samples / self.rate if self.rate else 0.0

    @property
    def output_rate(self) -> int:
        return output_sample_rate(self.format, self.rate)

    def _emit(self, data: bytes) -> bytes:
        if data:
            if self.first_audio is None:
                self.first_audio = time.perf_counter() - self.started
            if self.writer:
                self.writer.write(data)
        return data

    def feed(self, chunk: AudioChunk) -> bytes:
        if self.encoder is None:
            self.encoder, self.rate = open_encoder(self.format, chunk.sample_rate), chunk.sample_rate
        self.samples += chunk.samples.size
        return self._emit(self.encoder.encode(chunk.samples))

    def close(self) -> bytes:
        """The last bytes; the file is kept (WAV sizes filled in)."""
        if self.encoder is None:
            # The text passed the checks, yet the engine found nothing in it to say (a script it
            # cannot read): the client's text, not a server failure.
            raise InvalidInputError(f"engine {self.engine!r} found nothing it could speak in this text", param="input")
        tail = self._emit(self.encoder.close())
        if self.first_audio is None:
            self.first_audio = time.perf_counter() - self.started
        if self.writer:
            self.committed = self.writer.commit()
            if self.format == "wav":
                finalize_wav(str(self.committed))
        self.elapsed = time.perf_counter() - self.started
        return tail

    def abort(self) -> None:
        if self.writer:
            self.writer.abort()
        if self.committed is not None:  # the row failed: the file must not outlive its record
            self.committed.unlink(missing_ok=True)


class SpeechService:
    def __init__(
        self,
        *,
        settings: Settings,
        registry: EngineRegistry,
        voices: VoiceLibrary,
        db: Database,
        blobs: LocalBlobStore,
        save_outputs: Callable[[], bool] | None = None,
    ) -> None:
        self.settings = settings
        self.registry = registry
        self.voices = voices
        self.db = db
        self.blobs = blobs
        # Asked once per generation (it may read the database): the runtime config can turn
        # saving off and on while the server runs. Without it, the setting decides.
        self.save_outputs = save_outputs or (lambda: self.settings.save_outputs)
        self._file_transcripts: dict[str, str] = {}
        """What Whisper heard in reference files, by content hash (see ``prepare_file_voice``)."""

    def plan(self, options: SpeechOptions, *, source: str) -> SpeechPlan:
        """A single-speaker request, from any API: refused for an engine that makes dialogue only."""
        return self.single_speaker(
            self.prepare(
                text=options.input,
                voice=options.voice,
                model=options.model,
                fmt=options.response_format,
                speed=options.speed,
                seed=options.seed,
                language=options.language,
                instructions=options.instructions,
                parameters=options.parameters,
                source=source,
            )
        )

    @staticmethod
    def single_speaker(plan: SpeechPlan) -> SpeechPlan:
        """``plan``, when its engine speaks one voice alone; a 400 when it makes dialogue only (Dia)."""
        if not plan.engine.capabilities.single_speaker:
            raise InvalidInputError(
                f"engine {plan.engine.name!r} makes dialogue only: ask for a dialogue (/v1/audio/dialogue, "
                "/v1/text-to-dialogue, or speaker tags on /generate)",
                param="model",
            )
        return plan

    def engine_for(self, model: str | None, voice: VoiceRef) -> Engine:
        """The engine a request names, or for ``tts-1`` and friends (or nothing) the default one:
        the default cloning engine when the voice is a cloned one, the default engine otherwise."""
        name = model or ""
        if not name or name in OPENAI_MODELS or name == "parla":
            # A cloned voice, or a built-in one that is an adaptation preset, needs the cloning engine.
            adapted = voice.samples or voice.preset(self.settings.default_clone_engine)
            name = self.settings.default_clone_engine if adapted else self.settings.default_engine
        try:
            engine = self.registry.get(name)
        except UnknownEngineError as exc:
            known = [*OPENAI_MODELS, *exc.known]
            raise InvalidInputError(f"unknown model {model!r}; available: {', '.join(known)}", param="model") from None
        if voice.samples and not engine.capabilities.cloning:
            raise InvalidInputError(
                f"engine {engine.name!r} cannot speak in a cloned voice such as {voice.name!r}; "
                f"use {self.settings.default_clone_engine!r}",
                param="model",
            )
        return engine

    def prepare(
        self,
        *,
        text: str,
        voice: str | VoiceRef | None = None,
        model: str | None = None,
        fmt: str = "mp3",
        speed: float = 1.0,
        seed: int | None = None,
        language: str | None = None,
        instructions: str | None = None,
        parameters: Mapping[str, Any] | None = None,
        source: str = "api",
    ) -> SpeechPlan:
        if not text or not text.strip():
            raise InvalidInputError("input is empty: give some text to speak", param="input")
        if len(text) > self.settings.max_input_chars:
            raise TooLargeError(
                f"input is {len(text)} characters; the limit is {self.settings.max_input_chars}",
                param="input",
            )
        if fmt not in FORMATS:
            raise InvalidInputError(
                f"unknown response_format {fmt!r}; choose one of {', '.join(FORMATS)}", param="response_format"
            )
        if not MIN_SPEED <= speed <= MAX_SPEED:
            raise InvalidInputError(f"speed must be between {MIN_SPEED} and {MAX_SPEED}, got {speed}", param="speed")
        voice_ref = voice if isinstance(voice, VoiceRef) else self.voices.resolve(voice or self.settings.default_voice)
        engine = self.engine_for(model, voice_ref)
        reason = engine.unavailable_reason()
        if reason:
            raise ServiceUnavailableError(f"engine {engine.name!r} is unavailable: {reason}")
        try:
            params = engine.resolve_parameters(parameters, voice_ref.preset(engine.name))
        except ValueError as exc:
            raise InvalidInputError(str(exc), param="parameters") from None
        pieces = split_for_speech(normalize_text(text))
        if not any(_SPEAKABLE.search(piece) for piece in pieces):
            raise InvalidInputError("input has nothing to speak (no words in it)", param="input")
        return SpeechPlan(
            id=new_id(),
            text=text,
            pieces=pieces,
            engine=engine,
            runner=self.registry.runner(engine.name),
            voice=voice_ref,
            model=model or engine.name,
            format=fmt,
            speed=speed,
            # A seed is always chosen, so any generation can be reproduced from its record.
            seed=seed if seed is not None else secrets.randbelow(2**31),
            language=language or voice_ref.language,
            instructions=instructions,
            parameters=params,
            source=source,
            ignored=tuple(engine.ignored_parameters(parameters, consumed=REQUEST_CONTROLS)),
        )

    def prepare_file_voice(
        self, path: Path, *, transcript: str | None = None, model: str | None = None, **options: Any
    ) -> SpeechPlan:
        """``prepare`` for a voice given as one reference file (the model microservice API's ``voice_id``); the other
        arguments are ``prepare``'s. Blocking (it reads, and may transcribe, the file).

        An engine that clones learns from what the file says: ``transcript`` when given, else
        what Whisper hears (remembered per file content, so a file is transcribed once). The
        voice's key hashes the file's bytes and transcript, so engines cache their conditioning
        per file content, like a library voice's.
        """
        if path.stat().st_size > self.settings.max_upload_bytes:
            raise TooLargeError(f"the voice file is larger than {self.settings.max_upload_bytes} bytes", param="voice")
        data = path.read_bytes()
        try:
            audio, _ = decode_audio(data, 16_000, max_seconds=MAX_SECONDS)
        except AudioTooLongError:
            raise InvalidInputError(f"the voice file is longer than {MAX_SECONDS:g} s", param="voice") from None
        except AudioDecodeError as exc:
            raise InvalidInputError(f"the voice file is not audio that can be read: {exc}", param="voice") from None
        digest = hashlib.sha256(data).hexdigest()
        transcript = (transcript or "").strip() or None
        engine = self.engine_for(model, VoiceRef(path.name, samples=((path, transcript),)))
        if transcript is None and engine.capabilities.cloning:
            if digest not in self._file_transcripts:
                if len(self._file_transcripts) >= 256:  # a bound, not an LRU: re-hearing a file is cheap
                    self._file_transcripts.clear()
                heard = self.voices.transcriber.transcribe(audio, language=options.get("language"))
                self._file_transcripts[digest] = heard.text
            transcript = self._file_transcripts[digest] or None
            if transcript is None and engine.capabilities.needs_transcript:
                raise InvalidInputError(
                    f"the voice file {path.name} holds no speech that could be heard, so a voice cannot be learned"
                    " from it: use a recording of someone speaking, or say what it says (transcription, or"
                    " audio_transcriptions for a dialogue)",
                    param="voice",
                )
        key = hashlib.sha256(f"{digest}\n{transcript or ''}".encode()).hexdigest()[:32]
        voice = VoiceRef(path.name, samples=((path, transcript),), key=f"file-{key}")
        return self.prepare(voice=voice, model=model, **options)

    async def warm_voice(self, voice: str) -> None:
        """Let the default cloning engine learn a voice's conditioning now, in the background,
        so the first request in that voice does not wait for it."""
        try:
            engine = self.registry.get(self.settings.default_clone_engine)
            ref = self.voices.resolve(voice)
        except (UnknownEngineError, InvalidInputError):
            return
        if engine.unavailable_reason() or not ref.samples:
            return
        try:
            await self.registry.runner(engine.name).call(lambda: engine.prepare_voice(ref))
        except Exception as exc:  # the request that needs it will report the problem
            log.warning("could not prepare voice %s: %s", voice, exc)

    def audio(self, plan: SpeechPlan, progress: Progress | None = None) -> AsyncGenerator[AudioChunk, None]:
        """Raw audio chunks as the engine makes them (no encoding, no record)."""
        return plan.runner.stream(lambda: plan.synthesize(progress))

    def encoded(
        self, plan: SpeechPlan, progress: Progress | None = None, *, keep: bool = False
    ) -> AsyncGenerator[bytes, None]:
        """Encoded bytes as they are ready; on completion the file is kept and the generation recorded."""
        return self.encode(plan, self.audio(plan, progress), keep=keep)

    async def encode(
        self, plan: SpeechPlan, chunks: AsyncGenerator[AudioChunk, None], *, keep: bool = False
    ) -> AsyncGenerator[bytes, None]:
        """Encode ``chunks`` (the plan's audio, or a dialogue's) as they come; keep and record at the end.
        Closing this early (a client left) closes ``chunks`` at once, which stops the synthesis.
        The file is kept when the runtime config saves outputs, or always with ``keep`` (audio that
        is served by URL afterwards, such as a character's answer)."""
        out = _Output(plan, self.blobs if keep or await offload(self._keeps, plan) else None)
        try:
            async with aclosing(chunks):
                async for chunk in chunks:
                    data = await offload(out.feed, chunk)  # PyAV encodes: off the event loop
                    if data:
                        yield data
            yield await offload(out.close)
            await offload(self._record, plan, out)
        except BaseException:
            out.abort()
            raise

    async def render(self, plan: SpeechPlan, progress: Progress | None = None, *, keep: bool = False) -> bytes:
        """The whole encoded file at once (CLI, tests, non-streaming callers); a WAV handed over
        whole carries its true sizes, not the streaming marker."""
        data = b"".join([part async for part in self.encoded(plan, progress, keep=keep)])
        return sized_wav(data) if plan.format == "wav" else data

    def record_audio(self, plan: SpeechPlan, chunks: list[AudioChunk]) -> Path:
        """Keep audio already made for ``plan`` (piece by piece, elsewhere) as its generation's file
        and record it; blocking. Used when the text was not known before the audio started."""
        out = _Output(plan, self.blobs)
        try:
            for chunk in chunks:
                out.feed(chunk)
            out.close()
            self._record(plan, out)
        except BaseException:
            out.abort()
            raise
        assert out.committed is not None
        return out.committed

    def render_blocking(self, plan: SpeechPlan, progress: Progress | None = None) -> bytes:
        """Synthesise, encode, keep and record on the calling thread (background jobs run this on
        the engine's thread through ``plan.runner.call_sync``)."""
        out = _Output(plan, self.blobs if self._keeps(plan) else None)
        try:
            parts = [out.feed(chunk) for chunk in plan.synthesize(progress)]
            parts.append(out.close())
            self._record(plan, out)
            data = b"".join(parts)
            return sized_wav(data) if plan.format == "wav" else data
        except BaseException:
            out.abort()
            raise

    def _keeps(self, plan: SpeechPlan) -> bool:
        """Whether the plan's audio is kept: always, unless the runtime config governs its source
        (the Dia server API's outputs) and says not to save outputs."""
        return plan.source not in GOVERNED_SOURCES or self.save_outputs()

    def _record(self, plan: SpeechPlan, out: _Output) -> None:
        with self.db.session() as session:
            session.add(
                Generation(
                    id=plan.id,
                    text=plan.text,
                    voice=plan.voice.name,
                    voice_id=plan.voice.id,
                    engine=plan.engine.name,
                    model=plan.model,
                    parameters={
                        **plan.parameters,
                        "speed": plan.speed,
                        "language": plan.language,
                        **({"instructions": plan.instructions} if plan.instructions else {}),
                    },
                    seed=plan.seed,
                    format=plan.format,
                    sample_rate=out.output_rate,
                    duration_s=out.duration,
                    elapsed_s=out.elapsed,
                    first_audio_s=out.first_audio,
                    file=out.key if out.committed else None,
                    source=plan.source,
                )
            )
