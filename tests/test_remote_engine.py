"""Engines as workers: ``parla serve-engine``, ``RemoteEngine`` and a gateway that outlives its worker."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import uvicorn
from fastapi import FastAPI, Request, Response
from starlette.middleware.base import RequestResponseEndpoint

from parla.app import create_app
from parla.audio import decode_audio, encode_audio
from parla.engines import AudioChunk, EngineRegistry
from parla.engines.base import (
    Capabilities,
    Engine,
    EngineUnavailableError,
    EngineVoice,
    Param,
    SynthesisRequest,
    VoiceRef,
)
from parla.engines.kokoro import KokoroEngine, normalised, parse_blend
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
from parla.errors import InvalidInputError, ServiceUnavailableError
from parla.services import Services
from parla.services.speech import CROSSFADE_S, SpeechOptions, crossfaded
from parla.settings import MOCK_WORKER_URL, EngineSection, Settings
from parla.worker_app import create_worker_app, default_port
from tests.conftest import (
    InProcessApp,
    Listener,
    _free_port,
    duration_of,
    mock_settings,
    natural_length,
    serving,
    serving_in_process,
    someone_saying,
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


# -- an engine's own voices and prepare_voice, through a worker --------------------------------------

STYLES = {"af_bright": 440.0, "am_deep": 220.0}
"""The test engine's own voices, each spoken as a tone of its pitch (a blend: the weighted pitch)."""


class _Styles(Engine):
    """An engine with voices of its own and blends of them, as Kokoro has (its blend syntax too),
    that speaks a tone per voice, with no model; it records what it was asked."""

    name = "styles"
    description = "Styles: voices of its own."
    capabilities = Capabilities(
        sample_rate=16000, cloning=True, parameters=(Param("voice", str, "", description="A style or blend."),)
    )

    def __init__(self) -> None:
        super().__init__()
        self.looked_up: list[str] = []
        self.prepared: list[VoiceRef] = []
        self.spoken: list[SynthesisRequest] = []

    def voices(self) -> Sequence[EngineVoice]:
        return [EngineVoice(style, f"The {style} style.", "female" if style[1] == "f" else "male") for style in STYLES]

    def _blend(self, spec: str) -> str:
        parts = []
        for style, weight in parse_blend(spec):
            if style.lower() not in STYLES:
                raise ValueError(f"Styles has no voice {style!r}; its voices: {', '.join(STYLES)}")
            parts.append((style.lower(), weight))
        return normalised(parts).canonical

    def voice(self, name: str) -> VoiceRef | None:
        self.looked_up.append(name)
        if not any(word.lower() in STYLES for word in re.findall(r"[A-Za-z0-9_.-]+", name)):
            return None
        try:
            canonical = self._blend(name)
        except ValueError as exc:
            raise InvalidInputError(str(exc), param="voice") from None
        single = canonical in STYLES
        return VoiceRef(
            name=canonical if single else name.strip(),
            id=canonical if single else None,
            presets={self.name: {"voice": canonical}},
            key=f"{self.name}:{canonical}",
            engine=self.name,
        )

    def resolve_parameters(self, given: Any, preset: Any = None) -> dict[str, Any]:
        resolved = super().resolve_parameters(given, preset)
        resolved["voice"] = self._blend(str(resolved.get("voice") or "af_bright"))
        return resolved

    def prepare_voice(self, voice: VoiceRef) -> None:
        self.prepared.append(voice)

    def synthesize(self, request: SynthesisRequest) -> Iterator[AudioChunk]:
        self.spoken.append(request)
        pitch = sum(STYLES[style] * weight for style, weight in parse_blend(str(request.parameters["voice"])))
        rate = self.capabilities.sample_rate
        seconds = np.arange(rate // 2) / rate
        yield AudioChunk((0.3 * np.sin(2 * np.pi * pitch * seconds)).astype(np.float32), rate)


def pitch_of(audio: bytes) -> float:
    """The strongest frequency in ``audio``, in Hz."""
    samples, rate = decode_audio(audio)
    spectrum = np.abs(np.fft.rfft(samples))
    return float(np.fft.rfftfreq(samples.size, 1 / rate)[int(np.argmax(spectrum))])


def recording(app: FastAPI) -> list[str]:
    """The paths of the requests ``app`` gets, from now on, in order."""
    paths: list[str] = []

    @app.middleware("http")
    async def record(request: Request, call_next: RequestResponseEndpoint) -> Response:
        paths.append(request.url.path)
        return await call_next(request)

    return paths


Styled = tuple[InProcessApp, _Styles, list[str]]
"""The gateway, the worker's engine and the paths the worker was asked for."""


@pytest.fixture(scope="module")
async def styled(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Styled]:
    """A worker serving ``_Styles`` and a gateway whose engine ``far`` (not the worker's name for
    it) is that worker, also its cloning engine; the worker may read the gateway's voice files."""
    gateway_dir, worker_dir = tmp_path_factory.mktemp("gateway"), tmp_path_factory.mktemp("worker")
    engine = _Styles()
    worker_settings = mock_settings(
        worker_dir, default_engine="styles", default_clone_engine="styles", allowed_paths=[gateway_dir]
    )
    worker_services = Services.build(worker_settings, engines=EngineRegistry([engine]))
    app = create_worker_app("styles", worker_settings, services=worker_services)
    paths = recording(app)
    try:
        with serving(app) as url:
            settings = mock_settings(
                gateway_dir, engines={"far": {"url": url}}, default_clone_engine="far", in_process_worker=False
            )
            async with serving_in_process(settings) as gateway:
                yield gateway, engine, paths
    finally:
        worker_services.close()


async def test_the_workers_own_voices_are_listed_by_the_gateway(styled: Styled) -> None:
    gateway, _, _ = styled
    for path, key in (("/v1/audio/voices", "voices"), ("/v1/voices", "voices")):
        listed = (await gateway.client.get(path)).json()[key]
        own = [v for v in listed if v.get("engine") == "far"]
        assert [v["name"] for v in own] == list(STYLES), path
        assert own[1]["gender"] == "male" and own[1]["description"] == "The am_deep style."


@pytest.mark.parametrize(
    ("voice", "pitch"), [("am_deep", 220), ("AF_Bright", 440), ("af_bright(0.25)+am_deep(0.75)", 275)]
)
async def test_the_workers_voices_and_blends_speak_through_the_gateway(styled: Styled, voice: str, pitch: int) -> None:
    gateway, engine, _ = styled
    body = {"model": "tts-1", "input": "Hello there.", "voice": voice, "response_format": "wav"}
    response = await gateway.client.post("/v1/audio/speech", json=body)
    assert response.status_code == 200, response.text
    assert pitch_of(response.content) == pytest.approx(pitch, abs=4)
    # The worker's engine got the voice as the gateway resolved it, its preset under its own name.
    assert engine.spoken[-1].voice.preset("styles") == {"voice": engine.spoken[-1].parameters["voice"]}
    explicit = await gateway.client.post("/v1/audio/speech", json={**body, "model": "far"})
    assert explicit.status_code == 200 and pitch_of(explicit.content) == pytest.approx(pitch, abs=4)


async def test_a_blend_the_worker_refuses_is_a_400_in_its_words(styled: Styled) -> None:
    gateway, _, _ = styled
    body = {"input": "Hello there.", "voice": "af_bright+zz_nobody"}
    response = await gateway.client.post("/v1/audio/speech", json=body)
    assert response.status_code == 400, response.text
    assert "Styles has no voice 'zz_nobody'" in response.json()["detail"]
    assert response.json()["error"]["param"] == "voice"


async def test_names_that_are_none_of_the_workers_voices_are_not_asked_of_it(styled: Styled) -> None:
    gateway, engine, paths = styled
    paths.clear()
    looked_up = len(engine.looked_up)
    unknown = await gateway.client.post("/v1/audio/speech", json={"input": "Hi.", "voice": "zz_nobody"})
    assert unknown.status_code == 400 and "far's own voice (af_bright, am_deep)" in unknown.json()["detail"]
    builtin = await gateway.client.post("/v1/audio/speech", json={"input": "Hi.", "voice": "alloy"})
    assert builtin.status_code == 200  # the mock engine's, here
    assert not [path for path in paths if path.startswith("/v1/engine/voices")], paths
    assert len(engine.looked_up) == looked_up


async def test_a_voice_learned_on_the_gateway_is_prepared_by_the_worker(styled: Styled) -> None:
    gateway, engine, _ = styled
    spoken = "The birch canoe slid on the smooth planks."
    created = await gateway.client.post("/v1/voices", json={"name": "prepared-remotely"})
    assert created.status_code == 201, created.text
    voice = created.json()["id"]
    before = len(engine.prepared)
    sample = {"file": ("canoe.wav", someone_saying(spoken))}
    added = await gateway.client.post(f"/v1/voices/{voice}/samples", files=sample, data={"transcript": spoken})
    assert added.status_code == 201, added.text
    for _ in range(100):  # warm_voice runs after the response, on the engine's thread
        if len(engine.prepared) > before:
            break
        await asyncio.sleep(0.05)
    assert len(engine.prepared) == before + 1, "the worker's engine was not asked to prepare the voice"
    prepared = engine.prepared[-1]
    assert prepared.samples and prepared.samples[0][1] == spoken and prepared.samples[0][0].is_file()
    assert prepared.key == gateway.services.voices.resolve(voice).key


async def test_prepare_voice_says_what_the_worker_says(styled: Styled, tmp_path: Path) -> None:
    gateway, engine, _ = styled
    far = gateway.services.engines.get("far")
    before = len(engine.prepared)
    far.prepare_voice(VoiceRef("plain"))  # nothing to learn: the worker is not asked
    assert len(engine.prepared) == before
    outside = tmp_path / "outside.wav"  # not where the worker may read
    outside.write_bytes(encode_audio(np.zeros(1600, dtype=np.float32), 16000, "wav"))
    with pytest.raises(InvalidInputError, match="outside the allowed directories"):
        far.prepare_voice(VoiceRef("elsewhere", samples=((outside, None),)))


def test_a_worker_that_stopped_answering_makes_its_voices_a_503_not_unknown(tmp_path: Path) -> None:
    engine = RemoteEngine("far", EngineSection(url=f"http://127.0.0.1:{_free_port()}"))
    info = {"name": "styles", "capabilities": _Styles.capabilities.describe(), "status": {"loaded": True}}
    engine._take_worker(info)  # a worker older than its voices' listing: none
    assert engine.voices() == ()
    engine._take_worker({**info, "voices": [v.describe("styles") for v in _Styles().voices()]})
    engine._down = None  # as if it had answered that
    assert [v.name for v in engine.voices()] == list(STYLES)
    assert engine.voice("nobody") is None and engine.voice("alloy") is None  # never asked: nothing listens
    with pytest.raises(EngineUnavailableError, match="engine 'far' is unavailable"):
        engine.voice("am_deep")  # asked: nobody answers
    assert engine.unavailable_reason()
    with pytest.raises(EngineUnavailableError, match="engine 'far' is unavailable"):
        engine.voice("am_deep")  # known down now: not asked again, the same answer
    settings = mock_settings(tmp_path)
    built = Services.build(settings, engines=EngineRegistry([engine, MockEngine()]))
    try:
        with pytest.raises(ServiceUnavailableError, match="engine 'far' is unavailable"):
            built.speech.prepare(SpeechOptions(input="Hello.", voice="af_bright(0.5)+am_deep"), source="test")
    finally:
        built.close()


@pytest.mark.model
async def test_kokoro_in_a_worker_lists_and_blends_its_styles_as_it_does_here(tmp_path: Path) -> None:
    local = KokoroEngine()
    if local.unavailable_reason():
        pytest.skip(f"kokoro: {local.unavailable_reason()}")
    worker_settings = Settings(data_dir=tmp_path / "worker", _env_file=None)
    with serving(create_worker_app("kokoro", worker_settings)) as url:
        settings = mock_settings(tmp_path / "gateway", engines={"kokoro": {"url": url}}, in_process_worker=False)
        async with serving_in_process(settings) as gateway:
            listed = (await gateway.client.get("/v1/audio/voices")).json()["voices"]
            assert [v for v in listed if v.get("engine") == "kokoro"] == [v.describe("kokoro") for v in local.voices()]
            blend = "jf_alpha(0.3)+jm_kumo(0.7)"
            assert gateway.services.engines.get("kokoro").voice(blend) == local.voice(blend)
            body = {"input": "The sun is out.", "voice": blend, "response_format": "wav"}
            response = await gateway.client.post("/v1/audio/speech", json=body)
            assert response.status_code == 200, response.text
            assert 0.5 < duration_of(response.content) < 5
            missing = await gateway.client.post("/v1/audio/speech", json={**body, "voice": "jf_alpha+jf_nobody"})
            assert missing.status_code == 400 and "no voice 'jf_nobody'" in missing.json()["detail"]
