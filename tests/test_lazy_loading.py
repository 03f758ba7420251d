"""What loads when: speech needs only its engines; Whisper, the knowledge store, the embedder and the
characters' language model load on first use, and ``/health``'s ``loaded`` says which are in memory.

Memory itself is the benchmark's to measure (``parla bench``), never a test's: these check which
subsystems are loaded and which libraries are imported, not how much memory that takes."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.conftest import InProcessApp, mock_settings, serving_in_process, someone_saying, speech_body

LAZY_MODULES = (
    "faster_whisper",  # transcription
    "ctranslate2",
    "chromadb",  # the knowledge store
    "tokenizers",  # the MiniLM embedder
    "llama_cpp",  # the characters' language model
    "scipy",  # DSP of character recordings (speech, uploads and the cloning engine use NumPy's own)
    "av",  # decoding uploads, encoding anything but WAV
    "alembic",  # migrations
    "parselmouth",  # Praat: the Kokoro engine's time stretch (the voice conversion's PSOLA is NumPy)
)


def _imported_by(code: str) -> list[str]:
    """Which of ``LAZY_MODULES`` a fresh interpreter has imported after running ``code``."""
    probe = f"{code}\nimport json, sys\nprint(json.dumps([m for m in {LAZY_MODULES!r} if m in sys.modules]))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    return list(json.loads(out.strip().splitlines()[-1]))


def test_importing_the_app_imports_no_subsystem_a_request_has_not_needed() -> None:
    assert _imported_by("import parla.app") == []


def test_checking_a_recording_imports_neither_faster_whisper_nor_scipy() -> None:
    """A voice sample's upload finds its speech (Silero, run from faster-whisper's model file) and
    measures its loudness without loading faster-whisper, CTranslate2, the tokenizers or scipy."""
    code = (
        "import numpy as np\n"
        "from parla.audio.quality import analyse\n"
        "t = np.arange(32000) / 16000\n"
        "report, spans = analyse((0.3 * np.sin(2 * np.pi * 150 * t)).astype(np.float32), 22050)\n"
        "assert report.loudness_lufs > -30"
    )
    assert _imported_by(code) == []


def test_converting_a_voice_imports_no_praat_and_no_scipy() -> None:
    code = (
        "import numpy as np\n"
        "from parla.engines import conversion\n"
        "from parla.engines.clone import preset_adaptation\n"
        "t = np.arange(22050) / 22050\n"
        "x = (0.3 * np.sign(np.sin(2 * np.pi * 110 * t))).astype(np.float32)\n"
        "assert len(conversion.convert(x, 22050, preset_adaptation(pitch=1.3))) == len(x)"
    )
    assert _imported_by(code) == []


def test_a_database_already_migrated_starts_without_alembic(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'parla.db'}"
    first = f"from parla.store.db import Database\nDatabase({url!r}).migrate()"
    assert "alembic" in _imported_by(first)  # a new database is migrated by Alembic
    assert _imported_by(first) == []  # the second start finds it at the newest revision


@pytest.fixture(scope="module")
async def fresh_app(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[InProcessApp]:
    """An app of this module's own: what is loaded depends on what its requests needed."""
    async with serving_in_process(mock_settings(tmp_path_factory.mktemp("lazy"))) as app:
        yield app


NOTHING_ELSE = {"whisper": [], "knowledge_store": False, "embedder": False, "language_models": []}


async def test_speech_loads_no_other_subsystem_and_health_says_what_is_loaded(fresh_app: InProcessApp) -> None:
    api = fresh_app.client
    for voice in ("joe", "alloy"):
        for fmt in ("pcm", "mp3"):
            response = await api.post("/v1/audio/speech", json=speech_body(voice=voice, response_format=fmt))
            assert response.status_code == 200, response.text
    health = (await api.get("/health")).json()
    loaded = health["loaded"]
    assert "mock" in loaded["engines"]
    assert {key: loaded[key] for key in NOTHING_ELSE} == NOTHING_ELSE
    assert set(loaded["engines"]) == {e["name"] for e in health["engines"] if e["loaded"]}
    assert health["llm_runtime"]["state"]  # the existing fields stay


@pytest.mark.model  # loads the real Whisper tiny.en
async def test_whisper_loads_at_the_first_transcription_and_says_so(
    fresh_app: InProcessApp, caplog: pytest.LogCaptureFixture
) -> None:
    api = fresh_app.client
    assert (await api.get("/health")).json()["loaded"]["whisper"] == []
    with caplog.at_level(logging.INFO, logger="parla.services.transcription"):
        response = await api.post(
            "/v1/audio/transcriptions",
            files={"file": ("a.wav", someone_saying("Hello there, how are you?"))},
            data={"model": "whisper-1", "language": "en"},  # English: the default tiny.en alone
        )
    assert response.status_code == 200, response.text
    assert "loading Whisper tiny.en for transcription (first use)" in caplog.text
    loaded = (await api.get("/health")).json()["loaded"]
    assert loaded["whisper"] == ["tiny.en"]
    assert {key: loaded[key] for key in NOTHING_ELSE if key != "whisper"} == {
        key: value for key, value in NOTHING_ELSE.items() if key != "whisper"
    }
