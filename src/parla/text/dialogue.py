"""Dialogue text: speaker tags (``[S1] ... [S2] ...``), chat roles, and nonverbal cues.

Nonverbal cues are the Dia server API's set: ``(laughs)``, ``(sighs)``, ``(coughs)``, ``(gasps)``,
``(clears throat)``, ``(whispers)``, ``(shouts)``. An engine that can render them gets them in
its text; for any other they are taken out of what is spoken and become a short pause.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

NONVERBAL = ("laughs", "sighs", "coughs", "gasps", "clears throat", "whispers", "shouts")
NONVERBAL_PAUSE_S = 0.3
"""The pause a nonverbal cue becomes for an engine that cannot render it."""
ROLE_SPEAKERS = {"user": "S1", "assistant": "S2", "system": "S2"}
"""The Dia server API's mapping of chat roles to speaker tags."""

_TAG = re.compile(r"\[\s*[Ss](\d+)\s*\]")
_BROKEN_TAG = re.compile(r"\[\s*[Ss]\d*\s*(?!\d|\s|\])|\[\s*[Ss]\s*\]")
_CUE = re.compile(r"\((" + "|".join(re.escape(c) for c in NONVERBAL) + r")\)", re.IGNORECASE)


class DialogueSyntaxError(ValueError):
    """The dialogue text cannot be read; the message says where."""


@dataclass(frozen=True)
class Turn:
    speaker: str
    text: str


def parse_speaker_tags(text: str) -> list[Turn]:
    """``[S1] Hello. [S2] Hi!`` -> turns. Text before the first tag belongs to S1."""
    broken = _BROKEN_TAG.search(text)
    if broken:
        raise DialogueSyntaxError(
            f"malformed speaker tag at {text[broken.start() : broken.start() + 12]!r}: use [S1], [S2]"
        )
    parts = _TAG.split(text)
    turns = []
    lead = parts[0].strip()
    if lead:
        turns.append(Turn("S1", lead))
    for number, body in zip(parts[1::2], parts[2::2], strict=True):
        speaker = f"S{int(number)}"
        if not body.strip():
            raise DialogueSyntaxError(f"turn {len(turns) + 1} ([{speaker}]) has no text")
        turns.append(Turn(speaker, body.strip()))
    if not turns:
        raise DialogueSyntaxError("the dialogue has no text")
    return turns


def split_cues(text: str) -> list[str]:
    """Text and nonverbal cues in order: ``"Ha (laughs) yes"`` -> ``["Ha", "(laughs)", "yes"]``."""
    out = []
    position = 0
    for match in _CUE.finditer(text):
        before = text[position : match.start()].strip()
        if before:
            out.append(before)
        out.append(f"({match.group(1).lower()})")
        position = match.end()
    rest = text[position:].strip()
    if rest:
        out.append(rest)
    return out


def is_cue(part: str) -> bool:
    return bool(_CUE.fullmatch(part))
