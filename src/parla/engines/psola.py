"""Pitch tracking, glottal pulses and PSOLA in NumPy: what the voice conversion used Praat for.

Praat (through parselmouth) tracked the pitch, found the glottal pulses and moved them (``To
Manipulation``, ``Get resynthesis (overlap-add)``). It was 37 % of the conversion's time, held the
GIL throughout (a second request's conversion could not run beside it) and added 72 MB to a server
that only ever spoke. The three steps here follow Praat's published algorithms:

* ``track_pitch``: Boersma's (1993) autocorrelation tracker, as Praat's ``To Pitch (ac)`` runs it
  with its default settings: a Hann window three periods of the pitch floor long, the frame's
  autocorrelation divided by the window's, the local maxima as candidates (strength less a small
  cost per octave below the ceiling), an unvoiced candidate that is strong where the frame is quiet
  against the loudest part of the signal, and the path of least cost through them (a cost for each
  octave jumped and for each voicing change). Every frame's autocorrelation at once, by FFT; the
  path by dynamic programming, a frame at a time over a handful of candidates.
* ``glottal_pulses``: Praat's ``To PointProcess (periodic, cc)``: in each voiced stretch the
  strongest extremum near the middle, then pulse to pulse outwards, each next one where a period-long
  stretch of the signal best matches the one around the last pulse (normalised cross-correlation,
  a period earlier or later within -20 % .. +25 %).
* ``shift_pitch``: pitch-synchronous overlap-add (Praat's ``overlap-add`` resynthesis without
  duration change): inside a voiced stretch, new pulses at the target pitch's spacing, each filled
  with the nearest source pulse under a Hann bell reaching to the neighbouring new pulses (never past
  the neighbouring source pulses: a longer bell would repeat a period); outside them the signal as it
  was. Praat adds jittered bells in the unvoiced parts, which changes nothing there but their level.

``tests/test_psola.py`` holds them to Praat's results on Piper's speech.
"""

from __future__ import annotations

import math

import numpy as np

from parla.audio.dsp import resample_poly

TRACKING_RATE = 8000
"""The rate the pitch is tracked at (from 16 kHz and its multiples): 4 kHz of speech is plenty."""
PERIODS_PER_WINDOW = 3.0
VOICING_THRESHOLD = 0.45
SILENCE_THRESHOLD = 0.03
OCTAVE_COST = 0.01
OCTAVE_JUMP_COST = 0.35
VOICED_UNVOICED_COST = 0.14
CANDIDATES = 8
"""Voiced candidates kept per frame (Praat keeps 14; the path never takes the weak ones)."""
MAX_PERIOD_S = 0.02
"""Pulses further apart than this belong to different voiced stretches (Praat's limit)."""


def _fast_size(n: int) -> int:
    """The least length of at least ``n`` with no prime factor above 5 (quick to transform)."""
    while True:
        m = n
        for p in (2, 3, 5):
            while m % p == 0:
                m //= p
        if m == 1:
            return n
        n += 1


def _hann_praat(n: int) -> np.ndarray:
    return np.asarray(0.5 - 0.5 * np.cos(2 * np.pi * np.arange(1, n + 1) / (n + 1)))


def track_pitch(x: np.ndarray, rate: int, frames: int, step: float, floor: float, ceiling: float) -> np.ndarray:
    """F0 in Hz at times ``k * step`` for k < ``frames`` (0: unvoiced)."""
    x = np.asarray(x, dtype=np.float64)
    if rate >= 2 * TRACKING_RATE and rate % TRACKING_RATE == 0:
        # The transforms at half the rate are half as long; peaks are interpolated between lags.
        x, rate = resample_poly(x, rate, TRACKING_RATE), TRACKING_RATE
    x = x - x.mean() if len(x) else x
    global_peak = float(np.max(np.abs(x))) if len(x) else 0.0
    f0 = np.zeros(frames)
    if global_peak == 0.0 or frames == 0:
        return f0
    width = round(PERIODS_PER_WINDOW / floor * rate)
    half = width // 2
    max_lag = min(int(np.ceil(rate / floor)), width // 2)
    min_lag = max(2, int(np.floor(rate / ceiling)))
    nfft = _fast_size(width + max_lag + 2)  # enough zeros that no lag wraps around
    window = _hann_praat(width)
    window_ac = np.fft.irfft(np.abs(np.fft.rfft(window, nfft)) ** 2, nfft)[: max_lag + 2]
    window_ac /= window_ac[0]
    padded = np.pad(x, (half, half + width))
    centres = np.round(np.arange(frames) * step * rate).astype(np.int64)
    centres = np.minimum(centres, len(x))
    frame = np.lib.stride_tricks.sliding_window_view(padded, width)[centres]
    frame = frame - frame.mean(axis=1, keepdims=True)
    local_peak = np.max(np.abs(frame), axis=1)
    # Each frame scaled to its peak first, and a floor under its power (the resampler leaves next
    # to nothing near 4 kHz): a quiet frame's power would otherwise underflow into subnormal
    # numbers, which the processor handles many times slower. The normalised autocorrelation
    # does not change.
    scale = np.divide(1.0, local_peak, out=np.zeros_like(local_peak), where=local_peak > 0)
    spectrum = np.fft.rfft(frame * (window * scale[:, None]), nfft, axis=1)
    power = spectrum.real**2 + spectrum.imag**2 + 1e-30
    ac = np.fft.irfft(power, nfft, axis=1)[:, : max_lag + 2]
    energy = ac[:, :1]
    r = np.divide(ac, energy * window_ac, out=np.zeros_like(ac), where=energy > 0)
    # Local maxima above half the voicing threshold, at lags the range allows; parabolic peak.
    left, mid, right = r[:, min_lag - 1 : max_lag], r[:, min_lag : max_lag + 1], r[:, min_lag + 1 : max_lag + 2]
    peak = (mid > left) & (mid >= right) & (mid > 0.5 * VOICING_THRESHOLD)
    curvature = 2 * mid - left - right
    slope = 0.5 * (right - left)
    offset = np.divide(slope, curvature, out=np.zeros_like(mid), where=curvature > 0)
    strength = mid + 0.5 * slope * offset
    strength = np.where(strength > 1, 1 / np.maximum(strength, 1e-12), strength)
    frequency = rate / np.maximum(np.arange(min_lag, max_lag + 1) + offset, 1.0)
    score = np.where(peak, strength - OCTAVE_COST * np.log2(ceiling / frequency), -np.inf)
    keep = min(CANDIDATES, score.shape[1])
    best = np.argpartition(-score, keep - 1, axis=1)[:, :keep]
    cand_score = np.take_along_axis(score, best, 1)
    cand_freq = np.where(np.isfinite(cand_score), np.take_along_axis(frequency, best, 1), 0.0)
    intensity = local_peak / global_peak
    unvoiced = VOICING_THRESHOLD + np.maximum(0.0, 2 - intensity / (SILENCE_THRESHOLD / (1 + VOICING_THRESHOLD)))
    # Candidate 0 is unvoiced; a missing voiced candidate scores -inf and is never chosen.
    freq = np.hstack([np.zeros((frames, 1)), cand_freq])
    local = np.hstack([unvoiced[:, None], cand_score])
    voiced = freq > 0
    log_freq = np.log2(np.where(voiced, freq, 1.0))
    correction = 0.01 / step
    jump_cost, vuv_cost = OCTAVE_JUMP_COST * correction, VOICED_UNVOICED_COST * correction
    # cost[k, i, j]: from candidate i of frame k - 1 to candidate j of frame k
    both = voiced[:-1, :, None] & voiced[1:, None, :]
    jump = np.abs(log_freq[1:, None, :] - log_freq[:-1, :, None])
    cost = np.where(both, jump_cost * jump, 0.0) + vuv_cost * (voiced[:-1, :, None] != voiced[1:, None, :])
    total = local[0].copy()
    back = np.zeros(freq.shape, dtype=np.int64)
    columns = np.arange(freq.shape[1])
    # A frame with no voiced candidate after another: the one path goes on unvoiced (a third of
    # the frames of speech: pauses and voiceless sounds), no matrix to compare.
    silent = np.asarray(~voiced[:, 1:].any(axis=1), dtype=bool)
    carried = np.asarray(silent[1:] & silent[:-1], dtype=bool)
    for k in range(1, frames):
        if carried[k - 1]:
            total[0] += local[k, 0]
            continue
        value = total[:, None] - cost[k - 1]
        back[k] = np.argmax(value, axis=0)
        total = value[back[k], columns] + local[k]
    choice = int(np.argmax(total))
    for k in range(frames - 1, -1, -1):
        f0[k] = freq[k, choice]
        choice = back[k, choice]
    return f0


def _f0_at(t: float, f0: np.ndarray, step: float) -> float:
    """Pitch at time ``t`` as Praat reads a pitch track linearly: 0 where the nearest frame is
    unvoiced; between two voiced frames, interpolated."""
    position = t / step
    nearest = round(position)
    if nearest < 0 or nearest >= len(f0) or f0[nearest] <= 0:
        return 0.0
    low = int(np.floor(position))
    high = low + 1
    if low < 0 or high >= len(f0) or f0[low] <= 0 or f0[high] <= 0:
        return float(f0[nearest])
    g = position - low
    return float(f0[low] * (1 - g) + f0[high] * g)


def _best_match(
    x: np.ndarray, energy: np.ndarray, rate: int, t1: float, period: float, lo: float, hi: float
) -> tuple[float, float, float]:
    """Where, with its centre between ``t1 + lo`` and ``t1 + hi``, a stretch of ``period`` seconds is
    most like the stretch around ``t1``: (its centre, the normalised correlation, its absolute peak).
    ``energy``: the cumulative sum of ``x`` squared, from 0. Correlation -1: nothing to compare."""
    # Plain Python arithmetic on scalars: this runs once per pulse, and NumPy's per-call overhead
    # on scalars would be most of its time.
    n = len(x)
    half = period / 2
    i1 = round((t1 - half) * rate)
    length = round((t1 + half) * rate) - i1 + 1
    first = max(math.floor((t1 + lo - half) * rate), 0)
    last = min(math.ceil((t1 + hi - half) * rate), n - length)
    if length < 3 or i1 < 0 or i1 + length > n or last - first < 2:
        return t1 + (lo + hi) / 2, -1.0, 0.0
    product = np.correlate(x[first : last + length], x[i1 : i1 + length], mode="valid")
    norm = energy[first + length : last + length + 1] - energy[first : last + 1]
    norm *= energy[i1 + length] - energy[i1]
    np.maximum(norm, 1e-300, out=norm)
    corr = (product / np.sqrt(norm)).tolist()
    best = max(range(len(corr)), key=corr.__getitem__)
    shift = 0.0
    if 0 < best < len(corr) - 1:
        curvature = 2 * corr[best] - corr[best - 1] - corr[best + 1]
        if curvature > 0:
            shift = 0.5 * (corr[best + 1] - corr[best - 1]) / curvature
    start = first + best
    peak = float(np.abs(x[start : start + length]).max())
    return t1 + (start + shift - i1) / rate, corr[best], peak


def glottal_pulses(x: np.ndarray, rate: int, f0: np.ndarray, step: float) -> np.ndarray:
    """Times of the glottal pulses in ``x`` (sorted, seconds), from its pitch track ``f0`` (frames
    ``step`` seconds apart, 0: unvoiced)."""
    x = np.asarray(x, dtype=np.float64)
    duration = len(x) / rate
    energy = np.concatenate([[0.0], np.cumsum(x * x)])
    voiced = f0 > 0
    edges = np.diff(np.concatenate([[0], voiced.astype(np.int8), [0]]))
    pulses: list[float] = []
    for start, end in zip(np.flatnonzero(edges == 1), np.flatnonzero(edges == -1), strict=True):
        left = max(0.0, (start - 0.5) * step)
        right = min(duration, (end - 0.5) * step)
        middle = (left + right) / 2
        f_mid = _f0_at(middle, f0, step) or float(f0[(start + end) // 2])
        a = max(0, round((middle - 0.5 / f_mid) * rate))
        b = min(len(x), round((middle + 0.5 / f_mid) * rate) + 1)
        if b - a < 3:
            continue
        anchor = (a + int(np.argmax(np.abs(x[a:b])))) / rate
        first_peak = float(np.max(np.abs(x[a:b])))
        found = [anchor]
        for direction in (-1, 1):
            t = anchor
            while True:
                f = _f0_at(t, f0, step)
                if f <= 0:
                    break
                lo, hi = (-1.25 / f, -0.8 / f) if direction < 0 else (0.8 / f, 1.25 / f)
                t_next, corr, peak = _best_match(x, energy, rate, t, 1.0 / f, lo, hi)
                if corr == -1.0:
                    t_next = t + direction / f
                margin = (t_next - left) if direction < 0 else (right - t_next)
                if margin < 0:
                    break
                if corr > 0.3 and (peak == 0.0 or peak > 0.01 * first_peak) and margin > 0.8 / f:
                    found.append(t_next)
                t = t_next
        pulses.extend(found)
    return np.unique(np.asarray(pulses, dtype=np.float64))


def _bells(
    x: np.ndarray, centre: np.ndarray, rise: np.ndarray, fall: np.ndarray, offset: np.ndarray, n: int
) -> np.ndarray:
    """Sum of Hann bells: bell i takes ``x`` from ``centre[i] - rise[i]`` to ``centre[i] + fall[i]``
    (samples, a raised-cosine rise then fall) and adds it ``offset[i]`` samples later."""
    length = rise + fall
    row = np.repeat(np.arange(len(centre)), length)  # every bell's samples, one after another
    col = np.arange(len(row)) - np.repeat(np.cumsum(length) - length, length)
    index = (centre - rise)[row] + col
    target = index + offset[row]
    valid = (index >= 0) & (index < len(x)) & (target >= 0) & (target < n)
    row, col, index, target = row[valid], col[valid], index[valid], target[valid]
    # One raised cosine, 0.5 - 0.5 cos(phase): the rise's phase runs 0 .. pi, the fall's pi .. 2 pi.
    # In single precision: the double-precision cosine is not vectorised here (ten times slower).
    kk, r_, f_ = col.astype(np.float32), rise[row].astype(np.float32), fall[row].astype(np.float32)
    phase = np.where(kk < r_, (kk + 0.5) / np.maximum(r_, 1), 1 + (kk - r_ + 0.5) / np.maximum(f_, 1))
    weight = 0.5 - 0.5 * np.cos(np.float32(np.pi) * phase)
    return np.bincount(target, weights=x[index] * weight, minlength=n)[:n]


def shift_pitch(x: np.ndarray, rate: int, pulses: np.ndarray, target_f0: np.ndarray, step: float) -> np.ndarray:
    """``x`` with its voiced stretches at the pitch ``target_f0`` (Hz per frame of ``step`` seconds,
    read linearly between voiced frames and held beyond them), the same length and timing."""
    x = np.asarray(x, dtype=np.float64)
    n = len(x)
    out = x.copy()
    if len(pulses) < 2 or not np.any(target_f0 > 0):
        return out
    times = np.flatnonzero(target_f0 > 0) * step
    values = target_f0[target_f0 > 0]
    gaps = np.flatnonzero(np.diff(pulses) > MAX_PERIOD_S)
    centres, rises, falls, offsets = [], [], [], []
    for first, last in zip(np.concatenate([[0], gaps + 1]), np.concatenate([gaps, [len(pulses) - 1]]), strict=True):
        if last <= first:
            continue  # a lone pulse: nothing to move
        run = pulses[first : last + 1]
        end = run[-1] + 0.5 * (run[-1] - run[-2])
        # New pulses from the first source pulse on, a target period apart, while inside the stretch:
        # where the target's phase (its frequency integrated over time) passes a whole cycle.
        grid = np.arange(run[0], end + 0.05, 8.0 / rate)  # past the end by a period of 20 Hz
        phase = np.concatenate([[0.0], np.cumsum(np.interp(grid[:-1], times, values) * np.diff(grid))])
        marks = np.interp(np.arange(int(phase[-1]) + 1), phase, grid)
        inside = int(np.searchsorted(marks, end))
        t, after = marks[: max(inside, 1)], float(marks[max(inside, 1)]) if inside < len(marks) else end
        if last + 1 < len(pulses):  # the next stretch starts as it was, from its first pulse
            after = min(after, float(pulses[last + 1]))
        above = np.clip(np.searchsorted(run, t), 1, len(run) - 1)  # the nearest source pulse to each
        index = np.where(run[above] - t < t - run[above - 1], above, above - 1)
        source = run[index]
        # Bell widths: to the neighbouring new pulses, never past the neighbouring source pulses.
        to_prev = np.diff(t, prepend=np.nan)
        to_next = np.diff(np.append(t, after))
        src_prev = np.where(index > 0, source - run[np.maximum(index - 1, 0)], np.inf)
        src_next = np.where(index < len(run) - 1, run[np.minimum(index + 1, len(run) - 1)] - source, np.inf)
        rise = np.minimum(to_prev, src_prev)
        fall = np.minimum(to_next, src_next)
        # The signal stays as it was up to the first new pulse (it is the first source pulse) and
        # from the pulse after the last on; the bells fill what lies between.
        a, b = round(t[0] * rate), min(n, round(after * rate))
        out[a:b] = 0.0
        s = np.round(source * rate).astype(np.int64)
        centres.append(s)
        rises.append(np.where(np.isnan(rise), 0, np.round(rise * rate)).astype(np.int64))
        falls.append(np.round(fall * rate).astype(np.int64))
        offsets.append(np.round(t * rate).astype(np.int64) - s)
        # The stretch's end: the source fades in again over the last new pulse's fall.
        last_fall = round((after - t[-1]) * rate)
        if last_fall > 0 and b > a:
            centres.append(np.array([b], dtype=np.int64))
            rises.append(np.array([min(last_fall, b - a)], dtype=np.int64))
            falls.append(np.array([0], dtype=np.int64))
            offsets.append(np.array([0], dtype=np.int64))
    if centres:
        out += _bells(
            x, np.concatenate(centres), np.concatenate(rises), np.concatenate(falls), np.concatenate(offsets), n
        )
    return out
