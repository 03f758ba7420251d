"""Chatterbox (``parla.engines.chatterbox``).

In the main environment (the fast lane) the engine is listed, unavailable, saying exactly what to
install or where to put the weights, and a request for it is a 503 that says so; its parameters'
ranges, its language and its built-in voices are checked without the library.

In its own environment (``slow``, ``model``): the environment is built once per machine by Parla's
installer (``tests/engine_envs.py``), a tiny randomly initialised Chatterbox is made there in exactly
the layout ``ChatterboxTTS.from_local`` reads (``tests/tiny_chatterbox.py``), and ``parla serve-engine
chatterbox`` runs from it as a worker behind a gateway: Parla's adapter through the real loader,
``prepare_conditionals``, ``T3.inference``, ``S3Gen.inference`` and the watermarker. Random weights
never emit the stop token, so generation is capped (``PARLA_ENGINES__CHATTERBOX__MAX_SPEECH_TOKENS``),
and the tests make as few pieces as they can: each costs seconds of S3Gen on the CPU.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from urllib.parse import quote

import httpx
import numpy as np
import numpy.typing as npt
import pytest

from parla.audio import decode_audio
from parla.engines import EngineContext, VoiceRef
from parla.engines.chatterbox import (
    DELIVERY,
    ChatterboxEngine,
    ChatterboxSettings,
    join_reference,
    t3_size,
)
from parla.engines.envs import EngineEnv
from parla.engines.remote import RemoteEngine
from parla.errors import InvalidInputError
from tests.conftest import mock_settings, serving_in_process
from tests.engine_envs import EngineStack, engine_stack, environment, tiny_model

WEIGHTS = ("ve.safetensors", "t3_cfg.safetensors", "s3gen.safetensors", "tokenizer.json")


def _weights(directory: Path, *, conds: bool = False) -> Path:
    """Files named as Chatterbox's (their contents are not read by the finder)."""
    directory.mkdir(parents=True, exist_ok=True)
    for name in (*WEIGHTS, *(["conds.pt"] if conds else [])):
        (directory / name).write_bytes(b"{}")
    return directory


# -- the main environment: no chatterbox-tts ------------------------------------------------------


def test_chatterbox_capabilities() -> None:
    capabilities = ChatterboxEngine().capabilities
    assert capabilities.sample_rate == 24_000 and capabilities.cloning and not capabilities.needs_transcript
    assert capabilities.languages == ("en",) and capabilities.single_speaker and not capabilities.dialogue


async def test_chatterbox_parameters_as_the_api_lists_them(tmp_path: Path, no_weights_anywhere: Path) -> None:
    async with serving_in_process(mock_settings(tmp_path)) as app:
        model = (await app.client.get("/v1/models/chatterbox")).json()
        parameters = {p["name"]: p for p in model["capabilities"]["parameters"]}
        assert set(parameters) == {
            "exaggeration",
            "cfg_weight",
            "temperature",
            "min_p",
            "top_p",
            "repetition_penalty",
            "n_cfm_timesteps",
            "disable_watermark",
        }
        assert (parameters["exaggeration"]["minimum"], parameters["exaggeration"]["maximum"]) == (0.0, 2.0)
        assert parameters["disable_watermark"]["type"] == "bool" and parameters["disable_watermark"]["default"] is False


def test_parameters_are_checked_against_their_ranges() -> None:
    engine = ChatterboxEngine()
    assert engine.resolve_parameters({"exaggeration": 1, "disable_watermark": True}) == {
        "exaggeration": 1.0,
        "cfg_weight": 0.5,
        "temperature": 0.8,
        "min_p": 0.05,
        "top_p": 1.0,
        "repetition_penalty": 1.2,
        "n_cfm_timesteps": 10,
        "disable_watermark": True,
    }
    for given, problem in (
        ({"exaggeration": 2.5}, r"'exaggeration' must be between 0 and 2, got 2.5"),
        ({"cfg_weight": -0.1}, r"'cfg_weight' must be between 0 and 1"),
        ({"temperature": 0}, r"'temperature' must be between 0.05 and 5"),  # Chatterbox divides by it
        ({"repetition_penalty": 0.5}, r"'repetition_penalty' must be between 1 and 2"),
        ({"disable_watermark": "yes"}, r"'disable_watermark' must be of type bool"),
        ({"n_cfm_timesteps": 0}, r"'n_cfm_timesteps' must be between 1 and 100"),
    ):
        with pytest.raises(ValueError, match=problem):
            engine.resolve_parameters(given)
    # A built-in voice's delivery is a preset the client's values override.
    assert engine.resolve_parameters({"cfg_weight": 0.9}, DELIVERY["fable"])["exaggeration"] == 0.8
    assert engine.resolve_parameters({"cfg_weight": 0.9}, DELIVERY["fable"])["cfg_weight"] == 0.9
    with pytest.raises(ValueError, match="max_speech_tokens"):
        ChatterboxSettings.model_validate({"max_speech_tokens": 5000})  # T3 has 4096 learned positions


def test_missing_weights_say_what_to_put_where(
    tmp_path: Path, no_weights_anywhere: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ChatterboxEngine, "required_packages", ())  # as in the engine's own environment
    models = tmp_path / "models"
    engine = ChatterboxEngine(context=EngineContext(data_dir=tmp_path / "data", models_dir=models))
    reason = engine.unavailable_reason()
    assert reason is not None
    own = models.resolve() / "chatterbox"
    files = "ve.safetensors, t3_cfg.safetensors, s3gen.safetensors and tokenizer.json"
    assert f"put {files} in {own}/ (it does not exist)" in reason and "ResembleAI/chatterbox" in reason
    (own).mkdir(parents=True)
    (own / "ve.safetensors").write_bytes(b"{}")
    assert "missing there: t3_cfg.safetensors, s3gen.safetensors, tokenizer.json" in (engine.unavailable_reason() or "")

    # An offline Hugging Face cache, as huggingface_hub leaves it.
    repo = no_weights_anywhere / "models--ResembleAI--chatterbox"
    _weights(repo / "snapshots" / "0123abcd")
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0123abcd")
    assert engine.unavailable_reason() is None
    _weights(own)  # <models_dir>/chatterbox/ first, once whole
    assert engine.unavailable_reason() is None


def test_english_only() -> None:
    engine = ChatterboxEngine()
    assert engine.language_problem("en-AU") is None
    assert engine.language_problem("de") == "engine 'chatterbox' speaks en, not 'de'"


def test_built_in_voices_speak_conds_pt_or_are_refused(
    tmp_path: Path, no_weights_anywhere: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without conds.pt a built-in voice names what to do; with it the OpenAI names speak its default
    voice, each with its own delivery, and a voice with no samples that is none of them is refused."""
    monkeypatch.setattr(ChatterboxEngine, "required_packages", ())
    bare = ChatterboxEngine(context=EngineContext(models_dir=_weights(tmp_path / "bare" / "chatterbox").parent))
    assert bare.voice_presets == {}
    with pytest.raises(InvalidInputError, match=r"'alloy' is a built-in voice.*conds\.pt"):
        bare.conditioning_for(VoiceRef("alloy"))

    models = _weights(tmp_path / "full" / "chatterbox", conds=True).parent
    full = ChatterboxEngine(context=EngineContext(models_dir=models))
    assert full.voice_presets == DELIVERY and set(DELIVERY) == {"alloy", "echo", "fable", "nova", "onyx", "shimmer"}
    full._builtin = SimpleNamespace(t3="the default voice")  # as from_local loads conds.pt
    alloy = VoiceRef("alloy", presets={"chatterbox": full.voice_presets["alloy"]})
    assert full.conditioning_for(alloy) is full._builtin
    with pytest.raises(InvalidInputError, match=r"'joe' has no samples and is none of .*built-in voices \(alloy, echo"):
        full.conditioning_for(VoiceRef("joe"))


def test_t3_is_built_to_its_checkpoints_size() -> None:
    """The published T3 (Llama_520M: 30 layers of 1024, MLP 4096, 16 heads of 64) and a tiny one."""
    published = {
        **{f"tfmr.layers.{i}.input_layernorm.weight": (1024,) for i in range(30)},
        "tfmr.layers.0.mlp.gate_proj.weight": (4096, 1024),
        "tfmr.layers.0.self_attn.q_proj.weight": (1024, 1024),
        "tfmr.layers.0.self_attn.k_proj.weight": (1024, 1024),
        "speech_emb.weight": (8194, 1024),
    }
    assert t3_size(published, 64) == {
        "num_hidden_layers": 30,
        "hidden_size": 1024,
        "intermediate_size": 4096,
        "num_attention_heads": 16,
        "num_key_value_heads": 16,
    }
    tiny = {name.replace("4096", "256"): shape for name, shape in published.items() if ".layers.2" not in name}
    tiny = {k: v for k, v in tiny.items() if not k.startswith("tfmr.layers.") or k.startswith("tfmr.layers.0.")}
    tiny["tfmr.layers.0.mlp.gate_proj.weight"] = (256, 1024)
    assert t3_size(tiny, 64)["num_hidden_layers"] == 1 and t3_size(tiny, 64)["intermediate_size"] == 256
    assert t3_size({"speech_emb.weight": (8194, 1024)}, 64) == {}  # not a T3: the loader says what is wrong


def test_the_reference_is_the_samples_that_fit_in_ten_seconds() -> None:
    def seconds(n: float) -> npt.NDArray[np.float32]:
        return np.ones(int(n * 100), dtype=np.float32)  # at a rate of 100

    assert join_reference([seconds(6), seconds(3), seconds(2)], 100).size == 900  # 11 s with the third: not it
    assert join_reference([seconds(6), seconds(3), seconds(1)], 100).size == 1000
    assert join_reference([seconds(15)], 100).size == 1500  # the first always (the library cuts)
    assert join_reference([], 100).size == 0


# -- in its own environment: the real loader and inference on a tiny model ------------------------

SAID = "The birch canoe slid on the smooth planks."
TEXT = "Glue the sheet to the dark blue background."
CAP_TOKENS = 10
"""PARLA_ENGINES__CHATTERBOX__MAX_SPEECH_TOKENS for the tiny model: 25 tokens a second, 960 samples each
at 24 kHz, so a piece is at most 0.4 s."""
MAX_PIECE_S = CAP_TOKENS / 25
FEW_STEPS = {"n_cfm_timesteps": 2}
"""S3Gen's flow steps (10 by default, most of a piece's time: about 1.5 s each here)."""


@pytest.fixture(scope="session")
def chatterbox_env() -> EngineEnv:
    """The chatterbox engine's environment, built on the first run on this machine (minutes), then reused."""
    return environment("chatterbox")


@pytest.fixture(scope="session")
def tiny_chatterbox(chatterbox_env: EngineEnv) -> Path:
    """A models directory holding a tiny random Chatterbox in ``chatterbox/``, made by chatterbox-tts's
    own classes in the engine's environment."""
    script = Path(__file__).with_name("tiny_chatterbox.py")
    return tiny_model(chatterbox_env, script, made="chatterbox/conds.pt", inside="chatterbox")


@pytest.fixture(scope="module")
def chatterbox_stack(
    chatterbox_env: EngineEnv, tiny_chatterbox: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[EngineStack]:
    variables = {
        "PARLA_MODELS_DIR": str(tiny_chatterbox),
        "PARLA_ENGINES__CHATTERBOX__MAX_SPEECH_TOKENS": str(CAP_TOKENS),
    }
    clone = ("Ada", SAID)
    with engine_stack(chatterbox_env, "chatterbox", tmp_path_factory, variables=variables, clone=clone) as stack:
        stack.request = {"parameters": FEW_STEPS}
        yield stack


def computed(stack: EngineStack, voice: str = "Ada") -> int:
    """How many times the worker computed the voice's conditioning (it logs each time)."""
    return stack.log().count(f"conditioning for voice {voice!r} computed")


@pytest.mark.slow
@pytest.mark.model
def test_the_worker_runs_chatterbox_from_its_own_environment(chatterbox_stack: EngineStack) -> None:
    info = chatterbox_stack.info()
    assert info["name"] == "chatterbox" and info["status"]["loaded"] and info["status"]["device"] == "cpu"
    assert info["capabilities"]["sample_rate"] == 24_000 and info["capabilities"]["languages"] == ["en"]
    assert info["voice_presets"] == DELIVERY  # the tiny model has a conds.pt
    engine = chatterbox_stack.services.engines.get("chatterbox")
    assert isinstance(engine, RemoteEngine) and engine.capabilities.cloning and not engine.unavailable_reason()
    log = chatterbox_stack.log()
    assert "holds a T3 of another size than Llama_520M" in log and "with conds.pt's default voice" in log


@pytest.mark.slow
@pytest.mark.model
def test_a_cloned_voice_speaks_24_khz_of_bounded_length_and_the_same_seed_the_same(
    chatterbox_stack: EngineStack,
) -> None:
    first = chatterbox_stack.audio(7, TEXT)  # speak() checks the rate is the engine's own, 24 kHz
    assert 0.1 < first.size / 24_000 <= MAX_PIECE_S + 0.05
    assert np.abs(first).max() > 0.001 and np.isfinite(first).all()  # random weights make noise, not silence
    again, _ = chatterbox_stack.speak(7, TEXT)
    assert np.array_equal(again, first)
    assert computed(chatterbox_stack) == 1  # the conditioning computed once, reused by both requests


@pytest.mark.slow
@pytest.mark.model
def test_unload_frees_the_model_and_the_next_request_loads_it_again(chatterbox_stack: EngineStack) -> None:
    first = chatterbox_stack.audio(7, TEXT)
    loads = chatterbox_stack.log().count("chatterbox: loaded")
    chatterbox_stack.unload()
    again, _ = chatterbox_stack.speak(7, TEXT)
    assert np.array_equal(again, first)  # the same weights, the same conditioning, the same seed
    assert chatterbox_stack.log().count("chatterbox: loaded") == loads + 1
    assert computed(chatterbox_stack) == 2  # unloading forgot the voice's conditioning with the model
    assert chatterbox_stack.info()["status"]["loaded"] is True


@pytest.mark.slow
@pytest.mark.model
def test_built_in_voices_speak_conds_pt_through_the_model_microservice_api(chatterbox_stack: EngineStack) -> None:
    """``alloy`` speaks the tiny model's conds.pt, with parameters, through ``?engine=chatterbox``;
    ``joe``, a built-in voice Chatterbox has no delivery for, is refused saying why."""
    url = f"{chatterbox_stack.gateway_url}/v1/text-to-speech/{quote('alloy')}?engine=chatterbox"
    parameters = {"seed": 8, "exaggeration": 0.9, "cfg_weight": 0.0, "disable_watermark": True, **FEW_STEPS}
    body = {"text": TEXT, "output_filepath": "out/alloy.wav", "parameters": parameters}
    spoken = httpx.post(url, json=body, timeout=600)
    assert spoken.status_code == 200, spoken.text
    samples, rate = decode_audio(chatterbox_stack.services.settings.data_dir / "out" / "alloy.wav")
    assert rate == 24_000 and 0.1 < samples.size / rate <= MAX_PIECE_S + 0.05
    assert not (
        samples.size == chatterbox_stack.audio(7, TEXT).size and np.allclose(samples, chatterbox_stack.audio(7, TEXT))
    )

    body = {"text": TEXT, "output_filepath": "out/joe.wav"}
    refused = httpx.post(url.replace("/alloy?", "/joe?"), json=body, timeout=120)
    assert refused.status_code == 400, refused.text
    assert "'joe' has no samples and is none of engine 'chatterbox''s built-in voices" in refused.json()["detail"]
