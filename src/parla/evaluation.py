"""Measuring cloned voices by the protocol of ``docs/cloning-evaluation.md``.

The judge is resemblyzer's speaker encoder: cosine similarity of utterance embeddings at 16 kHz.
It is imported here only, lazily, for ``parla bench clone`` and the tests; no engine may use it
(an engine tuned against its judge would only learn to fool it).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from parla.audio.decode import decode_audio
from parla.audio.dsp import resample

JUDGE_RATE = 16_000
TEST_SENTENCES = (
    "The birch canoe slid on the smooth planks.",
    "Glue the sheet to the dark blue background.",
    "It is easy to tell the depth of a well.",
)
"""Sentences that none of the development set's references contain."""


class Judge:
    """Speaker similarity with resemblyzer (``pip install 'parla[eval]'``)."""

    def __init__(self) -> None:
        try:
            from resemblyzer import VoiceEncoder
        except ImportError as exc:  # pragma: no cover - depends on the install
            raise RuntimeError("the judge needs the eval extra: pip install 'parla[eval]'") from exc
        self.encoder: Any = VoiceEncoder("cpu", verbose=False)

    def embed(self, samples: npt.NDArray[np.float32], rate: int) -> npt.NDArray[np.float32]:
        from resemblyzer import preprocess_wav

        wav = preprocess_wav(resample(samples, rate, JUDGE_RATE).astype(np.float32), source_sr=JUDGE_RATE)
        return np.asarray(self.encoder.embed_utterance(wav), dtype=np.float32)

    def embed_file(self, path: Path) -> npt.NDArray[np.float32]:
        samples, rate = decode_audio(path)
        return self.embed(samples, rate)

    @staticmethod
    def similarity(a: npt.NDArray[np.float32], b: npt.NDArray[np.float32]) -> float:
        return float(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b)))


def normalise_words(text: str) -> str:
    """Lowercased, punctuation and hyphens removed (the protocol's WER normalisation)."""
    text = text.lower().replace("-", " ")
    return re.sub(r"\s+", " ", re.sub(r"[^a-z0-9' ]", " ", text)).strip()


def word_error_rate(reference: str, hypothesis: str) -> float:
    import jiwer

    return float(jiwer.wer(normalise_words(reference), normalise_words(hypothesis) or "<nothing>"))


@dataclass(frozen=True)
class Speaker:
    """One development-set speaker: ``ref.wav`` (+ ``ref.txt``) to clone from, ``judge.wav`` to score."""

    name: str
    ref: Path
    transcript: str | None
    judge: Path

    @classmethod
    def load_all(cls, root: Path) -> list[Speaker]:
        speakers = []
        for folder in sorted(p for p in root.iterdir() if (p / "ref.wav").is_file() and (p / "judge.wav").is_file()):
            txt = folder / "ref.txt"
            transcript = txt.read_text(encoding="utf-8").strip() if txt.is_file() else None
            speakers.append(cls(folder.name, folder / "ref.wav", transcript, folder / "judge.wav"))
        return speakers
