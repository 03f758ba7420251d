"""The voice conversion's NumPy STFT, inverse STFT and resampler compute what scipy.signal's do.

``conversion`` does not import scipy (``scipy.signal`` costs some 77 MB of resident memory); these
tests compare its versions with scipy's own, which stays installed for other modules. No models."""

from __future__ import annotations

import subprocess
import sys
from math import gcd

import numpy as np
import pytest
from scipy.signal import istft, resample_poly, stft

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
    got = conversion._resample(x, rate, to)
    assert got.shape == want.shape
    assert np.abs(got - want).max() < 1e-9


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
