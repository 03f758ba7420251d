"""Each reference API can be switched off or mounted under a prefix."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from parla.app import create_app
from parla.services import Services
from parla.settings import DialectSettings, Settings
from tests.conftest import InProcessApp, in_process, someone_saying


async def test_dialects_can_be_switched_off_and_moved(mock_app: InProcessApp) -> None:
    settings = mock_app.settings.model_copy(
        update={
            "in_process_worker": False,
            "dialects": {"dia": DialectSettings(enabled=False), "voicebox": DialectSettings(prefix="/voicebox")},
        }
    )
    async with in_process(create_app(settings=settings, services=mock_app.services)) as client:
        assert (await client.get("/voice_mappings")).status_code == 404  # Dia server: off
        assert (await client.get("/queue/stats")).status_code == 404
        assert (await client.get("/v1/queue/stats")).status_code == 200  # Parla's own paths stay
        assert (await client.get("/profiles")).status_code == 404  # voicebox: moved
        assert (await client.get("/voicebox/profiles")).status_code == 200
        moved = await client.post("/voicebox/generate", json={"text": "hi"})
        assert moved.status_code == 200  # /generate moves with it
        assert (await client.get("/api/v1/tts/config")).status_code == 200  # others untouched
        assert (await client.get("/health")).status_code == 200


def test_unknown_dialects_and_bad_prefixes_are_refused() -> None:
    with pytest.raises(ValidationError, match="unknown dialect"):
        Settings(dialects={"titans2": DialectSettings()}, _env_file=None)
    with pytest.raises(ValidationError):
        DialectSettings(prefix="no-leading-slash")


async def test_cors_origins_come_from_settings(mock_app: InProcessApp) -> None:
    settings = mock_app.settings.model_copy(
        update={"in_process_worker": False, "cors_origins": ["https://app.example"]}
    )
    async with in_process(create_app(settings=settings, services=mock_app.services)) as client:
        allowed = await client.options(
            "/api/v1/tts/synthesize",
            headers={"Origin": "https://app.example", "Access-Control-Request-Method": "POST"},
        )
        assert allowed.headers["access-control-allow-origin"] == "https://app.example"
        other = await client.options(
            "/api/v1/tts/synthesize",
            headers={"Origin": "https://elsewhere.example", "Access-Control-Request-Method": "POST"},
        )
        assert "access-control-allow-origin" not in other.headers


def test_audio_prompts_survive_a_restart(services: Services) -> None:
    from parla.services.mappings import VoiceMappings

    services.mappings.upload_prompt("survivor", someone_saying("A prompt that outlives the server."))
    try:
        # A new server process reads the same data dir: the prompt is still there.
        restarted = VoiceMappings(settings=services.settings, db=services.db, transcriber=services.transcriber)
        assert "survivor" in [p["prompt_id"] for p in restarted.list_prompts()]
    finally:
        services.mappings.delete_prompt("survivor")
