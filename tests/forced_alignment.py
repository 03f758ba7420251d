"""A forced alignment by synthesis, to check word timestamps against: the text is spoken by plain
Piper, whose word times are exact (its durations), and that rendering is aligned with the audio under
test by dynamic time warping of their cepstra (aeneas's method, with a better-timed reference).

It is independent of what it checks: it never sees the times the server gave, only the audio and the
words, and a timing slip in the server (a piece placed at the wrong offset, a pause not counted, the
crossfades forgotten) moves the server's times and not these.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from parla.audio import resample
from parla.engines.base import SynthesisRequest, TimedWord, VoiceRef
from parla.engines.piper import PiperEngine

RATE = 16_000
HOP = 160
"""10 ms frames."""
WINDOW = 400
MELS = 40
CEPSTRA = 13


def _cepstra(samples: npt.NDArray[np.float32], rate: int) -> npt.NDArray[np.float64]:
    """Mel cepstra per 10 ms, each coefficient normalised over the utterance (mean 0, variance 1),
    which takes away most of what differs between two voices saying the same sounds."""
    x = resample(samples.astype(np.float32), rate, RATE).astype(np.float64)
    x = np.concatenate([np.zeros(WINDOW // 2), x, np.zeros(WINDOW // 2)])
    frames = 1 + max(0, x.size - WINDOW) // HOP
    index = np.arange(WINDOW)[None, :] + HOP * np.arange(frames)[:, None]
    spectrum = np.abs(np.fft.rfft(x[index] * np.hanning(WINDOW), n=512)) ** 2
    mel = 2595 * np.log10(1 + np.linspace(0, RATE / 2, 257) / 700)
    edges = np.linspace(mel[0], mel[-1], MELS + 2)
    bank = np.maximum(
        0,
        np.minimum(
            (mel[None, :] - edges[:-2, None]) / (edges[1:-1, None] - edges[:-2, None]),
            (edges[2:, None] - mel[None, :]) / (edges[2:, None] - edges[1:-1, None]),
        ),
    )
    logmel = np.log(spectrum @ bank.T + 1e-10)
    n = np.arange(MELS)
    dct = np.cos(np.pi / MELS * (n[None, :] + 0.5) * np.arange(1, CEPSTRA + 1)[:, None])
    c = logmel @ dct.T
    normalised: npt.NDArray[np.float64] = (c - c.mean(axis=0)) / (c.std(axis=0) + 1e-9)
    return normalised


def _warp(a: npt.NDArray[np.float64], b: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """For each frame of ``a``, the frame of ``b`` it matches: dynamic time warping with the steps
    (1, 1), (1, 2) and (2, 1), so that each row depends only on the two before it (vectorised), and
    one rendering may be up to twice as fast as the other anywhere."""
    squared = (a**2).sum(axis=1)[:, None] + (b**2).sum(axis=1)[None, :] - 2 * a @ b.T
    cost = np.sqrt(np.maximum(squared, 0))
    n, m = cost.shape
    far = np.inf
    total = np.full((n, m), far)
    step = np.zeros((n, m), dtype=np.int8)
    total[0, 0] = cost[0, 0]
    for i in range(1, n):
        diagonal = np.full(m, far)
        diagonal[1:] = total[i - 1, :-1]
        wide = np.full(m, far)  # (1, 2): one frame of a, two of b
        wide[2:] = total[i - 1, :-2] + cost[i, 1:-1]
        tall = np.full(m, far)  # (2, 1): two frames of a, one of b
        if i >= 2:
            tall[1:] = total[i - 2, :-1] + cost[i - 1, 1:]
        choices = np.stack([diagonal, wide, tall])
        step[i] = np.argmin(choices, axis=0)
        total[i] = cost[i] + choices[step[i], np.arange(m)]
    matched = np.zeros(n)
    i, j = n - 1, int(np.argmin(total[-1] / (np.arange(m) + n)))  # the end of b may hold trailing silence
    while i > 0 and j > 0:
        matched[i] = j
        move = step[i, j]
        if move == 0:
            i, j = i - 1, j - 1
        elif move == 1:
            matched[i] = j - 0.5
            i, j = i - 1, j - 2
        else:
            matched[i - 1] = j
            i, j = i - 2, j - 1
    return matched


def forced_alignment(
    piper: PiperEngine, samples: npt.NDArray[np.float32], rate: int, words: Sequence[str]
) -> list[TimedWord]:
    """When each of ``words`` is said in ``samples``, found by aligning plain Piper saying them."""
    request = SynthesisRequest(text=" ".join(words), voice=VoiceRef("joe"), seed=0, timestamps=True)
    chunks = list(piper.synthesize(request))
    reference = np.concatenate([c.samples for c in chunks])
    placed, offset = [], 0.0
    for chunk in chunks:
        placed += [w.shifted(offset) for w in chunk.words]
        offset += chunk.duration
    assert [w.word for w in placed] == list(words), "Piper reads these words otherwise"
    matched = _warp(_cepstra(reference, chunks[0].sample_rate), _cepstra(samples, rate))

    def moved(seconds: float) -> float:
        frame = min(len(matched) - 1, max(0, round(seconds * RATE / HOP)))
        return round(float(matched[frame]) * HOP / RATE, 3)

    return [TimedWord(w.word, moved(w.start), moved(w.end)) for w in placed]
