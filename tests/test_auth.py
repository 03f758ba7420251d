"""API keys and scopes (issue 20, parts 1-2): keys made, used and revoked; only their hashes kept;
every route's scope declared and enforced; the server open without keys on loopback only; the
OpenAI SDK and the web studio with a key.

Each test makes its own app and database: once a key exists it is required for good, which must
not leak into other modules' apps."""

from __future__ import annotations

import hashlib
import re
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import text
from typer.testing import CliRunner

from parla.api.auth import SCOPE_FIELD, is_loopback, startup_problem
from parla.app import create_app
from parla.cli import app as cli
from parla.services import Services
from parla.services.keys import Scope
from tests.conftest import InProcessApp, mock_settings, serving, serving_in_process

SPEECH = {"model": "tts-1", "input": "Hello there.", "voice": "alloy", "response_format": "wav"}


@pytest.fixture
async def app(tmp_path: Path) -> AsyncIterator[InProcessApp]:
    async with serving_in_process(mock_settings(tmp_path / "data")) as served:
        yield served


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def operations(schema: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, ops in schema["paths"].items():
        for method, operation in ops.items():
            yield method.upper(), path, operation


def concrete(path: str) -> str:
    """A path template with each parameter filled (the check runs before the parameters are read)."""
    return re.sub(r"\{[^}]+\}", "x1", path)


async def test_without_keys_everything_is_open_as_before(app: InProcessApp) -> None:
    response = await app.client.post("/v1/audio/speech", json=SPEECH)
    assert response.status_code == 200, response.text
    assert response.content[:4] == b"RIFF"
    assert (await app.client.get("/v1/voices")).status_code == 200


async def test_a_key_is_made_used_and_revoked_and_only_its_hash_is_kept(app: InProcessApp) -> None:
    keys = app.services.keys
    info, secret = keys.create("reader", "speak")
    assert secret.startswith("parla_") and len(secret) > 40 and info.prefix == secret[:12]

    # Hashed at rest: nothing in the table holds the key (or any long part of it).
    with app.services.db.session() as session:
        rows = [tuple(str(value) for value in row) for row in session.execute(text("SELECT * FROM api_keys"))]
    assert len(rows) == 1
    stored = " ".join(rows[0])
    assert secret not in stored and secret[12:] not in stored and secret[-20:] not in stored
    assert hashlib.sha256(secret.encode()).hexdigest() in stored

    missing = await app.client.post("/v1/audio/speech", json=SPEECH)
    assert missing.status_code == 401
    assert "API key is needed" in missing.json()["detail"]
    assert missing.json()["error"]["type"] == "authentication_error"

    wrong = await app.client.post("/v1/audio/speech", json=SPEECH, headers=bearer(secret[:-2] + "xx"))
    assert wrong.status_code == 401 and "not valid" in wrong.json()["detail"]

    ok = await app.client.post("/v1/audio/speech", json=SPEECH, headers=bearer(secret))
    assert ok.status_code == 200 and ok.content[:4] == b"RIFF"
    # The same key in its own header, and in the studio's cookie.
    assert (await app.client.get("/v1/voices", headers={"X-API-Key": secret})).status_code == 200
    app.client.cookies.set("parla_api_key", secret)
    try:
        assert (await app.client.get("/v1/voices")).status_code == 200
    finally:
        app.client.cookies.clear()
    assert keys.list()[0].last_used_at is not None

    keys.revoke("reader")
    revoked = await app.client.post("/v1/audio/speech", json=SPEECH, headers=bearer(secret))
    assert revoked.status_code == 401
    # Revoking every key does not open the server again.
    assert (await app.client.get("/v1/voices")).status_code == 401
    assert keys.list()[0].revoked_at is not None


async def test_every_route_declares_one_scope_and_it_is_enforced(app: InProcessApp) -> None:
    schema = app.app.openapi()
    undeclared = [f"{m} {p}" for m, p, op in operations(schema) if op.get(SCOPE_FIELD) not in set(Scope)]
    assert not undeclared, f"routes without a scope: {undeclared}"
    scopes = {f"{m} {p}": Scope(op[SCOPE_FIELD]) for m, p, op in operations(schema)}
    assert scopes["GET /health"] is Scope.PUBLIC
    assert scopes["POST /v1/audio/speech"] is Scope.SPEAK
    assert scopes["POST /v1/voices"] is Scope.VOICES
    for admin_only in ("DELETE /logs", "POST /cleanup", "PUT /config", "DELETE /v1/jobs", "POST /v1/load-model"):
        assert scopes[admin_only] is Scope.ADMIN, admin_only
    assert "security" not in schema["paths"]["/health"]["get"]

    keys = app.services.keys
    # For each scope, a key with every other scope but that one (admin would allow all).
    lacking = {
        Scope.SPEAK: keys.create("voices only", "voices")[1],
        Scope.VOICES: keys.create("speak only", "speak")[1],
        Scope.ADMIN: keys.create("speak and voices", "speak,voices")[1],
    }
    admin = keys.create("admin", "admin")[1]
    for method, path, operation in operations(schema):
        scope = Scope(operation[SCOPE_FIELD])
        url = concrete(path)
        anonymous = await app.client.request(method, url)
        if scope is Scope.PUBLIC:
            assert anonymous.status_code < 400, f"{method} {path}: {anonymous.status_code}"
            continue
        assert anonymous.status_code == 401, f"{method} {path} without a key: {anonymous.status_code}"
        denied = await app.client.request(method, url, headers=bearer(lacking[scope]))
        assert denied.status_code == 403, f"{method} {path} without '{scope}': {denied.status_code}"
        assert f"'{scope}' scope" in denied.json()["detail"]
        assert denied.json()["error"]["type"] == "permission_error"
        allowed = await app.client.request(method, url, headers=bearer(admin))
        assert allowed.status_code not in (401, 403), f"{method} {path} with admin: {allowed.text}"


async def test_the_job_websocket_needs_a_key_too(tmp_path: Path) -> None:
    from websockets.exceptions import ConnectionClosed
    from websockets.sync.client import connect

    services = Services.build(mock_settings(tmp_path / "data"))
    try:
        secret = services.keys.create("reader", "speak")[1]
        with serving(create_app(services=services)) as url:
            socket_url = url.replace("http", "ws", 1) + "/v1/jobs/nope/ws"
            with connect(socket_url) as socket, pytest.raises(ConnectionClosed) as closed:
                socket.recv(timeout=10)
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 1008
            assert "API key" in closed.value.rcvd.reason
            with connect(socket_url + f"?api_key={secret}") as socket:
                assert "not" in socket.recv(timeout=10)  # past the key: the job is not found
            speech_url = url.replace("http", "ws", 1) + "/v1/audio/speech/ws"
            with connect(speech_url) as socket, pytest.raises(ConnectionClosed) as closed:
                socket.recv(timeout=10)
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 1008
    finally:
        services.close()


def test_the_server_refuses_to_start_beyond_loopback_without_keys(tmp_path: Path) -> None:
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.20")
    public = mock_settings(tmp_path, host="0.0.0.0")
    assert startup_problem(public, keys_exist=False) is not None
    assert startup_problem(public, keys_exist=True) is None
    assert startup_problem(mock_settings(tmp_path, host="0.0.0.0", auth="off"), keys_exist=False) is None
    assert startup_problem(mock_settings(tmp_path), keys_exist=False) is None

    env = {"PARLA_DATA_DIR": str(tmp_path / "data"), "PARLA_DATABASE_URL": ""}
    refused = CliRunner().invoke(cli, ["serve", "--host", "0.0.0.0", "--port", "1"], env=env)
    assert refused.exit_code == 2
    assert "no API key exists" in refused.output and "PARLA_AUTH=off" in refused.output


async def test_the_app_itself_refuses_to_start_beyond_loopback_without_keys(tmp_path: Path) -> None:
    # Started some other way than `parla serve` (uvicorn parla.app:create_app --factory).
    services = Services.build(mock_settings(tmp_path / "data", host="0.0.0.0"))
    app = create_app(services=services)
    with pytest.raises(RuntimeError, match="no API key exists"):
        async with app.router.lifespan_context(app):
            pass


def test_keys_on_the_command_line(tmp_path: Path) -> None:
    env = {"PARLA_DATA_DIR": str(tmp_path / "data"), "PARLA_DATABASE_URL": ""}
    runner = CliRunner()
    made = runner.invoke(cli, ["keys", "create", "--name", "ci", "--scopes", "speak,voices"], env=env)
    assert made.exit_code == 0, made.output
    secret = made.stdout.strip().splitlines()[-1]
    assert secret.startswith("parla_")
    listed = runner.invoke(cli, ["keys", "list"], env={**env, "COLUMNS": "200"})
    assert "ci" in listed.stdout and secret[:12] in listed.stdout and secret not in listed.stdout
    assert runner.invoke(cli, ["keys", "create", "--name", "x", "--scopes", "root"], env=env).exit_code == 2
    assert runner.invoke(cli, ["keys", "revoke", "ci"], env=env).exit_code == 0
    assert runner.invoke(cli, ["keys", "revoke", "nobody"], env=env).exit_code == 2


def test_the_openai_sdk_works_with_api_key(tmp_path: Path) -> None:
    import openai

    from parla.audio.decode import decode_audio

    services = Services.build(mock_settings(tmp_path / "data"))
    try:
        secret = services.keys.create("sdk", "speak")[1]
        with serving(create_app(services=services)) as url:
            client = openai.OpenAI(base_url=f"{url}/v1", api_key=secret)
            audio = client.audio.speech.create(
                model="tts-1", voice="alloy", input="Hello there.", response_format="wav"
            )
            samples, rate = decode_audio(audio.content, 16000)
            assert len(samples) / rate > 0.3
            with pytest.raises(openai.AuthenticationError):
                openai.OpenAI(base_url=f"{url}/v1", api_key="parla_wrong").audio.speech.create(
                    model="tts-1", voice="alloy", input="Hello there."
                )
    finally:
        services.close()


def test_keys_are_refused_with_every_apis_error_shape(tmp_path: Path) -> None:
    services = Services.build(mock_settings(tmp_path / "data"))
    try:
        services.keys.create("someone", "speak")
        with serving(create_app(services=services)) as url:
            for method, path in (("GET", "/get-characters"), ("POST", "/api/v1/tts/synthesize"), ("GET", "/profiles")):
                response = httpx.request(method, url + path)
                assert response.status_code == 401
                body = response.json()
                assert isinstance(body["detail"], str) and body["error"]["message"] == body["detail"]
    finally:
        services.close()


# -- limits ---------------------------------------------------------------------------------------


async def test_requests_per_minute_gets_a_429_with_retry_after(app: InProcessApp) -> None:
    secret = app.services.keys.create("busy", "speak", {"requests_per_minute": 3})[1]
    for _ in range(3):
        assert (await app.client.get("/v1/voices", headers=bearer(secret))).status_code == 200
    over = await app.client.get("/v1/voices", headers=bearer(secret))
    assert over.status_code == 429
    assert "requests_per_minute" in over.json()["detail"] and over.json()["error"]["type"] == "rate_limit_error"
    assert 1 <= int(over.headers["Retry-After"]) <= 60
    # Another key has its own budget.
    other = app.services.keys.create("calm", "speak")[1]
    assert (await app.client.get("/v1/voices", headers=bearer(other))).status_code == 200


async def test_text_and_audio_per_day_are_counted_and_a_refusal_costs_nothing(app: InProcessApp) -> None:
    keys = app.services.keys
    texter = keys.create("texter", "speak", {"text_chars_per_day": 30})[1]
    first = await app.client.post(
        "/v1/audio/speech", json={**SPEECH, "input": "Twenty characters ok."}, headers=bearer(texter)
    )
    assert first.status_code == 200
    too_long = await app.client.post(
        "/v1/audio/speech", json={**SPEECH, "input": "Twenty more characters."}, headers=bearer(texter)
    )
    assert too_long.status_code == 429 and "text_chars_per_day" in too_long.json()["detail"]
    # The refused text was not charged: what is left still fits.
    assert (
        await app.client.post("/v1/audio/speech", json={**SPEECH, "input": "Nine left"}, headers=bearer(texter))
    ).status_code == 200

    speaker = keys.create("speaker", "speak", {"audio_seconds_per_day": 0.5})[1]
    said = await app.client.post("/v1/audio/speech", json=SPEECH, headers=bearer(speaker))
    assert said.status_code == 200
    spent = await app.client.post("/v1/audio/speech", json=SPEECH, headers=bearer(speaker))
    assert spent.status_code == 429 and "audio_seconds_per_day" in spent.json()["detail"]
    assert int(spent.headers["Retry-After"]) > 0


def test_concurrent_generations_are_capped(tmp_path: Path) -> None:
    from concurrent.futures import ThreadPoolExecutor

    settings = mock_settings(tmp_path / "data", engines={"mock": {"delay_s": 1.0}})
    services = Services.build(settings)
    try:
        secret = services.keys.create("one at a time", "speak", {"concurrent_generations": 1})[1]
        with serving(create_app(services=services)) as url:

            def speak(_: int) -> int:
                return httpx.post(f"{url}/v1/audio/speech", json=SPEECH, headers=bearer(secret), timeout=60).status_code

            with ThreadPoolExecutor(3) as pool:
                statuses = sorted(pool.map(speak, range(3)))
            assert statuses[0] == 200 and 429 in statuses, statuses
            assert speak(0) == 200  # the slot came back
    finally:
        services.close()


@pytest.mark.slow
def test_limits_are_shared_by_two_server_processes_on_redis(tmp_path: Path, redis_server: str) -> None:
    """Two `parla serve` processes on one data dir and one Redis: one key's requests per minute are
    counted across both (in-process counters would each allow four)."""
    import os
    import subprocess
    import sys
    from functools import partial

    from parla.bench.common import free_port
    from parla.services.keys import KeyService
    from parla.store.db import Database
    from tests.conftest import wait_for

    data = tmp_path / "data"
    data.mkdir()
    db = Database(f"sqlite:///{data / 'parla.db'}")
    db.migrate()
    secret = KeyService(db).create("shared", "speak", {"requests_per_minute": 4})[1]
    db.dispose()
    env = {
        **os.environ,
        "PARLA_DATA_DIR": str(data),
        "PARLA_DATABASE_URL": "",
        "PARLA_REDIS_URL": redis_server,
        "PARLA_DEFAULT_ENGINE": "mock",
        "PARLA_DEFAULT_CLONE_ENGINE": "mock",
        "PARLA_LLM_RUNTIME_AUTOINSTALL": "false",
        "PARLA_LOG_LEVEL": "warning",
    }
    ports = [free_port(), free_port()]
    servers = [
        subprocess.Popen(
            [sys.executable, "-m", "parla", "serve", "--port", str(port)], env=env, stdin=subprocess.DEVNULL
        )
        for port in ports
    ]
    try:
        urls = [f"http://127.0.0.1:{port}" for port in ports]
        for url in urls:
            health = f"{url}/health"
            wait_for(partial(httpx.get, health, timeout=2), f"{url} did not start")
        a, b = urls
        codes = [httpx.get(f"{url}/v1/voices", headers=bearer(secret)).status_code for url in (a, b, a, b, b)]
        assert codes == [200, 200, 200, 200, 429]
    finally:
        for server in servers:
            server.terminate()
            server.wait(timeout=30)


def test_database_counters_hold_under_concurrency(database_url: str) -> None:
    """The counters without Redis, on SQLite and PostgreSQL: leases never exceed the limit and
    additions from many threads all count."""
    from concurrent.futures import ThreadPoolExecutor

    from parla.services.keys import KeyService
    from parla.services.usage import DAY, DatabaseCounters
    from parla.store.db import Database
    from parla.store.models import ApiKey

    db = Database(database_url)
    db.migrate()
    counters = DatabaseCounters(db)
    info, _ = KeyService(db).create(f"counted {uuid.uuid4().hex[:6]}", "speak")
    try:
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(lambda _: counters.add(info.id, "text_chars", 10, DAY), range(40)))
            leases = list(pool.map(lambda _: counters.lease(info.id, 3), range(12)))
        assert counters.total(info.id, "text_chars", DAY) == 400
        held = [lease for lease in leases if lease is not None]
        assert len(held) == 3
        counters.release(info.id, held[0])
        assert counters.lease(info.id, 3) is not None
    finally:
        # Other tests share this PostgreSQL schema: a key left there would close their servers.
        with db.session() as session:
            session.execute(text("DELETE FROM generation_leases"))
            session.execute(text("DELETE FROM usage_counters"))
            session.query(ApiKey).filter(ApiKey.id == info.id).delete()
        db.dispose()


def test_a_body_larger_than_any_route_takes_is_refused_before_it_is_read(tmp_path: Path) -> None:
    services = Services.build(mock_settings(tmp_path / "data", max_upload_bytes=4096))
    try:
        with serving(create_app(services=services)) as url:
            limit = 4 * 4096 + 1024 * 1024
            declared = httpx.post(f"{url}/v1/voices", content=b"x" * (limit + 1))
            assert declared.status_code == 413 and f"largest accepted is {limit}" in declared.json()["detail"]

            sent = 0

            def chunks() -> Iterator[bytes]:  # no Content-Length: counted as it arrives
                nonlocal sent
                yield b'--zzz\r\nContent-Disposition: form-data; name="file"; filename="a.wav"\r\n\r\n'
                for _ in range(3):
                    sent += 1024 * 1024
                    yield b"y" * (1024 * 1024)

            form = {"content-type": "multipart/form-data; boundary=zzz"}  # read as a form, not ignored
            chunked = httpx.post(f"{url}/v1/audio/transcriptions", content=chunks(), headers=form)
            assert chunked.status_code == 413
            assert "largest accepted" in chunked.json()["detail"]
            # Still served: a normal request after both.
            assert httpx.get(f"{url}/v1/voices").status_code == 200
    finally:
        services.close()


# -- ownership ------------------------------------------------------------------------------------


async def test_each_key_sees_changes_and_deletes_only_its_own(app: InProcessApp) -> None:
    client, keys = app.client, app.services.keys
    before = (await client.post("/v1/voices", json={"name": "Made before keys"})).json()["id"]
    old_speech = await client.post("/v1/audio/speech", json=SPEECH)
    old_generation = old_speech.headers["X-Generation-Id"]
    a = bearer(keys.create("a", "speak,voices")[1])
    b = bearer(keys.create("b", "speak,voices")[1])
    admin = bearer(keys.create("root", "admin")[1])

    voice = (await client.post("/v1/voices", json={"name": "Ada"}, headers=a)).json()["id"]
    spoken = await client.post("/v1/audio/speech", json=SPEECH, headers=a)
    generation = spoken.headers["X-Generation-Id"]
    job = (await client.post("/v1/jobs", json={**SPEECH, "input": "A queued sentence."}, headers=a)).json()["id"]

    def names(listing: httpx.Response) -> set[str]:
        body = listing.json()
        items = body if isinstance(body, list) else body.get("voices", body.get("items", []))
        return {item.get("name") or item.get("id") for item in items}

    # B sees none of A's, nor what was made before keys; and cannot read, change or delete them.
    assert "Ada" not in names(await client.get("/v1/voices", headers=b))
    assert "Made before keys" not in names(await client.get("/v1/voices", headers=b))
    for method, url in (
        ("GET", f"/v1/voices/{voice}"),
        ("PATCH", f"/v1/voices/{voice}"),
        ("DELETE", f"/v1/voices/{voice}"),
        ("GET", f"/v1/voices/{before}"),
        ("GET", f"/v1/history/{generation}"),
        ("GET", f"/v1/history/{generation}/audio"),
        ("DELETE", f"/v1/history/{generation}"),
        ("GET", f"/v1/history/{old_generation}"),
        ("GET", f"/v1/jobs/{job}"),
        ("DELETE", f"/v1/jobs/{job}"),
    ):
        response = await client.request(
            method, url, headers=b, json={"description": "x"} if method == "PATCH" else None
        )
        assert response.status_code == 404, f"{method} {url} by another key: {response.status_code}"
    history_b = (await client.get("/v1/history", headers=b)).json()
    assert history_b["total"] == 0
    assert all(j["id"] != job for j in (await client.get("/v1/jobs", headers=b)).json()["jobs"])
    # Nor speak in A's voice.
    assert (await client.post("/v1/audio/speech", json={**SPEECH, "voice": voice}, headers=b)).status_code in (400, 404)

    # A sees its own; the admin sees everything, the old data included, and may delete A's.
    assert "Ada" in names(await client.get("/v1/voices", headers=a))
    assert (await client.get(f"/v1/history/{generation}", headers=a)).status_code == 200
    assert (await client.get(f"/v1/history/{old_generation}", headers=a)).status_code == 404
    assert {generation, old_generation} <= {
        g["id"] for g in (await client.get("/v1/history", headers=admin)).json()["items"]
    }
    assert "Made before keys" in names(await client.get("/v1/voices", headers=admin))
    assert (await client.get(f"/v1/jobs/{job}", headers=admin)).status_code == 200
    assert (await client.delete(f"/v1/voices/{voice}", headers=admin)).status_code in (200, 204)


async def test_a_job_runs_for_the_key_that_queued_it(app: InProcessApp) -> None:
    import asyncio

    keys = app.services.keys
    a = bearer(keys.create("a", "speak")[1])
    b = bearer(keys.create("b", "speak")[1])
    job = (await app.client.post("/v1/jobs", json={**SPEECH, "input": "Queued for key a."}, headers=a)).json()
    for _ in range(200):
        state = (await app.client.get(f"/v1/jobs/{job['id']}", headers=a)).json()
        if state["status"] in ("completed", "failed"):
            break
        await asyncio.sleep(0.05)
    assert state["status"] == "completed", state
    generation = state["generation_id"]
    assert (await app.client.get(f"/v1/history/{generation}", headers=a)).status_code == 200
    assert (await app.client.get(f"/v1/history/{generation}", headers=b)).status_code == 404


async def test_characters_belong_to_the_key_that_made_them(app: InProcessApp) -> None:
    from tests.characters_data import character_form

    keys = app.services.keys
    a = bearer(keys.create("a", "speak,voices")[1])
    b = bearer(keys.create("b", "speak,voices")[1])
    admin = bearer(keys.create("root", "admin")[1])
    form = character_form("Keeper", voice_cloning_audio=None, style_tuning_file=None, character_image=None)
    made = await app.client.post("/create-character", headers=a, **form)
    assert made.status_code == 200, made.text
    character = made.json()["character_id"]

    def listed(response: httpx.Response) -> set[int]:
        return {c["id"] for c in response.json()["characters"]}

    assert character in listed(await app.client.get("/get-characters", headers=a))
    assert character not in listed(await app.client.get("/get-characters", headers=b))
    assert (await app.client.get(f"/get-character/{character}", headers=b)).status_code == 404
    assert (await app.client.delete(f"/delete-character/{character}", headers=b)).status_code == 404
    assert (await app.client.get(f"/get-character/{character}", headers=admin)).status_code == 200
    assert (await app.client.delete(f"/delete-character/{character}", headers=a)).status_code == 200


async def test_only_admins_make_pronunciations_for_every_voice(app: InProcessApp) -> None:
    keys = app.services.keys
    a = bearer(keys.create("a", "speak,voices")[1])
    admin = bearer(keys.create("root", "admin")[1])
    entry = {"word": "Nguyen", "respelling": "win"}
    refused = await app.client.post("/v1/pronunciations", json=entry, headers=a)
    assert refused.status_code == 403 and "admin" in refused.json()["detail"]
    assert (await app.client.post("/v1/pronunciations", json=entry, headers=admin)).status_code == 201
    voice = (await app.client.post("/v1/voices", json={"name": "Ada"}, headers=a)).json()["id"]
    own = await app.client.post("/v1/pronunciations", json={**entry, "voice": voice}, headers=a)
    assert own.status_code == 201, own.text
    assert (await app.client.get("/v1/pronunciations", headers=a)).status_code == 200
