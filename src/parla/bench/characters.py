"""``parla bench characters``: a character's spoken answer through the server, streaming against
answer-then-speak, and the language model alone."""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass, field

import httpx
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from parla.audio.decode import decode_audio
from parla.bench.common import PCM_RATE, memory_mb, serve_in_child

CHARACTER_KNOWLEDGE = """# Marrow Island

Marrow Island lies forty kilometres off the coast. About three hundred people live there all year.

## The lighthouse

The lighthouse on Marrow Island was built in 1887 by the engineer Clara Voss. It is white with a
red lantern room, and its light can be seen from thirty kilometres away.

## The ferry

The ferry to Marrow Island leaves from Port Elsin every morning at seven o'clock. The crossing
takes two hours when the sea is calm.

## Wildlife

Blue puffins nest on the northern cliffs of the island every June. Grey seals rest on the southern
beaches in winter.
"""
CHARACTER_QUESTIONS = [
    "Who built the lighthouse on Marrow Island?",
    "When does the ferry leave Port Elsin?",
    "Tell me about the lighthouse and the ferry, please.",
]
"""Two one-sentence answers (nothing to speak before the text is done) and one longer answer."""


@dataclass
class AnswerTiming:
    first_token: list[float] = field(default_factory=list)
    first_audio: list[float] = field(default_factory=list)
    written: list[float] = field(default_factory=list)
    total: list[float] = field(default_factory=list)
    audio: list[float] = field(default_factory=list)


def _ask_streaming(client: httpx.Client, url: str, character_id: int, question: str) -> tuple[float, ...]:
    """(first token, first audio, text written, total, seconds of audio) of ``/ask-question-stream``."""
    import base64
    import json

    start = time.perf_counter()
    marks: dict[str, float] = {}
    pcm = 0
    body = {"character_id": character_id, "question": question}
    with client.stream("POST", f"{url}/ask-question-stream", json=body, timeout=300) as response:
        response.raise_for_status()
        for line in response.iter_lines():
            if not line.startswith("data:"):
                continue
            event = json.loads(line[5:])
            marks.setdefault(event["type"], time.perf_counter() - start)
            if event["type"] == "speech.audio.delta":
                pcm += len(base64.b64decode(event["audio"]))
            if event["type"] == "error":
                raise RuntimeError(event["detail"])
    total = time.perf_counter() - start
    return (
        marks["answer.delta"],
        marks.get("speech.audio.delta", total),
        marks["answer.done"],
        total,
        pcm / 2 / PCM_RATE,
    )


def _ask_whole(client: httpx.Client, url: str, character_id: int, question: str) -> tuple[float, ...]:
    """The Titans character API's way: ``/ask-question-text`` answers when everything is done, then the WAV is
    fetched. Its first audio is its total."""
    start = time.perf_counter()
    body = {"character_id": character_id, "question": question}
    answer = client.post(f"{url}/ask-question-text", json=body, timeout=300)
    answer.raise_for_status()
    written = time.perf_counter() - start
    wav = client.get(answer.json()["audio_url"], timeout=60).content
    total = time.perf_counter() - start
    samples, rate = decode_audio(wav)
    return written, total, written, total, samples.size / rate


def run_characters_bench(*, rounds: int, console: Console) -> None:
    """A character (embedded model, knowledge base, preset voice) answers through the server, by
    ``/ask-question-stream`` (speaking while thinking) and by ``/ask-question-text`` (answer, then
    audio), alternating; and the same model alone in this process, for the language model's share."""
    import json

    from parla.characters.llm import LlamaCppChat, LLMConfig
    from parla.characters.prompting import build_messages

    config = {"temperature": 0.0, "max_tokens": 120}
    results: dict[tuple[int, str], AnswerTiming] = {}
    with serve_in_child() as (url, proc), httpx.Client(timeout=300) as client:
        created = client.post(
            f"{url}/create-character",
            data={
                "name": "Keeper",
                "llm_config": json.dumps(config),
                "voice_cloning_settings": json.dumps({"voice": "nova"}),
            },
            files={"knowledge_base_file": ("marrow.md", CHARACTER_KNOWLEDGE.encode(), "text/markdown")},
        )
        created.raise_for_status()
        character_id = int(created.json()["character_id"])
        client.post(f"{url}/load-character", json={"character_id": character_id}, timeout=300).raise_for_status()
        # The model alone, given the same kind of prompt (the server's retrieval is not repeated here).
        raw = LlamaCppChat()
        raw.load(LLMConfig(**config))
        rss_idle, _ = memory_mb(proc.pid)
        with Progress(console=console, transient=True) as bar:
            task = bar.add_task("asking", total=rounds * len(CHARACTER_QUESTIONS) * 3)
            for r in range(rounds):
                for q, question in enumerate(CHARACTER_QUESTIONS):
                    order = ("stream", "whole") if r % 2 == 0 else ("whole", "stream")
                    for side in order:
                        ask = _ask_streaming if side == "stream" else _ask_whole
                        timing = results.setdefault((q, side), AnswerTiming())
                        first_token, first_audio, written, total, audio = ask(client, url, character_id, question)
                        timing.first_token.append(first_token)
                        timing.first_audio.append(first_audio)
                        timing.written.append(written)
                        timing.total.append(total)
                        timing.audio.append(audio)
                        bar.advance(task)
                    start = time.perf_counter()
                    first = 0.0
                    messages = build_messages(name="Keeper", question=question, passages=[], style_examples=[])
                    for _ in raw.stream(messages, LLMConfig(**config)):
                        first = first or time.perf_counter() - start
                    timing = results.setdefault((q, "model"), AnswerTiming())
                    timing.first_token.append(first)
                    timing.written.append(time.perf_counter() - start)
                    bar.advance(task)
        rss_after, rss_peak = memory_mb(proc.pid)

    def med(values: list[float]) -> str:
        return f"{statistics.median(values):.2f} s" if values else "-"

    table = Table(title=f"a spoken answer (medians of {rounds} rounds)")
    for col in ("question", "path", "first token", "first audio", "text written", "total", "audio"):
        table.add_column(col, justify="right")
    labels = {
        "stream": "/ask-question-stream (speaks while writing)",
        "whole": "/ask-question-text, then GET audio_url",
        "model": "the model alone in process (no retrieval, no speech)",
    }
    for q, question in enumerate(CHARACTER_QUESTIONS):
        for side in ("stream", "whole", "model"):
            t = results[(q, side)]
            table.add_row(
                question if side == "stream" else "",
                labels[side],
                med(t.first_token),
                med(t.first_audio),
                med(t.written),
                med(t.total),
                med(t.audio),
            )
    console.print(table)
    console.print(
        f"server RSS: {rss_idle:.0f} MiB with the character loaded, {rss_after:.0f} after, peak {rss_peak:.0f}"
    )
