"""Dia (``parla.engines.dia``) and the Dia server API's choice of engine (``parla.api.compat.dia``).

In the main environment (the fast lane) the engine is listed, unavailable, saying exactly what to
install or where to put the weights, a request for it is a 503 that says so, and it refuses
single-speaker speech on every API before anything else (a 400).

In its own environment (``slow``, ``model``): the environment is built once per machine by Parla's
installer (``tests/engine_envs.py``), a tiny randomly initialised Dia and DAC codec are made there in
exactly the layout the engine's loader reads (``tests/tiny_dia.py``), and ``parla serve-engine dia``
runs from it as a worker behind a gateway: Parla's adapter through transformers' real
``DiaProcessor``, ``DiaForConditionalGeneration.generate`` and ``DacModel``. Random weights never emit
the end token, so the frames made per piece are capped (``PARLA_ENGINES__DIA__MAX_NEW_TOKENS_CAP``).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import numpy.typing as npt
import pytest

from parla.api.compat import dia as dia_api
from parla.audio import decode_audio
from parla.engines import EngineContext, EngineRegistry, VoiceRef
from parla.engines.base import SynthesisRequest
from parla.engines.dia import (
    FRAME_SAMPLES,
    SAMPLE_RATE,
    DiaEngine,
    new_tokens,
    script_for,
    speakers_in,
    tagged,
)
from parla.engines.envs import EngineEnv
from parla.engines.remote import RemoteEngine
from parla.errors import InvalidInputError
from tests.conftest import mock_settings, serving_in_process, someone_saying
from tests.engine_envs import EngineStack, engine_stack, environment, tiny_model

NOT_INSTALLED = (
    "transformers is not installed in this environment: Dia runs in its own; install its environment with "
    "`parla engines install dia` and serve it with `parla serve-engine dia`"
)
DIALOGUE = "[S1] Hello there, how are you? [S2] Fine (laughs), thank you."


# -- the main environment: no transformers, no torch -----------------------------------------------


def test_dia_capabilities() -> None:
    capabilities = DiaEngine().capabilities
    assert capabilities.sample_rate == SAMPLE_RATE == 44_100 and capabilities.languages == ("en",)
    assert capabilities.dialogue and capabilities.nonverbal and not capabilities.single_speaker
    assert capabilities.min_dialogue_turns == 2 and capabilities.cloning and capabilities.needs_transcript
    assert capabilities.scripted_dialogue and capabilities.max_script_bytes == 1024  # handed whole scripts
    assert not capabilities.streaming  # a piece's audio comes whole, once generated


async def test_dia_refuses_one_speaker_on_every_api_before_anything_else(
    tmp_path: Path, no_weights_anywhere: Path
) -> None:
    async with serving_in_process(mock_settings(tmp_path)) as app:
        # Dia makes dialogue only: one speaker is refused on every API, before its availability is asked.
        speech = {"model": "dia", "input": "Hello there.", "voice": "alloy", "response_format": "wav"}
        openai = await app.client.post("/v1/audio/speech", json=speech)
        assert openai.status_code == 400 and "engine 'dia' makes dialogue only" in openai.json()["detail"]
        standard = await app.client.post(
            "/v1/text-to-speech/alloy?engine=dia", json={"text": "Hello there.", "output_filepath": "o.wav"}
        )
        assert standard.status_code == 400 and "engine 'dia' makes dialogue only" in standard.json()["detail"]
        assert not (tmp_path / "o.wav").exists()


def test_parameters_are_checked_against_their_documented_ranges(tmp_path: Path) -> None:
    engine = DiaEngine()
    parameters = {p.name: p for p in engine.capabilities.parameters}
    assert set(parameters) == {"temperature", "cfg_scale", "top_p", "top_k", "max_new_tokens", "max_tokens"}
    ranges = {name: (p.minimum, p.maximum) for name, p in parameters.items()}
    assert ranges["temperature"] == (0.1, 2.0) and ranges["cfg_scale"] == (1.0, 10.0)
    assert ranges["top_p"] == (0.0, 1.0) and ranges["max_tokens"] == ranges["max_new_tokens"] == (1, 10_000)
    with pytest.raises(ValueError, match=r"'temperature' must be between 0.1 and 2, got 3.0"):
        engine.resolve_parameters({"temperature": 3})
    with pytest.raises(ValueError, match=r"'cfg_scale' must be between 1 and 10, got 0.5"):
        engine.resolve_parameters({"cfg_scale": 0.5})
    with pytest.raises(ValueError, match=r"'max_tokens' must be between 1 and 10000, got 20000"):
        engine.resolve_parameters({"max_tokens": 20_000})
    resolved = engine.resolve_parameters({"cfg_scale": 3, "top_p": 0.9, "max_tokens": 500, "speaker": "x"})
    assert resolved == {
        "temperature": None,
        "cfg_scale": 3.0,
        "top_p": 0.9,
        "top_k": None,
        "max_new_tokens": None,
        "max_tokens": 500,
    }


def test_missing_weights_say_what_to_put_where(
    tmp_path: Path, no_weights_anywhere: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(DiaEngine, "required_packages", ())  # as in the engine's own environment
    models = tmp_path / "models"
    engine = DiaEngine(context=EngineContext(data_dir=tmp_path / "data", models_dir=models))
    reason = engine.unavailable_reason()
    assert reason is not None
    own = models.resolve() / "dia"
    assert (
        f"put config.json, model.safetensors or model-*.safetensors, processor_config.json or "
        f"preprocessor_config.json and tokenizer_config.json in {own}/" in reason
    )
    assert f"put config.json and model.safetensors in {own / 'dac_44khz'}/" in reason
    assert "nari-labs/Dia-1.6B-0626" in reason and "descript/dac_44khz" in reason
    for name in (
        "config.json",
        "model.safetensors",
        "processor_config.json",
        "tokenizer_config.json",
        "dac_44khz/config.json",
        "dac_44khz/model.safetensors",
    ):
        (own / name).parent.mkdir(parents=True, exist_ok=True)
        (own / name).write_bytes(b"{}")
    assert engine.unavailable_reason() is None


def test_scripts_tags_languages_and_lengths_are_dias_own() -> None:
    assert speakers_in("[S1] a [ s2 ] b [S1] c") == ["S1", "S2", "S1"]
    assert tagged("  Hello   there ") == "[S1] Hello there" and tagged("[s2]  Hi", "S1") == "[S2] Hi"
    # A turn is spoken as the prompt's first speaker; a script keeps its own tags, cues included.
    assert script_for("Hello (laughs).", "") == "[S1] Hello (laughs)."
    assert script_for("Hello.", "[S2] What I said.") == "[S2] What I said. [S2] Hello."
    assert script_for(DIALOGUE, "[S1] Mine.") == f"[S1] Mine. {DIALOGUE}"
    assert DiaEngine().language_problem("en-gb") is None
    assert DiaEngine().language_problem("fr") == "engine 'dia' speaks en, not 'fr'"
    assert new_tokens(None, 3072, 3000, None) == 3000  # the decoder's positions left after the prompt
    assert new_tokens(500, 3072, 3000, 64) == 64 and new_tokens(20, 3072, 3000, 64) == 20
    assert new_tokens(None, 3072, -5, None) == 1


def test_a_voice_without_a_transcript_is_refused_and_a_builtin_voice_has_no_prompt(tmp_path: Path) -> None:
    engine = DiaEngine()
    assert engine.prompt_for(VoiceRef("alloy")) is None  # Dia picks a voice; the seed decides it
    with pytest.raises(InvalidInputError, match=r"'Ada' has no sample with a transcript"):
        engine.prompt_for(VoiceRef("Ada", samples=((tmp_path / "ada.wav", None), (tmp_path / "b.wav", " "))))


def test_the_dia_server_api_speaks_through_dia_when_it_can(
    tmp_path: Path, no_weights_anywhere: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    registry = EngineRegistry.from_entry_points(mock_settings(tmp_path))
    settings = mock_settings(tmp_path)
    try:
        assert dia_api.dia_reason(registry) == NOT_INSTALLED
        assert dia_api.speaking_engine(settings, registry).name == settings.default_engine
        assert dia_api.model_for(registry, "dia", DIALOGUE) is None  # today's engines
        assert dia_api.model_for(registry, "piper", DIALOGUE) == "piper"
        monkeypatch.setattr(DiaEngine, "unavailable_reason", lambda self: None)
        assert dia_api.speaking_engine(settings, registry).name == "dia"
        assert dia_api.model_for(registry, "dia", DIALOGUE) == "dia" and dia_api.model_for(registry, None, DIALOGUE)
        # One speaker stays with today's engines: Dia would refuse it.
        assert dia_api.model_for(registry, "dia", "[S1] Hi. [S1] Me again.") is None
        assert dia_api.model_for(registry, "Dia-1.6B", "Just text.") is None
        assert dia_api.model_for(registry, "mock", "Just text.") == "mock"
    finally:
        registry.shutdown()


async def test_the_dia_server_models_say_which_engine_speaks(tmp_path: Path, no_weights_anywhere: Path) -> None:
    async with serving_in_process(mock_settings(tmp_path)) as app:
        listed = (await app.client.get("/models")).json()
        assert listed["engine"] == listed["default"] != "dia"
        assert listed["engine_note"] == f"Dia is not available here ({NOT_INSTALLED}): dialogues speak through mock"
        dia = next(m for m in listed["models"] if m["id"] == "dia")
        assert dia["available"] is False and dia["capabilities"]["min_dialogue_turns"] == 2


# -- in its own environment: the real processor, generation and codec on a tiny model ---------------

SAID = "The birch canoe slid on the smooth planks."
BEA = "Glue the sheet to the dark blue background."
CAP = 48
"""PARLA_ENGINES__DIA__MAX_NEW_TOKENS_CAP for the tiny model: at most about half a second a piece."""
PIECE_S = CAP * FRAME_SAMPLES / SAMPLE_RATE
DIA_PARAMETERS = {"temperature": 1.3, "cfg_scale": 2.0, "top_p": 0.95, "max_tokens": 1000}


@pytest.fixture(scope="session")
def dia_env() -> EngineEnv:
    """The dia engine's environment, built on the first run on this machine (minutes), then reused."""
    return environment("dia")


@pytest.fixture(scope="session")
def tiny_dia(dia_env: EngineEnv) -> Path:
    """A models directory holding a tiny random Dia and DAC in ``dia/``, made by transformers' own
    classes and ``save_pretrained`` in the engine's environment."""
    script = Path(__file__).with_name("tiny_dia.py")
    return tiny_model(dia_env, script, made="dia/dac_44khz/model.safetensors", inside="dia")


@pytest.fixture(scope="module")
def dia_stack(dia_env: EngineEnv, tiny_dia: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[EngineStack]:
    variables = {"PARLA_MODELS_DIR": str(tiny_dia), "PARLA_ENGINES__DIA__MAX_NEW_TOKENS_CAP": str(CAP)}
    with engine_stack(dia_env, "dia", tmp_path_factory, variables=variables, clone=("Ada", SAID)) as stack:
        yield stack


def dialogue(stack: EngineStack, seed: int, **extra: Any) -> tuple[npt.NDArray[np.float32], list[dict[str, Any]]]:
    """A two-speaker dialogue through the gateway, S1 in Ada's voice (its audio prompt), S2 in alloy
    (no prompt); the decoded audio and the turns' times."""
    body = {
        "model": "dia",
        "text": DIALOGUE,
        "voices": {"S1": "Ada", "S2": "alloy"},
        "response_format": "wav",
        "seed": seed,
        "parameters": DIA_PARAMETERS,
        **extra,
    }
    response = httpx.post(f"{stack.gateway_url}/v1/audio/dialogue", json=body, timeout=600)
    assert response.status_code == 200, response.text
    samples, rate = decode_audio(response.content)
    assert rate == SAMPLE_RATE  # Dia's own rate, not resampled
    return samples, json.loads(response.headers.get("X-Turns", "[]"))


ADA_AND_ALLOY = "S1=Ada, S2=alloy"
"""The voice ``dialogue`` speaks in: one script's voice, its prompt Ada's sample as S1 (alloy has none)."""


def encoded(stack: EngineStack, voice: str = ADA_AND_ALLOY) -> int:
    """How many times the worker encoded the voice's audio prompt (it logs each time)."""
    return stack.log().count(f"audio prompt for voice {voice!r} encoded")


def generations(stack: EngineStack) -> int:
    """How many requests the worker was given to speak (its access log)."""
    return sum("/stream HTTP" in line for line in stack.log().splitlines())


@pytest.mark.slow
@pytest.mark.model
def test_the_worker_runs_dia_from_its_own_environment(dia_stack: EngineStack) -> None:
    info = dia_stack.info()
    assert info["name"] == "dia" and info["status"]["loaded"] and info["status"]["device"] == "cpu"
    capabilities = info["capabilities"]
    assert capabilities["sample_rate"] == SAMPLE_RATE and capabilities["needs_transcript"]
    assert capabilities["single_speaker"] is False and capabilities["min_dialogue_turns"] == 2
    engine = dia_stack.services.engines.get("dia")
    assert isinstance(engine, RemoteEngine) and engine.capabilities.nonverbal and not engine.unavailable_reason()
    # The gateway knows the worker speaks whole scripts, and how long: its dialogues go to it whole.
    assert engine.capabilities.scripted_dialogue and engine.capabilities.max_script_bytes == 1024
    assert "dac_44khz/:" in dia_stack.log() and "(PARLA_MODELS_DIR)" in dia_stack.log()


@pytest.mark.slow
@pytest.mark.model
def test_a_dialogue_speaks_44_khz_of_bounded_length_and_the_prompt_is_encoded_once(dia_stack: EngineStack) -> None:
    before = generations(dia_stack)
    samples, turns = dialogue(dia_stack, 7)
    dia_stack.heard[7] = samples
    # The whole script, its (laughs) as text, reached the worker as one request: one generation,
    # no pause for the cue nor between the turns, which share its span.
    assert generations(dia_stack) == before + 1
    assert [(t["speaker"], t["voice"]) for t in turns] == [("S1", "Ada"), ("S2", "alloy")]
    assert turns[0]["start"] == turns[1]["start"] == 0 and turns[0]["end"] == turns[1]["end"]
    assert 0.1 < samples.size / SAMPLE_RATE <= PIECE_S + 0.05
    assert np.abs(samples).max() > 0.001 and np.isfinite(samples).all()  # random weights make noise, not silence
    dialogue(dia_stack, 8)
    assert encoded(dia_stack) == 1  # the second dialogue reused the encoded prompt


@pytest.mark.slow
@pytest.mark.model
def test_two_library_voices_are_one_prompt_encoded_once_per_combination(dia_stack: EngineStack) -> None:
    if "Bea" not in {v["name"] for v in httpx.get(f"{dia_stack.gateway_url}/v1/voices", timeout=30).json()["voices"]}:
        created = httpx.post(
            f"{dia_stack.gateway_url}/v1/voices/clone",
            data={"name": "Bea", "transcript": BEA},
            files={"file": ("bea.wav", someone_saying(BEA, "en-gb"), "audio/wav")},
            timeout=120,
        )
        assert created.status_code == 201, created.text
    before = generations(dia_stack)
    for seed in (1, 2):
        dialogue(dia_stack, seed, voices={"S1": "Ada", "S2": "Bea"})
    assert generations(dia_stack) == before + 2  # a script each
    assert encoded(dia_stack, "S1=Ada, S2=Bea") == 1  # both speakers' samples, one prompt, encoded once
    assert "encoded from 2 samples" in dia_stack.log()
    samples, turns = dialogue(dia_stack, 1, voices={"S1": "Bea", "S2": "Ada"})
    assert encoded(dia_stack, "S1=Bea, S2=Ada") == 1  # another combination, another prompt
    assert [t["voice"] for t in turns] == ["Bea", "Ada"] and samples.size > 0


@pytest.mark.slow
@pytest.mark.model
def test_a_script_with_cues_is_spoken_in_one_generation(dia_stack: EngineStack) -> None:
    """What a dialogue service that hands Dia whole scripts would send: tags and cues reach the model
    as text, and one generation speaks both speakers."""
    engine = dia_stack.services.engines.get("dia")
    ada = dia_stack.services.voices.resolve("Ada")
    request = SynthesisRequest(text=DIALOGUE, voice=ada, seed=3, parameters={"max_new_tokens": 40})
    chunks = list(engine.synthesize(request))
    assert len(chunks) == 1 and chunks[0].sample_rate == SAMPLE_RATE
    assert 0 < chunks[0].samples.size <= 40 * FRAME_SAMPLES
    assert encoded(dia_stack, "Ada") <= 1


@pytest.mark.slow
@pytest.mark.model
def test_the_same_seed_says_the_same_and_another_does_not(dia_stack: EngineStack) -> None:
    first = dia_stack.heard.get(7)
    if first is None:
        first = dia_stack.heard[7] = dialogue(dia_stack, 7)[0]
    again = dialogue(dia_stack, 7)[0]
    assert np.array_equal(again, first)
    other = dialogue(dia_stack, 9)[0]
    # Another seed, other tokens: the tiny random codec makes them barely audible apart (about 1e-5 in
    # one generation), but not the same audio.
    assert not np.array_equal(other, first)


@pytest.mark.slow
@pytest.mark.model
def test_unload_frees_the_model_and_the_next_request_loads_it_again(dia_stack: EngineStack) -> None:
    first = dia_stack.heard.get(7)
    if first is None:
        first = dia_stack.heard[7] = dialogue(dia_stack, 7)[0]
    before = encoded(dia_stack)
    dia_stack.unload()
    again = dialogue(dia_stack, 7)[0]
    assert np.array_equal(again, first)
    assert dia_stack.info()["status"]["loaded"] is True
    assert encoded(dia_stack) == before + 1  # the prompt went with the model, and was encoded again


@pytest.mark.slow
@pytest.mark.model
def test_one_speaker_is_refused_on_every_api(dia_stack: EngineStack) -> None:
    url = dia_stack.gateway_url
    speech = {"model": "dia", "input": "Hello there.", "voice": "Ada", "response_format": "wav"}
    openai = httpx.post(f"{url}/v1/audio/speech", json=speech, timeout=60)
    assert openai.status_code == 400 and "engine 'dia' makes dialogue only" in openai.json()["detail"]
    standard = httpx.post(
        f"{url}/v1/text-to-speech/Ada?engine=dia", json={"text": "Hello.", "output_filepath": "o.wav"}, timeout=60
    )
    assert standard.status_code == 400 and "makes dialogue only" in standard.json()["detail"]
    for alone in ("[S1] Only me.", "[S1] Only me. [S1] Me again."):
        lone = httpx.post(f"{url}/v1/audio/dialogue", json={"model": "dia", "text": alone}, timeout=60)
        assert lone.status_code == 400, lone.text
        assert "engine 'dia' needs a dialogue of at least 2 speakers, got 1" in lone.json()["detail"]
    too_hot = {"model": "dia", "text": DIALOGUE, "parameters": {"temperature": 2.5}}
    hot = httpx.post(f"{url}/v1/audio/dialogue", json=too_hot, timeout=60)
    assert hot.status_code == 400 and "between 0.1 and 2" in hot.json()["detail"]


@pytest.mark.slow
@pytest.mark.model
def test_a_dia_server_voice_mapping_speaks_through_dia(dia_stack: EngineStack) -> None:
    url = dia_stack.gateway_url
    listed = httpx.get(f"{url}/models", timeout=30).json()
    assert listed["engine"] == "dia" and listed["engine_note"] is None  # the worker is up: Dia speaks
    uploaded = httpx.post(
        f"{url}/audio_prompts/upload",
        data={"prompt_id": "host_voice"},
        files={"audio_file": ("host.wav", someone_saying(SAID))},
        timeout=60,
    )
    assert uploaded.status_code == 200, uploaded.text
    mapping = {"voice_id": "host", "audio_prompt": "host_voice", "audio_prompt_transcript": f"[S1] {SAID}"}
    assert httpx.post(f"{url}/voice_mappings", json=mapping, timeout=60).status_code == 200
    body = {
        "model": "dia",
        "text": "[S1] Welcome to the show. [S2] Glad to be here.",
        "voices": {"S1": "host", "S2": "Ada"},
        "response_format": "wav",
        "seed": 5,
    }
    spoken = httpx.post(f"{url}/v1/audio/dialogue", json=body, timeout=600)
    assert spoken.status_code == 200, spoken.text
    assert decode_audio(spoken.content)[1] == SAMPLE_RATE
    # The mapping's transcript is stored without its tag: its place in the script says it is S1.
    assert encoded(dia_stack, "S1=host, S2=Ada") == 1
