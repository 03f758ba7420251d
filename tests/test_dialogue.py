"""Dialogue between voices, nonverbal cues, and long texts joined smoothly."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any, ClassVar

import httpx
import numpy as np
import numpy.typing as npt
import pytest

from parla.audio import decode_audio, loudness_lufs
from parla.engines.base import AudioChunk, SynthesisRequest
from parla.engines.mock import MockEngine
from parla.engines.registry import EngineRegistry
from parla.services import Services
from parla.services.speech import SpeechOptions, crossfaded
from parla.store.models import Generation
from tests.conftest import InProcessApp, Listener, mock_settings, serving_in_process, someone_saying, wer


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


# -- engines that speak whole scripts (Dia's way), on the mock engine ---------------------------------


class _Scripted(MockEngine):
    """Speaks a whole [S1]/[S2] script in one generation, cues included, like Dia; keeps what it is asked."""

    name = "scripted"
    capabilities = replace(
        MockEngine.capabilities,
        nonverbal=True,
        scripted_dialogue=True,
        single_speaker=False,
        min_dialogue_turns=2,
        needs_transcript=True,
    )
    heard: ClassVar[list[SynthesisRequest]] = []
    """Every request any scripted engine was given, in order (shared: a test clears it)."""

    def synthesize(self, request: SynthesisRequest) -> Iterator[AudioChunk]:
        _Scripted.heard.append(request)
        yield from super().synthesize(request)


class _Uncued(_Scripted):
    """Scripts without nonverbal cues: they are taken out of its text."""

    name = "uncued"
    capabilities = replace(_Scripted.capabilities, nonverbal=False)


class _Short(_Scripted):
    """Reads few bytes at once, as Dia reads 1024: longer scripts are cut between turns."""

    name = "short"
    capabilities = replace(_Scripted.capabilities, max_script_bytes=135)


class _FakeDia(_Scripted):
    """Stands for the dia engine, available, so that the Dia server API picks it."""

    name = "dia"


ADA, BO = "I am Ada.", "I am Bo."


@asynccontextmanager
async def scripted_app(data_dir: Path) -> AsyncIterator[InProcessApp]:
    """An app whose engines are the mock (the default) and the scripted ones above, with two library
    voices, Ada and Bo, each one sample saying ``ADA`` or ``BO``."""
    settings = mock_settings(data_dir)
    engines = EngineRegistry(
        [cls.from_settings(settings) for cls in (MockEngine, _Scripted, _Uncued, _Short, _FakeDia)]
    )
    async with serving_in_process(settings, engines=engines) as app:
        for name, said in (("Ada", ADA), ("Bo", BO)):
            created = await app.client.post(
                "/v1/voices/clone",
                data={"name": name, "transcript": said},
                files={"file": (f"{name}.wav", someone_saying(said), "audio/wav")},
            )
            assert created.status_code == 201, created.text
        yield app


@pytest.fixture(scope="module")
async def scripted(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[InProcessApp]:
    async with scripted_app(tmp_path_factory.mktemp("scripted")) as app:
        yield app


@pytest.fixture
def heard() -> list[SynthesisRequest]:
    _Scripted.heard.clear()
    return _Scripted.heard


def _sample(app: InProcessApp, voice: str) -> Path:
    return app.services.voices.resolve(voice).samples[0][0]


async def test_a_scripted_engine_is_handed_the_whole_dialogue_at_once(
    scripted: InProcessApp, heard: list[SynthesisRequest]
) -> None:
    body = {
        "model": "scripted",
        "text": "[S1] Hello there (laughs). [S2] Fine, thank you (Laughs).",
        "voices": {"S1": "Ada", "S2": "Bo"},
        "response_format": "wav",
    }
    response = await scripted.client.post("/v1/audio/dialogue", json=body)
    assert response.status_code == 200, response.text
    [request] = heard  # one generation, not one per turn or piece
    assert request.text == "[S1] Hello there (laughs). [S2] Fine, thank you (laughs)."  # cues as text
    # One voice: each speaker's sample, in speaker order, its transcript tagged as the script tags its lines.
    assert request.voice.samples == ((_sample(scripted, "Ada"), f"[S1] {ADA}"), (_sample(scripted, "Bo"), f"[S2] {BO}"))
    assert request.voice.name == "S1=Ada, S2=Bo" and request.voice.key.startswith("script-")
    # The turns were spoken in one generation: they share its span.
    turns = json.loads(response.headers["X-Turns"])
    assert [(t["speaker"], t["voice"]) for t in turns] == [("S1", "Ada"), ("S2", "Bo")]
    assert turns[0]["start"] == turns[1]["start"] == 0 and turns[0]["end"] == turns[1]["end"] > 0
    with scripted.services.db.session() as session:
        row = session.get(Generation, response.headers["X-Generation-Id"])
        assert row is not None and row.engine == "scripted" and row.parameters["scripts"] == 1
        assert row.parameters["turns"] == turns


async def test_a_script_numbers_its_speakers_by_their_first_line_one_prompt_per_combination(
    scripted: InProcessApp, heard: list[SynthesisRequest]
) -> None:
    body = {"model": "scripted", "text": "[S2] Hi. [S1] Hello. [S2] Bye.", "voices": {"S1": "Ada", "S2": "Bo"}}
    for _ in range(2):
        assert (await scripted.client.post("/v1/audio/dialogue", json=body)).status_code == 200
    first, again = heard
    assert first.text == "[S1] Hi. [S2] Hello. [S1] Bye."
    assert [text for _, text in first.voice.samples] == [f"[S1] {BO}", f"[S2] {ADA}"]
    assert again.voice.key == first.voice.key  # the same combination: the engine's cached prompt serves
    swapped = {**body, "voices": {"S1": "Bo", "S2": "Ada"}}
    assert (await scripted.client.post("/v1/audio/dialogue", json=swapped)).status_code == 200
    assert heard[-1].voice.key != first.voice.key
    assert [text for _, text in heard[-1].voice.samples] == [f"[S1] {ADA}", f"[S2] {BO}"]


async def test_a_script_without_cue_rendering_has_its_cues_taken_out(
    scripted: InProcessApp, heard: list[SynthesisRequest]
) -> None:
    body = {"model": "uncued", "text": "[S1] Hello there (laughs). [S2] Fine, thank you (laughs).", "voice": "Ada"}
    assert (await scripted.client.post("/v1/audio/dialogue", json=body)).status_code == 200
    [request] = heard
    assert request.text == "[S1] Hello there. [S2] Fine, thank you."
    # S2 got another voice, a built-in one without samples: it adds none to the prompt.
    assert request.voice.samples == ((_sample(scripted, "Ada"), f"[S1] {ADA}"),)


async def test_a_script_over_the_engines_limit_is_cut_between_turns(
    scripted: InProcessApp, heard: list[SynthesisRequest]
) -> None:
    lines = [
        f"[S{1 + i % 2}] This is the line number {word}." for i, word in enumerate(("one", "two", "three", "four"))
    ]
    body = {"model": "short", "text": " ".join(lines), "voices": {"S1": "Ada", "S2": "Bo"}, "response_format": "wav"}
    response = await scripted.client.post("/v1/audio/dialogue", json=body)
    assert response.status_code == 200, response.text
    # 135 bytes, 29 of them the transcripts and a space: three lines fit, not four.
    assert [r.text for r in heard] == [" ".join(lines[:3]), lines[3]]
    assert all(r.voice == heard[0].voice for r in heard)
    turns = json.loads(response.headers["X-Turns"])
    assert turns[0]["end"] == turns[2]["end"] < turns[3]["start"]  # two generations, a pause between
    long = {**body, "text": f"[S1] Short. [S2] {'A very long line indeed. ' * 5}"}
    refused = await scripted.client.post("/v1/audio/dialogue", json=long)
    assert refused.status_code == 400, refused.text
    detail = refused.json()["detail"]
    assert detail.startswith("turn 2 is 129 bytes of script, and engine 'short' reads at most 135 at once with the 29")
    assert "shorter turns" in detail and not heard[2:]  # refused before anything was spoken


async def test_one_speaker_twice_is_no_dialogue_for_an_engine_that_needs_two(
    scripted: InProcessApp, heard: list[SynthesisRequest]
) -> None:
    for body in (
        {"model": "scripted", "text": "[S1] Hi. [S1] Again."},
        {"model": "scripted", "turns": [{"text": "Hi.", "voice": "Ada"}, {"text": "Again.", "voice": "Ada"}]},
        {"model": "scripted", "turns": [{"text": "Hi.", "speaker": "S2"}, {"text": "Again.", "speaker": "S2"}]},
    ):
        response = await scripted.client.post("/v1/audio/dialogue", json=body)
        assert response.status_code == 400, (body, response.status_code)
        assert "engine 'scripted' needs a dialogue of at least 2 speakers, got 1" in response.json()["detail"]
    # Two people, whatever their tags or turns: spoken.
    two = {"model": "scripted", "turns": [{"text": "Hi.", "voice": "Ada"}, {"text": "Yo.", "voice": "Bo"}]}
    assert (await scripted.client.post("/v1/audio/dialogue", json=two)).status_code == 200
    assert [r.text for r in heard] == ["[S1] Hi. [S2] Yo."]


async def test_more_speakers_than_a_script_tags_are_spoken_turn_by_turn(
    scripted: InProcessApp, heard: list[SynthesisRequest]
) -> None:
    body = {"model": "scripted", "text": "[S1] One. [S2] Two. [S3] Three.", "voice": "Ada"}
    assert (await scripted.client.post("/v1/audio/dialogue", json=body)).status_code == 200
    assert [r.text for r in heard] == ["One.", "Two.", "Three."]


async def test_the_model_microservice_dialogue_is_one_script_in_its_voice_files(
    scripted: InProcessApp, heard: list[SynthesisRequest]
) -> None:
    data = scripted.settings.data_dir.resolve()
    for name, said in (("a.wav", ADA), ("b.wav", BO)):
        (data / name).write_bytes(someone_saying(said))
    body: dict[str, Any] = {
        "inputs": [
            {"text": "First speaker (laughs).", "voice_id": "a.wav"},
            {"text": "Second speaker.", "voice_id": "b.wav"},
            {"text": "First again.", "voice_id": "a.wav"},
        ],
        "output_filepath": "script.wav",
        "parameters": {"audio_transcriptions": [ADA, BO, None]},
    }
    response = await scripted.client.post("/v1/text-to-dialogue?engine=scripted", json=body)
    assert response.status_code == 200, response.text
    [request] = heard
    assert request.text == "[S1] First speaker (laughs). [S2] Second speaker. [S1] First again."
    assert request.voice.samples == ((data / "a.wav", f"[S1] {ADA}"), (data / "b.wav", f"[S2] {BO}"))
    assert decode_audio((data / "script.wav").read_bytes())[0].size > 0
    # The same file twice is one speaker: no dialogue for an engine that needs two.
    one = {**body, "inputs": [body["inputs"][0], body["inputs"][2]], "output_filepath": "one.wav"}
    refused = await scripted.client.post("/v1/text-to-dialogue?engine=scripted", json=one)
    assert refused.status_code == 400 and "at least 2 speakers" in refused.json()["detail"]
    assert not (data / "one.wav").exists()


async def test_a_cue_at_the_end_of_a_turn_leaves_nothing_unspeakable(api: httpx.AsyncClient) -> None:
    """Its full stop used to be a piece of its own, with nothing to speak: a 400 on every engine."""
    body = {"text": "[S1] How are you? [S2] Fine, thank you (laughs).", "response_format": "wav"}
    response = await api.post("/v1/audio/dialogue", json=body)
    assert response.status_code == 200, response.text
