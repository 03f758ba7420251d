"""F5-TTS (``parla.engines.f5``).

In the main environment (the fast lane) the engine is listed, unavailable, saying exactly what to
install or where to put the weights, and a request for it is a 503 that says so.

In its own environment (``slow``, ``model``): the environment is built once per machine by Parla's
installer (``tests/engine_envs.py``), a tiny randomly initialised F5-TTS and Vocos are made there
in exactly the layout f5-tts's loaders read (``tests/tiny_f5.py``), and ``parla serve-engine f5``
runs from it as a worker behind a gateway: Parla's adapter through the real ``load_model``,
``load_vocoder`` and ``infer_batch_process``. The audio made per piece is capped
(``PARLA_ENGINES__F5__MAX_SECONDS``) and streamed in small chunks.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from parla.engines import AudioChunk, EngineContext, VoiceRef
from parla.engines import f5 as f5_module
from parla.engines.envs import EngineEnv
from parla.engines.f5 import LANGUAGES, F5Engine, frames_for, reference_text
from parla.engines.remote import RemoteEngine
from parla.errors import InvalidInputError
from parla.services import Services
from parla.services.speech import SpeechOptions
from tests.conftest import mock_settings
from tests.engine_envs import EngineStack, engine_stack, environment, tiny_model

# -- the main environment: no f5-tts --------------------------------------------------------------


def test_f5_capabilities_and_parameters() -> None:
    capabilities = F5Engine().capabilities
    assert capabilities.sample_rate == 24_000 and capabilities.cloning and capabilities.needs_transcript
    assert capabilities.languages == LANGUAGES == ("en", "zh") and capabilities.streaming
    parameters = {p.name: p for p in capabilities.parameters}
    assert set(parameters) == {"nfe_step", "cfg_strength", "sway_sampling_coef", "speed"}
    assert (parameters["nfe_step"].minimum, parameters["nfe_step"].maximum) == (2, 128)
    assert parameters["sway_sampling_coef"].default == -1.0
    with pytest.raises(ValueError, match=r"'nfe_step' must be between 2 and 128, got 1000"):
        F5Engine().resolve_parameters({"nfe_step": 1000})
    assert F5Engine().resolve_parameters({"cfg_strength": 3}) == {
        "nfe_step": 32,
        "cfg_strength": 3.0,
        "sway_sampling_coef": -1.0,
        "speed": 1.0,
    }


def test_missing_weights_say_what_to_put_where(
    tmp_path: Path, no_weights_anywhere: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(F5Engine, "required_packages", ())  # as in the engine's own environment
    models = tmp_path / "models"
    engine = F5Engine(context=EngineContext(data_dir=tmp_path / "data", models_dir=models))
    reason = engine.unavailable_reason()
    assert reason is not None
    own = models.resolve() / "f5"
    assert f"put model_*.safetensors or model_*.pt and vocab.txt in {own}/" in reason
    assert f"put config.yaml and pytorch_model.bin in {own / 'vocos'}/" in reason
    assert "SWivid/F5-TTS" in reason and "charactr/vocos-mel-24khz" in reason
    for name in ("model_1250000.safetensors", "vocab.txt", "vocos/config.yaml", "vocos/pytorch_model.bin"):
        (own / name).parent.mkdir(parents=True, exist_ok=True)
        (own / name).write_bytes(b"{}")
    assert engine.unavailable_reason() is None


def test_languages_and_the_reference_text_are_f5s_own() -> None:
    assert [F5Engine().language_problem(x) for x in ("en", "en-us", "zh-cn", "zh-tw")] == [None] * 4
    assert F5Engine().language_problem("fr") == "engine 'f5' speaks en, zh, not 'fr'"
    assert reference_text("  Hello   there") == "Hello there. "
    assert reference_text("Hello there.") == "Hello there. " and reference_text("你好。") == "你好。"


def test_the_length_is_f5s_estimate_capped() -> None:
    # 100 frames of reference saying 20 bytes: 5 frames a byte, at speed 1.
    assert frames_for(100, "x" * 20, "y" * 30, 1.0, None) == 100 + 150
    assert frames_for(100, "x" * 20, "y" * 30, 2.0, None) == 100 + 75
    assert frames_for(100, "x" * 20, "y" * 5, 1.0, None) == 100 + int(25 / 0.3)  # short text: F5-TTS's slow pace
    assert frames_for(100, "x" * 20, "y" * 30, 1.0, 1.0) == 100 + 93  # 1 s: 93.75 frames of 256 samples


def test_a_voice_without_a_transcript_is_refused_saying_why(tmp_path: Path) -> None:
    engine = F5Engine()
    with pytest.raises(InvalidInputError, match=r"'alloy' has no sample with a transcript"):
        engine.prompt_for(VoiceRef("alloy"))
    with pytest.raises(InvalidInputError, match="what it says"):
        engine.prompt_for(VoiceRef("Ada", samples=((tmp_path / "ada.wav", None), (tmp_path / "b.wav", " "))))


def test_a_character_asking_for_f5tts_speaks_with_f5_when_it_can(
    tmp_path: Path, no_weights_anywhere: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The Titans character API's ``f5tts`` is the f5 engine, once it can run; until then the default."""
    services = Services.build(mock_settings(tmp_path))
    try:
        conversation = services.characters.conversation
        assert conversation._engine_for("f5tts") is None  # f5-tts is not installed here
        assert conversation._engine_for("mock") == "mock" and conversation._engine_for(None) is None
        monkeypatch.setattr(f5_module.F5Engine, "unavailable_reason", lambda self: None)
        assert conversation._engine_for("f5tts") == "f5" and conversation._engine_for("zonos") is None
    finally:
        services.close()


# -- in its own environment: the real loaders and inference on a tiny model ------------------------

SAID = "The birch canoe slid on the smooth planks."
TEXT = "Glue the sheet to the dark blue background. It is easy to tell the depth of a well."
MAX_PIECE_S = 0.8
"""PARLA_ENGINES__F5__MAX_SECONDS for the tiny model."""
CHUNK_SAMPLES = 4096
"""PARLA_ENGINES__F5__STREAM_CHUNK_SIZE: a capped piece comes in five chunks."""
FEW_STEPS = {"nfe_step": 4}


@pytest.fixture(scope="session")
def f5_env() -> EngineEnv:
    """The f5 engine's environment, built on the first run on this machine (minutes), then reused."""
    return environment("f5")


@pytest.fixture(scope="session")
def tiny_f5(f5_env: EngineEnv) -> Path:
    """A models directory holding a tiny random F5-TTS in ``f5/``, made by f5-tts's own classes in the
    engine's environment."""
    return tiny_model(f5_env, Path(__file__).with_name("tiny_f5.py"), made="f5/vocos/pytorch_model.bin", inside="f5")


@pytest.fixture(scope="module")
def f5_stack(f5_env: EngineEnv, tiny_f5: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[EngineStack]:
    variables = {
        "PARLA_MODELS_DIR": str(tiny_f5),
        "PARLA_ENGINES__F5__MAX_SECONDS": str(MAX_PIECE_S),
        "PARLA_ENGINES__F5__STREAM_CHUNK_SIZE": str(CHUNK_SAMPLES),
    }
    with engine_stack(f5_env, "f5", tmp_path_factory, variables=variables, clone=("Ada", SAID)) as stack:
        stack.request = {"parameters": FEW_STEPS}
        yield stack


def computed(stack: EngineStack, voice: str = "Ada") -> int:
    """How many times the worker prepared the voice's reference (it logs each time)."""
    return stack.log().count(f"reference for voice {voice!r} computed")


@pytest.mark.slow
@pytest.mark.model
def test_the_worker_runs_f5_from_its_own_environment(f5_stack: EngineStack) -> None:
    info = f5_stack.info()
    assert info["name"] == "f5" and info["status"]["loaded"] and info["status"]["device"] == "cpu"
    assert info["capabilities"]["sample_rate"] == 24_000 and info["capabilities"]["needs_transcript"]
    engine = f5_stack.services.engines.get("f5")
    assert isinstance(engine, RemoteEngine) and engine.capabilities.cloning and not engine.unavailable_reason()
    assert "model_0.safetensors (config.yaml" in f5_stack.log()  # the tiny model's own architecture


@pytest.mark.slow
@pytest.mark.model
def test_a_cloned_voice_speaks_24_khz_of_bounded_length_in_chunks(f5_stack: EngineStack) -> None:
    samples = f5_stack.audio(7, TEXT)
    plan = f5_stack.services.speech.prepare(
        SpeechOptions(input=TEXT, voice="Ada", model="f5", response_format="wav", seed=7, parameters=FEW_STEPS),
        source="test",
    )
    assert len(plan.pieces) >= 2
    assert 0.3 < samples.size / 24_000 <= MAX_PIECE_S * len(plan.pieces)
    assert np.abs(samples).max() > 0.001 and np.isfinite(samples).all()  # random weights make noise, not silence
    engine = f5_stack.services.engines.get("f5")
    for request in plan.requests():
        chunks: list[AudioChunk] = list(engine.synthesize(request))
        assert len(chunks) > 1 and all(c.sample_rate == 24_000 for c in chunks)
        assert all(c.samples.size <= CHUNK_SAMPLES for c in chunks)
        assert sum(c.samples.size for c in chunks) / 24_000 <= MAX_PIECE_S


@pytest.mark.slow
@pytest.mark.model
def test_the_same_seed_says_the_same_and_the_voice_is_prepared_once(f5_stack: EngineStack) -> None:
    first = f5_stack.audio(7, TEXT)
    again = f5_stack.speak(7, TEXT)[0]
    assert np.array_equal(again, first)
    other = f5_stack.speak(8, TEXT)[0]
    assert not (other.size == first.size and np.allclose(other, first, atol=1e-3))
    assert computed(f5_stack) == 1


@pytest.mark.slow
@pytest.mark.model
def test_unload_frees_the_model_and_the_next_request_loads_it_again(f5_stack: EngineStack) -> None:
    first = f5_stack.audio(7, TEXT)
    f5_stack.unload()
    again = f5_stack.speak(7, TEXT)[0]
    assert np.array_equal(again, first)
    assert f5_stack.info()["status"]["loaded"] is True


@pytest.mark.slow
@pytest.mark.model
def test_a_built_in_voice_is_refused_saying_why(f5_stack: EngineStack) -> None:
    body = {"model": "f5", "input": "Hello there.", "voice": "alloy", "response_format": "wav"}
    refused = httpx.post(f"{f5_stack.gateway_url}/v1/audio/speech", json=body, timeout=120)
    assert refused.status_code == 400, refused.text
    assert "'alloy' has no sample with a transcript" in refused.json()["detail"]
