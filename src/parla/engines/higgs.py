"""``higgs``: Higgs Audio v2 (Boson AI, ``boson-multimodal``), a speech model on Llama-3.2-3B that
clones a voice from a reference recording and what it says, and speaks in a described scene.

``boson-multimodal`` wants transformers below 4.47 (Dia needs 5.24, Qwen3-TTS 4.57), so it runs in
an environment of its own (``parla engines install higgs``) as a worker (``parla serve-engine
higgs`` from that environment, port 8005) that a gateway reaches as a ``RemoteEngine``. This module
imports cleanly without any of it: the heavy libraries are imported in ``_load``, and
``unavailable_reason`` says what is missing.

Weights are read from disk, never downloaded, in the layout the library's own loaders read::

    DIR/config.json                  the HiggsAudioConfig (a Llama text model, the audio adapter,
                                     its codebooks and special token ids)
    DIR/model.safetensors            the weights (or model-*.safetensors shards and their index)
    DIR/tokenizer.json               the Llama-3 tokenizer with Higgs's special tokens
    DIR/tokenizer_config.json
    DIR/tokenizer/config.json        the audio tokenizer (``load_higgs_audio_tokenizer``): 24 kHz,
    DIR/tokenizer/model.pth          25 codes a second in each of its codebooks
    DIR/hubert/config.json           the audio tokenizer's semantic model (HuBERT, as
    DIR/hubert/model.safetensors     ``AutoModel.from_pretrained`` reads it; or pytorch_model.bin)

(``bosonai/higgs-audio-v2-generation-3B-base``, ``bosonai/higgs-audio-v2-tokenizer`` and
``bosonai/hubert_base`` on Hugging Face, as they are). ``DIR`` is ``PARLA_MODELS_DIR/higgs/``
(default ``<data_dir>/models/higgs/``); each part may also come from an offline Hugging Face cache,
as ``parla.engines.weights`` finds every heavy engine's weights.

The semantic model: ``HiggsAudioTokenizer.__init__`` asks ``AutoModel.from_pretrained`` for it by
hub id (``bosonai/hubert_base``), which a models directory does not have and an offline worker
cannot fetch. The library's files are not edited; instead, while the tokenizer is being built, the
name ``AutoModel`` *inside the tokenizer's module* is a stand-in whose ``from_pretrained`` reads the
``hubert/`` directory with the same arguments, offline (``semantic_model_from``), and the real one is
put back as soon as the constructor returns. Nothing else in the process sees the change:
transformers' own ``AutoModel`` is never touched.

Voices: Higgs clones from a reference recording and its transcript (``needs_transcript``), given as
earlier turns of its chat (the user says the transcript, the assistant answers with the audio). A
voice's transcribed samples are read by Parla (any format), resampled to 24 kHz and encoded by the
audio tokenizer once per voice (kept in memory by the voice's ``key``), at most
``max_prompt_seconds`` in all. A voice without samples (``alloy``) has no reference: Higgs picks a
voice, and the seed decides it.

Dialogue: Higgs speaks multi-speaker scripts whose lines are tagged ``[SPEAKER0]``, ``[SPEAKER1]``.
The engine declares ``scripted_dialogue``, so the dialogue service hands it a dialogue whole, tagged
``[S1]``/``[S2]``, in one voice whose samples are the speakers' (each transcript tagged with its
speaker): the tags become Higgs's, and each speaker's sample is one reference turn. Parla's
nonverbal cues (``(sighs)``, ``(whispers)``...) are not Higgs's sound events, so they stay pauses.

Knobs: ``scene_prompt`` (the system message's scene description; none: the setting's, by default
Higgs's own example, a quiet room; empty: no scene), ``temperature`` (0: greedy), ``top_k``,
``top_p``, ``ras_win_len`` and ``ras_max_num_repeat`` (repetition-aware sampling: a code seen that
many times in the last ``ras_win_len`` is sampled again without temperature; a window of 0 turns it
off), ``max_new_tokens`` (audio steps, 25 a second). Generation is not streamed: a piece's audio is
decoded whole once made. With a seed, Higgs's own generator is seeded before each piece: same seed,
same audio. ``PARLA_ENGINES__HIGGS__MAX_NEW_TOKENS_CAP`` caps the steps made per piece (random
weights never end the audio).
"""

from __future__ import annotations

import hashlib
import importlib
import logging
import re
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass
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

SAMPLE_RATE = 24_000
"""What Higgs's audio tokenizer decodes to (and encodes from)."""
LANGUAGES = ("en", "zh", "de", "ko")
"""The languages Higgs Audio v2's model card lists."""
TOKENIZER_DIR = "tokenizer"
SEMANTIC_DIR = "hubert"
MEMORY_CACHE = 32
SYSTEM_PROMPT = "Generate audio following instruction."
"""The system message Higgs's examples open every chat with; a scene description follows it."""
DEFAULT_SCENE = "Audio is recorded from a quiet room."
"""Higgs's own examples' default scene (their ``quiet_indoor`` prompt)."""
STOP_STRINGS = ("<|end_of_text|>", "<|eot_id|>")
"""What ends a generation (``HiggsAudioServeEngine.generate``'s defaults)."""
DEFAULTS: dict[str, Any] = {"temperature": 0.3, "top_k": 50, "top_p": 0.95, "ras_win_len": 7, "ras_max_num_repeat": 2}
"""Higgs's README's sampling values and its repetition-aware sampling defaults."""
MAX_SCENE_CHARS = 2000
MIN_PROMPT_SAMPLES = SAMPLE_RATE // 4
"""A reference shorter than a quarter second gives the tokenizer nothing to encode."""

_TAG = re.compile(r"\[\s*[Ss](\d+)\s*\]")


class HiggsSettings(EngineSettings):
    """``PARLA_ENGINES__HIGGS__*``."""

    max_new_tokens: int = Field(default=2048, ge=1)
    """Audio steps per piece (25 a second) where a request asks for none: Higgs's examples' 2048."""
    max_new_tokens_cap: int | None = Field(default=None, ge=1)
    """Most audio steps per piece, whatever a request asks; none: the request's or ``max_new_tokens``.
    A cap for tests on random weights, which never end the audio."""
    scene_prompt: str = Field(default=DEFAULT_SCENE, max_length=MAX_SCENE_CHARS)
    """The scene a request that gives none is spoken in; empty: none (the bare system message)."""
    max_prompt_seconds: float = Field(default=30.0, gt=0, le=120)
    """Most seconds of a voice's samples encoded as its reference (each speaker's first always)."""
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    """The model's weights' type; ``auto``: bfloat16 on a GPU (as Boson publishes it), float32 on
    the CPU (where bfloat16 matmuls are slow). The audio tokenizer stays float32."""
    kv_cache_lengths: tuple[int, ...] = Field(default=(1024, 4096, 8192), min_length=1)
    """The static key-value caches Higgs generates into (the serving engine's buckets): a prompt and
    its audio must fit the longest."""


@dataclass(frozen=True)
class Prompt:
    """A voice as Higgs hears it: reference turns, each what the user says (the transcript, tagged
    ``[SPEAKERn]`` in a script's voice) and the audio tokenizer's codes of the recording answering it."""

    turns: tuple[tuple[str, Any], ...]
    seconds: float


def higgs_tags(text: str) -> str:
    """Parla's speaker tags as Higgs's (``[S1]``: ``[SPEAKER0]``, ``[ s2 ]``: ``[SPEAKER1]``), whitespace collapsed."""
    return " ".join(_TAG.sub(lambda m: f"[SPEAKER{max(int(m.group(1)) - 1, 0)}]", text).split())


def system_message(scene: str) -> str:
    """The system turn: Higgs's instruction, and the scene between its scene markers when there is one."""
    scene = scene.strip()
    if not scene:
        return SYSTEM_PROMPT
    return f"{SYSTEM_PROMPT}\n\n<|scene_desc_start|>\n{scene}\n<|scene_desc_end|>"


def new_tokens(asked: int | None, default: int, room: int, cap: int | None) -> int:
    """The audio steps to generate: what the request asked (else the settings' default), at most what
    the longest key-value cache leaves after the prompt (``room``) and the settings' ``cap``; at least one."""
    wanted = min(asked if asked is not None else default, room)
    return max(1, min(wanted, cap) if cap is not None else wanted)


@contextmanager
def semantic_model_from(directory: Path, module: Any) -> Iterator[list[str]]:
    """While the block runs, ``module.AutoModel.from_pretrained(NAME, ...)`` reads ``directory`` offline
    instead of the hub id ``NAME``; yields the names asked for.

    ``HiggsAudioTokenizer.__init__`` loads its semantic model by hub id through the ``AutoModel`` name
    of its own module (``boson_multimodal.audio_processing.higgs_audio_tokenizer``), and takes no
    argument to say where. Rebinding that one module-level name is the narrowest change that makes it
    read the models directory: the library's files stay as installed, transformers' ``AutoModel``
    stays as it is for everyone else, and the real name is back when the block ends, even on an error.
    The constructor's own arguments (``trust_remote_code``) go through unchanged."""
    real = module.AutoModel
    asked: list[str] = []

    class LocalAutoModel:
        @staticmethod
        def from_pretrained(name: str, *args: Any, **kwargs: Any) -> Any:
            asked.append(str(name))
            return real.from_pretrained(str(directory), *args, **{**kwargs, "local_files_only": True})

    module.AutoModel = LocalAutoModel
    try:
        yield asked
    finally:
        module.AutoModel = real


class HiggsEngine(HeavyEngine):
    name = "higgs"
    title = "Higgs Audio"
    required_packages = (
        ("boson_multimodal", "boson-multimodal"),
        ("torch", "torch"),
        ("transformers", "transformers"),
        ("librosa", "librosa"),
    )
    """The tokenizer's module imports librosa."""
    memory_size = MEMORY_CACHE
    description = (
        "Higgs Audio v2 (Boson AI): expressive voice cloning from a recording and its transcript, in a"
        " described scene, and multi-speaker scripts (boson-multimodal, torch); English, Chinese, German, Korean."
    )
    capabilities = Capabilities(
        seed_varies=True,  # it samples: another seed, another rendering
        sample_rate=SAMPLE_RATE,
        languages=LANGUAGES,
        streaming=False,  # a piece's audio is decoded whole once generated
        cloning=True,
        dialogue=True,
        nonverbal=False,  # its sound events are not Parla's cues: those become pauses
        needs_transcript=True,
        scripted_dialogue=True,
        # About a minute of speech (1500 steps at 25 a second) with its voices' transcripts, well inside
        # the default max_new_tokens: a longer dialogue is cut between turns into several scripts.
        max_script_bytes=1000,
        parameters=(
            Param(
                "scene_prompt",
                str,
                None,
                None,
                None,
                "The scene the speech is recorded in (the system message's scene description); none: the"
                f" engine's setting (by default {DEFAULT_SCENE!r}); empty: no scene.",
            ),
            Param("temperature", float, None, 0.0, 2.0, "Sampling temperature (0: greedy); none: 0.3."),
            Param("top_k", int, None, 1, 1000, "Top-K sampling of each codebook's codes; none: 50."),
            Param("top_p", float, None, 0.01, 1.0, "Nucleus sampling threshold; none: 0.95."),
            Param(
                "ras_win_len",
                int,
                None,
                0,
                100,
                "Repetition-aware sampling's window, in audio steps (0: off); none: 7.",
            ),
            Param(
                "ras_max_num_repeat",
                int,
                None,
                1,
                100,
                "How often a code may repeat in that window before it is sampled again without temperature; none: 2.",
            ),
            Param(
                "max_new_tokens",
                int,
                None,
                1,
                10_000,
                "Most audio steps to generate (25 a second); none: the engine's setting (2048).",
            ),
        ),
    )
    settings_model = HiggsSettings
    settings: HiggsSettings
    _memory: VoiceMemory[Prompt]
    """The reference codes per voice: the audio tokenizer's, so they go with the model at unload."""

    def __init__(self, settings: HiggsSettings | None = None, context: EngineContext | None = None) -> None:
        super().__init__(settings, context)
        self._library: dict[str, Any] = {}
        self.stats = {"memory_hits": 0, "computed": 0}
        """How reference prompts were found (logged too: the tests count it)."""

    # -- availability and lifecycle -------------------------------------------------------------

    def resolve_parameters(
        self, given: Mapping[str, Any] | None, preset: Mapping[str, Any] | None = None
    ) -> dict[str, Any]:
        """As every engine's, and a scene is at most ``MAX_SCENE_CHARS`` long."""
        resolved = super().resolve_parameters(given, preset)
        scene = resolved.get("scene_prompt")
        if scene is not None and len(scene) > MAX_SCENE_CHARS:
            raise ValueError(f"parameter 'scene_prompt' must be at most {MAX_SCENE_CHARS} characters, got {len(scene)}")
        return resolved

    def _load(self) -> None:
        found = self.located()
        model_dir, tokenizer_dir, semantic_dir = found.path, found.part(TOKENIZER_DIR), found.part(SEMANTIC_DIR)
        started = time.perf_counter()
        torch: Any = importlib.import_module("torch")
        audio_tokenizer: Any = importlib.import_module("boson_multimodal.audio_processing.higgs_audio_tokenizer")
        serving: Any = importlib.import_module("boson_multimodal.serve.serve_engine")
        device = self.torch_device(torch)
        dtype = self.settings.dtype
        if dtype == "auto":
            dtype = "bfloat16" if device.startswith("cuda") else "float32"
        # The library's own serving engine: the model, its text tokenizer, the audio tokenizer (its
        # semantic model from hubert/, see semantic_model_from) and the static caches it generates into.
        with semantic_model_from(semantic_dir, audio_tokenizer) as asked:
            serve = serving.HiggsAudioServeEngine(
                str(model_dir),
                str(tokenizer_dir),
                device=device,
                torch_dtype=getattr(torch, dtype),
                kv_cache_lengths=list(self.settings.kv_cache_lengths),
            )
        log.info("higgs: semantic model %s read from %s", ", ".join(asked) or "(none asked for)", semantic_dir)
        rate = int(serve.audio_tokenizer.sampling_rate)
        if rate != SAMPLE_RATE:
            raise EngineUnavailableError(
                f"engine 'higgs': {tokenizer_dir}'s audio tokenizer is at {rate} Hz, not 24000"
            )
        self._library = {
            "messages": importlib.import_module("boson_multimodal.data_types"),
            "chatml": importlib.import_module("boson_multimodal.dataset.chatml_dataset"),
            "utils": importlib.import_module("boson_multimodal.model.higgs_audio.utils"),
        }
        # The serving engine is the model here: it holds the model, both tokenizers and the caches.
        self._torch, self._model, self.device = torch, serve, device
        log.info("higgs: loaded %s on %s (%s) in %.1f s", found.where(), device, dtype, time.perf_counter() - started)

    def _unload(self) -> None:
        self._library = {}
        super()._unload()

    # -- the voice's reference ------------------------------------------------------------------

    def prompt_for(self, voice: VoiceRef) -> Prompt | None:
        """The voice's reference turns, encoded once per voice key; ``None`` for a voice without
        samples. Raises ``InvalidInputError`` for samples none of which says what it says."""
        if not voice.samples:
            return None
        transcribed = [(path, text.strip()) for path, text in voice.samples if text and text.strip()]
        if not transcribed:
            raise InvalidInputError(
                f"voice {voice.name!r} has no sample with a transcript, and engine 'higgs' speaks a voice from a"
                " recording and what it says: give the sample's transcript, or let Whisper hear it",
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
            "higgs: reference for voice %r encoded from %d samples (%.1f s of audio) in %.2f s",
            voice.name,
            len(prompt.turns),
            prompt.seconds,
            time.perf_counter() - started,
        )
        self._memory.put(key, prompt)
        return prompt

    def _encode(self, transcribed: list[tuple[Path, str]]) -> Prompt:
        """Each sample a reference turn, read at 24 kHz and encoded by the audio tokenizer. Each
        speaker's first sample is kept, cut to its share of ``max_prompt_seconds``, so that every
        speaker of a script's voice is heard; a further sample only while the whole stays within them."""
        from parla.audio.decode import decode_audio

        limit = self.settings.max_prompt_seconds * SAMPLE_RATE
        speakers = [m.group(1) if (m := _TAG.match(text)) else "1" for _, text in transcribed]
        share = limit / len(set(speakers))
        turns: list[tuple[str, Any]] = []
        heard: set[str] = set()
        total = 0
        tokenizer = self._model.audio_tokenizer
        for (path, text), speaker in zip(transcribed, speakers, strict=True):
            samples, _ = decode_audio(path, SAMPLE_RATE)
            if speaker in heard and total + samples.size > limit:
                continue
            audio = np.ascontiguousarray(samples[: int(limit if speaker in heard else share)], dtype=np.float32)
            if audio.size < MIN_PROMPT_SAMPLES:
                raise InvalidInputError(
                    f"a sample of the voice is too short for engine 'higgs': {path.name}", param="voice"
                )
            with self._torch.inference_mode():
                codes = tokenizer.encode(audio, SAMPLE_RATE).squeeze(0).cpu()
            turns.append((higgs_tags(text), codes))
            heard.add(speaker)
            total += audio.size
        return Prompt(tuple(turns), total / SAMPLE_RATE)

    def prepare_voice(self, voice: VoiceRef) -> None:
        """Encode the voice's reference now (after a sample changes), not at its first request."""
        if voice.samples:
            self.load()
            self.prompt_for(voice)

    # -- synthesis ------------------------------------------------------------------------------

    def inputs(self, text: str, prompt: Prompt | None, scene: str) -> dict[str, Any]:
        """The model's inputs for one piece, as ``HiggsAudioServeEngine._prepare_inputs`` makes them
        (its ChatML, its collator), but from the reference codes kept per voice rather than from
        files it would read and encode again on every request: the system turn with the scene, each
        reference turn (user: its transcript; assistant: its audio), the text, and the assistant's
        turn opened on ``<|audio_out_bos|>`` so that what comes is speech."""
        torch, serve = self._torch, self._model
        types, chatml = self._library["messages"], self._library["chatml"]
        messages = [types.Message(role="system", content=system_message(scene))]
        codes: list[Any] = []
        for said, audio in prompt.turns if prompt else ():
            messages.append(types.Message(role="user", content=said))
            messages.append(types.Message(role="assistant", content=types.AudioContent(audio_url="")))
            codes.append(audio)
        messages.append(types.Message(role="user", content=higgs_tags(text)))
        tokens, _, _, _ = chatml.prepare_chatml_sample(types.ChatMLSample(messages=messages), serve.tokenizer)
        if tokens is None:  # the library prints why and returns nothing
            raise InvalidInputError("engine 'higgs' could not read this text into its chat", param="input")
        opening = "<|start_header_id|>assistant<|end_header_id|>\n\n<|audio_out_bos|>"
        tokens.extend(serve.tokenizer.encode(opening, add_special_tokens=False))
        starts = np.cumsum([0] + [c.shape[1] for c in codes])[:-1]
        sample = chatml.ChatMLDatasetSample(
            input_ids=torch.LongTensor(tokens),
            label_ids=None,
            audio_ids_concat=torch.cat(codes, dim=1) if codes else None,
            audio_ids_start=torch.tensor(starts, dtype=torch.long) if codes else None,
            audio_waveforms_concat=None,
            audio_waveforms_start=None,
            audio_sample_rate=None,
            audio_speaker_indices=None,
        )
        batch = asdict(serve.collator([sample]))
        return {k: v.to(serve.model.device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}

    def synthesize(self, request: SynthesisRequest) -> Iterator[AudioChunk]:
        self.load()
        problem = self.language_problem(request.language)
        if problem:
            raise InvalidInputError(problem, param="language")
        params = request.parameters
        prompt = self.prompt_for(request.voice)
        scene = params.get("scene_prompt")
        torch, serve = self._torch, self._model

        def knob(name: str) -> Any:
            value = params.get(name)
            return DEFAULTS[name] if value is None else value

        temperature = float(knob("temperature"))
        window = int(knob("ras_win_len"))
        started = time.perf_counter()
        with torch.inference_mode():
            inputs = self.inputs(request.text, prompt, self.settings.scene_prompt if scene is None else scene)
            longest = max(serve.kv_caches)
            # Each reference's codes take a position per step where its one <|AUDIO_OUT|> token stands.
            held = inputs.get("audio_out_ids")
            prompt_length = int(inputs["input_ids"].shape[-1]) + (int(held.shape[-1]) if held is not None else 0)
            room = longest - prompt_length - 1
            if room < 1:
                raise InvalidInputError(
                    f"engine 'higgs' generates into at most {longest} positions, and this piece's prompt (the"
                    " voice's reference included) takes them all: shorten the text or the reference",
                    param="input",
                )
            asked = params.get("max_new_tokens")
            steps = new_tokens(asked, self.settings.max_new_tokens, room, self.settings.max_new_tokens_cap)
            serve._prepare_kv_caches()  # the serving engine's own reset of its static caches
            if request.seed is not None:
                torch.manual_seed(request.seed)
            outputs = serve.model.generate(
                **inputs,
                max_new_tokens=steps,
                use_cache=True,
                stop_strings=list(STOP_STRINGS),
                tokenizer=serve.tokenizer,
                do_sample=temperature > 0.0,
                temperature=temperature,
                top_k=int(knob("top_k")),
                top_p=float(knob("top_p")),
                past_key_values_buckets=serve.kv_caches,
                ras_win_len=window if window > 0 else None,
                ras_win_max_num_repeat=int(knob("ras_max_num_repeat")),
                seed=request.seed,
            )
            # As HiggsAudioServeEngine.generate decodes: undo the delay pattern, drop the stream's
            # start and end steps, and decode each audio the model made.
            revert = self._library["utils"].revert_delay_pattern
            size = int(serve.audio_codebook_size)
            waves = [
                serve.audio_tokenizer.decode(revert(audio).clip(0, size - 1)[:, 1:-1].unsqueeze(0))[0, 0]
                for audio in outputs[1]
                if audio.shape[-1] > serve.audio_num_codebooks + 1
            ]
        samples: npt.NDArray[np.float32] = (
            np.concatenate(waves).astype(np.float32) if waves else np.zeros(0, dtype=np.float32)
        )
        log.debug(
            "higgs: %d steps asked, %.2f s of audio in %.2f s",
            steps,
            samples.size / SAMPLE_RATE,
            time.perf_counter() - started,
        )
        if samples.size:
            yield AudioChunk(np.clip(samples, -1.0, 1.0), SAMPLE_RATE)
