"""Under load: 64 streams at once each come back saying their own text, and ``parla bench load``
drives mixed traffic with a key and reports it (both ``slow``)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import httpx
import pytest
from rich.console import Console

from tests.conftest import Listener, LiveServer, wer

pytestmark = pytest.mark.slow

SUBJECTS = [
    "the red boat",
    "a green lamp",
    "my old dog",
    "the tall tree",
    "a small cup",
    "the blue door",
    "her new car",
    "his warm coat",
]
VERBS = ["is near", "stood by", "was under", "sat beside"]
PLACES = ["the river", "the station", "the market", "the school"]


def texts(n: int) -> list[str]:
    """``n`` different short sentences (8 subjects x 4 verbs x 4 places)."""
    made = [f"{s} {v} {p}." for s in SUBJECTS for v in VERBS for p in PLACES]
    return [t[0].upper() + t[1:] for t in made[:n]]


@pytest.mark.model
def test_64_concurrent_streams_each_say_their_own_text(server: LiveServer, listener: Listener) -> None:
    sentences = texts(64)

    async def all_at_once() -> list[bytes]:
        limits = httpx.Limits(max_connections=64)
        async with httpx.AsyncClient(base_url=server.url, timeout=600, limits=limits) as client:

            async def one(text: str) -> bytes:
                body = {"model": "tts-1", "input": text, "voice": "joe", "response_format": "wav", "stream": True}
                parts = []
                async with client.stream("POST", "/v1/audio/speech", json=body) as response:
                    assert response.status_code == 200
                    async for part in response.aiter_bytes():
                        parts.append(part)
                return b"".join(parts)

            return await asyncio.gather(*(one(t) for t in sentences))

    results = asyncio.run(all_at_once())
    heard = [listener.transcribe(audio) for audio in results]
    for i, text in enumerate(sentences):
        own = wer(text, heard[i])
        # Each response closer to its own text than to any other's: nothing mixed or swapped.
        assert own < 0.5, (text, heard[i])
        closest = min(range(len(sentences)), key=lambda j: wer(sentences[j], heard[i]))
        assert wer(sentences[closest], heard[i]) == own, (text, heard[i], sentences[closest])


@pytest.mark.model
def test_bench_load_reports_mixed_traffic_with_a_key(tmp_path: Path) -> None:
    from parla.bench.load import parse_mix, run_load_bench

    console = Console(record=True, width=160)
    out = tmp_path / "load.json"
    result = run_load_bench(
        clients=4, seconds=4, mix=parse_mix("speech=1,transcription=1,voice=1,job=1"), console=console, json_path=out
    )
    text = console.export_text()
    assert "p95" in text and "server memory" in text
    assert json.loads(out.read_text())["clients"] == 4
    assert result["server_errors"] == 0
    for kind in ("speech", "transcription", "voice", "job"):
        statuses = result["kinds"][kind]["statuses"]
        assert statuses and all(200 <= int(s) < 300 for s in statuses), (kind, statuses)  # the key was accepted
    assert result["rss_mib"]["after"] > 0
    with pytest.raises(ValueError, match="KIND=WEIGHT"):
        parse_mix("speech=two")
