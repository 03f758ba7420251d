"""Word timestamps for speech whose text is known: Whisper's forced alignment, and captions from it.

An engine that knows its durations (Piper) says when each word is heard; for the others the text
is known exactly, so there is nothing to recognise, only to place: the text's own tokens are aligned
with the audio by Whisper's cross-attention (``WhisperModel.find_alignment``, dynamic time warping
over the alignment heads), one encoder pass per 30-second window. A free transcription with word
timestamps would do worse twice over: it can mishear (and then its words no longer match the
text's), and it places words with the same alignment anyway.

Whisper's alignment alone is rough: it runs its words into each other (a word ends where the next
begins, across pauses too), and tiny.en places words some 60 ms late and scatters them around that
by as much again. So ``align_words`` refines it with what the audio itself shows (short-frame
energy): the pauses split the speech into stretches; Whisper says which stretch each word is in; a
stretch's first word starts where its speech starts and its last ends where it stops; and a boundary
inside a stretch lies halfway between Whisper's (its lag taken off) and the point that shares the
stretch among its words by their letters. Measured against Piper's own phoneme durations on 17
sentences (the model test in ``tests/test_alignment.py`` does the same on others), the mean error
of a word's start or end falls from 85 ms (Whisper alone) to 45 ms. Snapping boundaries to the
nearest pause edge or to the nearest energy dip, tried first, made it worse (a stop's closure is a
silence inside a word) or no better.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import numpy.typing as npt

from parla.audio.dsp import resample
from parla.engines.base import TimedWord
from parla.text.spoken import punctuation_after, spoken_tokens

if TYPE_CHECKING:
    from parla.services.transcription import Transcriber

RATE = 16_000
"""Whisper hears 16 kHz audio."""
WINDOW_S = 30.0
"""Whisper's encoder sees 30 seconds at a time."""
MAX_TOKENS = 440
"""Most text tokens aligned in one window: Whisper's decoder has 448 positions, the start sequence
and the end token among them."""
GUARD_S = 2.0
"""In a window that does not reach the end of the audio, the words aligned within this much of its
end are aligned again in the next window: they may belong to audio beyond it (the text given to a
window is an estimate, and alignment squeezes what does not fit into the window's last frames)."""

WHISPER_LAG_S = {"tiny.en": 0.07}
"""How late a model's alignment places words in connected speech, on average: measured against
Piper's durations (as the model test in ``tests/test_alignment.py`` does) on 17 sentences, where
it brings the bias of the refined times to about zero. Taken off before the refinement; a model not
named here is taken as it comes (the multilingual base places words early instead, by some 100 ms,
but only English was measured enough to correct)."""

HOP = 80
"""Energy frames of 5 ms at 16 kHz: a quarter of Whisper's 20 ms step."""
HOP_S = HOP / RATE
SILENCE_DB = 35.0
"""A frame this far below the speech's level (its 95th-percentile frame) is a pause."""
FLOOR_DB = -60.0
"""A frame below this (dBFS) is a pause however quiet the speech."""
MIN_PAUSE_S = 0.1
"""Shorter quiet stretches are a stop's closure inside speech, not a pause between words."""


def _chunks(text: str) -> list[tuple[str, str | None]]:
    """The text's pieces as written, each with the word a listener counts in it (``None``: none)."""
    return [(token, word) for token, word, _ in spoken_tokens(text)]


# -- the pauses in the audio --------------------------------------------------------------------------


@dataclass(frozen=True)
class _Pauses:
    """Which 5 ms frames of the audio are quiet enough to be a pause between words."""

    quiet: npt.NDArray[np.bool_]

    @classmethod
    def of(cls, audio: npt.NDArray[np.float32]) -> _Pauses:
        frames = audio.size // HOP
        if frames == 0:
            return cls(np.zeros(0, dtype=bool))
        power = np.square(audio[: frames * HOP].astype(np.float64)).reshape(frames, HOP).mean(axis=1)
        # each frame's level over 10 ms (itself and the next), so one quiet zero crossing is no pause
        power = np.maximum(power, np.append(power[1:], power[-1]))
        level = 10 * np.log10(power + 1e-12)
        speech = float(np.percentile(level, 95))
        return cls(level < max(FLOOR_DB, speech - SILENCE_DB))


def _runs(pauses: _Pauses) -> list[tuple[float, float]]:
    """The stretches of speech between pauses of at least ``MIN_PAUSE_S``, as (start, end) in seconds."""
    loud = np.flatnonzero(~pauses.quiet)
    if loud.size == 0:
        return []
    breaks = np.flatnonzero(np.diff(loud) - 1 >= MIN_PAUSE_S / HOP_S)
    firsts = np.concatenate([loud[:1], loud[breaks + 1]])
    lasts = np.concatenate([loud[breaks], loud[-1:]]) + 1
    return [(float(a) * HOP_S, float(b) * HOP_S) for a, b in zip(firsts, lasts, strict=True)]


def _refine(spans: list[list[float]], weights: Sequence[float], pauses: _Pauses) -> None:
    """Place the words on the audio's speech, in place: Whisper says which stretch of speech between
    pauses each word is in (by its middle); a stretch's first word starts where the speech does and
    its last ends where it stops; a boundary inside it lies halfway between Whisper's and the one that
    shares the stretch out among its words by their letters.

    Why: Whisper's alignment runs words into each other across pauses and is off by some 70 ms inside
    connected speech (tiny.en; measured against Piper's durations), while the pauses in the audio are
    exact and a word's share of its stretch follows its length closely; the mean of the two estimates
    errs less than either alone (the module's docstring has the numbers)."""
    runs = _runs(pauses)
    if not runs or not spans:
        return
    starts = np.array([a for a, _ in runs])
    ends = np.array([b for _, b in runs])
    owners: list[int] = []
    for start, end in spans:
        middle = (start + end) / 2
        r = min(int(np.searchsorted(ends, middle)), len(runs) - 1)
        if r > 0 and middle < starts[r] and middle - ends[r - 1] < starts[r] - middle:
            r -= 1  # in the pause before run r, nearer the run before it
        owners.append(max(r, owners[-1] if owners else 0))
    first = 0
    while first < len(spans):
        last = first
        while last + 1 < len(spans) and owners[last + 1] == owners[first]:
            last += 1
        run_start, run_end = runs[owners[first]]
        shares = np.cumsum([0.0, *weights[first : last + 1]])
        edges = run_start + (run_end - run_start) * shares / shares[-1]
        for k in range(first, last + 1):
            j = k - first
            begin = edges[j] if k == first else (spans[k][0] + edges[j]) / 2
            finish = edges[j + 1] if k == last else (spans[k][1] + edges[j + 1]) / 2
            spans[k][0], spans[k][1] = begin, finish
        first = last + 1
    for before, after in itertools.pairwise(spans):  # the means keep order; rounding may not
        after[0] = max(after[0], before[0])
        before[1] = max(before[0], min(before[1], after[1]))


# -- alignment -----------------------------------------------------------------------------------------


def _align_window(
    model: Any, tokenizer: Any, audio: npt.NDArray[np.float32], tokens: Sequence[Sequence[int]]
) -> list[tuple[float, float]]:
    """Each chunk's (start, end) in ``audio`` (at most 30 s), its tokens aligned with one encoder pass.

    Whisper groups tokens into words of its own (a word begins at a token with a leading space, and
    punctuation is a word by itself); every chunk's tokens begin with a space, so each of Whisper's
    words lies in one chunk, and a chunk's time is that of its words with a letter or digit (its
    punctuation's time is the pause after it, not the word)."""
    from faster_whisper.audio import pad_or_trim

    features = model.feature_extractor(audio)[:, :-1]  # as faster-whisper's transcribe: the padding frame off
    frames = int(features.shape[-1])
    encoded = model.encode(pad_or_trim(features))
    flat = [token for chunk in tokens for token in chunk]
    owner = [i for i, chunk in enumerate(tokens) for _ in chunk]
    spans: list[list[float]] = [[math.inf, -math.inf] for _ in tokens]
    fallback: list[list[float]] = [[math.inf, -math.inf] for _ in tokens]
    (alignment,) = model.find_alignment(tokenizer, [flat], encoded, frames)
    position = 0
    for word in alignment:
        chunk = owner[min(position, len(owner) - 1)]
        position += len(word["tokens"])
        target = spans if any(c.isalnum() for c in word["word"]) else fallback
        target[chunk][0] = min(target[chunk][0], float(word["start"]))
        target[chunk][1] = max(target[chunk][1], float(word["end"]))
    out: list[tuple[float, float]] = []
    previous = 0.0
    for span, spare in zip(spans, fallback, strict=True):
        if span[0] == math.inf:  # Whisper heard no letter in it (its tokenizer splits otherwise): all its tokens
            span = spare if spare[0] != math.inf else [previous, previous]
        start, end = max(span[0], previous), max(span[1], span[0], previous)
        out.append((start, end))
        previous = start
    return out


def _speech_seconds(pauses: _Pauses, start: float, end: float) -> float:
    lo, hi = int(start / HOP_S), int(end / HOP_S)
    return float(np.count_nonzero(~pauses.quiet[lo:hi])) * HOP_S


def align_words(
    transcriber: Transcriber,
    samples: npt.NDArray[np.float32],
    rate: int,
    text: str,
    language: str = "en",
    *,
    refine: bool = True,
) -> list[TimedWord]:
    """When each word of ``text`` (``spoken_words``) is heard in ``samples`` (mono, at ``rate``), in
    seconds from the start, rounded to milliseconds: one ``TimedWord`` per word, in order, as written.

    A forced alignment: ``text`` is taken to be what is said, and Whisper (the model the
    ``transcriber`` picks for ``language``: English on the bundled tiny.en) places its tokens in the
    audio. Audio over 30 seconds is aligned window by window, each window given the words its share
    of the speech should hold and the next starting after the last word placed with confidence.
    ``refine``: place the words on the speech the audio shows (the module's docstring); without it,
    Whisper's alignment as it comes (measuring only).
    Raises ``InvalidInputError`` for a language Whisper cannot hear."""
    chunks = [(raw, word) for raw, word in _chunks(text) if word is not None]
    if not chunks:
        return []
    audio = resample(np.asarray(samples, dtype=np.float32).reshape(-1), rate, RATE)
    duration = audio.size / RATE
    pauses = _Pauses.of(audio)
    spans: list[list[float]] = []
    with transcriber.whisper_for(language) as (name, model, spoken):
        from faster_whisper.tokenizer import Tokenizer

        multilingual = bool(model.model.is_multilingual)
        tokenizer = Tokenizer(
            model.hf_tokenizer, multilingual, task="transcribe", language=spoken if multilingual else None
        )
        tokens = [tokenizer.encode(" " + raw)[:MAX_TOKENS] for raw, _ in chunks]
        letters = [max(1, sum(c.isalnum() for c in word)) for _, word in chunks]
        begin, done = 0.0, 0
        while done < len(chunks):
            end = min(duration, begin + WINDOW_S)
            last = end >= duration
            # the words this window should hold: the remaining text's share of the remaining speech
            remaining = _speech_seconds(pauses, begin, duration)
            share = _speech_seconds(pauses, begin, end) / remaining if remaining > 0 else 1.0
            budget = sum(letters[done:]) * share * 1.25 + 1  # a margin: the words past it are aligned again
            count, used, held = 0, 0, 0
            while done + count < len(chunks):
                size = len(tokens[done + count])
                if count and (used + size > MAX_TOKENS or (not last and held >= budget)):
                    break
                used, held, count = used + size, held + letters[done + count], count + 1
            final = last and done + count == len(chunks)
            window = audio[int(begin * RATE) : int(end * RATE)]
            if window.size < RATE // 50:  # nothing left to hear (the windows before took it all)
                spans += [[begin, begin] for _ in range(len(chunks) - done)]
                break
            lag = WHISPER_LAG_S.get(name, 0.0) if refine else 0.0
            aligned = _align_window(model, tokenizer, window, tokens[done : done + count])
            placed = [(start - lag, stop - lag) for start, stop in aligned]
            keep = count
            if not final:
                keep = sum(1 for _, stop in placed if begin + stop <= end - GUARD_S) or 1
            spans += [[begin + start, begin + stop] for start, stop in placed[:keep]]
            done += keep
            begin = max(begin, spans[-1][1])
    if refine:
        _refine(spans, [float(n) for n in letters], pauses)
    timed = []
    for (raw, word), (start, stop) in zip(chunks, spans, strict=True):
        start = min(max(start, 0.0), duration)
        end = round(min(max(stop, start), duration), 3)
        timed.append(TimedWord(word or raw, round(start, 3), end, punctuation_after(raw, word)))
    return timed


# -- captions ------------------------------------------------------------------------------------------


CUE_GAP_S = 0.4
"""A pause this long between two words starts a new cue (words timed without their punctuation)."""
ENDS_CUE = frozenset(".!?;:…")
"""Punctuation after a word that ends its cue: a sentence's or a clause's end."""
MIN_WORDS_AT_COMMA = 4
"""A cue of this many words ends at a comma too, so that lines break where the speaker breathes."""


def _cues(words: Sequence[TimedWord], max_words: int, max_seconds: float) -> list[list[TimedWord]]:
    cues: list[list[TimedWord]] = []
    for word in words:
        cue = cues[-1] if cues else None
        if (
            cue is None
            or len(cue) >= max_words
            or word.start - cue[-1].end > CUE_GAP_S
            or word.end - cue[0].start > max_seconds
            or bool(ENDS_CUE & set(cue[-1].after))
            or ("," in cue[-1].after and len(cue) >= MIN_WORDS_AT_COMMA)
        ):
            cues.append([word])
        else:
            cue.append(word)
    return cues


def _timestamp(seconds: float, separator: str) -> str:
    millis = max(0, round(seconds * 1000))
    hours, millis = divmod(millis, 3_600_000)
    minutes, millis = divmod(millis, 60_000)
    secs, millis = divmod(millis, 1000)
    return f"{hours:02d}:{minutes:02d}:{secs:02d}{separator}{millis:03d}"


def captions(
    words: Sequence[TimedWord],
    fmt: Literal["srt", "vtt"],
    *,
    max_words: int = 7,
    max_seconds: float = 3.5,
) -> str:
    """Subtitles for timed words: cues of consecutive words, each written with the punctuation after
    it, a new cue after a sentence or clause (``ENDS_CUE``; a comma once a cue has
    ``MIN_WORDS_AT_COMMA`` words), after a pause of more than ``CUE_GAP_S``, or once a cue has
    ``max_words`` words or would last over ``max_seconds``. ``srt``: numbered cues with
    ``00:00:01,234 --> 00:00:02,345``; ``vtt``: WebVTT, its header and ``00:00:01.234 --> 00:00:02.345``."""
    if fmt not in ("srt", "vtt"):
        raise ValueError(f"captions are srt or vtt, not {fmt!r}")
    separator = "," if fmt == "srt" else "."
    blocks = []
    for number, cue in enumerate(_cues(words, max_words, max_seconds), start=1):
        start, end = cue[0].start, max(cue[-1].end, cue[0].start)
        timing = f"{_timestamp(start, separator)} --> {_timestamp(end, separator)}"
        line = " ".join(w.word + w.after for w in cue)
        blocks.append(f"{number}\n{timing}\n{line}\n" if fmt == "srt" else f"{timing}\n{line}\n")
    body = "\n".join(blocks)
    return body if fmt == "srt" else "WEBVTT\n\n" + body
