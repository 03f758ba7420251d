"""The voice library over HTTP: profiles, samples in any format, by base64 or URL, validation,
transcripts, export and import, and nothing half-written when something fails."""

from __future__ import annotations

import base64
import functools
import http.server
import io
import subprocess
import threading
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import av
import httpx
import numpy as np
import numpy.typing as npt
import pytest

from parla.audio import decode_audio, encode_audio
from parla.net import FetchError, fetch
from tests.conftest import LiveServer, wer

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
def voice(client: httpx.Client, request: pytest.FixtureRequest) -> Iterator[str]:
    name = f"test-{request.node.name}"[:90]
    response = client.post("/v1/voices", json={"name": name, "description": "made by a test"})
    assert response.status_code == 201, response.text
    voice_id: str = response.json()["id"]
    yield voice_id
    client.delete(f"/v1/voices/{voice_id}")


def upload(
    client: httpx.Client, voice: str, data: bytes, filename: str, transcript: str | None = None
) -> httpx.Response:
    form = {"transcript": transcript} if transcript else {}
    return client.post(f"/v1/voices/{voice}/samples", files={"file": (filename, data)}, data=form)


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
def test_samples_upload_in_any_format_and_are_stored_clean(
    client: httpx.Client, server: LiveServer, voice: str, filename: str, container: str, codec: str | None
) -> None:
    samples, rate = espeak(SPOKEN)
    # Quiet, with silence around it, as a real recording often is.
    padded = np.concatenate([np.zeros(rate), samples * 0.2, np.zeros(rate)]).astype(np.float32)
    data = in_container(padded, rate, container, codec) if codec else encode_audio(padded, rate, container)
    response = upload(client, voice, data, filename, transcript=SPOKEN)
    assert response.status_code == 201, response.text
    sample = response.json()["sample"]
    assert sample["transcript"] == SPOKEN and sample["transcript_source"] == "user"
    assert sample["report"]["speech_s"] > 3
    stored, stored_rate = decode_audio(client.get(f"/v1/voices/{voice}/samples/{sample['id']}/audio").content)
    assert stored_rate == 24000
    # Silence trimmed (two seconds of it), loudness normalised.
    assert samples.size / rate - 0.2 < stored.size / stored_rate < samples.size / rate + 0.5
    assert 0.3 < float(np.max(np.abs(stored))) <= 1.0


def test_a_missing_transcript_is_made_by_whisper_and_can_be_corrected(client: httpx.Client, voice: str) -> None:
    # A clearer speaker than espeak-ng: the bundled neural voice.
    spoken = client.post("/v1/audio/speech", json={"input": SPOKEN, "voice": "joe", "response_format": "flac"})
    sample = upload(client, voice, spoken.content, "a.flac").json()["sample"]
    assert sample["transcript_source"] == "whisper"
    assert wer(SPOKEN, sample["transcript"]) < 0.3, sample["transcript"]
    corrected = client.patch(f"/v1/voices/{voice}/samples/{sample['id']}", json={"transcript": SPOKEN})
    assert corrected.json()["transcript"] == SPOKEN and corrected.json()["transcript_source"] == "user"


def test_samples_by_base64_and_data_url(client: httpx.Client, voice: str) -> None:
    samples, rate = espeak(SPOKEN)
    encoded = base64.b64encode(encode_audio(samples, rate, "mp3")).decode()
    for payload in (encoded, f"data:audio/mpeg;base64,{encoded}"):
        response = client.post(f"/v1/voices/{voice}/samples", json={"audio_base64": payload, "transcript": SPOKEN})
        assert response.status_code == 201, response.text
    assert len(client.get(f"/v1/voices/{voice}").json()["samples"]) == 2
    bad = client.post(f"/v1/voices/{voice}/samples", json={"audio_base64": "not base64!!", "transcript": "x"})
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


def test_samples_by_url_when_private_addresses_are_allowed(
    client: httpx.Client, server: LiveServer, voice: str, file_server: tuple[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    base, root = file_server
    samples, rate = espeak(SPOKEN)
    (root / "voice.flac").write_bytes(encode_audio(samples, rate, "flac"))
    body = {"url": f"{base}/voice.flac", "transcript": SPOKEN}
    refused = client.post(f"/v1/voices/{voice}/samples", json=body)
    assert refused.status_code == 400 and "non-public address" in refused.json()["detail"]
    monkeypatch.setattr(server.services.settings, "url_fetch_allow_private", True)
    response = client.post(f"/v1/voices/{voice}/samples", json=body)
    assert response.status_code == 201, response.text
    missing = client.post(f"/v1/voices/{voice}/samples", json={"url": f"{base}/nothing.wav"})
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


def _ten_minutes() -> bytes:
    samples, rate = espeak(SPOKEN)
    long = np.tile(samples, int(600 * rate / samples.size) + 1)
    return encode_audio(long, rate, "mp3")


def _truncated() -> bytes:
    samples, rate = espeak(SPOKEN)
    return encode_audio(samples, rate, "mp3")[:600]


@pytest.mark.parametrize(
    ("make", "filename", "status", "reason"),
    [
        (_silence, "silence.wav", 400, "silent"),
        (_noise, "noise.wav", 400, "no speech"),
        (_ten_minutes, "lecture.mp3", 400, "longer than 60 s"),
        (_truncated, "cut.mp3", 400, "lasts"),
        (lambda: b"Dear diary, today I recorded nothing.\n" * 20, "notes.wav", 400, "not audio"),
        (lambda: b"", "empty.wav", 400, "not audio"),
        (lambda: encode_audio(espeak("Hi")[0][:3000], 22050, "wav"), "short.wav", 400, "at least 0.5 s"),
    ],
)
def test_unusable_audio_gets_a_4xx_that_says_why(
    client: httpx.Client, server: LiveServer, voice: str, make: Any, filename: str, status: int, reason: str
) -> None:
    response = upload(client, voice, make(), filename, transcript="whatever")
    assert response.status_code == status, response.text
    assert reason in response.json()["detail"]
    assert client.get(f"/v1/voices/{voice}").json()["samples"] == []
    assert not list(server.services.blobs.path(f"voices/{voice}").glob("*.wav"))


def test_speech_without_recognisable_words_needs_its_transcript(
    client: httpx.Client, server: LiveServer, voice: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Speech that Whisper makes no words of (humming, a language it does not know) has nothing for
    # cloning to pair with Piper's reading: the upload asks for the transcript and keeps nothing.
    from parla.services.transcription import Transcript

    def hears_nothing(*args: Any, **kwargs: Any) -> Transcript:
        return Transcript(text=" ", language="en", duration=1.0, segments=[])

    monkeypatch.setattr(server.services.voices.transcriber, "transcribe", hears_nothing)
    samples, rate = espeak(SPOKEN)
    response = upload(client, voice, encode_audio(samples, rate, "wav"), "hum.wav")
    assert response.status_code == 400, response.text
    assert "send its transcript" in response.json()["detail"]
    assert client.get(f"/v1/voices/{voice}").json()["samples"] == []
    assert upload(client, voice, encode_audio(samples, rate, "wav"), "hum.wav", SPOKEN).status_code == 201


def test_poor_audio_is_accepted_with_warnings(client: httpx.Client, voice: str) -> None:
    samples, rate = espeak(SPOKEN)
    clipped = np.clip(samples * 8, -1, 1)
    noisy = clipped + np.random.default_rng(1).standard_normal(samples.size).astype(np.float32) * 0.1
    response = upload(client, voice, encode_audio(noisy.astype(np.float32), rate, "wav"), "loud.wav", SPOKEN)
    assert response.status_code == 201, response.text
    warnings = " ".join(response.json()["warnings"])
    assert "clipped" in warnings and "noise" in warnings


def test_upload_over_the_size_limit_is_refused(
    client: httpx.Client, server: LiveServer, voice: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(server.services.settings, "max_upload_bytes", 10_000)
    samples, rate = espeak(SPOKEN)
    response = upload(client, voice, encode_audio(samples, rate, "wav"), "big.wav", SPOKEN)
    assert response.status_code == 413


def test_profiles_crud_and_names(client: httpx.Client, voice: str) -> None:
    renamed = client.patch(f"/v1/voices/{voice}", json={"name": "Renamed Voice", "tags": ["calm"]})
    assert renamed.status_code == 200 and renamed.json()["name"] == "Renamed Voice"
    assert client.get("/v1/voices/renamed voice").json()["id"] == voice  # by name, any case
    assert client.post("/v1/voices", json={"name": "Renamed Voice"}).status_code == 409
    assert client.post("/v1/voices", json={"name": ""}).status_code == 422
    assert client.get("/v1/voices/nobody-at-all").status_code == 404
    assert client.delete("/v1/voices/nobody-at-all").status_code == 404
    listed = {v["name"] for v in client.get("/v1/voices").json()["voices"]}
    assert {"alloy", "Renamed Voice"} <= listed


def test_deleting_a_voice_removes_its_samples_and_files(client: httpx.Client, server: LiveServer) -> None:
    created = client.post("/v1/voices", json={"name": "short-lived"}).json()
    samples, rate = espeak(SPOKEN)
    upload(client, created["id"], encode_audio(samples, rate, "wav"), "a.wav", SPOKEN)
    folder = server.services.blobs.path(f"voices/{created['id']}")
    assert list(folder.glob("*.wav"))
    assert client.delete(f"/v1/voices/{created['id']}").status_code == 204
    assert client.get(f"/v1/voices/{created['id']}").status_code == 404
    assert not folder.exists()


def test_a_failure_after_the_file_is_written_leaves_nothing(
    client: httpx.Client, server: LiveServer, voice: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from parla.store import models

    class Boom(Exception):
        pass

    def explode(*_: Any, **__: Any) -> None:
        raise Boom("database went away")

    monkeypatch.setattr(models.VoiceSample, "__init__", explode)
    samples, rate = espeak(SPOKEN)
    with pytest.raises(Boom):
        server.services.voices.add_sample(voice, encode_audio(samples, rate, "wav"), SPOKEN)
    assert not list(server.services.blobs.path(f"voices/{voice}").glob("*"))


def test_export_and_import_round_trip(client: httpx.Client, voice: str) -> None:
    for text in (SPOKEN, "A second sample, with other words in it."):
        samples, rate = espeak(text)
        assert upload(client, voice, encode_audio(samples, rate, "wav"), "s.wav", text).status_code == 201
    exported = client.get(f"/v1/voices/{voice}/export")
    assert exported.headers["content-type"] == "application/zip"
    names = zipfile.ZipFile(io.BytesIO(exported.content)).namelist()
    assert "manifest.json" in names and len([n for n in names if n.endswith(".wav")]) == 2

    taken = client.post("/v1/voices/import", files={"file": ("v.zip", exported.content)})
    assert taken.status_code == 409  # same name as the original
    imported = client.post("/v1/voices/import", files={"file": ("v.zip", exported.content)}, data={"name": "copy"})
    assert imported.status_code == 201, imported.text
    original, copy = client.get(f"/v1/voices/{voice}").json(), imported.json()
    try:
        assert [s["transcript"] for s in copy["samples"]] == [s["transcript"] for s in original["samples"]]
        for a, b in zip(original["samples"], copy["samples"], strict=True):
            assert b["duration_s"] == pytest.approx(a["duration_s"], abs=0.1)
    finally:
        client.delete(f"/v1/voices/{copy['id']}")
    garbage = client.post("/v1/voices/import", files={"file": ("v.zip", b"PK not really a zip")})
    assert garbage.status_code == 400


def test_clone_in_one_step_is_all_or_nothing(client: httpx.Client) -> None:
    samples, rate = espeak(SPOKEN)
    bad = client.post("/v1/voices/clone", data={"name": "never"}, files={"file": ("s.wav", _silence())})
    assert bad.status_code == 400
    assert client.get("/v1/voices/never").status_code == 404
    good = client.post(
        "/v1/voices/clone",
        data={"name": "one-step", "transcript": SPOKEN},
        files={"file": ("s.wav", encode_audio(samples, rate, "wav"))},
    )
    assert good.status_code == 201, good.text
    assert len(good.json()["voice"]["samples"]) == 1
    client.delete("/v1/voices/one-step")


def test_generation_paths_accept_a_library_voice_by_name_or_id(client: httpx.Client, voice: str) -> None:
    samples, rate = espeak(SPOKEN)
    upload(client, voice, encode_audio(samples, rate, "wav"), "s.wav", SPOKEN)
    name = client.get(f"/v1/voices/{voice}").json()["name"]
    for ref in (voice, name):
        # The mock engine copies the voice's sample: proof the right voice was found.
        response = client.post(
            "/v1/audio/speech", json={"model": "mock", "input": "hello", "voice": ref, "response_format": "wav"}
        )
        assert response.status_code == 200, response.text
        audio, _ = decode_audio(response.content)
        assert audio.size / 22050 == pytest.approx(samples.size / rate, abs=0.3)
    piper = client.post("/v1/audio/speech", json={"model": "piper", "input": "hello", "voice": voice})
    assert piper.status_code == 400 and "cannot speak in a cloned voice" in piper.json()["detail"]
    empty = client.post("/v1/voices", json={"name": "no-samples-yet"}).json()
    response = client.post("/v1/audio/speech", json={"model": "mock", "input": "hello", "voice": empty["id"]})
    assert response.status_code == 400 and "no samples" in response.json()["detail"]
    client.delete(f"/v1/voices/{empty['id']}")


def test_library_names_and_builtin_names_are_separate_scopes(client: httpx.Client, server: LiveServer) -> None:
    """A library voice may carry a built-in name; `alloy` named plainly stays the built-in preset."""
    created = client.post("/v1/voices", json={"name": "Alloy"})
    assert created.status_code == 201, created.text
    voice_id = created.json()["id"]
    try:
        assert voice_id != "alloy"
        assert client.post("/v1/voices", json={"name": "alloy"}).status_code == 409  # unique among library voices
        assert client.get("/v1/voices/alloy").json()["id"] == voice_id  # the library's own API: library names
        library = server.services.voices
        assert library.resolve("alloy").id == "alloy" and library.resolve("alloy").presets  # the preset
        samples, rate = espeak(SPOKEN)
        upload(client, voice_id, encode_audio(samples, rate, "wav"), "s.wav", SPOKEN)
        assert library.resolve(voice_id).id == voice_id and library.resolve(voice_id).samples  # by id: the profile
        spoken = client.post("/v1/audio/speech", json={"model": "mock", "input": "hello", "voice": "alloy"})
        assert spoken.status_code == 200, spoken.text
        record = client.get(f"/v1/history/{spoken.headers['X-Generation-Id']}")
        assert record.status_code == 200 and record.json()["voice_id"] == "alloy"
    finally:
        client.delete(f"/v1/voices/{voice_id}")
