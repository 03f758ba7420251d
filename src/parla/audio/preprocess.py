"""Preprocessing of a character's reference recording (the Titans character API's "Audio Preprocessing
Configuration"): clean-up, silence removal, tone shaping, compression, loudness and fades.

``preprocess`` runs the steps in a fixed order, each one switched by ``PreprocessSettings``:

1. ``clean_audio``: DC offset and rumble removed, then a gentle spectral gate against steady noise;
2. ``remove_silence``: silence at the ends trimmed and long pauses shortened (``top_db`` decides what is silence);
3. ``bass_boost`` and ``treble_boost``: RBJ-cookbook shelving biquads;
4. ``compression``: a feed-forward compressor with make-up gain;
5. ``enhance_audio``: loudness normalisation and a peak limiter;
6. ``fade_length_ms``: raised-cosine fades in and out.

Cleaning comes before trimming so that hum and rumble do not count as sound; the fades come last so
that the recording starts and ends at exactly zero. The result never exceeds full scale.

SciPy's ``signal`` and ``ndimage`` are imported inside the steps that use them: some 75 MB of
resident memory that a server only speaking never needs, though every process that knows the
characters' shapes imports this module (for ``PreprocessSettings``).
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, ConfigDict, Field

from parla.audio.dsp import loudness_lufs
from parla.audio.quality import TARGET_LUFS

FloatArray = npt.NDArray[np.float32]
_F64 = npt.NDArray[np.float64]

HIGH_PASS_HZ = 70.0
"""Below the lowest fundamental of a deep voice (~80 Hz); what lies under it is rumble, handling noise or hum."""
HIGH_PASS_ORDER = 4
"""Butterworth order, run forwards and backwards (zero phase): 48 dB per octave in all."""
GATE_REDUCTION_DB = 12.0
"""The most the spectral gate lowers a time-frequency bin: enough to calm hiss, too little to leave warbling."""
GATE_THRESHOLD_DB = 6.0
"""A bin counts as signal when it stands this far above the noise floor of its frequency."""
GATE_MIN_CONTRAST_DB = 12.0
"""The gate runs only when the quietest frames are at least this far below the loudest ones: a recording
without pauses gives no estimate of its noise, and gating it would eat into the voice."""

SILENCE_FRAME_S = 0.025
SILENCE_HOP_S = 0.010
EDGE_MARGIN_S = 0.05
"""Kept before the first and after the last sound, so soft onsets and endings are not clipped."""
MAX_PAUSE_S = 0.5
"""Inner silences longer than this are shortened to it: a natural pause stays, a long gap (which would make a
cloning engine think the voice speaks slowly) goes."""

BASS_BOOST_DB = 3.0
BASS_SHELF_HZ = 200.0
"""Low shelf midpoint: +3 dB well below it (≈ +2.8 dB at 100 Hz), nothing above ~1 kHz."""
TREBLE_BOOST_DB = 3.0
TREBLE_SHELF_HZ = 4000.0
"""High shelf midpoint: adds air and consonant clarity (≈ +2.9 dB at 8 kHz), leaves the voice's body alone."""
SHELF_SLOPE = 1.0
"""The cookbook's S: the steepest slope without a bump in the response."""

COMPRESSION_THRESHOLD_DB = -18.0
"""Relative to the recording's loudest envelope level, so a quiet and a loud take of a voice are treated alike."""
COMPRESSION_RATIO = 3.0
COMPRESSION_ATTACK_S = 0.005
COMPRESSION_RELEASE_S = 0.100
_COMPRESSION_BLOCK_S = 0.001

ENHANCE_TARGET_LUFS = TARGET_LUFS
"""The level voice samples are stored at anyway, so an enhanced take is not changed again."""
PEAK_CEILING_DBFS = -1.0
"""Headroom for inter-sample peaks and lossy re-encoding."""
_LIMITER_WINDOW_S = 0.005


class PreprocessSettings(BaseModel):
    """The Titans character API's audio preprocessing options, with its documented defaults."""

    model_config = ConfigDict(extra="ignore")

    clean_audio: bool = Field(True, description="Remove DC offset, rumble below 70 Hz and steady background noise.")
    remove_silence: bool = Field(True, description="Trim silence at the ends and shorten long pauses.")
    enhance_audio: bool = Field(True, description="Normalise loudness to -20 LUFS with peaks below -1 dBFS.")
    top_db: float = Field(40.0, ge=10.0, le=100.0, description="How far below the loudest part silence lies, dB.")
    fade_length_ms: int = Field(50, ge=0, le=1000, description="Fade-in and fade-out length.")
    bass_boost: bool = Field(True, description="+3 dB low shelf below ~200 Hz.")
    treble_boost: bool = Field(True, description="+3 dB high shelf above ~4 kHz.")
    compression: bool = Field(True, description="3:1 compression of the top of the dynamic range, with make-up gain.")


def _db(value: float) -> float:
    return 20 * math.log10(value) if value > 1e-12 else -240.0


# -- clean_audio --------------------------------------------------------------------------------------


def _high_pass(x: _F64, rate: int) -> _F64:
    from scipy import signal  # lazy: see the module docstring

    sos = signal.butter(HIGH_PASS_ORDER, HIGH_PASS_HZ, btype="highpass", fs=rate, output="sos")
    # Three periods of the cutoff of (odd) extension at each end: with sosfiltfilt's default of a few samples
    # the filter's start-up transient lands in the recording as a thump and a peak over full scale.
    padlen = min(x.size - 1, round(3 * rate / HIGH_PASS_HZ))
    if padlen < 3 * (2 * sos.shape[0] + 1):  # too short to filter at all
        return x
    return np.asarray(signal.sosfiltfilt(sos, x, padlen=padlen), dtype=np.float64)


def _spectral_gate(x: _F64, rate: int) -> _F64:
    """Lower time-frequency bins that do not rise above their frequency's noise floor, measured in the quietest
    tenth of the frames; the mask is smoothed across time and frequency so the remaining noise does not warble."""
    from scipy import ndimage, signal  # lazy: see the module docstring

    nperseg = 1 << max(6, round(math.log2(0.032 * rate)))
    if x.size < 4 * nperseg:
        return x
    _, _, spec = signal.stft(x, fs=rate, nperseg=nperseg, noverlap=3 * nperseg // 4)
    magnitude = np.abs(spec)
    energy = np.sum(magnitude**2, axis=0)
    quiet_level, loud_level = np.percentile(energy, [10, 90])
    if loud_level <= 0 or 10 * math.log10(loud_level / max(float(quiet_level), 1e-30)) < GATE_MIN_CONTRAST_DB:
        return x
    quiet = energy <= quiet_level
    noise = np.mean(magnitude[:, quiet], axis=1, keepdims=True)
    floor = 10 ** (-GATE_REDUCTION_DB / 20)
    mask = np.where(magnitude > noise * 10 ** (GATE_THRESHOLD_DB / 20), 1.0, floor)
    mask = ndimage.uniform_filter(mask, size=(3, 5), mode="nearest")
    _, out = signal.istft(spec * mask, fs=rate, nperseg=nperseg, noverlap=3 * nperseg // 4)
    out = np.asarray(out, dtype=np.float64)[: x.size]
    return np.pad(out, (0, x.size - out.size))


def clean(x: _F64, rate: int) -> _F64:
    """DC offset removed, a zero-phase Butterworth high pass at ``HIGH_PASS_HZ`` (rumble, hum's lowest
    harmonics), then a spectral gate that lowers steady background noise by at most ``GATE_REDUCTION_DB``."""
    x = _high_pass(x - float(np.mean(x)), rate)
    return _spectral_gate(x, rate)


# -- remove_silence -----------------------------------------------------------------------------------


def _frame_rms(x: _F64, frame: int, hop: int) -> _F64:
    count = 1 + max(0, x.size - frame) // hop
    padded = np.pad(x, (0, max(0, (count - 1) * hop + frame - x.size)))
    frames = np.lib.stride_tricks.sliding_window_view(padded, frame)[::hop][:count]
    return np.asarray(np.sqrt(np.mean(frames**2, axis=1)), dtype=np.float64)


def remove_silence(x: _F64, rate: int, top_db: float) -> _F64:
    """Trim frames whose RMS lies more than ``top_db`` below the loudest frame's (librosa's ``top_db``) at both
    ends, keeping ``EDGE_MARGIN_S``, and shorten inner silences to ``MAX_PAUSE_S``.

    The loudest frame is never silence, so something always remains; a recording with no sound at all is a
    ``ValueError``."""
    if x.size == 0:
        raise ValueError("the recording is empty")
    frame = max(1, round(SILENCE_FRAME_S * rate))
    hop = max(1, round(SILENCE_HOP_S * rate))
    rms = _frame_rms(x, frame, hop)
    peak = float(np.max(rms))
    if peak <= 1e-10:
        raise ValueError("the recording is silent: removing silence would leave nothing")
    with np.errstate(divide="ignore"):
        sound = 20 * np.log10(np.maximum(rms, 1e-20) / peak) > -top_db
    loud = np.flatnonzero(sound)
    margin = round(EDGE_MARGIN_S * rate)
    start = max(0, int(loud[0]) * hop - margin)
    end = min(x.size, int(loud[-1]) * hop + frame + margin)
    # Inner silent runs, as sample spans, cut down to MAX_PAUSE_S around their middle.
    keep = round(MAX_PAUSE_S * rate)
    pieces: list[_F64] = []
    cursor = start
    gaps = np.flatnonzero(np.diff(loud) > 1)
    for gap in gaps:
        silent_from = int(loud[gap]) * hop + frame  # the end of the last sounding frame
        silent_to = int(loud[gap + 1]) * hop  # the start of the next one
        if silent_to - silent_from > keep:
            pieces.append(x[cursor : silent_from + keep // 2])
            cursor = silent_to - (keep - keep // 2)
    pieces.append(x[cursor:end])
    return np.concatenate(pieces)


# -- bass_boost, treble_boost --------------------------------------------------------------------------


def shelf(kind: str, f0: float, gain_db: float, rate: int) -> tuple[_F64, _F64]:
    """An RBJ Audio EQ Cookbook shelving biquad (``kind`` "low" or "high"), normalised to a0 = 1."""
    f0 = min(f0, 0.45 * rate)  # a shelf must sit below Nyquist; at 8 kHz rates the treble shelf moves down
    a = 10 ** (gain_db / 40)
    w0 = 2 * math.pi * f0 / rate
    cos_w, sin_w = math.cos(w0), math.sin(w0)
    alpha = sin_w / 2 * math.sqrt((a + 1 / a) * (1 / SHELF_SLOPE - 1) + 2)
    k = 2 * math.sqrt(a) * alpha
    if kind == "low":
        b = [
            a * ((a + 1) - (a - 1) * cos_w + k),
            2 * a * ((a - 1) - (a + 1) * cos_w),
            a * ((a + 1) - (a - 1) * cos_w - k),
        ]
        den = [(a + 1) + (a - 1) * cos_w + k, -2 * ((a - 1) + (a + 1) * cos_w), (a + 1) + (a - 1) * cos_w - k]
    elif kind == "high":
        b = [
            a * ((a + 1) + (a - 1) * cos_w + k),
            -2 * a * ((a - 1) + (a + 1) * cos_w),
            a * ((a + 1) + (a - 1) * cos_w - k),
        ]
        den = [(a + 1) - (a - 1) * cos_w + k, 2 * ((a - 1) - (a + 1) * cos_w), (a + 1) - (a - 1) * cos_w - k]
    else:
        raise ValueError(f"unknown shelf kind {kind!r}")
    return np.array(b) / den[0], np.array(den) / den[0]


def _apply(x: _F64, filt: tuple[_F64, _F64]) -> _F64:
    from scipy import signal  # lazy: see the module docstring

    return np.asarray(signal.lfilter(filt[0], filt[1], x), dtype=np.float64)


# -- compression -------------------------------------------------------------------------------------


def compress(x: _F64, rate: int) -> _F64:
    """Feed-forward compression: a peak envelope (1 ms blocks), a hard-knee static curve of
    ``COMPRESSION_RATIO`` above ``COMPRESSION_THRESHOLD_DB`` (relative to the loudest block), gain smoothed
    with attack and release time constants, then make-up gain that restores the input's RMS level."""
    from scipy import ndimage  # lazy: see the module docstring

    block = max(1, round(_COMPRESSION_BLOCK_S * rate))
    count = math.ceil(x.size / block)
    if count == 0:
        return x
    envelope = np.max(np.abs(np.pad(x, (0, count * block - x.size))).reshape(count, block), axis=1)
    # Look ahead by three attack time constants: the gain is down before a sudden onset arrives instead of
    # letting its first milliseconds through, which would raise the crest factor rather than lower it.
    ahead = max(1, round(3 * COMPRESSION_ATTACK_S / _COMPRESSION_BLOCK_S))
    envelope = ndimage.maximum_filter1d(envelope, size=ahead + 1, origin=-((ahead + 1) // 2), mode="nearest")
    top = float(np.max(envelope))
    if top <= 1e-10:
        return x
    level = 20 * np.log10(np.maximum(envelope, 1e-12) / top)
    over = np.maximum(level - COMPRESSION_THRESHOLD_DB, 0.0)
    target = -over * (1 - 1 / COMPRESSION_RATIO)  # gain in dB, <= 0
    attack = math.exp(-block / (COMPRESSION_ATTACK_S * rate))
    release = math.exp(-block / (COMPRESSION_RELEASE_S * rate))
    gain_db = np.empty(count)
    current = float(target[0])
    for i, wanted in enumerate(target.tolist()):
        coef = attack if wanted < current else release
        current = coef * current + (1 - coef) * wanted
        gain_db[i] = current
    centres = (np.arange(count) + 0.5) * block
    gain = 10 ** (np.interp(np.arange(x.size), centres, gain_db) / 20)
    out = x * gain
    rms_in, rms_out = float(np.sqrt(np.mean(x**2))), float(np.sqrt(np.mean(out**2)))
    return out * (rms_in / rms_out) if rms_out > 0 else out


# -- enhance_audio -------------------------------------------------------------------------------------


def limit(x: _F64, rate: int, ceiling_dbfs: float = PEAK_CEILING_DBFS) -> _F64:
    """A look-ahead peak limiter: the gain each sample needs, its running minimum over ±``_LIMITER_WINDOW_S``,
    smoothed by a moving average half as wide. Averaging minima taken over a wider window never gives more gain
    than any sample in reach needs, so no sample exceeds the ceiling, and the gain moves without clicks."""
    from scipy import ndimage  # lazy: see the module docstring

    ceiling = 10 ** (ceiling_dbfs / 20)
    magnitude = np.abs(x)
    if x.size == 0 or float(np.max(magnitude)) <= ceiling:
        return x
    half = max(1, round(_LIMITER_WINDOW_S * rate))
    needed = np.minimum(1.0, ceiling / np.maximum(magnitude, 1e-12))
    held = ndimage.minimum_filter1d(needed, size=2 * half + 1, mode="nearest")
    smooth = ndimage.uniform_filter1d(held, size=half | 1, mode="nearest")
    return np.asarray(np.clip(x * smooth, -ceiling, ceiling), dtype=np.float64)


def enhance(x: _F64, rate: int, target_lufs: float = ENHANCE_TARGET_LUFS) -> _F64:
    """Loudness (BS.1770) to ``target_lufs``, peaks limited to ``PEAK_CEILING_DBFS``. Limiting lowers the
    loudness a little, so the gain is measured again (three rounds at most)."""
    for _ in range(3):
        measured = loudness_lufs(x.astype(np.float32), rate)
        if not math.isfinite(measured) or abs(measured - target_lufs) < 0.1:
            break
        x = limit(x * 10 ** ((target_lufs - measured) / 20), rate)
    return x


# -- fades --------------------------------------------------------------------------------------------


def fade(x: _F64, rate: int, length_ms: float) -> _F64:
    """Raised-cosine fade-in from exactly 0 over ``length_ms`` and the mirror fade-out (each at most half the
    recording)."""
    n = min(round(length_ms * rate / 1000), x.size // 2)
    if n <= 0:
        return x
    ramp = 0.5 - 0.5 * np.cos(np.pi * np.arange(n) / n)
    out = x.copy()
    out[:n] *= ramp
    out[x.size - n :] *= ramp[::-1]
    return out


# -- all together -------------------------------------------------------------------------------------


def preprocess(samples: FloatArray, rate: int, settings: PreprocessSettings | None = None) -> FloatArray:
    """The recording (float32 mono) after the steps ``settings`` switches on; never empty, never beyond full
    scale. ``ValueError`` for an empty recording, or a silent one when silence is to be removed."""
    settings = settings or PreprocessSettings()
    if samples.size == 0:
        raise ValueError("the recording is empty")
    x = samples.astype(np.float64)
    if settings.clean_audio:
        x = clean(x, rate)
    if settings.remove_silence:
        x = remove_silence(x, rate, settings.top_db)
    if settings.bass_boost:
        x = _apply(x, shelf("low", BASS_SHELF_HZ, BASS_BOOST_DB, rate))
    if settings.treble_boost:
        x = _apply(x, shelf("high", TREBLE_SHELF_HZ, TREBLE_BOOST_DB, rate))
    if settings.compression:
        x = compress(x, rate)
    if settings.enhance_audio:
        x = enhance(x, rate)
    peak = float(np.max(np.abs(x)))
    if peak > 1.0:  # a boost or make-up gain pushed a hot recording over: lower it all, the shape stays
        x *= 10 ** (PEAK_CEILING_DBFS / 20) / peak
    x = fade(x, rate, settings.fade_length_ms)
    return np.clip(x, -1.0, 1.0).astype(np.float32)
