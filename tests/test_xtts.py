"""XTTS-v2 (``parla.engines.xtts``).

In the main environment (the fast lane) the engine is listed, unavailable, saying exactly what to
install or where to put the weights, and a request for it is a 503 that says so.

In its own environment (``slow``, ``model``): the environment is built once per machine by Parla's
installer (``tests/engine_envs.py``), a tiny randomly initialised XTTS-v2 is made there in exactly
the layout coqui-tts's loader reads (``tests/tiny_xtts.py``), and ``parla serve-engine xtts`` runs
from it as a worker behind a gateway: Parla's adapter through the real loader, conditioning and
``inference_stream``. Random weights never emit the stop token, so generation is capped
(``PARLA_ENGINES__XTTS__MAX_AUDIO_TOKENS``) and streamed in small chunks.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import httpx
import numpy as np
import pytest

from parla.engines import AudioChunk, EngineContext, VoiceRef
from parla.engines.envs import EngineEnv
from parla.engines.remote import RemoteEngine
from parla.engines.xtts import LANGUAGES, XttsEngine, XttsSettings, find_model_dir, xtts_language
from parla.errors import InvalidInputError
from parla.services.speech import CROSSFADE_S, SpeechOptions, crossfaded
from tests.conftest import mock_settings, serving_in_process
from tests.engine_envs import EngineStack, engine_stack, environment, tiny_model

NOT_INSTALLED = (
    "coqui-tts is not installed in this environment: XTTS-v2 runs in its own; install its environment with "
    "`parla engines install xtts` and serve it with `parla serve-engine xtts`"
)


def _weights(directory: Path, *, speakers: bool = False) -> Path:
    """Files named as XTTS-v2's (their contents are not read by the finder)."""
    directory.mkdir(parents=True, exist_ok=True)
    for name in ("config.json", "model.pth", "vocab.json", *(["speakers_xtts.pth"] if speakers else [])):
        (directory / name).write_bytes(b"{}")
    return directory


# -- the main environment: no coqui-tts ----------------------------------------------------------


def test_xtts_capabilities() -> None:
    capabilities = XttsEngine().capabilities
    assert capabilities.sample_rate == 24_000 and capabilities.cloning
    assert capabilities.languages == LANGUAGES and len(LANGUAGES) == 17
    assert not capabilities.needs_transcript and capabilities.streaming


async def test_xtts_parameters_and_the_xtts_service_api_say_why_it_is_not_used(
    tmp_path: Path, no_weights_anywhere: Path
) -> None:
    async with serving_in_process(mock_settings(tmp_path)) as app:
        model = (await app.client.get("/v1/models/xtts")).json()
        parameters = {p["name"]: p for p in model["capabilities"]["parameters"]}
        assert set(parameters) == {"temperature", "top_p", "top_k", "repetition_penalty", "length_penalty", "speed"}
        assert (parameters["temperature"]["minimum"], parameters["temperature"]["maximum"]) == (0.01, 1.0)
        # The XTTS service API says which engine it speaks through instead, and why.
        config = (await app.client.get("/api/v1/tts/config")).json()
        assert config["engine"] == "mock" and NOT_INSTALLED in config["engine_note"]


def test_missing_weights_say_what_to_put_where(
    tmp_path: Path, no_weights_anywhere: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(XttsEngine, "required_packages", ())  # as in the engine's own environment
    models = tmp_path / "models"
    engine = XttsEngine(context=EngineContext(data_dir=tmp_path / "data", models_dir=models))
    reason = engine.unavailable_reason()
    assert reason is not None
    assert f"put config.json, model.pth and vocab.json in {models.resolve() / 'xtts'}/" in reason
    assert "XTTS_MODEL_DIR" in reason and "coqui/XTTS-v2" in reason

    # An offline Hugging Face cache, as huggingface_hub leaves it.
    repo = no_weights_anywhere / "models--coqui--XTTS-v2"
    snapshot = _weights(repo / "snapshots" / "0123abcd")
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0123abcd")
    assert engine.unavailable_reason() is None
    assert find_model_dir(engine.settings, engine.context).path == snapshot

    # The XTTS service's variable (EngineContext.weights_dir) comes before the cache; <models_dir>/xtts first.
    named = _weights(tmp_path / "xtts-v2")
    context = EngineContext(data_dir=tmp_path / "data", models_dir=models, weights_dir=named)
    assert find_model_dir(XttsSettings(), context).path == named
    own = _weights(models / "xtts")
    assert find_model_dir(XttsSettings(), EngineContext(models_dir=models)).path == own.resolve()

    # PARLA_ENGINES__XTTS__MODEL_DIR alone, when set.
    lacking = tmp_path / "lacking"
    lacking.mkdir()
    (lacking / "config.json").write_text("{}")
    found = find_model_dir(XttsSettings(model_dir=lacking), context)
    assert not found.complete and f"{lacking}, which lacks model.pth, vocab.json" in str(found.reason)


def test_languages_are_xtts_own() -> None:
    assert [xtts_language(x) for x in ("en", "en-US", "pt_BR", "zh", "zh-TW", "ZH-CN", "ja", "xx")] == [
        "en",
        "en",
        "pt",
        "zh-cn",
        "zh-cn",
        "zh-cn",
        "ja",
        None,
    ]
    engine = XttsEngine()
    assert engine.language_problem("de-AT") is None
    assert engine.language_problem("sv") == f"engine 'xtts' speaks {', '.join(LANGUAGES)}, not 'sv'"


def test_built_in_voices_are_studio_speakers_or_refused(
    tmp_path: Path, no_weights_anywhere: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without speakers_xtts.pth a built-in voice names what to do; with it, the OpenAI names are
    studio speakers (by name, or by position among a fine-tuned model's own)."""
    bare = XttsEngine(context=EngineContext(models_dir=_weights(tmp_path / "bare" / "xtts").parent))
    assert bare.voice_presets == {}
    with pytest.raises(InvalidInputError, match=r"'alloy' is a built-in voice.*speakers_xtts\.pth"):
        bare.conditioning_for(VoiceRef("alloy"))

    studio = XttsEngine(context=EngineContext(models_dir=_weights(tmp_path / "studio" / "xtts", speakers=True).parent))
    assert set(studio.voice_presets) == {"alloy", "echo", "fable", "nova", "onyx", "shimmer"}
    speakers = {
        name: {"gpt_cond_latent": f"latent of {name}", "speaker_embedding": f"embedding of {name}"}
        for name in ("Ana Florence", "Brenda Stern", "Craig Gutsy")
    }
    studio._model = SimpleNamespace(speaker_manager=SimpleNamespace(speakers=speakers))
    alloy = VoiceRef("alloy", presets={"xtts": studio.voice_presets["alloy"]})
    assert studio.conditioning_for(alloy).gpt_cond_latent == "latent of Ana Florence"
    nova = VoiceRef("nova", presets={"xtts": studio.voice_presets["nova"]})  # not in this file: by position
    assert studio.conditioning_for(nova).speaker_embedding == "embedding of Ana Florence"  # slot 3 of 3 names
    with pytest.raises(InvalidInputError, match="built-in voice"):
        studio.conditioning_for(VoiceRef("joe"))


# -- in its own environment: the real loader and inference on a tiny model ------------------------

SAID = "The birch canoe slid on the smooth planks."
TEXT = "Glue the sheet to the dark blue background. It is easy to tell the depth of a well."
CAP_TOKENS = 16
"""PARLA_ENGINES__XTTS__MAX_AUDIO_TOKENS for the tiny model: each piece is at most this many GPT
tokens of 1024 samples at 22.05 kHz, about 0.75 s at 24 kHz."""
MAX_PIECE_S = 0.8
CHUNK_TOKENS = 4
"""PARLA_ENGINES__XTTS__STREAM_CHUNK_SIZE: a piece comes in about CAP_TOKENS / CHUNK_TOKENS chunks."""


@pytest.fixture(scope="session")
def xtts_env() -> EngineEnv:
    """The xtts engine's environment, built on the first run on this machine (minutes), then reused."""
    return environment("xtts")


@pytest.fixture(scope="session")
def tiny_xtts(xtts_env: EngineEnv) -> Path:
    """A tiny random XTTS-v2 model directory, made by coqui-tts's own classes in the engine's environment."""
    return tiny_model(xtts_env, Path(__file__).with_name("tiny_xtts.py"), made="model.pth")


@pytest.fixture(scope="module")
def xtts_stack(xtts_env: EngineEnv, tiny_xtts: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[EngineStack]:
    variables = {
        "XTTS_MODEL_DIR": str(tiny_xtts),  # the XTTS service's variable: <data_dir>/models/xtts is empty
        "PARLA_ENGINES__XTTS__MAX_AUDIO_TOKENS": str(CAP_TOKENS),
        "PARLA_ENGINES__XTTS__STREAM_CHUNK_SIZE": str(CHUNK_TOKENS),
    }
    with engine_stack(xtts_env, "xtts", tmp_path_factory, variables=variables, clone=("Ada", SAID)) as stack:
        yield stack


def computed(stack: EngineStack, voice: str = "Ada") -> int:
    """How many times the worker computed the voice's conditioning (it logs each time)."""
    return stack.log().count(f"conditioning for voice {voice!r} computed")


def cached_files(stack: EngineStack) -> list[Path]:
    return sorted((stack.worker_data / "cache" / "xtts").glob("*.pt"))


@pytest.mark.slow
@pytest.mark.model
def test_the_worker_runs_xtts_from_its_own_environment(xtts_stack: EngineStack) -> None:
    info = xtts_stack.info()
    assert info["name"] == "xtts" and info["status"]["loaded"] and info["status"]["device"] == "cpu"
    assert info["capabilities"]["sample_rate"] == 24_000 and len(info["capabilities"]["languages"]) == 17
    assert info["voice_presets"] == {}  # the tiny model has no speakers_xtts.pth
    engine = xtts_stack.services.engines.get("xtts")
    assert isinstance(engine, RemoteEngine) and engine.capabilities.cloning and not engine.unavailable_reason()


@pytest.mark.slow
@pytest.mark.model
def test_a_cloned_voice_streams_in_order_as_xtts_makes_it(xtts_stack: EngineStack) -> None:
    samples, arrivals = xtts_stack.speak(7, TEXT)
    xtts_stack.heard[7] = samples
    plan = xtts_stack.services.speech.prepare(
        SpeechOptions(input=TEXT, voice="Ada", model="xtts", response_format="wav", seed=7), source="test"
    )
    assert len(plan.pieces) >= 2
    assert 0.3 < samples.size / 24_000 <= MAX_PIECE_S * len(plan.pieces)
    assert np.abs(samples).max() > 0.01  # random weights make noise, not silence
    assert len(arrivals) > 2 and arrivals[0] < arrivals[-1] - 0.2, arrivals  # first bytes well before the last

    # Piece by piece from the worker: each in several chunks, the first before the piece is done.
    engine = xtts_stack.services.engines.get("xtts")
    chunks: list[list[AudioChunk]] = []
    for request in plan.requests():
        started = time.monotonic()
        times: list[float] = []
        pieces: list[AudioChunk] = []
        for chunk in engine.synthesize(request):
            times.append(time.monotonic() - started)
            pieces.append(chunk)
        assert len(pieces) > 1 and all(c.sample_rate == 24_000 for c in pieces)
        assert times[0] < times[-1], times
        assert sum(c.samples.size for c in pieces) / 24_000 <= MAX_PIECE_S
        chunks.append(pieces)
    # The gateway's stream is those chunks in that order, the pieces joined as a local engine's would be.
    joined = np.concatenate([c.samples for c in crossfaded(chunks, CROSSFADE_S)])
    assert joined.size == samples.size and np.allclose(joined, samples, atol=2e-3)


@pytest.mark.slow
@pytest.mark.model
def test_the_same_voice_again_reuses_its_conditioning_and_the_same_seed_its_audio(xtts_stack: EngineStack) -> None:
    first = xtts_stack.audio(7, TEXT)
    assert computed(xtts_stack) == 1
    (cached,) = cached_files(xtts_stack)
    written = cached.stat().st_mtime_ns
    again, _ = xtts_stack.speak(7, TEXT)
    assert np.array_equal(again, first)
    assert computed(xtts_stack) == 1 and cached.stat().st_mtime_ns == written  # neither computed nor written again
    other, _ = xtts_stack.speak(8, TEXT)
    assert not (other.size == first.size and np.allclose(other, first, atol=1e-3))


@pytest.mark.slow
@pytest.mark.model
def test_unload_frees_the_model_and_the_disk_cache_outlives_it(xtts_stack: EngineStack) -> None:
    first = xtts_stack.audio(7, TEXT)
    xtts_stack.unload()
    # The next request loads it again, reads the voice's conditioning from disk, and says the same.
    again, _ = xtts_stack.speak(7, TEXT)
    assert np.array_equal(again, first)
    assert computed(xtts_stack) == 1 and "conditioning for voice 'Ada' read from" in xtts_stack.log()
    assert xtts_stack.info()["status"]["loaded"] is True


@pytest.mark.slow
@pytest.mark.model
def test_a_built_in_voice_is_refused_saying_why(xtts_stack: EngineStack) -> None:
    body = {"text": "Hello there.", "output_filepath": "alloy.wav"}
    refused = httpx.post(f"{xtts_stack.worker_url}/v1/text-to-speech/alloy", json=body, timeout=120)
    assert refused.status_code == 400, refused.text
    detail = refused.json()["detail"]
    assert "'alloy' is a built-in voice" in detail and "speakers_xtts.pth" in detail


@pytest.mark.slow
@pytest.mark.model
def test_the_xtts_service_api_speaks_through_xtts_when_it_is_there(xtts_stack: EngineStack) -> None:
    config = httpx.get(f"{xtts_stack.gateway_url}/api/v1/tts/config", timeout=60).json()
    assert config["engine"] == "xtts" and config["sample_rate"] == 24_000 and config["engine_note"] is None
    assert "zh-cn" in config["languages"] and "ja" in config["languages"]
    body = {"text": "Hello there.", "speaker_id": "Ada", "language": "en", "seed": 3}
    spoken = httpx.post(f"{xtts_stack.gateway_url}/api/v1/tts/synthesize", json=body, timeout=600)
    assert spoken.status_code == 200, spoken.text
    answer = spoken.json()
    assert answer["engine"] == "xtts" and answer["sample_rate"] == 24_000 and answer["duration"] > 0
