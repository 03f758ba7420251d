"""``qwen3``: Qwen3-TTS (``qwen-tts``), cloning a library voice from its recording and what it says.

``qwen-tts`` declares gradio, and pins a transformers that Parla's other engines cannot sit beside,
so it runs in an environment of its own (``parla engines install qwen3``: ``qwen-tts`` goes in
``--no-deps``, with what it imports) as a worker (``parla serve-engine qwen3`` from that
environment) that a gateway reaches as a ``RemoteEngine``. This module imports cleanly without any
of it: the heavy libraries are imported in ``_load``, and ``unavailable_reason`` says what is missing.

Weights are read from disk, never downloaded, in the layout qwen-tts's own loader reads
(``Qwen3TTSModel.from_pretrained(DIR)``: the model, then ``AutoProcessor`` for the text tokenizer,
then ``DIR/speech_tokenizer`` for the speech codec, then ``DIR/generation_config.json``)::

    DIR/config.json                     the Qwen3TTSConfig (talker, code predictor, speaker encoder;
                                        its languages, tts_model_size, tts_model_type: "base")
    DIR/generation_config.json          the sampling defaults (temperature, top_k, max_new_tokens...)
    DIR/model.safetensors               the weights (or model-*.safetensors shards)
    DIR/tokenizer_config.json           the Qwen2 text tokenizer: its special tokens ...
    DIR/vocab.json, DIR/merges.txt      ... and its BPE
    DIR/speech_tokenizer/config.json    the 12 Hz speech tokenizer (a Mimi encoder, a codec decoder)
    DIR/speech_tokenizer/model.safetensors
    DIR/speech_tokenizer/preprocessor_config.json

(the files of ``Qwen/Qwen3-TTS-12Hz-1.7B-Base`` on Hugging Face, as they are). Qwen3-TTS comes in
two sizes of Base model, 1.7B and 0.6B, each a directory of that layout:

- the size ``PARLA_ENGINES__QWEN3__MODEL_SIZE`` names (``1.7B`` by default) is the engine's own
  directory, ``PARLA_MODELS_DIR/qwen3/`` (default ``<data_dir>/models/qwen3/``), or the Hugging Face
  cache's snapshot of that size (``models--Qwen--Qwen3-TTS-12Hz-1.7B-Base/snapshots/<revision>/``),
  as ``parla.engines.weights`` finds every heavy engine's weights;
- the other size sits in a folder named for it, ``PARLA_MODELS_DIR/qwen3/0.6B/`` (or ``.../1.7B/``),
  or in the Hugging Face cache's snapshot of its own repository.

One model is in memory at a time. A request may name a size (the ``model_size`` parameter, which the
voicebox API's ``/models/load?model_size=`` sets): the engine unloads the model it holds and loads
that one, and keeps it until another size is asked for. Each model checks, when it loads, that its
config.json is a Base model (the one that clones) of the size it was found for.

Cloning: Qwen3-TTS speaks from a reference recording. By default in its in-context mode, which needs
what the recording says (``needs_transcript``): a voice's transcribed samples, resampled to 24 kHz
and joined (as many as fit in ``MAX_REFERENCE_S``, the first always), with their transcripts.
``PARLA_ENGINES__QWEN3__X_VECTOR_ONLY=true`` clones from the speaker embedding alone, with no
transcript (qwen-tts's ``x_vector_only_mode``: a voice less like the recording, any sample will
do). The voice-clone prompt (``create_voice_clone_prompt``: the reference's speech codes and
speaker embedding) is made once per voice and model and kept in memory by the voice's ``key``.

Synthesis goes through ``generate_voice_clone`` with that prompt: qwen-tts makes a piece's whole
audio at once, which is yielded in chunks of ``stream_chunk_size`` samples; the gateway sends piece
by piece, so the first audio comes after the first sentence. With a seed, torch's generators are
seeded before each piece: same seed, same audio. ``PARLA_ENGINES__QWEN3__MAX_NEW_TOKENS`` caps the
speech codes made per piece (12.5 a second; for tests on random weights, which never stop).
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib
import json
import logging
import random
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import numpy.typing as npt
from pydantic import Field

from parla.engines.base import (
    AudioChunk,
    Capabilities,
    EngineContext,
    EngineSettings,
    EngineUnavailableError,
    Param,
    SynthesisRequest,
    VoiceRef,
)
from parla.engines.heavy import HeavyEngine
from parla.engines.memory import VoiceMemory
from parla.errors import InvalidInputError

if TYPE_CHECKING:
    from parla.engines.weights import FoundWeights

log = logging.getLogger(__name__)

SAMPLE_RATE = 24_000
"""What the 12 Hz speech tokenizer decodes to (and what its speaker encoder reads)."""
LANGUAGES = ("zh", "en", "ja", "ko", "de", "fr", "ru", "pt", "es", "it")
"""The languages Qwen3-TTS declares (its config.json's ``codec_language_id``), by their codes."""
QWEN_LANGUAGES = {
    "zh": "chinese",
    "en": "english",
    "ja": "japanese",
    "ko": "korean",
    "de": "german",
    "fr": "french",
    "ru": "russian",
    "pt": "portuguese",
    "es": "spanish",
    "it": "italian",
}
"""Each language as qwen-tts names it (``generate_voice_clone(language=...)``)."""
ModelSize = Literal["1.7B", "0.6B"]
SIZES: dict[str, str] = {"1.7B": "1b7", "0.6B": "0b6"}
"""Each size of Base model, by its name here (voicebox's ``model_size``) and as config.json's
``tts_model_size`` says it."""
HF_REPOS: dict[str, str] = {"1.7B": "Qwen/Qwen3-TTS-12Hz-1.7B-Base", "0.6B": "Qwen/Qwen3-TTS-12Hz-0.6B-Base"}
"""Each size's Hugging Face repository (the catalogue names the 1.7B's)."""
MAX_REFERENCE_S = 15.0
"""Reference audio joined from a voice's samples (Qwen3-TTS clones from a few seconds; a long
reference only lengthens every prompt)."""
MIN_REFERENCE_S = 0.5
MEMORY_CACHE = 64
"""Voices whose clone prompt is kept in memory (speech codes and an embedding: a few kB each)."""


class Qwen3Settings(EngineSettings):
    """``PARLA_ENGINES__QWEN3__*``."""

    model_size: ModelSize = "1.7B"
    """The size loaded first, whose weights are the engine's own directory (``<models_dir>/qwen3/``);
    a request naming the other size loads that one from ``<models_dir>/qwen3/<size>/``."""
    x_vector_only: bool = False
    """Clone from the speaker embedding alone: no transcript needed, a voice less like the recording."""
    max_new_tokens: int | None = Field(default=None, ge=1)
    """Most speech codes per piece (12.5 a second); none: the model's generation_config.json (8192).
    A cap for tests on random weights, which never stop."""
    stream_chunk_size: int = Field(default=12_000, ge=256, le=1_000_000)
    """Samples per streamed chunk of a finished piece (12 000: half a second)."""


def qwen_language(language: str) -> str | None:
    """qwen-tts's name of a request's language (``en-US``: ``english``; ``zh-TW``: ``chinese``), or ``None``."""
    lang = language.strip().lower().replace("_", "-")
    if lang in QWEN_LANGUAGES.values():
        return lang
    return QWEN_LANGUAGES.get(lang.split("-")[0])


def model_size(value: str) -> str | None:
    """The size a client means (``1.7B``, ``1.7b``, ``1b7``), as named here; ``None`` for no size of Qwen3-TTS."""
    wanted = value.strip().lower()
    for size, internal in SIZES.items():
        if wanted in (size.lower(), internal):
            return size
    return None


def find_model(size: str, default: str, context: EngineContext) -> FoundWeights:
    """Where the ``size`` model's files are, or what is missing where (``reason``): the engine's
    own directory and the catalogue's layout for the default size (``default``), the folder named
    for the size for the other; each then in the Hugging Face cache's snapshot of its repository."""
    from parla.engines.catalog import entry
    from parla.engines.weights import find_weights

    catalogue = entry("qwen3").weights
    folder = "" if size == default else size
    parts = tuple(
        dataclasses.replace(
            part,
            subdir="/".join(p for p in (folder, part.subdir) if p),
            hf_repo=HF_REPOS[size],
            what=f"the {size} model" + (f" ({part.what})" if part.what else ""),
        )
        for part in catalogue.parts
    )
    return find_weights(
        "qwen3",
        dataclasses.replace(catalogue, parts=parts),
        models_dir=context.models_dir or context.data_dir / "models",
    )


def read_model_config(model_dir: Path) -> dict[str, Any]:
    """The model's config.json, as a mapping (``{}`` when it cannot be read as one)."""
    try:
        loaded = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return loaded if isinstance(loaded, dict) else {}


def check_model(model_dir: Path, size: str) -> None:
    """Refuse (``EngineUnavailableError``) a model that cannot clone or is not of the size it was found for."""
    config = read_model_config(model_dir)
    kind = config.get("tts_model_type")
    if kind != "base":
        raise EngineUnavailableError(
            f"engine 'qwen3' clones voices, which only Qwen3-TTS's Base models do: {model_dir}/config.json has "
            f"tts_model_type {kind!r}, not 'base' (use {HF_REPOS[size]})"
        )
    found = config.get("tts_model_size")
    if found != SIZES[size]:
        named = next((name for name, internal in SIZES.items() if internal == found), found)
        raise EngineUnavailableError(
            f"engine 'qwen3' looked for its {size} model in {model_dir}, whose config.json is the {named} model "
            f"(tts_model_size {found!r}): put each size in its own directory, or set PARLA_ENGINES__QWEN3__MODEL_SIZE "
            "to the size of the model in the engine's own directory"
        )


class Qwen3Engine(HeavyEngine):
    name = "qwen3"
    title = "Qwen3-TTS"
    required_packages = (
        ("qwen_tts", "qwen-tts"),
        ("torch", "torch"),
        ("transformers", "transformers"),
        ("librosa", "librosa"),
        ("soundfile", "soundfile"),
    )
    """qwen-tts imports librosa and soundfile at import, though Parla hands it arrays, never files."""
    memory_size = MEMORY_CACHE
    description = (
        "Qwen3-TTS (Base, 1.7B or 0.6B): multilingual voice cloning from a recording and its transcript"
        " (qwen-tts, torch)."
    )
    capabilities = Capabilities(
        seed_varies=True,  # it samples: another seed, another rendering
        sample_rate=SAMPLE_RATE,
        languages=LANGUAGES,
        streaming=True,
        cloning=True,
        needs_transcript=True,
        parameters=(
            Param(
                "temperature",
                float,
                None,
                0.01,
                2.0,
                "Sampling temperature of the talker; none: the model's generation_config.json (0.9).",
            ),
            Param("top_p", float, None, 0.01, 1.0, "Nucleus sampling threshold; none: generation_config.json's (1.0)."),
            Param("top_k", int, None, 1, 1000, "Top-K sampling; none: generation_config.json's (50)."),
            Param(
                "repetition_penalty",
                float,
                None,
                1.0,
                2.0,
                "Penalty on repeated speech codes (1: none); none: generation_config.json's (1.05).",
            ),
            Param(
                "model_size",
                str,
                None,
                None,
                None,
                "The Base model to speak with, 1.7B or 0.6B (voicebox's model_size); none: the one loaded.",
            ),
        ),
    )
    settings_model = Qwen3Settings
    settings: Qwen3Settings
    _memory: VoiceMemory[list[Any]]

    def __init__(self, settings: Qwen3Settings | None = None, context: EngineContext | None = None) -> None:
        super().__init__(settings, context)
        if self.settings.x_vector_only:
            # The speaker embedding alone: a sample teaches it without a transcript.
            self.capabilities = dataclasses.replace(type(self).capabilities, needs_transcript=False)
        self.size: str = self.settings.model_size
        """The size loaded (or loaded next): the setting's, until a request names another."""
        self.stats = {"memory_hits": 0, "computed": 0}
        """How clone prompts were found (logged too: the tests count it)."""

    # -- availability and lifecycle -------------------------------------------------------------

    def find_weights(self) -> FoundWeights:
        """The weights of the size held (or held next)."""
        return self.find(self.size)

    def find(self, size: str) -> FoundWeights:
        """Where the ``size`` model is, or what is missing where (see ``find_model``)."""
        return find_model(size, self.settings.model_size, self.context)

    def resolve_parameters(
        self, given: Mapping[str, Any] | None, preset: Mapping[str, Any] | None = None
    ) -> dict[str, Any]:
        """As every engine's, and ``model_size`` is one of Qwen3-TTS's sizes (said as this engine names it)."""
        resolved = super().resolve_parameters(given, preset)
        asked = resolved.get("model_size")
        if asked is not None:
            size = model_size(asked)
            if size is None:
                raise ValueError(f"parameter 'model_size' must be one of {', '.join(SIZES)}, got {asked!r}")
            resolved["model_size"] = size
        return resolved

    def use_size(self, size: str) -> None:
        """Hold the ``size`` model: loaded now, in place of the other size if that one is loaded.
        Raises ``EngineUnavailableError`` (the other model stays) when its weights are missing."""
        if size == self.size and self.loaded:
            return
        if size != self.size:
            found = self.find(size)
            if not found.complete:
                raise EngineUnavailableError(f"engine 'qwen3' cannot load its {size} model: {found.reason}")
            self.unload()
            log.info("qwen3: switching from the %s model to the %s model", self.size, size)
            self.size = size
        self.load()

    def _load(self) -> None:
        found = self.located()
        model_dir = next(iter(found.dirs.values()))  # one part: the model with both its tokenizers
        check_model(model_dir, self.size)
        started = time.perf_counter()
        torch: Any = importlib.import_module("torch")
        inference: Any = importlib.import_module("qwen_tts")
        device = self.torch_device(torch)
        # bfloat16 on a GPU, as Qwen publishes it; float32 on the CPU, where bfloat16 matmuls are slow.
        dtype = torch.bfloat16 if device.startswith("cuda") else torch.float32
        model = inference.Qwen3TTSModel.from_pretrained(
            str(model_dir), device_map=device, dtype=dtype, local_files_only=True
        )
        self._torch, self._model, self.device = torch, model, device
        log.info(
            "qwen3: loaded the %s model %s on %s in %.1f s",
            self.size,
            found.where(),
            device,
            time.perf_counter() - started,
        )

    # -- the voice's clone prompt ---------------------------------------------------------------

    def prompt_for(self, voice: VoiceRef) -> list[Any]:
        """The voice's clone prompt (qwen-tts's ``VoiceClonePromptItem`` list), made once per voice
        key and model. Raises ``InvalidInputError``."""
        x_vector_only = self.settings.x_vector_only
        usable = [
            (path, (text or "").strip()) for path, text in voice.samples if x_vector_only or (text and text.strip())
        ]
        if not usable:
            raise InvalidInputError(
                f"voice {voice.name!r} has no sample with a transcript, and engine 'qwen3' speaks from a recording"
                " and what it says: use a library voice (POST /v1/voices/clone makes one from a recording and its"
                " transcript), or set PARLA_ENGINES__QWEN3__X_VECTOR_ONLY=true to clone from the recording alone",
                param="voice",
            )
        key = voice.key or hashlib.sha256(repr(usable).encode()).hexdigest()[:32]
        key = f"{self.size}:{key}"
        remembered = self._memory.get(key)
        if remembered is not None:
            self.stats["memory_hits"] += 1
            return remembered
        started = time.perf_counter()
        audio, text = self._reference(usable)
        try:
            prompt: list[Any] = self._model.create_voice_clone_prompt(
                ref_audio=(audio, SAMPLE_RATE),
                ref_text=None if x_vector_only else text,
                x_vector_only_mode=x_vector_only,
            )
        except ValueError as exc:  # qwen-tts's own refusal of a reference
            raise InvalidInputError(f"voice {voice.name!r}: {exc}", param="voice") from None
        self.stats["computed"] += 1
        log.info(
            "qwen3: clone prompt for voice %r computed from %d samples (%.1f s of audio) in %.2f s",
            voice.name,
            len(usable),
            audio.size / SAMPLE_RATE,
            time.perf_counter() - started,
        )
        self._memory.put(key, prompt)
        return prompt

    @staticmethod
    def _reference(usable: list[tuple[Path, str]]) -> tuple[npt.NDArray[np.float32], str]:
        """The samples read by Parla (any format; torchaudio cannot read files here) at 24 kHz and
        joined, as many as fit in ``MAX_REFERENCE_S``, with what they say."""
        from parla.audio.decode import decode_audio

        parts: list[npt.NDArray[np.float32]] = []
        texts: list[str] = []
        total = 0
        for path, text in usable:
            samples, _ = decode_audio(path, SAMPLE_RATE)
            if parts and total + samples.size > MAX_REFERENCE_S * SAMPLE_RATE:
                break
            parts.append(np.asarray(samples, dtype=np.float32))
            if text:
                texts.append(text)
            total += samples.size
        joined = np.ascontiguousarray(np.concatenate(parts), dtype=np.float32)
        if joined.size < MIN_REFERENCE_S * SAMPLE_RATE:
            raise InvalidInputError("the voice's reference audio is too short for engine 'qwen3'", param="voice")
        return joined, " ".join(" ".join(texts).split())

    def prepare_voice(self, voice: VoiceRef) -> None:
        """Make and keep the voice's clone prompt now (after a sample changes), not at its first request."""
        if voice.samples:
            self.load()
            self.prompt_for(voice)

    # -- synthesis ------------------------------------------------------------------------------

    def synthesize(self, request: SynthesisRequest) -> Iterator[AudioChunk]:
        params = request.parameters
        self.use_size(str(params.get("model_size") or self.size))
        language = qwen_language(request.language)
        if language is None:
            raise InvalidInputError(str(self.language_problem(request.language)), param="language")
        prompt = self.prompt_for(request.voice)
        if request.seed is not None:
            self._torch.manual_seed(request.seed)
            random.seed(request.seed)
        knobs = {name: params[name] for name in ("temperature", "top_p", "top_k", "repetition_penalty")}
        if self.settings.max_new_tokens is not None:
            knobs["max_new_tokens"] = self.settings.max_new_tokens
        wavs, rate = self._model.generate_voice_clone(
            text=" ".join(request.text.split()),
            language=language,
            voice_clone_prompt=prompt,
            # None: generation_config.json's value (qwen-tts's own rule); the sub-talker's stay its own.
            **{name: value for name, value in knobs.items() if value is not None},
        )
        samples = np.clip(np.asarray(wavs[0], dtype=np.float32).reshape(-1), -1.0, 1.0)
        step = self.settings.stream_chunk_size
        for start in range(0, samples.size, step):
            yield AudioChunk(samples[start : start + step], int(rate))
