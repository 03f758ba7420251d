"""The engine seam: discovery through entry points, parameters, and each built-in engine."""

from __future__ import annotations

import asyncio
import os
import threading
from pathlib import Path

import numpy as np
import pytest

from parla.audio import encode_audio
from parla.engines import EngineRegistry, SynthesisRequest, VoiceRef
from parla.engines.base import Capabilities, Engine, Param
from parla.engines.piper import PiperEngine
from parla.engines.runner import EngineRunner
from parla.errors import ServiceUnavailableError
from parla.services import Services
from parla.services.speech import SpeechOptions
from parla.settings import Settings
from tests.conftest import Listener, wer


def _request(engine: Engine, text: str, **kwargs: object) -> SynthesisRequest:
    voice = kwargs.pop("voice", VoiceRef("test"))
    assert isinstance(voice, VoiceRef)
    params = engine.resolve_parameters(kwargs.pop("parameters", {}))  # type: ignore[arg-type]
    return SynthesisRequest(text=text, voice=voice, parameters=params, **kwargs)  # type: ignore[arg-type]


def _speak(engine: Engine, text: str, **kwargs: object) -> np.ndarray:
    chunks = list(engine.synthesize(_request(engine, text, **kwargs)))
    assert chunks and all(c.sample_rate == engine.capabilities.sample_rate for c in chunks)
    return np.concatenate([c.samples for c in chunks])


def test_built_in_engines_are_found_through_entry_points(settings: Settings) -> None:
    registry = EngineRegistry.from_entry_points(settings)
    assert {"piper", "espeak", "mock"} <= set(registry.names())
    assert registry.broken == {}


class _Toy(Engine):
    name = "toy"
    capabilities = Capabilities(
        sample_rate=8000,
        parameters=(Param("temperature", float, 0.7, 0.0, 2.0), Param("steps", int, 10, 1, 100)),
    )

    def synthesize(self, request: SynthesisRequest):  # type: ignore[no-untyped-def]
        yield from ()


def test_parameters_take_defaults_presets_and_client_values(settings: Settings) -> None:
    toy = _Toy()
    assert toy.resolve_parameters(None) == {"temperature": 0.7, "steps": 10}
    assert toy.resolve_parameters({"steps": 5}, {"temperature": 1.0, "steps": 20}) == {"temperature": 1.0, "steps": 5}
    # Unknown names are accepted and left out (model microservice API), integers pass as floats,
    # whole floats as integers; what was left out is named, less what the request layer uses itself.
    given = {"max_new_tokens": 256, "temperature": 1, "steps": 3.0, "seed": 4, "colour": "blue"}
    assert toy.resolve_parameters(given) == {"temperature": 1.0, "steps": 3}
    assert toy.ignored_parameters(given, consumed={"seed"}) == ["colour", "max_new_tokens"]


@pytest.mark.parametrize(
    ("given", "message"),
    [
        ({"temperature": "hot"}, "must be of type float"),
        ({"steps": 2.5}, "must be of type int"),
        ({"steps": True}, "must be of type int"),
        ({"temperature": 3.0}, "between 0 and 2, got 3.0"),
        ({"steps": 0}, "between 1 and 100, got 0"),
        # A documented knob the engine does not use is still held to its documented range.
        ({"top_p": 1.5}, "'top_p' must be between 0 and 1"),
        ({"exaggeration": -1}, "'exaggeration' must be between 0 and 2"),
    ],
)
def test_wrong_parameter_types_and_ranges_are_refused(
    settings: Settings, given: dict[str, object], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        _Toy().resolve_parameters(given)


@pytest.mark.model
def test_piper_is_deterministic_with_a_seed(services: Services) -> None:
    piper = services.engines.get("piper")
    a = _speak(piper, "The same words twice.", seed=11)
    b = _speak(piper, "The same words twice.", seed=11)
    c = _speak(piper, "The same words twice.", seed=12)
    assert np.array_equal(a, b)
    assert a.size != c.size or not np.array_equal(a, c)


@pytest.mark.model
def test_piper_speed_changes_duration(services: Services) -> None:
    piper = services.engines.get("piper")
    text = "Speed is set through the length scale of the model."
    normal = _speak(piper, text, seed=1).size
    fast = _speak(piper, text, seed=1, speed=2.0).size
    slow = _speak(piper, text, seed=1, speed=0.5).size
    # Piper rounds each phoneme up to whole frames, so doubling the speed does not quite halve
    # the duration; the direction and size of the change are what a listener notices.
    assert 0.45 < fast / normal < 0.7
    assert 1.6 < slow / normal < 2.3


@pytest.mark.model
def test_piper_says_the_words(services: Services, listener: Listener) -> None:
    piper = services.engines.get("piper")
    text = "A rod is used to catch pink salmon."
    audio = _speak(piper, text, seed=3)
    assert wer(text, listener.transcribe(encode_audio(audio, piper.capabilities.sample_rate, "wav"))) < 0.15


def test_piper_model_path_that_does_not_exist_is_reported(tmp_path: object) -> None:
    engine = PiperEngine.from_settings(Settings(piper_model_path="/nonexistent/voice.onnx", _env_file=None))
    status = engine.status()
    assert not status.available and "not found" in (status.reason or "")


@pytest.mark.model
def test_espeak_speaks_when_installed(settings: Settings, listener: Listener) -> None:
    registry = EngineRegistry.from_entry_points(settings)
    espeak = registry.get("espeak")
    if espeak.status().available is False:
        pytest.fail(f"espeak-ng should be installed by the test set-up: {espeak.status().reason}")
    text = "The source of the huge river is the clear spring."
    audio = _speak(espeak, text, language="en")
    heard = listener.transcribe(encode_audio(audio, espeak.capabilities.sample_rate, "wav"))
    assert wer(text, heard) < 0.5, heard
    fast = _speak(espeak, text, language="en", speed=2.0)
    assert fast.size < audio.size * 0.7


def test_espeak_without_its_program_is_reported_unavailable(tmp_path: object) -> None:
    settings = Settings(espeak_binary="/nonexistent/espeak-ng", data_dir=str(tmp_path), _env_file=None)
    built = Services.build(settings, engines=EngineRegistry.from_entry_points(settings))
    try:
        status = built.engines.get("espeak").status()
        assert not status.available and "not found" in (status.reason or "")
        with pytest.raises(ServiceUnavailableError, match="espeak"):
            built.speech.prepare(SpeechOptions(input="hello", model="espeak"), source="test")
    finally:
        built.close()


def test_mock_copies_the_voice_file_and_concatenates_for_dialogue(settings: Settings, tmp_path: object) -> None:
    from pathlib import Path

    mock = EngineRegistry.from_entry_points(settings).get("mock")
    rate = mock.capabilities.sample_rate
    a = (0.3 * np.sin(np.arange(rate) * 0.05)).astype(np.float32)
    b = (0.2 * np.sin(np.arange(rate // 2) * 0.11)).astype(np.float32)
    pa, pb = Path(str(tmp_path)) / "a.wav", Path(str(tmp_path)) / "b.wav"
    pa.write_bytes(encode_audio(a, rate, "wav"))
    pb.write_bytes(encode_audio(b, rate, "wav"))
    va, vb = VoiceRef("a", samples=((pa, None),)), VoiceRef("b", samples=((pb, None),))
    copied = _speak(mock, "anything at all", voice=va, parameters={"temperature": "ignored"})
    assert np.allclose(copied, a, atol=1e-4)
    turns = [_request(mock, "first", voice=va), _request(mock, "second", voice=vb)]
    dialogue = np.concatenate([c.samples for turn in turns for c in mock.synthesize(turn)])
    assert np.allclose(dialogue, np.concatenate([a, b]), atol=1e-4)
    # Without a file: silence as long as the text takes to read.
    silent = _speak(mock, "x" * 100)
    assert not silent.any() and 4.0 < silent.size / rate < 9.0


async def test_runner_serves_requests_in_order_without_mixing(settings: Settings) -> None:
    """Two streams on one engine: each gets only its own chunks, one request after the other."""
    events: list[str] = []
    lock = threading.Lock()

    class Tagged(Engine):
        name = "tagged"
        capabilities = Capabilities(sample_rate=100)

        def synthesize(self, request: SynthesisRequest):  # type: ignore[no-untyped-def]
            from parla.engines.base import AudioChunk

            for i in range(5):
                with lock:
                    events.append(request.text)
                yield AudioChunk(np.full(10, float(request.text == "b") + i, dtype=np.float32), 100)

    engine = Tagged()
    runner = EngineRunner(engine)

    async def collect(tag: str) -> list[float]:
        out = []
        async for chunk in runner.stream(lambda: engine.synthesize(_request(engine, tag))):
            out.append(float(chunk.samples[0]))
        return out

    a, b = await asyncio.gather(collect("a"), collect("b"))
    assert a == [0, 1, 2, 3, 4] and b == [1, 2, 3, 4, 5]
    assert events == ["a"] * 5 + ["b"] * 5
    runner.shutdown()


async def test_an_engine_may_serve_two_requests_at_once_but_unloads_alone(settings: Settings) -> None:
    """``concurrency = 2``: two requests run at the same time, each with only its own chunks; an
    unload waits for both, and a request that comes after the unload waits for it."""
    from parla.engines.base import AudioChunk

    both_inside = threading.Barrier(2, timeout=10)
    release = threading.Event()
    log: list[str] = []
    lock = threading.Lock()

    class Overlapping(Engine):
        name = "overlapping"
        capabilities = Capabilities(sample_rate=100)
        concurrency = 2

        def synthesize(self, request: SynthesisRequest):  # type: ignore[no-untyped-def]
            if request.text != "c":
                both_inside.wait()  # raises (BrokenBarrierError) unless a and b are in here together
                release.wait(10)
            for i in range(3):
                yield AudioChunk(np.full(10, ord(request.text) + i, dtype=np.float32), 100)
            with lock:
                log.append(f"end {request.text}")

    engine = Overlapping()
    runner = EngineRunner(engine)
    assert runner.workers == 2

    async def collect(tag: str) -> list[float]:
        return [float(c.samples[0]) async for c in runner.stream(lambda: engine.synthesize(_request(engine, tag)))]

    a = asyncio.create_task(collect("a"))
    b = asyncio.create_task(collect("b"))
    await asyncio.sleep(0.3)
    unload = asyncio.create_task(runner.call(lambda: log.append("unload"), alone=True))
    await asyncio.sleep(0.1)
    c = asyncio.create_task(collect("c"))
    await asyncio.sleep(0.3)
    assert log == []  # the unload waits for a and b, and c for the unload
    release.set()
    got = await asyncio.gather(a, b, unload, c)
    assert got[0] == [97, 98, 99] and got[1] == [98, 99, 100] and got[3] == [99, 100, 101]
    assert sorted(log[:2]) == ["end a", "end b"] and log[2:] == ["unload", "end c"]
    runner.shutdown()


async def test_closing_a_stream_stops_synthesis(settings: Settings) -> None:
    made: list[int] = []

    class Endless(Engine):
        name = "endless"
        capabilities = Capabilities(sample_rate=100)

        def synthesize(self, request: SynthesisRequest):  # type: ignore[no-untyped-def]
            from parla.engines.base import AudioChunk

            for i in range(10_000):
                made.append(i)
                yield AudioChunk(np.zeros(10, dtype=np.float32), 100)

    engine = Endless()
    runner = EngineRunner(engine)
    stream = runner.stream(lambda: engine.synthesize(_request(engine, "x")))
    async for _ in stream:
        break
    await stream.aclose()
    await runner.call(lambda: None)  # wait until the engine thread is free again
    assert len(made) < 10_000
    runner.shutdown()


@pytest.mark.model
def test_piper_acts_on_pace_words_in_instructions(services: Services) -> None:
    piper = services.engines.get("piper")
    text = "Instructions can ask for a different pace."
    plain = _speak(piper, text, seed=2).size
    slow = _speak(piper, text, seed=2, instructions="Speak slowly and calmly.").size
    fast = _speak(piper, text, seed=2, instructions="Read it quickly, it is urgent!").size
    assert slow > 1.1 * plain > 1.1 * fast


@pytest.mark.model
def test_piper_gives_back_its_working_memory_and_speaks_the_same_after(services: Services) -> None:
    """onnxruntime's arena keeps what the longest sentence needed (about 150 MB); released, the
    process is that much smaller, and the next sentence is the same audio."""

    def rss_mib() -> float:
        return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20

    piper = services.engines.get("piper")
    text = (
        "These take the shape of a long round arch, with its path high above, and its two ends apparently "
        "beyond the horizon, where the light of the evening sun falls on the hills and the quiet valley below."
    )
    before = _speak(piper, text, seed=5)
    held = rss_mib()
    piper.release_memory()
    released = rss_mib()
    assert held - released > 50, (held, released)
    assert np.array_equal(_speak(piper, text, seed=5), before)


def test_mock_can_take_a_realistic_time(settings: Settings) -> None:
    import time

    mock = EngineRegistry.from_entry_points(settings.model_copy(update={"mock_delay_s": 0.3})).get("mock")
    started = time.monotonic()
    _speak(mock, "some text")
    assert time.monotonic() - started >= 0.3


def test_piper_keeps_its_seedable_graph_for_the_next_start(tmp_path: Path) -> None:
    """The rewritten graph is written once to the cache and read from there afterwards: the same
    bytes as the rewrite makes (so the same voice and seeds), without the onnx package at start."""
    from parla.engines.piper import bundled_model, seedable_model, seedable_model_file

    model = bundled_model()[0]
    cache = tmp_path / "cache" / "piper"
    graph, inputs = seedable_model_file(model, cache)
    assert isinstance(graph, Path) and graph.parent == cache
    assert (graph.read_bytes(), inputs) == seedable_model(model)
    assert not list(cache.glob(".*.part"))  # written whole, then renamed
    modified = graph.stat().st_mtime_ns
    assert seedable_model_file(model, cache) == (graph, inputs)
    assert graph.stat().st_mtime_ns == modified  # read, not made again

    # A cache that cannot be written: the graph in memory, the voice still loads.
    blocked = tmp_path / "blocked"
    blocked.write_text("a file where the directory would go")
    in_memory, same_inputs = seedable_model_file(model, blocked / "piper")
    assert isinstance(in_memory, bytes) and same_inputs == inputs
