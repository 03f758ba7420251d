"""Each reference API can be switched off or mounted under a prefix."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient
from pydantic import ValidationError

from parla.app import create_app
from parla.services import Services
from parla.settings import DialectSettings, Settings
from tests.conftest import someone_saying


def test_dialects_can_be_switched_off_and_moved(services: Services) -> None:
    settings = services.settings.model_copy(
        update={
            "in_process_worker": False,
            "dialects": {"dia": DialectSettings(enabled=False), "voicebox": DialectSettings(prefix="/voicebox")},
        }
    )
    app = create_app(settings=settings, services=services)
    with TestClient(app) as client:
        assert client.get("/voice_mappings").status_code == 404  # Dia server: off
        assert client.get("/queue/stats").status_code == 404
        assert client.get("/v1/queue/stats").status_code == 200  # Parla's own paths stay
        assert client.get("/profiles").status_code == 404  # voicebox: moved
        assert client.get("/voicebox/profiles").status_code == 200
        assert client.post("/voicebox/generate", json={"text": "hi"}).status_code == 200  # /generate moves with it
        assert client.get("/api/v1/tts/config").status_code == 200  # others untouched
        assert client.get("/health").status_code == 200


def test_unknown_dialects_and_bad_prefixes_are_refused() -> None:
    with pytest.raises(ValidationError, match="unknown dialect"):
        Settings(dialects={"titans2": DialectSettings()}, _env_file=None)
    with pytest.raises(ValidationError):
        DialectSettings(prefix="no-leading-slash")


def test_cors_origins_come_from_settings(services: Services) -> None:
    settings = services.settings.model_copy(
        update={"in_process_worker": False, "cors_origins": ["https://app.example"]}
    )
    with TestClient(create_app(settings=settings, services=services)) as client:
        allowed = client.options(
            "/api/v1/tts/synthesize",
            headers={"Origin": "https://app.example", "Access-Control-Request-Method": "POST"},
        )
        assert allowed.headers["access-control-allow-origin"] == "https://app.example"
        other = client.options(
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
