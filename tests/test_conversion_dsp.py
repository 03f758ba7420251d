"""The NumPy STFT, inverse STFT, resampler and loudness filter compute what scipy.signal's do, and
the batched CheapTrick what pyworld's does.

The server's speech path does not import scipy (``scipy.signal`` costs some 72 MB of resident
memory); these tests compare its versions with scipy's own, which stays installed for other
modules. No models."""

from __future__ import annotations

import subprocess
import sys
from math import gcd

import numpy as np
import pytest
from scipy.signal import istft, resample_poly, stft

from parla.audio import dsp
from parla.audio.dsp import loudness_lufs
from parla.engines import conversion

LENGTHS = [1024, 1025, 1103, 5000, 16001, 14 * 22050, 14 * 22050 + 7]


@pytest.mark.parametrize("n", LENGTHS)
@pytest.mark.parametrize(("rate", "hop"), [(22050, 256), (16000, 160), (24000, 256)])
def test_stft_and_istft_are_scipys(n: int, rate: int, hop: int) -> None:
    rng = np.random.default_rng(n + rate)
    x = 0.3 * rng.standard_normal(n)
    fr, tt, z = stft(x, fs=rate, nperseg=1024, noverlap=1024 - hop, boundary="even")
    fr2, tt2, z2 = conversion._stft(x, rate, 1024, hop)
    assert z2.shape == z.shape and tt2.shape == tt.shape and fr2.shape == fr.shape
    assert np.abs(z2 - z).max() < 1e-10
    assert np.abs(tt2 - tt).max() < 1e-10 and np.abs(fr2 - fr).max() < 1e-10
    # the inverse of a filtered spectrum (as ``convert`` makes), not only of an exact one
    zf = z * np.exp(0.5 * rng.standard_normal(z.shape))
    _, y = istft(zf, fs=rate, nperseg=1024, noverlap=1024 - hop, boundary=True)
    y2 = conversion._istft(zf, 1024, hop)
    assert y2.shape == y.shape
    assert np.abs(y2 - y).max() < 1e-10


@pytest.mark.parametrize(
    ("rate", "to"),
    [(22050, 16000), (16000, 22050), (24000, 16000), (44100, 16000), (48000, 16000), (8000, 16000), (11025, 16000)],
)
@pytest.mark.parametrize("n", [1, 7, 100, 1103, 14 * 22050 + 7])
def test_resampling_is_scipys_resample_poly(rate: int, to: int, n: int) -> None:
    x = np.random.default_rng(n).standard_normal(n)
    g = gcd(rate, to)
    want = resample_poly(x, to // g, rate // g)
    got = dsp.resample_poly(x, rate, to)
    assert got.shape == want.shape
    assert np.abs(got - want).max() < 1e-9


@pytest.mark.parametrize("rate", [8000, 16000, 22050, 24000, 44100, 48000])
@pytest.mark.parametrize("seconds", [0.1, 0.39, 3.0, 12.3])
def test_loudness_is_what_scipys_filters_give(rate: int, seconds: float) -> None:
    """The K-weighting by impulse response, block by block, measures what ``lfilter`` does."""
    from scipy.signal import lfilter

    rng = np.random.default_rng(rate)
    t = np.arange(int(rate * seconds)) / rate
    x = 0.2 * np.sin(2 * np.pi * 220 * t) * (1 + np.sin(2 * np.pi * 0.7 * t)) + 0.05 * rng.standard_normal(t.size)
    x[: x.size // 3] *= 0.01  # a quiet stretch, for the gates
    filtered = x.astype(np.float64)
    for b, a in dsp._k_weighting(rate):
        filtered = lfilter(b, a, filtered)
    assert np.abs(dsp._convolve(x.astype(np.float64), dsp._k_impulse(rate)) - filtered).max() < 1e-9
    original = dsp._convolve
    try:  # the whole measurement, with scipy's filter in place of the impulse response
        dsp._convolve = lambda signal, _: filtered  # type: ignore[assignment]
        want = loudness_lufs(x.astype(np.float32), rate)
    finally:
        dsp._convolve = original
    assert abs(loudness_lufs(x.astype(np.float32), rate) - want) < 1e-6


def test_converting_does_not_import_scipy() -> None:
    code = (
        "import sys\n"
        "import numpy as np\n"
        "from parla.engines import conversion\n"
        "from parla.engines.clone import VOICE_PRESETS, preset_adaptation\n"
        "t = np.arange(33075) / 22050\n"
        "x = 0.3 * np.sign(np.sin(2 * np.pi * 120 * t)) * np.hanning(len(t))\n"
        "y = conversion.convert(x, 22050, preset_adaptation(**VOICE_PRESETS['alloy']))\n"
        "assert y.shape == x.shape and np.isfinite(y).all() and np.abs(y).max() > 0.01\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'scipy'))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def _voice_like(rate: int, seconds: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A vowel-like buzz whose pitch glides from 70 to 320 Hz through a formant filter, with noise,
    a stretch of digital silence and a noise burst: every kind of frame the conversion analyses.
    Returns the signal and its pitch per sample."""
    rng = np.random.default_rng(seed)
    n = int(rate * seconds)
    t = np.arange(n) / rate
    f0 = 70 * (320 / 70) ** (t / seconds)
    phase = 2 * np.pi * np.cumsum(f0) / rate
    buzz = sum(np.sin(k * phase) / k for k in range(1, 40) if k * f0.max() < rate / 2 or k < 20)
    spectrum = np.fft.rfft(buzz)
    freqs = np.fft.rfftfreq(n, 1 / rate)
    formants = sum(1 / (1 + ((freqs - fc) / 90) ** 2) for fc in (700, 1200, 2600))
    x = np.fft.irfft(spectrum * (0.05 + formants), n) + 0.01 * rng.standard_normal(n)
    x[n // 3 : n // 3 + rate // 5] = 0.0  # digital silence
    x[2 * n // 3 : 2 * n // 3 + rate // 10] = 0.3 * rng.standard_normal(rate // 10)  # a fricative
    return x / np.abs(x).max() * 0.5, f0


def test_cheaptrick_is_pyworlds() -> None:
    """The batched NumPy CheapTrick gives pyworld's envelopes: every frame, voiced (pitch from 70 to
    320 Hz) or not (f0 0: analysed as 500 Hz), at the signal's edges too, to a hundredth of a dB."""
    import pyworld

    from parla.engines.cheaptrick import cheaptrick

    x, pitch = _voice_like(conversion.FS, 3.0, 1)
    times = np.arange(0, 3.0, 0.005)
    f0 = pitch[np.minimum((times * conversion.FS).astype(int), len(x) - 1)]
    f0[::7] = 0.0  # unvoiced frames among them
    f0[3::11] = 40.0  # below CheapTrick's floor for this FFT size: also analysed as 500 Hz
    want = pyworld.cheaptrick(x, f0, times, conversion.FS, fft_size=conversion.FFT)
    got = cheaptrick(x, f0, times, conversion.FS, conversion.FFT)
    assert got.shape == want.shape
    # frames whose window (three periods) sees nothing but the zeros
    analysed = np.where(f0 <= 3 * conversion.FS / (conversion.FFT - 3), 500.0, f0)
    reach = np.round(1.5 * conversion.FS / analysed).astype(int)
    centre = np.round(times * conversion.FS).astype(int)
    silent = np.array([not x[max(0, c - r) : c + r + 1].any() for c, r in zip(centre, reach, strict=True)])
    assert 20 < silent.sum() < 60
    db = 10 * np.abs(np.log10(got[~silent]) - np.log10(want[~silent]))
    assert db.max() < 0.01, db.max()
    # a frame of exact silence has no envelope to speak of: both are some 270 dB below the signal
    assert np.isfinite(got).all() and got[silent].max() < 1e-20 * want[~silent].max()
