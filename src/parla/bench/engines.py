"""``parla bench engines``: each engine that can run here, measured the same way.

The engines come up as ``parla serve`` brings them up: built-in and installed ones in this process,
heavy ones whose environment and weights are here as supervised workers (``Supervisor``), and any
whose section names a worker as that worker. For each: load time (unload, then ``registry.load``),
time to the first chunk of a sentence, real-time factor of a paragraph (synthesis seconds over audio
seconds) and memory (this process's RSS for an engine in it, the worker's own ``rss_mb``/``vram_mb``
for a worker). Medians over the rounds. An engine that cannot run is listed with its reason.

The bench works in a data directory of its own (a temporary one), so the voice it may create and
the generations it records never reach the operator's; the engines' environments and weights are
read from where the operator's settings say.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from parla.bench.common import memory_mb, step_bar
from parla.bench.speech import PARAGRAPH, SHORT
from parla.devices import torch_vram_mb
from parla.engines.base import Engine
from parla.engines.inventory import EngineFacts, survey
from parla.engines.registry import EngineRegistry
from parla.engines.remote import RemoteEngine
from parla.engines.supervisor import Supervisor, plan
from parla.services import Services
from parla.services.speech import SpeechOptions
from parla.services.voices import VoiceCreate
from parla.settings import Settings

WORKER_READY_S = 600.0
"""How long to wait for a supervised worker to answer that its engine is available (a heavy model's
first load on a CPU takes minutes)."""
REFERENCE_TEXT = "The birch canoe slid on the smooth planks. Glue the sheet to the dark blue background."
"""What espeak-ng says for the reference recording of an engine that speaks only cloned voices."""
REFERENCE_VOICE = "bench-reference"


@dataclass
class Measured:
    name: str
    runs: str
    voice: str | None = None
    load: list[float] = field(default_factory=list)
    first: list[float] = field(default_factory=list)
    rtf: list[float] = field(default_factory=list)
    rss_mb: float | None = None
    vram_mb: float | None = None
    note: str | None = None
    """Why there are no numbers (the engine cannot run here, or has no voice to speak)."""


def bench_settings(base: Settings, data_dir: Path) -> Settings:
    """``base`` in a data directory of its own, with its engines' environments and weights where
    ``base`` has them."""
    return base.model_copy(
        update={
            "data_dir": data_dir,
            "engines_dir": base.resolved_engines_dir.resolve(),
            "models_dir": base.resolved_models_dir.resolve(),
            "database_url": f"sqlite:///{(data_dir / 'parla.db').resolve()}",
        }
    )


def _supervisor(settings: Settings, names: Sequence[str] | None) -> Supervisor | None:
    """The workers ``parla serve`` would start, only for the engines asked about (all when ``names``
    is empty)."""
    if not settings.supervise_engines:
        return None
    planned = plan(settings)
    workers = [w for w in planned.workers if not names or w.name in names]
    return Supervisor(workers, skipped=planned.skipped)


def _wait_for_workers(registry: EngineRegistry, names: Sequence[str], console: Console) -> None:
    """Until each remote engine of ``names`` says it is available, or says why not for good, or
    ``WORKER_READY_S`` has passed."""
    remotes = [e for e in registry if isinstance(e, RemoteEngine) and e.name in names]
    if not remotes:
        return
    deadline = time.monotonic() + WORKER_READY_S
    with console.status(f"waiting for the workers of {', '.join(e.name for e in remotes)}"):
        while time.monotonic() < deadline:
            if all(e.status().available for e in remotes):
                return
            time.sleep(1.0)


def _reference_recording(directory: Path) -> bytes:
    """A short recording of espeak-ng reading ``REFERENCE_TEXT`` (WAV). Raises ``RuntimeError``."""
    binary = shutil.which("espeak-ng")
    if binary is None:
        raise RuntimeError("no preset voice, and espeak-ng (for a reference recording to clone) is not installed")
    path = directory / "reference.wav"
    subprocess.run([binary, "-w", str(path), REFERENCE_TEXT], check=True, capture_output=True, timeout=60)
    return path.read_bytes()


def _voice_for(services: Services, engine: Engine, directory: Path) -> str:
    """A voice ``engine`` speaks: a built-in voice with a preset of its own (``alloy`` first), else one
    of its own voices, else a library voice cloned from a reference recording. Raises ``RuntimeError``
    saying why there is none."""
    presets = engine.voice_presets
    if presets:
        return "alloy" if "alloy" in presets else sorted(presets)[0]
    own = engine.voices()
    if own:
        return own[0].name
    if not engine.capabilities.cloning:
        raise RuntimeError("no preset voice and it does not clone")
    try:
        return services.voices.get(REFERENCE_VOICE).name
    except Exception:  # not made yet
        pass
    audio = _reference_recording(directory)
    voice, _ = services.voices.create_with_sample(VoiceCreate(name=REFERENCE_VOICE), audio, REFERENCE_TEXT)
    return voice.name


async def _speak(services: Services, name: str, voice: str, text: str, seed: int) -> tuple[float, float, float]:
    """(time to the first chunk, total time, seconds of audio) of ``text`` spoken by engine ``name``."""
    options = SpeechOptions(input=text, voice=voice, model=name, response_format="pcm", seed=seed)
    speech_plan = await asyncio.to_thread(services.speech.prepare, options, source="bench")
    start = time.perf_counter()
    first = 0.0
    audio = 0.0
    async for chunk in services.speech.audio(speech_plan):
        if not first:
            first = time.perf_counter() - start
        audio += chunk.duration
    return first, time.perf_counter() - start, audio


async def _measure(
    services: Services, row: Measured, rounds: int, text: str, short: str, step: Callable[[], None]
) -> None:
    registry = services.engines
    assert row.voice is not None
    await registry.load(row.name)
    await _speak(services, row.name, row.voice, short, 0)  # warm-up: first runs allocate what they keep
    for r in range(rounds):
        await registry.unload(row.name)
        start = time.perf_counter()
        await registry.load(row.name)
        row.load.append(time.perf_counter() - start)
        first, _, _ = await _speak(services, row.name, row.voice, short, r)
        row.first.append(first)
        _, total, audio = await _speak(services, row.name, row.voice, text, r)
        row.rtf.append(total / audio if audio else float("nan"))
        step()


def _memory(row: Measured, facts: EngineFacts | None, engine: Engine) -> None:
    if isinstance(engine, RemoteEngine):
        if facts is not None:
            row.rss_mb, row.vram_mb = facts.rss_mb, facts.vram_mb
        return
    row.rss_mb = memory_mb(os.getpid())[0]
    row.vram_mb = torch_vram_mb() if engine.status().device.startswith("cuda") else 0.0


def _table(rows: list[Measured], rounds: int, facts: dict[str, EngineFacts]) -> Table:
    table = Table(title=f"engines (median of {rounds} round{'' if rounds == 1 else 's'})")
    for col in ("engine", "runs", "device", "voice", "load", "first audio", "RTF", "RSS MB", "GPU MB", "note"):
        table.add_column(col, justify="left" if col in ("engine", "runs", "device", "voice", "note") else "right")

    def mb(value: float | None) -> str:
        return "-" if value is None else f"{value:.0f}"

    for row in rows:
        device = facts[row.name].device if row.name in facts else None
        if row.note is not None or not row.load:
            table.add_row(
                row.name, row.runs, device or "-", row.voice or "-", "-", "-", "-", "-", "-", escape(row.note or "")
            )
            continue
        table.add_row(
            row.name,
            row.runs,
            device or "-",
            escape(row.voice or "-"),
            f"{statistics.median(row.load) * 1000:.0f} ms",
            f"{statistics.median(row.first) * 1000:.0f} ms",
            f"{statistics.median(row.rtf):.3f}",
            mb(row.rss_mb),
            mb(row.vram_mb),
            "",
        )
    return table


def run_engines_bench(
    *, names: Sequence[str], rounds: int, text: str | None, console: Console, base: Settings | None = None
) -> list[Measured]:
    """Measure ``names`` (every engine known here when empty) and print the table; returns the rows."""
    paragraph = text or PARAGRAPH
    with engines_up(names, console, base, "parla-bench-engines-") as bench:
        services, registry, facts = bench.services, bench.registry, bench.facts
        settings, supervisor = services.settings, bench.supervisor
        rows = [Measured(name, runs, voice, note=note) for name, runs, voice, note in bench.lineup]
        runnable = [r for r in rows if r.note is None]
        with step_bar(console) as bar:
            task = bar.add_task("engines", total=len(runnable) * rounds)

            async def measure_all() -> None:
                # One event loop for every engine: the engines' managers belong to the loop they ran on.
                for row in runnable:
                    bar.update(task, description=f"{row.name} ({row.voice})")
                    try:
                        await _measure(services, row, rounds, paragraph, SHORT, lambda: bar.advance(task))
                    except Exception as exc:
                        row.note = f"failed: {type(exc).__name__}: {exc}"
                        continue
                    after = {f.name: f for f in await asyncio.to_thread(survey, settings, registry, supervisor)}
                    _memory(row, after.get(row.name), registry.get(row.name))
                    facts[row.name] = after.get(row.name) or facts[row.name]
                    if not isinstance(registry.get(row.name), RemoteEngine):
                        # Free it before the next engine loads, so each RSS holds one model, not all so far.
                        await registry.unload(row.name)

            asyncio.run(measure_all())
        console.print(_table(rows, rounds, facts))
        return rows


@dataclass
class Bench:
    """Engines brought up as ``parla serve`` brings them up, in a data directory of the bench's own."""

    services: Services
    registry: EngineRegistry
    facts: dict[str, EngineFacts]
    supervisor: Supervisor | None
    lineup: list[tuple[str, str, str | None, str | None]]
    """Per engine asked for: its name, how it runs, a voice it speaks, and why it cannot be measured
    (``None`` when it can)."""


@contextmanager
def engines_up(names: Sequence[str], console: Console, base: Settings | None, prefix: str) -> Iterator[Bench]:
    """``names`` (every engine known here when empty) up and ready to speak, each with a voice
    (``_voice_for``) or the reason it has none; all stopped and the data directory removed after."""
    with tempfile.TemporaryDirectory(prefix=prefix) as tmp:
        data = Path(tmp)
        settings = bench_settings(base or Settings(), data / "data")
        supervisor = _supervisor(settings, names)
        if supervisor is not None and supervisor.names():
            supervisor.start()
            settings = supervisor.apply(settings)
        registry = EngineRegistry.from_entry_points(settings)
        services = Services.build(settings, engines=registry)
        try:
            facts = {f.name: f for f in survey(settings, registry, supervisor)}
            wanted = list(dict.fromkeys(names)) if names else sorted(facts)
            _wait_for_workers(registry, wanted, console)
            facts = {f.name: f for f in survey(settings, registry, supervisor)}
            lineup: list[tuple[str, str, str | None, str | None]] = []
            for name in wanted:
                fact = facts.get(name)
                if fact is None:
                    lineup.append((name, "-", None, f"unknown engine; known: {', '.join(sorted(facts))}"))
                elif not fact.available:
                    lineup.append((name, fact.runs, None, fact.reason or "not available"))
                else:
                    try:
                        lineup.append((name, fact.runs, _voice_for(services, registry.get(name), data), None))
                    except Exception as exc:
                        lineup.append((name, fact.runs, None, f"skipped: {exc}"))
            yield Bench(services, registry, facts, supervisor, lineup)
        finally:
            services.close()
            if supervisor is not None:
                supervisor.stop()
