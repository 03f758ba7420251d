"""``parla bench speech``: the server against raw Piper, measured in one run.

Raw Piper runs in this process; the server runs as a child process (``parla serve``) so its
memory is its own. Measurements alternate between the two so that drift in machine load
cancels out instead of favouring one side.
"""

from __future__ import annotations

import asyncio
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from parla.audio.decode import decode_audio
from parla.services.voices import VoiceCreate

SHORT = "The quick brown fox jumps over the lazy dog."
PARAGRAPH = (
    "When the sunlight strikes raindrops in the air, they act as a prism and form a rainbow. "
    "The rainbow is a division of white light into many beautiful colors. "
    "These take the shape of a long round arch, with its path high above, and its two ends "
    "apparently beyond the horizon."
)
LOAD_TEXTS = [
    "There is, according to legend, a boiling pot of gold at one end. People look, but no one ever finds it.",
    "When a man looks for something beyond his reach, his friends say he is looking for the pot of gold.",
    "Throughout the centuries people have explained the rainbow in various ways. Some have accepted it as a miracle.",
    "The Hebrews took it as a token that there would be no more universal floods. The Greeks had a different idea.",
    "Since then physicists have found that it is not reflection, but refraction by the raindrops.",
    "The difference in the rainbow depends considerably upon the size of the drops. Larger drops make brighter bows.",
    "The actual primary rainbow observed is said to be the effect of superimposition of a number of bows.",
    "If the red of the second bow falls upon the green of the first, the result is a bow with a wide yellow band.",
]
PCM_RATE = 24_000


@dataclass
class Timing:
    first: list[float] = field(default_factory=list)
    total: list[float] = field(default_factory=list)
    audio: list[float] = field(default_factory=list)

    def add(self, first: float, total: float, audio: float) -> None:
        self.first.append(first)
        self.total.append(total)
        self.audio.append(audio)

    @property
    def ttfa(self) -> float:
        return statistics.median(self.first)

    @property
    def elapsed(self) -> float:
        return statistics.median(self.total)

    @property
    def rtf(self) -> float:
        return statistics.median(t / a for t, a in zip(self.total, self.audio, strict=True))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _memory_mb(pid: int) -> tuple[float, float]:
    """(current RSS, peak RSS) of a process in MiB, from /proc."""
    values = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            values[key] = int(rest.split()[0]) / 1024
    return values["VmRSS"], values["VmHWM"]


@contextmanager
def _server() -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    port = _free_port()
    with tempfile.TemporaryDirectory(prefix="parla-bench-") as data:
        env = {**os.environ, "PARLA_DATA_DIR": data, "PARLA_LOG_LEVEL": "warning", "PARLA_DATABASE_URL": ""}
        proc = subprocess.Popen(
            [sys.executable, "-m", "parla", "serve", "--port", str(port)], env=env, stdin=subprocess.DEVNULL
        )
        url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 60
            while True:
                try:
                    if httpx.get(f"{url}/health", timeout=1).json().get("model_loaded"):
                        break
                except httpx.HTTPError:
                    pass
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("the server did not start")
                time.sleep(0.2)
            yield url, proc
        finally:
            proc.terminate()
            proc.wait(timeout=30)


def _http_speech(client: httpx.Client, url: str, text: str, fmt: str, seed: int) -> tuple[float, float, float]:
    """(time to first byte, total time, seconds of audio) of one streamed request."""
    start = time.perf_counter()
    first = 0.0
    parts = []
    # A new seed each time, so the server's audio varies as raw Piper's does from run to run.
    body = {"model": "tts-1", "input": text, "voice": "joe", "response_format": fmt, "seed": seed}
    with client.stream("POST", f"{url}/v1/audio/speech", json=body, timeout=120) as response:
        response.raise_for_status()
        for part in response.iter_bytes():
            if part and not first:
                first = time.perf_counter() - start
            parts.append(part)
    total = time.perf_counter() - start
    data = b"".join(parts)
    if fmt == "pcm":
        return first, total, len(data) / 2 / PCM_RATE
    samples, rate = decode_audio(data)
    return first, total, samples.size / rate


async def _concurrent_load(url: str, texts: list[str], fmt: str) -> tuple[float, list[float], list[float]]:
    """All texts requested at once from one event loop (a light client, so the measurement is
    of the server and not of client threads competing for the same cores).
    Returns (seconds of audio per wall second, latencies, times to first audio)."""

    async def one(client: httpx.AsyncClient, i: int) -> tuple[float, float, float]:
        start = time.perf_counter()
        first = 0.0
        size = 0
        body = {"model": "tts-1", "input": texts[i], "voice": "joe", "response_format": "pcm", "seed": i}
        async with client.stream("POST", f"{url}/v1/audio/speech", json=body, timeout=300) as response:
            response.raise_for_status()
            async for part in response.aiter_bytes():
                if part and not first:
                    first = time.perf_counter() - start
                size += len(part)
        return first, time.perf_counter() - start, size / 2 / PCM_RATE

    limits = httpx.Limits(max_connections=len(texts))
    async with httpx.AsyncClient(limits=limits) as client:
        start = time.perf_counter()
        results = await asyncio.gather(*(one(client, i) for i in range(len(texts))))
        wall = time.perf_counter() - start
    _ = fmt  # the load test always uses pcm: its length gives the audio seconds without decoding
    return sum(r[2] for r in results) / wall, [r[1] for r in results], [r[0] for r in results]


class _RawPiper:
    """Piper as its own package uses it, with nothing of Parla's in the way."""

    def __init__(self) -> None:
        from piper import PiperVoice

        from parla.engines.piper import bundled_model

        model, config = bundled_model()
        self.voice = PiperVoice.load(model, config_path=config)

    def speak(self, text: str) -> tuple[float, float, float]:
        start = time.perf_counter()
        first = 0.0
        samples = 0
        rate = 22050
        for chunk in self.voice.synthesize(text):
            if not first:
                first = time.perf_counter() - start
            samples += chunk.audio_float_array.size
            rate = chunk.sample_rate
        return first, time.perf_counter() - start, samples / rate


def run_speech_bench(*, rounds: int, clients: int, fmt: str, console: Console, load_runs_count: int = 3) -> None:
    console.print(f"[bold]parla bench speech[/bold]: {rounds} alternating rounds, {clients} clients, format {fmt}")
    raw = _RawPiper()
    raw.speak(SHORT)  # warm-up: first run allocates onnxruntime's arenas
    results: dict[tuple[str, str], Timing] = {}
    with _server() as (url, proc), httpx.Client() as client:
        _http_speech(client, url, SHORT, fmt, 0)
        rss_idle, _ = _memory_mb(proc.pid)
        with Progress(console=console, transient=True) as bar:
            task = bar.add_task("sequential", total=rounds * 4)
            for r in range(rounds):
                for name, text in (("short", SHORT), ("paragraph", PARAGRAPH)):
                    order = ("raw", "http") if r % 2 == 0 else ("http", "raw")
                    for side in order:
                        # onnxruntime's worker threads spin for a while after a run; without a pause the next
                        # measurement pays for the previous one's spinning.
                        time.sleep(0.05)
                        m = raw.speak(text) if side == "raw" else _http_speech(client, url, text, fmt, r)
                        results.setdefault((name, side), Timing()).add(*m)
                        bar.advance(task)
        rss_seq, _ = _memory_mb(proc.pid)

        # Throughput: raw Piper speaking the texts one after another (the best it does on a
        # small CPU) against `clients` simultaneous HTTP requests; twice, to see memory stay flat.
        texts = [LOAD_TEXTS[i % len(LOAD_TEXTS)] for i in range(clients)]
        start = time.perf_counter()
        raw_audio = sum(raw.speak(t)[2] for t in texts)
        raw_throughput = raw_audio / (time.perf_counter() - start)
        load_runs = []
        rss_after = []
        for _ in range(load_runs_count):
            throughput, latencies, firsts = asyncio.run(_concurrent_load(url, texts, fmt))
            load_runs.append((throughput, latencies, firsts))
            rss_after.append(_memory_mb(proc.pid)[0])
        _, rss_peak = _memory_mb(proc.pid)

    table = Table(title="single requests (median)", show_lines=False)
    for col in (
        "text",
        "raw first audio",
        "http first audio",
        "ratio",
        "raw total",
        "http total",
        "ratio",
        "raw RTF",
        "http RTF",
    ):
        table.add_column(col, justify="right")
    for name in ("short", "paragraph"):
        raw_t, http_t = results[(name, "raw")], results[(name, "http")]
        table.add_row(
            name,
            f"{raw_t.ttfa * 1000:.0f} ms",
            f"{http_t.ttfa * 1000:.0f} ms",
            f"{http_t.ttfa / raw_t.ttfa:.2f}x",
            f"{raw_t.elapsed * 1000:.0f} ms",
            f"{http_t.elapsed * 1000:.0f} ms",
            f"{http_t.elapsed / raw_t.elapsed:.2f}x",
            f"{raw_t.rtf:.3f}",
            f"{http_t.rtf:.3f}",
        )
    console.print(table)

    load = Table(title=f"{clients} concurrent clients")
    for col in ("run", "audio s / wall s", "vs raw sequential", "p50 latency", "p95 latency", "p50 first audio"):
        load.add_column(col, justify="right")
    load.add_row("raw Piper, sequential", f"{raw_throughput:.1f}", "1.00x", "-", "-", "-")
    for i, (throughput, latencies, firsts) in enumerate(load_runs, start=1):
        lat = sorted(latencies)
        load.add_row(
            f"http #{i}",
            f"{throughput:.1f}",
            f"{throughput / raw_throughput:.2f}x",
            f"{statistics.median(lat):.2f} s",
            f"{lat[min(len(lat) - 1, round(0.95 * (len(lat) - 1)))]:.2f} s",
            f"{statistics.median(firsts):.2f} s",
        )
    console.print(load)

    mem = Table(title="server memory (RSS, MiB)")
    heads = [
        "idle (model loaded)",
        "after sequential",
        *[f"after load #{i}" for i in range(1, len(rss_after) + 1)],
        "peak",
    ]
    for col in heads:
        mem.add_column(col, justify="right")
    mem.add_row(*(f"{v:.0f}" for v in (rss_idle, rss_seq, *rss_after, rss_peak)))
    console.print(mem)


@dataclass
class CloneRow:
    speaker: str
    ref_seconds: float
    adapt_per_10s: float
    sim_plain: float
    sim: float
    margin: float
    wer_plain: float
    wer: float
    rtf: float


def run_clone_bench(
    root: Path, *, console: Console, speakers_limit: int | None = None, only: list[str] | None = None
) -> list[CloneRow]:
    """Clone the speakers under ``root`` (the development-set layout) and score them with the judge.
    Margins are against every speaker's judge clip, also when only some speakers are cloned."""
    import numpy as np

    from parla.audio.dsp import resample
    from parla.evaluation import TEST_SENTENCES, Judge, Speaker, word_error_rate
    from parla.services import Services
    from parla.settings import Settings

    everyone = Speaker.load_all(root)
    speakers = [s for s in everyone if only is None or s.name in only][:speakers_limit]
    if not speakers:
        raise SystemExit(f"no speakers (folders with ref.wav and judge.wav) under {root}")
    judge = Judge()
    judged = {s.name: judge.embed_file(s.judge) for s in everyone}
    rows: list[CloneRow] = []
    with tempfile.TemporaryDirectory(prefix="parla-bench-clone-") as data:
        services = Services.build(Settings(data_dir=Path(data), database_url=None, _env_file=None))
        try:
            clone = services.engines.get("clone")
            clone.load()

            def speak(voice: str, model: str) -> tuple[list[Any], float, float]:
                outputs, elapsed, seconds = [], 0.0, 0.0
                for sentence in TEST_SENTENCES:
                    plan = services.speech.prepare(text=sentence, voice=voice, model=model, fmt="wav", seed=1)
                    start = time.perf_counter()
                    audio = np.concatenate([c.samples for c in plan.synthesize()])
                    elapsed += time.perf_counter() - start
                    seconds += audio.size / plan.engine.capabilities.sample_rate
                    outputs.append((sentence, audio, plan.engine.capabilities.sample_rate))
                return outputs, elapsed, seconds

            def score(outputs: list[Any], speaker: str) -> tuple[float, float, float]:
                sims, margins, wers = [], [], []
                for sentence, audio, rate in outputs:
                    embedding = judge.embed(audio, rate)
                    own = judge.similarity(embedding, judged[speaker])
                    others = [judge.similarity(embedding, e) for name, e in judged.items() if name != speaker]
                    sims.append(own)
                    margins.append(own - max(others) if others else 0.0)
                    # the protocol's Whisper: the whole clip, no VAD in front
                    heard = services.transcriber.transcribe(
                        resample(audio, rate, 16_000), language="en", vad=False
                    ).text
                    wers.append(word_error_rate(sentence, heard))
                return float(np.mean(sims)), float(np.mean(margins)), float(np.mean(wers))

            plain, _, _ = speak("joe", "piper")
            with Progress(console=console, transient=True) as bar:
                task = bar.add_task("cloning", total=len(speakers))
                for speaker in speakers:
                    ref_audio, ref_rate = decode_audio(speaker.ref)
                    start = time.perf_counter()
                    voice = services.voices.create(VoiceCreate(name=speaker.name))
                    services.voices.add_sample(voice.id, speaker.ref.read_bytes(), speaker.transcript)
                    clone.prepare_voice(services.voices.resolve(voice.id))
                    adapt = time.perf_counter() - start
                    outputs, elapsed, seconds = speak(voice.id, "clone")
                    sim, margin, wer = score(outputs, speaker.name)
                    sim_plain, _, wer_plain = score(plain, speaker.name)
                    ref_seconds = ref_audio.size / ref_rate
                    rows.append(
                        CloneRow(
                            speaker.name,
                            ref_seconds,
                            adapt / ref_seconds * 10,
                            sim_plain,
                            sim,
                            margin,
                            wer_plain,
                            wer,
                            elapsed / seconds,
                        )
                    )
                    bar.advance(task)
        finally:
            services.close()

    table = Table(title=f"voice cloning on {root} (judge: resemblyzer; {len(TEST_SENTENCES)} sentences each)")
    for col in (
        "speaker",
        "ref s",
        "adapt s / 10 s ref",
        "SIM plain",
        "SIM clone",
        "margin",
        "WER plain",
        "WER clone",
        "RTF",
    ):
        table.add_column(col, justify="right")

    def cells(r: CloneRow) -> list[str]:
        return [
            f"{r.ref_seconds:.1f}",
            f"{r.adapt_per_10s:.2f}",
            f"{r.sim_plain:.3f}",
            f"{r.sim:.3f}",
            f"{r.margin:+.3f}",
            f"{r.wer_plain:.3f}",
            f"{r.wer:.3f}",
            f"{r.rtf:.3f}",
        ]

    for row in rows:
        table.add_row(row.speaker, *cells(row))
    mean = CloneRow(
        "mean",
        *(float(np.mean([getattr(r, f) for r in rows])) for f in CloneRow.__dataclass_fields__ if f != "speaker"),
    )
    table.add_row("[bold]mean[/bold]", *cells(mean))
    console.print(table)
    return rows


# -- parla bench characters -------------------------------------------------------------------------

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
    with _server() as (url, proc), httpx.Client(timeout=300) as client:
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
        rss_idle, _ = _memory_mb(proc.pid)
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
        rss_after, rss_peak = _memory_mb(proc.pid)

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
