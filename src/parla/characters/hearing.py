"""Hearing a spoken question: Whisper turns it into the text the character answers.

A character may name a Whisper size installed here (``stt_settings.model_size``: ``tiny``, ``base``;
another is refused with the list) or its own CTranslate2 Whisper model (``stt_settings.model_path``),
which is loaded once and shared by every character that names it; its ``language`` is the language
questions are heard in (detected when it names none).
"""

from __future__ import annotations

import threading
from pathlib import Path

from parla.audio.decode import AudioDecodeError, AudioTooLongError, decode_audio
from parla.characters.prompting import as_question
from parla.characters.shapes import STTSettings
from parla.errors import InvalidInputError, TooLargeError
from parla.languages import language_code
from parla.paths import PathPolicy
from parla.services.transcription import Transcriber
from parla.settings import Settings

QUESTION_AUDIO_MAX_S = 120.0


class Hearing:
    def __init__(self, *, settings: Settings, transcriber: Transcriber) -> None:
        self.settings = settings
        self.transcriber = transcriber
        self.paths = PathPolicy.from_settings(settings)
        self._transcribers: dict[Path, Transcriber] = {}
        self._transcribers_lock = threading.Lock()

    def transcriber_for(self, stt: STTSettings) -> Transcriber:
        """The server's Whisper, or the model the settings name (blocking: the path is resolved)."""
        if not stt.model_path:
            return self.transcriber
        path = self.paths.resolve(stt.model_path, param="stt_settings.model_path")
        with self._transcribers_lock:
            if path not in self._transcribers:
                self._transcribers[path] = Transcriber(self.settings, model_path=path)
            return self._transcribers[path]

    def loaded_models(self) -> list[str]:
        """The Whisper models in memory for characters' own models (``stt_settings.model_path``),
        by directory name; the server's are its transcriber's."""
        with self._transcribers_lock:
            return sorted(path.name for path, transcriber in self._transcribers.items() if transcriber.loaded)

    def question(self, data: bytes, stt: STTSettings) -> str:
        """What the person asked in ``data`` (any audio FFmpeg reads), as a question (blocking)."""
        if not data:
            raise InvalidInputError("audio_file is empty", param="audio_file")
        if len(data) > self.settings.max_upload_bytes:
            raise TooLargeError("audio_file is too large", param="audio_file")
        try:
            audio, _ = decode_audio(data, 16_000, max_seconds=QUESTION_AUDIO_MAX_S)
        except AudioTooLongError:
            raise InvalidInputError(
                f"audio_file is longer than {QUESTION_AUDIO_MAX_S:g} s; ask a shorter question", param="audio_file"
            ) from None
        except AudioDecodeError as exc:
            raise InvalidInputError(f"audio_file is not audio that can be read: {exc}", param="audio_file") from None
        language = language_code(stt.language, param="stt_settings.language") if stt.language else None
        transcriber = self.transcriber_for(stt)
        size = stt.model_size if stt.model_size and not stt.model_path else None
        heard = transcriber.transcribe(audio, language=language, size=size)
        if not heard.text.strip():
            raise InvalidInputError("no speech was heard in audio_file", param="audio_file")
        return as_question(heard.text)
