"""Dialogue: turns between voices, from a list of turns, a text with speaker tags, or chat roles.

Each turn is spoken by its own voice (and that voice's engine), brought to a common loudness so
no speaker is louder than another, and joined to the next with a pause. The audio streams turn
by turn; the generation record (and a non-streamed response) carries each turn's start and end.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, Field, model_validator

from parla.audio.dsp import normalize_loudness, resample
from parla.audio.encode import AudioFormat
from parla.engines.base import AudioChunk, VoiceRef
from parla.engines.registry import EngineRegistry
from parla.errors import InvalidInputError, ParlaError
from parla.services.speech import Progress, Rendered, SpeechOptions, SpeechPlan, SpeechService
from parla.store.models import new_id
from parla.text.dialogue import (
    NONVERBAL_PAUSE_S,
    ROLE_SPEAKERS,
    DialogueSyntaxError,
    is_cue,
    parse_speaker_tags,
    split_cues,
)

TURN_LUFS = -23.0
"""Every turn is brought to this loudness (EBU R128), so speakers match; low enough that the
peak ceiling rarely has to cut a bright, peaky voice below it."""
SECOND_VOICES = ("nova", "onyx")
"""The voice S2 gets when a request names one voice only (the first that differs from S1's)."""


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
    parts: list[SpeechPlan | float]
    """Speech, and pauses (seconds) where nonverbal cues were."""
    start: float = 0.0
    end: float = 0.0


@dataclass
class DialoguePlan:
    turns: list[TurnPlan]
    pause_s: float
    record: SpeechPlan
    """Stands for the whole dialogue in the history (id, format, text, seed)."""
    timings: list[dict[str, Any]] = field(default_factory=list)

    @property
    def ignored(self) -> list[str]:
        """Parameters some turn's engine did not use."""
        return sorted(
            {
                name
                for turn in self.turns
                for part in turn.parts
                if isinstance(part, SpeechPlan)
                for name in part.ignored
            }
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
        """Every turn's speech planned, held to its engines' dialogue rules (Dia: two turns at
        least). ``resolved``: voices a dialect has resolved itself, by speaker (the model
        microservice API's voice files); ``request.voices`` then names them for the record."""
        resolved = resolved or {}
        raw = self._turns(request)
        if not raw:
            raise InvalidInputError("a dialogue needs at least one turn", param="turns")
        turns: list[TurnPlan] = []
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
                    parts.append(NONVERBAL_PAUSE_S)  # no built-in engine renders cues yet
                    continue
                options = SpeechOptions(
                    input=part,
                    voice=voice,
                    model=request.model,
                    response_format=request.response_format,
                    speed=request.speed,
                    seed=seed,
                    language=request.language,
                    instructions=request.instructions,
                    parameters=request.parameters,
                )
                try:
                    ref = None if explicit else resolved.get(speaker)
                    parts.append(self.speech.prepare(options, source=source, voice=ref, turn=True))
                except ParlaError as exc:
                    raise exc.within(f"turn {i}") from None
            if not any(isinstance(p, SpeechPlan) for p in parts):
                raise InvalidInputError(f"turn {i} has nothing to say besides cues", param="turns")
            turns.append(TurnPlan(speaker, voice, text, parts))
        return self._assemble(turns, pause_s=request.pause_s, model=request.model, source=source)

    def _assemble(self, turns: list[TurnPlan], *, pause_s: float, model: str | None, source: str) -> DialoguePlan:
        """The plan of prepared turns, held to its engines' dialogue rules. Its record, which
        stands for the whole dialogue in the history, takes the first turn's format, speed, seed
        and language."""
        plans = [p for t in turns for p in t.parts if isinstance(p, SpeechPlan)]
        for name in dict.fromkeys(p.engine for p in plans):
            fewest = self.engines.get(name).capabilities.min_dialogue_turns
            if len(turns) < fewest:
                raise InvalidInputError(
                    f"engine {name!r} needs at least {fewest} dialogue turns, got {len(turns)}", param="turns"
                )
        first = plans[0]
        transcript = "\n".join(f"[{t.speaker}] {t.text}" for t in turns)
        voices = ", ".join(dict.fromkeys(f"{t.speaker}={t.voice}" for t in turns))
        record = replace(
            first,
            id=new_id(),
            text=transcript,
            pieces=[],
            voice=VoiceRef(name=voices[:255]),
            model=model or "dialogue",
            instructions=None,
            parameters={"dialogue": True, "pause_s": pause_s},
            source=source,
        )
        return DialoguePlan(turns=turns, pause_s=pause_s, record=record)

    async def audio(self, plan: DialoguePlan, progress: Progress | None = None) -> AsyncGenerator[AudioChunk, None]:
        """Turn after turn, each loudness-matched, with pauses; fills in the turns' times.
        ``progress(turns done, turns)`` follows each turn."""
        rate = 0
        position = 0.0
        for index, turn in enumerate(plan.turns):
            pieces: list[np.ndarray] = []
            turn_rate = 0
            for part in turn.parts:
                if isinstance(part, float):
                    pieces.append(np.zeros(int(part * (turn_rate or 22050)), dtype=np.float32))
                    continue
                async for chunk in self.speech.audio(part):
                    if turn_rate and chunk.sample_rate != turn_rate:
                        chunk = AudioChunk(resample(chunk.samples, chunk.sample_rate, turn_rate), turn_rate)
                    turn_rate = turn_rate or chunk.sample_rate
                    pieces.append(chunk.samples)
            rate = rate or turn_rate
            audio = normalize_loudness(np.concatenate(pieces), turn_rate, TURN_LUFS)
            if turn_rate != rate:
                audio = resample(audio, turn_rate, rate)
            if index:
                gap = np.zeros(int(plan.pause_s * rate), dtype=np.float32)
                position += gap.size / rate
                yield AudioChunk(gap, rate)
            turn.start, turn.end = position, position + audio.size / rate
            position = turn.end
            plan.timings.append(
                {
                    "speaker": turn.speaker,
                    "voice": turn.voice,
                    "text": turn.text,
                    "start": round(turn.start, 3),
                    "end": round(turn.end, 3),
                }
            )
            yield AudioChunk(audio, rate)
            if progress:
                progress(index + 1, len(plan.turns))
        plan.record.parameters["turns"] = plan.timings

    def stream(self, plan: DialoguePlan, progress: Progress | None = None) -> AsyncGenerator[bytes, None]:
        """The encoded dialogue as each turn is ready; kept and recorded at the end."""
        return self.speech.stream(plan.record, audio=self.audio(plan, progress))

    async def render(self, plan: DialoguePlan, progress: Progress | None = None) -> Rendered:
        """The whole encoded dialogue at once (a WAV with its true sizes), kept and recorded."""
        return await self.speech.render(plan.record, audio=self.audio(plan, progress))
