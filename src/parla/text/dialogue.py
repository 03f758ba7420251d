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
_WORDY = re.compile(r"[^\W_]")
"""A letter or a digit: text without one has nothing to say."""
_LEADING_PUNCTUATION = re.compile(r"^[.,;:!?\u2026]+")
"""What ends the text before a cue when it comes right after it (``"Fine (laughs). Yes"``)."""
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
    """Text and nonverbal cues in order: ``"Ha (laughs) yes"`` -> ``["Ha", "(laughs)", "yes"]``.

    What is left between or after cues without a letter or a digit (the ``"."`` of ``"Fine, thank
    you (laughs)."``), or the punctuation that opens the text after a cue, says nothing on its own:
    it ends the text before the cue (``"Fine, thank you."``), or is dropped where that text ends in
    punctuation already or there is none."""
    out: list[str] = []
    position = 0
    for match in _CUE.finditer(text):
        _add_text(out, text[position : match.start()])
        out.append(f"({match.group(1).lower()})")
        position = match.end()
    _add_text(out, text[position:])
    return out


def _add_text(out: list[str], text: str) -> None:
    """``text`` as the next part of ``out``; punctuation that opens it, or all of it without words,
    onto the last text part instead (see ``split_cues``)."""
    text = text.strip()
    lead = _LEADING_PUNCTUATION.match(text)
    if not _WORDY.search(text):
        punctuation, text = text, ""
    elif lead:
        punctuation, text = lead.group(), text[lead.end() :].strip()
    else:
        punctuation = ""
    last = next((i for i in range(len(out) - 1, -1, -1) if not is_cue(out[i])), None)
    if punctuation and last is not None and _WORDY.match(out[last][-1]):
        out[last] += punctuation
    if text:
        out.append(text)


def script_line(text: str, *, cues: bool) -> str:
    """One turn's text as a line of a script that an engine speaks whole: its cues kept as text
    (``cues``: canonical, ``(laughs)``) or taken out, stray speaker tags taken out (the script's are
    its own), whitespace collapsed."""
    text = _TAG.sub(" ", text)
    if cues:  # where the writer put them: the engine renders them there
        text = _CUE.sub(lambda match: f"({match.group(1).lower()})", text)
    else:
        text = " ".join(part for part in split_cues(text) if not is_cue(part))
    return " ".join(text.split())


def is_cue(part: str) -> bool:
    return bool(_CUE.fullmatch(part))
