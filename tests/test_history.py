"""Generation history over HTTP (search, filters, pages, stats, audio, delete), the runtime config
(``/config``), the Dia server API's ``/logs`` and ``/cleanup``, retention, and both on SQLite and PostgreSQL.

The module's mock app is shared by its tests: every check filters by a tag only this module's texts
carry, and every config change is undone afterwards."""

from __future__ import annotations

import asyncio
import logging
import os
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import delete

from parla.app import create_app
from parla.services import Services
from parla.services.history import HistoryFilter, HistoryService
from parla.services.runtime_config import ConfigService
from parla.settings import Settings
from parla.store import Database, Generation, LocalBlobStore
from parla.store.models import ConfigEntry, utcnow
from tests.conftest import InProcessApp, duration_of, in_process, mock_settings

TAG = f"hist{uuid.uuid4().hex[:8]}"
"""In every text this module speaks, so its generations can be told from the others'."""


@dataclass(frozen=True)
class Spoken:
    id: str
    text: str
    voice: str
    engine: str
    format: str
    audio: bytes

    @property
    def duration(self) -> float:
        return duration_of(self.audio)


async def speak(
    api: httpx.AsyncClient, text: str, voice: str = "alloy", model: str = "mock", fmt: str = "wav"
) -> Spoken:
    response = await api.post(
        "/v1/audio/speech", json={"model": model, "input": text, "voice": voice, "response_format": fmt}
    )
    assert response.status_code == 200, response.text
    return Spoken(response.headers["X-Generation-Id"], text, voice, model, fmt, response.content)


async def speak_dia(api: httpx.AsyncClient, text: str, voice: str = "alloy", fmt: str = "wav") -> Spoken:
    """Through the Dia server API's ``/generate``: the outputs its config governs."""
    body = {"text": text, "voice_id": voice, "model": "mock", "response_format": fmt}
    response = await api.post("/generate", json=body)
    assert response.status_code == 200, response.text
    return Spoken(response.headers["X-Generation-Id"], text, voice, "mock", fmt, response.content)


@pytest.fixture(scope="module")
async def spoken(mock_app: InProcessApp) -> list[Spoken]:
    """Four generations, oldest first: two voices on mock, one on espeak, one of them an mp3."""
    api = mock_app.client
    return [
        await speak(api, f"Zebra {TAG} one."),
        await speak(api, f"Zebra {TAG} two, a little longer.", voice="nova"),
        await speak(api, f"Quokka {TAG} three.", voice="nova", fmt="mp3"),
        await speak(api, f"Quokka {TAG} four.", voice="joe", model="espeak"),
    ]


@pytest.fixture
async def restore_config(api: httpx.AsyncClient) -> AsyncIterator[dict[str, Any]]:
    """The runtime config as it was, put back after the test (the app is shared)."""
    before: dict[str, Any] = (await api.get("/config")).json()
    yield before
    assert (await api.put("/config", json=before)).status_code == 200


async def history(api: httpx.AsyncClient, **params: Any) -> dict[str, Any]:
    response = await api.get("/v1/history", params={"search": TAG, **params})
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def ids(page: dict[str, Any]) -> list[str]:
    return [item["id"] for item in page["items"]]


def age(services: Services, generation_id: str, hours: float) -> None:
    with services.db.session() as session:
        row = session.get(Generation, generation_id)
        assert row is not None
        row.created_at = utcnow() - timedelta(hours=hours)


def file_of(services: Services, generation_id: str) -> Path | None:
    with services.db.session() as session:
        row = session.get(Generation, generation_id)
        return services.blobs.path(row.file) if row is not None and row.file else None


# -- listing ----------------------------------------------------------------------------------------


async def test_search_finds_text_in_any_case_newest_first(api: httpx.AsyncClient, spoken: list[Spoken]) -> None:
    page = await history(api, search=TAG.upper())
    assert page["total"] == 4 and page["limit"] == 50 and page["offset"] == 0
    assert ids(page) == [s.id for s in reversed(spoken)]
    assert ids(await history(api, search=f"zebra {TAG}")) == [spoken[1].id, spoken[0].id]
    assert (await history(api, search=f"{TAG} five"))["total"] == 0
    # LIKE's wildcards are searched for literally.
    assert (await history(api, search=f"{TAG}%"))["total"] == 0


async def test_each_filter(api: httpx.AsyncClient, spoken: list[Spoken]) -> None:
    assert ids(await history(api, voice="nova")) == [spoken[2].id, spoken[1].id]
    assert ids(await history(api, voice="NOVA")) == [spoken[2].id, spoken[1].id]
    assert ids(await history(api, engine="espeak")) == [spoken[3].id]
    assert (await history(api, engine="mock"))["total"] == 3
    assert (await history(api, source="openai"))["total"] == 4
    assert (await history(api, source="cli"))["total"] == 0
    third = datetime.fromisoformat((await api.get(f"/v1/history/{spoken[2].id}")).json()["created_at"])
    assert ids(await history(api, created_after=third.isoformat())) == [spoken[3].id, spoken[2].id]
    assert ids(await history(api, created_before=third.isoformat())) == [spoken[1].id, spoken[0].id]
    # The same instant in another time zone, and without one (taken as UTC).
    elsewhere = third.astimezone(timezone(timedelta(hours=5, minutes=30))).isoformat()
    assert ids(await history(api, created_after=elsewhere)) == [spoken[3].id, spoken[2].id]
    naive = third.astimezone(UTC).replace(tzinfo=None).isoformat()
    assert ids(await history(api, created_before=naive)) == [spoken[1].id, spoken[0].id]
    assert ids(await history(api, voice="nova", created_before=third.isoformat())) == [spoken[1].id]


async def test_pages(api: httpx.AsyncClient, spoken: list[Spoken]) -> None:
    pages = [await history(api, limit=3, offset=offset) for offset in (0, 3, 6)]
    assert [p["total"] for p in pages] == [4, 4, 4]
    assert [len(p["items"]) for p in pages] == [3, 1, 0]
    assert ids(pages[0]) + ids(pages[1]) == [s.id for s in reversed(spoken)]
    assert pages[1]["limit"] == 3 and pages[1]["offset"] == 3
    for params in ({"limit": 0}, {"limit": 501}, {"offset": -1}):
        response = await api.get("/v1/history", params=params)
        assert response.status_code == 422 and response.json()["detail"]
    assert (await api.get("/v1/history", params={"limit": 500})).status_code == 200


async def test_one_generation_with_its_real_time_factor(api: httpx.AsyncClient, spoken: list[Spoken]) -> None:
    for s in spoken:
        item = (await api.get(f"/v1/history/{s.id}")).json()
        assert (item["text"], item["voice"], item["engine"], item["format"]) == (s.text, s.voice, s.engine, s.format)
        assert item["source"] == "openai" and item["has_audio"] is True
        # The record has the exact length; a decoded MP3 adds the encoder's padding (a frame or two).
        assert item["duration_s"] == pytest.approx(s.duration, abs=0.11 if s.format == "mp3" else 0.01)
        assert item["real_time_factor"] == pytest.approx(item["elapsed_s"] / item["duration_s"])
        assert datetime.fromisoformat(item["created_at"]).tzinfo is not None


async def test_stats_add_up(api: httpx.AsyncClient, spoken: list[Spoken]) -> None:
    stats = (await api.get("/v1/history/stats", params={"search": TAG})).json()
    items = (await history(api))["items"]
    assert stats["total_generations"] == 4
    assert stats["total_duration_seconds"] == pytest.approx(sum(s.duration for s in spoken), abs=0.12)
    assert stats["total_elapsed_seconds"] == pytest.approx(sum(i["elapsed_s"] for i in items))
    assert stats["mean_real_time_factor"] == pytest.approx(sum(i["real_time_factor"] for i in items) / 4)
    assert stats["generations_by_voice"] == {"nova": 2, "alloy": 1, "joe": 1}
    assert stats["generations_by_profile"] == stats["generations_by_voice"]
    assert stats["duration_seconds_by_voice"]["nova"] == pytest.approx(
        spoken[1].duration + spoken[2].duration, abs=0.12
    )
    assert stats["generations_by_engine"] == {"mock": 3, "espeak": 1}
    only_espeak = (await api.get("/v1/history/stats", params={"search": TAG, "engine": "espeak"})).json()
    assert only_espeak["total_generations"] == 1 and only_espeak["generations_by_voice"] == {"joe": 1}
    everything = (await api.get("/v1/history/stats")).json()
    assert everything["total_generations"] >= 4


# -- audio and deleting -----------------------------------------------------------------------------


async def test_audio_is_what_was_streamed(api: httpx.AsyncClient, spoken: list[Spoken]) -> None:
    mp3, wav = spoken[2], spoken[0]
    response = await api.get(f"/v1/history/{mp3.id}/audio")
    assert response.status_code == 200 and response.headers["content-type"] == "audio/mpeg"
    assert response.content == mp3.audio
    download = await api.get(f"/logs/{mp3.id}/download")
    assert download.content == mp3.audio and "attachment" in download.headers["content-disposition"]
    kept = await api.get(f"/v1/history/{wav.id}/audio")
    assert kept.headers["content-type"] == "audio/wav"
    # The streamed WAV could not know its size up front; the kept one has it filled in.
    assert kept.content[44:] == wav.audio[44:]
    assert int.from_bytes(kept.content[40:44], "little") == len(kept.content) - 44


async def test_delete_removes_the_row_and_the_file(api: httpx.AsyncClient, mock_app: InProcessApp) -> None:
    s = await speak(api, f"Delete me {TAG}.", fmt="flac")
    path = file_of(mock_app.services, s.id)
    assert path is not None and path.is_file()
    assert (await api.delete(f"/v1/history/{s.id}")).status_code == 204
    assert not path.exists()
    gone = await api.get(f"/v1/history/{s.id}")
    assert gone.status_code == 404 and s.id in gone.json()["detail"]
    assert (await api.delete(f"/v1/history/{s.id}")).status_code == 404


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/v1/history/no-such-id"),
        ("GET", "/v1/history/no-such-id/audio"),
        ("DELETE", "/v1/history/no-such-id"),
        ("GET", "/logs/no-such-id/download"),
    ],
)
async def test_unknown_ids_are_404(api: httpx.AsyncClient, method: str, path: str) -> None:
    response = await api.request(method, path)
    assert response.status_code == 404
    assert "no-such-id" in response.json()["detail"]


# -- clean-up ---------------------------------------------------------------------------------------


async def test_cleanup_removes_old_generations_and_orphan_files(api: httpx.AsyncClient, mock_app: InProcessApp) -> None:
    services = mock_app.services
    old, new = await speak_dia(api, f"Old {TAG}."), await speak_dia(api, f"New {TAG}.")
    # As old, but asked for through another API: the Dia server's clean-up is not its owner.
    other = await speak(api, f"Old but not the Dia server's {TAG}.")
    age(services, other.id, hours=3)
    old_file = file_of(services, old.id)
    assert old_file is not None
    size = old_file.stat().st_size
    age(services, old.id, hours=3)
    folder = services.blobs.path("generations")
    stale, fresh = folder / f"{uuid.uuid4()}.mp3", folder / f"{uuid.uuid4()}.mp3"
    stale.write_bytes(b"x" * 1000)
    fresh.write_bytes(b"y" * 10)
    three_hours_ago = time.time() - 3 * 3600
    os.utime(stale, (three_hours_ago, three_hours_ago))
    try:
        result = (await api.post("/cleanup", params={"older_than_hours": 2})).json()
        assert result["deleted_generations"] >= 1 and result["deleted_files"] >= 2
        assert result["freed_bytes"] >= size + 1000 and result["older_than_hours"] == 2
        assert (await api.get(f"/v1/history/{old.id}")).status_code == 404 and not old_file.exists()
        assert not stale.exists()
        # A file with no row yet may be a generation still streaming: young ones stay.
        assert fresh.exists()
        assert (await api.get(f"/v1/history/{new.id}")).json()["has_audio"] is True
        assert (await api.get(f"/v1/history/{other.id}")).json()["has_audio"] is True
        # An operator may ask for every API's old generations, explicitly.
        everyone = (await api.post("/cleanup", params={"older_than_hours": 2, "scope": "all"})).json()
        assert everyone["deleted_generations"] >= 1
        assert (await api.get(f"/v1/history/{other.id}")).status_code == 404
    finally:
        fresh.unlink(missing_ok=True)
    assert (await api.post("/cleanup", params={"older_than_hours": -1})).status_code == 422
    assert (await api.post("/cleanup", params={"scope": "everything"})).status_code == 422


async def test_cleanup_follows_the_configured_retention(
    api: httpx.AsyncClient, mock_app: InProcessApp, restore_config: dict[str, Any]
) -> None:
    s, others = await speak_dia(api, f"Retained {TAG}."), await speak(api, f"Not the Dia server's {TAG}.")
    age(mock_app.services, s.id, hours=3)
    age(mock_app.services, others.id, hours=3)
    assert (await api.put("/config", json={"output_retention_hours": 0})).status_code == 200
    kept = (await api.post("/cleanup")).json()
    assert kept == {"deleted_generations": 0, "deleted_files": 0, "freed_bytes": 0, "older_than_hours": None}
    assert (await api.get(f"/v1/history/{s.id}")).status_code == 200
    assert (await api.put("/config", json={"output_retention_hours": 2.5})).status_code == 200
    result = (await api.post("/cleanup")).json()
    assert result["deleted_generations"] >= 1 and result["older_than_hours"] == 2.5
    assert (await api.get(f"/v1/history/{s.id}")).status_code == 404
    assert (await api.get(f"/v1/history/{others.id}")).json()["has_audio"] is True


# -- the runtime config -----------------------------------------------------------------------------


async def test_config_round_trip_and_persistence(
    api: httpx.AsyncClient, mock_app: InProcessApp, restore_config: dict[str, Any]
) -> None:
    assert set(restore_config) == {"debug_mode", "save_outputs", "show_prompts", "output_retention_hours"}
    changed = await api.put("/config", json={"output_retention_hours": 48, "show_prompts": True})
    assert changed.status_code == 200
    assert changed.json() == restore_config | {"output_retention_hours": 48.0, "show_prompts": True}
    assert (await api.get("/config")).json() == changed.json()
    # Kept in the database: another service (another replica, a restart) sees the same.
    other = ConfigService(settings=mock_app.settings, db=mock_app.services.db)
    assert other.get().model_dump() == changed.json()


@pytest.mark.parametrize(
    ("body", "status", "words"),
    [
        ({"colour": "blue"}, 400, "unknown config key 'colour'"),
        ({"show_prompts": True, "a": 1, "b": 2}, 400, "'a', 'b'"),
        ({"debug_mode": "banana"}, 422, "debug_mode"),
        ({"output_retention_hours": -1}, 422, "output_retention_hours"),
        ({"save_outputs": None}, 422, "save_outputs"),
    ],
)
async def test_bad_config_changes_are_refused_and_change_nothing(
    api: httpx.AsyncClient, restore_config: dict[str, Any], body: dict[str, Any], status: int, words: str
) -> None:
    response = await api.put("/config", json=body)
    assert response.status_code == status
    assert words in response.json()["detail"]
    assert (await api.get("/config")).json() == restore_config


async def test_debug_mode_sets_the_log_level(api: httpx.AsyncClient, restore_config: dict[str, Any]) -> None:
    logger = logging.getLogger("parla")
    before = logger.level
    await api.put("/config", json={"debug_mode": True})
    assert logger.level == logging.DEBUG
    await api.put("/config", json={"debug_mode": False})
    assert logger.level == before


async def test_save_outputs_off_keeps_no_file(
    api: httpx.AsyncClient, mock_app: InProcessApp, restore_config: dict[str, Any]
) -> None:
    assert (await api.put("/config", json={"save_outputs": False})).json()["save_outputs"] is False
    # The Dia server's setting governs its outputs; other APIs keep what they promise to keep.
    elsewhere = await speak(api, f"Kept by another API {TAG}.", fmt="mp3")
    assert (await api.get(f"/v1/history/{elsewhere.id}/audio")).content == elsewhere.audio
    unsaved = await speak_dia(api, f"Not kept {TAG}.", fmt="mp3")
    item = (await api.get(f"/v1/history/{unsaved.id}")).json()
    assert item["has_audio"] is False and item["text"] == unsaved.text
    assert not list(mock_app.services.blobs.path("generations").glob(f"{unsaved.id}.*"))
    missing = await api.get(f"/v1/history/{unsaved.id}/audio")
    assert missing.status_code == 404 and "not being saved" in missing.json()["detail"]
    assert (await api.put("/config", json={"save_outputs": True})).json()["save_outputs"] is True
    saved = await speak_dia(api, f"Kept again {TAG}.", fmt="mp3")
    assert (await api.get(f"/v1/history/{saved.id}/audio")).content == saved.audio


async def test_show_prompts_shows_the_text_in_logs(api: httpx.AsyncClient, restore_config: dict[str, Any]) -> None:
    s = await speak_dia(api, f"Secret words {TAG}.")

    async def entry() -> dict[str, Any]:
        logs = (await api.get("/logs", params={"limit": 20})).json()
        found: dict[str, Any] = next(e for e in logs if e["id"] == s.id)
        return found

    await api.put("/config", json={"show_prompts": False})
    hidden = await entry()
    assert "prompt" not in hidden and TAG not in str(hidden)
    assert hidden["voice_id"] == "alloy" and hidden["audio_available"] is True
    assert hidden["duration"] == pytest.approx(s.duration, abs=0.01)
    assert (await api.get(hidden["download_url"])).content[44:] == s.audio[44:]
    await api.put("/config", json={"show_prompts": True})
    assert (await entry())["prompt"] == s.text
    assert (await api.get("/logs", params={"limit": 0})).status_code == 422


# -- an app of its own: DELETE /logs and the retention loop -----------------------------------------


@pytest.fixture
def own_services(tmp_path: Path) -> Iterator[Services]:
    """Services on a data directory of their own, on the mock engine."""
    built = Services.build(mock_settings(tmp_path, cleanup_interval_s=1))
    yield built
    built.close()


async def test_delete_logs_empties_the_dia_servers_history_and_nothing_else(own_services: Services) -> None:
    async with in_process(create_app(services=own_services)) as client:
        for n in range(2):
            body = {"model": "mock", "text": f"Number {n}.", "voice_id": "alloy", "response_format": "mp3"}
            assert (await client.post("/generate", json=body)).status_code == 200
        openai = {"model": "mock", "input": "Someone else's.", "voice": "alloy", "response_format": "mp3"}
        kept = (await client.post("/v1/audio/speech", json=openai)).headers["X-Generation-Id"]
        assert len((await client.get("/logs")).json()) == 2
        assert len((await client.get("/logs", params={"scope": "all"})).json()) == 3
        result = (await client.delete("/logs")).json()
        assert result["deleted_generations"] == 2 and result["deleted_files"] == 2 and result["freed_bytes"] > 0
        assert (await client.get("/logs")).json() == []
        assert [g["id"] for g in (await client.get("/v1/history")).json()["items"]] == [kept]
        assert (await client.get(f"/v1/history/{kept}/audio")).status_code == 200
        # Everything, when asked for explicitly.
        assert (await client.delete("/logs", params={"scope": "all"})).json()["deleted_generations"] == 1
        assert (await client.get("/v1/history")).json()["total"] == 0
    assert not any(own_services.blobs.path("generations").iterdir())


async def test_the_server_applies_the_retention_by_itself_to_the_dia_servers_outputs(own_services: Services) -> None:
    own_services.config.update({"output_retention_hours": 1})
    paths = {}
    for source in ("generate", "voicebox", "character", "xtts", "openai"):
        writer = own_services.blobs.writer(f"generations/long-ago-{source}.mp3")
        writer.write(b"old audio")
        paths[source] = writer.commit()
        with own_services.db.session() as session:
            session.add(
                Generation(
                    text="Long ago.",
                    voice="alloy",
                    engine="mock",
                    model="mock",
                    format="mp3",
                    sample_rate=24000,
                    duration_s=1.0,
                    elapsed_s=0.1,
                    file=f"generations/long-ago-{source}.mp3",
                    source=source,
                    created_at=utcnow() - timedelta(hours=2),
                )
            )
    async with in_process(create_app(services=own_services)):
        deadline = time.monotonic() + 10
        while own_services.history.list_page(HistoryFilter(source="generate")).total:
            assert time.monotonic() < deadline, "the retention loop left the Dia server's old outputs"
            await asyncio.sleep(0.1)
    assert not paths.pop("generate").exists()
    # Voicebox's full history, characters' answers, the XTTS service's clips, OpenAI's: all kept.
    assert {g.source for g in own_services.history.list_page().items} == set(paths)
    assert all(path.exists() for path in paths.values())


# -- storage: SQLite and PostgreSQL -----------------------------------------------------------------


@pytest.fixture
def db(database_url: str) -> Iterator[Database]:
    database = Database(database_url)
    database.migrate()
    yield database
    database.dispose()


def test_the_config_table_on_both_databases(db: Database) -> None:
    settings = Settings(save_outputs=False, _env_file=None)
    config = ConfigService(settings=settings, db=db)
    with db.session() as session:  # the PostgreSQL schema lives for the whole session
        session.execute(delete(ConfigEntry))
    assert config.get().model_dump() == {
        "debug_mode": False,
        "save_outputs": False,  # from the settings until changed
        "show_prompts": False,
        "output_retention_hours": 24.0,
    }
    config.update({"save_outputs": True, "output_retention_hours": 1.5})
    config.update({"output_retention_hours": 0})
    again = ConfigService(settings=settings, db=db).get()
    assert (again.save_outputs, again.output_retention_hours, again.show_prompts) == (True, 0.0, False)


def test_history_queries_on_both_databases(db: Database, tmp_path: Path) -> None:
    source = f"t-{uuid.uuid4().hex[:12]}"
    blobs = LocalBlobStore(tmp_path)
    service = HistoryService(db=db, blobs=blobs, config=ConfigService(settings=Settings(_env_file=None), db=db))
    now = utcnow()
    rows = [
        ("First 100% café line", "alloy", "piper", 2.0, 1.0, 30),
        ("second_line", "Ada", "clone", 4.0, 4.0, 20),
        ("Third line", "ada", "clone", 0.0, 0.5, 1),
    ]
    with db.session() as session:
        for n, (text, voice, engine, duration, elapsed, hours) in enumerate(rows):
            key = f"generations/{source}-{n}.mp3"
            writer = blobs.writer(key)
            writer.write(b"a" * 100)
            writer.commit()
            session.add(
                Generation(
                    text=text,
                    voice=voice,
                    engine=engine,
                    model=engine,
                    format="mp3",
                    sample_rate=24000,
                    duration_s=duration,
                    elapsed_s=elapsed,
                    file=key,
                    source=source,
                    created_at=now - timedelta(hours=hours),
                )
            )
    mine = HistoryFilter(source=source)
    assert [g.text for g in service.list_page(mine).items] == ["Third line", "second_line", "First 100% café line"]
    assert service.list_page(HistoryFilter(search="LINE", source=source)).total == 3
    assert service.list_page(HistoryFilter(search="100%", source=source)).total == 1
    assert service.list_page(HistoryFilter(search="_", source=source)).total == 1
    assert service.list_page(HistoryFilter(voice="ADA", source=source)).total == 2
    between = HistoryFilter(source=source, created_after=now - timedelta(hours=25), created_before=now)
    assert [g.voice for g in service.list_page(between).items] == ["ada", "Ada"]
    stats = service.stats(mine)
    assert (stats.total_generations, stats.total_duration_seconds, stats.total_elapsed_seconds) == (3, 6.0, 5.5)
    assert stats.mean_real_time_factor == pytest.approx((0.5 + 1.0) / 2)  # the silent one has no factor
    assert stats.generations_by_voice == {"Ada": 1, "ada": 1, "alloy": 1}
    assert stats.generations_by_engine == {"clone": 2, "piper": 1}
    # The Dia server's default scope does not reach these rows; a scope naming their source does.
    assert service.cleanup(older_than_hours=10).deleted_generations == 0
    result = service.cleanup(older_than_hours=10, sources=frozenset({source}))
    assert result.deleted_generations >= 2 and result.deleted_files >= 2 and result.freed_bytes >= 200
    assert [g.text for g in service.list_page(mine).items] == ["Third line"]
    assert sorted(p.name for p in (tmp_path / "generations").iterdir()) == [f"{source}-2.mp3"]
