"""The model microservice API's mock engine: zero compute (or a set delay,
``PARLA_ENGINES__MOCK__DELAY_S`` or ``PARLA_MOCK_DELAY_S``), for tests and UI development.

Single-speaker synthesis copies the voice's reference file, so a dialogue, spoken turn by turn,
concatenates the voice files. A voice without a file gives silence as long as the text would take
to read. All parameters are accepted and ignored.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import numpy as np
from pydantic import Field

from parla.audio.decode import decode_audio
from parla.engines.base import AudioChunk, Capabilities, Engine, EngineSettings, SynthesisRequest

SECONDS_PER_CHAR = 0.065
"""Reading pace used for the silence of a voice without a file (about 15 characters a second)."""


class MockSettings(EngineSettings):
    """``PARLA_ENGINES__MOCK__*`` (and ``PARLA_MOCK_DELAY_S``, the older name of ``delay_s``)."""

    delay_s: float = Field(default=0.0, ge=0, le=60)
    """Seconds to wait per request, for the model microservice API's "realistic processing delays"."""


class MockEngine(Engine):
    name = "mock"
    description = "Mock engine (model microservice API): copies the voice file, concatenates voice files for dialogue."
    capabilities = Capabilities(sample_rate=22050, languages=("*",), streaming=True, dialogue=True, cloning=True)
    settings_model = MockSettings
    settings: MockSettings

    def resolve_parameters(self, given: object, preset: object = None) -> dict[str, object]:
        return {}

    def synthesize(self, request: SynthesisRequest) -> Iterator[AudioChunk]:
        if self.settings.delay_s:
            time.sleep(self.settings.delay_s)  # a stand-in for a model's time, for UI and timeout tests
        rate = self.capabilities.sample_rate
        if request.voice.samples:
            path, _ = request.voice.samples[0]
            samples, _ = decode_audio(path, rate)
            yield AudioChunk(samples, rate)
            return
        seconds = max(0.2, len(request.text) * SECONDS_PER_CHAR / request.speed)
        yield AudioChunk(np.zeros(int(seconds * rate), dtype=np.float32), rate)
