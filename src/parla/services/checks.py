"""Hearing what was synthesised: each piece of a long text is checked by speech recognition against
its text, and a piece that came out wrong (garbled, truncated, words skipped) is spoken again.

Models slip on long inputs (Chatterbox, Dia and Kokoro servers all have threads about it); most
slips are one bad draw of the sampler, so the same piece with another seed is usually right. The
speech service asks ``PieceChecker.hear`` after each piece and keeps a ``CheckReport`` that the
generation's record carries.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from parla.audio.dsp import resample
from parla.services.transcription import RATE, Transcriber
from parla.text.normalize import normalize_text

_PHONEMES = re.compile(r"\[\[.*?\]\]", re.DOTALL)


def comparable_words(text: str, language: str) -> list[str]:
    """``text`` as words to compare: numbers and symbols spelt out as the engine was given them,
    lower case, no punctuation (so "42" heard and "forty-two" written are the same words)."""
    # Words given as phonemes ([[...]]) cannot be compared with what Whisper writes: left out.
    spelt = normalize_text(_PHONEMES.sub(" ", text), language).lower().replace("-", " ")
    return re.sub(r"[^\w' ]+", " ", spelt).split()


def word_error_rate(reference: list[str], hypothesis: list[str]) -> float:
    """Word edits (substitutions, insertions, deletions) to turn ``hypothesis`` into ``reference``,
    per reference word."""
    if not reference:
        return 0.0 if not hypothesis else 1.0
    row = list(range(len(hypothesis) + 1))
    for i, ref in enumerate(reference, start=1):
        diagonal, row[0] = row[0], i
        for j, hyp in enumerate(hypothesis, start=1):
            diagonal, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, diagonal + (ref != hyp))
    return row[-1] / len(reference)


@dataclass
class PieceResult:
    """How one checked piece came out: its final rendering's WER, the seeds tried."""

    index: int
    text: str
    heard: str
    wer: float
    tries: int
    flagged: bool
    first_wer: float
    """The first rendering's WER (the kept one's when it was spoken once)."""

    def describe(self) -> dict[str, Any]:
        return {
            "piece": self.index,
            "text": self.text,
            "heard": self.heard,
            "wer": round(self.wer, 3),
            "tries": self.tries,
            "flagged": self.flagged,
            "first_wer": round(self.first_wer, 3),
        }


@dataclass
class CheckReport:
    """What the checks found in one generation: filled on the engine's thread as pieces are made,
    read once the last is out (``SpeechService._record``)."""

    pieces: int = 0
    results: list[PieceResult] = field(default_factory=list)
    unchecked: str | None = None
    """Why pieces went unchecked (no recogniser for the language), if they did."""

    @property
    def retried(self) -> list[PieceResult]:
        return [r for r in self.results if r.tries > 1]

    def describe(self) -> dict[str, Any] | None:
        """The record's ``checks``: counts, the mean WER, and the pieces that were spoken again or
        stayed wrong (all of them would repeat the text)."""
        if not self.results and not self.unchecked:
            return None
        wers = [r.wer for r in self.results]
        return {
            "pieces": self.pieces,
            "checked": len(self.results),
            "retried": len(self.retried),
            "flagged": sum(r.flagged for r in self.results),
            "mean_wer": round(float(np.mean(wers)), 3) if wers else None,
            "max_wer": round(max(wers), 3) if wers else None,
            "details": [r.describe() for r in self.results if r.tries > 1 or r.flagged],
            **({"unchecked": self.unchecked} if self.unchecked else {}),
        }


MIN_ERRORS = 2
"""Fewest wrong words for a piece to count as wrong, whatever its rate: in a piece of two or three
words one word Whisper mishears ("Arms ache." heard as "Arms 8.") is a rate of a third or more, and
speaking it again changes nothing."""


@dataclass(frozen=True)
class Hearing:
    """What Whisper heard in one rendering of a piece, against the piece's text."""

    wer: float
    heard: str
    errors: int
    cer: float
    """The letters' error rate (spaces aside): low where Whisper only cut the words otherwise
    ("Nobody minded." heard as "Nobody mind it.": two words wrong, two letters)."""


class PieceChecker:
    """Whisper's hearing of one piece, compared with its text."""

    def __init__(self, transcriber: Transcriber, *, max_wer: float, tries: int) -> None:
        self.transcriber = transcriber
        self.max_wer = max_wer
        self.tries = tries

    def hear(self, samples: npt.NDArray[np.float32], rate: int, text: str, language: str) -> Hearing:
        """What Whisper hears in ``samples`` against ``text``. Raises ``InvalidInputError`` when no
        recogniser here knows ``language``."""
        audio = resample(samples, rate, RATE).astype(np.float32) if rate != RATE else samples
        # The whole piece, silence and all: the voice-activity filter would drop a mumbled word that
        # the comparison must see.
        heard = self.transcriber.transcribe(audio, language=language, vad=False).text
        said, words = comparable_words(text, language), comparable_words(heard, language)
        wer = word_error_rate(said, words)
        cer = word_error_rate(list("".join(said)), list("".join(words)))
        return Hearing(wer, heard, round(wer * max(1, len(said))), cer)

    def fails(self, hearing: Hearing) -> bool:
        """Wrong: more than ``max_wer`` of the words, at least ``MIN_ERRORS`` of them, and more than
        half as many of the letters (a slip of the model garbles sounds; a slip of the hearing
        mostly splits or joins words)."""
        return hearing.wer > self.max_wer and hearing.errors >= MIN_ERRORS and hearing.cer > self.max_wer / 2
