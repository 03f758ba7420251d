"""Checking what a client sends about a character, before anything is written.

A character is made of many parts (a voice, knowledge, an image, a language model, Whisper
settings); each is checked here, and a whole request becomes a ``NewCharacter`` or a
``CharacterChange`` only once all of it passed, so a bad part is refused (4xx) with nothing
written. This is also where the language model a character names is chosen: a named model is
what answers, never a stand-in.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from parla.audio.preprocess import PreprocessSettings
from parla.characters.llm import (
    REPO_FILE,
    LLMConfig,
    LLMError,
    ModelLookupError,
    bundled_model_path,
    find_local_model,
    is_bundled_model,
    local_model_help,
    models_dir_file,
)
from parla.characters.prompting import parse_style_examples
from parla.characters.shapes import (
    CharacterChange,
    CharacterFields,
    CharacterUploads,
    CurrentSettings,
    Image,
    Knowledge,
    NewCharacter,
    STTSettings,
    Upload,
    VoiceCloningSettings,
    VoiceSource,
)
from parla.errors import InvalidInputError, ServiceUnavailableError, TooLargeError, validation_detail
from parla.knowledge.documents import DocumentError, passages
from parla.paths import PathNotAllowedError, PathPolicy
from parla.services.voices import VoiceLibrary
from parla.settings import Settings

MAX_IMAGE_BYTES = 10 * 1024 * 1024
_IMAGE_KINDS = {b"\x89PNG\r\n\x1a\n": "png", b"\xff\xd8\xff": "jpg", b"GIF87a": "gif", b"GIF89a": "gif"}


def image_kind(data: bytes) -> str | None:
    """The image format the bytes start with, or ``None`` for anything else."""
    for magic, kind in _IMAGE_KINDS.items():
        if data.startswith(magic):
            return kind
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    return None


def image(upload: Upload) -> Image:
    if len(upload.data) > MAX_IMAGE_BYTES:
        raise TooLargeError("character_image is larger than 10 MB", param="character_image")
    kind = image_kind(upload.data)
    if kind is None:
        raise InvalidInputError("character_image is not a PNG, JPEG, GIF or WebP image", param="character_image")
    return Image(upload, kind)


def knowledge(upload: Upload) -> Knowledge:
    try:
        return Knowledge(upload, passages(upload.data, upload.filename or "knowledge.txt"))
    except DocumentError as exc:
        raise InvalidInputError(f"knowledge_base_file: {exc}", param="knowledge_base_file") from None


def preprocessing(settings: dict[str, Any]) -> PreprocessSettings | None:
    """The audio preprocessing options (the Titans character API's), read at the top level of
    ``voice_cloning_settings`` or under its ``audio_preprocessing``; ``None`` when ``preprocess_audio`` is off."""
    if not settings.get("preprocess_audio", True):
        return None
    nested = settings.get("audio_preprocessing") or {}
    if not isinstance(nested, dict):
        raise InvalidInputError(
            "voice_cloning_settings.audio_preprocessing must be an object", param="voice_cloning_settings"
        )
    given = {key: settings[key] for key in PreprocessSettings.model_fields if key in settings}
    try:
        return PreprocessSettings.model_validate({**given, **nested})
    except ValidationError as exc:
        detail = validation_detail(exc.errors(), "voice_cloning_settings")[0]
        raise InvalidInputError(detail, param="voice_cloning_settings") from None


def voice_source(upload: Upload, settings: dict[str, Any]) -> VoiceSource:
    """The voice to make from a reference recording, preprocessed unless ``preprocess_audio`` is off."""
    return VoiceSource(upload, preprocessing(settings), settings.get("language", "en"), settings.get("reference_text"))


def _settings_of(model: type[BaseModel], raw: dict[str, Any] | None, param: str) -> dict[str, Any]:
    try:
        return model.model_validate(raw or {}).model_dump(exclude_none=True)
    except ValidationError as exc:
        raise InvalidInputError(validation_detail(exc.errors(), param)[0], param=param) from None


def _name(raw: str) -> str:
    name = raw.strip()
    if not name:
        raise InvalidInputError("a character needs a name", param="name")
    return name


class CharacterChecks:
    def __init__(self, *, settings: Settings, voices: VoiceLibrary) -> None:
        self.settings = settings
        self.voices = voices
        self.paths = PathPolicy.from_settings(settings)

    def question(self, question: str | None) -> str:
        question = (question or "").strip()
        if not question:
            raise InvalidInputError("the question is empty", param="question")
        if len(question) > self.settings.max_question_chars:
            raise TooLargeError(
                f"the question is {len(question)} characters; the limit is {self.settings.max_question_chars}",
                param="question",
            )
        return question

    # -- whole requests ---------------------------------------------------------------------------

    def new_character(self, fields: CharacterFields, uploads: CharacterUploads) -> NewCharacter:
        """Everything that can be checked, checked (blocking: voices and model files are looked up)."""
        name = _name(fields.name or "")
        _, llm_config = self.llm_config(fields.llm_model, fields.llm_config)
        voice_settings = self.voice_settings(fields.voice_cloning_settings)
        stt = self.stt_settings(fields.stt_settings)
        self._known_voice(voice_settings)
        style = parse_style_examples(uploads.style_tuning_file.data) if uploads.style_tuning_file else []
        picture = image(uploads.character_image) if uploads.character_image else None
        texts = knowledge(uploads.knowledge_base_file) if uploads.knowledge_base_file else None
        return NewCharacter(
            name=name,
            llm_model=fields.llm_model,
            llm_config=llm_config,
            voice_cloning_settings=voice_settings,
            stt_settings=stt,
            style_examples=[e.model_dump() for e in style],
            voice=voice_source(uploads.voice_cloning_audio, voice_settings) if uploads.voice_cloning_audio else None,
            image=picture,
            knowledge=texts,
        )

    def change(self, current: CurrentSettings, fields: CharacterFields, uploads: CharacterUploads) -> CharacterChange:
        """What is given, checked against what is stored; a new file replaces the old one."""
        columns: dict[str, Any] = {}
        if fields.name is not None:
            columns["name"] = _name(fields.name)
        if fields.llm_model is not None or fields.llm_config is not None:
            llm_model = fields.llm_model if fields.llm_model is not None else current.llm_model
            raw = fields.llm_config if fields.llm_config is not None else current.llm_config
            _, columns["llm_config"] = self.llm_config(llm_model, raw)
            columns["llm_model"] = llm_model
        if fields.voice_cloning_settings is not None:
            columns["voice_cloning_settings"] = self.voice_settings(fields.voice_cloning_settings)
            self._known_voice(columns["voice_cloning_settings"])
        if fields.stt_settings is not None:
            columns["stt_settings"] = self.stt_settings(fields.stt_settings)
        if uploads.style_tuning_file:
            columns["style_examples"] = [e.model_dump() for e in parse_style_examples(uploads.style_tuning_file.data)]
        picture = image(uploads.character_image) if uploads.character_image else None
        texts = knowledge(uploads.knowledge_base_file) if uploads.knowledge_base_file else None
        voice = None
        if uploads.voice_cloning_audio:
            settings = columns.get("voice_cloning_settings", current.voice_cloning_settings)
            voice = voice_source(uploads.voice_cloning_audio, settings)
        return CharacterChange(columns=columns, voice=voice, image=picture, knowledge=texts)

    # -- settings ---------------------------------------------------------------------------------

    def voice_settings(self, raw: dict[str, Any] | None) -> dict[str, Any]:
        settings = _settings_of(VoiceCloningSettings, raw, "voice_cloning_settings")
        preprocessing(settings)  # a bad option is refused now, with or without audio
        return settings

    def _known_voice(self, settings: dict[str, Any]) -> None:
        if settings.get("voice"):
            self.voices.resolve(str(settings["voice"]))  # 404 for an unknown voice

    def stt_settings(self, raw: dict[str, Any] | None) -> dict[str, Any]:
        stt = _settings_of(STTSettings, raw, "stt_settings")
        if stt.get("model", "whisper") != "whisper":
            raise InvalidInputError("stt_settings.model: Parla recognises speech with whisper", param="stt_settings")
        if stt.get("model_path"):
            path = self.paths.resolve(str(stt["model_path"]), param="stt_settings.model_path")
            if not (path / "model.bin").is_file():
                raise InvalidInputError(
                    f"stt_settings.model_path {stt['model_path']!r} is not a CTranslate2 Whisper model directory",
                    param="stt_settings",
                )
        return stt

    # -- the language model -----------------------------------------------------------------------

    def llm_config(self, llm_model: str | None, raw: dict[str, Any] | None) -> tuple[LLMConfig, dict[str, Any]]:
        """The model configuration, checked; and what is stored (the request's own fields).

        A named model is what answers, never a stand-in: ``llm_config.model_path`` is a GGUF file
        for the embedded runtime; ``llm_config.base_url`` an endpoint that gets the name; a name
        that is the bundled model or a GGUF file runs embedded; any other name goes to the
        configured endpoint (PARLA_LLM_BASE_URL), else to a GGUF copy of it on this machine, and
        is refused (400) when there is neither. Naming nothing: the configured endpoint, else the
        default GGUF file (PARLA_LLM_MODEL_PATH), else the bundled model."""
        stored = dict(raw or {})
        try:
            config = LLMConfig.model_validate(stored)
        except ValidationError as exc:
            raise InvalidInputError(validation_detail(exc.errors(), "llm_config")[0], param="llm_config") from None
        if config.base_url and not re.match(r"^https?://", config.base_url):
            raise InvalidInputError("llm_config.base_url must be an http(s) URL", param="llm_config")
        if config.model_path and config.base_url:
            # Two models named: which one answers would be a guess.
            raise InvalidInputError(
                "llm_config names both model_path (a GGUF file run here) and base_url (an endpoint): keep one",
                param="llm_config",
            )
        named = (config.model_name or llm_model or "").strip() or None
        param = "llm_config.model_name" if config.model_name else "llm_model"
        if config.model_path:
            config.model_path = str(self.local_model(config.model_path, "llm_config.model_path"))
        elif config.base_url:
            config.model_name = named or self.settings.llm_model
        elif named and is_bundled_model(named):
            config.model_path = None  # the embedded runtime's default: the bundled file
        elif named and (named.lower().endswith(".gguf") or not self.settings.llm_base_url):
            config.model_path = str(self.local_model(named, param))
        elif named:
            self._use_default_endpoint(config)
            config.model_name = named
        elif self.settings.llm_base_url:
            self._use_default_endpoint(config)
            config.model_name = self.settings.llm_model
        elif self.settings.llm_model_path:
            config.model_path = str(self.settings.llm_model_path)
        return config, stored

    def _use_default_endpoint(self, config: LLMConfig) -> None:
        config.base_url = self.settings.llm_base_url
        config.api_key = config.api_key or self.settings.llm_api_key

    def local_model(self, name: str, param: str) -> Path:
        """The GGUF file of a model on this machine, read offline (nothing is downloaded): the bundled
        model by any of its names; a GGUF file in the data dir, ``PARLA_ALLOWED_PATHS`` or
        ``PARLA_MODELS_DIR`` (there also by its file name); or a Hugging Face repository id
        (``org/name``, ``org/name/file.gguf``) whose copy in ``PARLA_MODELS_DIR`` or the hub cache
        holds a GGUF file. Otherwise a 400 that says which model was named and what to configure:
        a named model is never replaced by another one."""
        if is_bundled_model(name):
            try:
                return bundled_model_path()
            except LLMError as exc:
                raise ServiceUnavailableError(str(exc)) from None
        models_dir = self.settings.models_dir
        repo_file = REPO_FILE.match(name.strip()) is not None
        if name.lower().endswith(".gguf"):
            in_models_dir = models_dir_file(name, models_dir)
            if in_models_dir:
                return in_models_dir
            roots = [self.settings.data_dir, *self.settings.allowed_paths, *([models_dir] if models_dir else [])]
            try:
                path: Path | None = PathPolicy(roots).resolve(name, param=param)
            except PathNotAllowedError:
                if not repo_file:  # a path, and outside the allowed directories
                    raise
                path = None
            if path and path.is_file():
                return path
            if not repo_file:
                raise InvalidInputError(f"no GGUF model file at {name}", param=param)
        try:
            found = find_local_model(name, models_dir)
        except ModelLookupError as exc:
            raise InvalidInputError(f"{param}: {exc}", param=param) from None
        if found and found.kind == "gguf":
            return found.path
        if found:
            raise InvalidInputError(
                f"{param} {name!r} is here ({found.path}) but as a transformers model, which Parla cannot run in "
                "process (it runs GGUF files, and downloads no models at run time): serve it with an "
                "OpenAI-compatible server (vLLM, text-generation-inference) and set llm_config.base_url (or "
                "PARLA_LLM_BASE_URL / OPENAI_BASE_URL), or put a GGUF file of it in that folder",
                param=param,
            )
        raise InvalidInputError(
            f"{param} {name!r} is not a model Parla can run here, and Parla downloads no models at run time (it "
            "works offline): it is not the bundled SmolLM2-135M-Instruct and no GGUF file of it is on this machine. "
            f"Set llm_config.base_url (or PARLA_LLM_BASE_URL / OPENAI_BASE_URL) to an OpenAI-compatible endpoint "
            f"that serves {name!r}, or {local_model_help(name, models_dir)}",
            param=param,
        )
