"""The engine seam: every speech engine, local or remote, is an ``Engine``.

An engine turns a ``SynthesisRequest`` into an iterator of ``AudioChunk``. It knows nothing of
HTTP, the database, the app's settings or files beyond the voice's reference audio and its own
cache: it is given its own settings (``Engine.settings_model``) and an ``EngineContext``. Synthesis
is blocking; callers run it off the event loop (see ``parla.engines.runner``), one request at a
time per engine, and its model's lifetime is the ``ModelManager``'s (``parla.engines.manager``).
"""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from collections.abc import Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, ClassVar, Self

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, ConfigDict

from parla.errors import ServiceUnavailableError
from parla.languages import speaks

if TYPE_CHECKING:
    from parla.settings import Settings


@dataclass(frozen=True)
class TimedWord:
    """One spoken word and when it is heard, in seconds (from the start of its chunk, where an
    engine reports it; from the start of the whole audio, once the speech service has placed it)."""

    word: str
    start: float
    end: float
    after: str = ""
    """The punctuation written right after it ("," "." "?"): where captions end a cue."""

    def shifted(self, seconds: float) -> TimedWord:
        return TimedWord(self.word, round(self.start + seconds, 3), round(self.end + seconds, 3), self.after)

    def describe(self) -> dict[str, Any]:
        """As clients read it (Kokoro-FastAPI's names, which its captioned-speech clients expect)."""
        return {"word": self.word, "start_time": self.start, "end_time": self.end}


@dataclass(frozen=True)
class AudioChunk:
    """A piece of mono float32 audio in [-1, 1], with the words said in it where the engine knows
    when each is heard (``Capabilities.word_timing``; times from the chunk's start)."""

    samples: npt.NDArray[np.float32]
    sample_rate: int
    words: tuple[TimedWord, ...] = ()

    @property
    def duration(self) -> float:
        return self.samples.size / self.sample_rate


@dataclass(frozen=True)
class Param:
    """One engine parameter a request may set, with its default and allowed range."""

    name: str
    type: type[Any]
    default: Any
    minimum: float | None = None
    maximum: float | None = None
    description: str = ""

    def coerce(self, value: Any) -> Any:
        """Check and convert a client's value; raises ``ValueError`` naming the problem."""
        expected = self.type
        if expected is float and isinstance(value, int | float) and not isinstance(value, bool):
            value = float(value)
        elif expected is int and isinstance(value, float) and value.is_integer():
            value = int(value)
        if not isinstance(value, expected) or (expected is not bool and isinstance(value, bool)):
            raise ValueError(f"parameter {self.name!r} must be of type {expected.__name__}, not {type(value).__name__}")
        below = self.minimum is not None and value < self.minimum
        above = self.maximum is not None and value > self.maximum
        if below or above:
            if self.minimum is not None and self.maximum is not None:
                allowed = f"between {self.minimum:g} and {self.maximum:g}"
            else:
                allowed = f"at least {self.minimum:g}" if below else f"at most {self.maximum:g}"
            raise ValueError(f"parameter {self.name!r} must be {allowed}, got {value}")
        return value

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "type": self.type.__name__,
            "default": self.default,
            "minimum": self.minimum,
            "maximum": self.maximum,
            "description": self.description,
        }


DOCUMENTED_PARAMETERS: tuple[Param, ...] = (
    Param("temperature", float, None, 0.0, 5.0, "Sampling temperature (the Dia server API: 0.1-2.0 on its /generate)."),
    Param("top_p", float, None, 0.0, 1.0, "Nucleus sampling threshold."),
    Param("top_k", int, None, 1, 1000, "Top-K sampling."),
    Param("cfg_scale", float, None, 1.0, 10.0, "Classifier-free guidance scale (Dia)."),
    Param("cfg_weight", float, None, 0.0, 1.0, "Classifier-free guidance weight (Chatterbox)."),
    Param("exaggeration", float, None, 0.0, 2.0, "Emotion exaggeration (Chatterbox)."),
    Param("max_tokens", int, None, 1, 10_000, "Most tokens to generate (Dia)."),
    Param("max_new_tokens", int, None, 1, 10_000, "Most tokens to generate."),
)
"""The sampling knobs the reference APIs document, with their documented ranges. A value out of
range is refused whichever engine serves the request, even one that does not use the knob: a
client learns of its mistake before it moves to an engine that does."""
_DOCUMENTED = {p.name: p for p in DOCUMENTED_PARAMETERS}


@dataclass(frozen=True)
class Capabilities:
    """What an engine can do; shown to clients and used to route requests."""

    sample_rate: int
    languages: tuple[str, ...] = ("en",)
    streaming: bool = True
    cloning: bool = False
    dialogue: bool = False
    nonverbal: bool = False
    instructions: bool = False
    parameters: tuple[Param, ...] = ()
    single_speaker: bool = True
    """Speaks one voice alone; an engine that only makes dialogue (Dia) refuses text-to-speech."""
    min_dialogue_turns: int = 1
    """Fewest speakers a dialogue must have for this engine (Dia: 2). Distinct speakers are counted,
    not turns: ``[S1] Hi. [S1] Again.`` is one speaker. (The name is older than the rule.)"""
    needs_transcript: bool = False
    """Learns a voice from what its samples say: a sample without a transcript (or speech that
    Whisper can hear) teaches it nothing, so such a voice is refused."""
    scripted_dialogue: bool = False
    """Speaks a whole dialogue script in one generation, its speakers tagged ``[S1]`` and ``[S2]``
    (Dia): the dialogue service hands it the script whole (cues as text when it has ``nonverbal``)
    with one voice whose samples are each speaker's, their transcripts tagged by speaker."""
    blending: bool = False
    """Speaks a blend of voices (``VoiceRef.blend``) as one voice between them."""
    phonemes: bool = False
    """Reads IPA phonemes in the text between ``[[`` and ``]]`` (Piper's notation): SSML's
    ``<phoneme>`` and pronunciations given as phonemes need it."""
    word_timing: bool = False
    """Says when each word is heard (``AudioChunk.words``) from its own durations (Piper's phoneme
    lengths); the speech service aligns other engines' audio with Whisper when asked for timestamps."""
    seed_varies: bool = False
    """Another seed gives another rendering (sampled noise or tokens): a piece that came out wrong
    is worth speaking again with a new seed. Deterministic engines (espeak-ng, Kokoro) are not."""
    max_script_bytes: int | None = None
    """Most UTF-8 bytes of text it reads in one generation, its voice's transcripts included (Dia:
    1024, its encoder's positions); ``None``: no limit. A script is cut at turns to stay under it."""

    def describe(self) -> dict[str, Any]:
        return {
            "sample_rate": self.sample_rate,
            "languages": list(self.languages),
            "streaming": self.streaming,
            "cloning": self.cloning,
            "dialogue": self.dialogue,
            "nonverbal": self.nonverbal,
            "instructions": self.instructions,
            "parameters": [p.describe() for p in self.parameters],
            "single_speaker": self.single_speaker,
            "needs_transcript": self.needs_transcript,
            "min_dialogue_turns": self.min_dialogue_turns,
            "scripted_dialogue": self.scripted_dialogue,
            "max_script_bytes": self.max_script_bytes,
            "phonemes": self.phonemes,
            "blending": self.blending,
            "word_timing": self.word_timing,
            "seed_varies": self.seed_varies,
        }


@dataclass(frozen=True)
class VoiceRef:
    """The voice a request speaks in, as an engine needs it.

    ``presets`` holds per-engine settings of a built-in voice (e.g. Piper's noise scales);
    ``samples`` are reference recordings with their transcripts for cloning engines and the
    mock engine, which copies them.
    """

    name: str
    samples: tuple[tuple[Path, str | None], ...] = ()
    presets: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    language: str = "en"
    key: str = ""
    """Changes whenever the samples, their transcripts or their languages change: engines key cached
    conditioning by it."""
    id: str | None = None
    engine: str | None = None
    """The engine whose own voice this is (a Kokoro style, see ``Engine.voice``): only it speaks it,
    and a request that names no engine goes to it. ``None``: any engine."""
    sample_languages: tuple[str | None, ...] = ()
    """The language each of ``samples`` is spoken in (and its transcript written in), in order;
    ``None``, or no entry at all, means ``language``. Beside ``samples`` rather than in its pairs,
    which every cloning engine unpacks: only the engines that read a transcript need it."""

    blend: tuple[tuple[VoiceRef, float], ...] = ()
    """A blend of voices (``alloy(2)+Ada(1)``): its parts with their weights, summing to 1. Only
    engines with ``Capabilities.blending`` speak it."""

    def sample_language(self, index: int) -> str:
        """The language ``samples[index]`` is spoken in."""
        spoken = self.sample_languages[index] if index < len(self.sample_languages) else None
        return spoken or self.language

    def preset(self, engine: str) -> Mapping[str, Any]:
        return self.presets.get(engine, {})


@dataclass(frozen=True)
class EngineVoice:
    """A voice an engine brings with it (a Kokoro style pack), listed beside the built-in and library
    voices (``Engine.voices``)."""

    name: str
    description: str = ""
    gender: str = "neutral"
    language: str = "en"
    """The language a request in this voice speaks unless it names one."""

    def describe(self, engine: str) -> dict[str, Any]:
        return {
            "id": self.name,
            "name": self.name,
            "description": self.description,
            "gender": self.gender,
            "language": self.language,
            "builtin": True,
            "engine": engine,
            "samples": 0,
        }


@dataclass(frozen=True)
class SynthesisRequest:
    """One piece of text to speak. ``parameters`` are already checked by ``Engine.resolve_parameters``."""

    text: str
    voice: VoiceRef
    speed: float = 1.0
    seed: int | None = None
    language: str = "en"
    instructions: str | None = None
    parameters: Mapping[str, Any] = field(default_factory=dict)
    timestamps: bool = False
    """The caller wants each word's time: an engine with ``Capabilities.word_timing`` puts them on
    its chunks (``AudioChunk.words``); others may ignore it."""


@dataclass(frozen=True)
class EngineStatus:
    name: str
    available: bool
    loaded: bool
    device: str
    reason: str | None = None

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "available": self.available,
            "loaded": self.loaded,
            "device": self.device,
            "reason": self.reason,
        }


class EngineUnavailableError(ServiceUnavailableError):
    """The engine cannot run here (missing dependency, binary or weights); the message says why (503)."""


class EngineSettings(BaseModel):
    """Base of an engine's own settings model, filled from ``PARLA_ENGINES__<NAME>__<FIELD>``.

    An engine declares its fields on a subclass (``model_path: Path | None = None``) and names it in
    ``Engine.settings_model``. Unknown fields are refused, so that a misspelt variable makes the
    engine broken, with the reason on ``/health``, instead of being silently ignored.
    """

    model_config = ConfigDict(extra="forbid")


@dataclass(frozen=True)
class EngineContext:
    """What an engine may know of the server it runs in, besides its own settings."""

    data_dir: Path = Path("./data")
    """The server's data directory; an engine keeps its caches under ``<data_dir>/cache/<name>/``."""
    device: str = "cpu"
    """The device the model should go to, decided by ``manager.resolve_device`` (``cpu``, ``cuda``,
    ``cuda:1``...). An engine that cannot use it runs where it can and says so in ``Engine.device``."""
    models_dir: Path | None = None
    """Where heavy engines' weights live, each under ``<models_dir>/<engine>/`` (``PARLA_MODELS_DIR``);
    ``None``: ``<data_dir>/models``. Read through ``parla.engines.weights.locate``."""
    weights_dir: Path | None = None
    """A directory the operator named for this engine's weights through a reference API's own
    variable (``XTTS_MODEL_DIR``), looked in after ``<models_dir>/<engine>/``."""


class Engine(ABC):
    """Base class of all speech engines.

    Declared per engine, as class attributes or set in ``__init__`` (all are instance attributes,
    so an engine such as ``RemoteEngine`` can set them per instance):

    - ``name``: the engine's name in requests and in ``PARLA_ENGINES__<NAME>__...``;
    - ``description``: one line for clients;
    - ``capabilities``: what it can do (``Capabilities``);
    - ``device``: where its model runs (reported by ``status``);
    - ``voice_presets``: per built-in voice name (``alloy``...), this engine's settings for that
      voice (parameters it takes, or whatever its ``synthesize`` reads from ``VoiceRef.preset``);
    - ``settings_model`` (class level): its settings model, an ``EngineSettings`` subclass;
    - ``concurrency``: how many requests it may serve at once (its runner's threads; see
      ``parla.engines.runner``). 1 unless the engine is safe for more and they feed the cores better.

    The constructor contract: ``Engine(settings=None, context=None)``, where ``settings`` is an
    instance of ``settings_model`` (its defaults when omitted) and ``context`` an ``EngineContext``.
    The registry builds engines with ``from_settings``, which fills both from the app's settings;
    an engine never sees the app's ``Settings``. A subclass that needs set-up overrides
    ``__init__`` with the same parameters and calls ``super().__init__(settings, context)`` first;
    it must stay cheap (no model loading: that is ``_load``'s job, called on the runner thread).
    """

    name: str
    description: str = ""
    capabilities: Capabilities
    device: str = "cpu"
    voice_presets: Mapping[str, Mapping[str, Any]] = MappingProxyType({})
    concurrency: int = 1
    settings_model: ClassVar[type[EngineSettings]] = EngineSettings
    settings: EngineSettings
    """This engine's settings: an instance of ``settings_model`` (subclasses narrow the type)."""

    def __init__(self, settings: EngineSettings | None = None, context: EngineContext | None = None) -> None:
        if settings is None:
            settings = self.settings_model()
        elif not isinstance(settings, self.settings_model):
            # Engines took the app's settings before they had their own: say what to do instead.
            kind = type(self).__name__
            raise TypeError(
                f"{kind} takes its own settings ({self.settings_model.__name__}), not {type(settings).__name__}; "
                f"build it from the app's settings with {kind}.from_settings()"
            )
        self.settings = settings
        self.context = context or EngineContext()
        self._load_lock = threading.Lock()
        self._loaded = False

    @classmethod
    def from_settings(cls, settings: Settings, name: str | None = None) -> Self:
        """This engine configured from the app's settings: its section (``PARLA_ENGINES__<NAME>__*``,
        over the older top-level variables, see ``Settings.engine_config``), the data directory and
        its device. ``name``: the section to read (the entry point's name), by default ``cls.name``.
        Raises ``pydantic.ValidationError`` for a setting the engine refuses."""
        from parla.engines.manager import resolve_device  # manager.py imports runner.py, which imports this

        key = name or cls.name
        section = settings.engines.get(key)
        device = resolve_device((section.device if section else None) or settings.device)
        engine_settings = cls.settings_model.model_validate(settings.engine_config(key))
        context = EngineContext(
            data_dir=settings.data_dir,
            device=device,
            models_dir=settings.resolved_models_dir,
            weights_dir=settings.engine_weights_dir(key),
        )
        return cls(engine_settings, context)

    @property
    def backend(self) -> str:
        """Which implementation serves requests, where an engine has several (Kokoro: ``onnx`` or
        ``torch``); empty where it has one. A catalogued environment is built for one of them
        (``catalog.Entry.backend``)."""
        return ""

    # -- availability and lifecycle -------------------------------------------------------------

    def unavailable_reason(self) -> str | None:
        """Why this engine cannot run here, or ``None`` when it can. Must be cheap, and do no network
        I/O: ``/health`` and every request ask it."""
        return None

    def load(self) -> None:
        """Load the model (idempotent, thread-safe). Raises ``EngineUnavailableError``."""
        with self._load_lock:
            if self._loaded:
                return
            reason = self.unavailable_reason()
            if reason:
                raise EngineUnavailableError(f"engine {self.name!r} is unavailable: {reason}")
            self._load()
            self._loaded = True

    def unload(self) -> None:
        with self._load_lock:
            if self._loaded:
                self._unload()
            self._loaded = False

    @property
    def loaded(self) -> bool:
        return self._loaded

    def release_memory(self) -> None:  # noqa: B027 - most engines keep nothing worth giving back
        """Give back the working memory the last requests left behind (buffers and caches that the
        next request makes again), keeping the model. Called on the runner thread once the engine
        has been idle ``PARLA_ENGINE_IDLE_TRIM_S`` seconds, so it must cost little."""

    def _load(self) -> None:  # noqa: B027 - engines without a model (mock, espeak) need nothing here
        """Subclasses load their model here."""

    def _unload(self) -> None:  # noqa: B027
        """Subclasses free their model here."""

    def status(self) -> EngineStatus:
        reason = self.unavailable_reason()
        return EngineStatus(self.name, reason is None, self.loaded, self.device, reason)

    # -- synthesis -------------------------------------------------------------------------------

    def resolve_parameters(
        self, given: Mapping[str, Any] | None, preset: Mapping[str, Any] | None = None
    ) -> dict[str, Any]:
        """The engine's defaults, overlaid by a voice's preset, overlaid by the client's values.

        Names the engine does not use are accepted (the model microservice API: "all parameters
        accepted") and left out (``ignored_parameters`` names them, for the response); a wrong type or
        an out-of-range value raises ``ValueError`` naming the parameter and its range, also for a
        documented knob this engine does not use.
        """
        specs = {p.name: p for p in self.capabilities.parameters}
        resolved = {p.name: p.default for p in self.capabilities.parameters}
        for source in (preset or {}, given or {}):
            for key, value in source.items():
                if key in specs and value is not None:
                    resolved[key] = specs[key].coerce(value)
                elif key in _DOCUMENTED and value is not None:
                    _DOCUMENTED[key].coerce(value)
        return resolved

    def language_problem(self, language: str) -> str | None:
        """Why this engine cannot speak a request's ``language`` (a code ``parla.languages`` has read),
        or ``None`` when it can: by default, when it is none of ``capabilities.languages`` (``*``:
        every language). An engine with finer rules (a text front end missing for one language) says
        so here, so the request is refused, or goes to another engine, before any audio is made."""
        declared = self.capabilities.languages
        if speaks(declared, language):
            return None
        return f"engine {self.name!r} speaks {', '.join(declared)}, not {language!r}"

    def ignored_parameters(self, given: Mapping[str, Any] | None, consumed: Collection[str] = ()) -> list[str]:
        """The names in ``given`` that neither this engine nor the request layer (``consumed``) uses."""
        used = {p.name for p in self.capabilities.parameters} | set(consumed)
        return sorted(name for name in (given or {}) if name not in used)

    # -- the engine's own voices ------------------------------------------------------------------

    def voices(self) -> Sequence[EngineVoice]:
        """The voices this engine brings itself (none by default), for the voice listings. Cheap, no
        network I/O: every listing asks."""
        return ()

    def voice(self, name: str) -> VoiceRef | None:
        """The ``VoiceRef`` of one of this engine's own voices by name (a blend of them, where the
        engine can mix voices), with ``engine`` set to this engine; ``None`` when the name is none of
        its own. Raises ``InvalidInputError`` for a name that is plainly meant for it but wrong (a
        blend naming a voice it does not have). Cheap: asked for every name the library does not know."""
        return None

    def prepare_voice(self, voice: VoiceRef) -> None:  # noqa: B027 - most engines condition per request
        """Compute and cache whatever this engine derives from a voice's samples, ahead of use."""

    @abstractmethod
    def synthesize(self, request: SynthesisRequest) -> Iterator[AudioChunk]:
        """Speak ``request.text``, yielding audio as it is made. Blocking; called off the event loop,
        on the runner thread. Calls ``self.load()`` first: after an idle unload (``ModelManager``)
        the next request finds the model gone."""

    def synthesize_pieces(self, requests: Sequence[SynthesisRequest]) -> Iterator[Iterator[AudioChunk]]:
        """The pieces of one text (the speech service's split), each spoken as ``synthesize`` does, in
        order: the next piece is asked for only once the one before has been read to its end.
        An engine whose synthesis has stages that can overlap (the clone engine: Piper's model runs
        without the GIL while the previous piece is converted) overrides this to start the next
        piece early; the audio must be what ``synthesize`` would make of each piece."""
        for request in requests:
            yield self.synthesize(request)
