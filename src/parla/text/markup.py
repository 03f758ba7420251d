"""Pauses and an SSML subset in the text to speak, as runs of text with a pause after each and a
speaking rate.

Plain text may carry pause tags: ``[pause:0.8]`` (seconds; ``[pause:800ms]``) and SSML's
``<break time="800ms"/>``. Text that starts with ``<speak>`` is SSML, of which Parla reads:
``speak``, ``p`` and ``s`` (paragraphs and sentences: a short pause after each), ``break`` (``time``
or ``strength``), ``say-as`` (``interpret-as`` characters / spell-out / digits / date, with
``format`` mdy, dmy or ymd), ``phoneme`` (``alphabet="ipa"``; engines that read phonemes only),
``prosody`` (``rate``: x-slow ... x-fast, a percentage or a factor) and ``sub`` (``alias``). Anything
else is refused, naming the line, rather than read aloud or skipped: an SSML document that is not
spoken as it says is not what was asked for.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass
from xml.parsers import expat

from parla.text.normalize import normalize_text

MAX_PAUSE_S = 10.0
"""Longest single pause: longer silences are not speech (and cost memory in every format)."""
PHONEME_OPEN, PHONEME_CLOSE = "[[", "]]"
"""How a run of IPA phonemes travels in the text, Piper's own notation for raw phonemes."""

_PAUSE_TAG = re.compile(r"\[pause:\s*([0-9]*\.?[0-9]+)\s*(ms|s)?\s*\]", re.IGNORECASE)
_BREAK_TAG = re.compile(r"<break\b([^>]*)/?>", re.IGNORECASE)
_STRENGTHS = {"none": 0.0, "x-weak": 0.1, "weak": 0.25, "medium": 0.4, "strong": 0.75, "x-strong": 1.2}
_RATES = {"x-slow": 0.6, "slow": 0.8, "medium": 1.0, "default": 1.0, "fast": 1.25, "x-fast": 1.5}
_PARAGRAPH_PAUSE_S, _SENTENCE_PAUSE_S = 0.6, 0.3
_DIGIT_NAMES = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]


class MarkupError(ValueError):
    """Markup that cannot be spoken as written; its message names the line."""


@dataclass
class Run:
    """Text to speak at one rate, then ``pause_after`` seconds of silence."""

    text: str
    pause_after: float = 0.0
    rate: float = 1.0


def has_markup(text: str) -> bool:
    return is_ssml(text) or bool(_PAUSE_TAG.search(text) or _BREAK_TAG.search(text))


def is_ssml(text: str) -> bool:
    """SSML, or an XML document (refused unless it is SSML), rather than text to read out."""
    return text.lstrip().lower().startswith(("<speak", "<?xml", "<!doctype"))


def parse(text: str) -> list[Run]:
    """The runs of ``text``: one for plain text without tags."""
    runs = _ssml(text) if is_ssml(text) else _tagged(text)
    merged: list[Run] = []
    for run in runs:
        run.text = re.sub(r"\s+", " ", run.text).strip()
        if run.text or not merged:
            merged.append(run)  # a text-less run first: the pause before everything
        else:
            merged[-1].pause_after += run.pause_after  # a pause after what came before
    for run in merged:
        run.pause_after = min(run.pause_after, MAX_PAUSE_S)
    return [run for run in merged if run.text or run.pause_after > 0] or [Run("")]


def _seconds(value: str, line: int | None = None) -> float:
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*(ms|s)?\s*", value, re.IGNORECASE)
    if match is None:
        raise MarkupError(f"{_where(line)}a pause of {value!r}: give seconds (1.5s) or milliseconds (800ms)")
    number = float(match.group(1))
    return number / 1000 if (match.group(2) or "s").lower() == "ms" else number


def _where(line: int | None) -> str:
    return f"line {line}: " if line is not None else ""


def _tagged(text: str) -> list[Run]:
    """Plain text with ``[pause:x]`` and ``<break .../>`` tags."""
    runs: list[Run] = []
    position = 0
    pattern = re.compile(f"{_PAUSE_TAG.pattern}|{_BREAK_TAG.pattern}", re.IGNORECASE)
    for match in pattern.finditer(text):
        line = text.count("\n", 0, match.start()) + 1
        if match.group(1) is not None:
            pause = _seconds(match.group(1) + (match.group(2) or "s"), line)
        else:
            pause = _break_seconds(dict(re.findall(r'([\w-]+)\s*=\s*"([^"]*)"', match.group(3) or "")), line)
        runs.append(Run(text[position : match.start()], pause))
        position = match.end()
    runs.append(Run(text[position:]))
    return runs


def _break_seconds(attributes: dict[str, str], line: int | None) -> float:
    if "time" in attributes:
        return _seconds(attributes["time"], line)
    strength = attributes.get("strength", "medium").lower()
    if strength not in _STRENGTHS:
        raise MarkupError(f"{_where(line)}<break strength={strength!r}>: one of {', '.join(_STRENGTHS)}")
    return _STRENGTHS[strength]


# -- SSML -----------------------------------------------------------------------------------------


def _ssml(text: str) -> list[Run]:
    if re.search(r"<!(DOCTYPE|ENTITY)", text, re.IGNORECASE):
        raise MarkupError("SSML with a DOCTYPE or entities is not read")
    try:
        root, lines = _parse_with_lines(text)
    except expat.ExpatError as error:
        reason = expat.ErrorString(error.code) if error.code else str(error)
        raise MarkupError(
            f"line {error.lineno}, column {error.offset + 1}: the SSML is not well-formed ({reason})"
        ) from None
    if _local(root.tag) != "speak":
        raise MarkupError(f"line 1: SSML starts with <speak>, not <{_local(root.tag)}>")
    runs = [Run("")]
    _Walk(lines).element(root, runs, rate=1.0)
    return runs


def _parse_with_lines(text: str) -> tuple[ET.Element, dict[int, int]]:
    """The tree, and the line each element starts on (by ``id``; ElementTree keeps none)."""
    lines: dict[int, int] = {}
    builder = ET.TreeBuilder()
    parser = expat.ParserCreate()

    def start(tag: str, attributes: dict[str, str]) -> None:
        lines[id(builder.start(tag, attributes))] = parser.CurrentLineNumber

    parser.StartElementHandler = start
    parser.EndElementHandler = builder.end
    parser.CharacterDataHandler = builder.data
    parser.Parse(text, True)
    return builder.close(), lines


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1].lower()


class _Walk:
    """The SSML tree to runs; ``lines``: where each element starts (by ``id``), for messages."""

    def __init__(self, lines: dict[int, int]) -> None:
        self.lines = lines

    def element(self, element: ET.Element, runs: list[Run], rate: float) -> None:
        name, line = _local(element.tag), self.lines.get(id(element))
        if name in ("speak", "p", "s"):
            _text(runs, element.text, rate)
            for child in element:
                self.element(child, runs, rate)
                _text(runs, child.tail, rate)
            if name != "speak":
                _pause(runs, _PARAGRAPH_PAUSE_S if name == "p" else _SENTENCE_PAUSE_S, rate)
            return
        if name == "break":
            _pause(runs, _break_seconds(dict(element.attrib), line), rate)
            return
        if name == "prosody":
            changed = _rate(element.attrib.get("rate", "medium"), line) * rate
            if set(element.attrib) - {"rate"}:
                other = sorted(set(element.attrib) - {"rate"})[0]
                raise MarkupError(f"{_where(line)}<prosody {other}=...>: only rate is read")
            runs.append(Run("", rate=changed))
            _text(runs, element.text, changed)
            for child in element:
                self.element(child, runs, changed)
                _text(runs, child.tail, changed)
            runs.append(Run("", rate=rate))
            return
        if list(element):
            raise MarkupError(f"{_where(line)}<{name}> holds other elements; it takes text only")
        inner = element.text or ""
        if name == "sub":
            if "alias" not in element.attrib:
                raise MarkupError(f'{_where(line)}<sub> needs alias="what to say"')
            _text(runs, element.attrib["alias"], rate)
        elif name == "say-as":
            _text(runs, _say_as(inner, element.attrib, line), rate)
        elif name == "phoneme":
            alphabet = element.attrib.get("alphabet", "ipa").lower()
            if alphabet != "ipa" or not element.attrib.get("ph"):
                raise MarkupError(f'{_where(line)}<phoneme> needs alphabet="ipa" and ph="..."')
            ph = element.attrib["ph"].replace("[", "").replace("]", "")
            _text(runs, f" {PHONEME_OPEN} {ph} {PHONEME_CLOSE} ", rate)
        else:
            raise MarkupError(
                f"{_where(line)}<{name}> is not in the SSML Parla reads: "
                "speak, p, s, break, say-as, phoneme, prosody, sub"
            )


def _text(runs: list[Run], text: str | None, rate: float) -> None:
    if not text:
        return
    if runs[-1].rate != rate or runs[-1].pause_after:
        runs.append(Run("", rate=rate))
    runs[-1].text += text


def _pause(runs: list[Run], seconds: float, rate: float) -> None:
    runs[-1].pause_after += seconds
    runs.append(Run("", rate=rate))


def _rate(value: str, line: int | None) -> float:
    value = value.strip().lower()
    if value in _RATES:
        return _RATES[value]
    match = re.fullmatch(r"([0-9]*\.?[0-9]+)(%?)", value)
    if match is None:
        raise MarkupError(f"{_where(line)}<prosody rate={value!r}>: x-slow ... x-fast, a percentage or a factor")
    factor = float(match.group(1)) / (100 if match.group(2) else 1)
    if not 0.25 <= factor <= 4.0:
        raise MarkupError(f"{_where(line)}<prosody rate={value!r}>: between 25% and 400%")
    return factor


def _say_as(text: str, attributes: dict[str, str], line: int | None) -> str:
    kind = attributes.get("interpret-as", "").lower()
    if kind in ("characters", "spell-out", "letters"):
        return " ".join(ch.upper() if ch.isalpha() else ch for ch in text if not ch.isspace())
    if kind == "digits":
        return " ".join(_DIGIT_NAMES[int(ch)] if ch.isdigit() else ch for ch in text if not ch.isspace())
    if kind == "date":
        return _date(text, attributes.get("format", "mdy").lower(), line)
    raise MarkupError(f"{_where(line)}<say-as interpret-as={kind!r}>: characters, spell-out, digits or date")


def _date(text: str, order: str, line: int | None) -> str:
    parts = re.split(r"[-/.\s]+", text.strip())
    if sorted(order) != ["d", "m", "y"] or len(parts) != 3 or not all(p.isdigit() for p in parts):
        raise MarkupError(
            f'{_where(line)}<say-as interpret-as="date"> reads d, m and y digits in the order format gives'
        )
    value = dict(zip(order, (int(p) for p in parts), strict=True))
    year = value["y"] + (2000 if value["y"] < 100 else 0)
    if not (1 <= value["m"] <= 12 and 1 <= value["d"] <= 31):
        raise MarkupError(f"{_where(line)}{text!r} is not a date in the order {order}")
    # The normaliser already reads ISO dates the way people say them.
    return normalize_text(f"{year:04d}-{value['m']:02d}-{value['d']:02d}")


# -- to pieces --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Pieces:
    """What to synthesise, in order: each piece's text, the silence after it and its rate."""

    texts: list[str]
    pauses: list[float]
    rates: list[float]
    lead: float = 0.0
    """Silence before the first piece (a pause at the very start)."""

    @property
    def has_phonemes(self) -> bool:
        return any(PHONEME_OPEN in text for text in self.texts)


_PHONEMES = re.compile(re.escape(PHONEME_OPEN) + r"(.*?)" + re.escape(PHONEME_CLOSE), re.DOTALL)
_HOLDER = 0xE000
"""Phoneme runs wait in the Unicode private-use area while the text is normalised and split: one
character each, a word to the splitter, untouched by the normaliser."""


def _split_keeping_phonemes(text: str, language: str) -> list[str]:
    from parla.text.split import split_for_speech

    held = [f"{PHONEME_OPEN} {m.group(1).strip()} {PHONEME_CLOSE}" for m in _PHONEMES.finditer(text)]
    numbered = iter(range(len(held)))
    holding = _PHONEMES.sub(lambda _: f" {chr(_HOLDER + next(numbered))} ", text)
    pieces = split_for_speech(normalize_text(holding, language))
    back = {chr(_HOLDER + i): phonemes for i, phonemes in enumerate(held)}
    return [re.sub("[\ue000-\uf8ff]", lambda m: back.get(m.group(0), ""), piece) for piece in pieces]


def speech_pieces(text: str, language: str = "en", rewrite: Callable[[str], str] | None = None) -> Pieces:
    """``text`` (plain, with pause tags, or SSML) normalised and split for synthesis; ``rewrite``
    (the pronunciation dictionary) is applied to what is said, never to the markup."""
    texts: list[str] = []
    pauses: list[float] = []
    rates: list[float] = []
    lead = 0.0
    for run in parse(text):
        said = rewrite(run.text) if rewrite is not None and run.text else run.text
        pieces = _split_keeping_phonemes(said, language) if said else []
        if not pieces:
            if texts:
                pauses[-1] += run.pause_after
            else:
                lead += run.pause_after
            continue
        texts += pieces
        rates += [run.rate] * len(pieces)
        pauses += [0.0] * (len(pieces) - 1) + [run.pause_after]
    return Pieces(texts, pauses, rates, lead)
