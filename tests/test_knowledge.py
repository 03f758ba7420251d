"""Knowledge bases: documents to passages, MiniLM embeddings in NumPy, search in Chroma."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from parla.knowledge.documents import PASSAGE_CHARS, DocumentError, passages
from parla.knowledge.embedder import Embedder
from parla.knowledge.store import KnowledgeBase


@pytest.fixture(scope="module")
def embedder() -> Embedder:
    return Embedder()


def test_embeddings_match_the_reference_model(embedder: Embedder) -> None:
    vectors = embedder.embed(
        ["A man is eating food.", "A man is eating a piece of bread.", "The girl is carrying a baby."]
    )
    assert vectors.shape == (3, 384)
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    # sentence-transformers documents 0.7553 for this pair with all-MiniLM-L6-v2.
    assert float(vectors[0] @ vectors[1]) == pytest.approx(0.7553, abs=0.002)
    assert float(vectors[0] @ vectors[2]) < 0.1
    # Padding in a batch changes nothing: each text alone gives the same vector.
    alone = embedder.embed(["The girl is carrying a baby."])
    assert np.allclose(alone[0], vectors[2], atol=1e-5)


def _pdf(text: str) -> bytes:
    """A one-page PDF with ``text`` (the smallest valid file pypdf reads text from)."""
    stream = f"BT /F1 12 Tf 72 720 Td ({text}) Tj ET".encode()
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R"
        b" /Resources << /Font << /F1 5 0 R >> >> >>",
        b"<< /Length %d >>\nstream\n" % len(stream) + stream + b"\nendstream",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for i, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % i + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % o for o in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, xref)
    return bytes(out)


def test_documents_of_every_kind_become_passages() -> None:
    txt = passages(b"First paragraph about bees.\n\nSecond paragraph about honey.", "notes.txt")
    assert txt == ["First paragraph about bees.\nSecond paragraph about honey."]
    # One topic per passage: each Markdown section apart, titled by its heading.
    md = passages(b"Intro.\n# Bees\nThey dance.\n\nThey sting.\n## Honey\nIt keeps.", "kb.md")
    assert md == ["Intro.", "Bees: They dance.\nThey sting.", "Honey: It keeps."]
    data = json.dumps({"city": {"name": "Lumen", "population": 2100000, "rivers": ["Ash", "Vell"]}}).encode()
    js = passages(data, "facts.json")
    assert "city: name: Lumen" in js[0] and "city: rivers: Ash, Vell" in js[0]
    assert (
        "The lighthouse keeper is called Morrow" in passages(_pdf("The lighthouse keeper is called Morrow"), "a.pdf")[0]
    )


def test_each_line_of_a_json_record_names_its_record() -> None:
    # A line is retrieved and read alone: "room: the Long Hall" must say whose room it is.
    data = json.dumps({"exhibits": [{"title": "The Sea Eagle", "room": "the Long Hall"}, {"room": "the attic"}]})
    lines = passages(data.encode(), "museum.json")[0].splitlines()
    assert lines == [
        "exhibits: title: The Sea Eagle",
        "exhibits: The Sea Eagle: room: the Long Hall",
        "exhibits: room: the attic",
    ]


def test_long_text_is_cut_into_overlapping_passages() -> None:
    sentence = "The tide comes in twice a day along the northern shore. "
    parts = passages((sentence * 60).encode(), "long.txt")
    assert len(parts) > 4 and all(len(p) <= PASSAGE_CHARS for p in parts)
    assert all(p.rstrip().endswith(".") for p in parts[:-1])


@pytest.mark.parametrize(
    ("data", "name", "reason"),
    [
        (b"", "empty.txt", "no text"),
        (b"\x00\x01\x02binary", "blob.txt", "binary"),
        (b"\xff\xfe\xfa", "latin.txt", "neither UTF-8"),
        (b'{"broken": ', "bad.json", "not valid"),
        (b"%PDF-1.4 garbage", "bad.pdf", "cannot be read"),
    ],
)
def test_unreadable_documents_say_why(data: bytes, name: str, reason: str) -> None:
    with pytest.raises(DocumentError, match=reason):
        passages(data, name)


def test_search_finds_the_passage_that_answers(tmp_path: Path, embedder: Embedder) -> None:
    kb = KnowledgeBase(path=tmp_path / "chroma", embedder=embedder)
    facts = (
        "The lighthouse on Gull Point was built in 1871 and is kept by Ada Morrow.\n\n"
        "The island's only bakery sells rye bread on Tuesdays.\n\n"
        "Ferries leave the harbour at seven in the morning and return at dusk."
    )
    assert kb.add("character-1", facts.encode(), "island.txt") >= 1
    kb.add("character-2", b"Nothing about lighthouses here, only trains.", "trains.txt")
    found = kb.search("character-1", "Who keeps the lighthouse?", k=1)
    assert "Ada Morrow" in found[0].text and found[0].source == "island.txt" and found[0].score > 0.3
    # A new client on the same folder (a restarted server) still has it.
    again = KnowledgeBase(path=tmp_path / "chroma", embedder=embedder)
    assert "Ada Morrow" in again.search("character-1", "lighthouse keeper", k=1)[0].text
    again.drop("character-1")
    assert again.search("character-1", "lighthouse keeper") == []
    assert again.count("character-2") == 1


@pytest.fixture
def chroma_server(tmp_path: Path) -> Iterator[str]:
    """A real Chroma server (the ``chroma`` program that the chromadb package installs)."""
    program = Path(sys.executable).parent / "chroma"
    if not program.exists():
        pytest.skip("the chroma server program is not installed")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        [str(program), "run", "--path", str(tmp_path / "server"), "--host", "127.0.0.1", "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{url}/api/v2/heartbeat", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert proc.poll() is None and time.monotonic() < deadline, "the Chroma server did not start"
            time.sleep(0.2)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_a_chroma_server_by_url_works_the_same(chroma_server: str, tmp_path: Path, embedder: Embedder) -> None:
    kb = KnowledgeBase(path=tmp_path / "unused", url=chroma_server, embedder=embedder)
    kb.add("character-7", b"The lighthouse keeper is Ada Morrow.\n\nTrains leave at noon.", "island.txt")
    assert "Ada Morrow" in kb.search("character-7", "Who keeps the lighthouse?", k=1)[0].text
    # Another API replica (another client) sees the same knowledge; nothing was written locally.
    other = KnowledgeBase(path=tmp_path / "unused", url=chroma_server, embedder=embedder)
    assert other.count("character-7") == 1
    assert not (tmp_path / "unused").exists()
    other.drop("character-7")
    assert kb.search("character-7", "lighthouse") == []
