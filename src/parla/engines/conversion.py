"""Voice cloning for Parla by *differential* conversion of the bundled Piper voice.

Method
------
Adaptation (``adapt``) uses parallel data made from the transcript: Piper reads each reference
transcript, both signals are analysed at 16 kHz (F0 by Praat's autocorrelation tracker, in NumPy
(``psola.track_pitch``), the one the PSOLA step uses: Dio doubles the F0 of Piper's joe voice,
whose fundamental is weak; CheapTrick envelope coded to ``n_coded`` WORLD mel-cepstral
coefficients), and dynamic time warping on the (mean-normalised) envelopes pairs each reference
frame with Piper's frame for the same sound. All samples' pairs are pooled, so more samples give
more data. From the pairs we learn

* spectral envelope (formants, timbre, channel): first one frequency-axis scaling (vocal-tract
  length; grid search), then a ridge regression of the *difference* ``target - warped piper`` on
  the warped Piper envelope, fitted on frames confidently voiced in both.  Regularising towards
  zero shrinks the map towards a constant offset (= long-term spectrum match), so little data
  gives a safe, generic correction and more data a more speaker-specific one (the penalty is
  fixed while the data term grows with the data).  The mapped features' per-dimension variance
  is restored towards the target's (regression averages and muffles).  Unvoiced speech frames
  get the mean unvoiced difference (fricative/noise colour, channel).
* pitch: log-F0 level and range (median, robust spread over voiced frames) -> log-linear map.
* breathiness: mean per-band aperiodicity difference (D4C, voiced frames) -> noise mixing.
* energy: dynamics come from the c0 term of the map; the mean level change is removed so the
  server's loudness stays Piper's.
* speaking rate: ratio of speaking times without pauses (reference / Piper) -> Piper ``length_scale``.
* alignment refinement (``realign``): the pairs are aligned again with Piper's envelopes first
  mapped by the fit just made, which compares like with like and pairs fewer wrong sounds; the
  adaptation is then fitted again on those pairs.
* local correction (``knn``): the global map is one linear function for every sound.  What it
  misses, each voiced pair's residual ``target - map(piper)`` in the broad envelope shape
  (c1..c12), is kept, keyed by the Piper envelope it came from.  A synthesised frame adds the
  kernel-weighted mean residual of its nearest Piper frames (a pseudo-weight of "no correction"
  shrinks it where they are few or far), i.e. the speaker's own realisation of that sound where
  the references contain it.  The kernel width is the typical distance from a frame to the
  nearest frame of other words, which is what frames of a new sentence see.  More samples give
  more neighbours.
* closed-loop calibration (``_calibrate``): Piper's readings of the reference transcripts (already
  rendered for the map) are converted with the adaptation just learned and compared with the
  references.  The smoothed (mel-band) ratio of the long-term average spectra, separately for voiced
  and for unvoiced frames, becomes a fixed EQ applied in ``convert``: it corrects what the shrunk,
  log-domain regression under-shoots (channel, tilt, fricative level).  Cuts go to -12 dB, boosts
  only to +3 dB (a boost amplifies Piper's own noisy fine structure, not the target's).  A pitch
  level/range correction from the same loop exists (``calib_pitch``) but is off: it hurt.

Conversion (``convert``) keeps Piper's own waveform instead of resynthesising it with WORLD
(WORLD resynthesis costs intelligibility): pitch is moved with PSOLA (``psola``: Praat's algorithms in NumPy),
then the waveform is filtered in the STFT domain by the per-frame spectral *difference* between
the mapped and the original envelope (the same thing an MLSA filter does in differential
conversion, but with numpy FFTs), with aperiodicity-driven noise mixed into voiced frames.  The
filter is the mapped envelope minus the envelope of the *pitch-shifted* signal (``post_env``), i.e.
of the signal actually filtered, analysed at the pitch PSOLA aimed for, so PSOLA's own envelope and
level changes and CheapTrick's pitch-dependent bias cancel.  Every
parameter is fixed at adaptation time, so sentence-sized pieces convert independently and the
voice stays consistent across them.

Needs numpy and pyworld (0.3.5 imports pkg_resources: keep setuptools<81); not Praat (see ``psola``). Not scipy:
importing ``scipy.signal`` costs some 77 MB of resident memory (it pulls in much of scipy), for the
three routines used here, so the STFT, its inverse and the polyphase resampler are NumPy versions
of scipy's (``_stft``, ``_istft``, and ``dsp.resample_poly``: the same numbers to rounding, and no slower).
No speaker-embedding model, no torch, no network.
"""

from __future__ import annotations

import functools
import io
import logging
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any, TypeVar

import numpy as np

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    import pyworld as pw

from parla.audio.dsp import resample_poly as _resample
from parla.engines import psola
from parla.engines.cheaptrick import cheaptrick

logging.getLogger(__name__).info("loaded the voice conversion (pyworld) on first use")

FS = 16000  # analysis rate
FFT = 1024  # CheapTrick FFT size at 16 kHz
PIPER_F0 = (60.0, 350.0)  # Piper's joe: ~85-130 Hz with a weak fundamental (Dio doubles it)
TARGET_F0 = (60.0, 500.0)
MIN_PAIRS = 50
"""Voiced frame pairs needed to learn a formant scaling, the local correction and the calibration;
with fewer (a second or so of speech) only what is safe is learned: pitch, level offsets, pace."""
MIN_PITCH_FRAMES = 20

_Script = TypeVar("_Script")


@dataclass
class Config:
    frame_ms: float = 10.0
    n_coded: int = 40
    lam: float = 100.0  # ridge strength (sum-of-squares objective: more data -> relatively less)
    gv_power: float = 1.0  # 0: no variance restoration, 1: full
    max_boost_db: float = 20.0
    max_cut_db: float = 40.0
    breath: float = 1.0  # scale of aperiodicity-driven noise mixing (0 = off)
    pitch_range: float = 1.0  # 0: keep Piper's range, 1: match the target's
    rate: bool = True  # adapt speaking rate
    warp: bool = True  # estimate a formant (frequency-axis) scaling before the regression
    warp_max: float = 1.3  # search range of that scaling: [1/warp_max .. warp_max] (approx.)
    strength: float = 1.0  # scale of the spectral filter (log domain); 0 = pitch/rate only
    pitch: bool = True
    uv: float = 1.0  # strength of the unvoiced-frame correction
    smooth: int = 1  # half-width (frames) of the triangular time smoothing of the filter
    post_env: bool = True  # filter relative to the envelope of the pitch-shifted signal (what is filtered)
    calib: bool = True  # closed-loop calibration: convert Piper's reading of the references and compare
    eq: float = 1.0  # strength of the long-term-spectrum correction found by the calibration
    eq_max_db: float = 12.0  # clip of that correction (cut)
    eq_max_boost_db: float = 3.0  # boosts only amplify Piper's own (noisy, mismatched) fine structure
    eq_bands: int = 32  # mel bands over which the long-term spectra are compared (smoothness)
    calib_pitch: float = 0.0  # strength of the pitch level/range correction found by the calibration
    realign: int = 1  # alignments repeated with Piper's envelopes mapped by the previous fit
    knn: float = 1.0  # strength of the local (nearest-neighbour) correction of the voiced map; 0 = off
    knn_k: int = 16  # neighbours averaged
    knn_prior: float = 3.0  # pseudo-weight of "no correction": shrinks the correction where neighbours are far
    knn_dims: int = 12  # envelope coefficients (from c1) the correction may change: low orders = broad shape
    knn_max: int = 12000  # most training pairs kept as neighbours (memory and synthesis time)


@dataclass
class Adaptation:
    length_scale: float
    f0_a: float  # log f0' = f0_a + f0_b * log f0
    f0_b: float
    w: np.ndarray  # (D+1, D) voiced difference map on [x, 1]
    mu: np.ndarray  # (D,) mean of mapped training outputs
    gv: np.ndarray  # (D,) variance restoration scale
    d_uv: np.ndarray  # (D,) mean unvoiced difference
    alpha: float  # formant frequency scaling
    ap_diff: np.ndarray  # (B,) extra aperiodic power share per D4C band (3, 6 ... kHz)
    eq: np.ndarray = field(default_factory=lambda: np.zeros(FFT // 2 + 1))  # (FFT/2+1,) log-amplitude EQ, voiced
    eq_uv: np.ndarray = field(default_factory=lambda: np.zeros(FFT // 2 + 1))  # the same for unvoiced frames
    knn_keys: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), np.float32))  # (N, D-1) warped Piper c1..
    knn_res: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), np.float32))  # (N, knn_dims+1) residuals
    knn_seg: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int32))  # (N,) 2*sample + half
    knn_h: float = 1.0  # kernel width: typical distance from a frame to the nearest frame of other words
    cfg: Config = field(default_factory=Config)

    def to_bytes(self) -> bytes:
        buf = io.BytesIO()
        arrays = {f.name: np.asarray(getattr(self, f.name)) for f in fields(self) if f.name != "cfg"}
        arrays.update({"cfg_" + k: np.asarray(v) for k, v in asdict(self.cfg).items()})
        np.savez(buf, **arrays)  # type: ignore[arg-type]
        return buf.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes) -> Adaptation:
        z = np.load(io.BytesIO(data))
        # fields added later (calibration) fall back to their defaults in older blobs
        cfg = Config(
            **{
                f.name: type(getattr(Config, f.name))(z["cfg_" + f.name])
                for f in fields(Config)
                if "cfg_" + f.name in z.files
            }
        )
        kw: dict[str, Any] = {f.name: z[f.name] for f in fields(cls) if f.name != "cfg" and f.name in z.files}
        for k in ("length_scale", "f0_a", "f0_b", "alpha", "knn_h"):
            if k in kw:
                kw[k] = float(kw[k])
        return cls(cfg=cfg, **kw)


def blend(parts: Sequence[tuple[Adaptation, float]]) -> Adaptation:
    """One adaptation between several (weights summing to 1): every mapped quantity is the weighted
    mean of the parts' (log pitch line, envelope maps, formant scaling, EQ, aperiodicity, pace), so
    the blend's pitch, formants and timbre lie between theirs. The parts' nearest-neighbour
    corrections are left out: they correct towards one speaker's own frames, which a voice between
    speakers has none of."""
    first = parts[0][0]

    def mean(name: str) -> Any:
        return sum(weight * np.asarray(getattr(part, name), dtype=np.float64) for part, weight in parts)

    return Adaptation(
        length_scale=float(mean("length_scale")),
        f0_a=float(mean("f0_a")),
        f0_b=float(mean("f0_b")),
        w=mean("w"),
        mu=mean("mu"),
        gv=mean("gv"),
        d_uv=mean("d_uv"),
        alpha=float(mean("alpha")),
        ap_diff=mean("ap_diff"),
        eq=mean("eq"),
        eq_uv=mean("eq_uv"),
        cfg=first.cfg,
    )


@functools.cache
def _coding(n: int) -> tuple[np.ndarray, np.ndarray]:
    """pyworld's envelope coding as what it is, two linear maps in the log domain: ``code``
    ((FFT/2+1, n): log spectrum -> n coefficients) and ``decode`` ((n, FFT/2+1): back). One matrix
    product per signal instead of pyworld's per-frame transforms; the same numbers (to rounding)."""
    decode = np.log(pw.decode_spectral_envelope(np.ascontiguousarray(np.eye(n)), FS, FFT))
    code = pw.code_spectral_envelope(np.ascontiguousarray(np.exp(np.eye(FFT // 2 + 1))), FS, n)
    return np.asarray(code), np.asarray(decode)


@functools.lru_cache(maxsize=256)
def _warp_matrix(n: int, alpha: float) -> np.ndarray:
    """(n, n): ``_warp`` by ``alpha`` in the coded domain (decode, stretch the frequency axis by
    linear interpolation of the log spectrum, code: all linear). Cached: a voice has one alpha, and
    the adaptation's grid search a few dozen."""
    code, decode = _coding(n)
    bins = FFT // 2 + 1
    pos = np.clip(np.arange(bins) / alpha, 0, bins - 1)
    i0 = np.floor(pos).astype(int)
    i1 = np.minimum(i0 + 1, bins - 1)
    g = pos - i0
    stretch = np.zeros((bins, bins))
    np.add.at(stretch, (i0, np.arange(bins)), 1 - g)
    np.add.at(stretch, (i1, np.arange(bins)), g)
    return np.asarray(decode @ stretch @ code)


def _hann(n: int) -> np.ndarray:
    """scipy's default STFT window: periodic Hann."""
    return np.asarray(0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n) / n))


def _stft(x: np.ndarray, rate: int, nperseg: int, hop: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``scipy.signal.stft(x, rate, nperseg=nperseg, noverlap=nperseg - hop, boundary="even")`` (periodic
    Hann window, scaling="spectrum", padded): (bin frequencies, frame times, (bins, frames) spectrum).
    Frame t is centred on sample t * hop (the signal mirrored at both ends, then zero-padded to whole
    frames). Unlike scipy, a signal shorter than nperseg keeps nperseg (scipy shortens the window)."""
    x = np.asarray(x, dtype=np.float64)
    win = _hann(nperseg)
    x = np.pad(x, nperseg // 2, mode="reflect")  # scipy's even extension
    x = np.pad(x, (0, (-(len(x) - nperseg) % hop) % nperseg))
    frames = np.lib.stride_tricks.sliding_window_view(x, nperseg)[::hop]
    spec = np.fft.rfft(frames * win, axis=-1)
    spec *= 1.0 / win.sum()
    times = np.arange(nperseg / 2, len(x) - nperseg / 2 + 1, hop) / float(rate) - (nperseg / 2) / rate
    return np.fft.rfftfreq(nperseg, 1 / rate), times, spec.T


def _istft(spec: np.ndarray, nperseg: int, hop: int) -> np.ndarray:
    """``scipy.signal.istft(spec, nperseg=nperseg, noverlap=nperseg - hop, boundary=True)[1]``: windowed
    overlap-add divided by the summed squared window, the extension trimmed (not the end padding).
    scipy adds frame by frame in a Python loop; here each of the nperseg / hop frame quarters is one
    vectorised add, in the same order (earlier frames first), so the sums are the same."""
    win = _hann(nperseg)
    frames = np.fft.irfft(spec.T, n=nperseg, axis=-1)
    frames *= win.sum() * win
    count = len(frames)
    parts = -(-nperseg // hop)
    if parts * hop != nperseg:
        frames = np.pad(frames, ((0, 0), (0, parts * hop - nperseg)))
    frames = frames.reshape(count, parts, hop)
    win2 = np.pad(win**2, (0, parts * hop - nperseg)).reshape(parts, hop)
    out = np.zeros((count + parts - 1, hop))
    norm = np.zeros((count + parts - 1, hop))
    for i in range(parts - 1, -1, -1):  # block b gets frame b - i: the largest i is the earliest frame
        out[i : i + count] += frames[:, i]
        norm[i : i + count] += win2[i]
    length, half = nperseg + (count - 1) * hop, nperseg // 2
    out_, norm_ = out.reshape(-1)[half : length - half], norm.reshape(-1)[half : length - half]
    return np.asarray(out_ / np.where(norm_ > 1e-10, norm_, 1.0))


@dataclass
class _Feats:
    f0: np.ndarray
    coded: np.ndarray
    ap: np.ndarray | None
    active: np.ndarray
    voiced: np.ndarray


def _analyse(
    x16: np.ndarray, cfg: Config, f0_range: tuple[float, float], with_ap: bool, envelope: bool = True
) -> _Feats:
    x = np.ascontiguousarray(x16, dtype=np.float64)
    # F0 from Praat (the same tracker the PSOLA step uses; Dio makes octave errors on Piper)
    f0 = _pitch(x, cfg, f0_range)
    t = np.arange(len(f0)) * cfg.frame_ms / 1000
    if not envelope:  # pitch and activity only (calibration)
        hop = int(FS * cfg.frame_ms / 1000)
        fr = np.lib.stride_tricks.sliding_window_view(np.pad(x, (FFT // 2, FFT // 2)), FFT)[::hop][: len(t)]
        e = np.log((fr[:, FFT // 4 : 3 * FFT // 4] ** 2).sum(1) + 1e-12)
        e = np.pad(e, (0, len(t) - len(e)), mode="edge")
        active = e > np.percentile(e, 98) - np.log(10**3.5)
        return _Feats(f0, np.zeros((len(t), 0)), None, active, (f0 > 0) & active)
    sp = _envelopes(x, f0, t)
    coded = np.log(sp) @ _coding(cfg.n_coded)[0]
    ap = pw.code_aperiodicity(pw.d4c(x, f0, t, FS, fft_size=FFT), FS) if with_ap else None
    e = np.log(sp.sum(axis=1))
    active = e > np.percentile(e, 98) - np.log(10**3.5)  # within 35 dB of the loud frames
    voiced = (f0 > 0) & active
    # confidently voiced: drop the frames next to voicing boundaries
    v = voiced.copy()
    v[1:] &= voiced[:-1]
    v[:-1] &= voiced[1:]
    return _Feats(f0, coded, ap, active, v)


def _envelopes(x16: np.ndarray, f0: np.ndarray, t: np.ndarray) -> np.ndarray:
    """CheapTrick's power envelopes of ``x16`` at times ``t`` (any frames: it analyses each on its own),
    with an 80 dB floor (empty bands). All frames at once in NumPy (``cheaptrick``): pyworld's, a frame
    at a time, was a third of the conversion's cost."""
    sp = cheaptrick(x16, f0, t, FS, FFT)
    return np.asarray(np.maximum(sp, np.percentile(sp.max(axis=1), 95) * 1e-8))


def _warp(coded: np.ndarray, alpha: float) -> np.ndarray:
    """Scale the envelope's frequency axis by alpha (formants move by x alpha), coded domain."""
    if alpha == 1.0 or len(coded) == 0:
        return coded
    return np.asarray(coded @ _warp_matrix(coded.shape[1], float(alpha)))


def _speech_frames(active: np.ndarray, cfg: Config) -> int:
    """Speaking time: active frames plus gaps shorter than 200 ms (closures), pauses excluded."""
    idx = np.flatnonzero(active)
    if len(idx) == 0:
        return 0
    gaps = np.diff(idx) - 1
    return int(len(idx) + gaps[gaps < 200 / cfg.frame_ms].sum())


def _dtw(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Plain DTW (steps (1,1),(1,0),(0,1)), row-vectorised; returns index pairs."""
    a = a - a.mean(0)
    b = b - b.mean(0)
    cost = np.sqrt(_sq_dist(a, b))
    n, m = cost.shape
    acc = np.empty((n, m))
    prev = np.full(m, np.inf)
    for i in range(n):
        c = cost[i]
        base = c.copy()
        if i == 0:
            base[0] = c[0]
            base[1:] = np.inf
        else:
            best = prev.copy()
            best[1:] = np.minimum(best[1:], prev[:-1])
            base = c + best
        s = np.cumsum(c)  # horizontal moves: acc[j] = min_k base[k] + s[j] - s[k]
        acc[i] = np.minimum.accumulate(base - s) + s
        prev = acc[i]
    i, j = n - 1, m - 1
    path = [(i, j)]
    while i > 0 or j > 0:
        if i == 0:
            j -= 1
        elif j == 0:
            i -= 1
        else:
            k = int(np.argmin((acc[i - 1, j - 1], acc[i - 1, j], acc[i, j - 1])))
            i, j = (i - 1, j - 1) if k == 0 else (i - 1, j) if k == 1 else (i, j - 1)
        path.append((i, j))
    p = np.array(path[::-1])
    return p[:, 0], p[:, 1]


@dataclass
class _Pairs:
    """Frames paired by DTW across all samples: voiced (x, y), unvoiced (ux, uy), aperiodicity."""

    x: np.ndarray
    y: np.ndarray
    seg: np.ndarray  # 2 * sample + half (of the Piper rendition) of each voiced pair
    ux: np.ndarray
    uy: np.ndarray
    apx: np.ndarray | None
    apy: np.ndarray | None


def _pair(analysed: list[tuple[_Feats, _Feats]], ad: Adaptation | None) -> _Pairs:
    """Align each Piper rendition with its reference.  Without an adaptation the envelopes are
    compared as they are (mean-normalised); with one, Piper's are first mapped towards the speaker,
    so the second alignment compares like with like and pairs fewer wrong sounds."""
    xs, ys, segs, uxs, uys, apx, apy = [], [], [], [], [], [], []
    for n, (src, tgt) in enumerate(analysed):
        key = src.coded
        if ad is not None:
            key = np.where((src.f0 > 0)[:, None], _map(_warp(src.coded, ad.alpha), ad), src.coded + ad.d_uv)
        i, j = _dtw(key[:, 1:], tgt.coded[:, 1:])
        v = src.voiced[i] & tgt.voiced[j]
        xs.append(src.coded[i[v]])
        ys.append(tgt.coded[j[v]])
        segs.append(2 * n + (i[v] >= len(src.f0) // 2))
        u = src.active[i] & tgt.active[j] & (src.f0[i] == 0) & (tgt.f0[j] == 0)
        uxs.append(src.coded[i[u]])
        uys.append(tgt.coded[j[u]])
        if src.ap is not None and tgt.ap is not None:
            apx.append(src.ap[i[v]])
            apy.append(tgt.ap[j[v]])
    return _Pairs(
        np.concatenate(xs),
        np.concatenate(ys),
        np.concatenate(segs),
        np.concatenate(uxs),
        np.concatenate(uys),
        np.concatenate(apx) if apx else None,
        np.concatenate(apy) if apy else None,
    )


def _fit(
    p: _Pairs, analysed: list[tuple[_Feats, _Feats]], cfg: Config, previous: Adaptation | None = None
) -> Adaptation:
    """Learn the adaptation from paired frames (envelope, breathiness) and from the two voices'
    statistics (pitch, speaking rate).  A refit after realignment searches the formant scaling
    only near the previous fit's."""
    x, y = p.x, p.y
    x0, alpha, d = x, 1.0, x.shape[1]
    if len(x) < 2:  # nothing to learn the envelope from: Piper's, with pitch and pace adapted
        w, mu, gv = np.zeros((d + 1, d)), np.zeros(d), np.ones(d)
        return _fit_prosody(p, analysed, cfg, w, mu, gv, np.zeros(d), alpha)
    if cfg.warp and len(x) >= MIN_PAIRS:  # best frequency scaling up to a per-dimension offset

        def err(al: float) -> float:
            r = (_warp(x, al) - y)[:, 1:]
            return float(((r - r.mean(0)) ** 2).sum())

        grid = np.arange(1 / cfg.warp_max, cfg.warp_max + 1e-4, 0.025)
        if previous is not None:
            grid = grid[np.abs(grid - previous.alpha) < 0.06]
        alpha = float(grid[int(np.argmin([err(al) for al in grid]))])
        x = _warp(x, alpha)
    mx = x.mean(0)
    xc = x - mx
    a_ = np.linalg.solve(xc.T @ xc + cfg.lam * np.eye(d), xc.T @ (y - x - (y - x).mean(0)))
    w = np.vstack([a_, (y - x).mean(0) - mx @ a_])  # d = [x, 1] @ w
    yhat = x + np.hstack([x, np.ones((len(x), 1))]) @ w
    mu = yhat.mean(0)
    gv = np.clip(y.std(0) / np.maximum(yhat.std(0), 1e-6), 1.0, 3.0) ** cfg.gv_power
    yhat = mu + (yhat - mu) * gv
    level = (yhat[:, 0] - x0[:, 0]).mean()  # keep Piper's mean level
    w[-1, 0] -= level
    mu[0] -= level
    return _fit_prosody(p, analysed, cfg, w, mu, gv, (yhat - x0).mean(0), alpha)


def _fit_prosody(
    p: _Pairs,
    analysed: list[tuple[_Feats, _Feats]],
    cfg: Config,
    w: np.ndarray,
    mu: np.ndarray,
    gv: np.ndarray,
    d_voiced: np.ndarray,
    alpha: float,
) -> Adaptation:
    """The rest of the adaptation around a fitted envelope map: unvoiced offset (``d_voiced``, the
    voiced mean change, stands in when there are too few unvoiced pairs), pitch, pace, breathiness."""
    d_uv = (p.uy - p.ux).mean(0) if len(p.ux) > 20 else d_voiced.copy()
    d_uv[0] = 0.0
    ls = np.concatenate([np.log(src.f0[src.voiced]) for src, _ in analysed])
    lt = np.concatenate([np.log(tgt.f0[tgt.voiced]) for _, tgt in analysed])

    def spread(v: np.ndarray) -> float:  # robust std (tracker octave errors)
        return float(np.diff(np.percentile(v, [16, 84]))[0] / 2)

    a, b = 0.0, 1.0  # too little voicing to measure the speaker's pitch: keep Piper's
    if min(len(ls), len(lt)) >= MIN_PITCH_FRAMES:
        b = float(np.clip(spread(lt) / max(spread(ls), 1e-3), 0.5, 2.0)) ** cfg.pitch_range
        a = float(np.median(lt) - b * np.median(ls))
    act_src = sum(_speech_frames(src.active, cfg) for src, _ in analysed)
    act_tgt = sum(_speech_frames(tgt.active, cfg) for _, tgt in analysed)
    rate_ratio = float(np.clip(act_tgt / max(act_src, 1), 0.75, 1.35)) if cfg.rate else 1.0
    # extra noise power share wanted per band (D4C codes aperiodicity in dB)
    ap_diff = (
        (10 ** (p.apy / 10)).mean(0) - (10 ** (p.apx / 10)).mean(0)
        if p.apx is not None and p.apy is not None and len(p.apx)
        else np.zeros(1)
    )
    return Adaptation(rate_ratio, a, b, w, mu, gv, d_uv, alpha, ap_diff, cfg=cfg)


def adapt(
    samples: Sequence[tuple[np.ndarray, int, _Script]],
    render: Callable[[_Script], np.ndarray],
    piper_rate: int = 22050,
    cfg: Config | None = None,
) -> Adaptation:
    """samples: (float32 mono audio, its rate, what was said); render(what was said) -> Piper saying it
    at piper_rate (what was said: a transcript, or whatever the caller's ``render`` reads, such as
    phonemes in the sample's language)."""
    cfg = cfg or Config()
    analysed: list[tuple[_Feats, _Feats]] = []
    renditions: list[np.ndarray] = []
    for audio, rate, text in samples:
        tgt = _analyse(_resample(audio, rate, FS), cfg, TARGET_F0, cfg.breath > 0)
        renditions.append(render(text))
        analysed.append((_analyse(_resample(renditions[-1], piper_rate, FS), cfg, PIPER_F0, cfg.breath > 0), tgt))
    pairs = _pair(analysed, None)
    ad = _fit(pairs, analysed, cfg)
    if len(pairs.x) < MIN_PAIRS:  # a second or so of speech: the safe, generic part only
        return ad
    for _ in range(cfg.realign):
        pairs = _pair(analysed, ad)
        ad = _fit(pairs, analysed, cfg, ad)
    if cfg.knn > 0 and len(pairs.x) >= MIN_PAIRS:
        _fit_neighbours(ad, _warp(pairs.x, ad.alpha), pairs.y, pairs.seg)
    if cfg.calib:
        _calibrate(
            ad, [(_resample(au, r, FS), ren) for (au, r, _), ren in zip(samples, renditions, strict=True)], piper_rate
        )
    return ad


def adapt_statistics(
    samples: Sequence[tuple[np.ndarray, int]], piper: np.ndarray, piper_rate: int = 22050, cfg: Config | None = None
) -> Adaptation:
    """An adaptation without parallel speech, for references Piper cannot say (a language neither
    espeak-ng nor Piper's phonemes read): ``piper`` is Piper saying other words. What does not depend
    on the words is learned, as for a sample too short to pair frames: the speaker's pitch level and
    range against Piper's; the envelope, loudness and pace stay Piper's (the speaking times of
    different words say nothing about pace, and their spectra differ by the sounds as much as by
    the speaker)."""
    cfg = replace(cfg or Config(), rate=False)
    src = _analyse(_resample(piper, piper_rate, FS), cfg, PIPER_F0, False)
    analysed = [(src, _analyse(_resample(audio, rate, FS), cfg, TARGET_F0, False)) for audio, rate in samples]
    d = cfg.n_coded
    none = np.zeros((0, d))
    return _fit(_Pairs(none, none, np.zeros(0, np.int64), none, none, None, None), analysed, cfg)


def _map(xw: np.ndarray, ad: Adaptation) -> np.ndarray:
    """The global (ridge) map of warped Piper envelopes, with the variance restored."""
    y = xw + np.hstack([xw, np.ones((len(xw), 1))]) @ ad.w
    return np.asarray(ad.mu + (y - ad.mu) * ad.gv)


def _sq_dist(q: np.ndarray, keys: np.ndarray) -> np.ndarray:
    """Squared Euclidean distances between the rows of q and of keys."""
    return np.asarray(np.maximum((q**2).sum(1)[:, None] + (keys**2).sum(1)[None, :] - 2 * q @ keys.T, 0.0))


def _fit_neighbours(ad: Adaptation, x: np.ndarray, y: np.ndarray, seg: np.ndarray) -> None:
    """Keep what the global map misses, frame by frame: the residual ``target - map(piper)`` of every
    voiced training pair, keyed by the (warped) Piper envelope it came from.  At synthesis a frame
    adds the kernel-weighted mean residual of its nearest Piper frames, i.e. the speaker's own
    realisation of that sound where the references contain it, and little where they do not.
    The kernel width is the typical distance from a frame to the nearest frame of *other* words
    (other half or other sample), which is what a new sentence's frames see."""
    cfg = ad.cfg
    rng = np.random.default_rng(0)
    if len(x) > cfg.knn_max:
        keep = np.sort(rng.choice(len(x), cfg.knn_max, replace=False))
        x, y, seg = x[keep], y[keep], seg[keep]
    keys = x[:, 1:]
    res = (y - _map(x, ad))[:, : cfg.knn_dims + 1]  # higher orders: fine detail, mostly alignment noise
    res[:, 0] = 0.0  # loudness stays the map's
    probe = rng.choice(len(keys), min(len(keys), 1500), replace=False)
    nearest = []
    for p in np.array_split(probe, max(1, len(probe) // 256)):
        d2 = _sq_dist(keys[p], keys)
        d2[seg[p][:, None] == seg[None, :]] = np.inf
        nearest.append(d2.min(1))
    d = np.sqrt(np.concatenate(nearest))
    ad.knn_h = float(np.median(d[np.isfinite(d)])) if np.isfinite(d).any() else 1.0
    ad.knn_keys, ad.knn_res, ad.knn_seg = keys.astype(np.float32), res.astype(np.float32), seg.astype(np.int32)


def _neighbour_correction(q: np.ndarray, ad: Adaptation, seg: np.ndarray | None = None) -> np.ndarray:
    """seg: per query frame, the training segment whose pairs it must not use (calibration on the
    training renditions, which would otherwise find themselves)."""
    cfg, keys, res = ad.cfg, ad.knn_keys.astype(np.float64), ad.knn_res.astype(np.float64)
    k = min(cfg.knn_k, len(keys))
    out = np.zeros((len(q), res.shape[1]))
    for rows in np.array_split(np.arange(len(q)), max(1, len(q) // 256)):
        d2 = _sq_dist(q[rows], keys)
        if seg is not None:
            d2[seg[rows][:, None] == ad.knn_seg[None, :]] = np.inf
        idx = np.argpartition(d2, k - 1, axis=1)[:, :k]
        wts = np.exp(-np.take_along_axis(d2, idx, 1) / (2 * ad.knn_h**2))
        out[rows] = (wts[:, :, None] * res[idx]).sum(1) / (wts.sum(1) + cfg.knn_prior)[:, None]
    return out


def _mel_fb(n: int) -> np.ndarray:
    """(n, FFT/2+1) triangular mel filterbank at 16 kHz, 50 Hz .. 8 kHz."""

    def mel(f: float) -> float:
        return float(2595 * np.log10(1 + f / 700))

    edges = 700 * (10 ** (np.linspace(mel(50.0), mel(FS / 2), n + 2) / 2595) - 1)
    fr = np.arange(FFT // 2 + 1) * FS / FFT
    fb = np.zeros((n, len(fr)))
    for k in range(n):
        lo, c, hi = edges[k : k + 3]
        fb[k] = np.clip(np.minimum((fr - lo) / (c - lo), (hi - fr) / (hi - c)), 0, None)
    return fb


def _ltas(x16: np.ndarray, f: _Feats, cfg: Config) -> tuple[np.ndarray, np.ndarray]:
    """Long-term average power spectra (FFT/2+1 bins) of the voiced and of the unvoiced active frames,
    both divided by the voiced frames' total power (so fricative level relative to vowels counts)."""
    hop = int(FS * cfg.frame_ms / 1000)
    _, _, z = _stft(x16, FS, FFT, hop)
    p = np.abs(z.T) ** 2  # (T, F), frame t centred at t*hop like the analysis grid
    n = min(len(p), len(f.active))
    p, act, v = p[:n], f.active[:n], (f.f0[:n] > 0) & f.active[:n]
    pv = p[v].mean(0) + 1e-12
    uv = act & ~v
    pu = p[uv].mean(0) + 1e-12 if uv.sum() > 10 else pv.copy()
    return pv / pv.sum(), pu / pv.sum()


def _calibrate(ad: Adaptation, pairs: list[tuple[np.ndarray, np.ndarray]], piper_rate: int) -> None:
    """Closed loop: convert Piper's readings of the reference transcripts with the learned adaptation,
    compare the result with the references (both analysed the same way; a rendition's frames use no
    neighbours from their own half of it, as a new sentence would find none) and correct what the
    open-loop estimates missed: the long-term spectrum (a smooth EQ: timbre and channel that the
    shrunk regression under-shoots) and the pitch level and range (PSOLA and tracker biases).
    pairs: (reference at 16 kHz, Piper's rendition at piper_rate)."""
    cfg = ad.cfg
    lt, lc, pt, pc = [], [], [], []
    for n, (x16, rendition) in enumerate(pairs):
        y = convert(rendition, piper_rate, ad, training_sample=n)
        y16 = _resample(y, piper_rate, FS)
        ft = _analyse(x16, cfg, TARGET_F0, False, envelope=False)
        fc = _analyse(y16, cfg, TARGET_F0, False, envelope=False)
        if min(ft.voiced.sum(), fc.voiced.sum()) < MIN_PITCH_FRAMES:
            continue  # too little voicing in this sample to compare spectra
        lt.append(np.log(ft.f0[ft.voiced]))
        lc.append(np.log(fc.f0[fc.voiced]))
        pt.append(_ltas(x16, ft, cfg))
        pc.append(_ltas(y16, fc, cfg))
    if not pt:
        return
    # EQ: smooth (mel-band) log ratio of the long-term spectra, separately for voiced and unvoiced
    # frames (fricative colour must not tilt the vowels); power-neutral on the converted vowels
    fb = _mel_fb(cfg.eq_bands)
    centres = (fb * np.arange(fb.shape[1])).sum(1) / fb.sum(1)
    lo, hi = -cfg.eq_max_db / 8.686, cfg.eq_max_boost_db / 8.686

    def curve(t: np.ndarray, c: np.ndarray) -> np.ndarray:
        g = np.clip(0.5 * np.log((fb @ t) / (fb @ c)), lo, hi)  # log amplitude per band
        return np.asarray(np.interp(np.arange(FFT // 2 + 1), centres, g) * cfg.eq)

    eqv = curve(np.mean([p[0] for p in pt], 0), np.mean([p[0] for p in pc], 0))
    equ = curve(np.mean([p[1] for p in pt], 0), np.mean([p[1] for p in pc], 0))
    pcm = np.mean([p[0] for p in pc], 0)
    off = 0.5 * np.log((pcm * np.exp(2 * eqv)).sum() / pcm.sum())
    ad.eq, ad.eq_uv = eqv - off, equ - off
    # pitch: map the converted distribution onto the target's (same tracker and range for both)
    ltt, lcc = np.concatenate(lt), np.concatenate(lc)
    if len(ltt) > 20 and len(lcc) > 20:

        def spread(v: np.ndarray) -> float:
            return float(np.diff(np.percentile(v, [16, 84]))[0] / 2)

        k = float(np.clip(spread(ltt) / max(spread(lcc), 1e-3), 0.7, 1.4)) ** cfg.calib_pitch
        dm = (float(np.median(ltt)) - float(np.median(lcc))) * cfg.calib_pitch
        mc = float(np.median(lcc))
        # new log f0 = mc + dm + k * (old mapped - mc)
        ad.f0_b = float(np.clip(k * ad.f0_b, 0.4, 2.5))
        ad.f0_a = float(mc + dm + k * (ad.f0_a - mc))


def _shift_pitch(
    y: np.ndarray, rate: int, y16: np.ndarray, ad: Adaptation, cfg: Config
) -> tuple[np.ndarray, np.ndarray]:
    """PSOLA of ``y`` (``y16``: it at 16 kHz) to the adaptation's pitch, and the F0 tracked in it on
    the analysis grid (0: unvoiced), which finds its glottal pulses."""
    f0 = _pitch(y16, cfg, PIPER_F0)
    step = cfg.frame_ms / 1000
    pulses = psola.glottal_pulses(y, rate, f0, step)
    target = np.where(f0 > 0, np.exp(ad.f0_a + ad.f0_b * np.log(np.maximum(f0, 1.0))), 0.0)
    return psola.shift_pitch(y, rate, pulses, target, step), f0


def _pitch(x16: np.ndarray, cfg: Config, f0_range: tuple[float, float]) -> np.ndarray:
    """F0 per analysis frame (0: unvoiced), as ``_analyse`` and the PSOLA step find it."""
    frames = int(len(x16) / FS * 1000 / cfg.frame_ms) + 1
    return psola.track_pitch(x16, FS, frames, cfg.frame_ms / 1000, *f0_range)


def _gain_grid(rate: int, nfft: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Where each STFT bin at ``rate`` falls on the analysis grid's FFT/2+1 bins (above 8 kHz: the
    8 kHz bin): lower neighbour, upper neighbour and the weight of the upper, for interpolating."""
    fr = np.arange(nfft // 2 + 1) * rate / nfft
    bins = np.clip(fr / (FS / 2) * (FFT // 2), 0, FFT // 2)
    lo = np.floor(bins).astype(int)
    return lo, np.minimum(lo + 1, FFT // 2), bins - lo


def convert(audio: np.ndarray, rate: int, adaptation: Adaptation, training_sample: int | None = None) -> np.ndarray:
    """Piper audio (rendered with adaptation.length_scale) -> converted float32 audio, same rate.
    training_sample: this is Piper's rendition of that training sample (calibration): its frames
    use no neighbours from their own half of it, as a new sentence would find none.

    The filter is the mapped envelope less the envelope of the signal filtered. Envelopes are
    analysed at voiced frames only: elsewhere the map is the original plus the unvoiced difference,
    and PSOLA leaves unvoiced speech as it was, so there the filter is that difference alone and
    needs no analysis (half the frames of speech, and every pause)."""
    ad, cfg = adaptation, adaptation.cfg
    audio = np.asarray(audio, dtype=np.float64)
    if len(audio) < rate // 20:
        return audio.astype(np.float32)
    code, decode = _coding(cfg.n_coded)
    x16 = np.ascontiguousarray(_resample(audio, rate, FS))
    if cfg.pitch:
        shifted, f0 = _shift_pitch(audio, rate, x16, ad, cfg)
    else:
        shifted, f0 = audio, _pitch(x16, cfg, PIPER_F0)
    voiced = f0 > 0
    t = np.arange(len(f0)) * cfg.frame_ms / 1000
    # The filter's difference is kept in the coded domain (n_coded numbers a frame) until it is
    # smoothed in time, which is linear and so commutes with decoding.
    # unvoiced and silent frames: y - x = uv * d_uv, whatever the envelope
    diff = np.tile(0.5 * cfg.uv * ad.d_uv, (len(f0), 1))
    if voiced.any():
        x = np.log(_envelopes(x16, f0[voiced], t[voiced])) @ code
        xw = _warp(x, ad.alpha)
        y = _map(xw, ad)
        if cfg.knn > 0 and len(ad.knn_keys):
            seg = None
            if training_sample is not None:
                seg = (2 * training_sample + (np.flatnonzero(voiced) >= len(f0) // 2)).astype(np.int64)
            y[:, : ad.knn_res.shape[1]] += cfg.knn * _neighbour_correction(xw[:, 1:], ad, seg)
        xs = x
        if cfg.post_env and cfg.pitch:
            # PSOLA does not keep the envelope exactly (pulse overlap, level change with pitch): filter
            # from the envelope of the signal actually being filtered, at the pitch PSOLA aimed for
            s16 = np.ascontiguousarray(_resample(shifted, rate, FS))
            f0s = np.exp(ad.f0_a + ad.f0_b * np.log(np.maximum(f0[voiced], 1.0)))
            xs = np.log(_envelopes(s16, f0s, t[voiced])) @ code
        diff[voiced] = 0.5 * (y - xs)
    # the voicing travels beside the coefficients: it chooses between the two EQs, smoothed the same
    track = np.hstack([diff * cfg.strength, voiced[:, None].astype(float)])
    h = cfg.smooth  # temporal smoothing of the filter
    k = np.concatenate([np.arange(1, h + 2), np.arange(h, 0, -1)]).astype(float)
    pad = np.pad(track, ((h, h), (0, 0)), mode="edge")
    track = sum(k[i] * pad[i : i + len(track)] for i in range(len(k))) / k.sum()
    voicing = track[:, -1:]
    dlog = track[:, :-1] @ decode + voicing * ad.eq + (1 - voicing) * ad.eq_uv  # (frames, FFT/2+1)
    dlog = np.clip(dlog, -cfg.max_cut_db / 8.686, cfg.max_boost_db / 8.686)
    nfft, hop = 1024, 256
    fr, tt, spec = _stft(shifted, rate, nfft, hop)
    # map analysis frames/bins onto the STFT grid (above 8 kHz hold the 8 kHz value)
    fi = np.clip(tt / (cfg.frame_ms / 1000.0), 0, len(dlog) - 1)
    i0 = np.floor(fi).astype(int)
    i1 = np.minimum(i0 + 1, len(dlog) - 1)
    g = (fi - i0)[:, None]
    dt = dlog[i0] * (1 - g) + dlog[i1] * g  # (T, FFT/2+1)
    lo, hi, w = _gain_grid(rate, nfft)
    # exp in single precision: NumPy's double-precision exp is not vectorised here (ten times slower)
    gain = np.exp((dt[:, lo] * (1 - w) + dt[:, hi] * w).astype(np.float32)).T  # (bins, T), as the STFT
    spec = spec * gain
    if cfg.breath > 0 and np.any(ad.ap_diff > 0):
        # bands of D4C coding are centred at 3, 6, 9 ... kHz; more aperiodicity -> mix in noise
        centres = np.concatenate([[0.0], 3000.0 * (np.arange(len(ad.ap_diff)) + 1)])
        mix = np.interp(fr, centres, np.concatenate([[0.0], np.clip(ad.ap_diff, 0, 0.6)])) * cfg.breath
        vt = np.interp(tt, np.arange(len(voiced)) * cfg.frame_ms / 1000.0, voiced.astype(float))
        m = mix[:, None] * vt[None, :]
        # random phases in single precision: the double-precision complex exponential cost a tenth
        # of the conversion of a breathy voice
        angle = np.float32(2 * np.pi) * np.random.default_rng(0).random(spec.shape, dtype=np.float32)
        phase = np.cos(angle) + 1j * np.sin(angle)
        spec = spec * np.sqrt(1 - m) + np.abs(spec) * np.sqrt(m) * phase
    out = _istft(spec, nfft, hop)
    out = out[: len(audio)]
    peak = np.max(np.abs(out)) if len(out) else 0.0
    if peak > 0.99:
        out *= 0.99 / peak
    return np.asarray(out, dtype=np.float32)
