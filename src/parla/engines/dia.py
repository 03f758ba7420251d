"""``dia``: Dia (nari-labs), a dialogue model, through transformers' ``DiaForConditionalGeneration``.

Dia pins transformers 5.24 (its classes are not in the versions XTTS-v2 or Qwen3-TTS need), so it
runs in an environment of its own (``parla engines install dia``) as a worker (``parla serve-engine
dia`` from that environment, port 8003) that a gateway reaches as a ``RemoteEngine``. This module
imports cleanly without any of it: the heavy libraries are imported in ``_load``, and
``unavailable_reason`` says what is missing.

Weights are read from disk, never downloaded, in the layout ``save_pretrained`` writes for the model
and its processor (``nari-labs/Dia-1.6B-0626`` as it is) and for the DAC codec
(``descript/dac_44khz`` as it is)::

    DIR/config.json                 the DiaConfig (encoder, decoder, delay pattern)
    DIR/model.safetensors           the weights (or model-*.safetensors shards and their index)
    DIR/generation_config.json      optional: sampling defaults (the knobs below fall back to it)
    DIR/processor_config.json       the processor (its feature extractor inside), or
    DIR/preprocessor_config.json    the feature extractor alone (older save_pretrained)
    DIR/tokenizer_config.json       Dia's byte tokenizer ([S1] and [S2] are its tokens 1 and 2)
    DIR/dac_44khz/config.json       the DAC audio codec (DacModel) at 44.1 kHz
    DIR/dac_44khz/model.safetensors

``DIR`` is ``PARLA_MODELS_DIR/dia/`` (default ``<data_dir>/models/dia/``); each part may also come
from an offline Hugging Face cache, as ``parla.engines.weights`` finds every heavy engine's weights.
The processor is assembled from its parts (``DacFeatureExtractor``, ``DiaTokenizer`` and the
``DacModel`` of ``dac_44khz/``), not by ``DiaProcessor.from_pretrained``: its config names the codec
by hub id (``descript/dac_44khz``), which a models directory does not have and an offline worker
cannot fetch.

Dialogue: Dia reads ``[S1]``/``[S2]`` scripts and renders nonverbal cues (``(laughs)`` is a laugh,
not a pause). It makes dialogue only: the engine declares ``single_speaker=False`` and
``min_dialogue_turns=2``, so text-to-speech and dialogues of one speaker are refused on every API
before any audio is made. It declares ``scripted_dialogue``, so the dialogue service hands it a
dialogue whole: one script (``[S1] ... [S2] ...``, cues as text), cut between turns only where it
would be longer than ``max_script_bytes`` (1024, its encoder's positions, the prompt's transcripts
included), in one voice whose samples are the speakers' (``services.dialogue.script_voice``). A
request whose text carries speaker tags is spoken as that script; one without (a turn of a
dialogue spoken turn by turn) is spoken as its voice's first speaker. The request's ``speed`` is
not Dia's to change, and is not applied.

Voices: Dia clones from an audio prompt and what it says (``needs_transcript``). A voice's
transcribed samples are resampled to 44.1 kHz, joined and encoded by DAC once per voice (kept in
memory by the voice's ``key``: a dialogue's combined voice is one prompt per combination of
speakers); their transcripts become the script's opening lines, each tagged with its speaker (a Dia
server audio prompt transcript, ``[S1] ...``, and a combined voice's keep their tags; an untagged one
is ``[S1]``). At most ``max_prompt_seconds`` are joined in all, shared between the prompt's speakers:
each speaker's first sample always (cut to its share), the others while they fit. Only the new audio
is returned. A voice without samples (``alloy``) has no prompt: Dia picks a voice, the seed decides it.

Knobs: ``temperature``, ``cfg_scale`` (transformers' ``guidance_scale``), ``top_p``, ``top_k`` (its
CFG filter), ``max_new_tokens`` (or the Dia server's ``max_tokens``): audio frames, about 86 a second.
Unset, each is the model's ``generation_config.json``'s, else Dia's recommended value. Generation is
not streamed: a piece's audio comes whole once made. With a seed, torch's generator is seeded
before each piece: same seed, same audio. ``PARLA_ENGINES__DIA__MAX_NEW_TOKENS_CAP`` caps the frames
made per piece (random weights never emit the end token).
"""

from __future__ import annotations

import hashlib
import importlib
import logging
import re
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

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

SAMPLE_RATE = 44_100
FRAME_SAMPLES = 512
"""Samples per DAC frame: one generated token per codebook is this much audio (about 86 a second)."""
LANGUAGES = ("en",)
"""Dia-1.6B speaks English only."""
CODEC_DIR = "dac_44khz"
MEMORY_CACHE = 32
RECOMMENDED = {"temperature": 1.8, "guidance_scale": 3.0, "top_p": 0.90, "top_k": 45}
"""Dia's model card's sampling values, used where the model's ``generation_config.json`` sets none."""
DEFAULT_MAX_NEW_TOKENS = 3072
"""Dia-1.6B's longest generation (its decoder's positions), where the model's config says nothing."""

_TAG = re.compile(r"\[\s*[Ss](\d+)\s*\]")


class DiaSettings(EngineSettings):
    """``PARLA_ENGINES__DIA__*``."""

    max_new_tokens_cap: int | None = Field(default=None, ge=1)
    """Most audio frames per piece (about 86 a second), whatever a request asks; none: the request's
    or the model's limit. A cap for tests on random weights, which never emit the end token."""
    max_prompt_seconds: float = Field(default=15.0, gt=0, le=60)
    """Most seconds of a voice's samples joined into its audio prompt (the first sample always)."""
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    """The model's weights' type; ``bfloat16`` or ``float16`` halve its GPU memory (the codec stays float32)."""


@dataclass(frozen=True)
class Prompt:
    """What Dia speaks a voice from: its audio prompt encoded by DAC (the decoder's input ids and
    attention mask, independent of the text) and its transcript, tagged by speaker."""

    text: str
    decoder_input_ids: Any
    decoder_attention_mask: Any
    frames: int
    """The prompt's length in decoder steps (``DiaProcessor.get_audio_prompt_len``): what is cut from the output."""
    seconds: float


def speakers_in(text: str) -> list[str]:
    """The speaker tags of a text, normalised (``[ s2 ]``: ``S2``), in order, repeats included."""
    return [f"S{int(number)}" for number in _TAG.findall(text)]


def normalize_tags(text: str) -> str:
    """The text with its speaker tags as Dia's tokenizer knows them (``[S1]``, ``[S2]``), whitespace collapsed."""
    return " ".join(_TAG.sub(lambda m: f"[S{int(m.group(1))}]", text).split())


def tagged(text: str, speaker: str = "S1") -> str:
    """``text`` opening with a speaker tag: its own, else ``speaker``'s."""
    text = normalize_tags(text)
    return text if _TAG.match(text) else f"[{speaker}] {text}"


def script_for(text: str, prompt: str) -> str:
    """What Dia reads for a request: the prompt's transcript (empty without one), then the request's
    text; an untagged text (one dialogue turn) is spoken as the prompt's first speaker (else S1)."""
    first = next(iter(speakers_in(prompt)), "S1")
    return " ".join(part for part in (prompt, tagged(text, first)) if part)


def new_tokens(asked: int | None, default: int, room: int, cap: int | None) -> int:
    """The frames to generate: what the request asked (else the model's default), at most the decoder
    positions the prompt leaves (``room``) and the settings' ``cap``; at least one."""
    wanted = min(asked if asked is not None else default, room)
    return max(1, min(wanted, cap) if cap is not None else wanted)


class DiaEngine(HeavyEngine):
    name = "dia"
    title = "Dia"
    required_packages = (("transformers", "transformers"), ("torch", "torch"))
    memory_size = MEMORY_CACHE
    description = (
        "Dia (nari-labs): [S1]/[S2] dialogue with nonverbal cues, voices from audio prompts and their "
        "transcripts (transformers, torch); English; dialogue only."
    )
    capabilities = Capabilities(
        seed_varies=True,  # it samples: another seed, another rendering
        sample_rate=SAMPLE_RATE,
        languages=LANGUAGES,
        streaming=False,  # a piece's audio is decoded whole once generated
        cloning=True,
        dialogue=True,
        nonverbal=True,
        single_speaker=False,
        min_dialogue_turns=2,
        needs_transcript=True,
        scripted_dialogue=True,
        max_script_bytes=1024,  # Dia-1.6B's encoder positions, a byte each (its speaker tags: one token each)
        parameters=(
            Param(
                "temperature",
                float,
                None,
                0.1,
                2.0,
                "Sampling temperature; none: the model's generation_config.json, else 1.8. "
                "transformers' Dia samples below 1.0 at 1.0.",
            ),
            Param(
                "cfg_scale",
                float,
                None,
                1.0,
                10.0,
                "Classifier-free guidance scale (1: none); none: the model's generation_config.json, else 3.0.",
            ),
            Param(
                "top_p",
                float,
                None,
                0.0,
                1.0,
                "Nucleus sampling threshold; none: the model's generation_config.json, else 0.90.",
            ),
            Param(
                "top_k",
                int,
                None,
                1,
                1024,
                "Top-K of the guided logits (Dia's CFG filter); none: the model's generation_config.json, else 45.",
            ),
            Param(
                "max_new_tokens",
                int,
                None,
                1,
                10_000,
                "Most audio frames to generate (about 86 a second); none: the model's own limit (Dia-1.6B: 3072).",
            ),
            Param("max_tokens", int, None, 1, 10_000, "The Dia server API's name for max_new_tokens."),
        ),
    )
    settings_model = DiaSettings
    settings: DiaSettings
    _memory: VoiceMemory[Prompt]

    def __init__(self, settings: DiaSettings | None = None, context: EngineContext | None = None) -> None:
        super().__init__(settings, context)
        self._processor: Any = None
        self.stats = {"memory_hits": 0, "computed": 0}
        """How audio prompts were found (logged too: the tests count it)."""

    # -- availability and lifecycle -------------------------------------------------------------

    def _load(self) -> None:
        found = self.located()
        model_dir, codec_dir = found.path, found.part(CODEC_DIR)
        started = time.perf_counter()
        torch: Any = importlib.import_module("torch")
        transformers: Any = importlib.import_module("transformers")
        device = self.torch_device(torch)
        # The processor from its parts: its own config names the codec by hub id (see the module's docstring).
        codec = transformers.DacModel.from_pretrained(str(codec_dir)).to(device).eval()
        processor = transformers.DiaProcessor(
            transformers.DacFeatureExtractor.from_pretrained(str(model_dir)),
            transformers.DiaTokenizer.from_pretrained(str(model_dir)),
            codec,
        )
        rate = int(processor.feature_extractor.sampling_rate)
        if rate != SAMPLE_RATE:
            raise EngineUnavailableError(f"engine 'dia': {model_dir}'s feature extractor is at {rate} Hz, not 44100")
        model = transformers.DiaForConditionalGeneration.from_pretrained(
            str(model_dir), dtype=getattr(torch, self.settings.dtype)
        )
        model = model.to(device).eval()
        self._torch, self._processor, self._model, self.device = torch, processor, model, device
        log.info("dia: loaded %s on %s in %.1f s", found.where(), device, time.perf_counter() - started)

    def _unload(self) -> None:
        self._processor = None
        super()._unload()

    # -- the voice's audio prompt ---------------------------------------------------------------

    def prompt_for(self, voice: VoiceRef) -> Prompt | None:
        """The voice's audio prompt, encoded once per voice key; ``None`` for a voice without samples.
        Raises ``InvalidInputError`` for samples none of which says what it says."""
        if not voice.samples:
            return None
        transcribed = [(path, text.strip()) for path, text in voice.samples if text and text.strip()]
        if not transcribed:
            raise InvalidInputError(
                f"voice {voice.name!r} has no sample with a transcript, and engine 'dia' speaks a voice from an"
                " audio prompt and what it says: give the sample's transcript (a voice mapping's"
                " audio_prompt_transcript, a voice file's transcription), or let Whisper hear it",
                param="voice",
            )
        key = voice.key or hashlib.sha256(repr(transcribed).encode()).hexdigest()[:32]
        remembered = self._memory.get(key)
        if remembered is not None:
            self.stats["memory_hits"] += 1
            return remembered
        started = time.perf_counter()
        prompt = self._encode(transcribed)
        self.stats["computed"] += 1
        log.info(
            "dia: audio prompt for voice %r encoded from %d samples (%.1f s of audio) in %.2f s",
            voice.name,
            len(transcribed),
            prompt.seconds,
            time.perf_counter() - started,
        )
        self._memory.put(key, prompt)
        return prompt

    def _encode(self, transcribed: list[tuple[Path, str]]) -> Prompt:
        """The samples at 44.1 kHz, joined, through DAC (``DiaProcessor`` with ``audio``); their
        transcripts tagged. Each speaker's first sample is kept, cut to its share of
        ``max_prompt_seconds``, so that every speaker of a combined voice has a prompt; a further
        sample only while the prompt stays within them."""
        from parla.audio.decode import decode_audio

        parts: list[npt.NDArray[np.float32]] = []
        texts: list[str] = []
        total = 0
        limit = self.settings.max_prompt_seconds * SAMPLE_RATE
        speakers = [speakers_in(tagged(text))[0] for _, text in transcribed]  # whom each sample is of
        share = limit / len(set(speakers))
        heard: set[str] = set()
        for (path, text), speaker in zip(transcribed, speakers, strict=True):
            samples, _ = decode_audio(path, SAMPLE_RATE)
            if speaker in heard and total + samples.size > limit:
                continue
            parts.append(np.asarray(samples, dtype=np.float32)[: int(limit if speaker in heard else share)])
            texts.append(tagged(text))
            heard.add(speaker)
            total += parts[-1].size
        joined = np.concatenate(parts)
        if joined.size < FRAME_SAMPLES * 4:
            raise InvalidInputError("the voice's audio prompt is too short for engine 'dia'", param="voice")
        text = " ".join(texts)
        with self._torch.inference_mode():
            inputs = self._processor(text=[text], audio=[joined], sampling_rate=SAMPLE_RATE)
        mask = inputs["decoder_attention_mask"]
        frames = int(self._processor.get_audio_prompt_len(mask))
        return Prompt(text, inputs["decoder_input_ids"], mask, frames, joined.size / SAMPLE_RATE)

    def prepare_voice(self, voice: VoiceRef) -> None:
        """Encode the voice's audio prompt now (after a sample changes), not at its first request."""
        if voice.samples:
            self.load()
            self.prompt_for(voice)

    # -- synthesis ------------------------------------------------------------------------------

    def generation_options(self, parameters: Mapping[str, Any], prompt_frames: int) -> dict[str, Any]:
        """``generate``'s sampling arguments: the request's knobs, else the model's
        ``generation_config.json``, else Dia's recommended values; the frames capped by the settings
        and by the decoder's positions left after the prompt."""
        config = self._model.generation_config
        decoder = self._model.config.decoder_config

        def knob(ours: str, theirs: str) -> Any:
            value = parameters.get(ours)
            if value is None:
                value = getattr(config, theirs, None)
            return RECOMMENDED[theirs] if value is None else value

        options: dict[str, Any] = {
            "do_sample": True,
            "temperature": float(knob("temperature", "temperature")),
            "guidance_scale": float(knob("cfg_scale", "guidance_scale")),
            "top_p": float(knob("top_p", "top_p")),
            "top_k": int(knob("top_k", "top_k")),
        }
        asked = parameters.get("max_new_tokens")
        if asked is None:
            asked = parameters.get("max_tokens")
        default = int(getattr(config, "max_new_tokens", None) or DEFAULT_MAX_NEW_TOKENS)
        room = int(decoder.max_position_embeddings) - prompt_frames
        cap = self.settings.max_new_tokens_cap
        options["max_new_tokens"] = new_tokens(None if asked is None else int(asked), default, room, cap)
        return options

    def synthesize(self, request: SynthesisRequest) -> Iterator[AudioChunk]:
        self.load()
        problem = self.language_problem(request.language)
        if problem:
            raise InvalidInputError(problem, param="language")
        prompt = self.prompt_for(request.voice)
        script = script_for(request.text, prompt.text if prompt else "")
        torch, processor = self._torch, self._processor
        options = self.generation_options(request.parameters, prompt.frames if prompt else 0)
        with torch.inference_mode():
            inputs = processor(text=[script])
            longest = int(self._model.config.encoder_config.max_position_embeddings)
            if inputs["input_ids"].shape[-1] > longest:
                # Dia reads text byte by byte; a longer script would run past its encoder's positions.
                raise InvalidInputError(
                    f"engine 'dia' reads at most {longest} bytes of script (the voice's transcript included);"
                    f" this piece is {inputs['input_ids'].shape[-1]}: shorten the text or the audio prompt",
                    param="input",
                )
            if prompt is not None:  # the encoded audio prompt stands for the processor's all-BOS start
                inputs["decoder_input_ids"] = prompt.decoder_input_ids.clone()
                inputs["decoder_attention_mask"] = prompt.decoder_attention_mask.clone()
            inputs = {name: value.to(self.device) for name, value in inputs.items()}
            if request.seed is not None:
                torch.manual_seed(request.seed)
            started = time.perf_counter()
            outputs = self._model.generate(**inputs, **options)
            audio = processor.batch_decode(outputs, audio_prompt_len=prompt.frames if prompt else None)[0]
        samples = audio.detach().float().cpu().numpy().reshape(-1)
        log.debug(
            "dia: %d frames, %.2f s of audio in %.2f s",
            int(outputs.shape[1]),
            samples.size / SAMPLE_RATE,
            time.perf_counter() - started,
        )
        if samples.size:
            yield AudioChunk(np.clip(samples, -1.0, 1.0).astype(np.float32), SAMPLE_RATE)
