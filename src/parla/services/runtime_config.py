"""Runtime config: what an operator may change while the server runs (the Dia server API's ``/config``).

The values live in the ``config`` table, not in memory, so every API replica and every restart
sees the same ones. A key nobody has changed has no row and keeps its default; ``save_outputs``
defaults to the ``PARLA_SAVE_OUTPUTS`` setting, and a change made through the API wins over it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from sqlalchemy import select

from parla.errors import InvalidInputError, ParlaError, validation_detail
from parla.settings import Settings
from parla.store.db import Database
from parla.store.models import ConfigEntry

log = logging.getLogger(__name__)

PARLA_LOGGER = "parla"
"""The logger ``debug_mode`` turns to DEBUG: every module's logger sits under it."""


CACHE_S = 1.0
"""How long a read of the config is reused."""

GOVERNED_SOURCES = frozenset({"generate"})
"""The generations this config governs: the Dia server API's outputs (its ``/generate``, at once or
as a job). Its ``save_outputs`` and ``output_retention_hours``, and its ``/logs`` and ``/cleanup``,
act on these alone: other APIs promise to keep what they made (voicebox's full history, the
characters' answers by URL, the XTTS service's stored clips) until their owner deletes it."""


class InvalidConfigError(ParlaError):
    """A known key with a value of the wrong type or out of range."""

    status_code = 422


class RuntimeConfig(BaseModel):
    """The Dia server API's server configuration, field for field."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    debug_mode: bool = Field(False, description="Log at DEBUG level (the 'parla' loggers).")
    save_outputs: bool = Field(True, description="Keep the audio file of every generation.")
    show_prompts: bool = Field(False, description="Show the text of each generation in /logs.")
    output_retention_hours: float = Field(
        24.0, ge=0, description="Delete generations and their audio older than this; 0 keeps them forever."
    )


def _describe(exc: ValidationError) -> tuple[str, str | None]:
    return validation_detail(list(exc.errors()))


class ConfigService:
    def __init__(self, *, settings: Settings, db: Database) -> None:
        self.settings = settings
        self.db = db
        # The level to return to when debug_mode is turned off again.
        self._base_level = logging.getLogger(PARLA_LOGGER).level
        self._cached: tuple[float, RuntimeConfig] | None = None

    def defaults(self) -> RuntimeConfig:
        return RuntimeConfig(
            save_outputs=self.settings.save_outputs, output_retention_hours=self.settings.output_retention_hours
        )

    def get(self) -> RuntimeConfig:
        """The current config: the defaults with every stored change laid over them.

        Read at most once a second: every generation asks (save_outputs), and a change made
        through another server sharing the database takes effect here within that second."""
        now = time.monotonic()
        if self._cached and now - self._cached[0] < CACHE_S:
            return self._cached[1].model_copy()
        with self.db.session() as session:
            stored = {entry.key: entry.value for entry in session.scalars(select(ConfigEntry))}
        config = self.defaults()
        for key, value in stored.items():
            if key not in RuntimeConfig.model_fields:
                continue  # written by a newer version of Parla sharing the database
            try:
                setattr(config, key, value)
            except ValidationError:  # edited by hand: the default is safer than a crash
                log.warning("ignoring the stored config value %s=%r", key, value)
        self._cached = (now, config)
        return config.model_copy()

    def update(self, changes: Mapping[str, Any]) -> RuntimeConfig:
        """Change some keys, keep the others; the whole config after the change is returned."""
        known = list(RuntimeConfig.model_fields)
        unknown = sorted(set(changes) - set(known))
        if unknown:
            raise InvalidInputError(
                f"unknown config key{'s' if len(unknown) > 1 else ''} {', '.join(map(repr, unknown))}; "
                f"known keys: {', '.join(known)}",
                param=unknown[0],
            )
        try:
            checked = RuntimeConfig.model_validate({**self.defaults().model_dump(), **changes})
        except ValidationError as exc:
            detail, param = _describe(exc)
            raise InvalidConfigError(detail, param=param) from None
        with self.db.session() as session:
            for key in changes:
                session.merge(ConfigEntry(key=key, value=getattr(checked, key)))
        self._cached = None
        return self.apply()

    def apply(self, config: RuntimeConfig | None = None) -> RuntimeConfig:
        """Bring this process in line with the config (the log level); returns the config applied."""
        config = config or self.get()
        logging.getLogger(PARLA_LOGGER).setLevel(logging.DEBUG if config.debug_mode else self._base_level)
        return config
