"""``parla bench speech``: the server against raw Piper, measured in one run.

Raw Piper runs in this process; the server runs as a child process (``parla serve``) so its
memory and CPU time are its own. Each voice (plain Piper ``joe``, a preset such as ``alloy``, a
voice cloned at the start of the run through the API) is asked for a paragraph in each format,
and raw Piper speaks the same paragraph beside it, in alternating order, so that drift in machine
load cancels out instead of favouring one side. The ratios to raw Piper are checked against the
targets below; CPU seconds per request (from ``/proc``) barely move when other work shares the
machine, and the load average says when the wall-clock figures were taken on a busy one.
"""

from __future__ import annotations

import asyncio
import datetime
import json
import math
import os
import statistics
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console
from rich.markup import escape
from rich.progress import Progress
from rich.table import Table

from parla.audio.decode import decode_audio
from parla.bench.common import PCM_RATE, cpu_count, cpu_seconds, machine_busy_seconds, memory_mb, serve_in_child
from parla.settings import Settings

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

CLONED = "cloned"
"""The name ``--voices`` gives the library voice cloned at the start of the run."""
DEFAULT_VOICES = ("joe", "alloy", CLONED)
DEFAULT_FORMATS = ("pcm", "wav", "mp3")

# The targets, as ratios to raw Piper measured in the same run (medians).
TTFA_LIMIT = 1.0
"""First audio of a paragraph against raw Piper's first sentence of it, for every voice and format."""
TOTAL_LIMITS = {"plain": 1.10, "preset": 1.10, "cloned": 1.20}
"""Total time of a paragraph, by kind of voice."""
THROUGHPUT_LIMIT = 1.0
"""Audio seconds per wall second with concurrent clients, at least this times raw sequential Piper's."""
LOAD_LATENCY_LIMIT = 1.0
"""p50 latency with concurrent clients, at most this times raw sequential Piper's."""
RSS_START_LIMIT_MB = 300.0
RSS_LOAD_LIMIT_MB = 400.0
"""Server memory right after start and after the load runs, in MB (10^6 bytes)."""
FLAT_GROWTH_MIB = 16.0
"""Memory is flat when a later pass of load runs leaves the server at most this much bigger than the first."""
MIB_PER_MB = 1e6 / 2**20

IDLE_MARGIN_S = 2.0
"""Waited beyond PARLA_ENGINE_IDLE_TRIM_S before reading the idle server's memory."""
SETTLE_S = 0.1
"""Pause after each measurement, counted in its CPU time but not in its wall time: onnxruntime's
threads spin for a while after a run, and the server records the generation after the response;
without it the next measurement would pay for this one."""

# Development speakers with a transcript (no Whisper needed), the first found is cloned.
DEV_SPEAKERS = ("flite_slt", "festival_cmu_us_slt_arctic_hts", "flite_rms", "flite_awb")


def _median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else math.nan


def _p95(values: Sequence[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))] if ordered else math.nan


def _ratio(a: float, b: float) -> float:
    return a / b if b > 0 else math.nan


@dataclass
class Sample:
    """One synthesis: time to first audio, total time, seconds of audio, CPU seconds."""

    first: float
    total: float
    audio: float
    cpu: float


@dataclass
class Series:
    samples: list[Sample] = field(default_factory=list)

    def median(self, name: str) -> float:
        return _median([getattr(s, name) for s in self.samples])

    def summary(self) -> dict[str, Any]:
        return {
            "ttfa_s": self.median("first"),
            "total_s": self.median("total"),
            "audio_s": self.median("audio"),
            "cpu_s": self.median("cpu"),
            "rtf": _median([s.total / s.audio for s in self.samples if s.audio > 0]),
            "samples": [asdict(s) for s in self.samples],
        }


@dataclass
class LoadRun:
    """A batch of requests: all at once to the server, or one after another to raw Piper (each
    request's latency and first audio then counted from the start of the batch, as a server that
    served them in turn would give them)."""

    throughput: float
    latencies: list[float]
    firsts: list[float]
    cpu: float
    audio: float
    wall: float

    def summary(self) -> dict[str, Any]:
        return {
            "audio_s_per_wall_s": self.throughput,
            "p50_latency_s": _median(self.latencies),
            "p95_latency_s": _p95(self.latencies),
            "p50_ttfa_s": _median(self.firsts),
            "cpu_s_per_request": self.cpu / max(1, len(self.latencies)),
            "audio_s": self.audio,
            "wall_s": self.wall,
            "latencies_s": self.latencies,
            "ttfas_s": self.firsts,
        }


class _AudioStart:
    """Says when a response's bytes first hold audio: the WAV header and an mp3's ID3 tag are not."""

    def __init__(self, fmt: str) -> None:
        self.fmt = fmt
        self.head = b""

    def feed(self, part: bytes) -> bool:
        self.head += part
        if self.fmt == "wav":
            at = self.head.find(b"data")
            return at >= 0 and len(self.head) > at + 8
        if self.fmt == "mp3" and self.head[:3] == b"ID3":
            if len(self.head) < 10:
                return False
            size = sum((b & 0x7F) << (7 * (3 - i)) for i, b in enumerate(self.head[6:10]))
            return len(self.head) > 10 + size
        return bool(self.head)


def _audio_seconds(data: bytes, fmt: str) -> float:
    if fmt == "pcm":
        return len(data) / 2 / PCM_RATE
    samples, rate = decode_audio(data)
    return samples.size / rate


def _speech_body(voice: str, text: str, fmt: str, seed: int) -> dict[str, Any]:
    # A new seed each time, so the server's audio varies as raw Piper's does from run to run.
    return {"model": "tts-1", "input": text, "voice": voice, "response_format": fmt, "seed": seed}


def _http_speech(client: httpx.Client, url: str, pid: int, voice: str, text: str, fmt: str, seed: int) -> Sample:
    """One streamed request, with the server's CPU time for it."""
    cpu = cpu_seconds(pid)
    start = time.perf_counter()
    first = 0.0
    parts = []
    started = _AudioStart(fmt)
    with client.stream("POST", f"{url}/v1/audio/speech", json=_speech_body(voice, text, fmt, seed), timeout=300) as r:
        r.raise_for_status()
        for part in r.iter_bytes():
            if part and not first and started.feed(part):
                first = time.perf_counter() - start
            parts.append(part)
    total = time.perf_counter() - start
    time.sleep(SETTLE_S)
    return Sample(first, total, _audio_seconds(b"".join(parts), fmt), cpu_seconds(pid) - cpu)


async def _concurrent_load(url: str, pid: int, voice: str, texts: list[str], seed: int) -> LoadRun:
    """All texts requested at once (pcm) from one event loop (a light client, so the measurement is
    of the server and not of client threads competing for the same cores)."""

    async def one(client: httpx.AsyncClient, i: int) -> tuple[float, float, float]:
        start = time.perf_counter()
        first = 0.0
        size = 0
        body = _speech_body(voice, texts[i], "pcm", seed + i)
        async with client.stream("POST", f"{url}/v1/audio/speech", json=body, timeout=600) as response:
            response.raise_for_status()
            async for part in response.aiter_bytes():
                if part and not first:
                    first = time.perf_counter() - start
                size += len(part)
        return first, time.perf_counter() - start, size / 2 / PCM_RATE

    limits = httpx.Limits(max_connections=len(texts))
    async with httpx.AsyncClient(limits=limits) as client:
        cpu = cpu_seconds(pid)
        start = time.perf_counter()
        results = await asyncio.gather(*(one(client, i) for i in range(len(texts))))
        wall = time.perf_counter() - start
        await asyncio.sleep(SETTLE_S)
        cpu = cpu_seconds(pid) - cpu
    audio = sum(r[2] for r in results)
    return LoadRun(audio / wall, [r[1] for r in results], [r[0] for r in results], cpu, audio, wall)


class _RawPiper:
    """Piper as its own package uses it, with nothing of Parla's in the way."""

    def __init__(self) -> None:
        from piper import PiperVoice

        from parla.engines.piper import bundled_model

        model, config = bundled_model()
        self.voice = PiperVoice.load(model, config_path=config)

    def speak(self, text: str) -> Sample:
        """Time to the first chunk (Piper's first sentence), total, audio seconds and this process's
        CPU time (all its threads: onnxruntime's among them)."""
        cpu = time.process_time()
        sample = self._synthesize(text)
        time.sleep(SETTLE_S)
        sample.cpu = time.process_time() - cpu
        return sample

    def sequential(self, texts: list[str]) -> LoadRun:
        """The texts one after another, as a server that served them in turn would."""
        cpu = time.process_time()
        start = time.perf_counter()
        latencies, firsts, audio = [], [], 0.0
        for text in texts:
            began = time.perf_counter() - start
            sample = self._synthesize(text)
            firsts.append(began + sample.first)
            latencies.append(began + sample.total)
            audio += sample.audio
        wall = time.perf_counter() - start
        time.sleep(SETTLE_S)
        return LoadRun(audio / wall, latencies, firsts, time.process_time() - cpu, audio, wall)

    def _synthesize(self, text: str) -> Sample:
        start = time.perf_counter()
        first = 0.0
        samples = 0
        rate = 22050
        for chunk in self.voice.synthesize(text):
            if not first:
                first = time.perf_counter() - start
            samples += chunk.audio_float_array.size
            rate = chunk.sample_rate
        return Sample(first, time.perf_counter() - start, samples / rate, 0.0)

    def reference_recording(self) -> tuple[bytes, str]:
        """A short recording of another "speaker" (a WAV and its transcript): Piper slower, with
        other noise settings, played 18 % faster so that its pitch and formants are higher."""
        import numpy as np
        from piper import SynthesisConfig

        from parla.audio.encode import encode_audio

        text = "The boy was there when the sun rose. A rod is used to catch pink salmon. Kick the ball straight."
        config = SynthesisConfig(length_scale=1.25, noise_scale=0.8, noise_w_scale=0.9)
        chunks = list(self.voice.synthesize(text, syn_config=config))
        audio = np.concatenate([c.audio_float_array for c in chunks]).astype(np.float32)
        return encode_audio(audio, round(chunks[0].sample_rate * 1.18), "wav"), text


def dev_voices_dir() -> Path | None:
    """The development speakers (``scripts/dev-voices.sh``): ``PARLA_DEV_VOICES``, else
    ``.cache/dev-voices`` here or in the checkout this package runs from."""
    named = os.environ.get("PARLA_DEV_VOICES")
    candidates = (
        [Path(named)]
        if named
        else [Path(".cache/dev-voices"), Path(__file__).resolve().parents[3] / ".cache/dev-voices"]
    )
    return next((p for p in candidates if p.is_dir()), None)


def _clone_source(raw: _RawPiper) -> tuple[bytes, str, str]:
    """(recording, transcript, where it came from) for the cloned voice."""
    root = dev_voices_dir()
    if root is not None:
        found = [root / name for name in DEV_SPEAKERS] + sorted(root.iterdir())
        for speaker in found:
            ref, transcript = speaker / "ref.wav", speaker / "ref.txt"
            if ref.is_file() and transcript.is_file():
                return ref.read_bytes(), transcript.read_text(encoding="utf-8").strip(), f"dev voice {speaker.name}"
    audio, text = raw.reference_recording()
    return audio, text, "raw Piper, another speaker setting"


def _clone_voice(client: httpx.Client, url: str, raw: _RawPiper) -> tuple[str, str]:
    """A library voice made through the API; (its id, where its recording came from)."""
    audio, transcript, source = _clone_source(raw)
    created = client.post(
        f"{url}/v1/voices/clone",
        data={"name": "bench-cloned", "transcript": transcript},
        files={"file": ("ref.wav", audio, "audio/wav")},
        timeout=300,
    )
    created.raise_for_status()
    return str(created.json()["voice"]["id"]), source


def voice_kind(voice: str) -> str:
    """``plain`` Piper, a ``cloned`` library voice or a built-in ``preset`` (the cloning engine's)."""
    return "plain" if voice == "joe" else "cloned" if voice == CLONED else "preset"


@dataclass
class Machine:
    """How busy the machine was: load averages at the start and the end, and CPU use over the run."""

    cpus: int
    load_start: tuple[float, float, float]
    load_end: tuple[float, float, float] = (0.0, 0.0, 0.0)
    own_cpus: float = 0.0
    """CPUs this bench (this process and the server) kept busy on average during the measurements."""
    other_cpus: float = 0.0
    """CPUs other work kept busy on average meanwhile (``/proc/stat`` less this bench's own)."""

    @property
    def load_end_net(self) -> float:
        """The 1-minute load average at the end less this bench's own share of it."""
        return max(0.0, self.load_end[0] - self.own_cpus)

    @property
    def busy(self) -> bool:
        """Whether the 1-minute load average (at the start; at the end without this bench's own
        work) exceeded the CPU count."""
        return self.load_start[0] > self.cpus or self.load_end_net > self.cpus

    def summary(self) -> dict[str, Any]:
        return {
            "cpus": self.cpus,
            "loadavg_start": list(self.load_start),
            "loadavg_end": list(self.load_end),
            "loadavg_end_net": self.load_end_net,
            "own_cpus": self.own_cpus,
            "other_cpus": self.other_cpus,
            "busy": self.busy,
        }


def _loads(values: Sequence[float]) -> str:
    return " ".join(f"{v:.2f}" for v in values)


def _mark(ok: bool) -> str:
    return "[green]PASS[/green]" if ok else "–"


def run_speech_bench(
    *,
    rounds: int,
    clients: int,
    console: Console,
    voices: Sequence[str] = DEFAULT_VOICES,
    formats: Sequence[str] = DEFAULT_FORMATS,
    load_runs_count: int = 2,
    json_path: Path | None = None,
) -> dict[str, Any]:
    """Measure, print the tables, write ``json_path`` if given; returns what the JSON holds."""
    machine = Machine(cpu_count(), os.getloadavg())
    started_at = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    console.print(
        f"[bold]parla bench speech[/bold]: {rounds} alternating rounds, voices {', '.join(voices)}, "
        f"formats {', '.join(formats)}, {clients} clients × {load_runs_count} load runs per voice; "
        f"{machine.cpus} CPUs, load average {_loads(machine.load_start)} at the start",
        highlight=False,
    )
    raw = _RawPiper()
    raw.speak(SHORT)  # warm-up: first run allocates onnxruntime's arenas
    texts = [LOAD_TEXTS[i % len(LOAD_TEXTS)] for i in range(clients)]
    single: dict[tuple[str, str], Series] = {}
    raw_single: dict[str, Series] = {}
    load_rows: list[tuple[str, int, LoadRun, LoadRun, float]] = []
    cloned_source = ""
    with serve_in_child() as (url, proc), httpx.Client() as client:
        pid = proc.pid
        rss_start, _ = memory_mb(pid)  # model loaded, no request yet
        own_cpu, busy_cpu, wall = cpu_seconds(os.getpid()), machine_busy_seconds(), time.perf_counter()
        ids = {v: v for v in voices}
        if CLONED in voices:
            ids[CLONED], cloned_source = _clone_voice(client, url, raw)
        # Warm-up: each voice in each format, so that the cloned voice's adaptation is learned and
        # every encoder has run once before anything is timed.
        for voice in voices:
            for warm_format in formats:
                _http_speech(client, url, pid, ids[voice], SHORT, warm_format, 0)

        with Progress(console=console, transient=True) as bar:
            task = bar.add_task("single requests", total=rounds * len(voices) * (len(formats) + 1))
            for r in range(rounds):
                for voice in voices:
                    steps: list[str | None] = [None, *formats]  # None: raw Piper
                    if r % 2:
                        steps.reverse()
                    for fmt in steps:
                        if fmt is None:
                            raw_single.setdefault(voice, Series()).samples.append(raw.speak(PARAGRAPH))
                        else:
                            sample = _http_speech(client, url, pid, ids[voice], PARAGRAPH, fmt, r + 1)
                            single.setdefault((voice, fmt), Series()).samples.append(sample)
                        bar.advance(task)
            rss_sequential, _ = memory_mb(pid)

            # Throughput: raw Piper speaking the texts one after another (the best it does on a small
            # CPU) against `clients` simultaneous requests; each pass over the voices repeated, to see
            # memory stay flat.
            task = bar.add_task("load", total=load_runs_count * len(voices))
            for run in range(1, load_runs_count + 1):
                for voice in voices:
                    reference = raw.sequential(texts)
                    served = asyncio.run(_concurrent_load(url, pid, ids[voice], texts, seed=100 * run))
                    load_rows.append((voice, run, reference, served, memory_mb(pid)[0]))
                    bar.advance(task)
        elapsed = time.perf_counter() - wall
        # What the server keeps once the clients are gone: each engine gives its working memory
        # back after PARLA_ENGINE_IDLE_TRIM_S without a request (the child runs with these settings).
        idle_wait = Settings().engine_idle_trim_s
        if idle_wait > 0:
            with console.status(f"waiting {idle_wait + IDLE_MARGIN_S:.0f} s for the server to be idle"):
                time.sleep(idle_wait + IDLE_MARGIN_S)
        rss_idle, rss_peak = memory_mb(pid)
        own = cpu_seconds(os.getpid()) - own_cpu
        machine.own_cpus = own / elapsed
        machine.other_cpus = max(0.0, (machine_busy_seconds() - busy_cpu - own) / elapsed)
    machine.load_end = os.getloadavg()

    result = _report(
        console,
        machine=machine,
        rounds=rounds,
        clients=clients,
        voices=voices,
        formats=formats,
        load_runs_count=load_runs_count,
        cloned_source=cloned_source,
        single=single,
        raw_single=raw_single,
        load_rows=load_rows,
        rss=(rss_start, rss_sequential, rss_idle, rss_peak),
        idle_wait=idle_wait,
    )
    result["started_at"] = started_at
    if json_path is not None:
        json_path.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
        console.print(f"written to {escape(str(json_path))}", highlight=False)
    return result


def _clean(value: Any) -> Any:
    """NaN (a missing median) as null, so the file is strict JSON."""
    if isinstance(value, float):
        return None if math.isnan(value) else round(value, 6)
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    return value


def _report(
    console: Console,
    *,
    machine: Machine,
    rounds: int,
    clients: int,
    voices: Sequence[str],
    formats: Sequence[str],
    load_runs_count: int,
    cloned_source: str,
    single: dict[tuple[str, str], Series],
    raw_single: dict[str, Series],
    load_rows: list[tuple[str, int, LoadRun, LoadRun, float]],
    rss: tuple[float, float, float, float],
    idle_wait: float,
) -> dict[str, Any]:
    star = "*" if machine.busy else ""
    busy_note = (
        f" — * busy: 1-min load average {machine.load_start[0]:.2f} at the start, "
        f"{machine.load_end_net:.2f} at the end without this bench's own, over {machine.cpus} CPUs"
        if machine.busy
        else ""
    )
    checks: list[bool] = []

    def ratio(value: float) -> str:
        return f"{value:.2f}x{star}" if not math.isnan(value) else "-"

    def ms(value: float) -> str:
        return f"{value * 1000:.0f} ms" if not math.isnan(value) else "-"

    # -- single requests ---------------------------------------------------------------------------
    table = Table(
        title=f"a paragraph per request (median of {rounds} round{'s' if rounds != 1 else ''}; raw Piper in "
        f"alternation; load average {_loads(machine.load_start)} → {_loads(machine.load_end)}, "
        f"{machine.cpus} CPUs){busy_note}"
    )
    heads: tuple[str, ...] = (
        "voice",
        "format",
        "raw 1st sentence",
        "first audio",
        "ratio",
        f"≤ {TTFA_LIMIT:.1f}x",
        "raw total",
        "total",
        "ratio",
        "target",
        "raw CPU s",
        "CPU s",
        "ratio",
    )
    for col in heads:
        table.add_column(col, justify="left" if col in ("voice", "format") else "right")
    single_json = []
    for voice in voices:
        kind = voice_kind(voice)
        limit = TOTAL_LIMITS[kind]
        reference = raw_single[voice]
        for fmt in formats:
            served = single[(voice, fmt)]
            ttfa_ratio = _ratio(served.median("first"), reference.median("first"))
            total_ratio = _ratio(served.median("total"), reference.median("total"))
            cpu_ratio = _ratio(served.median("cpu"), reference.median("cpu"))
            ttfa_ok, total_ok = ttfa_ratio <= TTFA_LIMIT, total_ratio <= limit
            checks += [ttfa_ok, total_ok]
            table.add_row(
                voice,
                fmt,
                ms(reference.median("first")),
                ms(served.median("first")),
                ratio(ttfa_ratio),
                _mark(ttfa_ok),
                ms(reference.median("total")),
                ms(served.median("total")),
                ratio(total_ratio),
                f"{_mark(total_ok)} ≤ {limit:.2f}x",
                f"{reference.median('cpu'):.2f}",
                f"{served.median('cpu'):.2f}",
                ratio(cpu_ratio),
            )
            single_json.append(
                {
                    "voice": voice,
                    "kind": kind,
                    "format": fmt,
                    "raw": reference.summary(),
                    "server": served.summary(),
                    "ratios": {"ttfa": ttfa_ratio, "total": total_ratio, "cpu": cpu_ratio},
                    "targets": {
                        "ttfa": {"limit": TTFA_LIMIT, "pass": ttfa_ok},
                        "total": {"limit": limit, "pass": total_ok},
                    },
                }
            )
    console.print(table)

    # -- load ----------------------------------------------------------------------------------------
    load = Table(
        title=f"{clients} concurrent clients (pcm) against raw Piper speaking the same texts one after another "
        f"(its latencies counted from the start of the batch){busy_note}"
    )
    heads = (
        "voice",
        "run",
        "raw audio s/s",
        "audio s/s",
        "ratio",
        f"≥ {THROUGHPUT_LIMIT:.1f}x",
        "raw p50",
        "p50",
        "ratio",
        f"≤ {LOAD_LATENCY_LIMIT:.1f}x",
        "p95",
        "raw p50 first",
        "p50 first",
        "raw CPU s/req",
        "CPU s/req",
        "ratio",
        "RSS MiB",
    )
    for col in heads:
        load.add_column(col, justify="left" if col == "voice" else "right")
    load_json = []
    for voice, run, raw_run, server_run, rss_after in load_rows:
        ref, out = raw_run.summary(), server_run.summary()
        throughput_ratio = _ratio(server_run.throughput, raw_run.throughput)
        latency_ratio = _ratio(out["p50_latency_s"], ref["p50_latency_s"])
        cpu_ratio = _ratio(out["cpu_s_per_request"], ref["cpu_s_per_request"])
        throughput_ok, latency_ok = throughput_ratio >= THROUGHPUT_LIMIT, latency_ratio <= LOAD_LATENCY_LIMIT
        checks += [throughput_ok, latency_ok]
        load.add_row(
            voice,
            str(run),
            f"{raw_run.throughput:.1f}",
            f"{server_run.throughput:.1f}",
            ratio(throughput_ratio),
            _mark(throughput_ok),
            f"{ref['p50_latency_s']:.2f} s",
            f"{out['p50_latency_s']:.2f} s",
            ratio(latency_ratio),
            _mark(latency_ok),
            f"{out['p95_latency_s']:.2f} s",
            f"{ref['p50_ttfa_s']:.2f} s",
            f"{out['p50_ttfa_s']:.2f} s",
            f"{ref['cpu_s_per_request']:.2f}",
            f"{out['cpu_s_per_request']:.2f}",
            ratio(cpu_ratio),
            f"{rss_after:.0f}",
        )
        load_json.append(
            {
                "voice": voice,
                "kind": voice_kind(voice),
                "run": run,
                "clients": clients,
                "raw": ref,
                "server": out,
                "rss_after_mib": rss_after,
                "ratios": {"throughput": throughput_ratio, "p50_latency": latency_ratio, "cpu": cpu_ratio},
                "targets": {
                    "throughput": {"limit": THROUGHPUT_LIMIT, "pass": throughput_ok},
                    "p50_latency": {"limit": LOAD_LATENCY_LIMIT, "pass": latency_ok},
                },
            }
        )
    console.print(load)

    # -- memory --------------------------------------------------------------------------------------
    rss_start, rss_sequential, rss_idle, rss_peak = rss
    after_load = [row[4] for row in load_rows]
    per_pass = len(voices)
    first_pass, last_pass = after_load[per_pass - 1 : per_pass], after_load[-1:]
    growth = last_pass[0] - first_pass[0] if load_runs_count >= 2 and first_pass and last_pass else math.nan
    flat = load_runs_count >= 2 and growth <= FLAT_GROWTH_MIB
    start_ok = rss_start <= RSS_START_LIMIT_MB * MIB_PER_MB
    # After the load run: once the server is idle (its engines have given back their working memory)
    # when it does that, else right after the last run.
    rss_after_load = rss_idle if idle_wait > 0 else max(after_load, default=math.nan)
    load_ok = bool(after_load) and rss_after_load <= RSS_LOAD_LIMIT_MB * MIB_PER_MB
    checks += [start_ok, load_ok, *([flat] if load_runs_count >= 2 else [])]
    mem = Table(title="server memory (RSS, MiB; only speech used)")
    mem.add_column("when")
    mem.add_column("RSS MiB", justify="right")
    mem.add_column("target")
    mem.add_row(
        "after start, before any request",
        f"{rss_start:.0f}",
        f"{_mark(start_ok)} ≤ {RSS_START_LIMIT_MB:.0f} MB ({RSS_START_LIMIT_MB * MIB_PER_MB:.0f} MiB)",
    )
    mem.add_row("after the single requests", f"{rss_sequential:.0f}", "")
    load_target = f"{_mark(load_ok)} ≤ {RSS_LOAD_LIMIT_MB:.0f} MB ({RSS_LOAD_LIMIT_MB * MIB_PER_MB:.0f} MiB)"
    mem.add_row(
        f"right after each load run (largest of {len(after_load)})",
        f"{max(after_load):.0f}" if after_load else "-",
        "" if idle_wait > 0 else load_target,
    )
    if idle_wait > 0:
        mem.add_row(
            f"after the load runs, idle ({idle_wait + IDLE_MARGIN_S:.0f} s on; PARLA_ENGINE_IDLE_TRIM_S {idle_wait:g})",
            f"{rss_idle:.0f}",
            load_target,
        )
    mem.add_row(
        "growth from the first pass of load runs to the last",
        f"{growth:+.0f}" if not math.isnan(growth) else "-",
        f"{_mark(flat)} flat (≤ {FLAT_GROWTH_MIB:.0f} MiB)"
        if load_runs_count >= 2
        else "– flat needs --load-runs 2 or more",
    )
    mem.add_row("peak", f"{rss_peak:.0f}", "")
    console.print(mem)

    console.print(
        f"targets: {sum(checks)} of {len(checks)} PASS. "
        f"Load average {_loads(machine.load_start)} at the start, {_loads(machine.load_end)} at the end "
        f"({machine.load_end_net:.2f} without this bench's own {machine.own_cpus:.2f} CPUs); "
        f"other work used {machine.other_cpus:.2f} of {machine.cpus} CPUs meanwhile"
        + (" — busy machine: wall-clock ratios (marked *) are not comparable; CPU seconds are" if machine.busy else "")
        + (f". Cloned voice from: {cloned_source}" if cloned_source else ""),
        highlight=False,
    )
    result = {
        "version": 1,
        "machine": machine.summary(),
        "settings": {
            "rounds": rounds,
            "clients": clients,
            "load_runs": load_runs_count,
            "voices": list(voices),
            "formats": list(formats),
            "paragraph": PARAGRAPH,
            "cloned_voice_source": cloned_source or None,
        },
        "single": single_json,
        "load": load_json,
        "memory": {
            "rss_start_mib": rss_start,
            "rss_after_single_mib": rss_sequential,
            "rss_after_load_mib": after_load,
            "rss_idle_after_load_mib": rss_idle if idle_wait > 0 else None,
            "idle_trim_s": idle_wait,
            "rss_peak_mib": rss_peak,
            "load_growth_mib": growth,
            "targets": {
                "start": {"limit_mb": RSS_START_LIMIT_MB, "pass": start_ok},
                "after_load": {"limit_mb": RSS_LOAD_LIMIT_MB, "pass": load_ok},
                "flat": {"limit_mib": FLAT_GROWTH_MIB, "pass": flat if load_runs_count >= 2 else None},
            },
        },
        "targets_passed": sum(checks),
        "targets_total": len(checks),
    }
    cleaned: dict[str, Any] = _clean(result)
    return cleaned
