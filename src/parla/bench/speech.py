"""``parla bench speech``: the server against raw Piper, measured in one run.

Raw Piper runs in this process; the server runs as a child process (``parla serve``) so its
memory is its own. Measurements alternate between the two so that drift in machine load
cancels out instead of favouring one side.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from dataclasses import dataclass, field

import httpx
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from parla.audio.decode import decode_audio
from parla.bench.common import PCM_RATE, memory_mb, serve_in_child

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
    with serve_in_child() as (url, proc), httpx.Client() as client:
        _http_speech(client, url, SHORT, fmt, 0)
        rss_idle, _ = memory_mb(proc.pid)
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
        rss_seq, _ = memory_mb(proc.pid)

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
            rss_after.append(memory_mb(proc.pid)[0])
        _, rss_peak = memory_mb(proc.pid)

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
