"""Storage on SQLite and on PostgreSQL: migrations, the generations record, nothing half-written."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import event, inspect, select, text

from parla.engines import AudioChunk, Capabilities, Engine, EngineRegistry, SynthesisRequest
from parla.services import Services
from parla.services.speech import SpeechOptions, SpeechService
from parla.services.voices import VoiceLibrary
from parla.settings import Settings
from parla.store import Database, Generation, LocalBlobStore
from tests.conftest import duration_of


class Failing(Engine):
    """Speaks one chunk, then breaks: a synthesis that fails halfway."""

    name = "failing"
    capabilities = Capabilities(sample_rate=22050)

    def synthesize(self, request: SynthesisRequest) -> Iterator[AudioChunk]:
        yield AudioChunk(np.zeros(22050, dtype=np.float32), 22050)
        raise RuntimeError("the model fell over")


def _newest_revision() -> str:
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    from parla.store.db import MIGRATIONS

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    head = ScriptDirectory.from_config(config).get_current_head()
    assert head is not None
    return head


@pytest.fixture
def db(database_url: str) -> Iterator[Database]:
    database = Database(database_url)
    database.migrate()
    yield database
    database.dispose()


def _speech(db: Database, tmp_path: Path, services: Services) -> SpeechService:
    """Speech on ``db``: the mock engine by default, Piper and a failing engine when named."""
    settings = Settings(
        data_dir=tmp_path, default_voice="joe", default_engine="mock", default_clone_engine="mock", _env_file=None
    )
    engines = EngineRegistry([services.engines.get("piper"), services.engines.get("mock"), Failing()])
    blobs = LocalBlobStore(tmp_path)
    voices = VoiceLibrary(settings=settings, db=db, blobs=blobs, transcriber=services.transcriber)
    return SpeechService(settings=settings, registry=engines, voices=voices, db=db, blobs=blobs)


def test_migrations_create_the_schema_and_are_idempotent(db: Database) -> None:
    db.migrate()
    inspector = inspect(db.engine)
    columns = {c["name"] for c in inspector.get_columns("generations")}
    assert {"text", "voice", "engine", "parameters", "seed", "format", "duration_s", "elapsed_s", "file"} <= columns
    with db.engine.connect() as conn:
        assert conn.execute(text("SELECT version_num FROM alembic_version")).scalar() == _newest_revision()


@pytest.mark.model
async def test_every_synthesis_is_recorded(db: Database, tmp_path: Path, services: Services) -> None:
    speech = _speech(db, tmp_path, services)
    options = SpeechOptions(
        input="Recorded for history.",
        voice="nova",
        model="piper",
        response_format="wav",
        speed=1.25,
        seed=99,
        parameters={"noise_scale": 0.3},
    )
    plan = speech.prepare(options, source="test")
    rendered = await speech.render(plan)
    audio = rendered.audio
    with db.session() as session:
        row = session.get(Generation, plan.id)
        assert row is not None
        assert (row.text, row.voice, row.engine, row.format, row.seed) == (
            "Recorded for history.",
            "nova",
            "piper",
            "wav",
            99,
        )
        assert row.parameters["speed"] == 1.25 and row.parameters["noise_scale"] == 0.3
        assert row.duration_s == pytest.approx(duration_of(audio), abs=0.01)
        assert row.elapsed_s > 0 and row.real_time_factor > 0
        assert row.file is not None
    stored = (tmp_path / row.file).read_bytes()
    # The stored file is what was streamed, with the WAV sizes filled in.
    assert stored[44:] == audio[44:]
    assert int.from_bytes(stored[40:44], "little") == len(stored) - 44
    assert duration_of(stored) == pytest.approx(row.duration_s, abs=0.01)


async def test_a_synthesis_that_fails_halfway_leaves_no_row_and_no_file(
    db: Database, tmp_path: Path, services: Services
) -> None:
    speech = _speech(db, tmp_path, services)
    plan = speech.prepare(
        SpeechOptions(input="This will break.", model="failing", response_format="mp3"), source="test"
    )
    with pytest.raises(RuntimeError, match="fell over"):
        await speech.render(plan)
    with db.session() as session:
        assert session.get(Generation, plan.id) is None
    assert not any((tmp_path / "generations").iterdir())


async def test_a_client_that_leaves_early_leaves_no_row_and_no_file(
    db: Database, tmp_path: Path, services: Services
) -> None:
    speech = _speech(db, tmp_path, services)
    plan = speech.prepare(
        SpeechOptions(input="One. Two. Three. Four. Five. Six.", response_format="mp3"), source="test"
    )
    stream = speech.stream(plan)
    async for _ in stream:
        break
    await stream.aclose()
    with db.session() as session:
        assert session.get(Generation, plan.id) is None
    assert not any((tmp_path / "generations").iterdir())


async def test_a_failed_record_removes_the_file(
    db: Database, tmp_path: Path, services: Services, request: pytest.FixtureRequest
) -> None:
    speech = _speech(db, tmp_path, services)

    def refuse_generations(_conn: object, _cursor: object, statement: str, *_: object) -> None:
        # The database goes away when the generation's row is written, after its file.
        if statement.lstrip().upper().startswith(f"INSERT INTO {Generation.__tablename__.upper()}"):
            raise ConnectionError("database went away")

    event.listen(db.engine, "before_cursor_execute", refuse_generations)
    request.addfinalizer(lambda: event.remove(db.engine, "before_cursor_execute", refuse_generations))
    plan = speech.prepare(SpeechOptions(input="Nobody will remember this.", response_format="flac"), source="test")
    with pytest.raises(ConnectionError):
        await speech.render(plan)
    assert not any((tmp_path / "generations").iterdir())


def test_rows_round_trip_json_parameters(db: Database) -> None:
    with db.session() as session:
        session.add(
            Generation(
                text="t",
                voice="v",
                engine="e",
                model="m",
                parameters={"a": [1, 2], "b": {"c": True}},
                seed=None,
                format="wav",
                sample_rate=1,
                duration_s=1.0,
                elapsed_s=0.5,
                source="test",
            )
        )
    with db.session() as session:
        rows = session.scalars(select(Generation).where(Generation.source == "test")).all()
        assert any(r.parameters == {"a": [1, 2], "b": {"c": True}} for r in rows)
