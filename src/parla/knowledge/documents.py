"""Knowledge-base files (TXT, Markdown, JSON, PDF) turned into passages a model can be given.

Passages follow the document's own structure (paragraphs, Markdown sections, JSON entries, PDF
pages), are kept near ``PASSAGE_CHARS`` long and overlap a little, so a fact cut at a boundary is
still whole in one of them. A Markdown section never shares a passage with another one, and each
of its passages starts with the section's heading: one topic per passage is what makes retrieval
pick the right one, and what keeps a small model from answering from the wrong paragraph.
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


_RECORD_NAMES = ("name", "title", "id", "label")
"""Keys whose value names a record, in the order they are looked for."""


def _record_name(record: dict[str, Any]) -> str | None:
    for key in _RECORD_NAMES:
        if isinstance(record.get(key), str | int) and str(record[key]).strip():
            return str(record[key]).strip()
    return None


def _text_of_json(value: Any, path: str = "") -> list[str]:
    """One line per leaf, with the keys that lead to it, so "population: 2.1 million" stays readable.
    A record in a list also gives each of its lines its name ("exhibits: The Sea Eagle: room: the Long
    Hall"): a line is retrieved and read on its own, and "room: the Long Hall" alone is nobody's room."""
    if isinstance(value, dict):
        return [line for key, item in value.items() for line in _text_of_json(item, f"{path}{key}: ")]
    if isinstance(value, list):
        if all(isinstance(item, str | int | float) for item in value):
            return [f"{path}{', '.join(str(v) for v in value)}"] if value else []
        lines: list[str] = []
        for item in value:
            if not isinstance(item, dict) or (name := _record_name(item)) is None:
                lines += _text_of_json(item, path)
                continue
            for key, field in item.items():
                if key in _RECORD_NAMES and str(field).strip() == name:
                    lines.append(f"{path}{key}: {name}")
                else:
                    lines += _text_of_json(field, f"{path}{name}: {key}: ")
        return lines
    return [f"{path}{value}"] if value is not None and str(value).strip() else []


def _text_of_pdf(data: bytes) -> list[str]:
    from pypdf import PdfReader
    from pypdf.errors import PdfReadError

    try:
        reader = PdfReader(io.BytesIO(data))
        return [page.extract_text() or "" for page in reader.pages]
    except (PdfReadError, ValueError, KeyError, OSError) as exc:
        raise DocumentError(f"the PDF cannot be read: {exc}") from None


def sections(data: bytes, filename: str) -> list[tuple[str, list[str]]]:
    """The document's sections (a title, possibly empty, and its blocks of text), by its kind (from
    the file name, then the content). Only Markdown has more than one section."""
    if len(data) > MAX_DOCUMENT_BYTES:
        raise DocumentError(f"the document is larger than {MAX_DOCUMENT_BYTES // (1024 * 1024)} MB")
    name = filename.lower()
    if name.endswith(".pdf") or data.startswith(b"%PDF"):
        return [("", [b for page in _text_of_pdf(data) for b in re.split(r"\n\s*\n", page)])]
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise DocumentError("the document is neither UTF-8 text, JSON nor PDF") from None
    if "\x00" in text:
        raise DocumentError("the document is binary, not text")
    if name.endswith(".json"):
        try:
            return [("", _text_of_json(json.loads(text)))]
        except json.JSONDecodeError as exc:
            raise DocumentError(f"the JSON is not valid: {exc.msg} at line {exc.lineno}") from None
    if name.endswith((".md", ".markdown")):
        out = []
        for section in re.split(r"\n(?=#{1,6}\s)", "\n" + text):
            heading = re.match(r"#{1,6}\s+(.*)\n?", section.lstrip("\n"))
            title = heading.group(1).strip() if heading else ""
            body = section.lstrip("\n")[heading.end() :] if heading else section
            out.append((title, re.split(r"\n\s*\n", body)))
        return out
    return [("", re.split(r"\n\s*\n", text))]


def passages(data: bytes, filename: str) -> list[str]:
    """Each section's blocks joined or cut into passages of about ``PASSAGE_CHARS``, overlapping a
    little; a titled section's passages start with its title."""
    out: list[str] = []
    for title, section_blocks in sections(data, filename):
        head = f"{title}: " if title else ""
        size = PASSAGE_CHARS - len(head)
        current = ""
        for block in (re.sub(r"[ \t]+", " ", b).strip() for b in section_blocks):
            if not block:
                continue
            while len(block) > size:  # one long block: cut at a sentence end, else a space
                half = size // 2
                cut = block.rfind(". ", half, size) + 1 or block.rfind(" ", half, size)
                cut = cut if cut > half else size
                out.append(head + block[:cut].strip())
                block = block[cut - OVERLAP_CHARS :].strip()  # cut > half > overlap: always progresses
            if current and len(current) + len(block) + 1 > size:
                out.append(head + current)
                current = ""
            current = f"{current}\n{block}" if current else block
        if current:
            out.append(head + current)
    if not out:
        raise DocumentError("the document has no text")
    return out
