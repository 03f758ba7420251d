"""Knowledge-base files (TXT, Markdown, JSON, PDF) turned into passages a model can be given.

Passages follow the document's own structure (paragraphs, Markdown sections, JSON entries, PDF
pages), are kept near ``PASSAGE_CHARS`` long and overlap a little, so a fact cut at a boundary is
still whole in one of them.
"""

from __future__ import annotations

import io
import json
import re
from typing import Any

PASSAGE_CHARS = 600
OVERLAP_CHARS = 100
MAX_DOCUMENT_BYTES = 20 * 1024 * 1024


class DocumentError(ValueError):
    """The file cannot be read as a knowledge base; the message says why."""


def _text_of_json(value: Any, path: str = "") -> list[str]:
    """One line per leaf, with the keys that lead to it, so "population: 2.1 million" stays readable."""
    if isinstance(value, dict):
        return [line for key, item in value.items() for line in _text_of_json(item, f"{path}{key}: ")]
    if isinstance(value, list):
        if all(isinstance(item, str | int | float) for item in value):
            return [f"{path}{', '.join(str(v) for v in value)}"] if value else []
        return [line for item in value for line in _text_of_json(item, path)]
    return [f"{path}{value}"] if value is not None and str(value).strip() else []


def _text_of_pdf(data: bytes) -> list[str]:
    from pypdf import PdfReader
    from pypdf.errors import PdfReadError

    try:
        reader = PdfReader(io.BytesIO(data))
        return [page.extract_text() or "" for page in reader.pages]
    except (PdfReadError, ValueError, KeyError, OSError) as exc:
        raise DocumentError(f"the PDF cannot be read: {exc}") from None


def blocks(data: bytes, filename: str) -> list[str]:
    """The document's natural blocks of text, by its kind (from the file name, then the content)."""
    if len(data) > MAX_DOCUMENT_BYTES:
        raise DocumentError(f"the document is larger than {MAX_DOCUMENT_BYTES // (1024 * 1024)} MB")
    name = filename.lower()
    if name.endswith(".pdf") or data.startswith(b"%PDF"):
        return [b for page in _text_of_pdf(data) for b in re.split(r"\n\s*\n", page)]
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise DocumentError("the document is neither UTF-8 text, JSON nor PDF") from None
    if "\x00" in text:
        raise DocumentError("the document is binary, not text")
    if name.endswith(".json"):
        try:
            return _text_of_json(json.loads(text))
        except json.JSONDecodeError as exc:
            raise DocumentError(f"the JSON is not valid: {exc.msg} at line {exc.lineno}") from None
    if name.endswith((".md", ".markdown")):
        # A heading opens a block, so each section's facts stay together.
        return [b for section in re.split(r"\n(?=#{1,6}\s)", text) for b in re.split(r"\n\s*\n", section)]
    return re.split(r"\n\s*\n", text)


def passages(data: bytes, filename: str) -> list[str]:
    """Blocks joined or cut into passages of about ``PASSAGE_CHARS``, overlapping a little."""
    out: list[str] = []
    current = ""
    for block in (re.sub(r"[ \t]+", " ", b).strip() for b in blocks(data, filename)):
        if not block:
            continue
        while len(block) > PASSAGE_CHARS:  # one long block: cut at a sentence end, else a space
            half = PASSAGE_CHARS // 2
            cut = block.rfind(". ", half, PASSAGE_CHARS) + 1 or block.rfind(" ", half, PASSAGE_CHARS)
            cut = cut if cut > half else PASSAGE_CHARS
            out.append(block[:cut].strip())
            block = block[cut - OVERLAP_CHARS :].strip()  # cut > half > overlap: always progresses
        if current and len(current) + len(block) + 1 > PASSAGE_CHARS:
            out.append(current)
            current = ""
        current = f"{current}\n{block}" if current else block
    if current:
        out.append(current)
    if not out:
        raise DocumentError("the document has no text")
    return out
