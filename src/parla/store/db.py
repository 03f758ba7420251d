"""Database engine and sessions; migrations run through Alembic on start."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event, inspect, text
from sqlalchemy.orm import Session, sessionmaker

MIGRATIONS = Path(__file__).with_name("migrations")
_REVISION = re.compile(r"^(down_revision|revision)\b[^=]*=\s*(.+)$", re.MULTILINE)


def head_revisions() -> set[str]:
    """The newest revisions of the migrations, read from their files without Alembic: those no other
    revises. Empty when the files cannot be read so (then Alembic decides)."""
    revisions: set[str] = set()
    revised: set[str] = set()
    for path in (MIGRATIONS / "versions").glob("*.py"):
        for key, value in _REVISION.findall(path.read_text(encoding="utf-8")):
            names = set(re.findall(r"[\"']([^\"']+)[\"']", value))
            (revisions if key == "revision" else revised).update(names)
    return revisions - revised


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    # WAL lets readers proceed while a generation is being recorded; busy_timeout waits
    # for a writer instead of failing with "database is locked".
    cursor.execute("PRAGMA journal_mode=WAL")
    # With WAL, NORMAL is safe against a crashed process and skips an fsync per commit.
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=5000")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


class Database:
    def __init__(self, url: str, **engine_kwargs: Any) -> None:
        self.url = url
        if url.startswith("sqlite"):
            path = url.split("///", 1)[-1]
            if path and path != ":memory:":
                Path(path).parent.mkdir(parents=True, exist_ok=True)
            engine_kwargs.setdefault("connect_args", {})["check_same_thread"] = False
        else:
            engine_kwargs.setdefault("pool_pre_ping", True)
        self.engine: Engine = create_engine(url, **engine_kwargs)
        if url.startswith("sqlite"):
            event.listen(self.engine, "connect", _sqlite_pragmas)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)

    def current_revisions(self) -> set[str]:
        """The revisions the database is at (empty for a database Alembic has not touched)."""
        with self.engine.connect() as connection:
            if not inspect(connection).has_table("alembic_version"):
                return set()
            return {str(row[0]) for row in connection.execute(text("SELECT version_num FROM alembic_version"))}

    def migrate(self) -> None:
        """Bring the schema to the newest Alembic revision. A database already there (every start but
        the first after an upgrade) is left alone without importing Alembic, which only a migration
        needs (some 10 MB resident, and its start-up time)."""
        heads = head_revisions()
        if heads and self.current_revisions() == heads:
            return
        from alembic import command  # lazy: see above
        from alembic.config import Config

        config = Config()
        config.set_main_option("script_location", str(MIGRATIONS))
        with self.engine.begin() as connection:
            config.attributes["connection"] = connection
            command.upgrade(config, "head")

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A session that commits on success and rolls back on any error."""
        with self._sessions() as session:
            try:
                yield session
                session.commit()
            except BaseException:
                session.rollback()
                raise

    def dispose(self) -> None:
        self.engine.dispose()
