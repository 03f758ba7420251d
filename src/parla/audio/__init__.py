"""Audio in and out: decode any upload, resample, measure and normalise loudness, encode as it streams."""

from parla.audio.decode import AudioDecodeError, AudioTooLongError, decode_audio
from parla.audio.dsp import loudness_lufs, normalize_loudness, resample, to_int16
from parla.audio.encode import (
    CONTENT_TYPES,
    FORMATS,
    AudioFormat,
    StreamEncoder,
    encode_audio,
    open_encoder,
    output_sample_rate,
)

__all__ = [
    "CONTENT_TYPES",
    "FORMATS",
    "AudioDecodeError",
    "AudioFormat",
    "AudioTooLongError",
    "StreamEncoder",
    "decode_audio",
    "encode_audio",
    "loudness_lufs",
    "normalize_loudness",
    "open_encoder",
    "output_sample_rate",
    "resample",
    "to_int16",
]
