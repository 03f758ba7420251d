"""Qwen3-TTS (``parla.engines.qwen3``) and the voicebox API built around it.

In the main environment (the fast lane) the engine is listed, unavailable, saying exactly what to
install or where to put the weights (each size in its own directory), a request for it is a 503 that
says so, and the voicebox API says that its profiles speak through another engine, and why.

In its own environment (``slow``, ``model``): the environment is built once per machine by Parla's
installer (``tests/engine_envs.py``), two tiny randomly initialised Qwen3-TTS Base models (a "1.7B"
and a "0.6B") are made there in exactly the layout qwen-tts's loader reads (``tests/tiny_qwen3.py``),
and ``parla serve-engine qwen3`` runs from it as a worker behind a gateway: Parla's adapter through
the real ``Qwen3TTSModel.from_pretrained``, ``create_voice_clone_prompt`` and
``generate_voice_clone``. Random weights never stop, so the speech codes made per piece are capped
(``PARLA_ENGINES__QWEN3__MAX_NEW_TOKENS``).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from parla.api.compat import voicebox
from parla.audio import decode_audio
from parla.engines import AudioChunk, EngineContext, VoiceRef
from parla.engines import qwen3 as qwen3_module
from parla.engines.base import EngineUnavailableError
from parla.engines.envs import EngineEnv
from parla.engines.qwen3 import (
    LANGUAGES,
    Qwen3Engine,
    Qwen3Settings,
    check_model,
    find_model,
    model_size,
    qwen_language,
)
from parla.engines.remote import RemoteEngine
from parla.errors import InvalidInputError
from parla.services.speech import SpeechOptions
from tests.conftest import mock_settings, serving_in_process
from tests.engine_envs import EngineStack, engine_stack, environment, tiny_model

NOT_INSTALLED = (
    "qwen-tts is not installed in this environment: Qwen3-TTS runs in its own; install its environment with "
    "`parla engines install qwen3` and serve it with `parla serve-engine qwen3`"
)
FILES = (
    "config.json",
    "generation_config.json",
    "model.safetensors",
    "tokenizer_config.json",
    "vocab.json",
    "merges.txt",
    "speech_tokenizer/config.json",
    "speech_tokenizer/model.safetensors",
    "speech_tokenizer/preprocessor_config.json",
)
"""What qwen-tts's loader reads, as Qwen/Qwen3-TTS-12Hz-1.7B-Base holds it."""


def _weights(directory: Path, size: str = "1.7B", kind: str = "base") -> Path:
    """Files named as Qwen3-TTS's (the finder reads none; the loader's check reads config.json)."""
    for name in FILES:
        (directory / name).parent.mkdir(parents=True, exist_ok=True)
        (directory / name).write_text("{}")
    config = {"tts_model_type": kind, "tts_model_size": qwen3_module.SIZES[size]}
    (directory / "config.json").write_text(json.dumps(config))
    return directory


# -- the main environment: no qwen-tts ------------------------------------------------------------


def test_qwen3_capabilities() -> None:
    capabilities = Qwen3Engine().capabilities
    assert capabilities.sample_rate == 24_000 and capabilities.cloning and capabilities.needs_transcript
    assert capabilities.languages == LANGUAGES and len(LANGUAGES) == 10
    # Cloning from the speaker embedding alone needs no transcript.
    assert not Qwen3Engine(Qwen3Settings(x_vector_only=True)).capabilities.needs_transcript
    assert Qwen3Engine.capabilities.needs_transcript  # the class's own stays as it was


async def test_qwen3_parameters_as_the_api_lists_them(tmp_path: Path, no_weights_anywhere: Path) -> None:
    async with serving_in_process(mock_settings(tmp_path)) as app:
        model = (await app.client.get("/v1/models/qwen3")).json()
        parameters = {p["name"]: p for p in model["capabilities"]["parameters"]}
        assert set(parameters) == {"temperature", "top_p", "top_k", "repetition_penalty", "model_size"}
        assert (parameters["temperature"]["minimum"], parameters["temperature"]["maximum"]) == (0.01, 2.0)
        assert (parameters["repetition_penalty"]["minimum"], parameters["repetition_penalty"]["maximum"]) == (1.0, 2.0)
        assert parameters["model_size"]["type"] == "str" and parameters["top_k"]["default"] is None


def test_parameters_are_checked_against_their_ranges_and_sizes() -> None:
    engine = Qwen3Engine()
    with pytest.raises(ValueError, match=r"'top_p' must be between 0.01 and 1, got 1.5"):
        engine.resolve_parameters({"top_p": 1.5})
    with pytest.raises(ValueError, match=r"'model_size' must be one of 1.7B, 0.6B, got '2B'"):
        engine.resolve_parameters({"model_size": "2B"})
    assert engine.resolve_parameters({"temperature": 1, "model_size": "0.6b"}) == {
        "temperature": 1.0,
        "top_p": None,
        "top_k": None,
        "repetition_penalty": None,
        "model_size": "0.6B",
    }
    assert [model_size(x) for x in ("1.7B", "1.7b", "1b7", "0.6B", "0b6", "7B")] == [
        "1.7B",
        "1.7B",
        "1.7B",
        "0.6B",
        "0.6B",
        None,
    ]


def test_missing_weights_say_what_to_put_where(
    tmp_path: Path, no_weights_anywhere: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(Qwen3Engine, "required_packages", ())  # as in the engine's own environment
    models = tmp_path / "models"
    context = EngineContext(data_dir=tmp_path / "data", models_dir=models)
    engine = Qwen3Engine(context=context)
    reason = engine.unavailable_reason()
    assert reason is not None
    own = models.resolve() / "qwen3"
    assert (
        "put config.json, generation_config.json, model.safetensors or model-*.safetensors, tokenizer_config.json,"
        " vocab.json, merges.txt, speech_tokenizer/config.json, speech_tokenizer/model.safetensors or"
        " speech_tokenizer/model-*.safetensors and speech_tokenizer/preprocessor_config.json"
        f" in {own}/ (it does not exist)"
    ) in reason
    assert "the 1.7B model" in reason and "Qwen/Qwen3-TTS-12Hz-1.7B-Base" in reason

    # The default size in the engine's own directory; the other size in a folder named for it.
    _weights(own)
    (own / "speech_tokenizer" / "preprocessor_config.json").unlink()
    assert "missing there: speech_tokenizer/preprocessor_config.json" in str(engine.unavailable_reason())
    _weights(own)
    assert engine.unavailable_reason() is None and engine.find("1.7B").path == own
    small = engine.find("0.6B")
    assert not small.complete
    assert f"in {own / '0.6B'}/ (it does not exist)" in str(small.reason)
    assert "Qwen/Qwen3-TTS-12Hz-0.6B-Base" in str(small.reason)
    with pytest.raises(EngineUnavailableError, match=r"cannot load its 0.6B model: .*qwen3/0.6B/"):
        engine.use_size("0.6B")
    assert engine.size == "1.7B"  # the request failed; the engine still holds (and would load) its own
    _weights(own / "0.6B", "0.6B")
    assert engine.find("0.6B").complete and engine.find("0.6B").part("0.6B") == own / "0.6B"

    # PARLA_ENGINES__QWEN3__MODEL_SIZE=0.6B: that size is the engine's own directory (and 1.7B its folder).
    assert find_model("0.6B", "0.6B", context).part("") == own
    assert "qwen3/1.7B/" in str(find_model("1.7B", "0.6B", context).reason)

    # A 0.6B in an offline Hugging Face cache, as huggingface_hub leaves it.
    repo = no_weights_anywhere / "models--Qwen--Qwen3-TTS-12Hz-0.6B-Base"
    snapshot = _weights(repo / "snapshots" / "0123abcd", "0.6B")
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0123abcd")
    elsewhere = EngineContext(data_dir=tmp_path / "data", models_dir=tmp_path / "empty")
    found = find_model("0.6B", "1.7B", elsewhere)
    assert found.complete and found.part("0.6B") == snapshot


def test_a_model_that_cannot_clone_or_is_another_size_is_refused(tmp_path: Path) -> None:
    check_model(_weights(tmp_path / "ok"), "1.7B")
    with pytest.raises(EngineUnavailableError, match=r"tts_model_type 'custom_voice', not 'base'"):
        check_model(_weights(tmp_path / "custom", kind="custom_voice"), "1.7B")
    with pytest.raises(EngineUnavailableError, match=r"looked for its 1.7B model in .*, whose config.json is the 0.6B"):
        check_model(_weights(tmp_path / "small", "0.6B"), "1.7B")


def test_languages_are_qwen3s_own() -> None:
    assert [qwen_language(x) for x in ("en", "en-US", "zh_TW", "ZH", "pt-BR", "Japanese", "sv")] == [
        "english",
        "english",
        "chinese",
        "chinese",
        "portuguese",
        "japanese",
        None,
    ]
    engine = Qwen3Engine()
    assert engine.language_problem("ko") is None and engine.language_problem("it-IT") is None
    assert engine.language_problem("sv") == f"engine 'qwen3' speaks {', '.join(LANGUAGES)}, not 'sv'"


def test_a_voice_without_a_transcript_is_refused_saying_why(tmp_path: Path) -> None:
    engine = Qwen3Engine()
    with pytest.raises(InvalidInputError, match=r"'alloy' has no sample with a transcript"):
        engine.prompt_for(VoiceRef("alloy"))
    with pytest.raises(InvalidInputError, match="X_VECTOR_ONLY"):
        engine.prompt_for(VoiceRef("Ada", samples=((tmp_path / "ada.wav", None), (tmp_path / "b.wav", " "))))


async def test_voicebox_says_its_profiles_are_not_on_qwen3_here(tmp_path: Path, no_weights_anywhere: Path) -> None:
    async with serving_in_process(mock_settings(tmp_path)) as app:
        refused = await app.client.post("/models/load", params={"model_size": "1.7B"})
        assert refused.status_code == 400, refused.text
        detail = refused.json()["detail"]
        assert "model_size '1.7B' is not offered: Qwen3-TTS is not available here" in detail
        assert NOT_INSTALLED in detail
        loaded = (await app.client.post("/models/load")).json()
        assert loaded["engine"] == app.services.settings.default_clone_engine and loaded["model_size"] is None
        assert loaded["engine_note"].startswith("Qwen3-TTS is not available here, so profiles speak through engine")
        assert NOT_INSTALLED in loaded["engine_note"]
        assert (await app.client.post("/models/unload")).status_code == 200
        services = app.services
        voice = services.voices.list_all()[0]["id"]  # a built-in voice: its samples do not matter here
        spoken = voicebox.profile_speech(services.settings, services.engines, services.voices, voice)
        assert spoken.model is None and spoken.parameters == {} and NOT_INSTALLED in str(spoken.engine_note)


async def test_voicebox_loads_the_size_asked_for_when_qwen3_runs_here(
    tmp_path: Path, no_weights_anywhere: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With qwen3 in this process (its loading stood in for), ``/models/load?model_size=`` loads that
    size now, and the profiles' generations go to qwen3 in it."""
    used: list[str] = []
    monkeypatch.setattr(Qwen3Engine, "unavailable_reason", lambda self: None)
    monkeypatch.setattr(Qwen3Engine, "use_size", lambda self, size: used.append(size))
    async with serving_in_process(mock_settings(tmp_path)) as app:
        refused = await app.client.post("/models/load", params={"model_size": "7B"})
        assert refused.status_code == 400 and "give 1.7B or 0.6B" in refused.json()["detail"]
        loaded = (await app.client.post("/models/load", params={"model_size": "0.6b"})).json()
        assert loaded["engine"] == "qwen3" and loaded["model_size"] == "0.6B" and loaded["engine_note"] is None
        assert loaded["message"] == "Model qwen3 (0.6B) loaded successfully" and used == ["0.6B"]
        services = app.services
        voice = services.voices.list_all()[0]["id"]
        builtin = voicebox.profile_speech(services.settings, services.engines, services.voices, voice)
        assert builtin.model is None and "no samples for Qwen3-TTS to clone" in str(builtin.engine_note)
        monkeypatch.setattr(
            type(services.voices), "resolve", lambda self, v: VoiceRef(v, samples=((tmp_path / "a.wav", "Hi."),))
        )
        cloned = voicebox.profile_speech(services.settings, services.engines, services.voices, voice)
        assert cloned.model == "qwen3" and cloned.parameters == {"model_size": "0.6B"}


# -- in its own environment: the real loader and inference on tiny models -------------------------

SAID = "The birch canoe slid on the smooth planks."
TEXT = "Glue the sheet to the dark blue background. It is easy to tell the depth of a well."
CODES = 8
"""PARLA_ENGINES__QWEN3__MAX_NEW_TOKENS for the tiny models: each piece is at most this many speech
codes of 1920 samples, 0.64 s."""
MAX_PIECE_S = CODES * 1920 / 24_000
CHUNK_SAMPLES = 4096
"""PARLA_ENGINES__QWEN3__STREAM_CHUNK_SIZE: a capped piece comes in about four chunks."""


@pytest.fixture(scope="session")
def qwen3_env() -> EngineEnv:
    """The qwen3 engine's environment, built on the first run on this machine (minutes), then reused."""
    return environment("qwen3")


@pytest.fixture(scope="session")
def tiny_qwen3(qwen3_env: EngineEnv) -> Path:
    """A models directory holding a tiny random Qwen3-TTS "1.7B" in ``qwen3/`` and a "0.6B" in
    ``qwen3/0.6B/``, made by qwen-tts's own classes in the engine's environment."""
    script = Path(__file__).with_name("tiny_qwen3.py")
    return tiny_model(qwen3_env, script, made="qwen3/0.6B/speech_tokenizer/model.safetensors", inside="qwen3")


@pytest.fixture(scope="module")
def qwen3_stack(
    qwen3_env: EngineEnv, tiny_qwen3: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[EngineStack]:
    variables = {
        "PARLA_MODELS_DIR": str(tiny_qwen3),
        "PARLA_ENGINES__QWEN3__MAX_NEW_TOKENS": str(CODES),
        "PARLA_ENGINES__QWEN3__STREAM_CHUNK_SIZE": str(CHUNK_SAMPLES),
    }
    with engine_stack(qwen3_env, "qwen3", tmp_path_factory, variables=variables, clone=("Ada", SAID)) as stack:
        yield stack


def computed(stack: EngineStack, voice: str = "Ada") -> int:
    """How many times the worker made the voice's clone prompt (it logs each time)."""
    return stack.log().count(f"clone prompt for voice {voice!r} computed")


@pytest.mark.slow
@pytest.mark.model
def test_the_worker_runs_qwen3_from_its_own_environment(qwen3_stack: EngineStack, tiny_qwen3: Path) -> None:
    info = qwen3_stack.info()
    assert info["name"] == "qwen3" and info["status"]["loaded"] and info["status"]["device"] == "cpu"
    assert info["capabilities"]["sample_rate"] == 24_000 and info["capabilities"]["languages"] == list(LANGUAGES)
    assert info["capabilities"]["needs_transcript"] and info["capabilities"]["cloning"]
    engine = qwen3_stack.services.engines.get("qwen3")
    assert isinstance(engine, RemoteEngine) and engine.capabilities.cloning and not engine.unavailable_reason()
    assert f"loaded the 1.7B model {tiny_qwen3 / 'qwen3'} (PARLA_MODELS_DIR)" in qwen3_stack.log()


@pytest.mark.slow
@pytest.mark.model
def test_a_cloned_voice_speaks_24_khz_of_bounded_length_in_chunks(qwen3_stack: EngineStack) -> None:
    samples = qwen3_stack.audio(7, TEXT)
    plan = qwen3_stack.services.speech.prepare(
        SpeechOptions(input=TEXT, voice="Ada", model="qwen3", response_format="wav", seed=7), source="test"
    )
    assert len(plan.pieces) >= 2
    assert 0.3 < samples.size / 24_000 <= MAX_PIECE_S * len(plan.pieces)
    assert np.abs(samples).max() > 0.01 and np.isfinite(samples).all()  # random weights make noise, not silence
    engine = qwen3_stack.services.engines.get("qwen3")
    for request in plan.requests():
        chunks: list[AudioChunk] = list(engine.synthesize(request))
        assert len(chunks) > 1 and all(c.sample_rate == 24_000 for c in chunks)
        assert all(c.samples.size <= CHUNK_SAMPLES for c in chunks)
        assert sum(c.samples.size for c in chunks) / 24_000 <= MAX_PIECE_S


@pytest.mark.slow
@pytest.mark.model
def test_the_same_seed_says_the_same_and_the_prompt_is_made_once(qwen3_stack: EngineStack) -> None:
    first = qwen3_stack.audio(7, TEXT)
    again = qwen3_stack.speak(7, TEXT)[0]
    assert np.array_equal(again, first)
    other = qwen3_stack.speak(8, TEXT)[0]
    assert not (other.size == first.size and np.allclose(other, first, atol=1e-3))
    assert computed(qwen3_stack) == 1


@pytest.mark.slow
@pytest.mark.model
def test_a_language_it_does_not_speak_is_refused(qwen3_stack: EngineStack) -> None:
    body = {"model": "qwen3", "input": "Hej då.", "voice": "Ada", "response_format": "wav", "language": "sv"}
    refused = httpx.post(f"{qwen3_stack.gateway_url}/v1/audio/speech", json=body, timeout=120)
    assert refused.status_code == 400, refused.text
    assert "engine 'qwen3' speaks zh, en" in refused.json()["detail"]


@pytest.mark.slow
@pytest.mark.model
def test_model_size_loads_the_size_asked_for_from_its_own_directory(qwen3_stack: EngineStack, tiny_qwen3: Path) -> None:
    large = qwen3_stack.audio(7, TEXT)
    qwen3_stack.request = {"parameters": {"model_size": "0.6B"}}
    try:
        small = qwen3_stack.speak(7, TEXT)[0]
    finally:
        qwen3_stack.request = {}
    log = qwen3_stack.log()
    assert "switching from the 1.7B model to the 0.6B model" in log
    assert f"loaded the 0.6B model 0.6B/: {tiny_qwen3 / 'qwen3' / '0.6B'} (PARLA_MODELS_DIR)" in log
    assert not (small.size == large.size and np.allclose(small, large, atol=1e-3))  # another model's voice
    # The size stays until another is asked for: voicebox's /models/load, which sends it with profiles' speech.
    loaded = httpx.post(f"{qwen3_stack.gateway_url}/models/load", params={"model_size": "1.7B"}, timeout=120).json()
    assert loaded["engine"] == "qwen3" and loaded["model_size"] == "1.7B" and loaded["engine_note"] is None
    voice = qwen3_stack.services.voices.get("Ada").id
    body = {"text": TEXT, "profile_id": voice, "seed": 7}
    generated = httpx.post(f"{qwen3_stack.gateway_url}/generate", json=body, timeout=600).json()
    assert generated["engine"] == "qwen3" and generated["engine_note"] is None, generated
    back, rate = decode_audio(Path(generated["audio_path"]).read_bytes())
    assert rate == 24_000 and back.size == large.size
    assert np.allclose(back, large, atol=2e-3)  # the 1.7B model again: the same audio for the same seed
    assert qwen3_stack.log().count("switching from the 0.6B model to the 1.7B model") == 1


@pytest.mark.slow
@pytest.mark.model
def test_unload_frees_the_model_and_the_next_request_loads_it_again(qwen3_stack: EngineStack) -> None:
    first = qwen3_stack.audio(7, TEXT)
    prompts = computed(qwen3_stack)
    qwen3_stack.unload()
    again = qwen3_stack.speak(7, TEXT)[0]
    assert np.array_equal(again, first)
    assert qwen3_stack.info()["status"]["loaded"] is True
    assert computed(qwen3_stack) == prompts + 1  # the prompt went with the model, and was made again
