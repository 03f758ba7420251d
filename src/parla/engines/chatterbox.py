"""``chatterbox``: Resemble AI's Chatterbox (``chatterbox-tts``), cloning from a few seconds of any library voice.

chatterbox-tts 0.1.7 declares torch 2.6 and gradio, which cannot go in beside Parla's torch, so it
runs in an environment of its own (``parla engines install chatterbox``: ``chatterbox-tts`` goes in
``--no-deps``, with what it imports) as a worker (``parla serve-engine chatterbox`` from that
environment, on the model microservice API's port 8004 by default) that a gateway reaches as a
``RemoteEngine``. This module imports cleanly without any of it: the heavy libraries are imported
in ``_load``, and ``unavailable_reason`` says what is missing.

Weights are read from disk, never downloaded, in the layout Chatterbox's own loader reads
(``ChatterboxTTS.from_local(DIR, device)``)::

    DIR/ve.safetensors       the voice encoder (speaker embedding of the reference, 256 values)
    DIR/t3_cfg.safetensors   T3, the Llama that turns text tokens into speech tokens
    DIR/s3gen.safetensors    S3Gen: the speech tokenizer, the flow-matching decoder and the HiFi-GAN vocoder
    DIR/tokenizer.json       the English text tokenizer (tokenizers)
    DIR/conds.pt             optional: the default voice's conditioning, for the built-in voices (see below)

(the files of the ``ResembleAI/chatterbox`` repository on Hugging Face, as they are). ``DIR`` is
``PARLA_MODELS_DIR/chatterbox/`` (default ``<data_dir>/models/chatterbox/``), else a Hugging Face
cache read offline (``models--ResembleAI--chatterbox/snapshots/<revision>/``), as
``parla.engines.weights`` finds every heavy engine's weights. T3's depth and widths are read from
``t3_cfg.safetensors`` (the published one is the library's ``Llama_520M``, which the loader assumes;
a checkpoint of another size is built to its own), so the loader is Chatterbox's, unchanged.

Cloning: Chatterbox speaks from one reference clip. A voice's samples, decoded by Parla (any
format) at 24 kHz and joined (as many as fit in the 10 s S3Gen reads, the first always), go through
Chatterbox's own ``prepare_conditionals``: the voice encoder's speaker embedding and the speech
tokens of the first 6 s for T3, the reference's mel frames, tokens and x-vector for S3Gen. That
conditioning is computed once per voice and kept in memory by the voice's ``key``;
``prepare_voice`` computes it ahead of the first request. ``exaggeration`` is applied per request
on top of it, as ``generate`` does.

Built-in voices (``alloy``...): Chatterbox has one voice of its own, the default conditioning of
``conds.pt``. When the model directory holds that file, the OpenAI names speak it, each with its
own delivery (``exaggeration`` and ``cfg_weight`` after the voice's description, ``voice_presets``:
one speaker, six ways of speaking); without it a built-in voice is refused (400) saying so.

Languages: English only (``ChatterboxTTS`` is the English model; the multilingual one is another
class and another checkpoint), so any other language is refused before any audio is made.

Synthesis runs the steps ``ChatterboxTTS.generate`` is made of (punctuation clean-up, text tokens,
``T3.inference``, ``S3Gen.inference``, the Perth watermark), because ``generate`` hard-codes 1000
speech tokens (40 s) and keeps the voice on the model object: here the speech tokens per piece are
``PARLA_ENGINES__CHATTERBOX__MAX_SPEECH_TOKENS`` (Chatterbox's 1000 by default; a cap for tests on
random weights, which never emit the stop token) and each request passes its own voice's
conditioning. ``cfg_weight`` 0 works (``generate`` 0.1.7 fails on it: T3's sampler always takes a
conditioned and an unconditioned row, so both are always given). Audio is made a piece (a sentence)
at a time and yielded whole; the gateway sends piece by piece, so the first audio comes after the
first sentence. Chatterbox has no pace control: a request's speed other than 1 stretches the
finished audio, pitch kept (Praat's overlap-add, as Kokoro does beyond its own range). Outputs
carry Resemble AI's imperceptible Perth watermark unless ``disable_watermark``. Knobs: ``generate``'s
own (``exaggeration``, ``cfg_weight``, ``temperature``, ``min_p``, ``top_p``, ``repetition_penalty``,
with its defaults) and S3Gen's ``n_cfm_timesteps`` (10: most of a piece's time on a CPU). With a seed,
torch's and Python's generators are seeded before each piece: same seed, same audio.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib
import io
import logging
import random
import re
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
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
from parla.errors import InvalidInputError

log = logging.getLogger(__name__)

SAMPLE_RATE = 24_000
"""S3Gen's output rate (``chatterbox.models.s3gen.S3GEN_SR``)."""
LANGUAGES = ("en",)
"""``ChatterboxTTS`` is the English model."""
BUILTIN_FILE = "conds.pt"
"""The default voice's conditioning, which ``from_local`` loads when it is there."""
MAX_REFERENCE_S = 10.0
"""The reference S3Gen reads (``ChatterboxTTS.DEC_COND_LEN``); T3 reads its first 6 s."""
SPEECH_VOCAB = 6561
"""Speech tokens S3Gen speaks; T3's start and stop tokens are above them."""
MAX_SPEECH_TOKENS = 4096
"""T3's learned positions (``T3Config.max_speech_tokens``): no piece can be longer."""
CFM_STEPS = 10
"""S3Gen's flow-matching steps, as ``S3Gen.inference`` takes them by default (most of a piece's time)."""
MEMORY_CACHE = 64
"""Voices whose conditioning is kept in memory (up to about 200 kB each: 10 s of mel frames, tokens, embeddings)."""
T3_CONFIG = "Llama_520M"
"""The entry of ``chatterbox.models.t3.llama_configs.LLAMA_CONFIGS`` that ``T3()`` is built from."""

DELIVERY = {
    "alloy": {"exaggeration": 0.5, "cfg_weight": 0.5},
    "echo": {"exaggeration": 0.4, "cfg_weight": 0.4},
    "fable": {"exaggeration": 0.8, "cfg_weight": 0.3},
    "nova": {"exaggeration": 0.6, "cfg_weight": 0.6},
    "onyx": {"exaggeration": 0.35, "cfg_weight": 0.3},
    "shimmer": {"exaggeration": 0.7, "cfg_weight": 0.5},
}
"""The built-in voices as deliveries of ``conds.pt``'s one speaker, after their descriptions and
Chatterbox's own advice (more exaggeration is more expressive; a lower cfg_weight slower, more
deliberate): alloy neutral (Chatterbox's defaults), echo calm, fable expressive, nova brisk, onyx
deliberate, shimmer lively. A request's own values win."""


class ChatterboxSettings(EngineSettings):
    """``PARLA_ENGINES__CHATTERBOX__*``."""

    max_speech_tokens: int = Field(default=1000, ge=1, le=MAX_SPEECH_TOKENS)
    """Most speech tokens T3 makes per piece (25 a second of speech): Chatterbox's own 1000 (40 s) by
    default. A cap for tests on random weights, which never emit the stop token."""


def t3_size(shapes: Mapping[str, tuple[int, ...]], head_dim: int) -> dict[str, int]:
    """T3's Llama sizes as a checkpoint's tensor shapes say (``tfmr.layers.N.*``): its depth, width,
    MLP width and heads of ``head_dim`` channels; empty when the shapes are not a T3's."""
    layers = {int(m.group(1)) for name in shapes if (m := re.match(r"tfmr\.layers\.(\d+)\.", name))}
    gate = shapes.get("tfmr.layers.0.mlp.gate_proj.weight")
    query = shapes.get("tfmr.layers.0.self_attn.q_proj.weight")
    key = shapes.get("tfmr.layers.0.self_attn.k_proj.weight")
    if not layers or gate is None or query is None or key is None or head_dim <= 0:
        return {}
    return {
        "num_hidden_layers": max(layers) + 1,
        "hidden_size": int(query[1]),
        "intermediate_size": int(gate[0]),
        "num_attention_heads": int(query[0]) // head_dim,
        "num_key_value_heads": int(key[0]) // head_dim,
    }


def checkpoint_shapes(path: Path) -> dict[str, tuple[int, ...]]:
    """Each tensor's shape in a safetensors file, read from its header (no weights loaded)."""
    safetensors: Any = importlib.import_module("safetensors")
    with safetensors.safe_open(str(path), framework="pt") as weights:
        return {name: tuple(weights.get_slice(name).get_shape()) for name in weights.keys()}  # noqa: SIM118


@contextmanager
def t3_sized_as(checkpoint: Path) -> Iterator[None]:
    """While ``from_local`` builds T3: ``LLAMA_CONFIGS[T3_CONFIG]``, the one entry ``T3()`` is built
    from, with the checkpoint's own sizes where they differ from the published model's; put back after."""
    configs: Any = importlib.import_module("chatterbox.models.t3.llama_configs")
    original: dict[str, Any] = configs.LLAMA_CONFIGS[T3_CONFIG]
    size = t3_size(checkpoint_shapes(checkpoint), int(original.get("head_dim") or 64))
    changed = {name: value for name, value in size.items() if original.get(name) != value}
    if not changed:
        yield
        return
    log.info("chatterbox: %s holds a T3 of another size than %s: built with %s", checkpoint.name, T3_CONFIG, changed)
    configs.LLAMA_CONFIGS[T3_CONFIG] = {**original, **changed}
    try:
        yield
    finally:
        configs.LLAMA_CONFIGS[T3_CONFIG] = original


def join_reference(parts: list[npt.NDArray[np.float32]], rate: int) -> npt.NDArray[np.float32]:
    """A voice's samples as one reference clip: as many as fit in ``MAX_REFERENCE_S``, the first always."""
    chosen: list[npt.NDArray[np.float32]] = []
    total = 0
    for samples in parts:
        if chosen and total + samples.size > MAX_REFERENCE_S * rate:
            break
        chosen.append(np.asarray(samples, dtype=np.float32))
        total += samples.size
    return np.concatenate(chosen) if chosen else np.zeros(0, dtype=np.float32)


class ChatterboxEngine(HeavyEngine):
    name = "chatterbox"
    title = "Chatterbox"
    required_packages = (
        ("chatterbox", "chatterbox-tts"),
        ("torch", "torch"),
        ("torchaudio", "torchaudio"),
        ("librosa", "librosa"),
        ("perth", "resemble-perth"),
        ("s3tokenizer", "s3tokenizer"),
        ("safetensors", "safetensors"),
    )
    """chatterbox-tts is installed without its declared dependencies, so each is checked by itself."""
    memory_size = MEMORY_CACHE
    description = (
        "Resemble AI's Chatterbox: English voice cloning from a few seconds of reference audio, "
        "with emotion exaggeration (chatterbox-tts, torch)."
    )
    capabilities = Capabilities(
        seed_varies=True,  # it samples: another seed, another rendering
        sample_rate=SAMPLE_RATE,
        languages=LANGUAGES,
        streaming=True,
        cloning=True,
        needs_transcript=False,
        parameters=(
            Param(
                "exaggeration",
                float,
                0.5,
                0.0,
                2.0,
                "Emotion exaggeration: 0.5 is neutral, higher more expressive (and faster); extremes can be unstable.",
            ),
            Param(
                "cfg_weight",
                float,
                0.5,
                0.0,
                1.0,
                "Classifier-free guidance weight: lower is slower and more deliberate, 0 turns guidance off.",
            ),
            Param("temperature", float, 0.8, 0.05, 5.0, "Sampling temperature of T3's speech tokens."),
            Param("min_p", float, 0.05, 0.0, 1.0, "Min-p sampling threshold (0: off)."),
            Param("top_p", float, 1.0, 0.0, 1.0, "Nucleus sampling threshold (1: off, Chatterbox's default)."),
            Param("repetition_penalty", float, 1.2, 1.0, 2.0, "Penalty on repeated speech tokens (1: none)."),
            Param(
                "n_cfm_timesteps",
                int,
                CFM_STEPS,
                1,
                100,
                "S3Gen's flow-matching steps, speech tokens to sound (Chatterbox's 10): fewer is faster, rougher.",
            ),
            Param(
                "disable_watermark",
                bool,
                False,
                description="Leave out Resemble AI's imperceptible Perth watermark, which outputs carry by default.",
            ),
        ),
    )
    settings_model = ChatterboxSettings
    settings: ChatterboxSettings

    def __init__(self, settings: ChatterboxSettings | None = None, context: EngineContext | None = None) -> None:
        super().__init__(settings, context)
        self._tts: Any = None
        self._builtin: Any = None
        """``conds.pt``'s conditioning, as ``from_local`` loaded it (``None`` without the file)."""
        self._conditioning_lock = threading.Lock()
        """``prepare_conditionals`` leaves its result on the model: one voice at a time."""
        self.stats = {"memory_hits": 0, "computed": 0}
        """How conditioning was found (logged too: the tests count it)."""
        self.voice_presets = self._presets()

    def _presets(self) -> dict[str, dict[str, Any]]:
        if self.missing_package() is not None:
            return {}
        found = self.find_weights()
        if not found.complete or not (found.path / BUILTIN_FILE).is_file():
            return {}
        return {voice: dict(delivery) for voice, delivery in DELIVERY.items()}

    # -- availability and lifecycle -------------------------------------------------------------

    def _load(self) -> None:
        found = self.located()
        model_dir = found.path
        started = time.perf_counter()
        torch: Any = importlib.import_module("torch")
        tts: Any = importlib.import_module("chatterbox.tts")
        device = self.torch_device(torch)
        with t3_sized_as(model_dir / "t3_cfg.safetensors"):
            model = tts.ChatterboxTTS.from_local(model_dir, device)
        self._torch, self._tts, self._model, self.device = torch, tts, model, device
        self._builtin = model.conds
        self.voice_presets = self._presets()
        log.info(
            "chatterbox: loaded %s on %s in %.1f s (%s)",
            found.where(),
            device,
            time.perf_counter() - started,
            "with conds.pt's default voice" if self._builtin is not None else "no conds.pt: cloned voices only",
        )

    def _unload(self) -> None:
        self._builtin = None
        super()._unload()

    # -- conditioning -------------------------------------------------------------------------

    def conditioning_for(self, voice: VoiceRef) -> Any:
        """The voice's ``Conditionals``: ``conds.pt``'s for a built-in voice, else computed from its
        samples once per voice key and kept in memory. Raises ``InvalidInputError``."""
        if not voice.samples:
            return self._default_voice(voice)
        key = voice.key or hashlib.sha256(repr(voice.samples).encode()).hexdigest()[:32]
        remembered = self._memory.get(key)
        if remembered is not None:
            self.stats["memory_hits"] += 1
            log.debug("chatterbox: conditioning for voice %r from memory", voice.name)
            return remembered
        started = time.perf_counter()
        conditioning, seconds = self._compute(voice)
        self.stats["computed"] += 1
        log.info(
            "chatterbox: conditioning for voice %r computed from %d samples (%.1f s of audio) in %.2f s",
            voice.name,
            len(voice.samples),
            seconds,
            time.perf_counter() - started,
        )
        self._memory.put(key, conditioning)
        return conditioning

    def _default_voice(self, voice: VoiceRef) -> Any:
        if self._builtin is None:
            raise InvalidInputError(
                f"voice {voice.name!r} is a built-in voice, and engine 'chatterbox' speaks voices cloned from samples:"
                " use a library voice (POST /v1/voices/clone makes one from a recording), or put Chatterbox's"
                f" {BUILTIN_FILE} in its model directory for the built-in voices to speak its default voice",
                param="voice",
            )
        if not voice.preset(self.name):
            raise InvalidInputError(
                f"voice {voice.name!r} has no samples and is none of engine 'chatterbox''s built-in voices"
                f" ({', '.join(DELIVERY)}: its {BUILTIN_FILE} default voice): use one of them or a library voice",
                param="voice",
            )
        return self._builtin

    def _compute(self, voice: VoiceRef) -> tuple[Any, float]:
        """Chatterbox's ``prepare_conditionals`` on the voice's samples, read by Parla (any format) at
        24 kHz and joined, handed over as an in-memory WAV (the library reads a file with librosa)."""
        from parla.audio.decode import decode_audio
        from parla.audio.encode import encode_audio

        joined = join_reference([decode_audio(path, SAMPLE_RATE)[0] for path, _ in voice.samples], SAMPLE_RATE)
        if joined.size < SAMPLE_RATE // 2:
            raise InvalidInputError(
                f"voice {voice.name!r}: its reference audio is too short for engine 'chatterbox' (under 0.5 s)",
                param="voice",
            )
        wav = io.BytesIO(encode_audio(joined, SAMPLE_RATE, "wav"))
        model = self._model
        with self._conditioning_lock:
            previous = model.conds
            try:
                model.prepare_conditionals(wav, exaggeration=0.5)
                conditioning = model.conds
            finally:
                model.conds = previous
        return conditioning, joined.size / SAMPLE_RATE

    def prepare_voice(self, voice: VoiceRef) -> None:
        """Compute the voice's conditioning now (after a sample changes), not at its first request."""
        if voice.samples:
            self.load()
            self.conditioning_for(voice)

    # -- synthesis ----------------------------------------------------------------------------

    def synthesize(self, request: SynthesisRequest) -> Iterator[AudioChunk]:
        self.load()
        problem = self.language_problem(request.language)
        if problem:
            raise InvalidInputError(problem, param="language")
        conditioning = self.conditioning_for(request.voice)
        specs = {p.name: p.default for p in self.capabilities.parameters}
        params = {**specs, **{k: v for k, v in request.parameters.items() if v is not None}}
        torch, model = self._torch, self._model
        if request.seed is not None:
            torch.manual_seed(request.seed)
            random.seed(request.seed)
        samples = self._speak(
            request.text,
            conditioning,
            exaggeration=float(params["exaggeration"]),
            cfg_weight=float(params["cfg_weight"]),
            temperature=float(params["temperature"]),
            min_p=float(params["min_p"]),
            top_p=float(params["top_p"]),
            repetition_penalty=float(params["repetition_penalty"]),
            flow_steps=int(params["n_cfm_timesteps"]),
        )
        if samples.size and not params["disable_watermark"]:
            samples = np.asarray(model.watermarker.apply_watermark(samples, sample_rate=SAMPLE_RATE), dtype=np.float32)
        if samples.size and abs(request.speed - 1.0) > 1e-6:
            from parla.engines.kokoro import stretch

            samples = stretch(samples, SAMPLE_RATE, request.speed)
        if samples.size:
            yield AudioChunk(np.clip(samples, -1.0, 1.0).astype(np.float32), SAMPLE_RATE)

    def _speak(
        self,
        text: str,
        conditioning: Any,
        *,
        exaggeration: float,
        cfg_weight: float,
        flow_steps: int,
        **sampling: float,
    ) -> Any:
        """``ChatterboxTTS.generate``'s steps, before the watermark, with this engine's token cap and
        the voice's own conditioning: float32 samples at 24 kHz (none when T3 stops at once)."""
        torch, tts, model = self._torch, self._tts, self._model
        functional: Any = importlib.import_module("torch.nn.functional")
        hp = model.t3.hp
        t3_cond = dataclasses.replace(
            conditioning.t3, emotion_adv=exaggeration * torch.ones(1, 1, 1, device=self.device)
        )
        tokens = model.tokenizer.text_to_tokens(tts.punc_norm(" ".join(text.split()))).to(self.device)
        tokens = torch.cat([tokens, tokens], dim=0)  # T3's sampler reads a conditioned and an unconditioned row
        tokens = functional.pad(tokens, (1, 0), value=hp.start_text_token)
        tokens = functional.pad(tokens, (0, 1), value=hp.stop_text_token)
        with torch.inference_mode():
            speech = model.t3.inference(
                t3_cond=t3_cond,
                text_tokens=tokens,
                max_new_tokens=self.settings.max_speech_tokens,
                cfg_weight=cfg_weight,
                **sampling,
            )[0]
            speech = speech[speech < SPEECH_VOCAB].to(self.device)  # the stop token, and any other special one
            if speech.numel() == 0:
                return np.zeros(0, dtype=np.float32)
            wav, _ = model.s3gen.inference(speech_tokens=speech, ref_dict=conditioning.gen, n_cfm_timesteps=flow_steps)
        return wav.squeeze(0).detach().float().cpu().numpy()
