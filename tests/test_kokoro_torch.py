"""The kokoro engine on torch: the ``kokoro`` package in its own environment (``parla engines install kokoro``).

In the main environment (the fast lane) the torch backend says what to install and where the weights
go, and the engine keeps speaking on ONNX. In its own environment (``slow``, ``model``): the
environment is built once per machine by Parla's installer (``tests/engine_envs.py``), a tiny randomly
initialised Kokoro is made there in the layout ``KModel`` reads (``tests/tiny_kokoro.py``), and
``parla serve-engine kokoro`` runs from it as a worker behind a gateway: Parla's adapter through the
real loader and ``KModel.forward``, the worker's styles listed and blended through the gateway.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from parla.engines.base import EngineContext
from parla.engines.envs import EngineEnv
from parla.engines.kokoro import MAX_PHONEMES, KokoroEngine, KokoroSettings, phoneme_parts
from parla.engines.remote import RemoteEngine
from tests.engine_envs import EngineStack, engine_stack, environment, tiny_model

# -- the main environment: no kokoro package -------------------------------------------------------


def test_the_torch_backend_says_what_to_install_and_auto_keeps_onnx(tmp_path: Path) -> None:
    assert importlib.util.find_spec("kokoro") is None, "the kokoro package is in the main environment: it should not be"
    context = EngineContext(data_dir=tmp_path / "data", models_dir=tmp_path / "models")
    torch_only = KokoroEngine(KokoroSettings(backend="torch"), context)
    reason = torch_only.unavailable_reason() or ""
    assert torch_only.backend == "torch" and "kokoro" in reason and "parla engines install kokoro" in reason
    assert torch_only.voices() == [] and "torch" in torch_only.description
    auto = KokoroEngine(KokoroSettings(), context)
    assert auto.backend == "onnx" and "ONNX Runtime" in auto.description


def test_the_torch_weights_are_looked_for_where_the_catalogue_says(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("parla.engines.kokoro.TORCH_MODULES", {})  # as in the engine's own environment
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    models = tmp_path / "models"
    engine = KokoroEngine(KokoroSettings(), EngineContext(data_dir=tmp_path / "data", models_dir=models))
    assert engine.backend == "onnx"  # no weights: ONNX serves
    reason = KokoroEngine(KokoroSettings(backend="torch"), engine.context).unavailable_reason() or ""
    assert f"in {models.resolve() / 'kokoro'}/" in reason and "kokoro-v1_0.pth" in reason
    assert "hexgrad/Kokoro-82M" in reason
    (models / "kokoro" / "voices").mkdir(parents=True)
    for name in ("config.json", "kokoro-v1_0.pth", "voices/bf_one.pt", "voices/am_two.pt"):
        (models / "kokoro" / name).write_bytes(b"{}")
    found = KokoroEngine(KokoroSettings(), engine.context)
    assert found.backend == "torch" and found.unavailable_reason() is None
    assert found.style_names() == ("am_two", "bf_one") and found.voice("bf_one(1)+am_two(3)") is not None
    lacking = tmp_path / "lacking"
    lacking.mkdir()
    named = KokoroEngine(KokoroSettings(model_dir=lacking), engine.context)
    assert named.backend == "onnx"  # its weights are not whole: still ONNX, and forced to torch it says why
    forced = KokoroEngine(KokoroSettings(backend="torch", model_dir=lacking), engine.context)
    assert f"{lacking}, which lacks config.json, kokoro-v1_0.pth, voices/*.pt" in (forced.unavailable_reason() or "")


def test_long_phoneme_strings_are_cut_between_words() -> None:
    words = " ".join(["həlˈoʊ"] * 200)
    parts = phoneme_parts(words)
    assert len(parts) > 1 and all(0 < len(p) <= MAX_PHONEMES for p in parts)
    assert " ".join(parts) == words and all(p.startswith("h") and p.endswith("ʊ") for p in parts)
    assert phoneme_parts("x" * (MAX_PHONEMES + 5)) == ["x" * MAX_PHONEMES, "xxxxx"]  # no space: cut anyway
    assert phoneme_parts("  ") == []


# -- in its own environment: the real loader and inference on a tiny model ------------------------

TEXT = "Glue the sheet to the dark blue background. It is easy to tell the depth of a well."
FRAME_S = 600 / 24_000
MAX_DUR = 6  # tests/tiny_kokoro.py: frames a phoneme lasts at most


@pytest.fixture(scope="session")
def kokoro_env() -> EngineEnv:
    """The kokoro engine's environment, built on the first run on this machine (minutes), then reused."""
    return environment("kokoro")


@pytest.fixture(scope="session")
def tiny_kokoro(kokoro_env: EngineEnv) -> Path:
    """A models directory holding a tiny random Kokoro in ``kokoro/``, made by ``KModel`` in the
    engine's environment from kokoro-onnx's copy of the real config."""
    spec = importlib.util.find_spec("kokoro_onnx")
    assert spec is not None and spec.origin is not None
    config = Path(spec.origin).with_name("config.json")
    script = Path(__file__).with_name("tiny_kokoro.py")
    return tiny_model(kokoro_env, script, made="kokoro/kokoro-v1_0.pth", inside="kokoro", args=(str(config),))


@pytest.fixture(scope="module")
def kokoro_stack(
    kokoro_env: EngineEnv, tiny_kokoro: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[EngineStack]:
    variables = {"PARLA_MODELS_DIR": str(tiny_kokoro)}
    with engine_stack(kokoro_env, "kokoro", tmp_path_factory, variables=variables, voice="af_tiny") as stack:
        yield stack


def most_seconds(text: str) -> float:
    """The longest a piece of ``text`` can last: every phoneme (at most twice as many as letters,
    stress marks counted) at most ``MAX_DUR`` frames, plus the pause after it."""
    return (2 * len(text) + 2) * MAX_DUR * FRAME_S + 0.3


@pytest.mark.slow
@pytest.mark.model
def test_the_worker_runs_kokoro_on_torch_and_the_gateway_lists_its_styles(kokoro_stack: EngineStack) -> None:
    info = kokoro_stack.info()
    assert info["name"] == "kokoro" and info["status"]["loaded"] and info["status"]["device"] == "cpu"
    assert "on torch" in info["description"] and info["capabilities"]["cloning"] is False
    engine = kokoro_stack.services.engines.get("kokoro")
    assert isinstance(engine, RemoteEngine) and not engine.unavailable_reason()
    listed = httpx.get(f"{kokoro_stack.gateway_url}/v1/audio/voices", timeout=30).json()
    names = {v["name"] if isinstance(v, dict) else v for v in listed["voices"]}
    assert {"af_tiny", "am_tiny"} <= names, listed


@pytest.mark.slow
@pytest.mark.model
def test_a_style_speaks_24_khz_of_bounded_length_as_it_is_made(kokoro_stack: EngineStack) -> None:
    samples, arrivals = kokoro_stack.speak(7, TEXT)
    kokoro_stack.heard[7] = samples
    seconds = samples.size / 24_000
    assert 0.3 < seconds <= sum(most_seconds(s) for s in TEXT.split(". ")), seconds
    assert np.abs(samples).max() > 0.001 and np.isfinite(samples).all()  # random weights make noise, not silence
    assert len(arrivals) >= 2  # two sentences, two pieces: the first sent before the second is made


@pytest.mark.slow
@pytest.mark.model
def test_the_same_seed_says_the_same_and_a_blend_is_between_its_styles(kokoro_stack: EngineStack) -> None:
    first = kokoro_stack.audio(7, TEXT)
    again, _ = kokoro_stack.speak(7, TEXT)
    assert np.array_equal(again, first)
    reseeded, _ = kokoro_stack.speak(8, TEXT)  # the decoder's harmonic source draws noise from the seed
    assert not (reseeded.size == first.size and np.allclose(reseeded, first, atol=1e-4))
    kokoro_stack.voice = "am_tiny"
    try:
        other, _ = kokoro_stack.speak(7, TEXT)
        kokoro_stack.voice = "af_tiny(0.5)+am_tiny(0.5)"
        blend, _ = kokoro_stack.speak(7, TEXT)
    finally:
        kokoro_stack.voice = "af_tiny"
    assert not (other.size == first.size and np.allclose(other, first, atol=1e-3))
    assert not (blend.size == first.size and np.allclose(blend, first, atol=1e-3))
    wrong = {"model": "kokoro", "input": "Hello there.", "voice": "af_tiny+af_nobody", "response_format": "wav"}
    refused = httpx.post(f"{kokoro_stack.gateway_url}/v1/audio/speech", json=wrong, timeout=60)
    assert refused.status_code == 400, refused.text
    assert "af_nobody" in refused.json()["detail"] and "af_tiny" in refused.json()["detail"]


@pytest.mark.slow
@pytest.mark.model
def test_unload_frees_the_model_and_the_next_request_loads_it_again(kokoro_stack: EngineStack) -> None:
    first = kokoro_stack.audio(7, TEXT)
    kokoro_stack.unload()
    again, _ = kokoro_stack.speak(7, TEXT)
    assert np.array_equal(again, first)
    assert kokoro_stack.info()["status"]["loaded"] is True
