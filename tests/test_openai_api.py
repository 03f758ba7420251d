"""The OpenAI speech API as its clients use it: the real SDK, streaming, SSE, concurrency, errors.

What it sounds like is judged on the live server (``model``); requests, answers and errors on the
module's mock app, the SDK included."""

from __future__ import annotations

import base64
import itertools
import json
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import httpx2
import numpy as np
import openai
import pytest
from httpx_sse import connect_sse

from parla.audio import FORMATS, decode_audio
from parla.store import Generation
from tests.conftest import (
    IN_PROCESS_URL,
    InProcessApp,
    Listener,
    LiveServer,
    duration_of,
    mock_settings,
    natural_length,
    serving_in_process,
    speech_body,
    wer,
)

PARAGRAPH = (
    "When the sunlight strikes raindrops in the air, they act as a prism and form a rainbow. "
    "The rainbow is a division of white light into many beautiful colors. "
    "These take the shape of a long round arch, with its path high above, and its two ends "
    "apparently beyond the horizon."
)
SENTENCE = "The boy was there when the sun rose."


def _decoded_seconds(fmt: str, data: bytes) -> float:
    if fmt == "pcm":  # raw s16le mono at 24 kHz, as OpenAI documents
        return len(data) / 2 / 24000
    return duration_of(data)


@pytest.fixture(scope="module")
def sdk(server: LiveServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key="not-needed")


@pytest.fixture(scope="module")
async def mock_sdk(mock_app: InProcessApp) -> AsyncIterator[openai.AsyncOpenAI]:
    """The SDK on the module's mock app, in process (through its own HTTP client, httpx2)."""
    transport = httpx2.ASGITransport(app=mock_app.app)
    async with (
        httpx2.AsyncClient(transport=transport, base_url=IN_PROCESS_URL) as http_client,
        openai.AsyncOpenAI(base_url=f"{IN_PROCESS_URL}/v1", api_key="not-needed", http_client=http_client) as client,
    ):
        yield client


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.model
def test_sdk_gets_audio_in_every_format_lasting_as_long_as_the_text(sdk: openai.OpenAI, fmt: str) -> None:
    response = sdk.audio.speech.create(model="tts-1", voice="alloy", input=SENTENCE, response_format=fmt)  # type: ignore[arg-type]
    low, high = natural_length(SENTENCE)
    assert low < _decoded_seconds(fmt, response.content) < high


@pytest.mark.model
def test_sdk_streaming_response_writes_a_playable_file(sdk: openai.OpenAI, tmp_path: Any) -> None:
    target = tmp_path / "speech.mp3"
    with sdk.audio.speech.with_streaming_response.create(
        model="gpt-4o-mini-tts", voice="nova", input=SENTENCE, instructions="Speak cheerfully."
    ) as response:
        response.stream_to_file(target)
    low, high = natural_length(SENTENCE)
    assert low < duration_of(target.read_bytes()) < high


@pytest.mark.model
def test_paragraph_is_understood_by_whisper(sdk: openai.OpenAI, listener: Listener) -> None:
    audio = sdk.audio.speech.create(model="tts-1", voice="alloy", input=PARAGRAPH, response_format="wav").content
    heard = listener.transcribe(audio)
    assert wer(PARAGRAPH, heard) < 0.15, heard


@pytest.mark.model
def test_speed_changes_the_length(client: httpx.Client) -> None:
    normal = client.post("/v1/audio/speech", json=speech_body(input=SENTENCE, response_format="wav", seed=5))
    fast = client.post("/v1/audio/speech", json=speech_body(input=SENTENCE, response_format="wav", seed=5, speed=2.0))
    assert duration_of(fast.content) < 0.75 * duration_of(normal.content)


@pytest.mark.model
def test_same_seed_same_audio(client: httpx.Client) -> None:
    body = speech_body(input=SENTENCE, response_format="wav", seed=1234)
    first, second = client.post("/v1/audio/speech", json=body), client.post("/v1/audio/speech", json=body)
    assert first.headers["X-Seed"] == "1234"
    assert first.content == second.content


@pytest.mark.model
def test_audio_streams_before_synthesis_ends(client: httpx.Client, server: LiveServer) -> None:
    """The first bytes arrive while later sentences are still being made: the record of the
    generation, written only after the last byte, does not exist yet."""
    long_text = " ".join([PARAGRAPH] * 4)
    with client.stream("POST", "/v1/audio/speech", json=speech_body(input=long_text, response_format="pcm")) as r:
        assert r.status_code == 200
        generation_id = r.headers["X-Generation-Id"]
        parts = r.iter_bytes()
        first = next(parts)
        assert first
        with server.services.db.session() as session:
            assert session.get(Generation, generation_id) is None
        rest = b"".join(parts)
    assert (len(first) + len(rest)) / 2 / 24000 > 20
    with server.services.db.session() as session:
        row = session.get(Generation, generation_id)
        assert row is not None and row.first_audio_s is not None and row.first_audio_s < row.elapsed_s


@pytest.mark.model
def test_sse_events_arrive_in_order(client: httpx.Client) -> None:
    body = speech_body(input=PARAGRAPH, response_format="mp3", stream_format="sse")
    with connect_sse(client, "POST", "/v1/audio/speech", json=body) as source:
        assert source.response.headers["content-type"].startswith("text/event-stream")
        events = [json.loads(e.data) for e in source.iter_sse()]
    types = [e["type"] for e in events]
    assert len(types) > 3
    assert types[-1] == "speech.audio.done" and set(types[:-1]) == {"speech.audio.delta"}
    audio = b"".join(base64.b64decode(e["audio"]) for e in events[:-1])
    low, high = natural_length(PARAGRAPH)
    assert low < duration_of(audio) < high
    assert events[-1]["usage"]["input_tokens"] > 0


@pytest.mark.model
@pytest.mark.parametrize("voice", ["joe", "alloy"])  # alloy: the clone engine serves two at once
def test_concurrent_requests_each_say_their_own_text(server: LiveServer, listener: Listener, voice: str) -> None:
    texts = [
        "The birch canoe slid on the smooth planks.",
        "Glue the sheet to the dark blue background.",
        "It is easy to tell the depth of a well.",
        "These days a chicken leg is a rare dish.",
        "Rice is often served in round bowls.",
        "The juice of lemons makes fine punch.",
        "The box was thrown beside the parked truck.",
        "Four hours of steady work faced us.",
    ]

    def fetch(text: str) -> bytes:
        body = speech_body(input=text, response_format="wav", voice=voice, seed=1)
        response = httpx.post(f"{server.url}/v1/audio/speech", json=body, timeout=120)
        response.raise_for_status()
        return response.content

    with ThreadPoolExecutor(len(texts)) as pool:
        results = list(pool.map(fetch, texts))
    for text, together in zip(texts, results, strict=True):  # the samples it makes alone
        assert np.array_equal(decode_audio(together)[0], decode_audio(fetch(text))[0]), text
    heard = [listener.transcribe(audio) for audio in results]
    errors = [wer(text, heard[i]) for i, text in enumerate(texts)]
    # Whisper tiny mishears short sentences now and then, worse in a converted voice ("canoe slid"
    # as "can use lid", "Four hours of steady work" as "for our sub-steady work" in one run of
    # eight): what says each response is its own text is that, as a whole, they are heard, and
    # each is nearer its own text than any other (a mixed-up response would be nearer another's).
    assert np.mean(errors) < 0.25, list(zip(texts, heard, strict=True))
    for i, own in enumerate(errors):
        assert all(own < wer(other, heard[i]) for j, other in enumerate(texts) if j != i), (texts[i], heard[i])


async def test_voice_may_be_an_object_and_new_openai_names_work(api: httpx.AsyncClient) -> None:
    for voice in ({"id": "onyx"}, "coral", "NOVA", "joe"):
        response = await api.post("/v1/audio/speech", json=speech_body(voice=voice, response_format="wav"))
        assert response.status_code == 200, response.text


@pytest.mark.model
def test_built_in_voices_are_distinct_voices(client: httpx.Client) -> None:
    """Each OpenAI name is its own voice: the pitch a listener hears differs from voice to voice."""
    import parselmouth

    def median_pitch(voice: str) -> float:
        body = speech_body(voice=voice, input=SENTENCE, response_format="wav", seed=3)
        samples, rate = decode_audio(client.post("/v1/audio/speech", json=body).content)
        f0 = parselmouth.Sound(samples.astype(np.float64), rate).to_pitch(0.01, 50, 500).selected_array["frequency"]
        return float(np.median(f0[f0 > 0]))

    pitches = sorted(median_pitch(v) for v in ("joe", "alloy", "echo", "fable", "nova", "onyx", "shimmer"))
    assert all(b / a > 1.05 for a, b in itertools.pairwise(pitches)), pitches
    assert pitches[-1] > 2 * pitches[0]  # from deep (onyx) to high (shimmer)


@pytest.mark.parametrize(
    ("body", "status", "needle"),
    [
        (speech_body(input=""), 422, "input"),
        (speech_body(input="   \n "), 400, "empty"),
        (speech_body(input="... !!!"), 400, "nothing to speak"),
        (speech_body(input="a" * 100_001), 413, "limit"),
        (speech_body(voice="nobody"), 400, "unknown voice"),
        (speech_body(model="tts-9000"), 400, "unknown model"),
        (speech_body(response_format="ogg"), 422, "response_format"),
        (speech_body(speed=0.1), 422, "speed"),
        (speech_body(speed=4.5), 422, "speed"),
        (speech_body(speed="fast"), 422, "speed"),
        (speech_body(stream_format="websocket"), 422, "stream_format"),
        (speech_body(model="piper", parameters={"noise_scale": "loud"}), 400, "noise_scale"),
        (speech_body(model="piper", parameters={"noise_scale": 9.0}), 400, "between 0 and 1.5"),
        ({"voice": "alloy"}, 422, "input"),
    ],
)
async def test_bad_input_gets_a_clear_4xx(
    api: httpx.AsyncClient, body: dict[str, Any], status: int, needle: str
) -> None:
    response = await api.post("/v1/audio/speech", json=body)
    assert response.status_code == status, response.text
    detail = response.json()["detail"]
    assert isinstance(detail, str) and needle in detail.lower()
    assert response.json()["error"]["message"] == detail


async def test_malformed_json_gets_400(api: httpx.AsyncClient) -> None:
    response = await api.post(
        "/v1/audio/speech", content=b'{"input": "hi", ', headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 400
    assert "not valid JSON" in response.json()["detail"]


async def test_sdk_sees_errors_as_openai_errors(mock_sdk: openai.AsyncOpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        await mock_sdk.audio.speech.create(model="tts-1", voice="nobody", input="hello")
    assert "unknown voice" in str(info.value)


async def test_unavailable_engine_gets_503(tmp_path: Path) -> None:
    async with serving_in_process(mock_settings(tmp_path, espeak_binary="/nonexistent/espeak-ng")) as app:
        response = await app.client.post("/v1/audio/speech", json=speech_body(model="espeak"))
    assert response.status_code == 503
    assert "espeak" in response.json()["detail"]


async def test_models_and_voices_are_listed(mock_sdk: openai.AsyncOpenAI, api: httpx.AsyncClient) -> None:
    ids = {m.id async for m in mock_sdk.models.list()}
    assert {"tts-1", "tts-1-hd", "gpt-4o-mini-tts", "piper", "espeak", "mock"} <= ids
    piper = (await api.get("/v1/models/piper")).json()
    assert {p["name"] for p in piper["capabilities"]["parameters"]} >= {"noise_scale", "length_scale"}
    assert (await api.get("/v1/models/nothing")).status_code == 404
    voices = {v["id"] for v in (await api.get("/v1/audio/voices")).json()["voices"]}
    assert {"alloy", "echo", "fable", "nova", "onyx", "shimmer"} <= voices


async def test_mock_engine_through_the_openai_api(api: httpx.AsyncClient) -> None:
    response = await api.post("/v1/audio/speech", json=speech_body(model="mock", input="x" * 60, response_format="wav"))
    assert response.status_code == 200
    samples, rate = decode_audio(response.content)
    assert not np.any(np.abs(samples) > 1e-3) and 2 < samples.size / rate < 6


async def test_health_and_root_answer_every_seeds_fields(api: httpx.AsyncClient, mock_app: InProcessApp) -> None:
    health = (await api.get("/health")).json()
    assert health["status"] == "healthy"
    for field in ("model_loaded", "device", "dependencies_available", "gpu_available", "vram_used_mb", "version"):
        assert field in health
    engines = {e["name"]: e for e in health["engines"]}
    default = engines[mock_app.settings.default_engine]  # loaded at start-up
    assert default["loaded"] and default["available"]
    root = (await api.get("/")).json()
    assert root["status"] == "success" and "message" in root and "model" in root and "version" in root


@pytest.mark.model
def test_the_event_loop_stays_free_while_an_engine_works(client: httpx.Client, server: LiveServer) -> None:
    """Synthesis runs on the engine's thread: /health answers while a long text is still being made."""
    long_text = " ".join([PARAGRAPH] * 6)
    with client.stream("POST", "/v1/audio/speech", json=speech_body(input=long_text, response_format="pcm")) as r:
        parts = r.iter_bytes()
        next(parts)
        assert httpx.get(f"{server.url}/health", timeout=10).status_code == 200
        with server.services.db.session() as session:
            assert session.get(Generation, r.headers["X-Generation-Id"]) is None
        b"".join(parts)
