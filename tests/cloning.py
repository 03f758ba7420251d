"""The cloning protocol of ``docs/cloning-evaluation.md`` as the tests run it: speakers of the development
set cloned through the API (``POST /v1/voices/clone``, then ``POST /v1/audio/speech``), scored by the
judge (resemblyzer) and by Whisper. ``parla bench clone`` runs the same protocol inside the server's
services; the tests measure from the outside, as a client would."""

from __future__ import annotations

import time
from dataclasses import dataclass

import httpx
import numpy as np
import numpy.typing as npt

from parla.audio import decode_audio, resample
from parla.evaluation import TEST_SENTENCES, Judge, Speaker, word_error_rate
from tests.conftest import Listener

Spoken = tuple[str, npt.NDArray[np.float32], int]
"""A test sentence, and the audio of it with its sample rate."""


@dataclass(frozen=True)
class Cloned:
    """One speaker's figures, each the mean over the test sentences."""

    speaker: str
    sim_plain: float
    """Similarity to the speaker of the plain bundled voice."""
    sim: float
    """Similarity to the speaker of the cloned voice."""
    margin: float
    """``sim`` less the highest similarity to any other speaker of the set."""
    wer_plain: float
    wer: float
    rtf: float
    """Seconds of synthesis (the request, whole) per second of cloned speech."""


class CloneScorer:
    """Clones speakers through ``api`` and scores them against every speaker of ``speakers``."""

    def __init__(self, api: httpx.AsyncClient, speakers: list[Speaker], listener: Listener) -> None:
        self.api = api
        self.speakers = {s.name: s for s in speakers}
        self.listener = listener
        self.judge = Judge()
        self.judged = {s.name: self.judge.embed_file(s.judge) for s in speakers}

    async def speak(self, voice: str, model: str) -> tuple[list[Spoken], float]:
        """The test sentences in ``voice``, and the real-time factor of making them."""
        outputs: list[Spoken] = []
        elapsed = seconds = 0.0
        for sentence in TEST_SENTENCES:
            body = {"model": model, "voice": voice, "input": sentence, "response_format": "wav", "seed": 1}
            start = time.perf_counter()
            response = await self.api.post("/v1/audio/speech", json=body)
            elapsed += time.perf_counter() - start
            assert response.status_code == 200, response.text
            audio, rate = decode_audio(response.content)
            seconds += audio.size / rate
            outputs.append((sentence, audio, rate))
        return outputs, elapsed / seconds

    def score(self, outputs: list[Spoken], speaker: str) -> tuple[float, float, float]:
        """Mean similarity to ``speaker``, margin over the others, and word error rate."""
        sims, margins, wers = [], [], []
        for sentence, audio, rate in outputs:
            embedding = self.judge.embed(audio, rate)
            own = self.judge.similarity(embedding, self.judged[speaker])
            others = [self.judge.similarity(embedding, e) for name, e in self.judged.items() if name != speaker]
            sims.append(own)
            margins.append(own - max(others) if others else 0.0)
            # the protocol's Whisper: the whole clip, no VAD in front
            wers.append(word_error_rate(sentence, self.listener.transcribe(resample(audio, rate, 16_000))))
        return float(np.mean(sims)), float(np.mean(margins)), float(np.mean(wers))

    async def clone(self, names: list[str]) -> list[Cloned]:
        """Clone each speaker named (from ``ref.wav``, with ``ref.txt`` where there is one, else
        Whisper's transcript) and score it beside the plain voice."""
        plain, _ = await self.speak("joe", "piper")
        rows = []
        for name in names:
            speaker = self.speakers[name]
            form = {"name": f"cloned-{name}"} | ({"transcript": speaker.transcript} if speaker.transcript else {})
            created = await self.api.post(
                "/v1/voices/clone", data=form, files={"file": ("ref.wav", speaker.ref.read_bytes())}
            )
            assert created.status_code == 201, created.text
            voice_id = created.json()["voice"]["id"]
            try:
                # The voice's adaptation is learned before the timed requests (the benchmark times it apart).
                warm = {"model": "clone", "voice": voice_id, "input": "Hello.", "response_format": "wav"}
                assert (await self.api.post("/v1/audio/speech", json=warm)).status_code == 200
                outputs, rtf = await self.speak(voice_id, "clone")
            finally:
                await self.api.delete(f"/v1/voices/{voice_id}")
            sim, margin, wer = self.score(outputs, name)
            sim_plain, _, wer_plain = self.score(plain, name)
            rows.append(Cloned(name, sim_plain, sim, margin, wer_plain, wer, rtf))
        return rows
