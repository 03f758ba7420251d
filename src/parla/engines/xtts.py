"""``xtts``: Coqui's XTTS-v2 (``coqui-tts``), cloning from a few seconds of any library voice.

XTTS-v2 pins its own torch, torchaudio and transformers, so it runs in an environment of its own
(``parla engines install xtts``) as a worker (``parla serve-engine xtts`` from that environment)
that a gateway reaches as a ``RemoteEngine``. This module imports cleanly without any of it: the
heavy libraries are imported in ``_load``, and ``unavailable_reason`` says what is missing.

Weights are read from disk, never downloaded, in the layout XTTS-v2's own loader reads
(``XttsConfig.load_json`` + ``Xtts.load_checkpoint(checkpoint_dir=DIR)``)::

    DIR/config.json          the model's XttsConfig (its languages, sampling defaults, conditioning lengths)
    DIR/model.pth            {"model": state_dict}
    DIR/vocab.json           the BPE tokenizer (tokenizers)
    DIR/speakers_xtts.pth    optional: the studio speakers, for the built-in voices (see below)

(the files of the ``coqui/XTTS-v2`` repository on Hugging Face, as they are).

``DIR`` is ``PARLA_ENGINES__XTTS__MODEL_DIR`` when set, else the first that holds them of
``PARLA_MODELS_DIR/xtts/`` (default ``<data_dir>/models/xtts/``), ``XTTS_MODEL_DIR`` (the XTTS
service's variable) and a Hugging Face cache read offline (``models--coqui--XTTS-v2/snapshots/<revision>/``
under ``HF_HUB_CACHE``, ``HF_HOME/hub`` or ``~/.cache/huggingface/hub``), as
``parla.engines.weights`` finds every heavy engine's weights.

Cloning: a voice's samples become XTTS's conditioning (the GPT conditioning latents and the
speaker embedding), computed once per voice and cached by the voice's ``key``, in memory and on
disk under ``<data_dir>/cache/xtts/<key>.pt`` (with a fingerprint of the model they were computed
with: new weights, new conditioning). ``prepare_voice`` computes them ahead of the first request.

Built-in voices (``alloy``...): XTTS has no voice of its own besides the studio speakers of
``speakers_xtts.pth``. When the model directory holds that file, the OpenAI names map to studio
speakers (``voice_presets``); without it a built-in voice is refused (400) saying so.

Synthesis streams through ``Xtts.inference_stream``: audio is yielded every
``stream_chunk_size`` GPT tokens (20, about a second of speech), before the sentence is done.
With a seed, torch's and Python's generators are seeded before each piece: same seed, same audio.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import logging
import random
import re
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import Field

from parla.engines.base import (
    AudioChunk,
    Capabilities,
    EngineContext,
    EngineSettings,
    Param,
    SynthesisRequest,
    VoiceRef,
)
from parla.engines.heavy import HeavyEngine
from parla.engines.memory import VoiceMemory
from parla.engines.weights import FoundWeights, locate
from parla.errors import InvalidInputError

log = logging.getLogger(__name__)

SAMPLE_RATE = 24_000
LANGUAGES = ("en", "es", "fr", "de", "it", "pt", "pl", "tr", "ru", "nl", "cs", "ar", "zh-cn", "hu", "ko", "ja", "hi")
"""The languages XTTS-v2 declares (its config.json), in its order."""
WEIGHT_FILES = ("config.json", "model.pth", "vocab.json")
"""What the loader needs in the model directory."""
SPEAKERS_FILE = "speakers_xtts.pth"
LANGUAGE_PACKAGES = {"zh-cn": ("pypinyin", "pypinyin"), "ja": ("cutlet", "coqui-tts[ja]")}
"""Text front ends XTTS imports for one language only."""
CONDITIONING_RATE = 22_050
"""The rate XTTS computes its conditioning at (``get_conditioning_latents``' ``load_sr``)."""
CACHE_VERSION = 1
"""Bumped when the way conditioning is computed changes, so stale cached files are recomputed."""
MEMORY_CACHE = 64
"""Voices whose conditioning is kept in memory (about 130 kB each on XTTS-v2)."""

STUDIO_SPEAKERS = {
    "alloy": "Ana Florence",
    "echo": "Andrew Chipper",
    "fable": "Viktor Menelaos",
    "nova": "Nova Hogarth",
    "onyx": "Damien Black",
    "shimmer": "Sofia Hellen",
}
"""The OpenAI names as XTTS-v2's studio speakers (``speakers_xtts.pth``). Where a speakers file lacks
the one named (a fine-tuned model's own), the voice takes the speaker at its position in the file's
sorted names, so every built-in voice still speaks, each differently."""


class XttsSettings(EngineSettings):
    """``PARLA_ENGINES__XTTS__*``."""

    model_dir: Path | None = None
    """The model directory (config.json, model.pth, vocab.json); when set, the only place looked in."""
    max_audio_tokens: int | None = Field(default=None, ge=1)
    """Most GPT audio tokens per piece (about 21.5 a second of speech); none: the model's own limit.
    A cap for tests on random weights, which never emit the stop token."""
    stream_chunk_size: int = Field(default=20, ge=1, le=1000)
    """GPT tokens per streamed chunk (XTTS's default, 20: about 0.9 s of audio)."""


@dataclass(frozen=True)
class Conditioning:
    """What XTTS speaks a voice from: its GPT conditioning latents and speaker embedding (tensors)."""

    gpt_cond_latent: Any
    speaker_embedding: Any


def find_model_dir(settings: XttsSettings, context: EngineContext) -> FoundWeights:
    """Where the model directory is, or what is missing where (the engine's unavailable reason):
    ``PARLA_ENGINES__XTTS__MODEL_DIR`` alone when set, else as ``parla.engines.weights.locate`` finds
    heavy engines' weights (``<models_dir>/xtts/``, ``XTTS_MODEL_DIR``, the Hugging Face cache)."""
    if settings.model_dir is None:
        return locate("xtts", context)
    directory = settings.model_dir.expanduser()
    missing = [name for name in WEIGHT_FILES if not (directory / name).is_file()]
    if not missing:
        return FoundWeights("xtts", {"": directory}, {"": "PARLA_ENGINES__XTTS__MODEL_DIR"})
    there = f"lacks {', '.join(missing)}" if directory.is_dir() else "does not exist"
    return FoundWeights(
        "xtts",
        reason=f"the weights of 'xtts' are not all here (nothing is downloaded): PARLA_ENGINES__XTTS__MODEL_DIR is "
        f"{directory}, which {there}: put {', '.join(WEIGHT_FILES)} there (and optionally {SPEAKERS_FILE})",
    )


def xtts_language(language: str) -> str | None:
    """XTTS's name of a request's language (``en-US``: ``en``; ``zh``, ``zh-TW``: ``zh-cn``), or ``None``."""
    lang = language.strip().lower().replace("_", "-")
    if lang in LANGUAGES:
        return lang
    base = lang.split("-")[0]
    if base == "zh":
        return "zh-cn"
    return base if base in LANGUAGES else None


def _cache_name(key: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]", "_", key)


class XttsEngine(HeavyEngine):
    name = "xtts"
    title = "XTTS-v2"
    required_packages = (
        ("TTS", "coqui-tts"),
        ("torch", "torch"),
        ("torchaudio", "torchaudio"),
        ("torchcodec", "torchcodec"),
    )
    """coqui-tts refuses to import without torchaudio and (from torch 2.9 on) torchcodec present, although
    Parla reads audio itself and never calls their I/O."""
    memory_size = MEMORY_CACHE
    description = "Coqui XTTS-v2: multilingual voice cloning from a few seconds of reference audio (coqui-tts, torch)."
    capabilities = Capabilities(
        seed_varies=True,  # it samples: another seed, another rendering
        sample_rate=SAMPLE_RATE,
        languages=LANGUAGES,
        streaming=True,
        cloning=True,
        needs_transcript=False,
        parameters=(
            Param(
                "temperature",
                float,
                None,
                0.01,
                1.0,
                "Sampling temperature of the GPT; none: the model's config.json (XTTS-v2: 0.75).",
            ),
            Param(
                "top_p",
                float,
                None,
                0.01,
                1.0,
                "Nucleus sampling threshold; none: the model's config.json (XTTS-v2: 0.85).",
            ),
            Param("top_k", int, None, 1, 1000, "Top-K sampling; none: the model's config.json (XTTS-v2: 50)."),
            Param(
                "repetition_penalty",
                float,
                None,
                1.0,
                20.0,
                "Penalty on repeated tokens (1: none) against long silences; none: config.json's (XTTS-v2: 5.0).",
            ),
            Param(
                "length_penalty",
                float,
                None,
                -10.0,
                10.0,
                "Exponential length penalty (beam search only; streaming samples, so it has no effect there).",
            ),
            Param("speed", float, 1.0, 0.25, 4.0, "Pace, multiplied by the request's speed."),
        ),
    )
    settings_model = XttsSettings
    settings: XttsSettings
    _memory: VoiceMemory[Conditioning]

    def __init__(self, settings: XttsSettings | None = None, context: EngineContext | None = None) -> None:
        super().__init__(settings, context)
        self._fingerprint = ""
        self.stats = {"memory_hits": 0, "disk_hits": 0, "computed": 0}
        """How conditioning was found (logged too: the tests count it)."""
        found = self.find_weights()
        self.voice_presets = self._presets(found.path if found.complete else None)

    @staticmethod
    def _presets(model_dir: Path | None) -> dict[str, dict[str, Any]]:
        if model_dir is None or not (model_dir / SPEAKERS_FILE).is_file():
            return {}
        return {voice: {"speaker": speaker, "slot": i} for i, (voice, speaker) in enumerate(STUDIO_SPEAKERS.items())}

    # -- availability and lifecycle -------------------------------------------------------------

    def find_weights(self) -> FoundWeights:
        return find_model_dir(self.settings, self.context)

    def language_problem(self, language: str) -> str | None:
        """Why this engine cannot speak ``language`` (not one of XTTS's, or its text front end is missing)."""
        lang = xtts_language(language)
        if lang is None:
            return f"engine 'xtts' speaks {', '.join(LANGUAGES)}, not {language!r}"
        needed = LANGUAGE_PACKAGES.get(lang)
        if needed and self.missing_package() is None and importlib.util.find_spec(needed[0]) is None:
            return f"engine 'xtts' needs {needed[0]} for {lang!r}: install {needed[1]} into its environment"
        return None

    def _load(self) -> None:
        model_dir = self.located().path
        started = time.perf_counter()
        torch: Any = importlib.import_module("torch")
        configs: Any = importlib.import_module("TTS.tts.configs.xtts_config")
        models: Any = importlib.import_module("TTS.tts.models.xtts")
        config = configs.XttsConfig()
        config.load_json(str(model_dir / "config.json"))
        model = models.Xtts(config)
        model.load_checkpoint(config, checkpoint_dir=str(model_dir), eval=True, use_deepspeed=False)
        device = self.torch_device(torch)
        model.to(device)
        if self.settings.max_audio_tokens is not None:
            # The generator stops at this many tokens (HF generate's max_length is derived from it).
            model.gpt.max_gen_mel_tokens = min(int(model.gpt.max_gen_mel_tokens), self.settings.max_audio_tokens)
        self._torch, self._model, self.device = torch, model, device
        self._fingerprint = self._model_fingerprint(model_dir)
        self.voice_presets = self._presets(model_dir)
        log.info("xtts: loaded %s on %s in %.1f s", model_dir, device, time.perf_counter() - started)

    @staticmethod
    def _model_fingerprint(model_dir: Path) -> str:
        """Changes with the weights: cached conditioning computed with other weights is not reused."""
        weights = (model_dir / "model.pth").stat()
        config = (model_dir / "config.json").read_bytes()
        mark = f"{weights.st_size}:{weights.st_mtime_ns}:{hashlib.sha256(config).hexdigest()}"
        return hashlib.sha256(mark.encode()).hexdigest()[:16]

    # -- conditioning -------------------------------------------------------------------------

    def cache_path(self, key: str) -> Path:
        return self.context.data_dir / "cache" / self.name / f"{_cache_name(key)}.pt"

    def conditioning_for(self, voice: VoiceRef) -> Conditioning:
        """The voice's conditioning: a studio speaker's for a built-in voice, else computed from its
        samples once and cached (memory, then ``cache_path``). Raises ``InvalidInputError``."""
        if not voice.samples:
            return self._studio_speaker(voice)
        key = voice.key or hashlib.sha256(repr(voice.samples).encode()).hexdigest()[:32]
        remembered = self._memory.get(key)
        if remembered is not None:
            self.stats["memory_hits"] += 1
            log.debug("xtts: conditioning for voice %r from memory", voice.name)
            return remembered
        path = self.cache_path(key)
        conditioning = self._read_cache(path)
        if conditioning is not None:
            self.stats["disk_hits"] += 1
            log.info("xtts: conditioning for voice %r read from %s", voice.name, path)
        else:
            started = time.perf_counter()
            conditioning = self._compute(voice)
            self.stats["computed"] += 1
            self._write_cache(path, conditioning)
            log.info(
                "xtts: conditioning for voice %r computed from %d samples in %.2f s",
                voice.name,
                len(voice.samples),
                time.perf_counter() - started,
            )
        self._memory.put(key, conditioning)
        return conditioning

    def _studio_speaker(self, voice: VoiceRef) -> Conditioning:
        preset = voice.preset(self.name)
        manager = getattr(self._model, "speaker_manager", None)
        speakers: Mapping[str, Any] = manager.speakers if manager is not None else {}
        if not preset or not speakers:
            raise InvalidInputError(
                f"voice {voice.name!r} is a built-in voice, and engine 'xtts' speaks voices cloned from samples:"
                " use a library voice (POST /v1/voices/clone makes one from a recording), or put XTTS-v2's"
                f" {SPEAKERS_FILE} in its model directory for the built-in voices to be its studio speakers",
                param="voice",
            )
        name = str(preset.get("speaker", ""))
        if name not in speakers:
            names = sorted(speakers)
            name = names[int(preset.get("slot", 0)) % len(names)]
        entry = speakers[name]
        return Conditioning(entry["gpt_cond_latent"], entry["speaker_embedding"])

    def _compute(self, voice: VoiceRef) -> Conditioning:
        """XTTS's ``get_conditioning_latents`` on the voice's samples, read by Parla (any format)
        instead of torchaudio: each sample's speaker embedding, averaged; the GPT latents of them all."""
        from parla.audio.decode import decode_audio

        torch, model = self._torch, self._model
        config = model.config
        max_ref = int(config.max_ref_len) * CONDITIONING_RATE
        audios, embeddings = [], []
        with torch.inference_mode():
            for path, _ in voice.samples:
                samples, _ = decode_audio(path, CONDITIONING_RATE)
                audio = torch.from_numpy(np.ascontiguousarray(samples, dtype=np.float32))[None, :max_ref]
                audio = audio.to(self.device)
                if config.sound_norm_refs:
                    audio = audio / audio.abs().max().clamp(min=1e-6) * 0.75
                embeddings.append(model.get_speaker_embedding(audio, CONDITIONING_RATE))
                audios.append(audio)
            try:
                latent = model.get_gpt_cond_latents(
                    torch.cat(audios, dim=-1),
                    CONDITIONING_RATE,
                    length=int(config.gpt_cond_len),
                    chunk_length=int(config.gpt_cond_chunk_len),
                )
            except RuntimeError as exc:
                if "too short" in str(exc):
                    raise InvalidInputError(f"voice {voice.name!r}: {exc}", param="voice") from None
                raise
            embedding = torch.stack(embeddings).mean(dim=0)
        return Conditioning(latent, embedding)

    def _read_cache(self, path: Path) -> Conditioning | None:
        if not path.is_file():
            return None
        try:
            saved = self._torch.load(path, map_location=self.device, weights_only=True)
            if saved.get("version") != CACHE_VERSION or saved.get("model") != self._fingerprint:
                log.info("xtts: %s was computed with other weights or another version: computing it again", path)
                return None
            return Conditioning(saved["gpt_cond_latent"], saved["speaker_embedding"])
        except Exception as exc:  # unreadable or truncated: computed again and overwritten
            log.warning("xtts: ignoring unreadable cached conditioning %s: %s", path, exc)
            return None

    def _write_cache(self, path: Path, conditioning: Conditioning) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".part")
        saved = {
            "version": CACHE_VERSION,
            "model": self._fingerprint,
            "gpt_cond_latent": conditioning.gpt_cond_latent.detach().cpu(),
            "speaker_embedding": conditioning.speaker_embedding.detach().cpu(),
        }
        self._torch.save(saved, tmp)
        tmp.replace(path)

    def prepare_voice(self, voice: VoiceRef) -> None:
        """Compute and cache the voice's conditioning now (after a sample changes), not at its first request."""
        if voice.samples:
            self.load()
            self.conditioning_for(voice)

    # -- synthesis ----------------------------------------------------------------------------

    def synthesize(self, request: SynthesisRequest) -> Iterator[AudioChunk]:
        self.load()
        problem = self.language_problem(request.language)
        if problem:
            raise InvalidInputError(problem, param="language")
        language = xtts_language(request.language) or "en"
        conditioning = self.conditioning_for(request.voice)
        torch, model = self._torch, self._model
        config = model.config
        params = request.parameters

        def knob(name: str) -> Any:
            value = params.get(name)
            return getattr(config, name) if value is None else value

        if request.seed is not None:
            torch.manual_seed(request.seed)
            random.seed(request.seed)
        chunks = model.inference_stream(
            request.text,
            language,
            conditioning.gpt_cond_latent,
            conditioning.speaker_embedding,
            stream_chunk_size=self.settings.stream_chunk_size,
            temperature=float(knob("temperature")),
            length_penalty=float(knob("length_penalty")),
            repetition_penalty=float(knob("repetition_penalty")),
            top_k=int(knob("top_k")),
            top_p=float(knob("top_p")),
            speed=float(request.speed * float(params.get("speed") or 1.0)),
            enable_text_splitting=False,  # the gateway splits the text into pieces already
        )
        for wav in chunks:
            samples = wav.detach().float().cpu().numpy().reshape(-1)
            if samples.size:
                yield AudioChunk(np.clip(samples, -1.0, 1.0).astype(np.float32), SAMPLE_RATE)
