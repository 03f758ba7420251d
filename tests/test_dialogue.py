"""Dialogue between voices, nonverbal cues, and long texts joined smoothly."""

from __future__ import annotations

import json
from typing import Any

import httpx
import numpy as np
import numpy.typing as npt
import pytest

from parla.audio import decode_audio, loudness_lufs
from parla.engines.base import AudioChunk
from parla.services import Services
from parla.services.speech import SpeechOptions, crossfaded
from tests.conftest import InProcessApp, Listener, wer


def _pitch(samples: npt.NDArray[np.float32], rate: int) -> float:
    import parselmouth

    f0 = parselmouth.Sound(samples.astype(np.float64), rate).to_pitch(0.01, 50, 500).selected_array["frequency"]
    return float(np.median(f0[f0 > 0]))


def _turn_audio(audio: bytes, turns: list[dict[str, Any]]) -> list[tuple[npt.NDArray[np.float32], int]]:
    samples, rate = decode_audio(audio)
    return [(samples[int(t["start"] * rate) : int(t["end"] * rate)], rate) for t in turns]


@pytest.mark.model
def test_a_tagged_dialogue_with_one_voice_is_two_people_saying_their_lines(
    client: httpx.Client, listener: Listener
) -> None:
    lines = ["Did you see the rainbow this morning?", "Yes, it stretched across the whole valley."]
    body = {"text": f"[S1] {lines[0]} [S2] {lines[1]}", "voice": "alloy", "response_format": "wav", "seed": 2}
    response = client.post("/v1/audio/dialogue", json=body)
    assert response.status_code == 200, response.text
    turns = json.loads(response.headers["X-Turns"])
    assert [t["speaker"] for t in turns] == ["S1", "S2"]
    assert turns[0]["voice"] == "alloy" and turns[1]["voice"] != "alloy"
    assert turns[0]["end"] < turns[1]["start"]  # a pause between them
    parts = _turn_audio(response.content, turns)
    for (samples, rate), line in zip(parts, lines, strict=True):
        assert wer(line, listener.transcribe(samples if rate == 16000 else _to16k(samples, rate))) < 0.3
    # Audibly different voices: well apart in pitch. And at the same loudness.
    pitches = [_pitch(samples, rate) for samples, rate in parts]
    assert max(pitches) / min(pitches) > 1.3, pitches
    levels = [loudness_lufs(samples, rate) for samples, rate in parts]
    assert abs(levels[0] - levels[1]) < 1.5, levels


def _to16k(samples: npt.NDArray[np.float32], rate: int) -> npt.NDArray[np.float32]:
    from parla.audio import resample

    return resample(samples, rate, 16000)


async def test_turns_and_chat_roles_with_voice_mappings(api: httpx.AsyncClient) -> None:
    turns_body = {
        "turns": [{"text": "First line.", "voice": "onyx"}, {"text": "Second line.", "voice": "shimmer"}],
        "response_format": "wav",
    }
    response = await api.post("/v1/audio/dialogue", json=turns_body, params={"output": "json"})
    body = response.json()
    assert [t["voice"] for t in body["turns"]] == ["onyx", "shimmer"]
    assert body["duration"] == pytest.approx(body["turns"][-1]["end"])
    chat = {
        "messages": [
            {"role": "user", "content": "Tell me a story."},
            {"role": "assistant", "content": "Once upon a time."},
            {"role": "system", "content": "The end."},
        ],
        "voices": {"user": "echo", "assistant": "fable"},
        "response_format": "wav",
    }
    turns = json.loads((await api.post("/v1/audio/dialogue", json=chat)).headers["X-Turns"])
    assert [(t["speaker"], t["voice"]) for t in turns] == [("S1", "echo"), ("S2", "fable"), ("S2", "fable")]


@pytest.mark.model
def test_nonverbal_cues_become_pauses_not_words(client: httpx.Client, listener: Listener) -> None:
    body = {"text": "[S1] That is funny (laughs) really funny.", "voice": "joe", "response_format": "wav"}
    response = client.post("/v1/audio/dialogue", json=body)
    heard = listener.transcribe(response.content).lower()
    assert "laugh" not in heard and "funny" in heard


async def test_the_dialogue_is_recorded_with_its_turn_times(api: httpx.AsyncClient, mock_app: InProcessApp) -> None:
    response = await api.post("/v1/audio/dialogue", json={"text": "[S1] Hi. [S2] Hello.", "response_format": "mp3"})
    from parla.store.models import Generation

    with mock_app.services.db.session() as session:
        row = session.get(Generation, response.headers["X-Generation-Id"])
        assert row is not None and row.parameters["dialogue"] is True
        assert [t["speaker"] for t in row.parameters["turns"]] == ["S1", "S2"]
        assert "[S1] Hi." in row.text


@pytest.mark.model
def test_a_streamed_dialogue_decodes(client: httpx.Client) -> None:
    body = {"text": "[S1] One. [S2] Two. [S1] Three.", "response_format": "opus"}
    with client.stream("POST", "/v1/audio/dialogue", json=body, params={"stream": True}) as response:
        data = b"".join(response.iter_bytes())
    samples, rate = decode_audio(data)
    assert samples.size / rate > 1.5


@pytest.mark.parametrize(
    ("body", "status", "needle"),
    [
        ({"text": "[S1] Hello [S2]"}, 400, "has no text"),
        ({"text": "[S1 Hello there"}, 400, "malformed speaker tag"),
        ({"text": "[S] Hello there"}, 400, "malformed speaker tag"),
        ({"turns": [{"text": "fine"}, {"text": "   "}]}, 400, "turn 2 is empty"),
        ({"turns": [{"text": "fine"}, {"text": "hi", "voice": "nobody"}]}, 400, "turn 2: unknown voice"),
        ({"turns": [{"text": "(laughs)"}]}, 400, "nothing to say"),
        ({"turns": []}, 400, "at least one turn"),
        ({"messages": []}, 400, "at least one turn"),
        ({}, 422, "exactly one of"),
        ({"text": "[S1] a", "turns": [{"text": "b"}]}, 422, "exactly one of"),
        ({"text": "[S1] a", "pause_s": 10}, 422, "pause_s"),
    ],
)
async def test_bad_dialogues_get_a_clear_4xx(
    api: httpx.AsyncClient, body: dict[str, Any], status: int, needle: str
) -> None:
    response = await api.post("/v1/audio/dialogue", json=body)
    assert response.status_code == status, response.text
    assert needle in response.json()["detail"]


def test_long_texts_up_to_the_limit_are_accepted_and_split(services: Services) -> None:
    text = "This sentence is part of a very long chapter. " * (100_000 // 46)
    plan = services.speech.prepare(SpeechOptions(input=text[:100_000], voice="joe"), source="test")
    assert len(plan.pieces) > 1500
    assert max(len(p) for p in plan.pieces) <= 400
    assert len(set(r.seed for r in plan.requests())) == 1  # one seed for every piece: one voice


def test_pieces_are_joined_with_crossfades() -> None:
    rate = 1000
    first = AudioChunk(np.ones(100, dtype=np.float32), rate)
    second = AudioChunk(-np.ones(100, dtype=np.float32), rate)
    joined = np.concatenate([c.samples for c in crossfaded([[first], [second]], 0.01)])
    assert joined.size == 190  # overlapped by 10 ms
    assert np.all(np.diff(joined) <= 0) and np.max(np.abs(np.diff(joined))) < 0.25  # a ramp, no jump


def test_chunks_within_a_piece_pass_unchanged() -> None:
    """An engine that streams a piece in several chunks (XTTS) made them continuous: only the joins
    between pieces are crossfaded, never the chunks of one piece."""
    rate = 1000
    chunks = [AudioChunk(np.full(50, v, dtype=np.float32), rate) for v in (0.1, 0.2, 0.3)]
    out = list(crossfaded([chunks], 0.01))
    assert np.array_equal(np.concatenate([c.samples for c in out]), np.concatenate([c.samples for c in chunks]))
    assert len(out) >= 3  # the piece still streams chunk by chunk
