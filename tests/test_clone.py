"""The cloning engine: a cloned voice moves toward its speaker (by the judge), stays
intelligible (by Whisper), and its conditioning is learned once and cached."""

from __future__ import annotations

import os
from pathlib import Path

import httpx
import numpy as np
import pytest
from rich.console import Console

from parla.bench import run_clone_bench
from parla.engines.clone import CloneEngine
from parla.services import Services
from tests.conftest import LiveServer

DEV_VOICES = Path(os.environ.get("PARLA_DEV_VOICES", Path(__file__).parents[1] / ".cache" / "dev-voices"))


@pytest.fixture(scope="module")
def dev_voices() -> Path:
    if not (DEV_VOICES / "asterisk_allison" / "judge.wav").is_file():
        pytest.fail(f"the development voices are missing: run `bash ../shared/eval/dev-voices.sh {DEV_VOICES}`")
    return DEV_VOICES


def test_a_cloned_voice_moves_toward_its_speaker_and_stays_intelligible(dev_voices: Path) -> None:
    # Three speakers of different kinds: a recorded person without a transcript (Whisper makes
    # it), a diphone voice and a unit-selection voice. The judge is used here, never by the engine.
    rows = run_clone_bench(
        dev_voices,
        console=Console(width=160),
        only=["asterisk_allison", "festival_kal_diphone", "flite_rms"],
    )
    sim = np.mean([r.sim for r in rows])
    sim_plain = np.mean([r.sim_plain for r in rows])
    margin = np.mean([r.margin for r in rows])
    wer, wer_plain = np.mean([r.wer for r in rows]), np.mean([r.wer_plain for r in rows])
    assert sim > sim_plain + 0.1, (sim, sim_plain)
    assert margin > 0, margin
    assert wer <= max(1.5 * wer_plain, wer_plain + 0.15), (wer, wer_plain)
    assert all(r.rtf < 0.5 for r in rows)


def test_conditioning_is_learned_once_and_cached(client: httpx.Client, server: LiveServer, dev_voices: Path) -> None:
    services: Services = server.services
    engine = services.engines.get("clone")
    assert isinstance(engine, CloneEngine)
    ref = dev_voices / "flite_rms"
    created = client.post(
        "/v1/voices/clone",
        data={"name": "cached-voice", "transcript": (ref / "ref.txt").read_text()},
        files={"file": ("ref.wav", (ref / "ref.wav").read_bytes())},
    )
    assert created.status_code == 201, created.text
    voice_id = created.json()["voice"]["id"]
    try:
        body = {
            "model": "tts-1",
            "voice": "cached-voice",
            "input": "A pot of tea helps to pass the evening.",
            "response_format": "wav",
        }
        before = dict(engine.stats)
        first = client.post("/v1/audio/speech", json=body)
        second = client.post("/v1/audio/speech", json={**body, "input": "Smoky fires lack flame and heat."})
        assert first.status_code == second.status_code == 200
        # Learned once (in the background after the upload, or by the first request), then reused.
        assert engine.stats["adaptations"] - before["adaptations"] <= 1
        assert engine.stats["memory_hits"] - before["memory_hits"] >= 1
        key = services.voices.resolve(voice_id).key
        cached = engine.cache_path(key)
        assert cached.is_file()
        # A fresh engine (a restarted server) finds it on disk instead of learning it again.
        fresh = CloneEngine(services.settings)
        fresh.adaptation_for(services.voices.resolve(voice_id))
        assert fresh.stats == {"memory_hits": 0, "disk_hits": 1, "adaptations": 0}
    finally:
        client.delete(f"/v1/voices/{voice_id}")
    assert not cached.exists()  # deleting the voice removes its cached conditioning
