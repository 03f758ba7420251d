"""Engines as workers: ``parla serve-engine``, ``RemoteEngine`` and a gateway that outlives its worker."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import uvicorn

from parla.app import create_app
from parla.audio import decode_audio, encode_audio
from parla.engines import AudioChunk, EngineRegistry
from parla.engines.base import Capabilities
from parla.engines.mock import MockEngine
from parla.engines.piper import PiperEngine
from parla.engines.remote import (
    FrameReader,
    RemoteEngine,
    RemoteSynthesisError,
    audio_frame,
    capabilities_from,
    end_frame,
)
from parla.errors import ServiceUnavailableError
from parla.services import Services
from parla.services.speech import CROSSFADE_S, SpeechOptions, crossfaded
from parla.settings import MOCK_WORKER_URL, EngineSection, Settings
from parla.worker_app import create_worker_app, default_port
from tests.conftest import (
    Listener,
    _free_port,
    duration_of,
    mock_settings,
    natural_length,
    serving,
    serving_in_process,
    wait_for,
    wer,
)

PARAGRAPH = (
    "When the sunlight strikes raindrops in the air, they act as a prism and form a rainbow. "
    "The rainbow is a division of white light into many beautiful colors. "
    "These take the shape of a long round arch, with its path high above."
)


# -- the pieces ---------------------------------------------------------------------------------


def test_frames_come_back_as_the_same_chunks_whatever_the_network_does() -> None:
    chunks = [
        AudioChunk(np.linspace(-1, 1, n, dtype=np.float32), rate) for n, rate in ((5, 22050), (0, 22050), (7, 8000))
    ]
    wire = b"".join(audio_frame(c) for c in chunks) + end_frame()
    reader = FrameReader()
    got = [c for i in range(0, len(wire), 3) for c in reader.feed(wire[i : i + 3])]
    assert reader.complete
    assert [(c.sample_rate, c.samples.tolist()) for c in got] == [(c.sample_rate, c.samples.tolist()) for c in chunks]
    failing = FrameReader()
    with pytest.raises(RemoteSynthesisError, match="model exploded"):
        list(failing.feed(audio_frame(chunks[0]) + end_frame("model exploded")))


def test_capabilities_survive_the_trip() -> None:
    for capabilities in (PiperEngine.capabilities, MockEngine.capabilities, Capabilities(24000, min_dialogue_turns=2)):
        assert capabilities_from(capabilities.describe()) == capabilities


def test_workers_are_configured_per_engine_and_replace_local_ones(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PARLA_ENGINES__PIPER__URL", "http://gpu-1:8006")
    monkeypatch.setenv("PARLA_ENGINES__DIA__URL", "http://gpu-2:8003/")
    settings = Settings(_env_file=None)
    assert settings.engines["dia"] == EngineSection(url="http://gpu-2:8003/")
    registry = EngineRegistry.from_entry_points(settings)
    piper, dia = registry.get("piper"), registry.get("dia")
    assert isinstance(piper, RemoteEngine) and piper.url == "http://gpu-1:8006"
    assert isinstance(dia, RemoteEngine) and dia.url == "http://gpu-2:8003"
    assert not isinstance(registry.get("mock"), RemoteEngine)
    assert not isinstance(EngineRegistry.from_entry_points(settings, remote=False).get("piper"), RemoteEngine)
    registry.shutdown()


@pytest.mark.parametrize("variable", ["TESTING", "TESTING_UI"])
def test_seed_testing_mode_routes_to_the_mock_worker(monkeypatch: pytest.MonkeyPatch, variable: str) -> None:
    monkeypatch.setenv(variable, "true")
    settings = Settings(_env_file=None)
    assert settings.engines["mock"].url == MOCK_WORKER_URL == f"http://127.0.0.1:{default_port('mock')}"
    assert settings.default_engine == settings.default_clone_engine == "mock"
    assert Settings(default_engine="piper", _env_file=None).default_engine == "piper"  # named settings win


def test_a_worker_that_is_not_there_makes_the_engine_unavailable(services: Services) -> None:
    url = f"http://127.0.0.1:{_free_port()}"
    settings = services.settings.model_copy(update={"engines": {"far": EngineSection(url=url)}})
    engine = RemoteEngine("far", settings.engines["far"])
    engine.refresh()  # what its refresher thread does in the background
    started = time.monotonic()
    reason = engine.unavailable_reason()
    assert reason and url in reason and not engine.status().available and not engine.loaded
    assert engine.unavailable_reason() == reason and time.monotonic() - started < 2  # remembered, cheap
    built = Services.build(settings, engines=EngineRegistry([engine, PiperEngine.from_settings(settings)]))
    try:
        with pytest.raises(ServiceUnavailableError, match="engine 'far' is unavailable"):
            built.speech.prepare(SpeechOptions(input="Hello.", model="far"), source="test")
    finally:
        built.close()


async def test_a_mock_worker_speaks_the_voice_files_it_may_read(tmp_path: Path) -> None:
    """The gateway's voice files travel as paths: the worker reads them where it is allowed to
    (shared storage, its PARLA_ALLOWED_PATHS) and refuses them elsewhere."""
    shared, own = tmp_path / "gateway", tmp_path / "worker"
    (shared / "refs").mkdir(parents=True)
    (shared / "refs" / "tone.wav").write_bytes(encode_audio(np.full(22050, 0.1, dtype=np.float32), 22050, "wav"))
    worker_settings = Settings(data_dir=own, allowed_paths=[shared], _env_file=None)
    with serving(create_worker_app("mock", worker_settings)) as worker_url:
        settings = mock_settings(shared, engines={"mock": {"url": worker_url}}, in_process_worker=False)
        async with serving_in_process(settings) as gateway:
            inputs = [{"text": "Hi.", "voice_id": "refs/tone.wav"}, {"text": "Hello.", "voice_id": "refs/tone.wav"}]
            body = {"inputs": inputs, "output_filepath": "out/d.wav"}
            response = await gateway.client.post("/v1/text-to-dialogue?engine=mock", json=body)
            assert response.status_code == 200, response.text
            assert duration_of((shared / "out" / "d.wav").read_bytes()) == pytest.approx(2.35, abs=0.02)
    stranger = Settings(data_dir=tmp_path / "elsewhere", _env_file=None)
    with serving(create_worker_app("mock", stranger)) as stranger_url:
        voice = {"name": "tone", "samples": [[str(shared / "refs" / "tone.wav"), None]]}
        async with httpx.AsyncClient() as client:
            refused = await client.post(
                f"{stranger_url}/v1/text-to-speech/tone/stream", json={"text": "Hi.", "voice": voice}
            )
        assert refused.status_code == 400 and "outside the allowed directories" in refused.json()["detail"]


# -- a gateway and a worker in another process ------------------------------------------------


class Worker:
    """``parla serve-engine piper`` in a subprocess, on a fixed port so it can come back."""

    def __init__(self, data_dir: Path) -> None:
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {**os.environ, "PARLA_DATA_DIR": str(data_dir), "PARLA_LOG_LEVEL": "warning"}
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        command = [sys.executable, "-m", "parla", "serve-engine", "piper", "--port", str(self.port)]
        self.process = subprocess.Popen(command, env=self.env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        wait_for(lambda: httpx.get(f"{self.url}/health", timeout=1).json()["model_loaded"], "the worker did not start")

    def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=10)


@pytest.fixture(scope="module")
def worker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Worker]:
    running = Worker(tmp_path_factory.mktemp("worker"))
    running.start()
    yield running
    if running.process and running.process.poll() is None:
        running.process.terminate()
        running.process.wait(timeout=10)


@pytest.fixture(scope="module")
def gateway(worker: Worker, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Services]]:
    """A second app whose ``piper`` is the worker, under uvicorn on a free port."""
    settings = Settings(
        data_dir=tmp_path_factory.mktemp("gateway"),
        engines={"piper": EngineSection(url=worker.url)},
        in_process_worker=False,
        _env_file=None,
    )
    services = Services.build(settings)
    port = _free_port()
    uv = uvicorn.Server(uvicorn.Config(create_app(services=services), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=uv.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    wait_for(lambda: httpx.get(f"{url}/health", timeout=1).json()["model_loaded"], "the gateway did not start")
    yield url, services
    uv.should_exit = True
    thread.join(timeout=10)
    services.close()


@pytest.mark.model
def test_worker_serves_its_engine_with_the_microservice_api(worker: Worker) -> None:
    info = httpx.get(f"{worker.url}/v1/engine").json()
    assert info["name"] == "piper" and info["capabilities"]["sample_rate"] == 22050
    assert httpx.get(f"{worker.url}/").json()["model"] == "piper"
    health = httpx.get(f"{worker.url}/health").json()
    assert [e["name"] for e in health["engines"]] == ["piper"]
    outside = httpx.post(f"{worker.url}/v1/text-to-speech/alloy", json={"text": "Hi.", "output_filepath": "/etc/x.wav"})
    assert outside.status_code == 400


@pytest.mark.model
def test_speech_streams_through_the_worker(gateway: tuple[str, Services], listener: Listener) -> None:
    url, services = gateway
    assert isinstance(services.engines.get("piper"), RemoteEngine)
    body = {"model": "piper", "input": PARAGRAPH, "voice": "alloy", "response_format": "wav", "seed": 4}
    arrivals: list[float] = []
    parts: list[bytes] = []
    with httpx.stream("POST", f"{url}/v1/audio/speech", json=body, timeout=120) as response:
        assert response.status_code == 200, response.read()
        started = time.monotonic()
        for part in response.iter_bytes():
            arrivals.append(time.monotonic() - started)
            parts.append(part)
    audio = b"".join(parts)
    low, high = natural_length(PARAGRAPH)
    assert low < duration_of(audio) < high
    assert len(arrivals) > 2 and arrivals[0] < arrivals[-1] - 0.2, arrivals  # first bytes well before the last
    assert wer(PARAGRAPH, listener.transcribe(audio)) < 0.15
    # The worker's chunks arrive as they were made (the crossfades between pieces depend on where
    # chunks end): the audio is what the same engine, run here, makes of the same plan.
    options = SpeechOptions(input=PARAGRAPH, voice="alloy", model="piper", response_format="wav", seed=4)
    plan = services.speech.prepare(options, source="test")
    piper = PiperEngine.from_settings(services.settings)
    pieces = (piper.synthesize(request) for request in plan.requests())
    local = np.concatenate([c.samples for c in crossfaded(pieces, CROSSFADE_S)])
    remote, _ = decode_audio(audio)
    assert remote.size == local.size and np.allclose(remote, local, atol=2e-3)


@pytest.mark.model
def test_standard_api_and_models_go_through_the_worker(gateway: tuple[str, Services]) -> None:
    url, services = gateway
    body = {"text": "Rice is often served in round bowls.", "output_filepath": "out/remote.wav"}
    response = httpx.post(f"{url}/v1/text-to-speech/onyx?engine=piper", json=body, timeout=120)
    assert response.status_code == 200, response.text
    assert duration_of((services.settings.data_dir / "out" / "remote.wav").read_bytes()) > 1
    model = httpx.get(f"{url}/v1/models/piper").json()
    assert "worker at" in model["description"] and model["capabilities"]["sample_rate"] == 22050
    assert httpx.post(f"{url}/v1/load-model?engine=piper").json()["engine"] == "piper"


@pytest.mark.model
def test_a_killed_worker_is_a_503_until_it_is_back(gateway: tuple[str, Services], worker: Worker) -> None:
    url, _ = gateway
    body = {"model": "piper", "input": "The box was thrown beside the parked truck.", "response_format": "wav"}

    def piper_state() -> dict[str, Any]:
        engines = httpx.get(f"{url}/health", timeout=5).json()["engines"]
        return next(e for e in engines if e["name"] == "piper")

    worker.kill()
    wait_for(lambda: not piper_state()["available"], "/health did not notice the worker was gone", timeout=10)
    assert worker.url in piper_state()["reason"]
    health = httpx.get(f"{url}/health").json()
    assert health["status"] == "degraded" and health["model_loaded"] is False
    refused = httpx.post(f"{url}/v1/audio/speech", json=body, timeout=30)
    assert refused.status_code == 503 and "'piper'" in refused.json()["detail"]
    standard = httpx.post(
        f"{url}/v1/text-to-speech/alloy?engine=piper", json={"text": "Hi.", "output_filepath": "x.wav"}
    )
    assert standard.status_code == 503 and "'piper'" in standard.json()["detail"]
    assert httpx.post(f"{url}/v1/audio/speech", json={**body, "model": "clone"}, timeout=60).status_code == 200

    worker.start()  # same port; the gateway was never restarted
    wait_for(lambda: piper_state()["available"], "/health did not notice the worker was back", timeout=10)
    again = httpx.post(f"{url}/v1/audio/speech", json=body, timeout=60)
    assert again.status_code == 200 and duration_of(again.content) > 1
