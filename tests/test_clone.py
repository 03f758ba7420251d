"""The cloning engine: a cloned voice moves toward its speaker (by the judge), stays
intelligible (by Whisper), and its conditioning is learned once and cached. All on the real engines
(``model``); the development voices come from ``scripts/dev-voices.sh``."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from parla.engines.base import AudioChunk
from parla.engines.clone import CloneEngine
from parla.evaluation import Speaker
from parla.services import Services
from parla.services.speech import SpeechOptions
from parla.settings import Settings
from tests.cloning import CloneScorer
from tests.conftest import Listener, LiveServer, natural_length, wer

pytestmark = pytest.mark.model

DEV_VOICES = Path(os.environ.get("PARLA_DEV_VOICES", Path(__file__).parents[1] / ".cache" / "dev-voices"))


@pytest.fixture(scope="module")
def dev_voices() -> Path:
    if not (DEV_VOICES / "asterisk_allison" / "judge.wav").is_file():
        pytest.fail(
            f"the development voices are missing: run `bash scripts/dev-voices.sh {DEV_VOICES}` (or `make test`)"
        )
    return DEV_VOICES


async def test_a_cloned_voice_moves_toward_its_speaker_and_stays_intelligible(
    server: LiveServer, dev_voices: Path, listener: Listener
) -> None:
    # Three speakers of different kinds: a recorded person without a transcript (Whisper makes
    # it), a diphone voice and a unit-selection voice. The judge is used here, never by the engine.
    async with httpx.AsyncClient(base_url=server.url, timeout=300) as api:
        scorer = CloneScorer(api, Speaker.load_all(dev_voices), listener)
        rows = await scorer.clone(["asterisk_allison", "festival_kal_diphone", "flite_rms"])
    sim = np.mean([r.sim for r in rows])
    sim_plain = np.mean([r.sim_plain for r in rows])
    margin = np.mean([r.margin for r in rows])
    wer, wer_plain = np.mean([r.wer for r in rows]), np.mean([r.wer_plain for r in rows])
    assert sim > sim_plain + 0.1, (sim, sim_plain)
    assert margin > 0, margin
    assert wer <= max(1.5 * wer_plain, wer_plain + 0.15), (wer, wer_plain)
    assert all(r.rtf < 0.5 for r in rows), rows


@pytest.mark.slow
def test_the_clone_benchmark_prints_its_table(dev_voices: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "parla", "bench", "clone", str(dev_voices), "--limit", "1"],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "voice cloning on" in result.stdout and "SIM clone" in result.stdout
    first = min(p.name for p in dev_voices.iterdir() if (p / "ref.wav").is_file() and (p / "judge.wav").is_file())
    assert first in result.stdout and "mean" in result.stdout


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
        fresh = CloneEngine.from_settings(services.settings)
        fresh.adaptation_for(services.voices.resolve(voice_id))
        assert fresh.stats == {"memory_hits": 0, "disk_hits": 1, "adaptations": 0}
    finally:
        client.delete(f"/v1/voices/{voice_id}")
    assert not cached.exists()  # deleting the voice removes its cached conditioning


def test_a_voice_from_a_second_of_speech_still_speaks(
    client: httpx.Client, dev_voices: Path, listener: Listener
) -> None:
    # 1.2 s is a valid sample (0.5-60 s) but too little to pair enough frames with Piper's
    # reading: the voice learns only pitch, pace and level offsets, and must still speak.
    from parla.audio.decode import decode_audio
    from parla.audio.encode import encode_audio

    audio, rate = decode_audio(dev_voices / "flite_rms" / "ref.wav")
    clip = encode_audio(audio[: int(1.2 * rate)], rate, "wav")
    created = client.post(
        "/v1/voices/clone", data={"name": "one-second", "transcript": "The boy was"}, files={"file": ("a.wav", clip)}
    )
    assert created.status_code == 201, created.text
    try:
        text = "A pot of tea helps to pass the evening."
        spoken = client.post(
            "/v1/audio/speech",
            json={"model": "tts-1", "voice": "one-second", "input": text, "response_format": "wav", "seed": 1},
        )
        assert spoken.status_code == 200, spoken.text
        samples, out_rate = decode_audio(spoken.content)
        shortest, longest = natural_length(text)
        assert shortest <= samples.size / out_rate <= longest
        assert wer(text, listener.transcribe(spoken.content)) <= 0.3
    finally:
        client.delete("/v1/voices/one-second")


async def _collect(chunks: AsyncIterator[AudioChunk]) -> list[AudioChunk]:
    return [chunk async for chunk in chunks]


def _split_at_pause(audio: np.ndarray, rate: int) -> tuple[np.ndarray, np.ndarray]:
    """Two recordings from one: cut at the quietest 100 ms of the middle third."""
    win = rate // 10
    start, stop = len(audio) // 3, 2 * len(audio) // 3
    energy = np.convolve(audio[start:stop] ** 2, np.ones(win), mode="valid")
    cut = start + int(np.argmin(energy)) + win // 2
    return audio[:cut], audio[cut:]


def test_more_samples_help_not_hurt(dev_voices: Path, tmp_path: Path) -> None:
    # A speaker's reference cut in two, with transcripts from Whisper (which mishears some words,
    # as it would for a user): the voice learned from both halves must come at least as close to
    # the speaker (by the judge) as one learned from either half alone does on average. The judge's
    # figures move by about 0.01 with the smallest change in Piper's rendition, hence the
    # tolerances; a pooling that mixed up the samples' frames loses several hundredths. The
    # adaptation must also survive the on-disk cache unchanged.
    from parla.audio.decode import decode_audio
    from parla.audio.encode import encode_audio
    from parla.engines import conversion
    from parla.evaluation import TEST_SENTENCES, Judge
    from parla.services.voices import VoiceCreate

    judge = Judge()
    services = Services.build(Settings(data_dir=tmp_path, database_url=None, _env_file=None))
    try:
        engine = services.engines.get("clone")
        assert isinstance(engine, CloneEngine)
        gains = []
        for speaker in ("flite_awb", "festival_kal_diphone"):
            audio, rate = decode_audio(dev_voices / speaker / "ref.wav")
            first, second = (encode_audio(half, rate, "wav") for half in _split_at_pause(audio, rate))
            target = judge.embed_file(dev_voices / speaker / "judge.wav")
            sims = {}
            for label, recordings in (("first", [first]), ("second", [second]), ("both", [first, second])):
                voice = services.voices.create(VoiceCreate(name=f"{speaker}-{label}"))
                for recording in recordings:
                    services.voices.add_sample(voice.id, recording)
                adaptation = engine.adaptation_for(services.voices.resolve(voice.id))
                piper = engine._render_plain(TEST_SENTENCES[0])
                restored = conversion.Adaptation.from_bytes(adaptation.to_bytes())
                assert np.array_equal(
                    conversion.convert(piper, 22050, adaptation), conversion.convert(piper, 22050, restored)
                )
                outputs = []
                for sentence in TEST_SENTENCES:
                    options = SpeechOptions(
                        input=sentence, voice=voice.id, model="clone", response_format="wav", seed=1
                    )
                    plan = services.speech.prepare(options, source="test")
                    outputs.append(
                        np.concatenate([c.samples for c in asyncio.run(_collect(services.speech.audio(plan)))])
                    )
                sims[label] = np.mean([judge.similarity(judge.embed(o, 22050), target) for o in outputs])
            gains.append(sims["both"] - (sims["first"] + sims["second"]) / 2)
        assert np.mean(gains) > -0.015, gains
        assert min(gains) > -0.03, gains
    finally:
        services.close()


@pytest.mark.parametrize("voice", ["alloy", "cloned"])
def test_overlapped_pieces_say_exactly_what_each_piece_says_alone(voice: str, dev_voices: Path, tmp_path: Path) -> None:
    """``synthesize_pieces`` renders the next piece with Piper while converting this one: the audio
    must be the same, piece for piece, as speaking each piece alone."""
    from parla.engines.base import EngineContext, SynthesisRequest, VoiceRef
    from parla.engines.clone import VOICE_PRESETS

    engine = CloneEngine(context=EngineContext(data_dir=tmp_path))
    speaker = next(s for s in Speaker.load_all(dev_voices) if s.name == "flite_slt")
    ref = (
        VoiceRef("alloy", presets={"clone": VOICE_PRESETS["alloy"]})
        if voice == "alloy"
        else VoiceRef("slt", samples=((speaker.ref, speaker.transcript),), key="slt-pieces")
    )
    params = engine.resolve_parameters({}, ref.preset("clone"))
    texts = ["The rainbow is a division of white light.", "It takes the shape of a long round arch.", "Look up."]
    requests = [SynthesisRequest(text=t, voice=ref, seed=i, parameters=params) for i, t in enumerate(texts)]
    together = [np.concatenate([c.samples for c in piece]) for piece in engine.synthesize_pieces(requests)]
    alone = [np.concatenate([c.samples for c in engine.synthesize(r)]) for r in requests]
    assert len(together) == len(alone) == 3
    for a, b in zip(together, alone, strict=True):
        assert a.size > 0.3 * 22_050 and np.array_equal(a, b)
