"""Dialogue: turns between voices, from a list of turns, a text with speaker tags, or chat roles.

Each turn is spoken by its own voice (and that voice's engine), brought to a common loudness so
no speaker is louder than another, and joined to the next with a pause. The audio streams turn
by turn; the generation record (and a non-streamed response) carries each turn's start and end.

An engine that speaks whole scripts (``Capabilities.scripted_dialogue``: Dia) is handed the
dialogue as one ``[S1] ... [S2] ...`` script instead, its cues as text where it renders them, in
one voice made of the speakers' voices (``script_voice``), cut at turns only where the script would
be longer than the engine reads at once. Turns spoken in one generation share its start and end.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import AsyncGenerator, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, Field, model_validator

from parla.audio.dsp import normalize_loudness, resample
from parla.audio.encode import AudioFormat
from parla.engines.base import AudioChunk, Capabilities, VoiceRef
from parla.engines.registry import EngineRegistry
from parla.errors import InvalidInputError, ParlaError
from parla.services.speech import Progress, Rendered, SpeechOptions, SpeechPlan, SpeechService
from parla.store.models import new_id
from parla.text import normalize_text
from parla.text.dialogue import (
    NONVERBAL_PAUSE_S,
    ROLE_SPEAKERS,
    DialogueSyntaxError,
    is_cue,
    parse_speaker_tags,
    script_line,
    split_cues,
)

TURN_LUFS = -23.0
"""Every turn is brought to this loudness (EBU R128), so speakers match; low enough that the
peak ceiling rarely has to cut a bright, peaky voice below it."""
SECOND_VOICES = ("nova", "onyx")
"""The voice S2 gets when a request names one voice only (the first that differs from S1's)."""
SCRIPT_SPEAKERS = 2
"""Most speakers in one script: ``[S1]`` and ``[S2]``, the tags a scripted engine reads (Dia's
tokenizer has these two). A dialogue of more speakers is spoken turn by turn."""
_TAGS = re.compile(r"\[\s*[Ss]\d+\s*\]")


class TurnIn(BaseModel):
    text: str = Field(..., description="What this turn says.")
    voice: str | None = Field(None, description="Voice name or id; else the speaker's voice.")
    speaker: str | None = Field(None, description="Speaker tag (S1, S2...) when no voice is given.")


class Message(BaseModel):
    role: Literal["user", "assistant", "system"]
    content: str


class DialogueRequest(BaseModel):
    """One of ``turns``, ``text`` (with ``[S1]``/``[S2]`` tags) or ``messages`` (chat roles)."""

    turns: list[TurnIn] | None = None
    text: str | None = None
    messages: list[Message] | None = None
    voices: dict[str, str] = Field(
        default_factory=dict, description="Voice per speaker tag (S1, S2) or role (user, assistant, system)."
    )
    voice: str | None = Field(
        None, description="The primary speaker's voice when ``voices`` names none; the others get other voices."
    )
    primary_speaker: str | None = Field(
        None,
        pattern=r"^S\d+$",
        description="The speaker ``voice`` speaks (a voice mapping's primary speaker); default: the only speaker "
        "of a one-speaker text, else S1.",
    )
    model: str | None = None
    response_format: AudioFormat = "mp3"
    speed: float = Field(1.0, ge=0.25, le=4.0)
    seed: int | None = Field(None, ge=0, le=2**31 - 1)
    language: str | None = Field(None, description="The language every turn is spoken in; default: each voice's.")
    instructions: str | None = Field(None, description="Style instructions, used by engines that can.")
    pause_s: float = Field(0.35, ge=0.0, le=5.0, description="Silence between turns.")
    parameters: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _one_source(self) -> DialogueRequest:
        given = [name for name in ("turns", "text", "messages") if getattr(self, name) is not None]
        if len(given) != 1:
            raise ValueError("give exactly one of turns, text (with [S1]/[S2] tags) or messages")
        return self


@dataclass
class TurnPlan:
    speaker: str
    voice: str
    text: str
    person: str = ""
    """Who speaks it: the voice the turn names itself, else its speaker tag (whose voice it keeps).
    Two turns of one person are one speaker, whatever tags a list of turns was given."""
    start: float = 0.0
    end: float = 0.0


@dataclass
class Span:
    """What is spoken and loudness-matched as one: a turn (its speech, and pauses where its cues
    were), or several turns of a script that an engine speaks in one generation."""

    turns: list[TurnPlan]
    parts: list[SpeechPlan | float]
    """Speech, and pauses (seconds) where nonverbal cues were."""


@dataclass
class DialoguePlan:
    spans: list[Span]
    pause_s: float
    record: SpeechPlan
    """Stands for the whole dialogue in the history (id, format, text, seed)."""
    timings: list[dict[str, Any]] = field(default_factory=list)

    @property
    def turns(self) -> list[TurnPlan]:
        return [turn for span in self.spans for turn in span.turns]

    @property
    def plans(self) -> list[SpeechPlan]:
        return [part for span in self.spans for part in span.parts if isinstance(part, SpeechPlan)]

    @property
    def ignored(self) -> list[str]:
        """Parameters some turn's engine did not use."""
        return sorted({name for plan in self.plans for name in plan.ignored})


def script_voice(voices: list[VoiceRef], *, needs_transcript: bool) -> VoiceRef:
    """One voice for a script whose speaker k (``S1``, ``S2``) speaks in ``voices[k-1]``: its samples
    are each speaker's first sample with a transcript, in speaker order, that transcript tagged
    ``[Sk]`` (an engine's audio prompt is then the speakers' prompts in order, each tagged as the
    script tags its lines). Whatever tags a transcript carried are replaced: a voice mapping's are
    removed when it is stored, so its position in this script is what says who speaks it. Its key
    changes with any speaker's key and with their order, so an engine caches one prompt per
    combination. A voice without samples adds none (the engine picks that speaker's voice). The
    first speaker's presets and language stand for all: one generation, one set of parameters.

    Raises ``InvalidInputError`` for a voice with samples none of which has a transcript, when the
    engine learns from what they say (``needs_transcript``)."""
    samples: list[tuple[Path, str | None]] = []
    for number, voice in enumerate(voices, start=1):
        if not voice.samples:
            continue
        said = [(path, " ".join(_TAGS.sub(" ", text or "").split())) for path, text in voice.samples]
        transcribed = [(path, text) for path, text in said if text]
        if transcribed:
            path, text = transcribed[0]
            samples.append((path, f"[S{number}] {text}"))
        elif needs_transcript:
            raise InvalidInputError(
                f"voice {voice.name!r} has no sample with a transcript, and the engine speaks a voice from what"
                " its samples say: give the sample's transcript, or let Whisper hear it",
                param="voice",
            )
        else:
            samples.append((voice.samples[0][0], None))
    name = ", ".join(f"S{number}={voice.name}" for number, voice in enumerate(voices, start=1))
    combination = repr(([voice.key or voice.name for voice in voices], [(str(p), t) for p, t in samples]))
    digest = hashlib.sha256(combination.encode()).hexdigest()[:32]
    first = voices[0]
    return VoiceRef(
        name=name[:255], samples=tuple(samples), presets=first.presets, language=first.language, key=f"script-{digest}"
    )


class DialogueService:
    def __init__(self, speech: SpeechService, engines: EngineRegistry) -> None:
        self.speech = speech
        self.engines = engines

    def _turns(self, request: DialogueRequest) -> list[tuple[str, str | None, str]]:
        """(speaker, explicit voice, text) for each turn."""
        try:
            if request.turns is not None:
                return [(t.speaker or f"S{1 + i % 2}", t.voice, t.text) for i, t in enumerate(request.turns)]
            if request.messages is not None:
                return [(ROLE_SPEAKERS[m.role], request.voices.get(m.role), m.content) for m in request.messages]
            return [(t.speaker, None, t.text) for t in parse_speaker_tags(request.text or "")]
        except DialogueSyntaxError as exc:
            raise InvalidInputError(str(exc), param="text") from None

    def _voice_for(self, speaker: str, request: DialogueRequest, primary: str) -> str:
        if speaker in request.voices:
            return request.voices[speaker]
        first = request.voices.get(primary) or request.voice or self.speech.settings.default_voice
        if speaker == primary:
            return first
        # Only one voice named: the others must still sound like other people.
        others = [v for v in SECOND_VOICES if v != first.lower()]
        return others[(int(speaker[1:]) - 2) % len(others)] if speaker[1:].isdigit() else others[0]

    def prepare(
        self, request: DialogueRequest, *, source: str = "dialogue", resolved: Mapping[str, VoiceRef] | None = None
    ) -> DialoguePlan:
        """Every turn's speech planned, held to its engines' dialogue rules (Dia: two speakers at
        least), and, for an engine that speaks whole scripts, planned again as a script (``_script``).
        ``resolved``: voices a dialect has resolved itself, by speaker (the model microservice API's
        voice files); ``request.voices`` then names them for the record."""
        resolved = resolved or {}
        raw = self._turns(request)
        if not raw:
            raise InvalidInputError("a dialogue needs at least one turn", param="turns")
        spans: list[Span] = []
        seed = request.seed if request.seed is not None else int(np.random.default_rng().integers(2**31))
        assigned: dict[str, str] = {}  # a speaker keeps the voice it first spoke with
        speakers = {speaker for speaker, _, _ in raw}
        # The voice named speaks one speaker's lines: the one it is bound to, else the only one.
        primary = request.primary_speaker or (next(iter(speakers)) if len(speakers) == 1 else "S1")
        for i, (speaker, explicit, text) in enumerate(raw, start=1):
            if not text.strip():
                raise InvalidInputError(f"turn {i} is empty", param="turns")
            voice = explicit or assigned.get(speaker) or self._voice_for(speaker, request, primary)
            assigned.setdefault(speaker, voice)
            parts: list[SpeechPlan | float] = []
            for part in split_cues(text):
                if is_cue(part):
                    parts.append(NONVERBAL_PAUSE_S)  # spoken turn by turn, a cue is a pause
                    continue
                try:
                    ref = None if explicit else resolved.get(speaker)
                    options = self._options(request, part, voice=voice, seed=seed)
                    parts.append(self.speech.prepare(options, source=source, voice=ref, turn=True))
                except ParlaError as exc:
                    raise exc.within(f"turn {i}") from None
            if not any(isinstance(p, SpeechPlan) for p in parts):
                raise InvalidInputError(f"turn {i} has nothing to say besides cues", param="turns")
            person = f"voice {explicit}" if explicit else f"tag {speaker}"
            spans.append(Span([TurnPlan(speaker, voice, text, person)], parts))
        self._check_speakers(spans)
        scripted = self._script(spans, request, seed=seed, source=source)
        return self._assemble(scripted or spans, request, source=source, scripted=scripted is not None)

    @staticmethod
    def _options(
        request: DialogueRequest, text: str, *, voice: str | None, seed: int, model: str | None = None
    ) -> SpeechOptions:
        return SpeechOptions(
            input=text,
            voice=voice,
            model=model or request.model,
            response_format=request.response_format,
            speed=request.speed,
            seed=seed,
            language=request.language,
            instructions=request.instructions,
            parameters=request.parameters,
        )

    def _check_speakers(self, spans: list[Span]) -> None:
        """Each engine's fewest speakers (``Capabilities.min_dialogue_turns``): distinct speakers
        (``TurnPlan.person``) are counted, not turns, so one person talking twice is no dialogue."""
        speakers = len({turn.person for span in spans for turn in span.turns})
        plans = [part for span in spans for part in span.parts if isinstance(part, SpeechPlan)]
        for name in dict.fromkeys(plan.engine for plan in plans):
            fewest = self.engines.get(name).capabilities.min_dialogue_turns
            if speakers < fewest:
                raise InvalidInputError(
                    f"engine {name!r} needs a dialogue of at least {fewest} speakers, got {speakers}: give each"
                    " speaker its own tag ([S1], [S2]) or voice",
                    param="turns",
                )

    def _script(self, spans: list[Span], request: DialogueRequest, *, seed: int, source: str) -> list[Span] | None:
        """The dialogue as scripts its engine speaks whole, each one ``SpeechPlan`` of one piece, or
        ``None`` to speak it turn by turn: when its turns go to several engines, to one that does
        not speak scripts, or to more speakers than a script tags, or one's voice is an engine's own
        (a style its engine picks by name: it cannot be one speaker of a combined voice).

        Speakers are numbered by their first line (the request's tags renumbered), the voice is
        ``script_voice`` of theirs, and the script is cut between turns only where it would be longer
        than the engine reads at once (``max_script_bytes``, its voice's transcripts included)."""
        turn_plans = [next(p for p in span.parts if isinstance(p, SpeechPlan)) for span in spans]
        engine = self.engines.get(turn_plans[0].engine)
        capabilities = engine.capabilities
        if not capabilities.scripted_dialogue or any(plan.engine != engine.name for plan in turn_plans):
            return None
        voices: dict[str, VoiceRef] = {}  # by person, in order of their first line
        for span, plan in zip(spans, turn_plans, strict=True):
            voices.setdefault(span.turns[0].person, plan.voice)
        if len(voices) > SCRIPT_SPEAKERS or any(voice.engine for voice in voices.values()):
            return None
        numbers = {who: f"S{number}" for number, who in enumerate(voices, start=1)}
        voice = script_voice(list(voices.values()), needs_transcript=capabilities.needs_transcript)
        lines: list[tuple[TurnPlan, str]] = []
        for span in spans:
            turn = span.turns[0]
            said = normalize_text(script_line(turn.text, cues=capabilities.nonverbal))
            lines.append((turn, f"[{numbers[turn.person]}] {said}"))
        scripts: list[Span] = []
        for first, turns, script in self._cut(lines, voice, capabilities, engine.name):
            # Every speaker's engine, whatever the request named (tts-1 would pick one by the voice).
            options = self._options(request, script, voice=None, seed=seed, model=engine.name)
            try:
                plan = self.speech.prepare(options, source=source, voice=voice, turn=True)
            except ParlaError as exc:
                last = first + len(turns) - 1
                raise exc.within(f"turn {first}" if first == last else f"turns {first}-{last}") from None
            # Not split into sentences: the engine speaks the script whole, in one generation.
            scripts.append(Span(turns, [replace(plan, pieces=[script])]))
        return scripts

    @staticmethod
    def _cut(
        lines: list[tuple[TurnPlan, str]], voice: VoiceRef, capabilities: Capabilities, engine: str
    ) -> list[tuple[int, list[TurnPlan], str]]:
        """The script's lines as few scripts as the engine's limit allows, cut between turns: each
        with the number of its first turn. Its voice's transcripts are read with each (the engine's
        audio prompt) and count. Raises ``InvalidInputError`` for a turn over the limit alone."""
        limit = capabilities.max_script_bytes
        prompt = " ".join(text for _, text in voice.samples if text)
        held = len(prompt.encode()) + (1 if prompt else 0)  # the transcripts, and the space after them
        scripts: list[tuple[int, list[TurnPlan], str]] = []
        for index, (turn, line) in enumerate(lines, start=1):
            size = len(line.encode())
            if limit is not None and held + size > limit:
                besides = f" with the {held} bytes its voices' transcripts take" if prompt else ""
                raise InvalidInputError(
                    f"turn {index} is {size} bytes of script, and engine {engine!r} reads at most {limit} at once"
                    f"{besides}: split it into shorter turns",
                    param="turns",
                )
            if scripts:
                first, turns, script = scripts[-1]
                joined = f"{script} {line}"
                if limit is None or held + len(joined.encode()) <= limit:
                    scripts[-1] = (first, [*turns, turn], joined)
                    continue
            scripts.append((index, [turn], line))
        return scripts

    def _assemble(self, spans: list[Span], request: DialogueRequest, *, source: str, scripted: bool) -> DialoguePlan:
        """The plan of prepared spans. Its record, which stands for the whole dialogue in the
        history, takes the first span's format, speed, seed and language."""
        turns = [turn for span in spans for turn in span.turns]
        first = next(part for part in spans[0].parts if isinstance(part, SpeechPlan))
        transcript = "\n".join(f"[{t.speaker}] {t.text}" for t in turns)
        voices = ", ".join(dict.fromkeys(f"{t.speaker}={t.voice}" for t in turns))
        parameters: dict[str, Any] = {"dialogue": True, "pause_s": request.pause_s}
        if scripted:
            parameters["scripts"] = len(spans)  # spoken as this many whole scripts, not turn by turn
        record = replace(
            first,
            id=new_id(),
            text=transcript,
            pieces=[],
            voice=VoiceRef(name=voices[:255]),
            model=request.model or "dialogue",
            instructions=None,
            parameters=parameters,
            source=source,
        )
        return DialoguePlan(spans=spans, pause_s=request.pause_s, record=record)

    async def audio(self, plan: DialoguePlan, progress: Progress | None = None) -> AsyncGenerator[AudioChunk, None]:
        """Span after span (a turn, or a script spoken whole), each loudness-matched, with pauses;
        fills in the turns' times (a script's turns share its span). ``progress(spans done, spans)``
        follows each span."""
        rate = 0
        position = 0.0
        for index, span in enumerate(plan.spans):
            pieces: list[np.ndarray] = []
            span_rate = 0
            for part in span.parts:
                if isinstance(part, float):
                    pieces.append(np.zeros(int(part * (span_rate or 22050)), dtype=np.float32))
                    continue
                async for chunk in self.speech.audio(part):
                    if span_rate and chunk.sample_rate != span_rate:
                        chunk = AudioChunk(resample(chunk.samples, chunk.sample_rate, span_rate), span_rate)
                    span_rate = span_rate or chunk.sample_rate
                    pieces.append(chunk.samples)
            rate = rate or span_rate
            audio = normalize_loudness(np.concatenate(pieces), span_rate, TURN_LUFS)
            if span_rate != rate:
                audio = resample(audio, span_rate, rate)
            if index:
                gap = np.zeros(int(plan.pause_s * rate), dtype=np.float32)
                position += gap.size / rate
                yield AudioChunk(gap, rate)
            start, end = position, position + audio.size / rate
            position = end
            for turn in span.turns:
                turn.start, turn.end = start, end
                plan.timings.append(
                    {
                        "speaker": turn.speaker,
                        "voice": turn.voice,
                        "text": turn.text,
                        "start": round(start, 3),
                        "end": round(end, 3),
                    }
                )
            yield AudioChunk(audio, rate)
            if progress:
                progress(index + 1, len(plan.spans))
        plan.record.parameters["turns"] = plan.timings

    def stream(self, plan: DialoguePlan, progress: Progress | None = None) -> AsyncGenerator[bytes, None]:
        """The encoded dialogue as each turn is ready; kept and recorded at the end."""
        return self.speech.stream(plan.record, audio=self.audio(plan, progress))

    async def render(self, plan: DialoguePlan, progress: Progress | None = None) -> Rendered:
        """The whole encoded dialogue at once (a WAV with its true sizes), kept and recorded."""
        return await self.speech.render(plan.record, audio=self.audio(plan, progress))
