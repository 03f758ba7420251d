"""The command line: say, voices, engines, and the benchmark."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from parla.cli import app
from parla.settings import Settings
from tests.conftest import Listener, duration_of, natural_length, wer

runner = CliRunner()


@pytest.fixture(autouse=True)
def _data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PARLA_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.delenv("PARLA_DATABASE_URL", raising=False)


@pytest.mark.model
def test_say_writes_a_file_that_says_the_text(tmp_path: Path, listener: Listener) -> None:
    out = tmp_path / "out.mp3"
    text = "Kick the ball straight and follow through."
    result = runner.invoke(app, ["say", text, "--voice", "onyx", "-o", str(out)])
    assert result.exit_code == 0, result.output
    audio = out.read_bytes()
    low, high = natural_length(text)
    assert low < duration_of(audio) < high
    assert wer(text, listener.transcribe(audio)) < 0.3
    assert list((tmp_path / "data" / "generations").glob("*.mp3"))  # recorded like any generation


def test_say_without_output_writes_to_stdout(monkeypatch: pytest.MonkeyPatch) -> None:
    # The shape of the output, not its sound: the mock engine speaks every voice.
    monkeypatch.setenv("PARLA_DEFAULT_ENGINE", "mock")
    monkeypatch.setenv("PARLA_DEFAULT_CLONE_ENGINE", "mock")
    result = runner.invoke(app, ["say", "Hello.", "--format", "wav"])
    assert result.exit_code == 0
    assert result.stdout_bytes[:4] == b"RIFF" and duration_of(result.stdout_bytes) > 0.3


def test_say_reports_bad_input() -> None:
    result = runner.invoke(app, ["say", "Hello.", "--voice", "nobody"])
    assert result.exit_code == 2
    assert "unknown voice" in result.output


def test_voices_and_engines_are_listed() -> None:
    voices = runner.invoke(app, ["voices"])
    assert voices.exit_code == 0 and all(v in voices.output for v in ("alloy", "onyx", "shimmer", "joe"))
    engines = runner.invoke(app, ["engines"])
    assert engines.exit_code == 0 and all(e in engines.output for e in ("piper", "espeak", "mock"))


@pytest.mark.slow
@pytest.mark.model
def test_bench_speech_measures_every_voice_and_format(tmp_path: Path) -> None:
    # The shape of what it prints and writes, never how fast: speed is not asserted in tests.
    out = tmp_path / "bench.json"
    result = subprocess.run(
        [
            *(sys.executable, "-m", "parla", "bench", "speech"),
            *("--rounds", "1", "--clients", "2", "--load-runs", "2", "--json", str(out)),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
        env={**os.environ, "PARLA_ENGINE_IDLE_TRIM_S": "1"},  # the idle server's memory read 3 s on
    )
    assert result.returncode == 0, result.stderr[-2000:]
    printed = result.stdout
    for heading in ("a paragraph per request", "concurrent clients", "server memory", "load average", "2 CPUs"):
        assert heading in printed
    voices, formats = ("joe", "alloy", "cloned"), ("pcm", "wav", "mp3")
    rows = [[c.strip() for c in line.strip("│").split("│")] for line in printed.splitlines() if line.startswith("│")]
    assert {(r[0], r[1]) for r in rows if len(r) == 13} == {(v, f) for v in voices for f in formats}
    assert all(r[5] in ("PASS", "–") and r[9].split()[0] in ("PASS", "–") for r in rows if len(r) == 13)

    data = json.loads(out.read_text())
    machine = data["machine"]
    assert machine["cpus"] >= 1 and len(machine["loadavg_start"]) == len(machine["loadavg_end"]) == 3
    assert isinstance(machine["busy"], bool) and machine["other_cpus"] >= 0
    assert data["settings"]["cloned_voice_source"]
    assert [(r["voice"], r["format"]) for r in data["single"]] == [(v, f) for v in voices for f in formats]
    for row in data["single"]:
        for side in ("raw", "server"):
            assert row[side]["ttfa_s"] > 0 and row[side]["total_s"] > 0 and row[side]["audio_s"] > 1
            assert row[side]["cpu_s"] > 0
        assert row["ratios"]["cpu"] > 0
        assert row["targets"]["total"]["limit"] == (1.2 if row["voice"] == "cloned" else 1.1)
        assert isinstance(row["targets"]["ttfa"]["pass"], bool)
    assert [(r["voice"], r["run"]) for r in data["load"]] == [(v, run) for run in (1, 2) for v in voices]
    for row in data["load"]:
        for side in ("raw", "server"):
            assert row[side]["audio_s_per_wall_s"] > 0 and row[side]["cpu_s_per_request"] > 0
            assert len(row[side]["latencies_s"]) == 2 and row[side]["p50_ttfa_s"] > 0
        assert row["rss_after_mib"] > 0
    memory = data["memory"]
    assert 0 < memory["rss_start_mib"] <= memory["rss_peak_mib"]
    assert memory["rss_after_single_mib"] > 0 and len(memory["rss_after_load_mib"]) == 6
    assert isinstance(memory["targets"]["flat"]["pass"], bool)
    # idle, the engines have given back their working memory (onnxruntime's arena, freed buffers)
    assert memory["idle_trim_s"] == 1 and memory["rss_idle_after_load_mib"] < min(memory["rss_after_load_mib"]) - 20
    assert 0 <= data["targets_passed"] <= data["targets_total"] == 9 * 2 + 6 * 2 + 3


def test_bench_speech_refuses_an_unknown_format() -> None:
    result = runner.invoke(app, ["bench", "speech", "--formats", "pcm,nope"])
    assert result.exit_code == 2
    assert "formats are some of" in result.output


BENCH_ENGINES_HEADINGS = ("engine", "runs", "load", "first audio", "RTF", "RSS MB", "GPU MB", "note")


def _table_rows(output: str) -> dict[str, list[str]]:
    """A rich table's body rows, by their first cell (a wrapped cell's lines joined with spaces)."""
    rows: dict[str, list[str]] = {}
    last: list[str] = []
    for line in output.splitlines():
        if line.startswith("│"):
            cells = [c.strip() for c in line.strip("│").split("│")]
            if cells[0] or not last:
                last = rows[cells[0]] = cells
            else:
                last[:] = [f"{a} {b}".strip() for a, b in zip(last, cells, strict=True)]
    return rows


@pytest.mark.slow
@pytest.mark.model
def test_bench_engines_measures_each_engine() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "parla", "bench", "engines", "--engine", "piper", "--engine", "mock", "--rounds", "1"],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "engines (median of 1 round)" in result.stdout
    assert all(heading in result.stdout for heading in BENCH_ENGINES_HEADINGS)
    rows = _table_rows(result.stdout)
    assert set(rows) == {"piper", "mock"}
    for name in ("piper", "mock"):
        _, runs, _, voice, load, first, rtf, rss, _, note = rows[name]
        assert runs == "in process" and voice != "-" and not note, rows[name]
        assert load.endswith(" ms") and first.endswith(" ms") and float(rtf) > 0 and float(rss) > 0
    assert rows["piper"][3] == "alloy"  # a built-in voice with Piper's preset
    assert rows["mock"][3] == "bench-reference"  # no presets: a voice cloned from espeak-ng's recording


def test_bench_engines_lists_an_engine_that_cannot_run_with_its_reason(tmp_path: Path) -> None:
    # Nothing installed and no weights in this data directory: xtts cannot run, and says why.
    result = runner.invoke(
        app, ["bench", "engines", "--engine", "xtts", "--rounds", "1"], env={"PARLA_MODELS_DIR": str(tmp_path / "m")}
    )
    assert result.exit_code == 0, result.output
    rows = _table_rows(result.output)
    assert list(rows) == ["xtts"]
    _, runs, _, voice, load, first, rtf, *_, note = rows["xtts"]
    assert runs == "not running" and (voice, load, first, rtf) == ("-", "-", "-", "-")
    assert "not installed" in note and "parla engines install xtts" in note


def test_doctor_reports_what_is_installed_and_reachable(
    monkeypatch: pytest.MonkeyPatch, postgres_server: str, redis_server: str
) -> None:
    monkeypatch.setenv("PARLA_DATABASE_URL", postgres_server)
    monkeypatch.setenv("PARLA_REDIS_URL", redis_server)
    result = runner.invoke(app, ["doctor"])
    assert result.exit_code == 0, result.output
    rows = {line.split("│")[1].strip(): line for line in result.output.splitlines() if line.count("│") >= 3}
    assert "ok" in rows["database"] and f"{postgres_server} answers" in rows["database"]
    assert "ok" in rows["job queue"] and "Redis" in rows["job queue"]
    for name in ("engine piper", "engine clone", "Piper voice (joe)", "Whisper tiny.en", "language model runtime"):
        assert "ok" in rows[name], rows.get(name)


def test_doctor_fails_for_a_configured_service_that_does_not_answer(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PARLA_REDIS_URL", "redis://:secret@127.0.0.1:9/0")
    monkeypatch.setenv("PARLA_CHROMA_URL", "http://127.0.0.1:9")
    result = runner.invoke(app, ["doctor"])
    assert result.exit_code == 1, result.output
    rows = {line.split("│")[1].strip(): line for line in result.output.splitlines() if line.count("│") >= 3}
    assert "fail" in rows["job queue"] and "fail" in rows["knowledge base"]
    assert "secret" not in result.output  # passwords never printed


def test_llm_runtime_install_is_quick_when_it_is_there() -> None:
    result = runner.invoke(app, ["llm-runtime", "install"])
    assert result.exit_code == 0 and "llama-cpp-python is installed" in result.output


# -- parla serve: the Dia server API's start-up options --------------------------------------------


class _Started:
    """What ``parla serve`` handed to uvicorn, instead of serving."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        import uvicorn

        import parla.app

        self.settings: Settings | None = None
        self.target: object = None
        self.options: dict[str, object] = {}

        def create_app(settings: Settings | None = None) -> str:
            self.settings = settings
            return "the app"

        def run(target: object, **options: object) -> None:
            self.target, self.options = target, options

        monkeypatch.setattr(parla.app, "create_app", create_app)
        monkeypatch.setattr(uvicorn, "run", run)


@pytest.fixture
def parla_logger() -> Iterator[logging.Logger]:
    """The 'parla' logger put back as it was: ``parla serve`` gives it a console handler of its own and
    stops its records from propagating, which would keep them from later tests (caplog)."""
    logger = logging.getLogger("parla")
    handlers, level, propagate = list(logger.handlers), logger.level, logger.propagate
    try:
        yield logger
    finally:
        for handler in logger.handlers[:]:
            if handler not in handlers:
                logger.removeHandler(handler)
        logger.setLevel(level)
        logger.propagate = propagate


@pytest.fixture
def started(monkeypatch: pytest.MonkeyPatch, parla_logger: logging.Logger) -> _Started:
    import os

    import parla.cli

    # ``--workers`` hands its options to the processes through the environment: keep a copy to restore.
    monkeypatch.setattr(os, "environ", dict(os.environ))
    for name in ("ENABLE_GPU", "XTTS_USE_GPU", "PARLA_DEVICE", "PARLA_REDIS_URL", "PARLA_CHROMA_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(parla.cli, "cuda_device_count", lambda: 0)
    return _Started(monkeypatch)


def test_serve_takes_the_dia_server_options(started: _Started) -> None:
    result = runner.invoke(app, ["serve", "--port", "7860", "--retention-hours", "48", "--no-save-outputs", "--debug"])
    assert result.exit_code == 0, result.output
    assert started.target == "the app" and started.options["port"] == 7860
    assert started.settings is not None
    assert started.settings.output_retention_hours == 48 and started.settings.save_outputs is False
    assert started.settings.log_level == "debug"
    result = runner.invoke(app, ["serve", "--save-outputs"])
    assert result.exit_code == 0 and started.settings.save_outputs is True
    assert started.settings.output_retention_hours == 24  # the Dia server API's default


def test_serve_refuses_several_workers_on_the_embedded_stores(started: _Started) -> None:
    result = runner.invoke(app, ["serve", "--workers", "8"])
    assert result.exit_code == 2 and started.target is None
    for needed in ("PARLA_DATABASE_URL", "PARLA_REDIS_URL", "PARLA_CHROMA_URL"):
        assert needed in result.output


def test_serve_runs_several_workers_on_shared_stores(started: _Started, monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    monkeypatch.setenv("PARLA_DATABASE_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
    monkeypatch.setenv("PARLA_REDIS_URL", "redis://127.0.0.1:6379/0")
    monkeypatch.setenv("PARLA_CHROMA_URL", "http://127.0.0.1:8001")
    result = runner.invoke(app, ["serve", "--workers", "2", "--retention-hours", "48", "--no-save-outputs"])
    assert result.exit_code == 0, result.output
    # Each process builds its own app from the environment, where the options now are.
    assert started.target == "parla.app:create_app"
    assert started.options["factory"] is True and started.options["workers"] == 2
    assert os.environ["PARLA_OUTPUT_RETENTION_HOURS"] == "48.0" and os.environ["PARLA_SAVE_OUTPUTS"] == "false"
    assert Settings(_env_file=None).output_retention_hours == 48


def test_serve_refuses_a_gpu_that_is_not_there(started: _Started, monkeypatch: pytest.MonkeyPatch) -> None:
    import parla.cli

    monkeypatch.setenv("ENABLE_GPU", "true")
    result = runner.invoke(app, ["serve"])
    assert result.exit_code == 2 and "no CUDA GPU is visible here" in result.output and started.target is None
    monkeypatch.setattr(parla.cli, "cuda_device_count", lambda: 1)
    assert runner.invoke(app, ["serve"]).exit_code == 0


def test_serve_reports_refused_settings_without_a_traceback(started: _Started, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EMBEDDING_MODEL", "text-embedding-ada-002")
    result = runner.invoke(app, ["serve"])
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert "all-MiniLM-L6-v2" in result.output and started.target is None
