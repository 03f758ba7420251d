"""Errors: a 500 says nothing of what failed (the log does, under an id the client can quote)."""

from __future__ import annotations

import logging

import httpx
import pytest

from parla.app import create_app
from tests.conftest import InProcessApp, in_process


async def test_a_server_error_answers_an_id_and_keeps_its_details_in_the_log(
    mock_app: InProcessApp, caplog: pytest.LogCaptureFixture
) -> None:
    app = create_app(
        settings=mock_app.settings.model_copy(update={"in_process_worker": False}), services=mock_app.services
    )

    def fails() -> None:
        raise RuntimeError("password=hunter2 at /srv/private/path")

    app.add_api_route("/fails", fails)
    async with in_process(app, raise_app_exceptions=False) as client:
        with caplog.at_level(logging.ERROR, "parla"):
            response = await client.get("/fails")
    assert response.status_code == 500
    body = response.json()
    assert "hunter2" not in response.text and "RuntimeError" not in response.text
    assert body["error_id"] in body["detail"] and body["error"]["type"] == "server_error"
    logged = [r for r in caplog.records if body["error_id"] in r.getMessage()]
    assert logged and logged[0].exc_info is not None and "hunter2" in str(logged[0].exc_info[1])


@pytest.mark.parametrize(
    ("method", "path", "body", "status", "words"),
    [
        ("DELETE", f"/delete-character/{2**70}", None, 404, "not found"),
        ("GET", f"/serve-image/{2**70}/x.png", None, 404, "not found"),
        ("POST", "/cleanup?older_than_hours=4.7e307", None, 200, ""),
        ("PUT", "/profiles/no-such-profile", {"language": ""}, 422, "language"),
        ("POST", "/profiles", {"name": "p", "language": ""}, 422, "language"),
        (
            "POST",
            "/v1/text-to-dialogue",
            {"inputs": [{"text": "Hi.", "voice_id": "a"}], "output_filepath": "o\x00.wav"},
            400,
            "NUL",
        ),
        (
            "POST",
            "/v1/audio/speech",
            {"input": "?!... --- !!", "model": "piper", "voice": "joe"},
            400,
            "nothing to speak",
        ),
        ("POST", "/api/v1/tts/synthesize", {"text": "\x00\x01 ... \x02"}, 400, "nothing to speak"),
    ],
)
async def test_bad_input_found_by_the_fuzzer_is_a_4xx(
    api: httpx.AsyncClient, method: str, path: str, body: object, status: int, words: str
) -> None:
    response = await api.request(method, path, json=body)
    assert response.status_code == status, response.text
    assert words in response.text
