"""What every heavy engine does in the main environment, which has none of their libraries
(``parla.engines.heavy``): it is listed, it says exactly what to install, and a request for it is a
503 that says the same on every API. Each engine's own test file checks what is its own
(capabilities, parameters, where its weights go) and runs it in its environment."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from parla.engines import EngineRegistry
from tests.conftest import mock_settings, serving_in_process

# name: (a module only its environment has, the package pip is told to install, the model's title)
HEAVY = {
    "xtts": ("TTS", "coqui-tts", "XTTS-v2"),
    "f5": ("f5_tts", "f5-tts", "F5-TTS"),
    "dia": ("transformers", "transformers", "Dia"),
    "chatterbox": ("chatterbox", "chatterbox-tts", "Chatterbox"),
    "qwen3": ("qwen_tts", "qwen-tts", "Qwen3-TTS"),
    "higgs": ("boson_multimodal", "boson-multimodal", "Higgs Audio"),
}


def not_installed(name: str) -> str:
    _, package, title = HEAVY[name]
    return (
        f"{package} is not installed in this environment: {title} runs in its own; install its environment with "
        f"`parla engines install {name}` and serve it with `parla serve-engine {name}`"
    )


@pytest.mark.parametrize("name", sorted(HEAVY))
def test_a_heavy_engine_is_listed_unavailable_saying_what_to_install(
    name: str, tmp_path: Path, no_weights_anywhere: Path
) -> None:
    module = HEAVY[name][0]
    assert importlib.util.find_spec(module) is None, f"{module} is in the main environment: it should not be"
    registry = EngineRegistry.from_entry_points(mock_settings(tmp_path))
    try:
        assert name in registry.names() and name not in registry.broken  # imports without its libraries
        engine = registry.get(name)
        assert engine.unavailable_reason() == not_installed(name)
        status = engine.status()
        assert not status.available and not engine.loaded and status.reason == not_installed(name)
    finally:
        registry.shutdown()


@pytest.mark.parametrize("name", sorted(HEAVY))
async def test_a_request_for_a_heavy_engine_is_a_503_that_says_why(
    name: str, tmp_path: Path, no_weights_anywhere: Path
) -> None:
    unavailable = f"engine {name!r} is unavailable: {not_installed(name)}"
    async with serving_in_process(mock_settings(tmp_path)) as app:
        model = (await app.client.get(f"/v1/models/{name}")).json()
        assert model["available"] is False and model["reason"] == not_installed(name)
        if name == "dia":  # dialogue only: one speaker is refused before availability is asked
            dialogue = {"model": "dia", "text": "[S1] Hello there. [S2] Hi.", "response_format": "wav"}
            refused = await app.client.post("/v1/audio/dialogue", json=dialogue)
            assert refused.status_code == 503, refused.text
            assert refused.json()["detail"] == f"turn 1: {unavailable}"
            return
        body = {"model": name, "input": "Hello there.", "voice": "alloy", "response_format": "wav"}
        refused = await app.client.post("/v1/audio/speech", json=body)
        assert refused.status_code == 503, refused.text
        assert refused.json()["detail"] == unavailable
        # The model microservice API's ?engine= reaches it too, and says the same.
        standard = {"text": "Hello there.", "output_filepath": "out/x.wav"}
        refused = await app.client.post(f"/v1/text-to-speech/alloy?engine={name}", json=standard)
        assert refused.status_code == 503 and not_installed(name) in refused.json()["detail"]
