"""``f5``: F5-TTS (``f5-tts``), cloning from a library voice's recording and what it says.

F5-TTS declares gradio, bitsandbytes and torchcodec, which cannot go in beside Parla's torch, so it
runs in an environment of its own (``parla engines install f5``: ``f5-tts`` goes in ``--no-deps``,
with what it imports) as a worker (``parla serve-engine f5`` from that environment) that a gateway
reaches as a ``RemoteEngine``. This module imports cleanly without any of it: the heavy libraries
are imported in ``_load``, and ``unavailable_reason`` says what is missing.

Weights are read from disk, never downloaded, in the layout F5-TTS's own loaders read
(``utils_infer.load_model(DiT, arch, ckpt, vocab_file=...)`` and
``load_vocoder("vocos", is_local=True, local_path=DIR/vocos)``)::

    DIR/model_*.safetensors   the checkpoint (or model_*.pt: {"ema_model_state_dict": ...}), its EMA weights
    DIR/vocab.txt             the character vocabulary, one token a line
    DIR/config.yaml           optional: an F5-TTS model config (``model.backbone``, ``model.arch``,
                              ``model.mel_spec``); without it, f5-tts's own ``F5TTS_v1_Base``
    DIR/vocos/config.yaml     the Vocos vocoder (charactr/vocos-mel-24khz) as Vocos.from_hparams reads it
    DIR/vocos/pytorch_model.bin

(``SWivid/F5-TTS``'s ``F5TTS_v1_Base/`` folder and ``charactr/vocos-mel-24khz``, as they are).
``DIR`` is ``PARLA_MODELS_DIR/f5/`` (default ``<data_dir>/models/f5/``); each part may also come
from an offline Hugging Face cache, as ``parla.engines.weights`` finds every heavy engine's weights.
``PARLA_ENGINES__F5__CONFIG`` names another of f5-tts's configs (``F5TTS_Base``) or a YAML file.

Cloning: F5-TTS speaks from a reference recording and its transcript (``needs_transcript``): a
voice's transcribed samples, resampled to 24 kHz and joined (as many as fit in 12 s, the first
always), with their transcripts. The prompt is made once per voice and kept in memory by the
voice's ``key``. Knobs: ``nfe_step``, ``cfg_strength``, ``sway_sampling_coef``, ``speed``.

Synthesis goes through ``utils_infer.infer_batch_process(..., streaming=True)``: F5-TTS is not
autoregressive (a piece's whole spectrogram is made in ``nfe_step`` steps), so a piece's audio is
yielded in chunks of ``stream_chunk_size`` samples once that piece is made; the gateway sends
piece by piece, so the first audio comes after the first sentence, not the whole text. With a
seed, torch's generators are seeded before each piece: same seed, same audio.
``PARLA_ENGINES__F5__MAX_SECONDS`` caps the audio made per piece (for tests on random weights).
"""

from __future__ import annotations

import hashlib
import importlib
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass
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
    EngineUnavailableError,
    Param,
    SynthesisRequest,
    VoiceRef,
)
from parla.engines.heavy import HeavyEngine
from parla.engines.memory import VoiceMemory
from parla.errors import InvalidInputError

log = logging.getLogger(__name__)

SAMPLE_RATE = 24_000
HOP_LENGTH = 256
"""Samples per mel frame (F5-TTS's ``hop_length``): durations are counted in frames."""
LANGUAGES = ("en", "zh")
"""What F5TTS_v1_Base was trained on (Emilia, English and Chinese)."""
DEFAULT_CONFIG = "F5TTS_v1_Base"
MAX_REFERENCE_S = 12.0
"""Reference audio F5-TTS is made for (its own preprocessing clips to 12 s)."""
SHORT_TEXT_BYTES = 10
"""F5-TTS speaks a text shorter than this at speed 0.3 (``infer_batch_process``); so does Parla's estimate."""
MEMORY_CACHE = 64


class F5Settings(EngineSettings):
    """``PARLA_ENGINES__F5__*``."""

    config: str | None = None
    """One of f5-tts's own configs (``F5TTS_v1_Base``, ``F5TTS_Base``) or a YAML file; none: the
    model directory's ``config.yaml`` when there is one, else ``F5TTS_v1_Base``."""
    max_seconds: float | None = Field(default=None, gt=0)
    """Most seconds of audio per piece; none: as long as F5-TTS estimates from the reference's pace.
    A cap for tests on random weights."""
    stream_chunk_size: int = Field(default=12_000, ge=256, le=1_000_000)
    """Samples per streamed chunk of a finished piece (12 000: half a second)."""


@dataclass(frozen=True)
class Prompt:
    """What F5-TTS speaks a voice from: its reference audio (a 1 x N float tensor at 24 kHz) and what it says."""

    audio: Any
    text: str
    seconds: float


def reference_text(text: str) -> str:
    """The transcript as F5-TTS wants it: ending a sentence, then a space (its ``preprocess_ref_audio_text``)."""
    text = " ".join(text.split())
    if text.endswith(". ") or text.endswith("。"):
        return text
    return text + " " if text.endswith(".") else text + ". "


def frames_for(prompt_frames: int, prompt_text: str, text: str, speed: float, max_seconds: float | None) -> int:
    """The total frames (reference and new speech) F5-TTS is asked for: its own estimate (the
    reference's pace, scaled by speed), the new speech capped at ``max_seconds``."""
    pace = speed if len(text.encode()) >= SHORT_TEXT_BYTES else 0.3
    new = int(prompt_frames / max(len(prompt_text.encode()), 1) * len(text.encode()) / pace)
    if max_seconds is not None:
        new = min(new, int(max_seconds * SAMPLE_RATE / HOP_LENGTH))
    return prompt_frames + max(new, 1)


class F5Engine(HeavyEngine):
    name = "f5"
    title = "F5-TTS"
    required_packages = (("f5_tts", "f5-tts"), ("torch", "torch"), ("torchaudio", "torchaudio"), ("vocos", "vocos"))
    memory_size = MEMORY_CACHE
    description = "F5-TTS: voice cloning from a recording and its transcript, by flow matching (f5-tts, torch)."
    capabilities = Capabilities(
        seed_varies=True,  # it samples: another seed, another rendering
        sample_rate=SAMPLE_RATE,
        languages=LANGUAGES,
        streaming=True,
        cloning=True,
        needs_transcript=True,
        parameters=(
            Param("nfe_step", int, 32, 2, 128, "Flow-matching steps: more is slower and cleaner."),
            Param("cfg_strength", float, 2.0, 0.0, 10.0, "Classifier-free guidance strength."),
            Param(
                "sway_sampling_coef",
                float,
                -1.0,
                -1.0,
                1.0,
                "Sway sampling of the flow's time steps (-1: F5-TTS's default, more steps early).",
            ),
            Param("speed", float, 1.0, 0.25, 4.0, "Pace, multiplied by the request's speed."),
        ),
    )
    settings_model = F5Settings
    settings: F5Settings
    _memory: VoiceMemory[Prompt]

    def __init__(self, settings: F5Settings | None = None, context: EngineContext | None = None) -> None:
        super().__init__(settings, context)
        self._vocoder: Any = None
        self._infer: Any = None
        self.stats = {"memory_hits": 0, "computed": 0}

    # -- availability and lifecycle -------------------------------------------------------------

    def model_config(self, model_dir: Path) -> tuple[Path, dict[str, Any]]:
        """The model config's file and its ``model`` section (backbone, arch, mel_spec)."""
        yaml: Any = importlib.import_module("yaml")
        name = self.settings.config
        if name is None:
            path = model_dir / "config.yaml"
            if not path.is_file():
                name = DEFAULT_CONFIG
        if name is not None:
            given = Path(name).expanduser()
            if given.suffix in (".yaml", ".yml"):
                path = given
            else:
                from importlib.resources import files

                path = Path(str(files("f5_tts").joinpath(f"configs/{name}.yaml")))
        if not path.is_file():
            raise EngineUnavailableError(f"engine 'f5': the model config {path} does not exist")
        loaded = yaml.safe_load(path.read_text())
        model = loaded.get("model") if isinstance(loaded, dict) else None
        if not isinstance(model, dict) or not isinstance(model.get("arch"), dict):
            raise EngineUnavailableError(f"engine 'f5': {path} has no model.arch (an F5-TTS model config)")
        return path, model

    def _load(self) -> None:
        from parla.engines.weights import Need

        found = self.located()
        model_dir, vocos_dir = found.path, found.part("vocos")
        started = time.perf_counter()
        config_path, config = self.model_config(model_dir)
        backbone = str(config.get("backbone", "DiT"))
        mel_type = str((config.get("mel_spec") or {}).get("mel_spec_type", "vocos"))
        if mel_type != "vocos":
            raise EngineUnavailableError(f"engine 'f5' speaks through Vocos; {config_path} asks for {mel_type}")
        checkpoint = Need.of("model_*.safetensors", "model_*.pt").find(model_dir)
        vocab = model_dir / "vocab.txt"
        torch: Any = importlib.import_module("torch")
        infer: Any = importlib.import_module("f5_tts.infer.utils_infer")
        backbones: Any = importlib.import_module("f5_tts.model")
        device = self.torch_device(torch)
        model = infer.load_model(
            getattr(backbones, backbone),
            dict(config["arch"]),
            str(checkpoint),
            mel_spec_type="vocos",
            vocab_file=str(vocab),
            device=device,
        )
        vocoder = infer.load_vocoder("vocos", is_local=True, local_path=str(vocos_dir), device=device)
        self._torch, self._infer, self._model, self._vocoder, self.device = torch, infer, model, vocoder, device
        log.info(
            "f5: loaded %s (%s, %s) on %s in %.1f s",
            checkpoint,
            config_path.name,
            found.where(),
            device,
            time.perf_counter() - started,
        )

    def _unload(self) -> None:
        self._vocoder = None
        super()._unload()

    # -- the voice's prompt ---------------------------------------------------------------------

    def prompt_for(self, voice: VoiceRef) -> Prompt:
        """The voice's reference audio and transcript, made once per voice key. Raises ``InvalidInputError``."""
        transcribed = [(path, text.strip()) for path, text in voice.samples if text and text.strip()]
        if not transcribed:
            raise InvalidInputError(
                f"voice {voice.name!r} has no sample with a transcript, and engine 'f5' speaks from a recording"
                " and what it says: use a library voice (POST /v1/voices/clone makes one from a recording"
                " and its transcript)",
                param="voice",
            )
        key = voice.key or hashlib.sha256(repr(transcribed).encode()).hexdigest()[:32]
        remembered = self._memory.get(key)
        if remembered is not None:
            self.stats["memory_hits"] += 1
            return remembered
        started = time.perf_counter()
        prompt = self._prompt(transcribed)
        self.stats["computed"] += 1
        log.info(
            "f5: reference for voice %r computed from %d samples (%.1f s of audio) in %.2f s",
            voice.name,
            len(transcribed),
            prompt.seconds,
            time.perf_counter() - started,
        )
        self._memory.put(key, prompt)
        return prompt

    def _prompt(self, transcribed: list[tuple[Path, str]]) -> Prompt:
        from parla.audio.decode import decode_audio

        parts: list[npt.NDArray[np.float32]] = []
        texts: list[str] = []
        total = 0
        for path, text in transcribed:
            samples, _ = decode_audio(path, SAMPLE_RATE)
            if parts and total + samples.size > MAX_REFERENCE_S * SAMPLE_RATE:
                break
            parts.append(np.asarray(samples, dtype=np.float32))
            texts.append(text)
            total += samples.size
        joined = np.concatenate(parts)
        if joined.size < HOP_LENGTH * 4:
            raise InvalidInputError("the voice's reference audio is too short for engine 'f5'", param="voice")
        audio = self._torch.from_numpy(np.ascontiguousarray(joined))[None, :]
        return Prompt(audio, reference_text(" ".join(texts)), joined.size / SAMPLE_RATE)

    def prepare_voice(self, voice: VoiceRef) -> None:
        if voice.samples:
            self.load()
            self.prompt_for(voice)

    # -- synthesis ------------------------------------------------------------------------------

    def synthesize(self, request: SynthesisRequest) -> Iterator[AudioChunk]:
        self.load()
        problem = self.language_problem(request.language)
        if problem:
            raise InvalidInputError(problem, param="language")
        prompt = self.prompt_for(request.voice)
        params = request.parameters
        speed = float(request.speed * float(params.get("speed") or 1.0))
        text = " ".join(request.text.split())
        frames = frames_for(prompt.audio.shape[-1] // HOP_LENGTH, prompt.text, text, speed, self.settings.max_seconds)
        if request.seed is not None:
            self._torch.manual_seed(request.seed)
        chunks = self._infer.infer_batch_process(
            (prompt.audio, SAMPLE_RATE),
            prompt.text,
            [text],
            self._model,
            self._vocoder,
            mel_spec_type="vocos",
            progress=None,
            nfe_step=int(params.get("nfe_step") or 32),
            cfg_strength=float(params.get("cfg_strength", 2.0)),
            sway_sampling_coef=float(params.get("sway_sampling_coef", -1.0)),
            speed=speed,
            fix_duration=(frames + 0.5) * HOP_LENGTH / SAMPLE_RATE,
            device=self.device,
            streaming=True,
            chunk_size=self.settings.stream_chunk_size,
        )
        for wave, _rate in chunks:
            samples = np.asarray(wave, dtype=np.float32).reshape(-1)
            if samples.size:
                yield AudioChunk(np.clip(samples, -1.0, 1.0), SAMPLE_RATE)
