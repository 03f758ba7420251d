"""``clone``: Parla's embedded voice cloning. The bundled Piper voice, adapted to a target speaker.

A voice's samples and their transcripts teach an ``Adaptation`` (see ``conversion``): Piper reads
each transcript, the two renditions are aligned, and the mapping from Piper's voice to the
speaker's is learned. A transcript is read in its sample's language: espeak-ng's phonemes for that
language, which Piper's phoneme map (espeak-ng's IPA) mostly holds, so a French recording is paired
with Piper saying the same French sounds, not with English letter-to-sound rules applied to French
words (wrong sounds paired, a wrong pace learned). A sample in a language neither can read teaches
only what needs no parallel speech (``conversion.adapt_statistics``). Synthesis is then Piper (at
the speaker's pace) followed by that mapping, sentence by sentence, so it streams. Built-in voices
use preset adaptations instead of learned ones; ``joe`` is Piper unchanged.

The adaptation is the voice's cached conditioning: in memory and on disk under
``<data_dir>/cache/clone/<voice key>-v<version>.npz``, keyed by a hash of the samples, so it is
learned once per change of the samples, not per request.
"""

from __future__ import annotations

import importlib.util
import logging
import threading
import time
import unicodedata
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import Field

from parla.audio.decode import decode_audio
from parla.engines.base import AudioChunk, Capabilities, Engine, EngineContext, SynthesisRequest, VoiceRef
from parla.engines.memory import VoiceMemory
from parla.engines.piper import PiperEngine, PiperSettings

log = logging.getLogger(__name__)

VERSION = "6"  # 6: the pitch tracked by psola.track_pitch, not Praat (other voicing decisions)
"""Bumped whenever the adaptation method changes, so stale cached adaptations are not reused."""
MEMORY_CACHE = 32
"""Adaptations kept in memory (a few hundred kB each; up to about 2.5 MB for five minutes of samples)."""


MAX_UNREADABLE = 0.1
"""Share of a transcript's phonemes (combining marks aside) that Piper's phoneme map may lack: past
it, Piper's reading is too far from what was said to pair sounds, and the sample is not paired."""
STATISTICS_TEXT = (
    "The North Wind and the Sun were disputing which was the stronger, when a traveller came along "
    "wrapped in a warm cloak."
)
"""What Piper says to compare its pitch with a speaker's when it cannot say the speaker's words: the
passage phoneticians describe languages with, a common spread of sounds."""
ESPEAK_NAMES = {"zh": "cmn", "no": "nb"}
"""espeak-ng's voice names for language codes that differ from them."""


def espeak_voices(language: str) -> list[str]:
    """The espeak-ng voices that may read ``language`` (a code Parla has read), best first: the code
    with its region (``pt-br``), then the language alone."""
    code = language.lower().replace("_", "-")
    base = code.split("-")[0]
    names = [code, ESPEAK_NAMES.get(base, base)]
    return list(dict.fromkeys(names))


CONVERSION_PACKAGES = ("pyworld",)
"""What ``conversion`` imports, beside NumPy (not scipy: its STFT and resampler are NumPy, see there)."""
PIPER_MEDIAN_F0 = 85.0
"""Median pitch of the bundled voice in Hz (measured with Praat on a read paragraph)."""
PRESET_KEYS = {"pitch", "pitch_range", "formant", "tilt", "breath", "pace"}


def preset_adaptation(
    *,
    pitch: float = 1.0,
    pitch_range: float = 1.0,
    formant: float = 1.0,
    tilt: float = 0.0,
    breath: float = 0.0,
    pace: float = 1.0,
) -> Any:
    """An adaptation made from a description instead of a recording (the built-in voices).

    pitch: median pitch as a multiple of Piper's; pitch_range: multiple of its range around the
    median; formant: scaling of the formant frequencies (above 1 a shorter vocal tract); tilt:
    spectral tilt (positive darker, negative brighter); breath: extra aperiodic share in voiced
    sounds (0-0.6); pace: multiple of Piper's phoneme durations.
    """
    import pyworld

    from parla.engines import conversion

    cfg = conversion.Config()
    dims = cfg.n_coded
    bias = np.zeros(dims)
    if dims > 1:
        bias[1] = tilt
    w = np.zeros((dims + 1, dims))
    w[-1] = bias
    log_median = np.log(PIPER_MEDIAN_F0)
    return conversion.Adaptation(
        length_scale=pace,
        f0_a=float(np.log(pitch) + log_median - pitch_range * log_median),
        f0_b=pitch_range,
        w=w,
        mu=np.zeros(dims),
        gv=np.ones(dims),
        d_uv=bias.copy(),
        alpha=formant,
        ap_diff=np.full(pyworld.get_num_aperiodicities(conversion.FS), breath),
        cfg=cfg,
    )


class CloneSettings(PiperSettings):
    """``PARLA_ENGINES__CLONE__*``: the Piper voice it adapts (``model_path``; ``PARLA_PIPER_MODEL_PATH``
    is its older name, shared with ``piper``), and how many requests it serves at once."""

    concurrency: int = Field(default=2, ge=1, le=16)
    """Requests served at once (``Engine.concurrency``). Piper runs one at a time whatever this is
    (it has every core already); with two, the voice conversion that ends one request runs beside
    Piper starting the next, instead of leaving a core idle (`parla bench speech` measures it)."""


VOICE_PRESETS: dict[str, dict[str, Any]] = {
    "alloy": {"pitch": 1.35, "pitch_range": 1.0, "formant": 1.06, "tilt": 0.0},
    "echo": {"pitch": 1.1, "pitch_range": 0.8, "formant": 0.97, "tilt": 0.15, "pace": 1.08},
    "fable": {"pitch": 1.25, "pitch_range": 1.45, "formant": 1.03, "tilt": -0.05, "pace": 1.04},
    "nova": {"pitch": 2.3, "pitch_range": 1.2, "formant": 1.17, "tilt": -0.3, "pace": 0.93},
    "onyx": {"pitch": 0.82, "pitch_range": 0.8, "formant": 0.92, "tilt": 0.3, "pace": 1.1},
    "shimmer": {"pitch": 2.6, "pitch_range": 1.3, "formant": 1.2, "tilt": -0.2, "breath": 0.15, "pace": 0.97},
}
"""The built-in voices as preset adaptations of the bundled voice (``preset_adaptation``'s
arguments); ``joe`` has none: it is Piper unchanged."""


class CloneEngine(Engine):
    name = "clone"
    description = "Voice cloning by adapting the bundled Piper voice to a few seconds of reference audio (CPU)."
    capabilities = Capabilities(
        sample_rate=22050,
        languages=("en",),
        streaming=True,
        phonemes=True,
        blending=True,
        word_timing=True,
        seed_varies=True,
        cloning=True,
        instructions=True,
        parameters=PiperEngine.capabilities.parameters,
        needs_transcript=True,  # Piper says each sample's words in parallel to learn the mapping
    )

    voice_presets = VOICE_PRESETS
    settings_model = CloneSettings
    settings: CloneSettings

    def __init__(self, settings: CloneSettings | None = None, context: EngineContext | None = None) -> None:
        super().__init__(settings, context)
        self.piper = PiperEngine(PiperSettings(model_path=self.settings.model_path), self.context)
        self.concurrency = self.settings.concurrency
        self._memory: VoiceMemory[Any] = VoiceMemory(MEMORY_CACHE)
        self._learning = threading.Lock()
        """Held while an adaptation is read from disk or learned: requests that overlap
        (``concurrency``) for a voice not yet in memory learn it once, and write its file once."""
        self.stats = {"memory_hits": 0, "disk_hits": 0, "adaptations": 0}
        """How conditioning was found (the tests read it)."""

    def unavailable_reason(self) -> str | None:
        # Looked for, not imported: the conversion's library (pyworld) and the arrays it allocates,
        # which a server that speaks only in Piper's own voice never needs.
        # The first adapted voice imports them (``conversion``, logged there).
        missing = [name for name in CONVERSION_PACKAGES if importlib.util.find_spec(name) is None]
        if missing:
            return f"{', '.join(missing)} not installed (pip install pyworld)"
        return self.piper.unavailable_reason()

    def _load(self) -> None:
        self.piper.load()

    def _unload(self) -> None:
        self.piper.unload()
        self._memory.clear()

    def release_memory(self) -> None:
        """Piper's arena, and what the conversion's arrays left in the heap."""
        self.piper.release_memory()

    # -- conditioning -------------------------------------------------------------------------

    def cache_path(self, key: str) -> Path:
        return self.context.data_dir / "cache" / self.name / f"{key}-v{VERSION}.npz"

    def adaptation_for(self, voice: VoiceRef) -> Any:
        """The voice's adaptation: preset for built-ins, learned (and cached) for library voices,
        ``None`` for Piper's own voice."""
        from parla.engines import conversion

        if voice.blend:
            # Each part as it speaks alone (Piper's own voice: the adaptation that changes nothing).
            parts = [(self.adaptation_for(part) or preset_adaptation(), weight) for part, weight in voice.blend]
            return conversion.blend(parts)
        if not voice.samples:
            preset = voice.preset(self.name)
            return preset_adaptation(**{k: v for k, v in preset.items() if k in PRESET_KEYS}) if preset else None
        key = voice.key or voice.name
        path = self.cache_path(key)
        with self._learning:
            return self._remembered_or_learned(voice, key, path)

    def _remembered_or_learned(self, voice: VoiceRef, key: str, path: Path) -> Any:
        from parla.engines import conversion

        remembered = self._memory.get(key)
        if remembered is not None:
            self.stats["memory_hits"] += 1
            if not path.is_file():
                # Deleting a voice deletes its file; another voice with the same samples (the same
                # key) still needs it, so that a restarted server does not learn it again.
                self._save(path, remembered)
            return remembered
        adaptation = None
        if path.is_file():
            try:
                adaptation = conversion.Adaptation.from_bytes(path.read_bytes())
                self.stats["disk_hits"] += 1
            except (ValueError, KeyError, OSError) as exc:
                log.warning("ignoring unreadable cached adaptation %s: %s", path, exc)
        if adaptation is None:
            adaptation = self.adapt(voice)
            self._save(path, adaptation)
        self._memory.put(key, adaptation)
        return adaptation

    @staticmethod
    def _save(path: Path, adaptation: Any) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".part")
        tmp.write_bytes(adaptation.to_bytes())
        tmp.replace(path)

    def adapt(self, voice: VoiceRef) -> Any:
        """Learn the adaptation from the voice's samples (seconds of CPU per sample)."""
        from parla.engines import conversion

        self.load()
        started = time.perf_counter()
        paired: list[tuple[np.ndarray, int, list[list[int]]]] = []
        unpaired: list[tuple[np.ndarray, int]] = []
        for index, (path, transcript) in enumerate(voice.samples):
            if not transcript:
                continue  # nothing for Piper to say in parallel: this sample cannot teach the mapping
            audio, rate = decode_audio(path)
            script = self.script(transcript, voice.sample_language(index))
            if script is None:
                unpaired.append((audio, rate))
            else:
                paired.append((audio, rate, script))
        if paired:
            # Samples Piper cannot say are left out: pairing Piper's guess at their words with them
            # would teach wrong sounds, and the others teach everything they could.
            adaptation = conversion.adapt(paired, self._render_ids, self.piper.sample_rate)
        elif unpaired:
            piper = self._render_ids(self.piper.phoneme_ids(STATISTICS_TEXT))
            adaptation = conversion.adapt_statistics(unpaired, piper, self.piper.sample_rate)
        else:
            raise ValueError(f"voice {voice.name!r} has no sample with a transcript to learn from")
        self.stats["adaptations"] += 1
        log.info(
            "adapted voice %s in %.1f s (%d samples paired with Piper's reading, %d in a language it cannot read)",
            voice.name,
            time.perf_counter() - started,
            len(paired),
            len(unpaired),
        )
        return adaptation

    def script(self, transcript: str, language: str) -> list[list[int]] | None:
        """Piper's phoneme ids, per sentence, for ``transcript`` read in ``language``: Piper's own
        reading for English; espeak-ng's phonemes in that language otherwise, less the few Piper's
        map lacks (diacritics, mostly). ``None`` when neither can read the language."""
        if language.lower().split("-")[0] == "en":
            return self.piper.phoneme_ids(transcript)  # the bundled voice's own en-us: as it speaks
        known = self.piper.phoneme_id_map
        for name in espeak_voices(language):
            try:
                sentences = self.piper.phonemes(transcript, name)
            except ValueError:
                continue  # no such espeak-ng voice: try the language without its region
            symbols = [p for sentence in sentences for p in sentence if not unicodedata.combining(p)]
            unknown = sum(p not in known for p in symbols)
            if not symbols or unknown > MAX_UNREADABLE * len(symbols):
                log.info(
                    "Piper's phoneme map lacks %d of the %d phonemes of %s: not pairing", unknown, len(symbols), name
                )
                return None
            return [self.piper.phonemes_to_ids([p for p in sentence if p in known]) for sentence in sentences]
        log.info("espeak-ng cannot read %r: not pairing", language)
        return None

    def prepare_voice(self, voice: VoiceRef) -> None:
        """Compute and cache the conditioning now (after a sample changes), not at the first request."""
        self.adaptation_for(voice)

    def _render_plain(self, text: str, language: str = "en") -> np.ndarray:
        """Piper saying ``text`` in its own voice, read in ``language``."""
        script = self.script(text, language)
        if script is None:
            raise ValueError(f"Piper cannot read {language!r}")
        return self._render_ids(script)

    def _render_ids(self, sentences: list[list[int]]) -> np.ndarray:
        """Piper's own voice, as ``joe`` speaks (default parameters, fixed noise), saying phoneme ids."""
        params = self.piper.resolve_parameters({})
        return np.concatenate(
            [
                self.piper.render(
                    ids,
                    length_scale=params["length_scale"],
                    noise_scale=params["noise_scale"],
                    noise_w_scale=params["noise_w_scale"],
                    seed=0,
                )
                for ids in sentences
            ]
        )

    # -- synthesis ----------------------------------------------------------------------------

    def synthesize(self, request: SynthesisRequest) -> Iterator[AudioChunk]:
        self.load()
        adaptation = self.adaptation_for(request.voice)
        for chunk in self.piper.synthesize(self._as_piper(request, adaptation)):
            yield self._converted(chunk, adaptation)

    def synthesize_pieces(self, requests: Sequence[SynthesisRequest]) -> Iterator[Iterator[AudioChunk]]:
        """Piper renders the next piece on a helper thread while this one is converted: its model
        runs without the GIL, so the two stages use two cores, and a text of several pieces takes
        about as long as Piper alone plus the conversion of its last piece. The audio is what
        ``synthesize`` makes of each piece (Piper's noise is seeded per piece)."""
        if len(requests) < 2:
            yield from super().synthesize_pieces(requests)
            return
        self.load()
        adaptations = [self.adaptation_for(request.voice) for request in requests]
        if all(adaptation is None for adaptation in adaptations):  # joe: Piper alone, nothing to overlap
            yield from super().synthesize_pieces(requests)
            return

        def render(index: int) -> list[AudioChunk]:
            return list(self.piper.synthesize(self._as_piper(requests[index], adaptations[index])))

        ahead = ThreadPoolExecutor(max_workers=1, thread_name_prefix="clone-piper")
        try:
            rendering = ahead.submit(render, 0)
            for index in range(len(requests)):
                chunks = rendering.result()
                if index + 1 < len(requests):
                    rendering = ahead.submit(render, index + 1)
                yield iter([self._converted(chunk, adaptations[index]) for chunk in chunks])
        finally:
            # A reader that stops early (a client went away) leaves at most one piece rendering.
            ahead.shutdown(wait=False, cancel_futures=True)

    @staticmethod
    def _as_piper(request: SynthesisRequest, adaptation: Any) -> SynthesisRequest:
        """The request as Piper speaks it: at the voice's pace."""
        if adaptation is None:
            return request
        params: Mapping[str, Any] = request.parameters
        return replace(
            request, parameters={**params, "length_scale": params.get("length_scale", 1.0) * adaptation.length_scale}
        )

    @staticmethod
    def _converted(chunk: AudioChunk, adaptation: Any) -> AudioChunk:
        from parla.engines import conversion

        if adaptation is None:
            return chunk
        # The conversion keeps the timing (frame by frame, same length): Piper's word times stand.
        return AudioChunk(
            conversion.convert(chunk.samples, chunk.sample_rate, adaptation), chunk.sample_rate, chunk.words
        )
