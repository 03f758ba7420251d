"""Heavy engines' own environments: ``parla engines install NAME`` (safe to re-run, one at a time,
pip's output in a log), ``parla engines remove NAME``, and ``parla engines`` listing every engine.

The fast tests run the installer's bookkeeping with its steps recorded instead of run; one slow
test really builds an environment (torch 2.13.0 and this checkout of Parla, the cheapest real one),
checks that it imports, and that a second install does nothing."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from parla.cli import app
from parla.engines import catalog, envs
from parla.engines.catalog import TORCH, Entry, Step
from parla.engines.envs import (
    EngineEnv,
    InstallBusyError,
    InstallError,
    ParlaSource,
    built_from_source,
    parla_source,
    project_key,
)

runner = CliRunner()
CHECKOUT = Path(__file__).resolve().parents[1]
BARE = Entry(name="bare", title="torch and Parla alone", extra=None, requirements=())
"""The cheapest real environment: the recipe's first two steps and nothing else."""


@pytest.fixture(autouse=True)
def _data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PARLA_DATA_DIR", str(tmp_path / "data"))
    for name in ("PARLA_DATABASE_URL", "PARLA_ENGINES_DIR", "PARLA_MODELS_DIR", "MODELS_DIR", "XTTS_MODEL_DIR"):
        monkeypatch.delenv(name, raising=False)


class Recorded:
    """The installer with its steps written down instead of run (each makes what the next needs)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, fail_at: str | None = None) -> None:
        self.steps: list[str] = []
        recorded = self

        def create(runner: envs._Runner) -> None:
            recorded.steps.append("create")
            runner.env.root.mkdir(parents=True, exist_ok=True)
            (runner.env.root / "bin").mkdir(exist_ok=True)

        def pip(runner: envs._Runner, step: Step) -> None:
            recorded.steps.append(("--no-deps " if step.no_deps else "") + " ".join(step.packages))
            if fail_at and fail_at in step.packages:
                raise InstallError(f"installing {step.label} failed (exit 1): no matching distribution")
            runner.env.parla.touch()

        monkeypatch.setattr(envs._Runner, "create", create)
        monkeypatch.setattr(envs._Runner, "pip", pip)
        monkeypatch.setattr(envs._Runner, "strip_torchaudio", lambda runner: recorded.steps.append("strip"))
        monkeypatch.setattr(envs._Runner, "check", lambda runner, modules: recorded.steps.append("check"))
        monkeypatch.setattr(envs._Runner, "keep_built_wheels", lambda runner: recorded.steps.append("wheels"))


def test_an_install_follows_the_recipe_and_a_second_one_does_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    recorded = Recorded(monkeypatch)
    env = EngineEnv("chatterbox", tmp_path / "engines" / "chatterbox")
    source = parla_source()
    seen: list[tuple[int, int, str]] = []
    result = envs.install(
        catalog.entry("chatterbox"),
        env,
        log_path=tmp_path / "install.log",
        source=source,
        wheels=tmp_path / "wheels",
        progress=lambda index, total, label: seen.append((index, total, label)),
    )
    assert not result.skipped and env.installed
    assert recorded.steps == [
        "create",
        TORCH,
        f"-e {CHECKOUT}[chatterbox]",
        "--no-deps chatterbox-tts==0.1.7",
        "--no-deps torchaudio==2.11.1",
        "strip",
        "check",
        "wheels",
    ]
    assert [label for _, _, label in seen][:3] == [
        "create the environment",
        "torch 2.13.0",
        "Parla with parla[chatterbox]",
    ]
    assert all(total == len(seen) for _, total, _ in seen)
    record = json.loads(env.marker.read_text())
    assert record["engine"] == "chatterbox" and record["device"] == "cpu" and str(CHECKOUT) in record["parla"]
    # Same recipe: nothing runs. --force, or another device: built again.
    recorded.steps.clear()
    again = envs.install(catalog.entry("chatterbox"), env, log_path=tmp_path / "install.log", source=source)
    assert again.skipped and recorded.steps == []
    envs.install(catalog.entry("chatterbox"), env, log_path=tmp_path / "install.log", source=source, force=True)
    assert recorded.steps[0] == "create"
    recorded.steps.clear()
    envs.install(catalog.entry("chatterbox"), env, device="cuda", log_path=tmp_path / "install.log", source=source)
    assert recorded.steps[0] == "create" and json.loads(env.marker.read_text())["device"] == "cuda"


def test_a_failed_step_leaves_no_marker(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    Recorded(monkeypatch, fail_at="chatterbox-tts==0.1.7")
    env = EngineEnv("chatterbox", tmp_path / "engines" / "chatterbox")
    with pytest.raises(InstallError, match=r"installing chatterbox-tts .*failed"):
        envs.install(catalog.entry("chatterbox"), env, log_path=tmp_path / "install.log")
    assert not env.installed and not env.marker.exists()  # the next install starts over


def test_one_install_of_an_engine_at_a_time(tmp_path: Path) -> None:
    env = EngineEnv("xtts", tmp_path / "engines" / "xtts")
    lock = tmp_path / "engines" / ".xtts.lock"
    lock.parent.mkdir(parents=True)
    hold = (
        "import fcntl, sys, time; f = open(sys.argv[1], 'w'); fcntl.flock(f, fcntl.LOCK_EX);"
        " print('held'); time.sleep(60)"
    )
    holder = subprocess.Popen([sys.executable, "-u", "-c", hold, str(lock)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        with pytest.raises(InstallBusyError, match=r"another process is installing or removing 'xtts'"):
            envs.install(catalog.entry("xtts"), env, log_path=tmp_path / "install.log")
        with pytest.raises(InstallBusyError):
            envs.remove(env)
    finally:
        holder.kill()
        holder.wait()


def test_parla_installs_from_its_checkout_editable() -> None:
    source = parla_source()
    assert source.args("xtts") == ("-e", f"{CHECKOUT}[xtts]") and source.args(None) == ("-e", str(CHECKOUT))
    # What changes an environment's recipe: Parla's dependencies, the extra, its entry points.
    assert source.requirements_key("xtts") != source.requirements_key("dia")
    assert source.requirements_key("xtts") == source.requirements_key("xtts")


def test_an_engine_added_to_parla_does_not_rebuild_the_others(tmp_path: Path) -> None:
    """Only an environment's own engine's entry point is in its key: a new engine elsewhere leaves
    gigabytes of other environments as they are; a change to its own, or to the console script, does not."""
    pyproject = tmp_path / "pyproject.toml"

    def key(engines: str, scripts: str = 'parla = "parla.cli:main"') -> str:
        pyproject.write_text(
            '[project]\nname = "parla"\ndependencies = ["numpy"]\n[project.optional-dependencies]\nxtts = ["x"]\n'
            f'[project.scripts]\n{scripts}\n[project.entry-points."parla.engines"]\n{engines}\n'
        )
        return project_key(pyproject, "xtts")

    xtts = 'xtts = "parla.engines.xtts:XttsEngine"'
    alone = key(xtts)
    assert key(f'{xtts}\ndia = "parla.engines.dia:DiaEngine"') == alone
    assert key('xtts = "parla.engines.xtts2:XttsEngine"') != alone
    assert key(xtts, 'parla = "parla.cli:other"') != alone


def test_wheels_built_from_source_are_found_in_pips_report(tmp_path: Path) -> None:
    report = tmp_path / "report.json"

    def item(name: str, version: str, url: str, **info: object) -> dict[str, object]:
        return {"metadata": {"name": name, "version": version}, "download_info": {"url": url, **info}}

    items = [
        item("encodec", "0.1.1", "https://x/encodec-0.1.1.tar.gz", archive_info={}),
        item(
            "torch", "2.13.0+cpu", "file:///opt/wheels/torch-2.13.0+cpu-cp311-cp311-linux_x86_64.whl", archive_info={}
        ),
        item("parla", "0.1.0", "file:///src/parla", dir_info={"editable": True}),
    ]
    report.write_text(json.dumps({"install": items}))
    assert built_from_source([report, tmp_path / "missing.json"]) == [("encodec", "0.1.1")]


# -- the command ------------------------------------------------------------------------------------


def test_install_refuses_what_it_does_not_know() -> None:
    unknown = runner.invoke(app, ["engines", "install", "bark"])
    assert unknown.exit_code == 2 and "no heavy engine 'bark'" in unknown.output and "xtts" in unknown.output
    device = runner.invoke(app, ["engines", "install", "xtts", "--device", "tpu"])
    assert device.exit_code == 2 and "cpu, cuda" in device.output


def test_install_shows_its_steps_and_where_pip_writes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    Recorded(monkeypatch)
    result = runner.invoke(app, ["engines", "install", "dia"])
    assert result.exit_code == 0, result.output
    log = tmp_path / "data" / "logs" / "engine-dia-install.log"
    assert f"pip's output goes to {log}" in result.output and log.exists()
    for step in ("create the environment", "torch 2.13.0", "Parla with parla[dia]", "check that it imports"):
        assert f"✓ {step}" in result.output
    assert f"dia is installed in {tmp_path / 'data' / 'engines' / 'dia'}" in result.output
    assert "put config.json, model.safetensors or model-*.safetensors" in result.output  # where its weights go
    again = runner.invoke(app, ["engines", "install", "dia"])
    assert again.exit_code == 0 and "installed already, from the same recipe" in again.output


def test_remove_asks_unless_told_not_to(tmp_path: Path) -> None:
    root = tmp_path / "data" / "engines" / "kokoro"
    assert "has no environment" in runner.invoke(app, ["engines", "remove", "kokoro"]).output
    root.mkdir(parents=True)
    declined = runner.invoke(app, ["engines", "remove", "kokoro"], input="n\n")
    assert declined.exit_code == 1 and root.exists()
    removed = runner.invoke(app, ["engines", "remove", "kokoro", "--yes"])
    assert removed.exit_code == 0 and f"deleted {root}" in removed.output and not root.exists()


def test_the_list_has_every_engine_and_what_each_needs(tmp_path: Path) -> None:
    models = tmp_path / "data" / "models"
    result = runner.invoke(app, ["engines"])
    assert result.exit_code == 0, result.output
    rows = {line.split("│")[1].strip(): line for line in result.output.splitlines() if line.count("│") >= 8}
    assert set(catalog.CATALOG) | {"piper", "clone", "mock"} <= set(rows)
    assert "in process" in rows["piper"] and "this environment" in rows["piper"]
    assert "not running" in rows["xtts"] and "not installed" in rows["xtts"] and "missing" in rows["xtts"]
    assert "xtts: not installed: `parla engines install xtts`" in result.output
    assert f"put config.json, model.pth and vocab.json in {models / 'xtts'}/" in result.output


# -- a real environment --------------------------------------------------------------------------


@pytest.fixture
def bare_entry(monkeypatch: pytest.MonkeyPatch) -> Iterator[Entry]:
    monkeypatch.setitem(catalog.CATALOG, BARE.name, BARE)
    # Parla's requirements as they are now: an edit of pyproject.toml while the install runs (a
    # colleague's, in the same checkout) would rightly make the second install a rebuild.
    source = parla_source()
    key = source.requirements_key(None)
    monkeypatch.setattr(envs, "parla_source", lambda: ParlaSource(source.description, source.args, lambda extra: key))
    yield BARE


@pytest.mark.slow
def test_a_real_environment_is_built_and_a_second_install_is_a_no_op(
    tmp_path: Path, bare_entry: Entry, request: pytest.FixtureRequest
) -> None:
    """torch 2.13.0 (the CPU build, from this machine's wheel where there is one) and this checkout of
    Parla, with its dependencies from pip's cache: about a minute and a half on two busy cores."""
    env = EngineEnv(bare_entry.name, tmp_path / "data" / "engines" / bare_entry.name)
    request.addfinalizer(lambda: shutil.rmtree(env.root, ignore_errors=True))  # 2 GB: not kept with the tmp dirs
    started = time.monotonic()
    result = runner.invoke(app, ["engines", "install", bare_entry.name])
    took = time.monotonic() - started
    assert result.exit_code == 0, result.output
    assert env.installed and f"{bare_entry.name} is installed in {env.root}" in result.output
    probe = "import torch, parla, sys; print(torch.__version__, parla.__file__, sys.prefix)"
    out = subprocess.run([str(env.python), "-c", probe], capture_output=True, text=True, check=True).stdout.split()
    assert out[0].startswith("2.13.0") and out[1] == str(CHECKOUT / "src" / "parla" / "__init__.py")
    assert out[2] == str(env.root)
    assert {"mock", "piper"} <= env.engine_names()  # its `parla serve-engine` serves this checkout's engines
    assert (env.root / "constraints.txt").read_text().startswith("torch==2.13.0")
    started = time.monotonic()
    again = runner.invoke(app, ["engines", "install", bare_entry.name])
    assert again.exit_code == 0 and "installed already, from the same recipe" in again.output
    assert time.monotonic() - started < 5
    print(f"\nbuilt a real engine environment in {took:.0f} s")
