"""Word timestamps by forced alignment (``parla.services.alignment``): the words a listener counts,
captions in SRT and WebVTT, and (``model``) the alignment measured against the truth Piper knows:
its own phoneme durations."""

from __future__ import annotations

import itertools
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
import pytest

from parla.engines.base import TimedWord
from parla.errors import InvalidInputError
from parla.services.alignment import _Pauses, _refine, align_words, captions
from parla.services.transcription import Transcriber
from parla.settings import Settings
from parla.text.spoken import spoken_words

# -- the words of a text --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("Hello, world -- it's 5 o'clock.", ["Hello", "world", "it's", "5", "o'clock"]),
        ("The well-known doctor; don't worry!", ["The", "well-known", "doctor", "don't", "worry"]),
        ("“Quoted,” she said (twice)...", ["Quoted", "she", "said", "twice"]),
        ("  spaced\tout\nlines  ", ["spaced", "out", "lines"]),
        ("... — !? --", []),
        ("", []),
        ("Say [[h ə l oʊ]] now.", ["Say", "h", "ə", "l", "oʊ", "now"]),
        ("Tomato[[təmˈɑːtoʊ]]s", ["Tomato", "təmˈɑːtoʊ", "s"]),
        ("Ünïcödé wörds, ça va?", ["Ünïcödé", "wörds", "ça", "va"]),
    ],
)
def test_spoken_words(text: str, words: list[str]) -> None:
    assert spoken_words(text) == words


def test_no_words_needs_no_model(tmp_path: Path) -> None:
    transcriber = Transcriber(Settings(_env_file=None, data_dir=tmp_path))
    assert align_words(transcriber, np.zeros(16_000, dtype=np.float32), 16_000, " -- ... ") == []
    assert not transcriber.loaded


def test_a_language_whisper_cannot_hear_is_refused(tmp_path: Path) -> None:
    transcriber = Transcriber(Settings(_env_file=None, data_dir=tmp_path))
    with pytest.raises(InvalidInputError):
        align_words(transcriber, np.zeros(16_000, dtype=np.float32), 16_000, "saluton mondo", language="eo")


def test_refinement_puts_words_on_the_speech() -> None:
    """Whisper's spans run into the silences around and between two stretches of speech; refined,
    each stretch's words start and end with it, and a boundary inside one stays where both estimates
    agree."""
    rate, rng = 16_000, np.random.default_rng(0)

    def speech(seconds: float) -> npt.NDArray[np.float32]:
        return (0.3 * rng.standard_normal(int(seconds * rate))).astype(np.float32)

    def quiet(seconds: float) -> npt.NDArray[np.float32]:
        return np.zeros(int(seconds * rate), dtype=np.float32)

    audio = np.concatenate([quiet(0.2), speech(0.6), quiet(0.3), speech(0.4), quiet(0.2)])
    spans = [[0.1, 0.5], [0.5, 1.0], [1.0, 1.6]]
    _refine(spans, [3.0, 3.0, 2.0], _Pauses.of(audio))
    assert spans == [
        pytest.approx([0.2, 0.5], abs=0.011),
        pytest.approx([0.5, 0.8], abs=0.011),
        pytest.approx([1.1, 1.5], abs=0.011),
    ]


# -- captions -------------------------------------------------------------------------------------

CUE = re.compile(r"^(\d{2}):(\d{2}):(\d{2})([,.])(\d{3}) --> (\d{2}):(\d{2}):(\d{2})([,.])(\d{3})$")


def _seconds(h: str, m: str, s: str, ms: str) -> float:
    return int(h) * 3600 + int(m) * 60 + int(s) + int(ms) / 1000


def _parse(text: str, fmt: Literal["srt", "vtt"]) -> list[tuple[float, float, str]]:
    """The cues of an SRT or WebVTT file, checking its syntax on the way."""
    if fmt == "vtt":
        assert text.startswith("WEBVTT\n\n")
        text = text.removeprefix("WEBVTT\n\n")
    assert text.endswith("\n") and not text.endswith("\n\n\n")
    cues = []
    for number, block in enumerate(text.strip("\n").split("\n\n"), start=1):
        lines = block.split("\n")
        if fmt == "srt":
            assert lines[0] == str(number), block
            lines = lines[1:]
        assert len(lines) == 2, block
        match = CUE.match(lines[0])
        assert match, lines[0]
        g = match.groups()
        assert g[3] == g[8] == ("," if fmt == "srt" else ".")
        cues.append((_seconds(g[0], g[1], g[2], g[4]), _seconds(g[5], g[6], g[7], g[9]), lines[1]))
    return cues


def _timed(text: str, pauses_after: Sequence[int] = (), step: float = 0.3) -> list[TimedWord]:
    words, t = [], 0.25
    for i, word in enumerate(spoken_words(text)):
        words.append(TimedWord(word, round(t, 3), round(t + step * 0.8, 3)))
        t += step + (0.8 if i in pauses_after else 0.0)
    return words


@pytest.mark.parametrize("fmt", ["srt", "vtt"])
def test_captions_are_standard_and_hold_every_word_once_in_order(fmt: Literal["srt", "vtt"]) -> None:
    text = (
        "The quick brown fox jumps over the lazy dog and keeps running through the field. "
        "Then it stops, looks back at the farmer, and disappears into the dark forest beyond the hill."
    )
    words = _timed(text, pauses_after=[14], step=0.31)
    cues = _parse(captions(words, fmt), fmt)
    assert " ".join(line for _, _, line in cues).split() == [w.word for w in words]
    previous_end = 0.0
    for start, end, line in cues:
        assert previous_end <= start <= end
        assert len(line.split()) <= 7 and end - start <= 3.5 + 1e-9
        previous_end = end
    # the pause after the fifteenth word ends a cue
    assert any(line.split()[-1] == "field" for _, _, line in cues)
    assert cues[0][0] == pytest.approx(0.25)


def test_captions_limits_and_hours() -> None:
    words = [TimedWord(f"w{i}", 3725.5 + i * 0.2, 3725.6 + i * 0.2) for i in range(10)]
    cues = _parse(captions(words, "srt", max_words=3), "srt")
    assert [len(line.split()) for _, _, line in cues] == [3, 3, 3, 1]
    assert captions(words, "srt", max_words=3).split("\n")[1] == "01:02:05,500 --> 01:02:06,000"
    short = _parse(captions(words, "vtt", max_seconds=0.5), "vtt")
    assert all(end - start <= 0.5 + 1e-9 for start, end, _ in short)
    assert captions([], "vtt") == "WEBVTT\n\n" and captions([], "srt") == ""


# -- measured against Piper's durations -----------------------------------------------------------


class PiperWithDurations:
    """The bundled Piper voice with its phoneme durations exposed (the graph's ``/Ceil`` output:
    frames of 256 samples per phoneme id), so that when each word is said is known exactly."""

    HOP = 256
    PUNCTUATION = frozenset(",.!?;:")

    def __init__(self) -> None:
        import onnx
        import onnxruntime

        from parla.engines.piper import PiperEngine, bundled_model, seedable_model

        self.engine = PiperEngine()
        self.engine.load()
        self.rate = self.engine.sample_rate
        graph, self.noise_inputs = seedable_model(bundled_model()[0])
        model = onnx.load_from_string(graph)
        model.graph.output.append(onnx.helper.make_tensor_value_info("/Ceil_output_0", onnx.TensorProto.FLOAT, None))
        self.session = onnxruntime.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])

    def _sentence(self, phonemes: list[str], seed: int) -> tuple[npt.NDArray[np.float32], list[tuple[float, float]]]:
        from parla.engines.piper import NOISE_CHANNELS, NOISE_FRAMES

        ids = self.engine.phonemes_to_ids(phonemes)
        rng = np.random.default_rng(seed)
        feeds: dict[str, Any] = {
            "input": np.array([ids], dtype=np.int64),
            "input_lengths": np.array([len(ids)], dtype=np.int64),
            "scales": np.array([0.667, 1.0, 0.8], dtype=np.float32),
        }
        for name in self.noise_inputs:
            feeds[name] = rng.standard_normal((1, NOISE_CHANNELS, NOISE_FRAMES), dtype=np.float32)
        audio, durations = self.session.run(["output", "/Ceil_output_0"], feeds)
        samples = np.asarray(audio, dtype=np.float32).reshape(-1)
        frames = np.asarray(durations).reshape(-1)
        assert frames.size == len(ids) and abs(frames.sum() * self.HOP - samples.size) < 2
        edges = np.concatenate([[0.0], np.cumsum(frames)]) * self.HOP / self.rate
        # ids: start, blank, then each phoneme followed by a blank, then end. A word is its phonemes
        # (each with its blank), from one space to the next; punctuation is a pause, not a word.
        words: list[list[float]] = []
        current: list[float] | None = None
        for j, phoneme in enumerate(phonemes):
            k = 2 + 2 * j
            if phoneme == " ":
                current = None
            elif phoneme not in self.PUNCTUATION:
                if current is None:
                    current = [float(edges[k]), float(edges[k + 2])]
                    words.append(current)
                current[1] = float(edges[k + 2])
        return samples * np.float32(0.89 / max(float(np.abs(samples).max()), 1e-6)), [(a, b) for a, b in words]

    def render(self, text: str, seed: int) -> tuple[npt.NDArray[np.float32], list[tuple[float, float]]]:
        """``text`` spoken sentence after sentence, with each word's (start, end) in seconds."""
        pieces, times, offset = [], [], 0.0
        for phonemes in self.engine.phonemes(text):
            audio, words = self._sentence(phonemes, seed)
            times += [(a + offset, b + offset) for a, b in words]
            pieces.append(audio)
            offset += audio.size / self.rate
        assert len(times) == len(spoken_words(text)), "espeak-ng reads another number of words"
        return np.concatenate(pieces), times


def mean_error(words: Sequence[TimedWord], truth: Sequence[tuple[float, float]]) -> float:
    """Mean absolute error of the words' starts and ends, in seconds."""
    assert len(words) == len(truth)
    return float(np.mean([abs(w.start - a) + abs(w.end - b) for w, (a, b) in zip(words, truth, strict=True)]) / 2)


HELD_OUT = [
    "Bright sunshine warmed the sleepy village square.",
    "Maria, please bring your notebook tomorrow morning.",
    "Could you open the window? It is far too warm in here.",
]
"""Sentences the refinement was not tuned on (it was tuned on others: see the module's docstring)."""


@pytest.mark.model
def test_alignment_matches_piper_durations(tmp_path: Path) -> None:
    piper = PiperWithDurations()
    transcriber = Transcriber(Settings(_env_file=None, data_dir=tmp_path))
    errors, whisper_only, shifted = [], [], []
    for seed, text in enumerate(HELD_OUT):
        audio, truth = piper.render(text, seed=seed)
        words = align_words(transcriber, audio, piper.rate, text)
        assert [w.word for w in words] == spoken_words(text)
        assert all(w.start <= w.end for w in words)
        assert all(a.start <= b.start and a.end <= b.end for a, b in itertools.pairwise(words))
        assert all(w.start == round(w.start, 3) and w.end <= audio.size / piper.rate + 0.02 for w in words)
        errors.append(mean_error(words, truth))
        whisper_only.append(mean_error(align_words(transcriber, audio, piper.rate, text, refine=False), truth))
        shifted.append(mean_error([w.shifted(0.3) for w in words], truth))
    error = float(np.mean(errors))
    assert error <= 0.05, f"mean error {error * 1000:.0f} ms (Whisper alone: {np.mean(whisper_only) * 1000:.0f} ms)"
    assert error < float(np.mean(whisper_only)), "the refinement should help"
    # the measure can fail: words 0.3 s off are far outside it
    assert float(np.mean(shifted)) > 0.05
