"""The voice conversion's pitch tracker, glottal pulses and PSOLA (``parla.engines.psola``) do what
Praat's did: the same pitch and voicing on Piper's speech, pulses where the periods are, and speech
moved to the pitch asked for, the same length, unvoiced stretches untouched. Praat (parselmouth,
still installed for the Kokoro engine and as the tests' pitch judge) is the reference."""

from __future__ import annotations

import numpy as np
import parselmouth
import pytest
from parselmouth.praat import call

from parla.audio.dsp import resample_poly
from parla.engines import psola

STEP = 0.01


def praat_pitch(x: np.ndarray, rate: int, floor: float = 60, ceiling: float = 500) -> np.ndarray:
    """Praat's F0 on the grid ``k * STEP`` (0: unvoiced), read as the conversion used to read it."""
    pitch = parselmouth.Sound(x.astype(np.float64), sampling_frequency=rate).to_pitch(STEP, floor, ceiling)
    values = pitch.selected_array["frequency"]
    frames = int(len(x) / rate / STEP) + 1
    index = np.clip(np.round((np.arange(frames) * STEP - pitch.xs()[0]) / STEP).astype(int), 0, len(values) - 1)
    return np.asarray(values[index])


def glottal_source(f0: np.ndarray, rate: int, seconds: float) -> tuple[np.ndarray, np.ndarray]:
    """A vowel-like signal: a pulse at each period (the frequency given at 100 frames a second)
    through two resonances; and the pulse times."""
    n = int(seconds * rate)
    freq = np.interp(np.arange(n) / rate, np.arange(len(f0)) * STEP, f0)
    phase = np.cumsum(freq) / rate
    at = np.flatnonzero(np.diff(np.floor(phase)) > 0) + 1
    x = np.zeros(n)
    x[at] = 1.0
    for centre, width in ((700.0, 80.0), (1200.0, 100.0)):
        r, theta = np.exp(-np.pi * width / rate), 2 * np.pi * centre / rate
        y = np.zeros(n)
        for i in range(n):  # a two-pole resonator
            y[i] = x[i] + 2 * r * np.cos(theta) * (y[i - 1] if i else 0) - r * r * (y[i - 2] if i > 1 else 0)
        x = y / np.max(np.abs(y))
    return 0.5 * x, at / rate


def test_a_steady_vowel_is_tracked_at_its_pitch_and_silence_is_unvoiced() -> None:
    rate = 16000
    wanted = np.linspace(100, 160, 80)  # a rising pitch over 0.8 s
    x, _ = glottal_source(wanted, rate, 0.8)
    x = np.concatenate([np.zeros(rate // 2), x, np.zeros(rate // 2)])
    f0 = psola.track_pitch(x, rate, int(len(x) / rate / STEP) + 1, STEP, 60, 500)
    inside = np.arange(55, 125)  # frames well inside the vowel (it starts at frame 50)
    assert np.all(f0[inside] > 0)
    assert np.max(np.abs(f0[inside] / wanted[inside - 50] - 1)) < 0.02
    assert np.all(f0[:45] == 0) and np.all(f0[-45:] == 0)
    noise = 0.3 * np.random.default_rng(0).standard_normal(rate)
    assert np.mean(psola.track_pitch(noise, rate, 101, STEP, 60, 500) > 0) < 0.1


def test_pulses_are_found_where_the_periods_begin() -> None:
    rate = 22050
    x, at = glottal_source(np.full(60, 120.0), rate, 0.6)
    f0 = np.full(61, 120.0)
    found = psola.glottal_pulses(x, rate, f0, STEP)
    # one pulse per period (not the first and last: too close to the edges), each a fixed lag
    # from the excitation (the resonances' peak comes a little after it)
    assert abs(len(found) - len(at)) <= 3
    lag = np.array([found[np.argmin(np.abs(found - t))] - t for t in at[3:-3]])
    assert np.ptp(lag) < 0.2e-3 and 0 <= np.median(lag) < 2e-3


def test_shifting_a_vowel_moves_its_pitch_and_keeps_its_length() -> None:
    rate = 22050
    x, _ = glottal_source(np.full(100, 110.0), rate, 1.0)
    x = np.concatenate([np.zeros(rate // 4), x, np.zeros(rate // 4)])
    frames = int(len(x) / rate / STEP) + 1
    f0 = psola.track_pitch(resample_poly(x, rate, 16000), 16000, frames, STEP, 60, 350)
    pulses = psola.glottal_pulses(x, rate, f0, STEP)
    for factor in (0.8, 1.35):
        y = psola.shift_pitch(x, rate, pulses, np.where(f0 > 0, f0 * factor, 0), STEP)
        assert len(y) == len(x)
        heard = praat_pitch(y, rate)
        middle = heard[40:110]
        assert np.all(middle > 0)
        assert abs(np.median(middle) / (110 * factor) - 1) < 0.02
        # the level stays (within what a bell's overlap changes), the silence around stays silent
        assert 0.7 < np.sqrt(np.mean(y**2) / np.mean(x**2)) < 1.3
        assert np.all(y[: rate // 5] == 0) and np.all(y[-rate // 5 :] == 0)


def test_no_target_pitch_leaves_the_signal_as_it_was() -> None:
    x = np.random.default_rng(1).standard_normal(22050)
    assert np.array_equal(psola.shift_pitch(x, 22050, np.array([0.1]), np.zeros(101), STEP), x)
    assert np.array_equal(psola.shift_pitch(x, 22050, np.array([0.1, 0.11]), np.zeros(101), STEP), x)


@pytest.fixture(scope="module")
def piper_sentences() -> list[tuple[np.ndarray, int]]:
    from piper import PiperVoice

    from parla.engines.piper import bundled_model

    model, config = bundled_model()
    voice = PiperVoice.load(model, config_path=config)
    texts = [
        "These take the shape of a long round arch, with its path high above, and its two ends beyond the horizon.",
        "When the sunlight strikes raindrops in the air, they act as a prism and form a rainbow.",
        "People look, but no one ever finds it.",
    ]
    out = []
    for text in texts:
        chunks = list(voice.synthesize(text))
        out.append((np.concatenate([c.audio_float_array for c in chunks]).astype(np.float64), chunks[0].sample_rate))
    return out


@pytest.mark.model
def test_piper_speech_is_tracked_as_praat_tracks_it(piper_sentences: list[tuple[np.ndarray, int]]) -> None:
    for audio, rate in piper_sentences:
        x16 = resample_poly(audio, rate, 16000)
        frames = int(len(x16) / 16000 / STEP) + 1
        mine = psola.track_pitch(x16, 16000, frames, STEP, 60, 350)
        praat = praat_pitch(x16, 16000, 60, 350)
        assert np.mean((mine > 0) == (praat > 0)) > 0.9  # the voicing decisions (0.93-0.98 seen)
        both = (mine > 0) & (praat > 0)
        assert np.mean(np.abs(mine[both] / praat[both] - 1) < 0.03) > 0.9  # no octave errors (0.93-1 seen)


@pytest.mark.model
def test_piper_speech_is_shifted_to_the_pitch_asked(piper_sentences: list[tuple[np.ndarray, int]]) -> None:
    for audio, rate in piper_sentences:
        x16 = resample_poly(audio, rate, 16000)
        frames = int(len(x16) / 16000 / STEP) + 1
        f0 = psola.track_pitch(x16, 16000, frames, STEP, 60, 350)
        pulses = psola.glottal_pulses(audio, rate, f0, STEP)
        snd = parselmouth.Sound(audio, sampling_frequency=rate)
        theirs = call(snd, "To PointProcess (periodic, cc)", 60, 350)
        praat_pulses = np.array(
            [call(theirs, "Get time from index", i + 1) for i in range(call(theirs, "Get number of points"))]
        )
        assert abs(len(pulses) / len(praat_pulses) - 1) < 0.15
        shifted = psola.shift_pitch(audio, rate, pulses, np.where(f0 > 0, 1.35 * f0, 0), STEP)
        assert len(shifted) == len(audio)
        heard, before = praat_pitch(shifted, rate), praat_pitch(audio, rate)
        both = (heard > 0) & (before > 0)
        assert abs(np.median(heard[both] / before[both]) / 1.35 - 1) < 0.03
        # unvoiced stretches (Praat's pulses far from any voicing here) are the samples they were
        unvoiced = np.flatnonzero(np.convolve(f0 > 0, np.ones(7), mode="same") == 0)
        samples = np.concatenate([np.arange(int(k * STEP * rate), int((k + 1) * STEP * rate)) for k in unvoiced])
        samples = samples[samples < len(audio)]
        assert np.array_equal(shifted[samples], audio[samples])
