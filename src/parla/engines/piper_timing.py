"""When each word is heard in Piper's audio, from the model's own durations.

Piper's VITS graph decides how many frames each phoneme id lasts (its ``Ceil`` output, exposed by
``piper.seedable_model``); the audio is exactly those frames. What remains is knowing which
phonemes belong to which word: espeak-ng reads a sentence as a whole, joining some words ("of the":
``ʌvðə``) and splitting others ("2024": four words), so each word is read alone too and those
readings are aligned, sound by sound, with the whole one (``locate_words``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from parla.engines.base import TimedWord

NOT_SOUNDS = frozenset(" ,.;:!?¡¿—–…\"'()-ˈˌ")
"""Symbols of espeak-ng's readings that are no sound of a word: spaces, punctuation (Piper makes a
pause of it, which belongs to no word) and stress marks (which differ between a word read alone and
in a sentence)."""
BOS, EOS, PAD = "^", "$", "_"
"""Piper's start, end and padding phonemes: ids are ``BOS PAD (phoneme PAD)* EOS``."""


@dataclass(frozen=True)
class WordPlace:
    """A word's phonemes in a reading: ``sentences[sentence][first..last]``. An empty span
    (``last < first``) is a word with no sound of its own in the reading, placed at ``first``."""

    word: str
    sentence: int
    first: int
    last: int
    after: str = ""
    """The punctuation written after the word (``TimedWord.after``)."""


def locate_words(
    words: Sequence[str], readings: Sequence[Sequence[str]], sentences: Sequence[Sequence[str]]
) -> list[WordPlace]:
    """Each of ``words`` (read alone as ``readings``) placed in ``sentences``, the reading of the
    whole text; empty when no word's sounds are found (nothing to time)."""
    whole = [(s, k) for s, sentence in enumerate(sentences) for k, p in enumerate(sentence) if p not in NOT_SOUNDS]
    parts = [w for w, reading in enumerate(readings) for p in reading if p not in NOT_SOUNDS]
    whole_sounds = [sentences[s][k] for s, k in whole]
    part_sounds = [p for reading in readings for p in reading if p not in NOT_SOUNDS]
    heard: dict[int, list[int]] = {}
    for i, j in align(whole_sounds, part_sounds):
        heard.setdefault(parts[j], []).append(i)
    found: list[WordPlace | None] = []
    for w, word in enumerate(words):
        if w not in heard:
            found.append(None)
            continue
        (s, first), (s_last, last) = whole[min(heard[w])], whole[max(heard[w])]
        if s_last != s:  # a word is one sentence's: it ends where its sentence does
            last = max(k for (t, k) in whole if t == s)
        found.append(WordPlace(word, s, first, last))
    if not any(found):
        return []
    places: list[WordPlace] = []
    for w, place in enumerate(found):
        if place is None:  # said with its neighbours: a moment between them
            before = places[-1] if places else None
            if before is not None:
                place = WordPlace(words[w], before.sentence, before.last + 1, before.last)
            else:
                after = next(p for p in found[w:] if p is not None)
                place = WordPlace(words[w], after.sentence, after.first, after.first - 1)
        places.append(place)
    return places


def align(a: Sequence[str], b: Sequence[str], band: int = 24) -> list[tuple[int, int]]:
    """The pairs ``(i, j)`` of a least-edits alignment of ``a`` with ``b`` where ``a[i]`` and
    ``b[j]`` stand for each other (equal or substituted), in order. The two readings of one text
    stay close to the diagonal, so only a band around it is searched: linear, not quadratic."""
    n, m = len(a), len(b)
    if not n or not m:
        return []
    width = band + abs(n - m)
    far = n + m + 1
    cost = [[far] * (m + 1) for _ in range(n + 1)]
    step = [[0] * (m + 1) for _ in range(n + 1)]  # 0: diagonal, 1: from above (skip a), 2: from left
    cost[0][0] = 0
    for j in range(1, min(m, width) + 1):
        cost[0][j], step[0][j] = j, 2
    for i in range(1, n + 1):
        centre = i * m // n
        if i <= width:
            cost[i][0], step[i][0] = i, 1
        for j in range(max(1, centre - width), min(m, centre + width) + 1):
            best = cost[i - 1][j - 1] + (a[i - 1] != b[j - 1])
            move = 0
            if cost[i - 1][j] + 1 < best:
                best, move = cost[i - 1][j] + 1, 1
            if cost[i][j - 1] + 1 < best:
                best, move = cost[i][j - 1] + 1, 2
            cost[i][j], step[i][j] = best, move
    pairs: list[tuple[int, int]] = []
    i, j = n, m
    while i > 0 and j > 0:
        move = step[i][j]
        if move == 0:
            pairs.append((i - 1, j - 1))
            i, j = i - 1, j - 1
        elif move == 1:
            i -= 1
        else:
            j -= 1
    return pairs[::-1]


def timed_words(
    places: Sequence[WordPlace],
    sentence: int,
    phonemes: Sequence[str],
    samples_per_id: npt.NDArray[np.int64],
    id_map: Mapping[str, Sequence[int]],
    rate: int,
) -> tuple[TimedWord, ...]:
    """The words of ``places`` in one sentence, timed from the start of its audio: a word lasts
    from its first phoneme's id to the padding after its last one. Nothing when the durations do
    not match the sentence's ids (a model that reads them otherwise)."""
    pad = len(id_map.get(PAD, ()))
    at = len(id_map.get(BOS, ())) + pad
    spans = []
    for phoneme in phonemes:
        size = len(id_map[phoneme]) + pad if phoneme in id_map else 0  # Piper skips unknown phonemes
        spans.append((at, at + size))
        at += size
    if at + len(id_map.get(EOS, ())) != samples_per_id.size or not spans:
        return ()
    edges = np.concatenate([[0], np.cumsum(samples_per_id)])

    def starts(k: int) -> float:
        return float(edges[spans[k][0]] if k < len(spans) else edges[spans[-1][1]]) / rate

    words = []
    for place in places:
        if place.sentence != sentence:
            continue
        start = starts(place.first)
        end = float(edges[spans[place.last][1]]) / rate if place.last >= place.first else start
        words.append(TimedWord(place.word, round(start, 3), round(end, 3), place.after))
    return tuple(words)
