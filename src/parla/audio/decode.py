"""Decoding of any format PyAV (FFmpeg) reads into float32 mono at a chosen rate."""

from __future__ import annotations

import io
from pathlib import Path
from typing import BinaryIO

import numpy as np
import numpy.typing as npt

from parla.errors import InvalidInputError


class AudioDecodeError(ValueError):
    """The input is not audio PyAV can read (corrupt, empty, or no audio stream)."""


class AudioTooLongError(ValueError):
    """The input lasts longer than the caller allows; decoding stopped early."""


def decode_audio(
    source: bytes | Path | str | BinaryIO,
    sample_rate: int | None = None,
    *,
    max_seconds: float | None = None,
) -> tuple[npt.NDArray[np.float32], int]:
    """Decode ``source`` to float32 mono samples in [-1, 1].

    Returns the samples and their rate (``sample_rate`` when given, else the file's own).
    Stops as soon as more than ``max_seconds`` are decoded, so an hour-long upload costs
    no more than the limit.
    """
    import av  # lazy: PyAV (FFmpeg) is some 25 MB resident, needed only once audio comes in

    if isinstance(source, bytes):
        if not source:
            raise AudioDecodeError("the audio is empty")
        source = io.BytesIO(source)
    try:
        with av.open(source if not isinstance(source, Path) else str(source), mode="r") as container:
            if not container.streams.audio:
                raise AudioDecodeError("the file has no audio stream")
            stream = container.streams.audio[0]
            rate = sample_rate or stream.codec_context.sample_rate or stream.rate
            if not rate:
                raise AudioDecodeError("the audio stream has no sample rate")
            resampler = av.AudioResampler(format="flt", layout="mono", rate=rate)
            limit = None if max_seconds is None else int(max_seconds * rate)
            parts: list[npt.NDArray[np.float32]] = []
            total = 0
            for frame in container.decode(stream):
                for out in resampler.resample(frame):
                    part = out.to_ndarray().reshape(-1).astype(np.float32, copy=False)
                    parts.append(part)
                    total += part.size
                if limit is not None and total > limit:
                    raise AudioTooLongError(f"the audio is longer than the limit of {max_seconds:g} seconds")
            for out in resampler.resample(None):
                parts.append(out.to_ndarray().reshape(-1).astype(np.float32, copy=False))
    except (AudioDecodeError, AudioTooLongError):
        raise
    except av.InvalidDataError:
        raise AudioDecodeError("it is not in an audio format FFmpeg reads, or the file is corrupt") from None
    except (av.FFmpegError, ValueError, OSError, IndexError) as exc:
        raise AudioDecodeError(f"it could not be decoded ({exc})") from exc
    samples = np.concatenate(parts) if parts else np.zeros(0, dtype=np.float32)
    if samples.size == 0:
        raise AudioDecodeError("the audio contains no samples")
    return np.clip(samples, -1.0, 1.0), int(rate)


def _span(seconds: float) -> str:
    return f"{seconds / 3600:g} hours" if seconds >= 3600 else f"{seconds:g} s"


def decode_upload(
    data: bytes,
    sample_rate: int | None = None,
    *,
    max_seconds: float,
    param: str,
    name: str = "the upload",
    advice: str = "",
    grace_s: float = 0.0,
) -> tuple[npt.NDArray[np.float32], int]:
    """``decode_audio`` for audio a client sent: what cannot be used is the client's mistake, an
    ``InvalidInputError`` (400) naming ``param`` and saying why, with ``advice`` for a recording
    that is too long (``grace_s`` beyond the limit are let through: a recording cut at the limit
    runs a little over it). Every API decodes its uploads here, so they all word these errors alike."""
    try:
        return decode_audio(data, sample_rate, max_seconds=max_seconds + grace_s)
    except AudioTooLongError:
        raise InvalidInputError(f"{name} is longer than {_span(max_seconds)}{advice}", param=param) from None
    except AudioDecodeError as exc:
        raise InvalidInputError(f"{name} is not audio that can be read: {exc}", param=param) from None
