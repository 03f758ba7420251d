"""Speech: text in, audio out, every synthesis recorded.

``prepare`` checks a request and decides everything (engine, voice, pieces, parameters, seed)
before any audio is made, so bad input fails fast with a clear error. ``stream`` then yields the
encoded bytes as the engine produces audio, writes the file and records the generation once the
last byte is out (``render`` does the same and returns the whole file); a request that stops
halfway leaves no file and no row.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import re
import secrets
import time
from collections.abc import AsyncGenerator, Callable, Collection, Iterable, Iterator
from contextlib import aclosing
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator

from parla.audio.decode import decode_upload
from parla.audio.encode import (
    AudioFormat,
    StreamEncoder,
    finalize_wav,
    open_encoder,
    output_sample_rate,
    sized_wav,
)
from parla.audio.quality import MAX_SECONDS
from parla.engines.base import AudioChunk, Engine, SynthesisRequest, TimedWord, VoiceRef
from parla.engines.registry import EngineRegistry, UnknownEngineError
from parla.errors import InvalidInputError, ServiceUnavailableError, TooLargeError
from parla.languages import base_language, language_code
from parla.offload import offload
from parla.services.alignment import align_words
from parla.services.checks import CheckReport, PieceChecker, PieceResult
from parla.services.keys import acting_for, caller_key_id
from parla.services.pronunciations import PronunciationDictionary
from parla.services.runtime_config import GOVERNED_SOURCES
from parla.services.usage import UsageLimits
from parla.services.voices import VoiceLibrary
from parla.settings import Settings
from parla.store.blobs import LocalBlobStore
from parla.store.db import Database
from parla.store.models import Generation, new_id, utcnow
from parla.text.markup import MarkupError, speech_pieces

log = logging.getLogger(__name__)

OPENAI_MODELS = ("tts-1", "tts-1-hd", "gpt-4o-mini-tts")
"""OpenAI model names; they select the default engine."""
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
    timestamps: bool = Field(
        False,
        description="Each spoken word's start and end in seconds: from the engine's own durations where it has"
        " them (Piper, clone), else by aligning the audio with Whisper.",
    )
    check: bool | None = Field(
        None,
        description="Hear each piece with Whisper and speak again, with another seed, a piece that came out"
        " wrong; default: texts of check_min_chars (1000) characters or more.",
    )

    @field_validator("voice", mode="before")
    @classmethod
    def _voice_object(cls, value: Any) -> Any:
        # OpenAI's newer API also sends a voice as {"id": "..."}.
        return value.get("id") if isinstance(value, dict) else value


@dataclass(frozen=True)
class SpeechPlan:
    """A checked request: everything needed to synthesise, decided up front. A plain value: the
    engine is named, not held, so a plan can be logged, compared and carried across threads."""

    id: str
    text: str
    pieces: list[str]
    engine: str
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
    pauses: tuple[float, ...] = ()
    """Seconds of silence after each piece (pause tags, SSML breaks); none when empty."""
    rates: tuple[float, ...] = ()
    """Each piece's speaking rate, a factor on ``speed`` (SSML prosody); 1 when empty."""
    lead: float = 0.0
    """Seconds of silence before the first piece."""
    timestamps: bool = False
    """Time each spoken word (``SpeechOptions.timestamps``)."""
    check: bool = False
    """Hear each piece and speak a wrong one again (``services.checks``)."""

    def requests(self) -> list[SynthesisRequest]:
        rates = self.rates or (1.0,) * len(self.pieces)
        return [
            SynthesisRequest(
                text=piece,
                voice=self.voice,
                speed=self.speed * rate,
                seed=self.seed,
                language=self.language,
                instructions=self.instructions,
                parameters=self.parameters,
                timestamps=self.timestamps,
            )
            for piece, rate in zip(self.pieces, rates, strict=True)
        ]

    def silence_after(self, index: int) -> float:
        """Seconds of silence after piece ``index`` (-1: before the first)."""
        if index < 0:
            return self.lead
        return self.pauses[index] if index < len(self.pauses) else 0.0


@dataclass(frozen=True)
class Rendered:
    """What a whole rendering made: the encoded audio (a WAV with its true sizes) and its record's
    facts, so a caller never reads back the row or decodes the audio it was just handed."""

    id: str
    audio: bytes
    format: str
    duration: float
    sample_rate: int
    path: Path | None
    """The kept file, or ``None`` when outputs are not saved."""
    created_at: datetime
    """When its generation was recorded."""
    words: tuple[TimedWord, ...] = ()
    """Each spoken word's time, when the plan asked for timestamps."""
    checks: dict[str, Any] | None = None
    """What hearing the pieces found (``CheckReport.describe``), when they were checked."""


def crossfaded(pieces: Iterable[Iterable[AudioChunk]], seconds: float) -> Iterator[AudioChunk]:
    """The chunks of separately synthesised pieces, in order, each piece's end overlapped with the
    next one's start by ``seconds`` with linear fades, so that joins never click. Chunks within a
    piece are the engine's own continuous stream and pass unchanged; only a piece's last few
    milliseconds are held back (its last chunk, until the piece ends)."""
    tail: AudioChunk | None = None
    for piece in pieces:
        held: AudioChunk | None = None
        for chunk in piece:
            if chunk.words:  # placed already (``_Timeline``): they leave first, on a chunk of their own
                yield AudioChunk(np.zeros(0, dtype=np.float32), chunk.sample_rate, chunk.words)
                chunk = AudioChunk(chunk.samples, chunk.sample_rate)
            if not chunk.samples.size:
                continue
            if held is not None:
                yield held
                held = None
            if tail is not None:
                if tail.sample_rate == chunk.sample_rate:
                    chunk = _blend(tail, chunk, int(seconds * chunk.sample_rate))
                else:
                    yield tail
                tail = None
            held = chunk
        if held is not None:
            n = int(seconds * held.sample_rate)
            if held.samples.size > n:
                yield AudioChunk(held.samples[: held.samples.size - n], held.sample_rate)
                tail = AudioChunk(held.samples[held.samples.size - n :], held.sample_rate)
            else:
                tail = held
    if tail is not None:
        yield tail


class _Timeline:
    """Where each piece lands in the joined audio (``crossfaded`` overlaps neighbours by
    ``overlap`` seconds), so that the words the engine or Whisper timed within a piece are placed
    on the whole audio's clock."""

    def __init__(self, overlap: float) -> None:
        self.overlap = overlap
        self.next_start = 0.0

    def place(self, piece: Iterable[AudioChunk]) -> Iterator[AudioChunk]:
        """``piece``'s chunks, their words (timed from each chunk's start) moved to the whole audio's
        clock; once the piece ends, the next one's start is known."""
        start, offset = self.next_start, 0.0
        for chunk in piece:
            if chunk.words:
                chunk = AudioChunk(
                    chunk.samples, chunk.sample_rate, tuple(w.shifted(start + offset) for w in chunk.words)
                )
            yield chunk
            offset += chunk.duration
        self.next_start = start + offset - min(self.overlap, offset)


def _blend(tail: AudioChunk, chunk: AudioChunk, n: int) -> AudioChunk:
    """``tail`` faded out over the start of ``chunk`` (at most ``n`` samples overlap)."""
    x = chunk.samples
    k = min(n, tail.samples.size, x.size)
    ramp = np.linspace(0.0, 1.0, k, dtype=np.float32)
    head = tail.samples[: tail.samples.size - k]
    overlap = tail.samples[tail.samples.size - k :] * (1 - ramp) + x[:k] * ramp
    return AudioChunk(np.concatenate([head, overlap, x[k:]]).astype(np.float32), chunk.sample_rate)


async def encode_live(chunks: AsyncGenerator[AudioChunk, None], fmt: AudioFormat) -> AsyncGenerator[bytes, None]:
    """``chunks`` encoded as they come, by one encoder, kept nowhere and recorded nowhere: for
    audio heard now whose generation is recorded afterwards from the same chunks
    (``SpeechService.render`` with ``audio``), such as a character's answer spoken sentence by
    sentence while it is written. Closing this early closes ``chunks``, which stops their synthesis."""
    encoder: StreamEncoder | None = None
    async with aclosing(chunks):
        async for chunk in chunks:
            if not chunk.samples.size:  # words only (timestamps): nothing to encode
                continue
            if encoder is None:
                encoder = await offload(open_encoder, fmt, chunk.sample_rate)
            data = await offload(encoder.encode, chunk.samples)  # PyAV resamples: off the event loop
            if data:
                yield data
    if encoder is not None:
        tail = await offload(encoder.close)
        if tail:
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
        self.recorded_at = utcnow()
        self.engine = plan.engine
        self.words: list[TimedWord] = []

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
        self.recorded_at = utcnow()
        return tail

    def abort(self) -> None:
        if self.writer:
            self.writer.abort()
        if self.committed is not None:  # the row failed: the file must not outlive its record
            self.committed.unlink(missing_ok=True)


class SpeechService:
    """One way in (``prepare``), one way out (``stream`` as bytes are ready, or ``render`` whole);
    ``audio`` hands raw chunks to services that mix several plans (dialogue, characters)."""

    def __init__(
        self,
        *,
        settings: Settings,
        registry: EngineRegistry,
        voices: VoiceLibrary,
        db: Database,
        blobs: LocalBlobStore,
        save_outputs: Callable[[], bool] | None = None,
        usage: UsageLimits | None = None,
        pronunciations: PronunciationDictionary | None = None,
    ) -> None:
        self.settings = settings
        # What each API key may use; charged for whoever the work is done for (``acting_for``).
        self.usage = usage or UsageLimits.from_settings(settings, db)
        self.pronunciations = pronunciations or PronunciationDictionary(db, voices)
        self.registry = registry
        self.voices = voices
        self.db = db
        self.blobs = blobs
        # Asked once per generation (it may read the database): the runtime config can turn
        # saving off and on while the server runs. Without it, the setting decides.
        self.save_outputs = save_outputs or (lambda: self.settings.save_outputs)
        self._file_transcripts: dict[str, tuple[str, str | None]] = {}
        """What Whisper heard in reference files, by content hash (see ``file_voice``)."""

    # -- in ----------------------------------------------------------------------------------------

    def prepare(
        self, options: SpeechOptions, *, source: str, voice: VoiceRef | None = None, turn: bool = False
    ) -> SpeechPlan:
        """Check a request and decide everything about it (blocking: it may read the database).

        ``voice`` replaces ``options.voice`` when the caller has resolved it already (a voice file,
        a dialogue speaker). A single-speaker request is refused by an engine that makes dialogue
        only (Dia); ``turn`` marks one turn of a dialogue, which such an engine speaks."""
        text = options.input
        if not text.strip():
            raise InvalidInputError("input is empty: give some text to speak", param="input")
        if len(text) > self.settings.max_input_chars:
            raise TooLargeError(
                f"input is {len(text)} characters; the limit is {self.settings.max_input_chars}", param="input"
            )
        voice_ref = voice or self.voices.resolve(options.voice or self.settings.default_voice)
        # An unknown code is a 422 whatever the engine; a known one that the engine does not speak
        # sends a request that names no engine elsewhere, or is refused naming who would speak it.
        language = language_code(options.language or voice_ref.language)
        engine = self._engine_for(options.model, voice_ref, language)
        if not turn and not engine.capabilities.single_speaker:
            raise InvalidInputError(
                f"engine {engine.name!r} makes dialogue only: ask for a dialogue (/v1/audio/dialogue, "
                "/v1/text-to-dialogue, or speaker tags on /generate)",
                param="model",
            )
        reason = engine.unavailable_reason()
        if reason:
            raise ServiceUnavailableError(f"engine {engine.name!r} is unavailable: {reason}")
        try:
            params = engine.resolve_parameters(options.parameters, voice_ref.preset(engine.name))
        except ValueError as exc:
            raise InvalidInputError(str(exc), param="parameters") from None
        try:
            rewrite = self.pronunciations.rewriter(voice_ref.id, phonemes=engine.capabilities.phonemes)
            split = speech_pieces(text, language, rewrite)
        except MarkupError as exc:
            raise InvalidInputError(f"input: {exc}", param="input") from None
        pieces = split.texts
        if not any(_SPEAKABLE.search(piece) for piece in pieces):
            raise InvalidInputError("input has nothing to speak (no words in it)", param="input")
        if split.has_phonemes and not engine.capabilities.phonemes:
            readers = [name for name in self.registry.names() if self.registry.get(name).capabilities.phonemes]
            raise InvalidInputError(
                f"engine {engine.name!r} cannot read phonemes (<phoneme>, or a pronunciation given as phonemes); "
                f"these can: {', '.join(readers)}",
                param="input",
            )
        language_problem = engine.language_problem(language)
        if language_problem:
            raise InvalidInputError(f"{language_problem}; {self._who_speaks(language)}", param="language")
        if options.timestamps and not engine.capabilities.word_timing:
            self._check_hearable(engine.name, language)
        self.usage.charge_text(acting_for.get(), len(text))  # last: a refused request is not charged
        return SpeechPlan(
            id=new_id(),
            text=text,
            pieces=pieces,
            engine=engine.name,
            voice=voice_ref,
            model=options.model or engine.name,
            format=options.response_format,
            speed=options.speed,
            # A seed is always chosen, so any generation can be reproduced from its record.
            seed=options.seed if options.seed is not None else secrets.randbelow(2**31),
            language=language,
            instructions=options.instructions,
            parameters=params,
            source=source,
            ignored=tuple(engine.ignored_parameters(options.parameters, consumed=REQUEST_CONTROLS)),
            pauses=tuple(split.pauses) if any(split.pauses) else (),
            rates=tuple(split.rates) if any(rate != 1.0 for rate in split.rates) else (),
            lead=split.lead,
            timestamps=options.timestamps,
            check=options.check if options.check is not None else len(text) >= self.settings.check_min_chars,
        )

    def _check_hearable(self, engine: str, language: str) -> None:
        """Refuse timestamps that would need Whisper in a language no recogniser here hears."""
        try:
            self.voices.transcriber.choose(np.zeros(0, dtype=np.float32), language)
        except InvalidInputError as exc:
            raise InvalidInputError(
                f"engine {engine!r} does not time its words, and Whisper cannot align {language!r} speech here:"
                f" {exc.detail}",
                param="timestamps",
            ) from None

    def file_voice(
        self, path: Path, *, transcript: str | None = None, model: str | None = None, language: str | None = None
    ) -> VoiceRef:
        """The voice of one reference file (the model microservice API's ``voice_id``), for
        ``prepare``. Blocking: it reads, and may transcribe, the file.

        An engine that clones learns from what the file says: ``transcript`` when given, else
        what Whisper hears (remembered per file content, so a file is transcribed once). The
        voice's key hashes the file's bytes and transcript, so engines cache their conditioning
        per file content, like a library voice's.
        """
        if path.stat().st_size > self.settings.max_upload_bytes:
            raise TooLargeError(f"the voice file is larger than {self.settings.max_upload_bytes} bytes", param="voice")
        data = path.read_bytes()
        audio, _ = decode_upload(data, 16_000, max_seconds=MAX_SECONDS, param="voice", name="the voice file")
        digest = hashlib.sha256(data).hexdigest()
        transcript = (transcript or "").strip() or None
        engine = self._engine_for(model, VoiceRef(path.name, samples=((path, transcript),)))
        spoken = language
        if transcript is None and engine.capabilities.cloning:
            if digest not in self._file_transcripts:
                if len(self._file_transcripts) >= 256:  # a bound, not an LRU: re-hearing a file is cheap
                    self._file_transcripts.clear()
                heard = self.voices.transcriber.transcribe(audio, language=language)
                self._file_transcripts[digest] = (heard.text, heard.language or language)
            transcript, spoken = self._file_transcripts[digest]
            transcript = transcript or None
            if transcript is None and engine.capabilities.needs_transcript:
                raise InvalidInputError(
                    f"the voice file {path.name} holds no speech that could be heard, so a voice cannot be learned"
                    " from it: use a recording of someone speaking, or say what it says (transcription, or"
                    " audio_transcriptions for a dialogue)",
                    param="voice",
                )
        # The file's language (the request's, else what Whisper heard) is how a cloning engine reads
        # its transcript; an English one keeps the key files had before languages were kept.
        read_in = f"\n{spoken}" if spoken and base_language(spoken) != "en" else ""
        key = hashlib.sha256(f"{digest}\n{transcript or ''}{read_in}".encode()).hexdigest()[:32]
        return VoiceRef(
            path.name, samples=((path, transcript),), key=f"file-{key}", sample_languages=(spoken,) if spoken else ()
        )

    async def warm_voice(self, voice: str) -> None:
        """Let the cloning engines learn a voice's conditioning now, in the background, so the first
        request in that voice does not wait for it: the default cloning engine, and every other
        cloning engine whose model is loaded (a heavy engine's worker among them). An engine not
        loaded is left alone: loading gigabytes for a voice nobody has asked it for would be waste."""
        try:
            ref = await offload(self.voices.resolve, voice)
        except InvalidInputError:
            return
        if not ref.samples:
            return
        for engine in self.registry:
            is_default = engine.name == self.settings.default_clone_engine
            if not engine.capabilities.cloning or not (is_default or engine.loaded):
                continue
            if engine.unavailable_reason():
                continue
            try:
                await self.registry.runner(engine.name).call(functools.partial(engine.prepare_voice, ref))
            except Exception as exc:  # the request that needs it will report the problem
                log.warning("engine %s could not prepare voice %s: %s", engine.name, voice, exc)

    # -- out ---------------------------------------------------------------------------------------

    def audio(
        self, plan: SpeechPlan, progress: Progress | None = None, report: CheckReport | None = None
    ) -> AsyncGenerator[AudioChunk, None]:
        """Raw audio chunks as the engine makes them (no encoding, no record): every piece in
        order, joined with short crossfades, synthesised on the engine's thread.
        ``progress(done, total)`` is called after each piece. With ``plan.timestamps``, chunks with
        no samples carry the words, timed on the whole audio's clock; with ``plan.check``, each piece
        is heard before it is let out, and ``report`` says what was found."""
        engine = self.registry.get(plan.engine)
        requests = plan.requests()
        report = report if report is not None else CheckReport()
        report.pieces = len(requests)
        checker = PieceChecker(
            self.voices.transcriber, max_wer=self.settings.check_max_wer, tries=self.settings.check_tries
        )
        timeline = _Timeline(CROSSFADE_S)

        def pieces() -> Iterator[Iterator[AudioChunk]]:
            if plan.lead:
                yield timeline.place(silence(plan.lead))
            for done, (request, piece) in enumerate(
                zip(requests, engine.synthesize_pieces(requests), strict=True), start=1
            ):
                if plan.check:
                    piece = self._checked(engine, request, piece, checker, report, done - 1)
                if plan.timestamps and not engine.capabilities.word_timing:
                    piece = self._aligned(piece, request)
                yield timeline.place(piece)
                if plan.silence_after(done - 1):
                    yield timeline.place(silence(plan.silence_after(done - 1)))
                if progress:
                    progress(done, len(requests))

        def silence(seconds: float) -> Iterator[AudioChunk]:
            # Longer by the two crossfades that overlap it with its neighbours, so that the gap
            # between them is the length asked for.
            rate = engine.capabilities.sample_rate
            return iter([AudioChunk(np.zeros(round(rate * (seconds + 2 * CROSSFADE_S)), dtype=np.float32), rate)])

        return self.registry.runner(engine.name).stream(lambda: crossfaded(pieces(), CROSSFADE_S))

    async def stream(
        self,
        plan: SpeechPlan,
        progress: Progress | None = None,
        *,
        keep: bool = False,
        audio: AsyncGenerator[AudioChunk, None] | None = None,
    ) -> AsyncGenerator[bytes, None]:
        """Encoded bytes as they are ready; once the last is out, the file is kept and the
        generation recorded. A stream closed early (a client left) stops the synthesis at once and
        leaves no file and no row.

        ``audio``: audio made elsewhere for ``plan`` (a dialogue's turns, a character's sentences)
        instead of the plan's own. The file is kept when the runtime config saves outputs, or
        always with ``keep`` (audio served by URL afterwards, such as a character's answer)."""
        async with aclosing(self.stream_timed(plan, progress, keep=keep, audio=audio)) as encoded:
            async for data in encoded:
                if isinstance(data, bytes):
                    yield data

    async def stream_timed(
        self,
        plan: SpeechPlan,
        progress: Progress | None = None,
        *,
        keep: bool = False,
        audio: AsyncGenerator[AudioChunk, None] | None = None,
    ) -> AsyncGenerator[bytes | tuple[TimedWord, ...], None]:
        """``stream``, with the words of ``plan.timestamps`` between the bytes as soon as they are
        timed (for a piece Whisper aligns, once the piece's audio is out)."""
        report = CheckReport()
        chunks = audio or self.audio(plan, progress, report)
        async with aclosing(self._encode(plan, chunks, keep=keep, report=report)) as encoded:
            async for data in encoded:
                if not isinstance(data, _Output):
                    yield data

    async def render(
        self,
        plan: SpeechPlan,
        progress: Progress | None = None,
        *,
        keep: bool = False,
        audio: AsyncGenerator[AudioChunk, None] | None = None,
    ) -> Rendered:
        """The whole encoded file at once (non-streaming APIs, jobs, the CLI), kept and recorded as
        ``stream`` does; a WAV handed over whole carries its true sizes, not the streaming marker."""
        parts: list[bytes] = []
        out: _Output | None = None
        report = CheckReport()
        chunks = audio or self.audio(plan, progress, report)
        async with aclosing(self._encode(plan, chunks, keep=keep, report=report)) as encoded:
            async for data in encoded:
                if isinstance(data, _Output):
                    out = data
                elif isinstance(data, bytes):
                    parts.append(data)
        assert out is not None
        whole = b"".join(parts)
        return Rendered(
            id=plan.id,
            audio=sized_wav(whole) if plan.format == "wav" else whole,
            format=plan.format,
            duration=out.duration,
            sample_rate=out.output_rate,
            path=out.committed,
            created_at=out.recorded_at,
            words=tuple(out.words),
            checks=report.describe(),
        )

    # -- inside ------------------------------------------------------------------------------------

    def _engine_for(self, model: str | None, voice: VoiceRef, language: str = "en") -> Engine:
        """The engine a request names, or for ``tts-1`` and friends (or nothing) the default one:
        the default cloning engine when the voice is a cloned one, the default engine otherwise;
        and when that one does not speak ``language``, the first of ``settings.language_engines``
        that does and can speak the voice (see ``_speaking``)."""
        name = model or ""
        chosen_here = not name or name in OPENAI_MODELS or name == "parla"
        if chosen_here and voice.engine:
            name = voice.engine  # an engine's own voice (a Kokoro style) goes to that engine
        elif chosen_here:
            # A cloned voice, or a built-in one that is an adaptation preset, needs the cloning engine.
            adapted = voice.samples or voice.blend or voice.preset(self.settings.default_clone_engine)
            name = self.settings.default_clone_engine if adapted else self.settings.default_engine
            if name in self.registry.names() and self.registry.get(name).language_problem(language):
                name = self._speaking(language, voice) or name
        try:
            engine = self.registry.get(name)
        except UnknownEngineError as exc:
            known = [*OPENAI_MODELS, *exc.known]
            raise InvalidInputError(f"unknown model {model!r}; available: {', '.join(known)}", param="model") from None
        if voice.samples and not engine.capabilities.cloning:
            cloning = [e.name for e in self.registry if e.capabilities.cloning]
            raise InvalidInputError(
                f"engine {engine.name!r} cannot speak in a cloned voice such as {voice.name!r} (it does not clone); "
                f"use {self.settings.default_clone_engine!r}"
                + (f" (engines that clone: {', '.join(cloning)})" if cloning else ""),
                param="model",
            )
        if voice.blend and not engine.capabilities.blending:
            blending = [n for n in self.registry.names() if self.registry.get(n).capabilities.blending]
            raise InvalidInputError(
                f"engine {engine.name!r} cannot blend voices ({voice.name!r}); these can: {', '.join(blending)}",
                param="voice",
            )
        if voice.engine and voice.engine != engine.name:
            raise InvalidInputError(
                f"voice {voice.name!r} is engine {voice.engine!r}'s own; {engine.name!r} cannot speak it: "
                f"use model {voice.engine!r} (or tts-1)",
                param="voice",
            )
        return engine

    def _speaking(self, language: str, voice: VoiceRef) -> str | None:
        """The first engine of ``settings.language_engines`` that is available, speaks ``language``
        and can speak ``voice``: a cloned voice needs one that clones; a built-in voice one that
        has a preset for it or that does not clone (cloning engines speak library voices)."""
        names = set(self.registry.names())
        for name in self.settings.language_engines:
            if name not in names:
                continue
            engine = self.registry.get(name)
            if engine.unavailable_reason() or engine.language_problem(language):
                continue
            cloning = engine.capabilities.cloning
            if (cloning if voice.samples else (not cloning or voice.name in engine.voice_presets)) and (
                not voice.engine or voice.engine == name
            ):
                return name
        return None

    def _who_speaks(self, language: str) -> str:
        """The engines here that speak ``language``, and what each needs before it can, for a refusal."""
        able = []
        for engine in self.registry:
            if "*" in engine.capabilities.languages or engine.language_problem(language):
                continue
            reason = engine.unavailable_reason()
            able.append(f"{engine.name} ({'not available: ' + reason if reason else 'available'})")
        if not able:
            return f"no engine here speaks {language!r}"
        return f"engines that speak {language!r}: {'; '.join(able)} (name one as the model)"

    async def _encode(
        self, plan: SpeechPlan, chunks: AsyncGenerator[AudioChunk, None], *, keep: bool, report: CheckReport
    ) -> AsyncGenerator[bytes | tuple[TimedWord, ...] | _Output, None]:
        """Encode ``chunks`` as they come (their words passed on as they are), then keep and
        record; the last item is the finished output (for ``render``'s facts). Closing this early
        closes ``chunks`` at once, which stops the synthesis, and removes what was written."""
        out = _Output(plan, self.blobs if keep or await offload(self._keeps, plan) else None)
        try:
            async with self.usage.generating(acting_for.get()), aclosing(chunks):
                async for chunk in chunks:
                    if chunk.words:
                        out.words.extend(chunk.words)
                        yield chunk.words
                    if not chunk.samples.size:
                        continue
                    data = await offload(out.feed, chunk)  # PyAV encodes: off the event loop
                    if data:
                        yield data
            yield await offload(out.close)
            await offload(self._record, plan, out, report)
        except BaseException:
            out.abort()
            raise
        yield out

    def _keeps(self, plan: SpeechPlan) -> bool:
        """Whether the plan's audio is kept: always, unless the runtime config governs its source
        (the Dia server API's outputs) and says not to save outputs."""
        return plan.source not in GOVERNED_SOURCES or self.save_outputs()

    def _checked(
        self,
        engine: Engine,
        request: SynthesisRequest,
        piece: Iterator[AudioChunk],
        checker: PieceChecker,
        report: CheckReport,
        index: int,
    ) -> Iterator[AudioChunk]:
        """``piece`` once Whisper has heard it: when it is wrong and a new seed gives the engine a new
        rendering, spoken again (up to ``checker.tries`` in all) and the best kept, flagged if still
        wrong. A language no recogniser here knows leaves the pieces unchecked, and says so."""
        chunks = list(piece)
        if report.unchecked or not chunks:
            return iter(chunks)
        rate = chunks[0].sample_rate
        try:
            hearing = checker.hear(np.concatenate([c.samples for c in chunks]), rate, request.text, request.language)
        except InvalidInputError as exc:
            report.unchecked = exc.detail
            return iter(chunks)
        tries, first = 1, hearing
        while checker.fails(hearing) and engine.capabilities.seed_varies and tries < checker.tries:
            seed = ((request.seed or 0) + 7919 * tries) % 2**31  # another draw, the same for the same plan
            again = list(engine.synthesize(replace(request, seed=seed)))
            tries += 1
            if not again:
                continue
            heard_again = checker.hear(np.concatenate([c.samples for c in again]), rate, request.text, request.language)
            if heard_again.wer < hearing.wer:
                chunks, hearing = again, heard_again
        if tries > 1:
            log.info("piece %d spoken %d times; WER %.2f, first %.2f", index, tries, hearing.wer, first.wer)
        report.results.append(
            PieceResult(index, request.text, hearing.heard, hearing.wer, tries, checker.fails(hearing), first.wer)
        )
        return iter(chunks)

    def _aligned(self, piece: Iterator[AudioChunk], request: SynthesisRequest) -> Iterator[AudioChunk]:
        """``piece`` as it comes, then its words, aligned by Whisper with the piece's text (an engine
        that does not time its own words); they are timed from the end of the piece, where they come."""
        chunks = []
        for chunk in piece:
            chunks.append(chunk)
            yield AudioChunk(chunk.samples, chunk.sample_rate)  # Whisper's times only
        if not chunks:
            return
        rate = chunks[0].sample_rate
        samples = np.concatenate([c.samples for c in chunks])
        words = align_words(self.voices.transcriber, samples, rate, request.text, request.language)
        length = samples.size / rate
        yield AudioChunk(np.zeros(0, dtype=np.float32), rate, tuple(w.shifted(-length) for w in words))

    def _record(self, plan: SpeechPlan, out: _Output, report: CheckReport | None = None) -> None:
        self.usage.charge_audio(acting_for.get(), out.duration)
        with self.db.session() as session:
            session.add(
                Generation(
                    id=plan.id,
                    owner_key_id=caller_key_id(),
                    created_at=out.recorded_at,
                    text=plan.text,
                    voice=plan.voice.name,
                    voice_id=plan.voice.id,
                    engine=plan.engine,
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
                    words=[[w.word, w.start, w.end, w.after] for w in out.words] if plan.timestamps else None,
                    checks=report.describe() if report else None,
                )
            )
