"""The engine seam for heavy engines: each engine's own settings (``PARLA_ENGINES__<NAME>__*``),
its voice presets, its model's lifetime (``ModelManager``: load, unload, idle TTL, device) and a
remote engine's state kept fresh in the background."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from parla.engines import EngineRegistry
from parla.engines.base import (
    AudioChunk,
    Capabilities,
    Engine,
    EngineContext,
    EngineSettings,
    SynthesisRequest,
    VoiceRef,
)
from parla.engines.clone import CloneEngine
from parla.engines.espeak import EspeakEngine, EspeakSettings
from parla.engines.manager import resolve_device
from parla.engines.mock import MockEngine
from parla.engines.piper import PiperEngine, PiperSettings
from parla.engines.remote import RemoteEngine
from parla.services import Services
from parla.services.voices import VoiceCreate
from parla.settings import EngineSection, Settings
from parla.worker_app import create_worker_app
from tests.conftest import _free_port, mock_settings, serving, someone_saying, wait_for

OLD_PRESETS = {
    "alloy": {
        "piper": {"noise_scale": 0.5, "noise_w_scale": 0.6},
        "clone": {"pitch": 1.35, "pitch_range": 1.0, "formant": 1.06, "tilt": 0.0},
        "espeak": {"variant": "m3"},
    },
    "shimmer": {
        "piper": {"length_scale": 0.95, "noise_scale": 0.8, "noise_w_scale": 1.1},
        "clone": {"pitch": 2.6, "pitch_range": 1.3, "formant": 1.2, "tilt": -0.2, "breath": 0.15, "pace": 0.97},
        "espeak": {"variant": "f2", "pitch": 70},
    },
    "joe": {},
}
"""What ``VoiceRef.presets`` held when the presets lived in the voice library (espeak's since as a
variant in the request's language, not an English voice: ``fr`` on ``alloy`` is French)."""


# -- each engine's own settings ---------------------------------------------------------------------


def test_an_engine_section_configures_the_local_engine(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PARLA_ENGINES__PIPER__MODEL_PATH", "/srv/voices/amy.onnx")
    monkeypatch.setenv("PARLA_ENGINES__MOCK__DELAY_S", "0.25")
    monkeypatch.setenv("PARLA_DATA_DIR", str(tmp_path))
    settings = Settings(_env_file=None)
    registry = EngineRegistry.from_entry_points(settings)
    piper, mock = registry.get("piper"), registry.get("mock")
    assert isinstance(piper, PiperEngine) and not isinstance(piper, RemoteEngine)  # no URL: it runs here
    assert piper.settings == PiperSettings(model_path=Path("/srv/voices/amy.onnx"))
    assert "not found at /srv/voices/amy.onnx" in (piper.status().reason or "")
    assert isinstance(mock, MockEngine) and mock.settings.delay_s == 0.25
    assert piper.context.data_dir == tmp_path
    clone = registry.get("clone")
    assert isinstance(clone, CloneEngine) and clone.settings.model_path is None  # piper's section is piper's alone
    assert registry.broken == {}


def test_older_top_level_settings_still_configure_their_engines(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PARLA_PIPER_MODEL_PATH", "/old/voice.onnx")
    monkeypatch.setenv("PARLA_ESPEAK_BINARY", "/opt/espeak")
    monkeypatch.setenv("PARLA_MOCK_DELAY_S", "0.5")
    settings = Settings(_env_file=None)
    assert PiperEngine.from_settings(settings).settings.model_path == Path("/old/voice.onnx")
    assert CloneEngine.from_settings(settings).piper.settings.model_path == Path("/old/voice.onnx")
    assert EspeakEngine.from_settings(settings).settings.binary == "/opt/espeak"
    assert MockEngine.from_settings(settings).settings.delay_s == 0.5
    # Both set: the engine's section wins.
    monkeypatch.setenv("PARLA_ENGINES__ESPEAK__BINARY", "/usr/local/bin/espeak-ng")
    assert EspeakEngine.from_settings(Settings(_env_file=None)).settings.binary == "/usr/local/bin/espeak-ng"
    # Neither set: the engine's own default.
    monkeypatch.delenv("PARLA_ENGINES__ESPEAK__BINARY")
    monkeypatch.delenv("PARLA_ESPEAK_BINARY")
    assert EspeakEngine.from_settings(Settings(_env_file=None)).settings == EspeakSettings(binary="espeak-ng")


def test_a_misspelt_or_orphan_section_is_reported_not_ignored(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PARLA_ENGINES__ESPEAK__BINRAY", "/opt/espeak")
    monkeypatch.setenv("PARLA_ENGINES__MOCK__DELAY_S", "soon")
    monkeypatch.setenv("PARLA_ENGINES__BARK__MODEL_DIR", "/srv/bark")
    registry = EngineRegistry.from_entry_points(Settings(_env_file=None))
    assert "PARLA_ENGINES__ESPEAK__BINRAY" in registry.broken["espeak"]
    assert "PARLA_ENGINES__MOCK__DELAY_S" in registry.broken["mock"]
    assert "no such engine is installed" in registry.broken["bark"]
    assert "piper" in registry.names() and "espeak" not in registry.names()


def test_engines_take_their_own_settings_not_the_apps(settings: Settings) -> None:
    with pytest.raises(TypeError, match=r"PiperSettings.*PiperEngine\.from_settings"):
        PiperEngine(settings)  # type: ignore[arg-type]
    plain = PiperEngine()
    assert plain.settings == PiperSettings() and plain.context == EngineContext()
    assert (plain.name, plain.device) == ("piper", "cpu")


def test_the_device_comes_from_parla_device_or_the_section(monkeypatch: pytest.MonkeyPatch) -> None:
    import parla.engines.manager as manager

    monkeypatch.setattr(manager, "cuda_device_count", lambda: 0)
    assert resolve_device("auto") == "cpu"
    monkeypatch.setattr(manager, "cuda_device_count", lambda: 2)
    assert resolve_device("auto") == "cuda" and resolve_device("cuda:1") == "cuda:1" and resolve_device("cpu") == "cpu"
    settings = Settings(_env_file=None, device="cpu", engines={"mock": {"device": "cuda:1"}})
    assert MockEngine.from_settings(settings).context.device == "cuda:1"
    assert PiperEngine.from_settings(settings).context.device == "cpu"
    # Built-in engines run on the CPU whatever they are given, and say so.
    assert PiperEngine.from_settings(settings.model_copy(update={"device": "auto"})).status().device == "cpu"


# -- voice presets ---------------------------------------------------------------------------------


def _old(presets: Mapping[str, Any]) -> dict[str, Any]:
    """The presets of the engines that had them before engines owned them (later engines add theirs)."""
    return {engine: preset for engine, preset in presets.items() if engine in {"piper", "clone", "espeak"}}


def test_engines_own_the_presets_of_the_built_in_voices(tmp_path: Path) -> None:
    registry = EngineRegistry.from_entry_points(Settings(_env_file=None))
    for voice, presets in OLD_PRESETS.items():
        assert _old(registry.voice_presets(voice)) == presets
    services = Services.build(mock_settings(tmp_path), engines=registry)
    try:
        for voice, presets in OLD_PRESETS.items():
            assert _old(services.voices.resolve(voice).presets) == presets
        assert services.voices.resolve("coral").presets == registry.voice_presets("nova")  # OpenAI's newer name
    finally:
        services.close()


class _BellSettings(EngineSettings):
    pitch_hz: float = 440.0


class _Bell(Engine):
    """A third-party engine with presets of its own, and settings of its own."""

    name = "bell"
    capabilities = Capabilities(sample_rate=8000)
    voice_presets = {"nova": {"pitch_hz": 880.0}}  # noqa: RUF012 - read-only
    settings_model = _BellSettings

    def synthesize(self, request: SynthesisRequest) -> Iterator[AudioChunk]:
        yield AudioChunk(np.zeros(80, dtype=np.float32), 8000)


def test_a_new_engine_brings_its_presets_without_touching_the_voice_library(tmp_path: Path) -> None:
    services = Services.build(mock_settings(tmp_path), engines=EngineRegistry([_Bell(), MockEngine()]))
    try:
        assert services.voices.resolve("nova").preset("bell") == {"pitch_hz": 880.0}
        assert services.voices.resolve("alloy").presets == {}
    finally:
        services.close()


# -- the model manager ----------------------------------------------------------------------------


class _Heavy(Engine):
    """Records where and when its model comes and goes; each synthesis takes ``seconds``."""

    name = "heavy"
    capabilities = Capabilities(sample_rate=100)

    def __init__(self, settings: EngineSettings | None = None, context: EngineContext | None = None) -> None:
        super().__init__(settings, context)
        self.events: list[tuple[str, str]] = []
        self.seconds = 0.0
        self.unloaded = threading.Event()
        self.released = threading.Event()

    def _load(self) -> None:
        self.events.append(("load", threading.current_thread().name))

    def _unload(self) -> None:
        self.events.append(("unload", threading.current_thread().name))
        self.unloaded.set()

    def release_memory(self) -> None:
        self.events.append(("release", threading.current_thread().name))
        self.released.set()

    def synthesize(self, request: SynthesisRequest) -> Iterator[AudioChunk]:
        self.load()
        time.sleep(self.seconds)
        self.events.append(("spoke", threading.current_thread().name))
        yield AudioChunk(np.zeros(10, dtype=np.float32), 100)


async def _speak(registry: EngineRegistry, engine: Engine) -> None:
    from parla.engines.base import VoiceRef

    request = SynthesisRequest(text="x", voice=VoiceRef("v"))
    async for _ in registry.runner(engine.name).stream(lambda: engine.synthesize(request)):
        pass


async def test_load_and_unload_run_on_the_engines_thread() -> None:
    heavy = _Heavy()
    registry = EngineRegistry([heavy])
    try:
        await registry.load("heavy")
        await registry.load("heavy")  # loaded already: nothing to do
        assert heavy.loaded and registry.get("heavy").status().loaded
        await registry.unload("heavy")
        assert not heavy.loaded
        assert [kind for kind, _ in heavy.events] == ["load", "unload"]
        assert all(thread.startswith("engine-heavy") for _, thread in heavy.events)
    finally:
        registry.shutdown()


async def test_an_unload_waits_for_the_synthesis_in_progress() -> None:
    heavy = _Heavy()
    heavy.seconds = 0.3
    registry = EngineRegistry([heavy])
    try:
        speaking = asyncio.ensure_future(_speak(registry, heavy))
        await asyncio.sleep(0.05)
        await registry.unload("heavy")
        await speaking
        assert [kind for kind, _ in heavy.events] == ["load", "spoke", "unload"]  # queued behind it
    finally:
        registry.shutdown()


async def test_an_idle_model_is_unloaded_after_its_ttl_and_loads_again_when_used() -> None:
    heavy = _Heavy()
    heavy.seconds = 0.4
    registry = EngineRegistry([heavy], idle_ttl_s={"heavy": 0.2})
    try:
        await _speak(registry, heavy)  # longer than the TTL: never unloaded under a synthesis
        assert heavy.loaded
        await asyncio.sleep(0.1)
        assert heavy.loaded  # not yet
        assert await asyncio.to_thread(heavy.unloaded.wait, 5)
        assert not heavy.loaded and heavy.events[-1][0] == "unload"
        assert heavy.events[-1][1].startswith("engine-heavy")  # on the engine's thread, like any unload
        await _speak(registry, heavy)
        assert [kind for kind, _ in heavy.events] == ["load", "spoke", "unload", "load", "spoke"]
    finally:
        registry.shutdown()


async def test_an_idle_engine_gives_back_its_working_memory_and_keeps_its_model() -> None:
    heavy = _Heavy()
    heavy.seconds = 0.4
    registry = EngineRegistry([heavy], idle_trim_s=0.2)
    try:
        await _speak(registry, heavy)  # longer than the wait: nothing is released under a synthesis
        assert [kind for kind, _ in heavy.events] == ["load", "spoke"]
        assert await asyncio.to_thread(heavy.released.wait, 5)
        assert heavy.loaded and heavy.events[-1][1].startswith("engine-heavy")
        heavy.released.clear()
        await _speak(registry, heavy)
        assert await asyncio.to_thread(heavy.released.wait, 5)  # again after each idle spell
        assert [kind for kind, _ in heavy.events] == ["load", "spoke", "release", "spoke", "release"]
    finally:
        registry.shutdown()


def test_the_idle_ttl_is_a_setting_off_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    assert Settings(_env_file=None).engine_idle_ttl_s == 0
    assert Settings(_env_file=None).engine_idle_trim_s == 30  # memory goes back; the model stays
    monkeypatch.setenv("PARLA_ENGINE_IDLE_TTL_S", "300")
    monkeypatch.setenv("PARLA_ENGINES__PIPER__IDLE_TTL_S", "0")
    monkeypatch.setenv("PARLA_ENGINES__DIA__URL", "http://127.0.0.1:9")
    monkeypatch.setenv("PARLA_ENGINES__DIA__IDLE_TTL_S", "60")
    registry = EngineRegistry.from_entry_points(Settings(_env_file=None))
    try:
        assert registry.manager("clone").idle_ttl_s == 300
        assert registry.manager("piper").idle_ttl_s == 0
        assert registry.manager("dia").idle_ttl_s == 0  # the worker's model is the worker's to free
    finally:
        registry.shutdown()


# -- remote engines' state --------------------------------------------------------------------------


class _Forbidden:
    """A client that fails the test if anything asks the network."""

    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"network I/O ({name}) while reading an engine's state")


def test_reading_a_remote_engines_state_asks_no_one() -> None:
    engine = RemoteEngine("far", EngineSection(url=f"http://127.0.0.1:{_free_port()}"))
    assert "has not been asked yet" in (engine.unavailable_reason() or "")
    engine.refresh()
    assert "is not answering" in (engine.unavailable_reason() or "")
    client, engine._client = engine._client, _Forbidden()  # type: ignore[assignment]
    try:
        for _ in range(100):
            engine.status()
            engine.unavailable_reason()
            _ = engine.loaded, engine.capabilities, engine.description, engine.device
    finally:
        engine._client = client
        engine.close()


class _Toy(Engine):
    name = "toy"
    description = "A toy with presets."
    capabilities = Capabilities(sample_rate=16000)
    voice_presets = {"alloy": {"temperature": 0.3}}  # noqa: RUF012 - read-only

    def synthesize(self, request: SynthesisRequest) -> Iterator[AudioChunk]:
        yield AudioChunk(np.zeros(160, dtype=np.float32), 16000)


def test_a_remote_engine_is_refreshed_in_the_background_and_brings_its_presets(tmp_path: Path) -> None:
    worker_settings = mock_settings(tmp_path / "worker", default_engine="toy", default_clone_engine="toy")
    worker_services = Services.build(worker_settings, engines=EngineRegistry([_Toy()]))
    try:
        with serving(create_worker_app("toy", worker_settings, services=worker_services)) as url:
            engine = RemoteEngine("toy", EngineSection(url=url))
            registry = EngineRegistry([engine, MockEngine()])
            registry.start()  # waits for the first answer
            try:
                assert engine.status().available and engine.capabilities.sample_rate == 16000
                assert engine.description.startswith("A toy with presets.")
                assert registry.voice_presets("alloy") == {"toy": {"temperature": 0.3}}
                assert engine.loaded  # the worker loads its engine as it starts
                worker_services.engines.get("toy").unload()
                wait_for(lambda: not engine.loaded, "the refresher did not notice the unload", timeout=10)
            finally:
                registry.shutdown()
    finally:
        worker_services.close()


class _Learner(Engine):
    """A cloning engine that records the voices it is asked to prepare."""

    capabilities = Capabilities(sample_rate=16000, cloning=True)

    def __init__(self, name: str, *, loaded: bool = False, cloning: bool = True) -> None:
        super().__init__()
        self.name = name
        self.capabilities = Capabilities(sample_rate=16000, cloning=cloning)
        self.prepared: list[str] = []
        if loaded:
            self.load()

    def prepare_voice(self, voice: VoiceRef) -> None:
        self.prepared.append(voice.name)

    def synthesize(self, request: SynthesisRequest) -> Iterator[AudioChunk]:
        yield AudioChunk(np.zeros(160, dtype=np.float32), 16000)


async def test_a_voice_is_prepared_by_the_default_cloner_and_every_loaded_one(tmp_path: Path) -> None:
    """Learning a voice costs the engines that will speak it soon, not the ones asleep."""
    default, loaded, asleep = _Learner("default"), _Learner("loaded", loaded=True), _Learner("asleep")
    plain = _Learner("plain", loaded=True, cloning=False)
    settings = mock_settings(tmp_path, default_clone_engine="default")
    services = Services.build(settings, engines=EngineRegistry([default, loaded, asleep, plain, MockEngine()]))
    try:
        said = "The birch canoe slid on the smooth planks."
        voice, _ = services.voices.create_with_sample(VoiceCreate(name="Ada"), someone_saying(said), transcript=said)
        await services.speech.warm_voice(voice.id)
        assert default.prepared == ["Ada"] and loaded.prepared == ["Ada"]
        assert asleep.prepared == [] and plain.prepared == [] and not asleep.loaded
    finally:
        services.close()
