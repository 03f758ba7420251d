"""``parla serve``'s heavy engine workers: which engines get one (installed, weights present, not
served otherwise), how a worker is started from its environment, restarted when it dies, stopped
with the server, and reached by requests like any engine.

The worker processes here run the ``mock`` engine from a stand-in environment whose ``bin/parla`` is
this environment's: the supervision is what is tested, not an engine."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import httpx
import pytest

from parla.app import create_app
from parla.engines import catalog, supervisor
from parla.engines.catalog import Entry
from parla.engines.envs import EngineEnv
from parla.engines.inventory import survey
from parla.engines.registry import EngineRegistry
from parla.engines.remote import RemoteEngine
from parla.engines.supervisor import Supervisor, WorkerSpec, plan, worker_environment
from parla.engines.weights import Need, WeightsLayout, WeightsPart
from parla.settings import Settings
from parla.worker_app import create_worker_app
from tests.conftest import duration_of, in_process, mock_settings, wait_for

MOCK = Entry(
    name="mock",
    title="the mock engine, run as a heavy engine would be",
    extra=None,
    requirements=(),
    weights=WeightsLayout((WeightsPart((Need.of("mock.bin"),)),)),
)
PARLA = Path(sys.executable).parent / "parla"


def stand_in_env(settings: Settings, name: str) -> EngineEnv:
    """An installed environment for ``name`` that is this one: its ``parla`` and its packages."""
    env = EngineEnv(name, settings.resolved_engines_dir / name)
    (env.root / "bin").mkdir(parents=True)
    env.parla.symlink_to(PARLA)
    (env.root / "lib").symlink_to(Path(sys.prefix) / "lib")  # its packages' metadata: the engines it has
    env.marker.write_text(json.dumps({"engine": name, "recipe": "stand-in"}))
    return env


def weights_for(settings: Settings, name: str) -> None:
    (settings.resolved_models_dir / name).mkdir(parents=True, exist_ok=True)
    (settings.resolved_models_dir / name / "mock.bin").write_bytes(b"weights")


@pytest.fixture
def mock_catalogued(monkeypatch: pytest.MonkeyPatch) -> Entry:
    monkeypatch.setitem(catalog.CATALOG, "mock", MOCK)
    return MOCK


# -- which engines get a worker -----------------------------------------------------------------------


def test_an_engine_gets_a_worker_once_installed_with_its_weights(tmp_path: Path, mock_catalogued: Entry) -> None:
    settings = Settings(_env_file=None, data_dir=tmp_path / "data")
    never_here = {"in_process": lambda settings, name: False}
    skipped = plan(settings, **never_here).skipped
    assert skipped["mock"].startswith("not installed (`parla engines install mock` makes")
    assert skipped["xtts"].startswith("not installed")
    env = stand_in_env(settings, "mock")
    reason = plan(settings, **never_here).skipped["mock"]
    assert f"put mock.bin in {settings.resolved_models_dir.resolve() / 'mock'}/" in reason
    weights_for(settings, "mock")
    planned = plan(settings, **never_here)
    assert [spec.name for spec in planned.workers] == ["mock"] and "mock" not in planned.skipped
    spec = planned.workers[0]
    assert spec.command == (str(env.parla), "serve-engine", "mock") and spec.state_path == env.root / "worker.json"
    assert spec.log_path == settings.data_dir.resolve() / "logs" / "engine-mock.log"
    assert spec.environment["HF_HUB_OFFLINE"] == "1" and spec.environment["PARLA_SUPERVISOR_PID"] == str(os.getpid())
    assert spec.environment["PARLA_DATA_DIR"] == str(settings.data_dir.resolve())
    # Served otherwise: by a configured worker, or in this process (the mock engine is installed here).
    configured = Settings(_env_file=None, data_dir=settings.data_dir, engines={"mock": {"url": "http://gpu-1:8003"}})
    assert "served by the worker at http://gpu-1:8003" in plan(configured, **never_here).skipped["mock"]
    assert plan(settings).skipped["mock"] == "runs in this process (its packages and weights are here)"


def test_kokoro_on_onnx_here_does_not_stand_in_for_its_torch_environment(tmp_path: Path) -> None:
    """The kokoro engine runs in this process on kokoro-onnx; its environment is Kokoro on torch, which
    gets a worker once installed with its weights (then serving ``kokoro``), unless the operator pinned ONNX."""
    settings = Settings(_env_file=None, data_dir=tmp_path / "data")
    here = supervisor.served_in_process
    stand_in_env(settings, "kokoro")
    assert plan(settings, in_process=here).skipped["kokoro"].startswith("the weights of 'kokoro' are not all here")
    weights = settings.resolved_models_dir / "kokoro"
    (weights / "voices").mkdir(parents=True)
    for name in ("config.json", "kokoro-v1_0.pth", "voices/af_heart.pt"):
        (weights / name).write_bytes(b"{}")
    planned = plan(settings, in_process=here)
    assert [spec.name for spec in planned.workers] == ["kokoro"], planned.skipped.get("kokoro")
    pinned = Settings(_env_file=None, data_dir=settings.data_dir, engines={"kokoro": {"backend": "onnx"}})
    assert plan(pinned, in_process=here).skipped["kokoro"] == "runs in this process (its packages and weights are here)"
    assert [spec.name for spec in plan(settings, in_process=lambda settings, name: True).workers] == []


def test_an_environment_without_the_engine_gets_no_worker(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ghost = Entry(name="ghost", title="an engine its Parla does not have", extra=None, requirements=())
    monkeypatch.setitem(catalog.CATALOG, "ghost", ghost)
    settings = Settings(_env_file=None, data_dir=tmp_path / "data")
    stand_in_env(settings, "ghost")
    reason = plan(settings, in_process=lambda settings, name: False).skipped["ghost"]
    assert "has no engine 'ghost'" in reason and "parla engines install ghost --force" in reason


def test_a_worker_is_told_the_servers_stores_and_its_engines_section(tmp_path: Path) -> None:
    settings = Settings(
        _env_file=None,
        data_dir=tmp_path / "data",
        device="cpu",
        engines={"mock": {"delay_s": 0.5, "ttl_s": 30, "device": "cuda:1"}, "piper": {"model_path": "/elsewhere"}},
    )
    env = worker_environment(settings, "mock")
    assert env["PARLA_ENGINES__MOCK__DELAY_S"] == "0.5" and env["PARLA_ENGINES__MOCK__IDLE_TTL_S"] == "30.0"
    assert env["PARLA_ENGINES__MOCK__DEVICE"] == "cuda:1" and env["PARLA_DEVICE"] == "cpu"
    assert env["PARLA_DATABASE_URL"] == settings.resolved_database_url and env["PARLA_HOST"] == "127.0.0.1"
    assert not any(key.startswith("PARLA_ENGINES__PIPER") for key in env)  # other engines' are not its business


def test_workers_are_registered_as_their_engines_sections(tmp_path: Path) -> None:
    settings = Settings(_env_file=None, data_dir=tmp_path / "data", engines={"piper": {"model_path": "/x"}})
    spec = WorkerSpec("mock", ("parla", "serve-engine", "mock"), {}, tmp_path / "mock.log", timeout_s=60)
    supervised = Supervisor([spec])
    applied = supervised.apply(settings)
    assert applied.engines["mock"].url == supervised.sections()["mock"].url
    assert str(applied.engines["mock"].url).startswith("http://127.0.0.1:") and applied.engines["mock"].timeout_s == 60
    assert applied.engines["piper"] == settings.engines["piper"]
    assert Supervisor([]).apply(settings) is settings


# -- what a worker says of itself ----------------------------------------------------------------------


async def test_a_worker_reports_its_memory_and_unloads_when_idle(tmp_path: Path) -> None:
    settings = Settings(_env_file=None, data_dir=tmp_path / "data", engines={"mock": {"ttl_s": 0.2}})
    app = create_worker_app("mock", settings)
    async with in_process(app) as client:
        info = (await client.get("/v1/engine")).json()
        assert info["memory"]["rss_mb"] > 10 and info["memory"]["vram_mb"] == 0
        assert app.state.services.engines.manager("mock").idle_ttl_s == 0.2  # the TTL applies where the model is


# -- workers as processes ------------------------------------------------------------------------------


def _answers(url: str) -> bool:
    return bool(httpx.get(f"{url}/v1/engine", timeout=1).json()["name"] == "mock")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie (dead, not yet reaped by a parent that is gone too) counts as gone.
    return "State:\tZ" not in Path(f"/proc/{pid}/status").read_text()


@pytest.mark.slow
def test_a_worker_that_dies_is_started_again_and_stopped_with_the_server(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # "ghost": a heavy engine served by a mock worker, so that `parla engines` in another process
    # (which has a mock engine of its own) finds the worker through its environment's worker.json.
    monkeypatch.setitem(
        catalog.CATALOG, "ghost", Entry(name="ghost", title="a heavy engine", extra=None, requirements=())
    )
    settings = Settings(_env_file=None, data_dir=tmp_path / "data")
    env = stand_in_env(settings, "ghost")
    spec = WorkerSpec(
        "ghost",
        (str(PARLA), "serve-engine", "mock"),
        worker_environment(settings, "mock"),
        tmp_path / "logs" / "engine-ghost.log",
        state_path=env.root / "worker.json",
    )
    supervised = Supervisor([spec])
    url = str(supervised.sections()["ghost"].url)
    supervised.start()
    try:
        wait_for(lambda: _answers(url), "the worker did not start", timeout=90)
        first = supervised.state("ghost")
        assert first is not None and first.pid is not None and first.restarts == 0
        listed = {fact.name: fact for fact in survey(settings, EngineRegistry([]))}["ghost"]
        assert listed.runs == f"supervised worker at {url} (pid {first.pid}, started by `parla serve`)"
        assert listed.installed and listed.rss_mb is not None and listed.rss_mb > 10 and listed.vram_mb == 0
        os.kill(first.pid, signal.SIGKILL)
        wait_for(lambda: supervised.state("ghost").pid not in (None, first.pid), "not restarted", timeout=30)  # type: ignore[union-attr]
        wait_for(lambda: _answers(url), "the restarted worker did not answer on the same URL", timeout=90)
        again = supervised.state("ghost")
        assert again is not None and again.restarts == 1 and again.last_exit == -signal.SIGKILL
        assert json.loads((env.root / "worker.json").read_text())["pid"] == again.pid
        assert spec.log_path.read_text().count("starting: ") == 2
    finally:
        supervised.stop()
    assert again.pid is not None and not _alive(again.pid)
    assert not (env.root / "worker.json").exists()


@pytest.mark.slow
def test_a_worker_outlives_a_killed_server_by_a_second_or_so(tmp_path: Path) -> None:
    """A server killed outright (kill -9, the OOM killer) cannot stop its workers: they stop themselves."""
    server = textwrap.dedent(
        f"""
        import sys, time
        from pathlib import Path
        from parla.engines.supervisor import Supervisor, WorkerSpec, worker_environment
        from parla.settings import Settings
        settings = Settings(_env_file=None, data_dir=Path({str(tmp_path / "data")!r}))
        spec = WorkerSpec("mock", ({str(PARLA)!r}, "serve-engine", "mock"), worker_environment(settings, "mock"),
                          Path({str(tmp_path / "engine-mock.log")!r}), state_path=Path({str(tmp_path / "w.json")!r}))
        supervised = Supervisor([spec])
        supervised.start()
        print(supervised.sections()["mock"].url, flush=True)
        time.sleep(600)
        """
    )
    process = subprocess.Popen([sys.executable, "-c", server], stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        url = process.stdout.readline().strip()
        wait_for(lambda: _answers(url), "the worker did not start", timeout=90)
        worker = json.loads((tmp_path / "w.json").read_text())["pid"]
        process.kill()
        process.wait(timeout=10)
        wait_for(lambda: not _alive(worker), "the worker outlived its server", timeout=15)
    finally:
        if process.poll() is None:
            process.kill()


@pytest.mark.slow
async def test_requests_reach_a_supervised_worker_like_any_engine(
    tmp_path: Path, mock_catalogued: Entry, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The mock engine runs in this process too: as far as the supervisor knows, here it does not.
    monkeypatch.setattr(supervisor, "served_in_process", lambda settings, name: False)
    settings = mock_settings(tmp_path / "data", in_process_worker=False)
    stand_in_env(settings, "mock")
    weights_for(settings, "mock")
    app = create_app(settings)
    async with in_process(app) as client:
        services = app.state.services
        engine = services.engines.get("mock")
        assert isinstance(engine, RemoteEngine) and engine.url == services.settings.engines["mock"].url
        started = time.monotonic()
        while engine.unavailable_reason() is not None:
            assert time.monotonic() - started < 90, engine.unavailable_reason()
            await asyncio.sleep(0.2)
        text = "Hello from a supervised worker."
        body = {"model": "mock", "input": text, "voice": "alloy", "response_format": "wav"}
        response = await client.post("/v1/audio/speech", json=body)
        assert response.status_code == 200, response.text
        assert duration_of(response.content) == pytest.approx(len(text) * 0.065, abs=0.05)
        listed = {e["name"]: e for e in (await client.get("/v1/engines")).json()["engines"]}
        mock = listed["mock"]
        assert mock["runs"] == f"supervised worker at {engine.url}" and mock["available"] and mock["installed"]
        assert mock["memory"]["rss_mb"] > 10 and mock["worker"]["pid"] and mock["worker"]["restarts"] == 0
        assert listed["xtts"]["runs"] == "not running" and listed["piper"]["runs"] == "in process"
        pid = mock["worker"]["pid"]
    assert not _alive(pid)  # stopped with the server


async def test_the_engines_endpoint_lists_every_engine_and_what_it_needs(api: httpx.AsyncClient) -> None:
    listed = {e["name"]: e for e in (await api.get("/v1/engines")).json()["engines"]}
    assert set(catalog.CATALOG) | {"mock", "piper", "clone"} <= set(listed)
    mock = listed["mock"]
    assert (mock["kind"], mock["runs"], mock["available"], mock["environment"]) == (
        "built-in",
        "in process",
        True,
        "this environment",
    )
    assert mock["memory"] == {"rss_mb": None, "vram_mb": 0.0} and mock["worker"] is None
    xtts = listed["xtts"]
    assert (xtts["kind"], xtts["runs"], xtts["installed"], xtts["environment"]) == ("heavy", "not running", False, None)
    assert (
        "/models/xtts/" in xtts["weights_missing"]
        and "config.json, model.pth and vocab.json" in xtts["weights_missing"]
    )
