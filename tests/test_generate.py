"""``POST /generate`` as the Dia server API's and the voicebox API's clients call it."""

from __future__ import annotations

import asyncio
import struct
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from parla.audio import decode_audio
from tests.conftest import InProcessApp, Listener, someone_saying, wer
from tests.test_dialogue import ADA, _Scripted, scripted_app


@pytest.mark.model
def test_dia_form_returns_audio_with_dia_parameters_accepted(client: httpx.Client, listener: Listener) -> None:
    body = {
        "text": "Hello, this is a test message.",
        "voice_id": "alloy",
        "role": "user",
        "response_format": "wav",
        "temperature": 1.0,
        "cfg_scale": 2.5,
        "top_p": 0.9,
        "max_tokens": 2000,
        "use_torch_compile": True,
    }
    response = client.post("/generate", json=body)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "audio/wav"
    assert wer("Hello, this is a test message.", listener.transcribe(response.content)) < 0.3
    # Accepted, not applied: the engine here has no such knobs, and the answer says so.
    ignored = response.headers["X-Ignored-Parameters"].split(", ")
    assert ignored == ["cfg_scale", "max_tokens", "temperature", "top_p", "use_torch_compile"]


@pytest.mark.parametrize(
    ("field", "value", "bound"),
    [("temperature", 0.05, "0.1"), ("temperature", 2.5, "2"), ("cfg_scale", 0.5, "1"), ("max_tokens", 50, "100")],
)
async def test_dia_parameters_out_of_their_documented_range_are_a_422(
    api: httpx.AsyncClient, field: str, value: float, bound: str
) -> None:
    response = await api.post("/generate", json={"text": "Hello.", "voice_id": "alloy", field: value})
    assert response.status_code == 422, response.text
    assert field in response.json()["detail"] and bound in response.json()["detail"]


@pytest.mark.model
def test_openai_speech_names_the_parameters_it_did_not_use(client: httpx.Client) -> None:
    body = {"input": "Hello.", "voice": "joe", "model": "piper", "parameters": {"noise_scale": 0.5, "top_k": 40}}
    response = client.post("/v1/audio/speech", json=body)
    assert response.status_code == 200 and response.headers["X-Ignored-Parameters"] == "top_k"
    plain = client.post("/v1/audio/speech", json={**body, "parameters": {"noise_scale": 0.5}})
    assert "X-Ignored-Parameters" not in plain.headers
    wrong = client.post("/v1/audio/speech", json={**body, "parameters": {"top_k": 0}})
    assert wrong.status_code == 400 and "'top_k' must be between 1 and 1000" in wrong.json()["detail"]


async def test_dia_form_with_speaker_tags_is_a_dialogue(api: httpx.AsyncClient) -> None:
    response = await api.post("/generate", json={"text": "[S1] Hello world! [S2] Hi there!", "voice_id": "alloy"})
    assert response.status_code == 200
    samples, rate = decode_audio(response.content)
    assert samples.size / rate > 1.0


async def test_dia_javascript_client_form_with_async_mode(api: httpx.AsyncClient) -> None:
    # The Dia server API's JavaScript client sends OpenAI-style fields and polls the job.
    body = {"model": "dia", "input": "[S1] Long text, in the background.", "voice": "nova"}
    submitted = await api.post("/generate", params={"async_mode": "true"}, json=body)
    assert submitted.status_code == 202
    job_id = submitted.json()["job_id"]
    deadline = time.monotonic() + 120
    while (job := (await api.get(f"/jobs/{job_id}")).json())["status"] not in ("completed", "failed"):
        assert time.monotonic() < deadline
        await asyncio.sleep(0.1)
    assert job["status"] == "completed" and job["error_message"] is None
    assert decode_audio((await api.get(f"/jobs/{job_id}/result")).content)[0].size > 0
    single = await api.post("/generate?async_mode=true", json={"text": "Just one voice.", "voice_id": "onyx"})
    assert single.status_code == 202 and single.json()["status"] == "pending"


async def test_voicebox_form_answers_a_generation_record(api: httpx.AsyncClient) -> None:
    profile = (await api.post("/v1/voices", json={"name": "voicebox-profile"})).json()
    try:
        await api.post(
            f"/v1/voices/{profile['id']}/samples",
            files={"file": ("s.wav", someone_saying("A voice sample for the profile."))},
            data={"transcript": "A voice sample for the profile."},
        )
        body = {"profile_id": profile["id"], "text": "Hello, this is a test.", "language": "en", "seed": 42}
        record = (await api.post("/generate", json=body)).json()
        assert set(record) >= {"id", "profile_id", "text", "language", "audio_path", "duration", "seed", "created_at"}
        assert record["profile_id"] == profile["id"] and record["seed"] == 42 and record["duration"] > 0.5
        assert Path(record["audio_path"]).is_file()
    finally:
        await api.delete(f"/v1/voices/{profile['id']}")


@pytest.mark.parametrize(
    ("body", "status", "needle"),
    [
        ({"voice_id": "alloy"}, 400, "text"),
        ({"text": "hi", "voice_id": "nobody"}, 404, "Voice 'nobody' not found"),  # the Dia server's wording
        ({"text": "[S1] hi [S2] yo", "voice_id": "nobody"}, 404, "Voice 'nobody' not found"),
        ({"text": "[S1] hi [S2]"}, 400, "has no text"),
        ({"text": "hi", "role": "narrator"}, 422, "role"),
        ({"text": "hi", "profile_id": "no-such-profile"}, 404, "Profile not found"),
    ],
)
async def test_bad_generate_requests(api: httpx.AsyncClient, body: dict[str, object], status: int, needle: str) -> None:
    response = await api.post("/generate", json=body)
    assert response.status_code == status, response.text
    assert needle in response.json()["detail"]


async def test_whole_wavs_carry_their_true_sizes(api: httpx.AsyncClient) -> None:
    speech = await api.post("/generate", json={"text": "Sized at last.", "voice_id": "alloy", "response_format": "wav"})
    dialogue = await api.post("/generate", json={"text": "[S1] One. [S2] Two.", "voice_id": "alloy"})
    both = await api.post("/v1/audio/dialogue", json={"text": "[S1] One. [S2] Two.", "response_format": "wav"})
    for response in (speech, dialogue, both):
        assert response.status_code == 200, response.text
        wav = response.content
        riff, data = struct.unpack_from("<I", wav, 4)[0], struct.unpack_from("<I", wav, 40)[0]
        assert (riff, data) == (len(wav) - 8, len(wav) - 44)


async def test_voicebox_generate_with_an_unknown_profile_is_a_404_in_its_words(api: httpx.AsyncClient) -> None:
    response = await api.post("/generate", json={"profile_id": "no-such-profile", "text": "Hello."})
    assert response.status_code == 404 and response.json()["detail"] == "Profile not found"


@pytest.mark.model
def test_ignored_parameter_names_of_any_script_fit_in_a_header(client: httpx.Client) -> None:
    body = {"input": "Hello.", "voice": "joe", "model": "piper", "parameters": {"tempo\u00e9": 1, "\U00036f23, x": 2}}
    response = client.post("/v1/audio/speech", json=body)
    assert response.status_code == 200, response.text
    assert response.headers["X-Ignored-Parameters"] == "tempo%C3%A9, %F0%B6%BC%A3%2C%20x"


@pytest.fixture(scope="module")
async def with_dia(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[InProcessApp]:
    """An app where an engine named dia can speak (a scripted mock standing for it)."""
    async with scripted_app(tmp_path_factory.mktemp("generate-dia")) as app:
        yield app


async def test_the_dia_server_dialogue_speaks_through_dia_as_one_script(with_dia: InProcessApp) -> None:
    heard = _Scripted.heard
    heard.clear()
    for model in (None, "dia", "nari-labs/Dia-1.6B"):
        body = {"text": "[S1] Hi there (laughs). [S2] Hello.", "voice_id": "Ada", **({"model": model} if model else {})}
        response = await with_dia.client.post("/generate", json=body)
        assert response.status_code == 200, response.text
        [request] = heard
        assert request.text == "[S1] Hi there (laughs). [S2] Hello."
        assert [text for _, text in request.voice.samples] == [f"[S1] {ADA}"]  # S2: another voice, no samples
        heard.clear()
    # One speaker stays with the server's engine (Dia would refuse it), as does a model named otherwise.
    one = await with_dia.client.post("/generate", json={"text": "[S1] Only me.", "voice_id": "Ada", "model": "dia"})
    other = await with_dia.client.post("/generate", json={"text": "[S1] Hi. [S2] Yo.", "model": "mock"})
    assert one.status_code == other.status_code == 200 and not heard
