"""Settings: the reference APIs' operator variables are read as aliases of Parla's settings (Parla's
``PARLA_*`` name wins when both are set), and values Parla cannot honour are refused at start-up."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError
from sqlalchemy.engine import make_url

from parla.knowledge.embedder import bundled_model_dir
from parla.services.runtime_config import ConfigService
from parla.settings import Settings
from parla.store.db import Database

ALIASES = (
    "XTTS_MODEL_DIR",
    "XTTS_DEFAULT_VOICE",
    "XTTS_STORE_DIR",
    "XTTS_ALLOW_ORIGINS",
    "XTTS_USE_GPU",
    "CHROMA_DB_PATH",
    "EMBEDDING_MODEL",
    "ENABLE_GPU",
    "OPENAI_API_KEY",
    "OPENAI_BASE_URL",
    "DEFAULT_OPENAI_MODEL",
    "GGUF_MODEL_PATH",
    "MODELS_DIR",
    "DB_NAME",
    "DB_USER",
    "DB_PASSWORD",
    "DB_HOST",
    "DB_PORT",
)


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Only what each test sets: no alias or PARLA_ variable from the shell that runs the tests."""
    for name in list(os.environ):
        if name.upper() in ALIASES or name.upper().startswith("PARLA_"):
            monkeypatch.delenv(name)


def _settings() -> Settings:
    return Settings(_env_file=None)


@pytest.fixture
def gguf(tmp_path: Path) -> Path:
    path = tmp_path / "model.gguf"
    path.write_bytes(b"GGUF")
    return path


def _value(settings: Settings, name: str) -> Any:
    value = getattr(settings, name)
    return value.get_secret_value() if hasattr(value, "get_secret_value") else value


@pytest.mark.parametrize(
    ("variable", "value", "setting", "expected"),
    [
        ("XTTS_MODEL_DIR", "/srv/xtts", "xtts_model_dir", Path("/srv/xtts")),
        ("XTTS_DEFAULT_VOICE", "/srv/voice.wav", "default_speaker_clip", Path("/srv/voice.wav")),
        ("XTTS_STORE_DIR", "/srv/generated", "data_dir", Path("/srv/generated")),
        (
            "XTTS_ALLOW_ORIGINS",
            "https://a.example, https://b.example",
            "cors_origins",
            ["https://a.example", "https://b.example"],
        ),
        ("XTTS_USE_GPU", "true", "device", "cuda"),
        ("XTTS_USE_GPU", "false", "device", "cpu"),
        ("ENABLE_GPU", "True", "device", "cuda"),
        ("ENABLE_GPU", "0", "device", "cpu"),
        ("CHROMA_DB_PATH", "/srv/chroma_db", "chroma_path", Path("/srv/chroma_db")),
        (
            "EMBEDDING_MODEL",
            "sentence-transformers/all-MiniLM-L6-v2",
            "embedding_model",
            "sentence-transformers/all-MiniLM-L6-v2",
        ),
        ("OPENAI_API_KEY", "sk-test", "llm_api_key", "sk-test"),
        ("OPENAI_BASE_URL", "http://127.0.0.1:11434/v1", "llm_base_url", "http://127.0.0.1:11434/v1"),
        ("MODELS_DIR", "/srv/models", "models_dir", Path("/srv/models")),
        ("DB_NAME", "titans_db", "db_name", "titans_db"),
        ("DB_PORT", "6543", "db_port", 6543),
    ],
)
def test_each_alias_sets_its_setting(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str, setting: str, expected: Any
) -> None:
    monkeypatch.setenv(variable, value)
    assert _value(_settings(), setting) == expected


def test_the_gguf_and_default_model_aliases(monkeypatch: pytest.MonkeyPatch, gguf: Path) -> None:
    monkeypatch.setenv("GGUF_MODEL_PATH", str(gguf))
    monkeypatch.setenv("OPENAI_BASE_URL", "https://api.openai.com/v1")
    monkeypatch.setenv("DEFAULT_OPENAI_MODEL", "gpt-3.5-turbo")
    settings = _settings()
    assert settings.llm_model_path == gguf and settings.llm_model == "gpt-3.5-turbo"


@pytest.mark.parametrize(
    ("variable", "parla", "setting", "expected"),
    [
        ("XTTS_STORE_DIR", "PARLA_DATA_DIR", "data_dir", Path("/parla")),
        ("XTTS_DEFAULT_VOICE", "PARLA_DEFAULT_SPEAKER_CLIP", "default_speaker_clip", Path("/parla")),
        ("XTTS_ALLOW_ORIGINS", "PARLA_CORS_ORIGINS", "cors_origins", ["/parla"]),
        ("XTTS_MODEL_DIR", "PARLA_XTTS_MODEL_DIR", "xtts_model_dir", Path("/parla")),
        ("CHROMA_DB_PATH", "PARLA_CHROMA_PATH", "chroma_path", Path("/parla")),
        ("MODELS_DIR", "PARLA_MODELS_DIR", "models_dir", Path("/parla")),
        ("OPENAI_API_KEY", "PARLA_LLM_API_KEY", "llm_api_key", "/parla"),
        ("DB_NAME", "PARLA_DB_NAME", "db_name", "/parla"),
    ],
)
def test_parla_s_own_name_wins_over_the_alias(
    monkeypatch: pytest.MonkeyPatch, variable: str, parla: str, setting: str, expected: Any
) -> None:
    monkeypatch.setenv(variable, "/alias")
    monkeypatch.setenv(parla, "/parla")
    assert _value(_settings(), setting) == expected


def test_parla_s_own_name_wins_for_the_device_and_the_endpoint(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ENABLE_GPU", "true")
    monkeypatch.setenv("XTTS_USE_GPU", "true")
    monkeypatch.setenv("PARLA_DEVICE", "cpu")
    monkeypatch.setenv("OPENAI_BASE_URL", "https://api.openai.com/v1")
    monkeypatch.setenv("PARLA_LLM_BASE_URL", "http://127.0.0.1:8080/v1")
    settings = _settings()
    assert settings.device == "cpu" and settings.llm_base_url == "http://127.0.0.1:8080/v1"


def test_fields_with_aliases_are_still_given_by_name(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, cors_origins=["https://x.example"], device="cpu", _env_file=None)
    assert settings.data_dir == tmp_path and settings.cors_origins == ["https://x.example"]
    assert settings.resolved_chroma_path == tmp_path / "chroma"  # CHROMA_DB_PATH's default follows the data dir


def test_empty_alias_values_mean_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    # The Titans character API's .env template leaves optional variables empty.
    for name in ("OPENAI_BASE_URL", "OPENAI_API_KEY", "GGUF_MODEL_PATH", "CHROMA_DB_PATH", "XTTS_DEFAULT_VOICE"):
        monkeypatch.setenv(name, "")
    settings = _settings()
    assert settings.llm_base_url is None and settings.llm_api_key is None and settings.llm_model_path is None
    assert settings.chroma_path is None and settings.default_speaker_clip is None


def test_the_embedding_model_is_minilm_by_name_or_by_directory(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("all-MiniLM-L6-v2", "sentence-transformers/all-MiniLM-L6-v2"):
        monkeypatch.setenv("EMBEDDING_MODEL", name)
        assert _settings().embedding_model_dir is None  # the bundled copy
    monkeypatch.setenv("EMBEDDING_MODEL", str(bundled_model_dir()))
    assert _settings().embedding_model_dir == bundled_model_dir()


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("EMBEDDING_MODEL", "text-embedding-ada-002", "embeds knowledge with its bundled all-MiniLM-L6-v2 only"),
        ("ENABLE_GPU", "maybe", "is not one of auto, cpu, cuda, cuda:N"),
        ("XTTS_USE_GPU", "tpu", "is not one of auto, cpu, cuda, cuda:N"),
        ("GGUF_MODEL_PATH", "./models/your-model.gguf", "GGUF_MODEL_PATH) 'models/your-model.gguf' is not a file"),
        ("OPENAI_BASE_URL", "api.openai.com/v1", "is not an http(s) URL"),
        ("DEFAULT_OPENAI_MODEL", "gpt-3.5-turbo", "no endpoint serves it: set PARLA_LLM_BASE_URL or OPENAI_BASE_URL"),
        ("DB_PORT", "postgres", "valid integer"),
    ],
)
def test_bad_values_are_refused_with_a_clear_message(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str, message: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(ValidationError) as caught:
        _settings()
    assert message in str(caught.value)


def test_an_embedding_model_directory_must_hold_minilm(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EMBEDDING_MODEL", str(tmp_path))
    with pytest.raises(ValidationError, match=r"lacks config\.json, model\.safetensors, tokenizer\.json"):
        _settings()
    for name in ("model.safetensors", "tokenizer.json"):
        (tmp_path / name).write_bytes(b"{}")
    (tmp_path / "config.json").write_text('{"model_type": "bert", "hidden_size": 768, "num_hidden_layers": 12}')
    with pytest.raises(ValidationError, match="does not hold all-MiniLM-L6-v2"):
        _settings()


def test_the_titans_database_variables_make_a_postgresql_url(monkeypatch: pytest.MonkeyPatch) -> None:
    assert _settings().resolved_database_url.startswith("sqlite:///")
    for name, value in {"DB_NAME": "titans_db", "DB_USER": "ti tan", "DB_PASSWORD": "p@ss", "DB_HOST": "db"}.items():
        monkeypatch.setenv(name, value)
    url = make_url(_settings().resolved_database_url)
    assert url.drivername == "postgresql+psycopg" and (url.host, url.port, url.database) == ("db", 5432, "titans_db")
    assert (url.username, url.password) == ("ti tan", "p@ss")  # quoted on the way in, intact on the way out
    monkeypatch.setenv("PARLA_DATABASE_URL", "sqlite:////tmp/x.db")
    assert _settings().resolved_database_url == "sqlite:////tmp/x.db"  # Parla's own setting wins


def test_the_retention_setting_seeds_the_runtime_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PARLA_OUTPUT_RETENTION_HOURS", "48")
    settings = Settings(data_dir=tmp_path, _env_file=None)
    db = Database(settings.resolved_database_url)
    db.migrate()
    try:
        config = ConfigService(settings=settings, db=db)
        assert config.get().output_retention_hours == 48
        assert config.update({"output_retention_hours": 6}).output_retention_hours == 6  # PUT /config wins
        assert ConfigService(settings=settings, db=db).get().output_retention_hours == 6
    finally:
        db.dispose()
    monkeypatch.setenv("PARLA_OUTPUT_RETENTION_HOURS", "-1")
    with pytest.raises(ValidationError, match="greater than or equal to 0"):
        _settings()


def test_the_services_use_the_chroma_path_and_the_embedding_model(tmp_path: Path) -> None:
    from parla.services import Services

    settings = Settings(
        data_dir=tmp_path / "data", chroma_path=tmp_path / "chroma_db", embedding_model=str(bundled_model_dir())
    )
    services = Services.build(settings)
    try:
        assert services.characters.knowledge.path == tmp_path / "chroma_db"
        assert services.characters.knowledge.embedder.model_dir == bundled_model_dir()
    finally:
        services.close()
