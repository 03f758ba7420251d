"""An existing model microservice behind Parla: ``PARLA_ENGINES__<NAME>__URL`` pointing at a service
that speaks the model microservice API alone (files on shared storage, ``/health``, load/unload),
not at a Parla worker. Parla detects which it is talking to.

The service here is written to that API and nothing more, in a few lines: it answers a tone whose
length depends on the text, writes it where it is told, and records what it was sent."""

from __future__ import annotations

import io
import threading
import wave
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
import uvicorn
from fastapi import FastAPI
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from parla.audio import decode_audio
from parla.engines.remote import DEFAULT_SERVICE_SAMPLE_RATE, RemoteEngine
from parla.services.speech import CROSSFADE_S
from parla.services.voices import VoiceCreate
from parla.settings import EngineSection, Settings
from parla.worker_app import create_worker_app
from tests.conftest import (
    InProcessApp,
    _free_port,
    mock_settings,
    serving,
    serving_in_process,
    someone_saying,
    wait_for,
)

RATE = 16_000
"""The service's own rate: not the gateway's default, so that the rate is seen to come from its files."""
SPOKEN = "The birch canoe slid on the smooth planks."


# -- a plain model microservice, written to the API -------------------------------------------------


class TextToSpeech(BaseModel):
    text: str = Field(..., min_length=1)
    output_filepath: str
    parameters: dict[str, Any] = Field(default_factory=dict)


class DialogueInput(BaseModel):
    text: str = Field(..., min_length=1)
    voice_id: str


class TextToDialogue(BaseModel):
    inputs: list[DialogueInput] = Field(..., min_length=1)
    output_filepath: str
    parameters: dict[str, Any] = Field(default_factory=dict)


@dataclass
class Received:
    voice_id: str
    text: str
    output_filepath: str
    parameters: dict[str, Any]
    reference: bytes
    """The bytes of the voice file, as the service could read them when it was asked."""
    wrote: npt.NDArray[np.float32]
    """What it wrote, as float samples (from its 16-bit WAV)."""


def tone(text: str) -> npt.NDArray[np.int16]:
    """0.03 s a character of a 330 Hz tone: the length says which text it was made for."""
    t = np.arange(int(0.03 * RATE * len(text))) / RATE
    return (0.3 * np.sin(2 * np.pi * 330 * t) * 32767).astype(np.int16)


def wav_file(path: Path, samples: npt.NDArray[np.int16]) -> None:
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(RATE)
        out.writeframes(samples.tobytes())
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(buffer.getvalue())


@dataclass
class PlainService:
    """A model microservice: ``POST /v1/text-to-speech/{voice_id}`` and ``/v1/text-to-dialogue``
    (files in, files out), ``/v1/load-model``, ``/v1/unload-model``, ``/health``, ``/``.
    ``mounts``: path prefixes as the service names them, and where they are here (a container's view)."""

    mounts: dict[str, Path] = field(default_factory=dict)
    received: list[Received] = field(default_factory=list)
    calls: list[str] = field(default_factory=list)
    loaded: bool = True
    failure: tuple[int, str] | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)

    def here(self, path: str) -> Path:
        for prefix, place in self.mounts.items():
            if path.startswith(prefix + "/"):
                return place / path.removeprefix(prefix + "/")
        return Path(path)

    def speak(self, voice_id: str, text: str, output: str, parameters: dict[str, Any]) -> npt.NDArray[np.int16]:
        reference = self.here(voice_id).read_bytes()  # a voice it cannot read is its own 500
        samples = tone(text)
        wav_file(self.here(output), samples)
        with self.lock:
            self.received.append(
                Received(voice_id, text, output, parameters, reference, (samples / 32768.0).astype(np.float32))
            )
        return samples

    def app(self) -> FastAPI:
        app = FastAPI(title="Tone TTS microservice")

        def refused() -> JSONResponse | None:
            if self.failure is not None:
                status, detail = self.failure
                return JSONResponse({"detail": detail}, status_code=status)
            if not self.loaded:
                return JSONResponse({"detail": "Model not loaded"}, status_code=503)
            return None

        @app.post("/v1/text-to-speech/{voice_id:path}", response_model=None)
        def text_to_speech(voice_id: str, body: TextToSpeech) -> dict[str, Any] | JSONResponse:
            if (refusal := refused()) is not None:
                return refusal
            self.speak(voice_id, body.text, body.output_filepath, body.parameters)
            message = "Audio generated successfully"
            return {"status": "success", "output_filepath": body.output_filepath, "message": message}

        @app.post("/v1/text-to-dialogue", response_model=None)
        def text_to_dialogue(body: TextToDialogue) -> dict[str, Any] | JSONResponse:
            if (refusal := refused()) is not None:
                return refusal
            turns = [tone(item.text) for item in body.inputs]
            wav_file(self.here(body.output_filepath), np.concatenate(turns))
            message = "Dialogue generated successfully"
            return {"status": "success", "output_filepath": body.output_filepath, "message": message}

        @app.post("/v1/load-model")
        def load_model() -> dict[str, Any]:
            self.calls.append("load")
            self.loaded = True
            return {"status": "success", "message": "Model loaded successfully"}

        @app.post("/v1/unload-model")
        def unload_model() -> dict[str, Any]:
            self.calls.append("unload")
            self.loaded = False
            return {"status": "success", "message": "Model unloaded successfully"}

        @app.get("/health")
        def health() -> dict[str, Any]:
            return {"status": "healthy", "model_loaded": self.loaded, "device": "cpu", "dependencies_available": True}

        @app.get("/")
        def root() -> dict[str, Any]:
            return {"message": "Tone TTS microservice", "model": "tone", "version": "1.0"}

        return app


# -- a gateway in front of it ---------------------------------------------------------------------


@dataclass
class Setup:
    service: PlainService
    url: str
    gateway: InProcessApp
    voice: str
    """A library voice's name (one sample, with its transcript)."""
    sample: Path
    shared: Path
    """The gateway's default shared directory for the ``tone`` engine."""
    nfs: Path
    """The ``mounted`` engine's shared directory, which the service sees as ``/shared``."""
    default_voice: Path


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[PlainService, str, Path]]:
    nfs = tmp_path_factory.mktemp("nfs")
    plain = PlainService(mounts={"/shared": nfs})
    with serving(plain.app()) as url:
        yield plain, url, nfs


@pytest.fixture(scope="module")
async def setup(
    service: tuple[PlainService, str, Path], tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Setup]:
    plain, url, nfs = service
    data = tmp_path_factory.mktemp("gateway")
    default_voice = tmp_path_factory.mktemp("refs") / "narrator.wav"
    default_voice.write_bytes(someone_saying("This is the narrator speaking.", "en-us+m3"))
    engines = {
        "tone": {"url": url},
        "narrated": {"url": url, "default_voice": str(default_voice)},
        "mounted": {"url": url, "shared_dir": str(nfs), "service_shared_dir": "/shared", "sample_rate": "22050"},
    }
    settings = mock_settings(data, engines=engines, in_process_worker=False)
    async with serving_in_process(settings) as gateway:
        voices = gateway.services.voices
        voice, _ = voices.create_with_sample(VoiceCreate(name="ada"), someone_saying(SPOKEN), SPOKEN)
        sample = voices.resolve(voice.id).samples[0][0]
        yield Setup(plain, url, gateway, "ada", sample, data.resolve() / "shared" / "tone", nfs, default_voice)


@pytest.fixture
def plain(setup: Setup) -> Iterator[PlainService]:
    """The service, its records cleared and its model loaded, and left working after the test."""
    setup.service.received.clear()
    setup.service.calls.clear()
    setup.service.loaded = True
    yield setup.service
    setup.service.failure = None
    setup.service.loaded = True


def engine_of(setup: Setup, name: str = "tone") -> RemoteEngine:
    engine = setup.gateway.services.engines.get(name)
    assert isinstance(engine, RemoteEngine)
    return engine


def leftovers(shared: Path) -> list[Path]:
    return sorted((shared / "out").iterdir()) if (shared / "out").exists() else []


# -- detection --------------------------------------------------------------------------------------


def test_a_plain_service_is_detected_with_conservative_capabilities(service: tuple[PlainService, str, Path]) -> None:
    _, url, _ = service
    engine = RemoteEngine("tone", EngineSection(url=url))
    try:
        assert engine.kind is None and "has not been asked yet" in (engine.unavailable_reason() or "")
        engine.refresh()
        assert engine.kind == "service" and engine.unavailable_reason() is None
        assert engine.loaded and engine.device == "cpu"
        assert engine.description.startswith("Tone TTS microservice, tone (model microservice at")
        capabilities = engine.capabilities
        assert capabilities.sample_rate == DEFAULT_SERVICE_SAMPLE_RATE  # until it has written a file
        assert capabilities.cloning and capabilities.dialogue and capabilities.single_speaker
        assert engine.voice_presets == {}
        assert engine.shared_dir == Path("data/shared/tone").absolute()  # no data dir given: the default one
    finally:
        engine.close()


async def test_models_and_health_show_the_service(setup: Setup, plain: PlainService) -> None:
    model = (await setup.gateway.client.get("/v1/models/tone")).json()
    assert model["available"] is True and "model microservice at" in model["description"]
    assert model["capabilities"]["cloning"] is True
    engines = {e["name"]: e for e in (await setup.gateway.client.get("/health")).json()["engines"]}
    assert engines["tone"]["available"] and engines["tone"]["loaded"] and engines["tone"]["device"] == "cpu"
    assert engine_of(setup).shared_dir == setup.shared  # under the gateway's data dir


def test_a_parla_worker_is_still_detected_as_a_worker(tmp_path: Path) -> None:
    with serving(create_worker_app("mock", Settings(data_dir=tmp_path, _env_file=None))) as url:
        engine = RemoteEngine("mock", EngineSection(url=url))
        try:
            engine.refresh()
            assert engine.kind == "worker" and engine.unavailable_reason() is None
            assert "Parla worker at" in engine.description and engine.capabilities.sample_rate == 22050
        finally:
            engine.close()


@contextmanager
def serving_anything(app: FastAPI) -> Iterator[str]:
    """``app`` under uvicorn on a free port, as soon as it listens (``serving`` waits for a model)."""
    port = _free_port()
    uv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=uv.run, daemon=True)
    thread.start()
    try:
        wait_for(lambda: uv.started, "the server did not start")
        yield f"http://127.0.0.1:{port}"
    finally:
        uv.should_exit = True
        thread.join(timeout=30)


def test_a_server_of_neither_kind_or_none_at_all_is_unavailable() -> None:
    with serving_anything(FastAPI()) as url:
        odd = RemoteEngine("odd", EngineSection(url=url))
        odd.refresh()
        assert "neither a Parla worker" in (odd.unavailable_reason() or "") and odd.kind is None
        odd.close()
    with serving(PlainService().app()) as url:
        engine = RemoteEngine("tone", EngineSection(url=url))
        engine.refresh()
        assert engine.kind == "service" and engine.status().available
    engine.refresh()  # the service is gone
    reason = engine.unavailable_reason() or ""
    assert f"the model microservice at {url} is not answering" in reason and not engine.loaded
    engine.close()


def test_the_sections_fields_configure_a_plain_service(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{_free_port()}"
    bad = RemoteEngine("tone", EngineSection(url=url, sample_rate="fast", shared_dir=str(tmp_path)))
    assert "PARLA_ENGINES__TONE__SAMPLE_RATE" in (bad.unavailable_reason() or "")
    assert bad.shared_dir == tmp_path
    bad.close()
    fixed = RemoteEngine("tone", EngineSection(url=url, sample_rate="48000", single_speaker="false"))
    assert (fixed.service_settings.sample_rate, fixed.service_settings.single_speaker) == (48000, False)
    fixed.close()


# -- speech ----------------------------------------------------------------------------------------


async def test_speech_in_a_library_voice_is_the_services_audio(setup: Setup, plain: PlainService) -> None:
    body = {
        "model": "tone",
        "input": "Hello there.",
        "voice": setup.voice,
        "response_format": "wav",
        "seed": 7,
        "speed": 1.25,
        "parameters": {"temperature": 0.7, "not_a_knob": 1},
    }
    response = await setup.gateway.client.post("/v1/audio/speech", json=body)
    assert response.status_code == 200, response.text
    assert response.headers["x-ignored-parameters"] == "not_a_knob"
    [call] = plain.received
    # The voice's reference audio, copied into the shared directory, by path.
    reference = Path(call.voice_id)
    assert reference.parent == setup.shared / "voices" and reference.read_bytes() == setup.sample.read_bytes()
    assert call.reference == setup.sample.read_bytes()
    assert call.parameters == {
        "seed": 7,
        "speed": 1.25,
        "language": "en",
        "transcription": SPOKEN,
        "temperature": 0.7,
    }
    assert Path(call.output_filepath).parent == setup.shared / "out"
    audio, rate = decode_audio(response.content)
    assert rate == RATE and audio.size == call.wrote.size and np.allclose(audio, call.wrote, atol=1e-4)
    assert leftovers(setup.shared) == []  # the service's file read and deleted
    assert engine_of(setup).capabilities.sample_rate == RATE  # learned from its file


async def test_a_longer_text_is_asked_for_sentence_by_sentence(setup: Setup, plain: PlainService) -> None:
    text = "The first sentence is here. And then the second one follows it."
    body = {"model": "tone", "input": text, "voice": setup.voice, "response_format": "wav"}
    response = await setup.gateway.client.post("/v1/audio/speech", json=body)
    assert response.status_code == 200, response.text
    assert [call.text for call in plain.received] == [
        "The first sentence is here.",
        "And then the second one follows it.",
    ]
    assert len({call.voice_id for call in plain.received}) == 1  # the reference is copied once
    audio, _ = decode_audio(response.content)
    made = sum(call.wrote.size for call in plain.received)
    assert made - int(CROSSFADE_S * RATE) - 2 <= audio.size <= made  # the pieces, crossfaded
    assert leftovers(setup.shared) == []


async def test_the_standard_api_speaks_through_it(setup: Setup, plain: PlainService) -> None:
    body = {"text": "Rice is often served in round bowls.", "output_filepath": "out/std.wav"}
    response = await setup.gateway.client.post(f"/v1/text-to-speech/{setup.voice}?engine=tone", json=body)
    assert response.status_code == 200, response.text
    [call] = plain.received
    written, rate = decode_audio(setup.gateway.settings.data_dir / "out" / "std.wav")
    assert rate == RATE and np.allclose(written, call.wrote, atol=1e-4)
    assert leftovers(setup.shared) == []


async def test_a_built_in_voice_needs_a_reference_recording(setup: Setup, plain: PlainService) -> None:
    body = {"text": "Hello.", "output_filepath": "out/builtin.wav"}
    refused = await setup.gateway.client.post("/v1/text-to-speech/alloy?engine=tone", json=body)
    assert refused.status_code == 400, refused.text
    detail = refused.json()["detail"]
    assert "voice 'alloy' has none" in detail and "PARLA_ENGINES__TONE__DEFAULT_VOICE" in detail
    # The streaming route says so too, with a status, not a 200 that breaks off.
    streamed = await setup.gateway.client.post(
        "/v1/audio/speech", json={"model": "tone", "voice": "alloy", "input": "Hello."}
    )
    assert streamed.status_code == 400 and "voice 'alloy' has none" in streamed.json()["detail"], streamed.text
    assert plain.received == []
    # With a default voice file, voices without samples speak in it.
    spoken = await setup.gateway.client.post("/v1/text-to-speech/alloy?engine=narrated", json=body)
    assert spoken.status_code == 200, spoken.text
    [call] = plain.received
    assert call.reference == setup.default_voice.read_bytes() and "transcription" not in call.parameters


async def test_shared_storage_mounted_elsewhere_on_the_services_side(setup: Setup, plain: PlainService) -> None:
    body = {"model": "mounted", "input": "Hello there.", "voice": setup.voice, "response_format": "wav"}
    response = await setup.gateway.client.post("/v1/audio/speech", json=body)
    assert response.status_code == 200, response.text
    [call] = plain.received
    assert call.voice_id.startswith("/shared/voices/") and call.output_filepath.startswith("/shared/out/")
    assert call.reference == setup.sample.read_bytes() and leftovers(setup.nfs) == []
    assert engine_of(setup, "mounted").capabilities.sample_rate == 22050  # the section's word wins


# -- the model's lifetime ---------------------------------------------------------------------------


async def test_load_and_unload_reach_the_service(setup: Setup, plain: PlainService) -> None:
    client = setup.gateway.client
    unloaded = await client.post("/v1/unload-model?engine=tone")
    assert unloaded.status_code == 200 and plain.calls == ["unload"] and not plain.loaded
    engines = {e["name"]: e for e in (await client.get("/health")).json()["engines"]}
    assert engines["tone"]["available"] and not engines["tone"]["loaded"]  # its /health, asked at once
    # A request while it is unloaded loads it first.
    body = {"model": "tone", "input": "Hello.", "voice": setup.voice, "response_format": "wav"}
    assert (await client.post("/v1/audio/speech", json=body)).status_code == 200
    assert plain.calls == ["unload", "load"] and len(plain.received) == 1
    assert (await client.post("/v1/load-model?engine=tone")).json()["engine"] == "tone"
    assert plain.calls == ["unload", "load", "load"] and engine_of(setup).loaded


# -- failures ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(("status", "expected"), [(500, 502), (400, 502), (503, 503)])
async def test_a_failing_service_is_a_clear_error_with_its_words(
    setup: Setup, plain: PlainService, status: int, expected: int
) -> None:
    plain.failure = (status, "CUDA out of memory")
    body = {"text": "Hello there.", "output_filepath": "out/failed.wav"}
    response = await setup.gateway.client.post(f"/v1/text-to-speech/{setup.voice}?engine=tone", json=body)
    assert response.status_code == expected, response.text
    detail = response.json()["detail"]
    assert "CUDA out of memory" in detail and "'tone'" in detail
    if expected == 502:
        assert f"the model microservice at {setup.url} answered {status}" in detail
    assert not (setup.gateway.settings.data_dir / "out" / "failed.wav").exists()
    assert leftovers(setup.shared) == []
