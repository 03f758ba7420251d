"""Contract tests for the Dia server API: its documented requests, replayed. What the voices say is
heard on the live server (``model``); the rest runs on the module's mock app."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import httpx
import pytest

from parla.audio import decode_audio
from tests.conftest import Listener, someone_saying, wer

PROMPT_TEXT = "This is what I said in the audio sample."


def sample_wav() -> bytes:
    return someone_saying(PROMPT_TEXT)


@pytest.mark.model
def test_quick_start_requests(client: httpx.Client, listener: Listener) -> None:
    sync = client.post(
        "/generate",
        json={
            "text": "Hello, this is a test message.",
            "voice_id": "alloy",
            "role": "user",
            "response_format": "wav",
            "temperature": 1.0,
            "cfg_scale": 2.5,
        },
    )
    assert sync.status_code == 200 and wer("Hello, this is a test message.", listener.transcribe(sync.content)) < 0.3
    role = client.post(
        "/generate", json={"text": "I can help you with that request.", "voice_id": "nova", "role": "assistant"}
    )
    assert role.status_code == 200 and decode_audio(role.content)[0].size > 0
    queued = client.post(
        "/generate?async_mode=true",
        json={"text": "Hello, this is a test message.", "voice_id": "alloy", "role": "user"},
    )
    assert queued.status_code == 202 and queued.json()["job_id"]


async def test_listing_endpoints(api: httpx.AsyncClient) -> None:
    assert (await api.get("/health")).json()["status"] == "healthy"
    models = (await api.get("/models")).json()["models"]
    assert {"piper", "clone"} <= {m["id"] for m in models}
    voices = {v["name"] for v in (await api.get("/voices")).json()["voices"]}
    assert {"alloy", "echo", "fable", "nova", "onyx", "shimmer"} <= voices
    mappings = {m["voice_id"] for m in (await api.get("/voice_mappings")).json()}
    assert {"alloy", "nova"} <= mappings
    config = (await api.get("/config")).json()
    assert set(config) >= {"debug_mode", "save_outputs", "show_prompts", "output_retention_hours"}
    assert {"pending_jobs", "active_workers"} <= set((await api.get("/queue/stats")).json())
    assert "jobs" in (await api.get("/jobs")).json()


@pytest.mark.model
def test_custom_voice_setup_and_use(client: httpx.Client, listener: Listener) -> None:
    # 1. Upload voice sample
    uploaded = client.post(
        "/audio_prompts/upload",
        data={"prompt_id": "character_voice"},
        files={"audio_file": ("sample.wav", sample_wav())},
    )
    assert uploaded.status_code == 200, uploaded.text
    try:
        assert "character_voice" in [p["prompt_id"] for p in client.get("/audio_prompts").json()["audio_prompts"]]
        # 2. Create voice mapping with transcript
        mapping = {
            "voice_id": "my_character",
            "style": "expressive",
            "primary_speaker": "S1",
            "audio_prompt": "character_voice",
            "audio_prompt_transcript": f"[S1] {PROMPT_TEXT}",
        }
        created = client.post("/voice_mappings", json=mapping)
        assert created.status_code == 200, created.text
        assert created.json()["audio_prompt_transcript"] == f"[S1] {PROMPT_TEXT}"
        # 3. Use it as a voice
        said = "The quick brown fox jumps over the lazy dog near the river bank."
        spoken = client.post(
            "/generate",
            json={
                "text": f"[S1] {said}",
                "voice_id": "my_character",
                "temperature": 1.1,
                "cfg_scale": 2.8,
                "top_p": 0.9,
                "seed": 3,
            },
        )
        assert spoken.status_code == 200, spoken.text
        assert wer(said, listener.transcribe(spoken.content)) < 0.4
        updated = client.put("/voice_mappings/my_character", json={"style": "calm"}).json()
        assert updated["style"] == "calm" and updated["audio_prompt"] == "character_voice"
        assert client.post("/voice_mappings", json=mapping).status_code == 409
        assert client.delete("/voice_mappings/my_character").status_code == 200
        assert client.delete("/voice_mappings/my_character").status_code == 404
    finally:
        client.delete("/voice_mappings/my_character")
        client.delete("/audio_prompts/character_voice")
    assert client.delete("/audio_prompts/character_voice").status_code == 404


@pytest.mark.model
def test_a_mapping_without_transcript_gets_one_from_whisper(client: httpx.Client) -> None:
    client.post("/audio_prompts/upload", data={"prompt_id": "untold"}, files={"audio_file": ("s.wav", sample_wav())})
    try:
        created = client.post("/voice_mappings", json={"voice_id": "untold_voice", "audio_prompt": "untold"}).json()
        assert created["audio_prompt_transcript"].startswith("[S1] ")
        assert wer(PROMPT_TEXT, created["audio_prompt_transcript"][5:]) < 0.5
    finally:
        client.delete("/voice_mappings/untold_voice")
        client.delete("/audio_prompts/untold")


def _turn_voices(response: httpx.Response) -> list[tuple[str, str]]:
    assert response.status_code == 200, response.text
    return [(turn["speaker"], turn["voice"]) for turn in json.loads(response.headers["X-Turns"])]


async def test_speaker_tags_and_roles_speak_the_requested_voice(api: httpx.AsyncClient) -> None:
    await api.post(
        "/audio_prompts/upload", data={"prompt_id": "assistant_voice"}, files={"audio_file": ("s.wav", sample_wav())}
    )
    mapping = {
        "voice_id": "ai_assistant",
        "style": "friendly",
        "primary_speaker": "S2",  # the documented example: the assistant speaks as S2
        "audio_prompt": "assistant_voice",
        "audio_prompt_transcript": f"[S2] {PROMPT_TEXT}",
    }
    assert (await api.post("/voice_mappings", json=mapping)).status_code == 200
    try:
        # One speaker, whatever its tag: the voice named speaks it.
        only = await api.post("/generate", json={"text": "[S2] Only me.", "voice_id": "fable"})
        assert _turn_voices(only) == [("S2", "fable")]
        # Roles become speaker tags; a mapping's voice speaks its primary speaker's lines.
        assistant = {"text": "Of course, I can help.", "voice_id": "ai_assistant", "role": "assistant"}
        assert _turn_voices(await api.post("/generate", json=assistant)) == [("S2", "ai_assistant")]
        as_user = _turn_voices(await api.post("/generate", json={**assistant, "role": "user"}))
        assert as_user[0][0] == "S1" and as_user[0][1] != "ai_assistant"
        both = _turn_voices(
            await api.post("/generate", json={"text": "[S1] Hi. [S2] Hello.", "voice_id": "ai_assistant"})
        )
        assert both[1] == ("S2", "ai_assistant") and both[0][1] != "ai_assistant"
        # The same text and seed, another role: another speaker, another voice, other audio.
        same = {"text": "Can you help me?", "voice_id": "ai_assistant", "seed": 5}
        as_user_audio = (await api.post("/generate", json={**same, "role": "user"})).content
        assert as_user_audio != (await api.post("/generate", json={**same, "role": "assistant"})).content
    finally:
        await api.delete("/voice_mappings/ai_assistant")
        await api.delete("/audio_prompts/assistant_voice")


@pytest.mark.model
def test_a_mapping_without_an_audio_prompt_speaks_a_builtin_voice_in_its_style(client: httpx.Client) -> None:
    text = "This sentence is long enough for a difference in pace to show clearly."
    created = client.post("/voice_mappings", json={"voice_id": "narrator", "style": "slowly"})
    assert created.status_code == 200, created.text
    try:
        assert "narrator" in [v["id"] for v in client.get("/voices").json()["voices"]]
        slow = client.post("/generate", json={"text": text, "voice_id": "narrator", "seed": 1})
        plain = client.post("/generate", json={"text": text, "voice_id": "alloy", "seed": 1})
        assert slow.status_code == 200 and plain.status_code == 200, slow.text
        ratio = len(decode_audio(slow.content)[0]) / len(decode_audio(plain.content)[0])
        assert 1.08 < ratio < 1.35, ratio
    finally:
        client.delete("/voice_mappings/narrator")


async def test_job_workflow_as_documented(api: httpx.AsyncClient) -> None:
    body = {"text": "[S1] Hello world!", "voice_id": "alloy"}
    job_id = (await api.post("/generate?async_mode=true", json=body)).json()["job_id"]
    deadline = time.monotonic() + 120
    while (job := (await api.get(f"/jobs/{job_id}")).json())["status"] not in ("completed", "failed"):
        assert time.monotonic() < deadline
        await asyncio.sleep(0.05)
    assert job["status"] == "completed"
    assert (await api.get(f"/jobs/{job_id}/result")).status_code == 200
    assert isinstance((await api.get("/jobs", params={"status": "pending"})).json()["jobs"], list)


async def test_debug_config_and_logs(api: httpx.AsyncClient) -> None:
    before = (await api.get("/config")).json()
    try:
        assert (await api.put("/config", json={"debug_mode": True})).json()["debug_mode"] is True
        assert isinstance((await api.get("/logs", params={"limit": 10})).json(), list)
    finally:
        await api.put("/config", json={"debug_mode": before["debug_mode"]})


@pytest.mark.parametrize(
    ("method", "path", "kwargs", "status"),
    [
        ("POST", "/voice_mappings", {"json": {"voice_id": "x", "audio_prompt": "missing"}}, 404),
        ("POST", "/voice_mappings", {"json": {"voice_id": "alloy"}}, 409),
        ("POST", "/voice_mappings", {"json": {"voice_id": "../etc"}}, 400),
        ("PUT", "/voice_mappings/nobody", {"json": {"style": "x"}}, 404),
        (
            "POST",
            "/audio_prompts/upload",
            {"data": {"prompt_id": "bad/id"}, "files": {"audio_file": ("a.wav", b"x")}},
            400,
        ),
        (
            "POST",
            "/audio_prompts/upload",
            {"data": {"prompt_id": "notes"}, "files": {"audio_file": ("a.wav", b"text")}},
            400,
        ),
        ("DELETE", "/audio_prompts/nothing", {}, 404),
    ],
)
async def test_bad_requests(
    api: httpx.AsyncClient, method: str, path: str, kwargs: dict[str, Any], status: int
) -> None:
    response = await api.request(method, path, **kwargs)
    assert response.status_code == status, response.text
    assert isinstance(response.json()["detail"], str)


async def test_a_mapping_update_with_nulls_keeps_its_style_and_speaker(api: httpx.AsyncClient) -> None:
    # Found by the API fuzzing: a null primary_speaker was written to a column that must have one (a 500).
    made = await api.post("/voice_mappings", json={"voice_id": "nulls", "style": "calm", "primary_speaker": "S2"})
    assert made.status_code in (200, 201), made.text
    updated = await api.put("/voice_mappings/nulls", json={"style": None, "primary_speaker": None})
    assert updated.status_code == 200, updated.text
    assert (updated.json()["style"], updated.json()["primary_speaker"]) == ("calm", "S2")
    await api.delete("/voice_mappings/nulls")
