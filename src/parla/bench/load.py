"""``parla bench load``: many clients at once, for a fixed time, doing what a busy server's users
do (speech streams, transcriptions, voice uploads, queued jobs), against a ``parla serve`` child
with keys on. Prints what came back per kind of request: how many, how fast (p50/p95/p99), the
errors by status, and the server's memory before and after, so a leak or a 5xx under load shows.

Every request is made with an API key, as a server on a network gets them: the key check and the
usage counters are part of what is measured.
"""

from __future__ import annotations

import asyncio
import datetime
import json
import os
import statistics
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from parla.bench.common import cpu_count, memory_mb, serve_in_child

KINDS = ("speech", "transcription", "voice", "job")
DEFAULT_MIX = {"speech": 6, "transcription": 2, "voice": 1, "job": 1}
"""How often each kind is picked, by weight: mostly speech, as a speech server's traffic is."""
TEXTS = [
    "The birch canoe slid on the smooth planks.",
    "Glue the sheet to the dark blue background.",
    "It is easy to tell the depth of a well.",
    "These days a chicken leg is a rare dish.",
]


@dataclass
class KindResult:
    latencies: list[float] = field(default_factory=list)
    statuses: Counter[int] = field(default_factory=Counter)
    failures: Counter[str] = field(default_factory=Counter)
    """Transport errors (a dropped connection, a timeout) by their type."""

    def percentile(self, q: float) -> float:
        if not self.latencies:
            return float("nan")
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def parse_mix(raw: str) -> dict[str, int]:
    """``speech=6,transcription=2`` as weights; a kind not named is not sent."""
    mix: dict[str, int] = {}
    for part in filter(None, (p.strip() for p in raw.split(","))):
        name, _, weight = part.partition("=")
        if name not in KINDS or not weight.isdigit():
            raise ValueError(f"{part!r}: give KIND=WEIGHT, KIND one of {', '.join(KINDS)}")
        mix[name] = int(weight)
    if not any(mix.values()):
        raise ValueError("the mix sends nothing")
    return mix


class _Client:
    """One simulated user: picks the next kind from the mix (in turn, so the mix holds exactly)."""

    def __init__(self, http: httpx.AsyncClient, recording: bytes, index: int, mix: dict[str, int]) -> None:
        self.http, self.recording, self.index = http, recording, index
        self.order = [kind for kind, weight in mix.items() for _ in range(weight)]
        self.turn = index  # clients start at different places in the order

    def next(self) -> tuple[str, Callable[[], Awaitable[int]]]:
        kind = self.order[self.turn % len(self.order)]
        self.turn += 1
        text = TEXTS[(self.index + self.turn) % len(TEXTS)]
        return kind, {
            "speech": lambda: self._speech(text),
            "transcription": self._transcription,
            "voice": self._voice,
            "job": lambda: self._job(text),
        }[kind]

    async def _speech(self, text: str) -> int:
        body = {"model": "tts-1", "input": text, "voice": "joe", "response_format": "pcm", "stream": True}
        async with self.http.stream("POST", "/v1/audio/speech", json=body) as response:
            async for _ in response.aiter_bytes():
                pass
            return response.status_code

    async def _transcription(self) -> int:
        files = {"file": ("speech.wav", self.recording, "audio/wav")}
        response = await self.http.post("/v1/audio/transcriptions", data={"model": "whisper-1"}, files=files)
        return response.status_code

    async def _voice(self) -> int:
        # Made and deleted again, so that the data dir does not grow with the run.
        name = f"load-{self.index}-{self.turn}"
        files = {"file": ("ref.wav", self.recording, "audio/wav")}
        made = await self.http.post("/v1/voices/clone", data={"name": name, "transcript": TEXTS[0]}, files=files)
        if made.status_code == 201:
            await self.http.delete(f"/v1/voices/{made.json()['voice']['id']}")
        return made.status_code

    async def _job(self, text: str) -> int:
        response = await self.http.post("/v1/jobs", json={"input": text, "voice": "joe", "response_format": "wav"})
        return response.status_code


async def _drive(
    url: str, key: str, recording: bytes, clients: int, seconds: float, mix: dict[str, int], tick: Callable[[], None]
) -> dict[str, KindResult]:
    results = {kind: KindResult() for kind in mix}
    deadline = time.monotonic() + seconds
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    headers = {"Authorization": f"Bearer {key}"}
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=300, limits=limits) as http:

        async def user(index: int) -> None:
            client = _Client(http, recording, index, mix)
            while time.monotonic() < deadline:
                kind, request = client.next()
                started = time.perf_counter()
                try:
                    status = await request()
                except httpx.HTTPError as exc:
                    results[kind].failures[type(exc).__name__] += 1
                    continue
                results[kind].latencies.append(time.perf_counter() - started)
                results[kind].statuses[status] += 1
                tick()

        await asyncio.gather(*(user(i) for i in range(clients)))
    return results


def _recording() -> bytes:
    """A few seconds of speech to transcribe and to clone from: the bundled voice, made here."""
    import numpy as np

    from parla.audio.encode import encode_audio
    from parla.engines.piper import PiperEngine

    engine = PiperEngine()
    text = " ".join(TEXTS[:3])
    chunks = []
    for ids in engine.phoneme_ids(text):
        chunks.append(engine.render(ids, length_scale=1.0, noise_scale=0.667, noise_w_scale=0.8, seed=1))
    audio = np.concatenate(chunks)
    return encode_audio(audio, engine.sample_rate, "wav")


def run_load_bench(
    *, clients: int, seconds: float, mix: dict[str, int], console: Console, json_path: Path | None = None
) -> dict[str, Any]:
    from parla.services.keys import KeyService
    from parla.store.db import Database

    recording = _recording()
    load_start = os.getloadavg()
    key: dict[str, str] = {}

    def with_a_key(data: Path) -> None:
        db = Database(f"sqlite:///{data / 'parla.db'}")
        db.migrate()
        key["secret"] = KeyService(db).create("load", "speak,voices")[1]
        db.dispose()

    console.print(
        f"[bold]parla bench load[/bold]: {clients} clients for {seconds:g} s, mix "
        f"{', '.join(f'{k} {w}' for k, w in mix.items())}; {cpu_count()} CPUs, load average "
        f"{' '.join(f'{v:.2f}' for v in load_start)} at the start",
        highlight=False,
    )
    with serve_in_child(prepare=with_a_key) as (url, proc):
        rss_before, _ = memory_mb(proc.pid)
        with Progress(console=console, transient=True) as bar:
            task = bar.add_task("requests", total=None)
            wall = time.perf_counter()
            results = asyncio.run(
                _drive(url, key["secret"], recording, clients, seconds, mix, lambda: bar.advance(task))
            )
            wall = time.perf_counter() - wall
        rss_after, rss_peak = memory_mb(proc.pid)

    table = Table(title=f"{clients} clients, {wall:.1f} s")
    for column in ("kind", "requests", "per s", "p50", "p95", "p99", "statuses", "transport errors"):
        table.add_column(column, justify="left" if column in ("kind", "statuses", "transport errors") else "right")
    summary: dict[str, Any] = {}
    for kind, measured in results.items():
        done = sum(measured.statuses.values())
        statuses = ", ".join(f"{status}: {n}" for status, n in sorted(measured.statuses.items()))
        failures = ", ".join(f"{name}: {n}" for name, n in measured.failures.items()) or "-"
        table.add_row(
            kind,
            str(done),
            f"{done / wall:.2f}",
            *(f"{measured.percentile(q):.2f} s" for q in (0.5, 0.95, 0.99)),
            statuses or "-",
            failures,
        )
        summary[kind] = {
            "requests": done,
            "per_s": done / wall,
            "p50_s": measured.percentile(0.5),
            "p95_s": measured.percentile(0.95),
            "p99_s": measured.percentile(0.99),
            "mean_s": statistics.fmean(measured.latencies) if measured.latencies else None,
            "statuses": {str(k): v for k, v in measured.statuses.items()},
            "transport_errors": dict(measured.failures),
        }
    console.print(table)
    server_errors = sum(n for r in results.values() for status, n in r.statuses.items() if status >= 500)
    console.print(
        f"server memory: {rss_before:.0f} MiB before, {rss_after:.0f} after, {rss_peak:.0f} at the peak; "
        f"{server_errors} responses with a 5xx; load average {' '.join(f'{v:.2f}' for v in os.getloadavg())} "
        "at the end",
        highlight=False,
    )
    result = {
        "started_at": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "clients": clients,
        "seconds": wall,
        "mix": mix,
        "kinds": summary,
        "rss_mib": {"before": rss_before, "after": rss_after, "peak": rss_peak},
        "server_errors": server_errors,
        "load_average": {"start": load_start, "end": os.getloadavg()},
    }
    if json_path is not None:
        json_path.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    return result
