"""Audio in and out: decode any upload, resample, measure and normalise loudness, encode as it streams.

The names below are re-exported lazily (PEP 562): importing one submodule (``parla.audio.encode``
for the speech path) must not import the others' heavy libraries (SciPy for ``dsp``, PyAV for
``decode``), which a process that only speaks PCM never needs.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
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

_HOMES = {
    "AudioDecodeError": "decode",
    "AudioTooLongError": "decode",
    "decode_audio": "decode",
    "loudness_lufs": "dsp",
    "normalize_loudness": "dsp",
    "resample": "dsp",
    "to_int16": "dsp",
    "CONTENT_TYPES": "encode",
    "FORMATS": "encode",
    "AudioFormat": "encode",
    "StreamEncoder": "encode",
    "encode_audio": "encode",
    "open_encoder": "encode",
    "output_sample_rate": "encode",
}


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{home}"), name)


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
