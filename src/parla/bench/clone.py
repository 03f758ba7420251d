"""``parla bench clone DIR``: each speaker under DIR cloned and scored by the judge (resemblyzer) and
Whisper, by the protocol of ``docs/cloning-evaluation.md``: similarity, margin, WER, adaptation
time, RTF. A speaker's ``ref.lang``, where there is one, names the language its reference is spoken
in (the voice is made in it); the cloned voice always speaks the English test sentences."""

from __future__ import annotations

import asyncio
import tempfile
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from parla.audio.decode import decode_audio
from parla.engines.base import AudioChunk
from parla.services.speech import SpeechOptions
from parla.services.voices import VoiceCreate


async def _collect(chunks: AsyncIterator[AudioChunk]) -> list[AudioChunk]:
    return [chunk async for chunk in chunks]


def reference_language(ref: Path) -> str:
    """The language a development speaker's reference is spoken in: its ``ref.lang``, else English."""
    named = ref.with_name("ref.lang")
    return (named.read_text(encoding="utf-8").strip() if named.is_file() else "") or "en"


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
                    # English, whatever the voice's language: the test sentences are
                    options = SpeechOptions(
                        input=sentence, voice=voice, model=model, response_format="wav", seed=1, language="en"
                    )
                    plan = services.speech.prepare(options, source="bench")
                    start = time.perf_counter()
                    chunks = asyncio.run(_collect(services.speech.audio(plan)))
                    elapsed += time.perf_counter() - start
                    audio, rate = np.concatenate([c.samples for c in chunks]), chunks[0].sample_rate
                    seconds += audio.size / rate
                    outputs.append((sentence, audio, rate))
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
                    voice = services.voices.create(
                        VoiceCreate(name=speaker.name, language=reference_language(speaker.ref))
                    )
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
