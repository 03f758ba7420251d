"""The model microservice API: its documented example requests, parameters, file paths. Speech is judged
on the live server (``model``); parameters, paths and refusals on the module's mock app."""

from __future__ import annotations

import asyncio
import wave
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest

from parla.audio import decode_audio
from parla.engines import EngineRegistry
from parla.engines.mock import MockEngine
from parla.services.speech import SpeechOptions
from tests.conftest import (
    InProcessApp,
    Listener,
    LiveServer,
    duration_of,
    mock_settings,
    natural_length,
    serving_in_process,
    someone_saying,
    wer,
)

SENTENCE = "The birch canoe slid on the smooth planks."
TEXT = "Glue the sheet to the dark blue background."


def _tts(voice_id: str, **body: Any) -> tuple[str, dict[str, Any]]:
    return f"/v1/text-to-speech/{quote(voice_id, safe='')}", body


@pytest.fixture(scope="module")
def data_dir(server: LiveServer) -> Path:
    return server.services.settings.data_dir.resolve()


@pytest.fixture(scope="module")
def reference(server: LiveServer, data_dir: Path) -> Path:
    """A reference recording inside the data dir: the bundled voice saying ``SENTENCE``."""
    speech = server.services.speech
    options = SpeechOptions(input=SENTENCE, voice="joe", response_format="wav", seed=7)
    audio = asyncio.run(speech.render(speech.prepare(options, source="test"))).audio
    path = data_dir / "refs" / "ref.wav"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(audio)
    return path


@pytest.fixture(scope="module")
def mock_data_dir(mock_app: InProcessApp) -> Path:
    return mock_app.settings.data_dir.resolve()


@pytest.fixture(scope="module")
def mock_reference(mock_data_dir: Path) -> Path:
    """A reference recording inside the mock app's data dir: someone saying ``SENTENCE``."""
    path = mock_data_dir / "refs" / "ref.wav"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(someone_saying(SENTENCE))
    return path


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """A directory outside every allowed root."""
    return tmp_path


# -- the documented examples ------------------------------------------------------------------------


@pytest.mark.model
def test_text_to_speech_example(client: httpx.Client, reference: Path, data_dir: Path, listener: Listener) -> None:
    """The documented request, as written: parameters the engine does not use (max_new_tokens,
    temperature) are accepted and named in the answer."""
    target = data_dir / "path" / "to" / "output.wav"
    url, body = _tts(
        str(reference),
        text=TEXT,
        output_filepath=str(target),
        parameters={"max_new_tokens": 256, "seed": 42, "temperature": 1.0, "transcription": SENTENCE},
    )
    response = client.post(url, json=body)
    assert response.status_code == 200, response.text
    assert response.json() == {
        "status": "success",
        "output_filepath": str(target),
        "message": "Audio generated successfully (not used by clone: max_new_tokens, temperature)",
        "ignored_parameters": ["max_new_tokens", "temperature"],
    }
    audio = target.read_bytes()
    with wave.open(str(target)) as w:  # sizes filled in: strict readers accept it
        assert w.getnframes() / w.getframerate() == pytest.approx(duration_of(audio), abs=0.01)
    low, high = natural_length(TEXT)
    assert low < duration_of(audio) < high
    assert wer(TEXT, listener.transcribe(audio)) < 0.3


@pytest.mark.model
def test_text_to_speech_transcribes_a_voice_file_without_transcription(
    client: httpx.Client, reference: Path, data_dir: Path, listener: Listener
) -> None:
    url, body = _tts("refs/ref.wav", text=TEXT, output_filepath="out/heard.wav", parameters={"seed": 3})
    response = client.post(url, json=body)
    assert response.status_code == 200, response.text
    audio = (data_dir / "out" / "heard.wav").read_bytes()
    assert wer(TEXT, listener.transcribe(audio)) < 0.3
    # The clone engine learnt the file once, under a key made from its bytes and transcript.
    assert list((data_dir / "cache" / "clone").glob("file-*.npz"))


async def test_text_to_dialogue_example(api: httpx.AsyncClient, mock_reference: Path, mock_data_dir: Path) -> None:
    """Mock (the model microservice API's test engine) concatenates the voice files, with the dialogue pause between."""
    second = mock_data_dir / "refs" / "voice2.wav"
    second.write_bytes(mock_reference.read_bytes())
    target = mock_data_dir / "path" / "to" / "dialogue.wav"
    body: dict[str, Any] = {
        "inputs": [
            {"text": "First speaker text", "voice_id": str(mock_reference)},
            {"text": "Second speaker text", "voice_id": str(second)},
        ],
        "output_filepath": str(target),
        "parameters": {"max_new_tokens": 256, "seed": 42},
    }
    response = await api.post("/v1/text-to-dialogue?engine=mock", json=body)
    assert response.status_code == 200, response.text
    assert response.json() == {
        "status": "success",
        "output_filepath": str(target),
        "message": "Dialogue generated successfully (not used by mock: max_new_tokens)",
        "ignored_parameters": ["max_new_tokens"],
    }
    one = duration_of(mock_reference.read_bytes())
    assert duration_of(target.read_bytes()) == pytest.approx(2 * one + 0.35, abs=0.05)


async def test_nonverbal_cues_in_a_dialogue_become_pauses(
    api: httpx.AsyncClient, mock_reference: Path, mock_data_dir: Path
) -> None:
    body = {"inputs": [{"text": "Ha! (laughs) Yes.", "voice_id": "refs/ref.wav"}], "output_filepath": "out/cue.wav"}
    assert (await api.post("/v1/text-to-dialogue?engine=mock", json=body)).status_code == 200
    one = duration_of(mock_reference.read_bytes())  # mock speaks each part as a copy of the voice file
    assert duration_of((mock_data_dir / "out" / "cue.wav").read_bytes()) == pytest.approx(2 * one + 0.3, abs=0.05)


@pytest.mark.model
def test_text_to_dialogue_with_real_voices_says_both_turns(
    client: httpx.Client, reference: Path, data_dir: Path, listener: Listener
) -> None:
    turns = ["Did you see the boat?", "It is easy to tell the depth of a well."]
    body = {
        "inputs": [{"text": turns[0], "voice_id": "refs/ref.wav"}, {"text": turns[1], "voice_id": "onyx"}],
        "output_filepath": "out/dialogue.mp3",
        "parameters": {"audio_transcriptions": [SENTENCE, None]},
    }
    response = client.post("/v1/text-to-dialogue", json=body)
    assert response.status_code == 200, response.text
    audio = (data_dir / "out" / "dialogue.mp3").read_bytes()
    assert audio[:3] == b"ID3" or audio[0] == 0xFF  # the extension picks the format
    low, high = natural_length(" ".join(turns))
    assert low < duration_of(audio) < high + 0.35
    assert wer(" ".join(turns), listener.transcribe(audio)) < 0.3


@pytest.mark.model
def test_load_and_unload_model_examples(client: httpx.Client) -> None:
    unloaded = client.post("/v1/unload-model")
    assert unloaded.status_code == 200
    assert unloaded.json() == {
        "status": "success",
        "message": "Model unloaded successfully",
        "engine": "piper",
        "engines": ["piper", "clone"],  # the cloning engine speaks the voice files: it is freed too
    }
    assert client.get("/health").json()["model_loaded"] is False
    loaded = client.post("/v1/load-model")
    assert loaded.json() == {
        "status": "success",
        "message": "Model loaded successfully",
        "engine": "piper",
        "engines": ["piper", "clone"],
    }
    assert client.get("/health").json()["model_loaded"] is True
    assert client.post("/v1/load-model?engine=mock").json()["engine"] == "mock"
    unknown = client.post("/v1/load-model?engine=nothing")
    assert unknown.status_code == 400 and "nothing" in unknown.json()["detail"]


async def test_health_and_info_have_the_seed_fields(api: httpx.AsyncClient, mock_app: InProcessApp) -> None:
    health = (await api.get("/health")).json()
    assert health["status"] == "healthy" and health["model_loaded"] is True
    assert isinstance(health["device"], str) and health["dependencies_available"] is True
    info = (await api.get("/")).json()
    assert isinstance(info["message"], str) and info["model"] == mock_app.settings.default_engine


# -- parameters ---------------------------------------------------------------------------------


@pytest.mark.model
def test_same_seed_same_audio_and_speed_passes_through(client: httpx.Client, data_dir: Path) -> None:
    def speak(name: str, **parameters: Any) -> bytes:
        url, body = _tts("alloy", text=SENTENCE, output_filepath=f"out/{name}.wav", parameters=parameters)
        assert client.post(f"{url}?engine=piper", json=body).status_code == 200
        return (data_dir / "out" / f"{name}.wav").read_bytes()

    first, again = speak("a", seed=11, noise_scale=0.5), speak("b", seed=11, noise_scale=0.5)
    assert first == again
    assert duration_of(speak("fast", seed=11, speed=2.0)) < 0.75 * duration_of(first)


@pytest.mark.parametrize(
    ("parameters", "named"),
    [
        ({"seed": "forty-two"}, "seed"),
        ({"seed": -1}, "seed"),
        ({"speed": 10}, "speed"),
        ({"noise_scale": "loud"}, "noise_scale"),
        ({"length_scale": 99.0}, "length_scale"),
        ({"audio_transcriptions": "not a list"}, "audio_transcriptions"),
    ],
)
async def test_parameters_of_the_wrong_type_or_range_are_refused(
    api: httpx.AsyncClient, parameters: dict[str, Any], named: str
) -> None:
    url, body = _tts("alloy", text=SENTENCE, output_filepath="out/never.wav", parameters=parameters)
    response = await api.post(f"{url}?engine=piper", json=body)
    assert response.status_code == 400, response.text
    assert named in response.json()["detail"]


@pytest.mark.parametrize(
    "body",
    [
        {"output_filepath": "out/x.wav"},
        {"text": "", "output_filepath": "out/x.wav"},
        {"text": "Hello."},
        {"text": "Hello.", "output_filepath": "out/x.wav", "parameters": [1, 2]},
    ],
)
async def test_malformed_requests_are_refused(api: httpx.AsyncClient, body: dict[str, Any]) -> None:
    response = await api.post("/v1/text-to-speech/alloy", json=body)
    assert response.status_code == 422 and response.json()["detail"]


async def test_unknown_engine_is_a_400(api: httpx.AsyncClient) -> None:
    url, body = _tts("alloy", text=SENTENCE, output_filepath="out/x.wav")
    response = await api.post(f"{url}?engine=nothing", json=body)
    assert response.status_code == 400 and "nothing" in response.json()["detail"]


async def test_a_voice_file_the_engine_cannot_clone_is_a_400(api: httpx.AsyncClient, mock_reference: Path) -> None:
    url, body = _tts(str(mock_reference), text=SENTENCE, output_filepath="out/x.wav")
    response = await api.post(f"{url}?engine=piper", json=body)
    assert response.status_code == 400 and "cloned voice" in response.json()["detail"]


async def test_a_voice_file_that_is_not_audio_is_a_400(api: httpx.AsyncClient, mock_data_dir: Path) -> None:
    (mock_data_dir / "refs").mkdir(exist_ok=True)
    (mock_data_dir / "refs" / "notes.wav").write_text("not audio at all")
    url, body = _tts("refs/notes.wav", text=SENTENCE, output_filepath="out/x.wav")
    response = await api.post(f"{url}?engine=mock", json=body)
    assert response.status_code == 400 and "not audio" in response.json()["detail"]


# -- paths --------------------------------------------------------------------------------------


async def test_voice_paths_absolute_relative_and_url_encoded(
    api: httpx.AsyncClient, mock_reference: Path, mock_data_dir: Path
) -> None:
    odd = mock_data_dir / "refs" / "my voice é+1%.wav"
    odd.write_bytes(mock_reference.read_bytes())
    seconds = duration_of(mock_reference.read_bytes())
    for i, voice_id in enumerate([str(mock_reference), "refs/ref.wav", "./refs/../refs/ref.wav", str(odd)]):
        url, body = _tts(voice_id, text=SENTENCE, output_filepath=f"out/path-{i}.wav")
        response = await api.post(f"{url}?engine=mock", json=body)
        assert response.status_code == 200, (voice_id, response.text)
        assert response.json()["message"] == "Audio generated successfully"
        spoken = (mock_data_dir / "out" / f"path-{i}.wav").read_bytes()
        assert duration_of(spoken) == pytest.approx(seconds, abs=0.02)
    # Unencoded slashes reach the same file (the route takes the rest of the path).
    response = await api.post("/v1/text-to-speech/refs/ref.wav?engine=mock", json=body)
    assert response.status_code == 200, response.text


async def test_voice_paths_leaving_the_roots_are_refused(
    api: httpx.AsyncClient, mock_reference: Path, mock_data_dir: Path, outside: Path
) -> None:
    secret = outside / "secret.wav"
    secret.write_bytes(mock_reference.read_bytes())
    link = mock_data_dir / "refs" / "link.wav"
    link.unlink(missing_ok=True)
    link.symlink_to(secret)
    escapes = [str(secret), "../" * 12 + str(secret).lstrip("/"), "refs/../../x.wav", "/etc/passwd", "refs/link.wav"]
    for voice_id in escapes:
        url, body = _tts(voice_id, text=SENTENCE, output_filepath="out/x.wav")
        response = await api.post(f"{url}?engine=mock", json=body)
        assert response.status_code == 400, voice_id
        assert "outside the allowed directories" in response.json()["detail"]
        assert response.json()["error"]["param"] == "voice_id"


async def test_output_paths_leaving_the_roots_are_refused(
    api: httpx.AsyncClient, mock_data_dir: Path, outside: Path, mock_reference: Path
) -> None:
    victim = outside / "victim.wav"
    victim.write_bytes(b"untouched")
    link = mock_data_dir / "out-link.wav"
    link.unlink(missing_ok=True)
    link.symlink_to(victim)
    for target in [str(outside / "new.wav"), "../escaped.wav", "out-link.wav", str(mock_data_dir / ".." / "up.wav")]:
        url, body = _tts("alloy", text=SENTENCE, output_filepath=target)
        response = await api.post(f"{url}?engine=mock", json=body)
        assert response.status_code == 400, target
        assert response.json()["error"]["param"] == "output_filepath"
    assert victim.read_bytes() == b"untouched"
    assert not (outside / "new.wav").exists() and not (mock_data_dir.parent / "escaped.wav").exists()
    dialogue = {"inputs": [{"text": "Hi.", "voice_id": str(mock_reference)}], "output_filepath": str(outside / "d.wav")}
    assert (await api.post("/v1/text-to-dialogue?engine=mock", json=dialogue)).status_code == 400
    bad_voice = {"inputs": [{"text": "Hi.", "voice_id": "/etc/passwd"}], "output_filepath": "out/d.wav"}
    assert (await api.post("/v1/text-to-dialogue?engine=mock", json=bad_voice)).status_code == 400


async def test_allowed_paths_open_more_directories(
    api: httpx.AsyncClient,
    mock_app: InProcessApp,
    mock_reference: Path,
    outside: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    voice = outside / "voice.wav"
    voice.write_bytes(mock_reference.read_bytes())
    monkeypatch.setattr(mock_app.settings, "allowed_paths", [outside])
    url, body = _tts(str(voice), text=SENTENCE, output_filepath=str(outside / "out.wav"))
    response = await api.post(f"{url}?engine=mock", json=body)
    assert response.status_code == 200, response.text
    assert (outside / "out.wav").read_bytes()[:4] == b"RIFF"


@pytest.mark.model
def test_a_missing_voice_file_falls_back_to_the_default_voice(
    client: httpx.Client, data_dir: Path, listener: Listener
) -> None:
    url, body = _tts("refs/nobody.wav", text=TEXT, output_filepath="out/fallback.wav")
    response = client.post(url, json=body)
    assert response.status_code == 200, response.text
    assert response.json()["message"] == (
        "Audio generated successfully (voice file 'refs/nobody.wav' not found: used the default voice 'alloy')"
    )
    audio = (data_dir / "out" / "fallback.wav").read_bytes()
    low, high = natural_length(TEXT)
    assert low < duration_of(audio) < high
    assert wer(TEXT, listener.transcribe(audio)) < 0.3


async def test_a_voice_name_is_accepted_as_voice_id(api: httpx.AsyncClient, mock_data_dir: Path) -> None:
    url, body = _tts("nova", text=SENTENCE, output_filepath="out/nova.flac")
    response = await api.post(url, json=body)
    assert response.json()["message"] == "Audio generated successfully"
    samples, rate = decode_audio(mock_data_dir / "out" / "nova.flac")
    assert (mock_data_dir / "out" / "nova.flac").read_bytes()[:4] == b"fLaC" and samples.size / rate > 1


# -- engines that make dialogue only ------------------------------------------------------------


class _Duo(MockEngine):
    """Like Dia: dialogue only, with at least two speakers."""

    name = "duo"
    capabilities = replace(MockEngine.capabilities, single_speaker=False, min_dialogue_turns=2)


@pytest.fixture(scope="module")
async def duo(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[tuple[httpx.AsyncClient, Path]]:
    settings = mock_settings(tmp_path_factory.mktemp("duo"), default_engine="duo")
    engines = EngineRegistry([_Duo.from_settings(settings), MockEngine.from_settings(settings)])
    async with serving_in_process(settings, engines=engines) as app:
        yield app.client, settings.data_dir.resolve()


async def test_a_dialogue_only_engine_refuses_single_speech_and_short_dialogues(
    duo: tuple[httpx.AsyncClient, Path], mock_reference: Path
) -> None:
    api, data = duo
    voice = data / "v.wav"
    voice.write_bytes(mock_reference.read_bytes())
    speech = await api.post("/v1/text-to-speech/v.wav?engine=duo", json={"text": "Hi.", "output_filepath": "o.wav"})
    assert speech.status_code == 400 and "dialogue only" in speech.json()["detail"]
    inputs = [{"text": "Hi.", "voice_id": "v.wav"}]
    one = {"inputs": inputs, "output_filepath": "d.wav"}
    short = await api.post("/v1/text-to-dialogue?engine=duo", json=one)
    assert short.status_code == 400 and "at least 2" in short.json()["detail"]
    assert not (data / "d.wav").exists()
    # Speakers are counted, not turns: the same voice twice is one speaker; two voices are a dialogue.
    same_twice = {**one, "inputs": inputs * 2}
    refused = await api.post("/v1/text-to-dialogue?engine=duo", json=same_twice)
    assert refused.status_code == 400 and "at least 2" in refused.json()["detail"]
    (data / "w.wav").write_bytes(mock_reference.read_bytes())
    two = {**one, "inputs": [*inputs, {"text": "Hello.", "voice_id": "w.wav"}]}
    assert (await api.post("/v1/text-to-dialogue?engine=duo", json=two)).status_code == 200
    assert (await api.post("/v1/text-to-dialogue?engine=mock", json=one)).status_code == 200
    # The engine's rules hold on every API, not only this one.
    openai = await api.post("/v1/audio/speech", json={"input": "Hi.", "model": "duo", "voice": "alloy"})
    assert openai.status_code == 400 and "dialogue only" in openai.json()["detail"]
    dia = await api.post("/generate", json={"text": "Hi.", "model": "duo", "voice_id": "alloy"})
    assert dia.status_code == 400 and "dialogue only" in dia.json()["detail"]
    lone = await api.post("/v1/audio/dialogue", json={"text": "[S1] Hi.", "model": "duo"})
    assert lone.status_code == 400 and "at least 2" in lone.json()["detail"]
    pair = await api.post("/v1/audio/dialogue", json={"text": "[S1] Hi. [S2] Hello.", "model": "duo"})
    assert pair.status_code == 200, pair.text


@pytest.mark.model
def test_a_voice_file_without_speech_is_a_400_that_says_so(client: httpx.Client, data_dir: Path) -> None:
    import numpy as np

    from parla.audio import encode_audio

    silent = data_dir / "refs" / "hum.wav"
    silent.parent.mkdir(parents=True, exist_ok=True)
    silent.write_bytes(encode_audio(0.2 * np.sin(np.arange(48000) * 0.05).astype(np.float32), 24000, "wav"))
    path, body = _tts("refs/hum.wav", text=TEXT, output_filepath="out/hum.wav")
    dialogue = {
        "inputs": [{"text": "Hi.", "voice_id": "refs/hum.wav"}, {"text": "Hello.", "voice_id": "refs/hum.wav"}],
        "output_filepath": "out/hum-dialogue.wav",
    }
    for response in (client.post(path, json=body), client.post("/v1/text-to-dialogue", json=dialogue)):
        assert response.status_code == 400, response.text
        assert "holds no speech" in response.json()["detail"] and "internal error" not in response.text
    assert not (data_dir / "out" / "hum.wav").exists() and not (data_dir / "out" / "hum-dialogue.wav").exists()
    # Saying what the file says is enough for the engine to learn from it.
    spoken = client.post(path, json={**body, "parameters": {"transcription": "Mm."}})
    assert spoken.status_code == 200, spoken.text


@pytest.mark.model
def test_unload_model_frees_the_engine_that_spoke_the_file_voices(
    client: httpx.Client, server: LiveServer, reference: Path
) -> None:
    engines = server.services.engines
    clone = engines.get(server.services.settings.default_clone_engine)
    url, body = _tts("refs/ref.wav", text=SENTENCE, output_filepath="out/freed.wav")
    body["parameters"] = {"transcription": SENTENCE}
    assert client.post(url, json=body).status_code == 200
    assert clone.status().loaded  # a file voice is spoken by the cloning engine, not the default one
    try:
        unloaded = client.post("/v1/unload-model")
        assert unloaded.status_code == 200 and unloaded.json()["engines"] == ["piper", clone.name]
        assert not clone.status().loaded
        assert not engines.get(server.services.settings.default_engine).status().loaded
    finally:
        assert client.post("/v1/load-model").status_code == 200  # as the tests after expect the server


async def test_the_documented_example_paths_say_what_to_set(api: httpx.AsyncClient, mock_data_dir: Path) -> None:
    """The API's examples are absolute paths elsewhere on disk: still refused, with the way to open them."""
    url, body = _tts("/path/to/voice1.wav", text=SENTENCE, output_filepath="/path/to/output.wav")
    detail = (await api.post(url, json=body)).json()["detail"]
    assert "'/path/to/output.wav' resolves to /path/to/output.wav, outside the allowed directories" in detail
    assert str(mock_data_dir) in detail and "add its directory (/path/to) to PARLA_ALLOWED_PATHS" in detail
    url, body = _tts("/path/to/voice1.wav", text=SENTENCE, output_filepath="out/example.wav")
    response = await api.post(url, json=body)
    assert response.status_code == 400 and response.json()["error"]["param"] == "voice_id"
    assert "resolves to /path/to/voice1.wav" in response.json()["detail"]
    assert "PARLA_ALLOWED_PATHS" in response.json()["detail"]
