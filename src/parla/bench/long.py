"""``parla bench long``: a long text through each engine, every piece heard and checked.

Each engine (as ``parla bench engines`` brings it up, with the same choice of voice) speaks a text of
about 10,000 characters (``long_text.txt``, or the operator's) with ``check`` on: Whisper hears each
piece, and a piece whose word error rate passes ``check_max_wer`` is spoken again with another seed
(``services.checks``). The table gives, per engine, the share of pieces spoken again, those still
wrong (flagged), the mean word error rate of the first renderings and of the kept ones, and the time
it all took beside the audio's length.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from parla.bench.common import step_bar
from parla.bench.engines import engines_up
from parla.engines.remote import RemoteEngine
from parla.services import Services
from parla.services.speech import SpeechOptions
from parla.settings import Settings

SHIPPED_TEXT = Path(__file__).with_name("long_text.txt")
SEED = 1
"""One seed for every engine: a run is repeatable, and engines are compared on the same draws."""


@dataclass
class LongRun:
    engine: str
    voice: str | None = None
    note: str | None = None
    checks: dict[str, Any] = field(default_factory=dict)
    audio_s: float = 0.0
    elapsed_s: float = 0.0

    @property
    def first_wer(self) -> float | None:
        """The mean WER the pieces had as first spoken: the kept ones', with the retried pieces'
        first renderings in place of their kept ones."""
        checked = self.checks.get("checked") or 0
        if not checked or self.checks.get("mean_wer") is None:
            return None
        total = float(self.checks["mean_wer"]) * checked
        for detail in self.checks.get("details", []):
            total += float(detail.get("first_wer", detail["wer"])) - float(detail["wer"])
        return total / checked


async def _speak(services: Services, run: LongRun, text: str, advance: Any) -> None:
    assert run.voice is not None
    options = SpeechOptions(input=text, voice=run.voice, model=run.engine, response_format="wav", seed=SEED, check=True)
    plan = await asyncio.to_thread(services.speech.prepare, options, source="bench")
    started = time.perf_counter()
    rendered = await services.speech.render(plan, progress=lambda done, total: advance(done, total))
    run.elapsed_s = time.perf_counter() - started
    run.audio_s = rendered.duration
    run.checks = rendered.checks or {}


def _table(runs: Sequence[LongRun], chars: int) -> Table:
    table = Table(title=f"long text ({chars} characters), every piece heard by Whisper")
    columns = ("engine", "voice", "pieces", "retried", "flagged", "WER first", "WER kept", "WER max", "audio", "time")
    for col in (*columns, "note"):
        table.add_column(col, justify="left" if col in ("engine", "voice", "note") else "right")

    def wer(value: float | None) -> str:
        return "-" if value is None else f"{value:.3f}"

    for run in runs:
        checks = run.checks
        if run.note is not None or not checks:
            table.add_row(escape(run.engine), escape(run.voice or "-"), *["-"] * 8, escape(run.note or "not checked"))
            continue
        checked = checks.get("checked") or 0
        share = f"{checks['retried']} ({checks['retried'] / checked:.0%})" if checked else "-"
        table.add_row(
            escape(run.engine),
            escape(run.voice or "-"),
            f"{checked}/{checks['pieces']}",
            share,
            str(checks["flagged"]),
            wer(run.first_wer),
            wer(checks.get("mean_wer")),
            wer(checks.get("max_wer")),
            f"{run.audio_s / 60:.1f} min",
            f"{run.elapsed_s:.0f} s",
            escape(checks.get("unchecked", "")),
        )
    return table


def run_long_bench(
    *, names: Sequence[str], text_path: Path | None, console: Console, base: Settings | None = None
) -> list[LongRun]:
    """Speak the long text with each engine of ``names`` (by default those that run in this process and
    that a new seed changes, plus espeak-ng as a deterministic one) and print the table."""
    text = (text_path or SHIPPED_TEXT).read_text(encoding="utf-8")
    wanted = list(names) or ["piper", "clone", "espeak", "kokoro"]
    with engines_up(wanted, console, base, "parla-bench-long-") as bench:
        runs = [LongRun(name, voice, note) for name, _, voice, note in bench.lineup]
        with step_bar(console) as bar:

            async def speak_all() -> None:
                for run in runs:
                    if run.note is not None:
                        continue
                    task = bar.add_task(f"{run.engine} ({run.voice})", total=None)

                    def advance(done: int, total: int, task: Any = task) -> None:
                        bar.update(task, completed=done, total=total)

                    try:
                        await _speak(bench.services, run, text, advance)
                    except Exception as exc:
                        run.note = f"failed: {type(exc).__name__}: {exc}"
                    bar.remove_task(task)
                    if not isinstance(bench.registry.get(run.engine), RemoteEngine):
                        await bench.registry.unload(run.engine)  # one model in memory at a time

            asyncio.run(speak_all())
    console.print(_table(runs, len(text)))
    for run in runs:
        for detail in run.checks.get("details", []):
            if detail["flagged"]:
                console.print(
                    f"[yellow]{escape(run.engine)}[/yellow] piece {detail['piece']} still wrong after"
                    f" {detail['tries']} tries (WER {detail['wer']:.2f}): said {escape(detail['text'])!r},"
                    f" heard {escape(detail['heard'])!r}",
                    highlight=False,
                )
    return runs
