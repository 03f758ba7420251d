"""Contract tests for the voicebox API and the XTTS service API: every documented request,
replayed as the documents write them, and the documented response shapes. What is spoken and heard
is judged on the live server (``model``); the rest runs on the module's mock app."""

from __future__ import annotations

import base64
import struct
from pathlib import Path
from typing import Any

import httpx
import pytest

from parla.api import health as health_module
from parla.audio import decode_audio
from parla.engines.base import EngineStatus
from tests.conftest import InProcessApp, Listener, someone_saying, wer

SAMPLE_TEXT = "This is my voice sample, recorded for the profile."


def recording() -> bytes:
    return someone_saying(SAMPLE_TEXT)


# -- the voicebox API -----------------------------------------------------------------------------------


async def test_voicebox_profiles_samples_generate_history_audio(api: httpx.AsyncClient) -> None:
    # curl -X POST /profiles -d '{"name": "My Voice", "language": "en"}'
    created = await api.post(
        "/profiles", json={"name": "My Voice", "description": "Optional description", "language": "en"}
    )
    assert created.status_code == 200, created.text
    profile = created.json()
    assert {"id", "name", "description", "language", "created_at", "updated_at"} <= set(profile)
    pid = profile["id"]
    try:
        # curl -X POST /profiles/abc-123/samples -F "file=@sample.wav" -F "reference_text=This is my voice sample"
        sample = (
            await api.post(
                f"/profiles/{pid}/samples",
                files={"file": ("sample.wav", recording())},
                data={"reference_text": SAMPLE_TEXT},
            )
        ).json()
        assert {"id", "profile_id", "audio_path", "reference_text"} <= set(sample)
        assert sample["profile_id"] == pid and Path(sample["audio_path"]).is_file()
        assert [s["id"] for s in (await api.get(f"/profiles/{pid}/samples")).json()] == [sample["id"]]
        assert (await api.get(f"/profiles/{pid}")).json()["name"] == "My Voice"
        assert any(p["id"] == pid for p in (await api.get("/profiles")).json())
        updated = (await api.put(f"/profiles/{pid}", json={"description": "Updated"})).json()
        assert updated["description"] == "Updated" and updated["name"] == "My Voice"

        body = {"profile_id": pid, "text": "Hello, this is a test.", "language": "en", "seed": 42}
        generation = (await api.post("/generate", json=body)).json()
        assert generation["profile_id"] == pid and generation["seed"] == 42

        history = (await api.get("/history", params={"profile_id": pid})).json()
        assert [h["id"] for h in history] == [generation["id"]]
        assert history[0]["profile_id"] == pid
        searched = (await api.get("/history", params={"search": "this is a test", "limit": 50, "offset": 0})).json()
        assert generation["id"] in [h["id"] for h in searched]
        one = (await api.get(f"/history/{generation['id']}")).json()
        assert one["text"] == "Hello, this is a test." and one["duration"] == pytest.approx(generation["duration"])
        stats = (await api.get("/history/stats")).json()
        assert {"total_generations", "total_duration_seconds", "generations_by_profile"} <= set(stats)
        assert stats["generations_by_profile"][pid] >= 1

        audio = await api.get(f"/audio/{generation['id']}")
        assert audio.status_code == 200 and audio.headers["content-type"].startswith("audio/")
        assert decode_audio(audio.content)[0].size > 0

        assert (await api.delete(f"/history/{generation['id']}")).status_code == 200
        assert (await api.get(f"/history/{generation['id']}")).status_code == 404
        assert (await api.delete(f"/profiles/samples/{sample['id']}")).status_code == 200
        assert (await api.get(f"/profiles/{pid}/samples")).json() == []
        assert (await api.delete("/profiles/samples/no-such-sample")).status_code == 404
    finally:
        await api.delete(f"/profiles/{pid}")
    assert (await api.get(f"/profiles/{pid}")).status_code == 404


async def test_voicebox_keeps_its_history_whatever_the_dia_servers_config_says(api: httpx.AsyncClient) -> None:
    pid = (await api.post("/profiles", json={"name": "Keeper of history"})).json()["id"]
    before = (await api.get("/config")).json()
    try:
        await api.post(
            f"/profiles/{pid}/samples", files={"file": ("s.wav", recording())}, data={"reference_text": SAMPLE_TEXT}
        )
        # The Dia server API's config: save nothing, keep nothing older than an hour, then clear its logs.
        assert (await api.put("/config", json={"save_outputs": False, "output_retention_hours": 1})).status_code == 200
        generation = (await api.post("/generate", json={"profile_id": pid, "text": "Still here tomorrow."})).json()
        assert generation["audio_path"] and Path(generation["audio_path"]).is_file()
        assert (await api.delete("/logs")).status_code == 200 and (await api.post("/cleanup")).status_code == 200
        assert (await api.get(f"/audio/{generation['id']}")).status_code == 200
        # A built-in voice's generation is in the history too, without a profile.
        builtin = await api.post("/v1/audio/speech", json={"input": "Built in.", "voice": "nova", "model": "mock"})
        listed = {h["id"]: h for h in (await api.get("/history", params={"limit": 500})).json()}
        assert listed[generation["id"]]["profile_id"] == pid
        assert listed[builtin.headers["X-Generation-Id"]]["profile_id"] is None
        # Renaming the profile keeps its history hers, and the stats count it by id alone.
        assert (await api.put(f"/profiles/{pid}", json={"name": "Renamed keeper"})).status_code == 200
        assert [h["id"] for h in (await api.get("/history", params={"profile_id": pid})).json()] == [generation["id"]]
        by_profile = (await api.get("/history/stats")).json()["generations_by_profile"]
        assert by_profile[pid] == 1 and "nova" not in by_profile and "Renamed keeper" not in by_profile
    finally:
        await api.put("/config", json=before)
        await api.delete(f"/profiles/{pid}")


@pytest.mark.model
def test_voicebox_health_root_models_and_transcribe(client: httpx.Client) -> None:
    health = client.get("/health").json()
    assert {"status", "model_loaded", "gpu_available", "vram_used_mb"} <= set(health)
    assert 50 < health["memory_rss_mb"] < 16_000  # the server's own resident memory, in MiB
    assert "version" in client.get("/").json()
    assert client.post("/models/load", params={"model_size": "1.7B"}).status_code == 400  # no sizes here
    assert client.post("/models/unload").status_code == 200
    assert client.post("/models/load").status_code == 200
    body = client.post("/transcribe", files={"file": ("a.wav", recording())}, data={"language": "en"}).json()
    assert set(body) == {"text", "duration"}


# -- the XTTS service API -----------------------------------------------------------------------------------


@pytest.mark.model
def test_xtts_synthesize_as_documented(client: httpx.Client, listener: Listener) -> None:
    # The XTTS service API's quick-start curl call.
    body = {"text": "Hello from our AI server!", "language": "en", "speaker_id": "default"}
    response = client.post("/api/v1/tts/synthesize", json=body)
    assert response.status_code == 200, response.text
    payload = response.json()
    wav = base64.b64decode(payload["audio_base64"])
    assert wav[:4] == b"RIFF" and payload["sample_rate"] > 0 and payload["duration"] > 0.8
    # Whisper tiny may run "our AI" together ("RAI"), which costs two of the five words.
    assert wer("Hello from our AI server!", listener.transcribe(wav)) <= 0.4


async def test_xtts_voices_register_by_base64_and_url_then_synthesize(api: httpx.AsyncClient) -> None:
    encoded = base64.b64encode(recording()).decode()
    registered = await api.post(
        "/api/v1/tts/voices", json={"speaker_id": "narrator", "audio_base64": encoded, "transcript": SAMPLE_TEXT}
    )
    assert registered.status_code == 201, registered.text
    try:
        ids = [v["speaker_id"] for v in (await api.get("/api/v1/tts/voices")).json()["voices"]]
        assert "narrator" in ids and "default" in ids
        spoken = (
            await api.post(
                "/api/v1/tts/synthesize",
                json={"text": "Story time.", "speaker_id": "narrator", "store_generated_audio": True},
            )
        ).json()
        assert spoken["stored_path"] and Path(spoken["stored_path"]).is_file()
        refused = await api.post(
            "/api/v1/tts/voices", json={"speaker_id": "remote", "audio_url": "http://127.0.0.1/x.wav"}
        )
        assert refused.status_code == 400 and "non-public" in refused.json()["detail"]
    finally:
        await api.delete("/v1/voices/narrator")


async def test_xtts_config_and_errors(api: httpx.AsyncClient) -> None:
    config = (await api.get("/api/v1/tts/config")).json()
    assert "en" in config["languages"] and config["default_speaker"] == "default"
    assert (await api.post("/api/v1/tts/synthesize", json={"text": ""})).status_code == 422
    unknown = await api.post("/api/v1/tts/synthesize", json={"text": "hi", "speaker_id": "nobody"})
    assert unknown.status_code == 400 and "unknown voice" in unknown.json()["detail"]
    assert (await api.post("/api/v1/tts/voices", json={"audio_base64": "AAAA"})).status_code == 422


async def test_xtts_default_speaker_from_a_configured_clip(
    api: httpx.AsyncClient, mock_app: InProcessApp, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    clip = tmp_path / "voice.wav"
    clip.write_bytes(recording())
    monkeypatch.setattr(mock_app.settings, "default_speaker_clip", clip)
    try:
        response = await api.post("/api/v1/tts/synthesize", json={"text": "I am the default.", "speaker_id": "default"})
        assert response.status_code == 200, response.text
        assert (await api.get("/v1/voices/default")).json()["samples"]
    finally:
        await api.delete("/v1/voices/default")


# -- fixes: whole WAVs, determinism, profiles, health, model sizes ----------------------------------------


def _synthesize(client: httpx.Client, **body: Any) -> dict[str, Any]:
    response = client.post("/api/v1/tts/synthesize", json={"language": "en", "speaker_id": "alloy", **body})
    assert response.status_code == 200, response.text
    payload: dict[str, Any] = response.json()
    return payload


async def _synthesized(api: httpx.AsyncClient, **body: Any) -> dict[str, Any]:
    response = await api.post("/api/v1/tts/synthesize", json={"language": "en", "speaker_id": "alloy", **body})
    assert response.status_code == 200, response.text
    payload: dict[str, Any] = response.json()
    return payload


async def test_xtts_wav_returned_whole_carries_its_true_sizes(api: httpx.AsyncClient) -> None:
    wav = base64.b64decode((await _synthesized(api, text="Sizes, please."))["audio_base64"])
    (riff_size,) = struct.unpack_from("<I", wav, 4)
    assert wav[36:40] == b"data"
    (data_size,) = struct.unpack_from("<I", wav, 40)
    assert (riff_size, data_size) == (len(wav) - 8, len(wav) - 44)  # not the streaming marker 0xFFFFFFFF


@pytest.mark.model
def test_xtts_same_request_same_audio(client: httpx.Client) -> None:
    # The XTTS service API promises deterministic synthesis, and its requests carry no seed.
    first = _synthesize(client, text="The same words twice.")
    second = _synthesize(client, text="The same words twice.")
    assert first["generation_id"] != second["generation_id"]
    assert first["audio_base64"] == second["audio_base64"]
    other = _synthesize(client, text="The same words, once more.")
    assert other["audio_base64"] != first["audio_base64"]
    seeded = _synthesize(client, text="The same words twice.", seed=1234)
    assert client.get(f"/history/{seeded['generation_id']}").json()["seed"] == 1234


async def test_voicebox_unknown_profile_is_404_profile_not_found(api: httpx.AsyncClient) -> None:
    calls = [
        await api.get("/profiles/no-such-profile"),
        await api.put("/profiles/no-such-profile", json={"description": "x"}),
        await api.delete("/profiles/no-such-profile"),
        await api.get("/profiles/no-such-profile/samples"),
        await api.post("/profiles/no-such-profile/samples", files={"file": ("s.wav", b"RIFF")}),
        await api.get("/history", params={"profile_id": "no-such-profile"}),
        await api.get("/profiles/alloy"),  # a built-in voice is no profile
    ]
    for response in calls:
        assert response.status_code == 404, response.request.url
        assert response.json()["detail"] == "Profile not found"


async def test_a_profile_may_carry_a_builtin_name(api: httpx.AsyncClient) -> None:
    created = await api.post("/profiles", json={"name": "Nova", "language": "en"})
    assert created.status_code == 200, created.text
    pid = created.json()["id"]
    try:
        assert pid != "nova" and (await api.get("/profiles/Nova")).json()["id"] == pid
        sample = await api.post(
            f"/profiles/{pid}/samples", files={"file": ("s.wav", recording())}, data={"reference_text": SAMPLE_TEXT}
        )
        assert sample.status_code == 200, sample.text
        # Where a voice is named without saying which kind (the OpenAI API), `nova` stays the preset...
        builtin = await api.post("/v1/audio/speech", json={"input": "Built in.", "voice": "nova", "model": "mock"})
        assert (await api.get(f"/history/{builtin.headers['X-Generation-Id']}")).json()["profile_id"] is None
        # ...the profile is reached by its id there, and by its name where names are library names.
        by_id = await api.post("/v1/audio/speech", json={"input": "By id.", "voice": pid, "model": "mock"})
        assert (await api.get(f"/history/{by_id.headers['X-Generation-Id']}")).json()["profile_id"] == pid
        spoken = await _synthesized(api, text="My own voice.", speaker_id="Nova")
        assert (await api.get(f"/history/{spoken['generation_id']}")).json()["profile_id"] == pid
        generated = await api.post("/generate", json={"profile_id": pid, "text": "Hello."})
        assert generated.status_code == 200 and generated.json()["profile_id"] == pid
    finally:
        await api.delete(f"/profiles/{pid}")


async def test_health_reports_the_clone_engines_gpu_state(
    api: httpx.AsyncClient, mock_app: InProcessApp, monkeypatch: pytest.MonkeyPatch
) -> None:
    import ctranslate2  # type: ignore[import-untyped]

    health = (await api.get("/health")).json()
    assert health["gpu_available"] is (ctranslate2.get_cuda_device_count() > 0)
    assert health["vram_used_mb"] == 0.0  # no engine is loaded on a GPU here
    # Computed, not written in: a visible GPU and the cloning engine loaded on it show.
    clone = mock_app.services.engines.get(mock_app.settings.default_clone_engine)
    monkeypatch.setattr(health_module, "cuda_device_count", lambda: 1)
    assert (await api.get("/health")).json()["gpu_available"] is True
    monkeypatch.setattr(clone, "status", lambda: EngineStatus(clone.name, True, True, "cuda:0"))
    monkeypatch.setattr(health_module, "process_vram_mb", lambda: 1024.5)
    assert (await api.get("/health")).json()["vram_used_mb"] == 1024.5


async def test_voicebox_model_sizes_are_refused_not_echoed(api: httpx.AsyncClient, mock_app: InProcessApp) -> None:
    refused = await api.post("/models/load", params={"model_size": "0.6B"})
    assert refused.status_code == 400 and refused.json()["error"]["param"] == "model_size"
    assert "0.6B" in refused.json()["detail"] and "no sizes" in refused.json()["detail"]
    own = mock_app.settings.default_clone_engine
    loaded = await api.post("/models/load", params={"model_size": own})
    assert loaded.status_code == 200 and loaded.json()["model_size"] == own
    assert (await api.post("/models/load")).json()["model_size"] is None
