"""Signal helpers: resampling, ITU-R BS.1770 loudness, normalisation, sample conversion.

``scipy.signal`` is imported inside the functions that use it: importing it costs some 75 MB of
resident memory and a second of start-up (it pulls in ``scipy.stats``, ``interpolate``,
``optimize``...), and ``to_int16``, which every encoder uses, needs none of it."""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float32]


def resample(samples: FloatArray, from_rate: int, to_rate: int) -> FloatArray:
    """Band-limited resampling of a whole signal (polyphase)."""
    if from_rate == to_rate or samples.size == 0:
        return samples.astype(np.float32, copy=False)
    from scipy import signal  # lazy: see the module's docstring

    g = math.gcd(from_rate, to_rate)
    out = signal.resample_poly(samples.astype(np.float64), to_rate // g, from_rate // g)
    return np.asarray(out, dtype=np.float32)


def to_int16(samples: FloatArray) -> npt.NDArray[np.int16]:
    return (np.clip(samples, -1.0, 1.0) * 32767.0).round().astype(np.int16)


def _k_weighting(rate: int) -> list[tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]]:
    """The two biquads of BS.1770's K-weighting, designed for any sample rate."""
    # Stage 1: high shelf modelling the head (+4 dB above ~1.7 kHz).
    gain_db, f0, q = 3.999843853973347, 1681.974450955533, 0.7071752369554196
    k = math.tan(math.pi * f0 / rate)
    vh = 10 ** (gain_db / 20)
    vb = vh**0.4996667741545416
    a0 = 1 + k / q + k * k
    b_shelf = np.array([(vh + vb * k / q + k * k) / a0, 2 * (k * k - vh) / a0, (vh - vb * k / q + k * k) / a0])
    a_shelf = np.array([1.0, 2 * (k * k - 1) / a0, (1 - k / q + k * k) / a0])
    # Stage 2: high pass (RLB weighting) below ~38 Hz.
    f0, q = 38.13547087602444, 0.5003270373238773
    k = math.tan(math.pi * f0 / rate)
    a0 = 1 + k / q + k * k
    b_hp = np.array([1.0, -2.0, 1.0])
    a_hp = np.array([1.0, 2 * (k * k - 1) / a0, (1 - k / q + k * k) / a0])
    return [(b_shelf, a_shelf), (b_hp, a_hp)]


def loudness_lufs(samples: FloatArray, rate: int) -> float:
    """Integrated loudness (BS.1770-4, gated) of a mono signal; ``-inf`` for silence."""
    from scipy import signal  # lazy: see the module's docstring

    x = samples.astype(np.float64)
    for b, a in _k_weighting(rate):
        x = signal.lfilter(b, a, x)
    block = int(0.4 * rate)
    hop = block // 4
    if x.size < block:
        energies = np.array([np.mean(x**2)]) if x.size else np.zeros(0)
    else:
        starts = range(0, x.size - block + 1, hop)
        energies = np.array([np.mean(x[s : s + block] ** 2) for s in starts])
    with np.errstate(divide="ignore"):
        levels = -0.691 + 10 * np.log10(energies)
    gated = energies[levels > -70.0]
    if gated.size == 0:
        return float("-inf")
    relative = -0.691 + 10 * math.log10(float(np.mean(gated))) - 10.0
    with np.errstate(divide="ignore"):
        final = gated[(-0.691 + 10 * np.log10(gated)) > relative]
    return -0.691 + 10 * math.log10(float(np.mean(final)))


def normalize_loudness(
    samples: FloatArray, rate: int, target_lufs: float = -20.0, peak_dbfs: float = -1.0
) -> FloatArray:
    """Scale to ``target_lufs``, then down if needed so no sample exceeds ``peak_dbfs``.

    Silence is returned unchanged (there is no loudness to match).
    """
    measured = loudness_lufs(samples, rate)
    if not math.isfinite(measured):
        return samples.astype(np.float32, copy=True)
    gain = 10 ** ((target_lufs - measured) / 20)
    out = samples.astype(np.float64) * gain
    peak = float(np.max(np.abs(out))) if out.size else 0.0
    ceiling = 10 ** (peak_dbfs / 20)
    if peak > ceiling:
        out *= ceiling / peak
    return out.astype(np.float32)
