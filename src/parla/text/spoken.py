"""The words of a text as a listener counts them: what word timestamps and captions are given for.

Every way Parla times words (an engine's own durations, Whisper's alignment) times these words, so a
client gets the same list of words whichever engine spoke.
"""

from __future__ import annotations

import re
import unicodedata

_PHONEMES = re.compile(r"\[\[(.*?)\]\]", re.DOTALL)
"""IPA written between ``[[`` and ``]]`` (Piper's notation, SSML's ``<phoneme>``)."""


def _is_punctuation(char: str) -> bool:
    return unicodedata.category(char).startswith("P")


def _spoken(token: str) -> str | None:
    """``token`` without its surrounding punctuation, or ``None`` when nothing in it is said (no letter,
    no digit: a dash, an ellipsis)."""
    start, end = 0, len(token)
    while start < end and _is_punctuation(token[start]):
        start += 1
    while end > start and _is_punctuation(token[end - 1]):
        end -= 1
    word = token[start:end]
    return word if any(c.isalnum() for c in word) else None


def spoken_tokens(text: str) -> list[tuple[str, str | None, bool]]:
    """The text's whitespace-separated pieces as written, each with the word a listener counts in it
    (``None``: none) and whether it is written in phonemes: a block ``[[həlˈoʊ wˈɜːld]]`` is the
    words its spaces separate."""
    tokens: list[tuple[str, str | None, bool]] = []
    at = 0
    for block in _PHONEMES.finditer(text):
        tokens += [(t, _spoken(t), False) for t in text[at : block.start()].split()]
        tokens += [(t, t, True) for t in block.group(1).split()]
        at = block.end()
    return tokens + [(t, _spoken(t), False) for t in text[at:].split()]


def spoken_words(text: str) -> list[str]:
    """The words of ``text`` as a listener counts them, in order, as written: split on whitespace,
    surrounding punctuation stripped (inner apostrophes and hyphens kept: ``don't``, ``well-known``),
    pieces with no letter or digit dropped. ``"Hello, world -- it's 5 o'clock."`` is ``Hello``,
    ``world``, ``it's``, ``5``, ``o'clock``."""
    return [word for _, word, _ in spoken_tokens(text) if word is not None]


def punctuation_after(token: str, word: str | None) -> str:
    """The punctuation a token has after its word (``"out."`` -> ``"."``; none for a phoneme word)."""
    if not word or word not in token:
        return ""
    return token[token.rindex(word) + len(word) :]
