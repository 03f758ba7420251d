"""Parla's settings: one object, read from the environment (prefix ``PARLA_``, nesting with ``__``)."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AliasChoices, BaseModel, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

LogLevel = Literal["critical", "error", "warning", "info", "debug"]

MOCK_WORKER_URL = "http://127.0.0.1:8999"
"""Where the model microservice API's testing mode (``TESTING=true``) expects the mock engine's worker."""


class RemoteEngineSettings(BaseModel):
    """An engine served by a ``parla serve-engine`` worker (``PARLA_ENGINES__<NAME>__URL``)."""

    url: str
    """Base URL of the worker, e.g. ``http://gpu-1:8003``."""
    timeout_s: float = Field(default=300.0, gt=0)
    """Longest wait for the worker's next bytes while it synthesises (a long piece on a slow GPU)."""


DIALECTS = ("openai", "standard", "xtts", "titans", "dia", "voicebox")
"""The reference APIs (and OpenAI's) that Parla speaks; each can be switched off or moved."""


class DialectSettings(BaseModel):
    """One API dialect (``PARLA_DIALECTS__VOICEBOX__PREFIX=/voicebox``, ``..._ENABLED=false``)."""

    enabled: bool = True
    prefix: str = Field(default="", pattern=r"^(/[A-Za-z0-9._~-]+)*$")
    """Mount its paths under this prefix (e.g. ``/dia``) instead of at the root."""


class Settings(BaseSettings):
    """Everything an operator can set. Each field reads ``PARLA_<NAME>``."""

    model_config = SettingsConfigDict(env_prefix="PARLA_", env_nested_delimiter="__", env_file=".env", extra="ignore")

    host: str = "127.0.0.1"
    """Address the HTTP server binds to. Loopback unless told otherwise."""
    port: int = Field(default=8000, ge=1, le=65535)
    """TCP port of the HTTP server."""
    data_dir: Path = Path("./data")
    """Where the database, voices, generated audio and caches live."""
    database_url: str | None = None
    """SQLAlchemy URL. Empty means SQLite at ``<data_dir>/parla.db``; PostgreSQL e.g.
    ``postgresql+psycopg://user@host:5432/parla``."""
    default_engine: str = "piper"
    """Engine used when a request names none (or names an OpenAI model such as ``tts-1``)."""
    default_voice: str = "alloy"
    """Voice used when a request names none."""
    default_speaker_clip: Path | None = None
    """A recording that the XTTS dialect's ``default`` speaker clones (the XTTS service API's XTTS_DEFAULT_VOICE)."""
    default_clone_engine: str = "clone"
    """Engine used for library (cloned) voices when a request names no engine."""
    max_input_chars: int = Field(default=100_000, ge=1)
    """Longest text accepted by a generation request, in characters."""
    max_upload_bytes: int = Field(default=50 * 1024 * 1024, ge=1024)
    """Largest audio upload accepted, in bytes."""
    cors_origins: Annotated[list[str], NoDecode] = ["*"]
    """Origins allowed by CORS: a comma-separated list, ``*`` for any."""
    dialects: dict[str, DialectSettings] = {}
    """Per dialect (openai, standard, xtts, dia, voicebox): enabled, and the prefix it is mounted under."""
    allowed_paths: Annotated[list[Path], NoDecode] = []
    """Directories besides the data dir where the model microservice API's file paths (``voice_id``,
    ``output_filepath``) may point: a comma-separated list. Anything else is refused."""
    engines: dict[str, RemoteEngineSettings] = {}
    """Engines served by workers, by name (``PARLA_ENGINES__DIA__URL=http://gpu-1:8003``); each
    replaces a local engine of the same name."""
    testing: bool = Field(default=False, validation_alias=AliasChoices("testing", "parla_testing"))
    """The model microservice API's testing mode (``TESTING=true``): every request goes to the mock
    worker on port 8999."""
    testing_ui: bool = Field(default=False, validation_alias=AliasChoices("testing_ui", "parla_testing_ui"))
    """The model microservice API's UI testing mode (``TESTING_UI=true``): the same as ``testing``."""
    log_level: LogLevel = "info"
    """Logging verbosity of the server."""
    mock_delay_s: float = Field(default=0.0, ge=0, le=60)
    """Seconds the mock engine waits per request, for its "realistic processing delays" (model microservice API)."""
    espeak_binary: str = "espeak-ng"
    """The espeak-ng executable used by the ``espeak`` engine (a name on PATH or a path)."""
    piper_model_path: Path | None = None
    """A Piper ``.onnx`` voice to use instead of the bundled one (its ``.onnx.json`` beside it)."""
    save_outputs: bool = True
    """Keep the audio of every generation under ``<data_dir>/generations`` (the default of the
    runtime config's ``save_outputs``, which ``PUT /config`` changes while the server runs)."""
    cleanup_interval_s: float = Field(default=3600.0, ge=1)
    """How often the server deletes generations older than the runtime config's
    ``output_retention_hours`` (when that is above 0)."""
    whisper_model_path: Path | None = None
    """A CTranslate2 Whisper model directory; empty means the bundled tiny.en."""
    chroma_url: str | None = None
    """A Chroma server (``http://host:8000``) for the characters' knowledge bases; empty keeps them
    in an embedded Chroma under ``<data_dir>/chroma`` (the Titans character API's ``CHROMA_DB_PATH``)."""
    llm_base_url: str | None = None
    """The OpenAI-compatible chat endpoint for characters whose ``llm_config`` names none (the
    Titans character API's ``OPENAI_BASE_URL``); empty: such characters use the embedded GGUF model."""
    llm_api_key: SecretStr | None = None
    """The key for ``llm_base_url`` (the Titans character API's ``OPENAI_API_KEY``)."""
    llm_runtime_autoinstall: bool = True
    """When the embedded model's runtime (llama-cpp-python) is missing, ``parla serve`` builds and
    installs it in the background (characters answer 503 until it is ready); false leaves it to
    ``parla llm-runtime install``."""
    max_question_chars: int = Field(default=4000, ge=1)
    """The longest question a character takes."""
    redis_url: str | None = None
    """Redis for the job queue (``redis://host:6379/0``). Empty: a SQLite queue under the data dir."""
    queue_name: str = "parla"
    """Name of the queue; servers and workers that share one use the same name."""
    in_process_worker: bool | None = None
    """Run a queue consumer inside the server. Default: yes with the SQLite queue, no with Redis
    (then ``parla worker`` processes consume, on any machine)."""
    job_lease_s: float = Field(default=15.0, gt=0)
    """A running job whose worker has not reported for this long is considered lost."""
    job_max_attempts: int = Field(default=2, ge=1)
    """Runs a job gets before a lost worker makes it fail instead of retrying it."""
    job_ttl_hours: float = Field(default=1.0, gt=0)
    """Finished jobs are forgotten, and pending ones expire, after this many hours (the Dia server API: 1)."""
    url_fetch_timeout_s: float = Field(default=20.0, gt=0)
    """How long fetching a sample by URL may take."""
    url_fetch_allow_private: bool = False
    """Allow sample URLs on loopback and private networks (only for trusted set-ups and tests:
    otherwise a client could make the server reach into its own network)."""

    @field_validator("dialects")
    @classmethod
    def _known_dialects(cls, value: dict[str, DialectSettings]) -> dict[str, DialectSettings]:
        unknown = sorted(set(value) - set(DIALECTS))
        if unknown:
            raise ValueError(f"unknown dialect(s) {', '.join(unknown)}; known: {', '.join(DIALECTS)}")
        return value

    def dialect(self, name: str) -> DialectSettings:
        return self.dialects.get(name, DialectSettings())

    @field_validator("cors_origins", "allowed_paths", mode="before")
    @classmethod
    def _split_list(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @model_validator(mode="after")
    def _testing_mode(self) -> Settings:
        # The model microservice API: in testing mode the callers reach the mock service on port 8999 instead of
        # the real models. Settings named explicitly still win.
        if self.testing or self.testing_ui:
            self.engines.setdefault("mock", RemoteEngineSettings(url=MOCK_WORKER_URL))
            for name in ("default_engine", "default_clone_engine"):
                if name not in self.model_fields_set:
                    setattr(self, name, "mock")
        return self

    @property
    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'parla.db').resolve()}"


@lru_cache
def get_settings() -> Settings:
    return Settings()
