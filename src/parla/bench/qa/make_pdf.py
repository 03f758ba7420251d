"""Writes ``railway.pdf``, the PDF knowledge base of the question-answering set, by hand.

No PDF library: one page of Helvetica text, one sentence or so per line, a blank line between
paragraphs so that ``pypdf`` gives the paragraphs back apart (parla.knowledge.documents splits a
page's text at blank lines). Run it again after editing ``PARAGRAPHS``:

    python src/parla/bench/qa/make_pdf.py
"""

from __future__ import annotations

from pathlib import Path

PARAGRAPHS = [
    [
        "The Brennmoor Mountain Railway runs from the town of Alder Cross up to Kestrel Peak.",
        "The line is 14 kilometres long and ends at the summit station.",
        "The railway opened in 1904.",
    ],
    [
        "The journey from Alder Cross to the summit takes 55 minutes.",
        "The first train leaves Alder Cross at half past eight (8:30) in the morning.",
        "A return ticket costs 38 francs.",
        "Trains do not run in January because of deep snow on the line.",
    ],
    [
        "The oldest locomotive of the railway is called Old Bramble.",
        "Old Bramble is painted maroon.",
        "The newest train, called the Snowfinch, is painted sky blue.",
    ],
    [
        "Halfway up, the line passes through the Gannet Tunnel, which is 610 metres long.",
        "The chief engineer of the railway is Rowena Hale.",
        "The summit station has a restaurant called The Eyrie.",
    ],
]
"""The facts, one sentence each; the test checks every answer against what pypdf reads back."""

FONT_SIZE = 11
LEADING = 16
LEFT = 72
TOP = 720
MAX_CHARS = 90  # Helvetica 11 pt is about 5.5 pt a character: 90 fit in 6.5 inches.


def _escape(line: str) -> str:
    return line.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")


def _lines(sentence: str) -> list[str]:
    """The sentence wrapped at spaces to at most ``MAX_CHARS`` a line."""
    lines: list[str] = []
    current = ""
    for word in sentence.split():
        if current and len(current) + 1 + len(word) > MAX_CHARS:
            lines.append(current)
            current = word
        else:
            current = f"{current} {word}" if current else word
    return [*lines, current] if current else lines


def content(paragraphs: list[list[str]]) -> bytes:
    """The page's content stream: each line a ``Tj`` after ``T*`` (next line), and an empty
    line between paragraphs."""
    ops = [f"BT /F1 {FONT_SIZE} Tf {LEADING} TL {LEFT} {TOP} Td"]
    first = True
    for paragraph in paragraphs:
        if not first:
            ops.append("T* ( ) Tj")  # the blank line that separates paragraphs
        for sentence in paragraph:
            for line in _lines(sentence):
                ops.append(f"({_escape(line)}) Tj" if first else f"T* ({_escape(line)}) Tj")
                first = False
    ops.append("ET")
    return "\n".join(ops).encode("latin-1")


def pdf(paragraphs: list[list[str]]) -> bytes:
    """A one-page PDF 1.4 file with the paragraphs, its cross-reference table at the byte offsets."""
    stream = content(paragraphs)
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R"
        b" /Resources << /Font << /F1 5 0 R >> >> >>",
        b"<< /Length %d >>\nstream\n" % len(stream) + stream + b"\nendstream",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /Encoding /WinAnsiEncoding >>",
        b"<< /Title (The Brennmoor Mountain Railway) /Producer (parla make_pdf.py) >>",
    ]
    out = bytearray(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % number + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % offset for offset in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R /Info 6 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, xref)
    return bytes(out)


def main() -> None:
    target = Path(__file__).with_name("railway.pdf")
    target.write_bytes(pdf(PARAGRAPHS))
    print(f"wrote {target}")


if __name__ == "__main__":
    main()
