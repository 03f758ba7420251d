"""Higgs Audio v2 (``parla.engines.higgs``).

In the main environment (the fast lane) the engine is listed, unavailable, saying exactly what to
install or where to put the weights (its semantic model, HuBERT, among them), and a request for it
is a 503 that says so, on the OpenAI API and on the model microservice API's ``?engine=higgs``.

In its own environment (``slow``, ``model``): the environment is built once per machine by Parla's
installer (``tests/engine_envs.py``), a tiny randomly initialised Higgs Audio model, audio tokenizer
and HuBERT are made there in exactly the layout the engine's loader reads (``tests/tiny_higgs.py``),
and ``parla serve-engine higgs`` runs from it as a worker behind a gateway, offline with an empty
Hugging Face cache: Parla's adapter through the library's real ``HiggsAudioServeEngine`` (its audio
tokenizer's semantic model read from ``hubert/``), ``prepare_chatml_sample``, its collator,
``HiggsAudioModel.generate`` and the audio tokenizer's ``encode`` and ``decode``. Random weights
never end the audio, so the steps made per piece are capped (``PARLA_ENGINES__HIGGS__MAX_NEW_TOKENS_CAP``).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any
from urllib.parse import quote

import httpx
import numpy as np
import numpy.typing as npt
import pytest

from parla.audio import decode_audio
from parla.engines import EngineContext, VoiceRef
from parla.engines.envs import EngineEnv
from parla.engines.higgs import (
    DEFAULT_SCENE,
    LANGUAGES,
    SAMPLE_RATE,
    HiggsEngine,
    HiggsSettings,
    higgs_tags,
    new_tokens,
    semantic_model_from,
    system_message,
)
from parla.engines.remote import RemoteEngine
from parla.errors import InvalidInputError
from parla.services.speech import SpeechOptions
from tests.conftest import mock_settings, serving_in_process, someone_saying
from tests.engine_envs import EngineStack, engine_stack, environment, tiny_model

NOT_INSTALLED = (
    "boson-multimodal is not installed in this environment: Higgs Audio runs in its own; install its environment"
    " with `parla engines install higgs` and serve it with `parla serve-engine higgs`"
)
PARAMETERS = {"scene_prompt", "temperature", "top_k", "top_p", "ras_win_len", "ras_max_num_repeat", "max_new_tokens"}


def _files(directory: Path, *names: str) -> Path:
    """Files named as the loaders read them (the finder reads none)."""
    for name in names:
        (directory / name).parent.mkdir(parents=True, exist_ok=True)
        (directory / name).write_text("{}")
    return directory


# -- the main environment: no boson-multimodal ----------------------------------------------------


def test_higgs_capabilities() -> None:
    capabilities = HiggsEngine().capabilities
    assert capabilities.sample_rate == 24_000 and capabilities.languages == ("en", "zh", "de", "ko")
    assert capabilities.cloning and capabilities.needs_transcript and not capabilities.streaming
    assert capabilities.dialogue and capabilities.scripted_dialogue and capabilities.single_speaker
    assert not capabilities.nonverbal  # Parla's cues are not Higgs's sound events: they become pauses


async def test_loading_higgs_is_a_503_and_its_parameters_are_listed(tmp_path: Path, no_weights_anywhere: Path) -> None:
    async with serving_in_process(mock_settings(tmp_path)) as app:
        loading = await app.client.post("/v1/load-model?engine=higgs")
        assert loading.status_code == 503 and NOT_INSTALLED in loading.json()["detail"]
        model = (await app.client.get("/v1/models/higgs")).json()
        parameters = {p["name"]: p for p in model["capabilities"]["parameters"]}
        assert set(parameters) == PARAMETERS
        assert parameters["scene_prompt"]["type"] == "str" and parameters["temperature"]["default"] is None
        assert (parameters["ras_win_len"]["minimum"], parameters["ras_win_len"]["maximum"]) == (0, 100)


def test_parameters_are_checked_against_their_ranges() -> None:
    engine = HiggsEngine()
    for given, problem in (
        ({"temperature": 2.5}, r"'temperature' must be between 0 and 2, got 2.5"),
        ({"top_p": 0}, r"'top_p' must be between 0.01 and 1, got 0"),
        ({"top_k": 0}, r"'top_k' must be between 1 and 1000, got 0"),
        ({"ras_win_len": -1}, r"'ras_win_len' must be between 0 and 100, got -1"),
        ({"ras_max_num_repeat": 0}, r"'ras_max_num_repeat' must be between 1 and 100, got 0"),
        ({"scene_prompt": 3}, r"'scene_prompt' must be of type str, not int"),
        ({"scene_prompt": "x" * 2001}, r"'scene_prompt' must be at most 2000 characters, got 2001"),
        ({"max_new_tokens": 0}, r"'max_new_tokens' must be between 1 and 10000, got 0"),
    ):
        with pytest.raises(ValueError, match=problem):
            engine.resolve_parameters(given)
    resolved = engine.resolve_parameters({"temperature": 1, "scene_prompt": "A busy street.", "cfg_scale": 2.0})
    assert resolved["temperature"] == 1.0 and resolved["scene_prompt"] == "A busy street."
    assert "cfg_scale" not in resolved and engine.ignored_parameters({"cfg_scale": 2.0}) == ["cfg_scale"]
    with pytest.raises(ValueError):
        HiggsSettings(scene_prompt="x" * 2001)


def test_missing_weights_say_what_to_put_where(
    tmp_path: Path, no_weights_anywhere: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(HiggsEngine, "required_packages", ())  # as in the engine's own environment
    models = tmp_path / "models"
    engine = HiggsEngine(context=EngineContext(data_dir=tmp_path / "data", models_dir=models))
    own = models.resolve() / "higgs"
    reason = str(engine.unavailable_reason())
    assert (
        "the generation model: put config.json, model.safetensors or model-*.safetensors, tokenizer.json and"
        f" tokenizer_config.json in {own}/ (it does not exist)"
    ) in reason
    assert f"its audio tokenizer: put config.json and model.pth in {own / 'tokenizer'}/" in reason
    assert (
        "the audio tokenizer's semantic model (HuBERT): put config.json and model.safetensors or pytorch_model.bin"
        f" in {own / 'hubert'}/"
    ) in reason
    assert "bosonai/hubert_base in the Hugging Face cache" in reason and "note:" not in reason

    _files(own, "config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json")
    _files(own / "tokenizer", "config.json", "model.pth")
    reason = str(engine.unavailable_reason())
    assert "generation model" not in reason and "its audio tokenizer" not in reason
    assert f"in {own / 'hubert'}/ (it does not exist)" in reason

    # HuBERT from an offline Hugging Face cache, as huggingface_hub leaves bosonai/hubert_base.
    repo = no_weights_anywhere / "models--bosonai--hubert_base"
    snapshot = _files(repo / "snapshots" / "0123abcd", "config.json", "pytorch_model.bin")
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0123abcd")
    assert engine.unavailable_reason() is None
    from parla.engines.weights import locate

    found = locate("higgs", engine.context)
    assert found.path == own and found.part("tokenizer") == own / "tokenizer" and found.part("hubert") == snapshot


def test_the_semantic_model_is_read_from_the_directory_and_the_name_put_back(tmp_path: Path) -> None:
    """``semantic_model_from`` rebinds the tokenizer module's ``AutoModel`` only while the block runs."""
    calls: list[tuple[str, dict[str, Any]]] = []

    class Real:
        @staticmethod
        def from_pretrained(name: str, **kwargs: Any) -> str:
            calls.append((name, kwargs))
            return f"model from {name}"

    module = SimpleNamespace(AutoModel=Real)
    with semantic_model_from(tmp_path / "hubert", module) as asked:
        assert module.AutoModel is not Real
        loaded = module.AutoModel.from_pretrained("bosonai/hubert_base", trust_remote_code=True)
    assert loaded == f"model from {tmp_path / 'hubert'}" and asked == ["bosonai/hubert_base"]
    assert calls == [(str(tmp_path / "hubert"), {"trust_remote_code": True, "local_files_only": True})]
    assert module.AutoModel is Real
    with pytest.raises(RuntimeError), semantic_model_from(tmp_path, module):
        raise RuntimeError("the constructor failed")
    assert module.AutoModel is Real  # put back on an error too


def test_tags_scenes_languages_and_lengths_are_higgss_own() -> None:
    assert higgs_tags("[S1] Hi there.  [ s2 ] Hello!") == "[SPEAKER0] Hi there. [SPEAKER1] Hello!"
    assert higgs_tags("No tags here.") == "No tags here."
    assert system_message("") == "Generate audio following instruction."
    assert system_message(" A windy beach. ") == (
        "Generate audio following instruction.\n\n<|scene_desc_start|>\nA windy beach.\n<|scene_desc_end|>"
    )
    assert HiggsSettings().scene_prompt == DEFAULT_SCENE
    assert new_tokens(None, 2048, 5000, None) == 2048
    assert new_tokens(100, 2048, 50, None) == 50  # the longest cache's room
    assert new_tokens(100, 2048, 5000, 24) == 24 and new_tokens(None, 2048, 0, None) == 1
    engine = HiggsEngine()
    assert engine.language_problem("de-DE") is None and engine.language_problem("zh-tw") is None
    assert engine.language_problem("fr") == f"engine 'higgs' speaks {', '.join(LANGUAGES)}, not 'fr'"


def test_a_voice_without_a_transcript_is_refused_and_a_builtin_voice_has_no_reference(tmp_path: Path) -> None:
    engine = HiggsEngine()
    assert engine.prompt_for(VoiceRef("alloy")) is None
    with pytest.raises(InvalidInputError, match=r"'Ada' has no sample with a transcript"):
        engine.prompt_for(VoiceRef("Ada", samples=((tmp_path / "ada.wav", None), (tmp_path / "b.wav", " "))))


# -- in its own environment: the real loader and inference on a tiny model ----------------------------

SAID = "The birch canoe slid on the smooth planks."
TEXT = "Glue the sheet to the dark blue background. It is easy to tell the depth of a well."
CAP = 24
"""PARLA_ENGINES__HIGGS__MAX_NEW_TOKENS_CAP for the tiny model: at most this many audio steps a piece,
of which the delay pattern and the stream's ends take 3 + 2, so under a second of 24 kHz audio."""
MAX_PIECE_S = CAP * 960 / SAMPLE_RATE


@pytest.fixture(scope="session")
def higgs_env() -> EngineEnv:
    """The higgs engine's environment, built on the first run on this machine (minutes), then reused."""
    return environment("higgs")


@pytest.fixture(scope="session")
def tiny_higgs(higgs_env: EngineEnv) -> Path:
    """A models directory holding a tiny random Higgs Audio model, audio tokenizer and HuBERT in
    ``higgs/``, made by the library's and transformers' own classes in the engine's environment."""
    script = Path(__file__).with_name("tiny_higgs.py")
    return tiny_model(higgs_env, script, made="higgs/tokenizer/model.pth", inside="higgs")


@pytest.fixture(scope="module")
def higgs_stack(
    higgs_env: EngineEnv, tiny_higgs: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[EngineStack]:
    variables = {"PARLA_MODELS_DIR": str(tiny_higgs), "PARLA_ENGINES__HIGGS__MAX_NEW_TOKENS_CAP": str(CAP)}
    with engine_stack(higgs_env, "higgs", tmp_path_factory, variables=variables, clone=("Ada", SAID)) as stack:
        yield stack


def encoded(stack: EngineStack, voice: str = "Ada") -> int:
    """How many times the worker encoded the voice's reference (it logs each time)."""
    return stack.log().count(f"reference for voice {voice!r} encoded")


def spoken(stack: EngineStack, seed: int, **extra: Any) -> npt.NDArray[np.float32]:
    """``stack.speak`` with ``extra`` in the request (parameters, another voice) for once."""
    stack.request = extra
    try:
        return stack.speak(seed, TEXT)[0]
    finally:
        stack.request = {}


def same(a: npt.NDArray[np.float32], b: npt.NDArray[np.float32]) -> bool:
    return a.size == b.size and bool(np.allclose(a, b, atol=1e-3))


@pytest.mark.slow
@pytest.mark.model
def test_the_worker_runs_higgs_from_its_own_environment_hubert_from_the_models_directory(
    higgs_stack: EngineStack, tiny_higgs: Path
) -> None:
    info = higgs_stack.info()
    assert info["name"] == "higgs" and info["status"]["loaded"] and info["status"]["device"] == "cpu"
    capabilities = info["capabilities"]
    assert capabilities["sample_rate"] == 24_000 and capabilities["languages"] == list(LANGUAGES)
    assert capabilities["cloning"] and capabilities["needs_transcript"] and capabilities["scripted_dialogue"]
    assert info["memory"]["rss_mb"] > 0
    engine = higgs_stack.services.engines.get("higgs")
    assert isinstance(engine, RemoteEngine) and engine.capabilities.cloning and not engine.unavailable_reason()
    health = httpx.get(f"{higgs_stack.gateway_url}/health", timeout=10).json()
    listed = next(e for e in health["engines"] if e["name"] == "higgs")
    assert listed["loaded"] and listed["device"] == "cpu"
    log = higgs_stack.log()
    directory = tiny_higgs / "higgs"
    # Asked for by hub id, read from the models directory; the worker's Hugging Face cache is empty.
    assert f"semantic model bosonai/hubert_base read from {directory / 'hubert'}" in log
    assert f"loaded {directory} (PARLA_MODELS_DIR)" in log
    assert not any((higgs_stack.worker_data / "hf").rglob("*.json"))


@pytest.mark.slow
@pytest.mark.model
def test_a_cloned_voice_speaks_24_khz_of_bounded_length(higgs_stack: EngineStack) -> None:
    samples = higgs_stack.audio(7, TEXT)
    options = SpeechOptions(input=TEXT, voice="Ada", model="higgs", response_format="wav", seed=7)
    pieces = len(higgs_stack.services.speech.prepare(options, source="test").pieces)
    assert pieces >= 2
    assert 0.2 < samples.size / SAMPLE_RATE <= MAX_PIECE_S * pieces + 0.5  # the pauses between pieces
    assert np.abs(samples).max() > 0.01 and np.isfinite(samples).all()  # random weights make noise, not silence


@pytest.mark.slow
@pytest.mark.model
def test_the_same_seed_says_the_same_and_the_reference_is_encoded_once(higgs_stack: EngineStack) -> None:
    first = higgs_stack.audio(7, TEXT)
    again = higgs_stack.speak(7, TEXT)[0]
    assert np.array_equal(again, first)
    assert not same(higgs_stack.speak(8, TEXT)[0], first)
    assert encoded(higgs_stack) == 1


@pytest.mark.slow
@pytest.mark.model
def test_the_reference_and_the_scene_change_what_is_said(higgs_stack: EngineStack) -> None:
    cloned = higgs_stack.audio(7, TEXT)
    assert not same(spoken(higgs_stack, 7, voice="alloy"), cloned)  # no reference: Higgs's own voice
    scened = spoken(higgs_stack, 7, parameters={"scene_prompt": "A crowded train station at rush hour."})
    assert not same(scened, cloned)
    assert same(spoken(higgs_stack, 7, parameters={"scene_prompt": DEFAULT_SCENE}), cloned)  # the default scene
    knobs = {"temperature": 1.2, "top_k": 5, "top_p": 0.5, "ras_win_len": 0, "ras_max_num_repeat": 3}
    assert not same(spoken(higgs_stack, 7, parameters=knobs), cloned)


@pytest.mark.slow
@pytest.mark.model
def test_parameters_out_of_range_are_refused_before_anything_is_made(higgs_stack: EngineStack) -> None:
    body = {"model": "higgs", "input": TEXT, "voice": "Ada", "response_format": "wav"}
    for parameters, problem in (
        ({"temperature": 3.0}, "'temperature' must be between 0 and 2"),
        ({"ras_win_len": 101}, "'ras_win_len' must be between 0 and 100"),
        ({"scene_prompt": ["a list"]}, "'scene_prompt' must be of type str"),
    ):
        refused = httpx.post(
            f"{higgs_stack.gateway_url}/v1/audio/speech", json={**body, "parameters": parameters}, timeout=120
        )
        assert 400 <= refused.status_code < 500, refused.text
        assert problem in refused.json()["detail"]
    french = httpx.post(f"{higgs_stack.gateway_url}/v1/audio/speech", json={**body, "language": "fr"}, timeout=120)
    assert french.status_code == 400 and "engine 'higgs' speaks en, zh, de, ko" in french.json()["detail"]


@pytest.mark.slow
@pytest.mark.model
def test_a_reference_file_speaks_through_the_model_microservice_api(higgs_stack: EngineStack) -> None:
    data = higgs_stack.services.settings.data_dir
    (data / "refs").mkdir(exist_ok=True)
    (data / "refs" / "ada.wav").write_bytes(someone_saying(SAID))
    url = f"{higgs_stack.gateway_url}/v1/text-to-speech/{quote('refs/ada.wav', safe='')}?engine=higgs"
    parameters = {"seed": 7, "transcription": SAID, "scene_prompt": "A quiet library."}
    answer = httpx.post(
        url, json={"text": TEXT, "output_filepath": "out/ada.wav", "parameters": parameters}, timeout=600
    )
    assert answer.status_code == 200, answer.text
    samples, rate = decode_audio(data / "out" / "ada.wav")
    assert rate == SAMPLE_RATE and samples.size > 0.2 * SAMPLE_RATE and np.abs(samples).max() > 0.01
    assert answer.json()["ignored_parameters"] == []


@pytest.mark.slow
@pytest.mark.model
def test_a_dialogue_is_one_script_with_each_speakers_reference(higgs_stack: EngineStack) -> None:
    body = {
        "model": "higgs",
        "text": "[S1] Hello there, how are you? [S2] Fine, thank you.",
        "voices": {"S1": "Ada", "S2": "alloy"},
        "response_format": "wav",
        "seed": 3,
    }
    response = httpx.post(f"{higgs_stack.gateway_url}/v1/audio/dialogue", json=body, timeout=600)
    assert response.status_code == 200, response.text
    samples, rate = decode_audio(response.content)
    assert rate == SAMPLE_RATE and 0.1 < samples.size / rate <= MAX_PIECE_S + 0.5  # one generation
    turns = json.loads(response.headers["X-Turns"])
    assert len(turns) == 2 and turns[0]["start"] == turns[1]["start"]  # spoken together, in one script
    assert encoded(higgs_stack, "S1=Ada, S2=alloy") == 1


@pytest.mark.slow
@pytest.mark.model
def test_unload_frees_the_model_and_the_next_request_loads_it_again(higgs_stack: EngineStack) -> None:
    first = higgs_stack.audio(7, TEXT)
    references = encoded(higgs_stack)
    higgs_stack.unload()
    again = higgs_stack.speak(7, TEXT)[0]
    assert np.array_equal(again, first)
    assert higgs_stack.info()["status"]["loaded"] is True
    assert encoded(higgs_stack) == references + 1  # the reference went with the model, and was encoded again
