"""Splitting text into pieces a synthesiser can speak one at a time.

The first piece is kept short, cut at a clause boundary, so that the first audio of a long
answer is ready after a few words instead of after a whole sentence. Later pieces are whole
sentences (very long ones cut at clause, then word boundaries) so prosody stays natural.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

# A sentence ends at . ! ? or … (with closing quotes/brackets), followed by space; at a Chinese or
# Japanese full stop, exclamation or question mark, space or none (those scripts put none); or at a
# blank line. Spanish opening marks (¿ ¡) start the next sentence, so they stay with it.
_SENTENCE_END = re.compile(
    r"(?:(?<=[.!?…])|(?<=[.!?…][\"')\]]))\s+|(?:(?<=[。！？])|(?<=[。！？][」』）]))(?![」』）])\s*|\n\s*\n+"
)
_CLAUSE_END = re.compile(r"[,;:](?=\s)|[，、；：]|\s[—–-]\s")

FIRST_PIECE_WORDS = 6
"""A first sentence longer than this many words is cut at its first clause boundary after them."""
MAX_PIECE_CHARS = 400
"""No piece is longer than this; longer sentences are cut at clause, then word boundaries."""


def split_sentences(text: str) -> list[str]:
    pieces = (p.strip() for p in _SENTENCE_END.split(text))
    return [re.sub(r"\s+", " ", p) for p in pieces if p and re.search(r"\w", p)]


def _cut_long(sentence: str, max_chars: int) -> Iterator[str]:
    while len(sentence) > max_chars:
        window = sentence[: max_chars + 1]
        cuts = [m.end() for m in _CLAUSE_END.finditer(window) if m.end() > max_chars // 3]
        cut = cuts[-1] if cuts else window.rfind(" ")
        if cut <= 0:
            cut = max_chars
        head, sentence = sentence[:cut].strip(), sentence[cut:].strip()
        if head:
            yield head
    if sentence:
        yield sentence


def _cut_first(sentence: str, min_words: int) -> list[str]:
    """Cut at the first clause boundary that follows at least ``min_words`` words."""
    words = sentence.split()
    if len(words) <= min_words * 2:
        return [sentence]
    for match in _CLAUSE_END.finditer(sentence):
        head, tail = sentence[: match.end()].strip(), sentence[match.end() :].strip()
        if len(head.split()) >= min_words // 2 + 1 and len(tail.split()) >= 2:
            return [head, tail]
    return [sentence]


def split_for_speech(
    text: str, *, first_piece_words: int = FIRST_PIECE_WORDS, max_chars: int = MAX_PIECE_CHARS
) -> list[str]:
    """Pieces to synthesise in order: a short first one, then sentence-sized ones."""
    pieces: list[str] = []
    for sentence in split_sentences(text):
        pieces.extend(_cut_long(sentence, max_chars))
    if pieces:
        pieces[:1] = _cut_first(pieces[0], first_piece_words)
    return pieces
