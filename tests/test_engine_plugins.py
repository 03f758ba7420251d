"""The engine seam's front door: a third-party package declares an engine under the
``parla.engines`` entry point, and every API can use it; a broken plugin is reported, not fatal."""

from __future__ import annotations

import importlib
import textwrap
from pathlib import Path

import pytest

from parla.audio import decode_audio
from parla.engines import EngineRegistry
from tests.conftest import mock_settings, serving_in_process

PLUGIN = '''
"""A package of someone else's: an engine that hums one beep per word."""
from collections.abc import Iterator

import numpy as np

from parla.engines.base import AudioChunk, Capabilities, Engine, Param, SynthesisRequest


class HumEngine(Engine):
    name = "hum"
    description = "Hums a beep per word (a third-party test engine)."
    capabilities = Capabilities(sample_rate=16000, parameters=(Param("pitch_hz", float, 220.0, 50.0, 1000.0),))

    def synthesize(self, request: SynthesisRequest) -> Iterator[AudioChunk]:
        rate = self.capabilities.sample_rate
        beep = np.sin(2 * np.pi * request.parameters["pitch_hz"] * np.arange(rate // 5) / rate)
        for _ in request.text.split():
            yield AudioChunk((0.3 * beep).astype(np.float32), rate)
            yield AudioChunk(np.zeros(rate // 10, dtype=np.float32), rate)
'''


@pytest.fixture
def plugin_installed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``pip install`` of a package with an entry point, as the import system sees it: the module
    and its ``dist-info`` with ``entry_points.txt`` on ``sys.path``."""
    (tmp_path / "parla_hum.py").write_text(PLUGIN)
    info = tmp_path / "parla_hum-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: parla-hum\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(
        textwrap.dedent(
            """\
            [parla.engines]
            hum = parla_hum:HumEngine
            missing = parla_hum:NoSuchEngine
            """
        )
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    importlib.invalidate_caches()


@pytest.mark.usefixtures("plugin_installed")
async def test_a_third_party_engine_speaks_through_every_api(tmp_path: Path) -> None:
    settings = mock_settings(tmp_path / "data")
    registry = EngineRegistry.from_entry_points(settings)
    assert "hum" in registry.names() and {"piper", "clone"} <= set(registry.names())
    assert "missing" in registry.broken and "NoSuchEngine" in registry.broken["missing"]
    async with serving_in_process(settings, engines=registry) as app:
        client = app.client
        assert "hum" in [m["id"] for m in (await client.get("/v1/models")).json()["data"]]
        assert "missing" in (await client.get("/health")).json()["broken_engines"]
        body = {"input": "one two three", "voice": "joe", "model": "hum", "response_format": "wav"}
        speech = await client.post("/v1/audio/speech", json={**body, "parameters": {"pitch_hz": 440}})
        assert speech.status_code == 200, speech.text
        samples, rate = decode_audio(speech.content)
        assert 0.8 <= samples.size / rate <= 0.95  # three beeps and the gaps between them
        refused = await client.post("/v1/audio/speech", json={**body, "parameters": {"pitch_hz": 5}})
        assert refused.status_code == 400 and "'pitch_hz' must be between 50 and 1000" in refused.text
        dia = await client.post("/generate", json={"text": "one two", "voice_id": "joe", "model": "hum"})
        assert dia.status_code == 200 and decode_audio(dia.content)[0].size > 0
