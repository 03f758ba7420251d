"""The voice library over HTTP: profiles, samples in any format, by base64 or URL, validation,
transcripts, export and import, and nothing half-written when something fails. All on the module's
mock app but the transcript that Whisper makes (``model``)."""

from __future__ import annotations

import base64
import functools
import http.server
import io
import subprocess
import threading
import zipfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any, cast

import av
import httpx
import numpy as np
import numpy.typing as npt
import pytest
from sqlalchemy import event

from parla.audio import decode_audio, encode_audio
from parla.net import FetchError, fetch
from parla.store.models import VoiceSample
from tests.conftest import InProcessApp, wer

SPOKEN = "The quick brown fox jumps over the lazy dog. Then it ran off into the trees."


@functools.cache
def espeak(text: str, voice: str = "en-us") -> tuple[npt.NDArray[np.float32], int]:
    """Someone speaking: espeak-ng's voice, as a stand-in for a user's recording."""
    wav = subprocess.run(["espeak-ng", "--stdout", "-v", voice, text], capture_output=True, check=True).stdout
    return decode_audio(wav)


def in_container(samples: npt.NDArray[np.float32], rate: int, container: str, codec: str) -> bytes:
    """Encode as a browser or phone would send it (m4a, webm, ogg...)."""
    buffer = io.BytesIO()
    with av.open(buffer, "w", format=container) as out:
        stream = cast(av.AudioStream, out.add_stream(codec, rate=48000 if codec == "libopus" else rate, layout="mono"))
        frame = av.AudioFrame.from_ndarray(
            (np.clip(samples, -1, 1) * 32767).astype(np.int16).reshape(1, -1), format="s16", layout="mono"
        )
        frame.sample_rate = rate
        resampler = av.AudioResampler(format=stream.codec_context.format.name, layout="mono", rate=int(stream.rate))
        for f in [*resampler.resample(frame), *resampler.resample(None)]:
            for packet in stream.encode(f):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    return buffer.getvalue()


@pytest.fixture
async def voice(api: httpx.AsyncClient, request: pytest.FixtureRequest) -> AsyncIterator[str]:
    name = f"test-{request.node.name}"[:90]
    response = await api.post("/v1/voices", json={"name": name, "description": "made by a test"})
    assert response.status_code == 201, response.text
    voice_id: str = response.json()["id"]
    yield voice_id
    await api.delete(f"/v1/voices/{voice_id}")


async def upload(
    api: httpx.AsyncClient, voice: str, data: bytes, filename: str, transcript: str | None = None
) -> httpx.Response:
    form = {"transcript": transcript} if transcript else {}
    return await api.post(f"/v1/voices/{voice}/samples", files={"file": (filename, data)}, data=form)


FORMATS = [
    ("sample.wav", "wav", None),
    ("sample.mp3", "mp3", None),
    ("sample.flac", "flac", None),
    ("sample.ogg", "ogg", "libopus"),
    ("sample.m4a", "mp4", "aac"),
    ("sample.aac", "aac", None),
    ("recording.webm", "webm", "libopus"),
]


@pytest.mark.parametrize(("filename", "container", "codec"), FORMATS)
async def test_samples_upload_in_any_format_and_are_stored_clean(
    api: httpx.AsyncClient, voice: str, filename: str, container: str, codec: str | None
) -> None:
    samples, rate = espeak(SPOKEN)
    # Quiet, with silence around it, as a real recording often is.
    padded = np.concatenate([np.zeros(rate), samples * 0.2, np.zeros(rate)]).astype(np.float32)
    data = in_container(padded, rate, container, codec) if codec else encode_audio(padded, rate, container)
    response = await upload(api, voice, data, filename, transcript=SPOKEN)
    assert response.status_code == 201, response.text
    sample = response.json()["sample"]
    assert sample["transcript"] == SPOKEN and sample["transcript_source"] == "user"
    assert sample["report"]["speech_s"] > 3
    stored, stored_rate = decode_audio((await api.get(f"/v1/voices/{voice}/samples/{sample['id']}/audio")).content)
    assert stored_rate == 24000
    # Silence trimmed (two seconds of it), loudness normalised.
    assert samples.size / rate - 0.2 < stored.size / stored_rate < samples.size / rate + 0.5
    assert 0.3 < float(np.max(np.abs(stored))) <= 1.0


@pytest.mark.model
def test_a_missing_transcript_is_made_by_whisper_and_can_be_corrected(client: httpx.Client) -> None:
    voice = client.post("/v1/voices", json={"name": "test-whisper-transcript"}).json()["id"]
    try:
        # A clearer speaker than espeak-ng: the bundled neural voice.
        spoken = client.post("/v1/audio/speech", json={"input": SPOKEN, "voice": "joe", "response_format": "flac"})
        sample = client.post(f"/v1/voices/{voice}/samples", files={"file": ("a.flac", spoken.content)}).json()["sample"]
        assert sample["transcript_source"] == "whisper"
        assert wer(SPOKEN, sample["transcript"]) < 0.3, sample["transcript"]
        corrected = client.patch(f"/v1/voices/{voice}/samples/{sample['id']}", json={"transcript": SPOKEN})
        assert corrected.json()["transcript"] == SPOKEN and corrected.json()["transcript_source"] == "user"
    finally:
        client.delete(f"/v1/voices/{voice}")


async def test_samples_by_base64_and_data_url(api: httpx.AsyncClient, voice: str) -> None:
    samples, rate = espeak(SPOKEN)
    encoded = base64.b64encode(encode_audio(samples, rate, "mp3")).decode()
    for payload in (encoded, f"data:audio/mpeg;base64,{encoded}"):
        response = await api.post(f"/v1/voices/{voice}/samples", json={"audio_base64": payload, "transcript": SPOKEN})
        assert response.status_code == 201, response.text
    assert len((await api.get(f"/v1/voices/{voice}")).json()["samples"]) == 2
    bad = await api.post(f"/v1/voices/{voice}/samples", json={"audio_base64": "not base64!!", "transcript": "x"})
    assert bad.status_code == 400 and "base64" in bad.json()["detail"]


@pytest.fixture(scope="module")
def file_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """A local web server standing in for a site that hosts a recording."""
    root = tmp_path_factory.mktemp("www")
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", root
    httpd.shutdown()


async def test_samples_by_url_when_private_addresses_are_allowed(
    api: httpx.AsyncClient,
    mock_app: InProcessApp,
    voice: str,
    file_server: tuple[str, Path],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    base, root = file_server
    samples, rate = espeak(SPOKEN)
    (root / "voice.flac").write_bytes(encode_audio(samples, rate, "flac"))
    body = {"url": f"{base}/voice.flac", "transcript": SPOKEN}
    refused = await api.post(f"/v1/voices/{voice}/samples", json=body)
    assert refused.status_code == 400 and "non-public address" in refused.json()["detail"]
    monkeypatch.setattr(mock_app.settings, "url_fetch_allow_private", True)
    response = await api.post(f"/v1/voices/{voice}/samples", json=body)
    assert response.status_code == 201, response.text
    missing = await api.post(f"/v1/voices/{voice}/samples", json={"url": f"{base}/nothing.wav"})
    assert missing.status_code == 400 and "404" in missing.json()["detail"]


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("http://127.0.0.1/a.wav", "non-public"),
        ("http://localhost:8000/a.wav", "non-public"),
        ("http://[::1]/a.wav", "non-public"),
        ("http://10.1.2.3/a.wav", "non-public"),
        ("http://192.168.1.10/a.wav", "non-public"),
        ("http://169.254.169.254/latest/meta-data", "non-public"),
        ("http://0.0.0.0/a.wav", "non-public"),
        ("http://[::ffff:127.0.0.1]/a.wav", "non-public"),
        ("file:///etc/passwd", "only http and https"),
        ("ftp://example.com/a.wav", "only http and https"),
        ("http://user:pw@example.com/a.wav", "credentials"),
        ("http://no-such-host.invalid/a.wav", "cannot resolve"),
    ],
)
def test_the_url_fetch_refuses_private_and_odd_urls(url: str, reason: str) -> None:
    with pytest.raises(FetchError, match=reason):
        fetch(url, max_bytes=1000, timeout=5)


def test_the_url_fetch_enforces_size_and_follows_redirects_only_when_checked(file_server: tuple[str, Path]) -> None:
    base, root = file_server
    (root / "big.bin").write_bytes(b"x" * 5000)
    with pytest.raises(FetchError, match="limit"):
        fetch(f"{base}/big.bin", max_bytes=1000, timeout=5, allow_private=True)
    assert fetch(f"{base}/big.bin", max_bytes=10_000, timeout=5, allow_private=True) == b"x" * 5000


def _silence(rate: int = 16000) -> bytes:
    return encode_audio(np.zeros(rate * 3, dtype=np.float32), rate, "wav")


def _noise(rate: int = 16000) -> bytes:
    return encode_audio((np.random.default_rng(0).standard_normal(rate * 3) * 0.2).astype(np.float32), rate, "wav")


def _a_long_lecture() -> bytes:
    """A minute and a half of talk: over the limit of a sample (60 s), and quick to encode."""
    samples, rate = espeak(SPOKEN)
    long = np.tile(samples, int(90 * rate / samples.size) + 1)
    return encode_audio(long, rate, "mp3")


def _truncated() -> bytes:
    samples, rate = espeak(SPOKEN)
    return encode_audio(samples, rate, "mp3")[:600]


@pytest.mark.parametrize(
    ("make", "filename", "status", "reason"),
    [
        (_silence, "silence.wav", 400, "silent"),
        (_noise, "noise.wav", 400, "no speech"),
        (_a_long_lecture, "lecture.mp3", 400, "longer than 60 s"),
        (_truncated, "cut.mp3", 400, "lasts"),
        (lambda: b"Dear diary, today I recorded nothing.\n" * 20, "notes.wav", 400, "not audio"),
        (lambda: b"", "empty.wav", 400, "not audio"),
        (lambda: encode_audio(espeak("Hi")[0][:3000], 22050, "wav"), "short.wav", 400, "at least 0.5 s"),
    ],
)
async def test_unusable_audio_gets_a_4xx_that_says_why(
    api: httpx.AsyncClient, mock_app: InProcessApp, voice: str, make: Any, filename: str, status: int, reason: str
) -> None:
    response = await upload(api, voice, make(), filename, transcript="whatever")
    assert response.status_code == status, response.text
    assert reason in response.json()["detail"]
    assert (await api.get(f"/v1/voices/{voice}")).json()["samples"] == []
    assert not list(mock_app.services.blobs.path(f"voices/{voice}").glob("*.wav"))


async def test_speech_without_recognisable_words_needs_its_transcript(
    api: httpx.AsyncClient, mock_app: InProcessApp, voice: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Speech that Whisper makes no words of (humming, a language it does not know) has nothing for
    # cloning to pair with Piper's reading: the upload asks for the transcript and keeps nothing.
    from parla.services.transcription import Transcript

    def hears_nothing(*args: Any, **kwargs: Any) -> Transcript:
        return Transcript(text=" ", language="en", duration=1.0, segments=[])

    monkeypatch.setattr(mock_app.services.voices.transcriber, "transcribe", hears_nothing)
    samples, rate = espeak(SPOKEN)
    response = await upload(api, voice, encode_audio(samples, rate, "wav"), "hum.wav")
    assert response.status_code == 400, response.text
    assert "send its transcript" in response.json()["detail"]
    assert (await api.get(f"/v1/voices/{voice}")).json()["samples"] == []
    assert (await upload(api, voice, encode_audio(samples, rate, "wav"), "hum.wav", SPOKEN)).status_code == 201


async def test_poor_audio_is_accepted_with_warnings(api: httpx.AsyncClient, voice: str) -> None:
    samples, rate = espeak(SPOKEN)
    clipped = np.clip(samples * 8, -1, 1)
    noisy = clipped + np.random.default_rng(1).standard_normal(samples.size).astype(np.float32) * 0.1
    response = await upload(api, voice, encode_audio(noisy.astype(np.float32), rate, "wav"), "loud.wav", SPOKEN)
    assert response.status_code == 201, response.text
    warnings = " ".join(response.json()["warnings"])
    assert "clipped" in warnings and "noise" in warnings


async def test_upload_over_the_size_limit_is_refused(
    api: httpx.AsyncClient, mock_app: InProcessApp, voice: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(mock_app.settings, "max_upload_bytes", 10_000)
    samples, rate = espeak(SPOKEN)
    response = await upload(api, voice, encode_audio(samples, rate, "wav"), "big.wav", SPOKEN)
    assert response.status_code == 413


async def test_profiles_crud_and_names(api: httpx.AsyncClient, voice: str) -> None:
    renamed = await api.patch(f"/v1/voices/{voice}", json={"name": "Renamed Voice", "tags": ["calm"]})
    assert renamed.status_code == 200 and renamed.json()["name"] == "Renamed Voice"
    assert (await api.get("/v1/voices/renamed voice")).json()["id"] == voice  # by name, any case
    assert (await api.post("/v1/voices", json={"name": "Renamed Voice"})).status_code == 409
    assert (await api.post("/v1/voices", json={"name": ""})).status_code == 422
    assert (await api.get("/v1/voices/nobody-at-all")).status_code == 404
    assert (await api.delete("/v1/voices/nobody-at-all")).status_code == 404
    listed = {v["name"] for v in (await api.get("/v1/voices")).json()["voices"]}
    assert {"alloy", "Renamed Voice"} <= listed


async def test_deleting_a_voice_removes_its_samples_and_files(api: httpx.AsyncClient, mock_app: InProcessApp) -> None:
    created = (await api.post("/v1/voices", json={"name": "short-lived"})).json()
    samples, rate = espeak(SPOKEN)
    await upload(api, created["id"], encode_audio(samples, rate, "wav"), "a.wav", SPOKEN)
    folder = mock_app.services.blobs.path(f"voices/{created['id']}")
    assert list(folder.glob("*.wav"))
    assert (await api.delete(f"/v1/voices/{created['id']}")).status_code == 204
    assert (await api.get(f"/v1/voices/{created['id']}")).status_code == 404
    assert not folder.exists()


def test_a_failure_after_the_file_is_written_leaves_nothing(mock_app: InProcessApp, voice: str) -> None:
    class Boom(Exception):
        pass

    def refuse_samples(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        # The database goes away just as the sample's row is written, after its file.
        if statement.lstrip().upper().startswith(f"INSERT INTO {VoiceSample.__tablename__.upper()}"):
            raise Boom("database went away")

    engine = mock_app.services.db.engine
    samples, rate = espeak(SPOKEN)
    event.listen(engine, "before_cursor_execute", refuse_samples)
    try:
        with pytest.raises(Boom):
            mock_app.services.voices.add_sample(voice, encode_audio(samples, rate, "wav"), SPOKEN)
    finally:
        event.remove(engine, "before_cursor_execute", refuse_samples)
    assert not list(mock_app.services.blobs.path(f"voices/{voice}").glob("*"))


async def test_export_and_import_round_trip(api: httpx.AsyncClient, voice: str) -> None:
    for text in (SPOKEN, "A second sample, with other words in it."):
        samples, rate = espeak(text)
        assert (await upload(api, voice, encode_audio(samples, rate, "wav"), "s.wav", text)).status_code == 201
    exported = await api.get(f"/v1/voices/{voice}/export")
    assert exported.headers["content-type"] == "application/zip"
    names = zipfile.ZipFile(io.BytesIO(exported.content)).namelist()
    assert "manifest.json" in names and len([n for n in names if n.endswith(".wav")]) == 2

    taken = await api.post("/v1/voices/import", files={"file": ("v.zip", exported.content)})
    assert taken.status_code == 409  # same name as the original
    imported = await api.post("/v1/voices/import", files={"file": ("v.zip", exported.content)}, data={"name": "copy"})
    assert imported.status_code == 201, imported.text
    original, copy = (await api.get(f"/v1/voices/{voice}")).json(), imported.json()
    try:
        assert [s["transcript"] for s in copy["samples"]] == [s["transcript"] for s in original["samples"]]
        for a, b in zip(original["samples"], copy["samples"], strict=True):
            assert b["duration_s"] == pytest.approx(a["duration_s"], abs=0.1)
    finally:
        await api.delete(f"/v1/voices/{copy['id']}")
    garbage = await api.post("/v1/voices/import", files={"file": ("v.zip", b"PK not really a zip")})
    assert garbage.status_code == 400


async def test_clone_in_one_step_is_all_or_nothing(api: httpx.AsyncClient) -> None:
    samples, rate = espeak(SPOKEN)
    bad = await api.post("/v1/voices/clone", data={"name": "never"}, files={"file": ("s.wav", _silence())})
    assert bad.status_code == 400
    assert (await api.get("/v1/voices/never")).status_code == 404
    good = await api.post(
        "/v1/voices/clone",
        data={"name": "one-step", "transcript": SPOKEN},
        files={"file": ("s.wav", encode_audio(samples, rate, "wav"))},
    )
    assert good.status_code == 201, good.text
    assert len(good.json()["voice"]["samples"]) == 1
    await api.delete("/v1/voices/one-step")


async def test_generation_paths_accept_a_library_voice_by_name_or_id(api: httpx.AsyncClient, voice: str) -> None:
    samples, rate = espeak(SPOKEN)
    await upload(api, voice, encode_audio(samples, rate, "wav"), "s.wav", SPOKEN)
    name = (await api.get(f"/v1/voices/{voice}")).json()["name"]
    for ref in (voice, name):
        # The mock engine copies the voice's sample: proof the right voice was found.
        response = await api.post(
            "/v1/audio/speech", json={"model": "mock", "input": "hello", "voice": ref, "response_format": "wav"}
        )
        assert response.status_code == 200, response.text
        audio, _ = decode_audio(response.content)
        assert audio.size / 22050 == pytest.approx(samples.size / rate, abs=0.3)
    piper = await api.post("/v1/audio/speech", json={"model": "piper", "input": "hello", "voice": voice})
    assert piper.status_code == 400 and "cannot speak in a cloned voice" in piper.json()["detail"]
    empty = (await api.post("/v1/voices", json={"name": "no-samples-yet"})).json()
    response = await api.post("/v1/audio/speech", json={"model": "mock", "input": "hello", "voice": empty["id"]})
    assert response.status_code == 400 and "no samples" in response.json()["detail"]
    await api.delete(f"/v1/voices/{empty['id']}")


async def test_library_names_and_builtin_names_are_separate_scopes(
    api: httpx.AsyncClient, mock_app: InProcessApp
) -> None:
    """A library voice may carry a built-in name; `alloy` named plainly stays the built-in preset."""
    created = await api.post("/v1/voices", json={"name": "Alloy"})
    assert created.status_code == 201, created.text
    voice_id = created.json()["id"]
    try:
        assert voice_id != "alloy"
        assert (await api.post("/v1/voices", json={"name": "alloy"})).status_code == 409  # unique among library voices
        assert (await api.get("/v1/voices/alloy")).json()["id"] == voice_id  # the library's own API: library names
        library = mock_app.services.voices
        assert library.resolve("alloy").id == "alloy" and library.resolve("alloy").presets  # the preset
        samples, rate = espeak(SPOKEN)
        await upload(api, voice_id, encode_audio(samples, rate, "wav"), "s.wav", SPOKEN)
        assert library.resolve(voice_id).id == voice_id and library.resolve(voice_id).samples  # by id: the profile
        spoken = await api.post("/v1/audio/speech", json={"model": "mock", "input": "hello", "voice": "alloy"})
        assert spoken.status_code == 200, spoken.text
        record = await api.get(f"/v1/history/{spoken.headers['X-Generation-Id']}")
        assert record.status_code == 200 and record.json()["voice_id"] == "alloy"
    finally:
        await api.delete(f"/v1/voices/{voice_id}")
