"""Checking and cleaning reference recordings before they become voice samples.

``analyse`` measures what decides whether a recording can teach a voice: how long it is, how much
of it is speech (the Silero VAD that faster-whisper ships, no torch), clipping, level and a noise
estimate. ``check`` turns unusable audio into an error that says why and poor audio into warnings.
``clean`` keeps the speech (silence trimmed), resampled, loudness-normalised.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from parla.audio.dsp import loudness_lufs, normalize_loudness, resample
from parla.audio.vad import RATE as VAD_RATE
from parla.audio.vad import speech_spans

FloatArray = npt.NDArray[np.float32]

SAMPLE_RATE = 24_000
"""Rate cleaned samples are stored at: what most cloning engines (XTTS, Chatterbox, F5) take."""
TARGET_LUFS = -20.0
MIN_SECONDS, MAX_SECONDS = 0.5, 60.0
MAX_VOICE_SECONDS = 300.0
"""All samples of one voice together."""
_CLIP_LEVEL = 0.999
_FRAME = 0.02


class UnusableAudioError(ValueError):
    """The recording cannot be used as a voice sample; the message says why."""


@dataclass(frozen=True)
class QualityReport:
    duration_s: float
    speech_s: float
    speech_ratio: float
    peak_dbfs: float
    loudness_lufs: float
    clipped_ratio: float
    noise_dbfs: float
    snr_db: float
    warnings: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {k: (round(v, 3) if isinstance(v, float) and math.isfinite(v) else v) for k, v in asdict(self).items()}


def _db(value: float) -> float:
    return 20 * math.log10(value) if value > 1e-10 else -200.0


def speech_regions(samples: FloatArray, rate: int) -> list[tuple[float, float]]:
    """Spans of speech in seconds, found by the Silero VAD that faster-whisper ships (``vad``)."""
    audio16k = resample(samples, rate, VAD_RATE) if rate != VAD_RATE else samples
    spans = speech_spans(audio16k.astype(np.float32), threshold=0.5, min_silence_ms=300, pad_ms=100)
    return [(start / VAD_RATE, end / VAD_RATE) for start, end in spans]


def analyse(samples: FloatArray, rate: int) -> tuple[QualityReport, list[tuple[float, float]]]:
    """Measure a recording; also returns the speech regions it found (for ``clean``)."""
    duration = samples.size / rate
    peak = float(np.max(np.abs(samples))) if samples.size else 0.0
    regions = speech_regions(samples, rate) if peak > 1e-4 else []
    speech = sum(end - start for start, end in regions)

    frame = max(1, int(_FRAME * rate))
    n = samples.size // frame
    rms = np.sqrt(np.mean(samples[: n * frame].reshape(n, frame).astype(np.float64) ** 2, axis=1)) if n else np.zeros(1)
    in_speech = np.zeros(rms.size, dtype=bool)
    for start, end in regions:
        in_speech[int(start / _FRAME) : math.ceil(end / _FRAME)] = True
    quiet = rms[~in_speech[: rms.size]]
    noise = float(np.percentile(quiet, 50)) if quiet.size >= 5 else float(np.percentile(rms, 5))
    level = float(np.median(rms[in_speech[: rms.size]])) if in_speech.any() else float(np.median(rms))

    report = QualityReport(
        duration_s=duration,
        speech_s=speech,
        speech_ratio=speech / duration if duration else 0.0,
        peak_dbfs=_db(peak),
        loudness_lufs=loudness_lufs(samples, rate) if peak > 1e-4 else float("-inf"),
        clipped_ratio=float(np.mean(np.abs(samples) >= _CLIP_LEVEL)) if samples.size else 0.0,
        noise_dbfs=_db(noise),
        snr_db=_db(level) - _db(noise),
    )
    return report, regions


def check(
    report: QualityReport, *, min_seconds: float = MIN_SECONDS, max_seconds: float = MAX_SECONDS
) -> QualityReport:
    """Raise ``UnusableAudioError`` for audio no engine can learn from; add warnings for poor audio."""
    if report.duration_s < min_seconds:
        raise UnusableAudioError(
            f"the recording lasts {report.duration_s:.2f} s; a sample needs at least {min_seconds} s"
        )
    if report.duration_s > max_seconds:
        raise UnusableAudioError(
            f"the recording lasts {report.duration_s:.1f} s; a sample may last at most {max_seconds} s"
        )
    if report.peak_dbfs < -60:
        raise UnusableAudioError("the recording is silent")
    if report.speech_s < 0.3:
        raise UnusableAudioError("no speech was detected in the recording")
    warnings = []
    if report.clipped_ratio > 0.001:
        warnings.append(f"{report.clipped_ratio:.1%} of the samples are clipped: record at a lower level")
    if report.loudness_lufs < -40:
        warnings.append(f"the recording is very quiet ({report.loudness_lufs:.0f} LUFS): it was amplified")
    if report.snr_db < 15:
        warnings.append(f"background noise is high (speech only {report.snr_db:.0f} dB above it)")
    if report.speech_ratio < 0.4:
        warnings.append(f"only {report.speech_ratio:.0%} of the recording is speech")
    if report.speech_s < 3:
        warnings.append(f"only {report.speech_s:.1f} s of speech: 5 to 30 s give a closer voice")
    return QualityReport(**{**asdict(report), "warnings": warnings})


def clean(
    samples: FloatArray, rate: int, regions: list[tuple[float, float]], *, target_rate: int = SAMPLE_RATE
) -> FloatArray:
    """Trim silence before the first and after the last speech (keeping a short margin), resample,
    and normalise loudness."""
    if regions:
        margin = 0.15
        start = max(0, int((regions[0][0] - margin) * rate))
        end = min(samples.size, math.ceil((regions[-1][1] + margin) * rate))
        samples = samples[start:end]
    samples = samples - float(np.mean(samples))  # remove any DC offset before measuring loudness
    return normalize_loudness(resample(samples.astype(np.float32), rate, target_rate), target_rate, TARGET_LUFS)
