"""The audio layer: decode any format, resample, loudness, incremental encoders for six formats."""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt
import pytest

from parla.audio import (
    FORMATS,
    AudioDecodeError,
    AudioTooLongError,
    decode_audio,
    encode_audio,
    loudness_lufs,
    normalize_loudness,
    open_encoder,
    output_sample_rate,
    resample,
)

RATE = 22050


def tone(freq: float = 440.0, seconds: float = 1.0, rate: int = RATE, amp: float = 0.5) -> npt.NDArray[np.float32]:
    t = np.arange(int(seconds * rate)) / rate
    return (amp * np.sin(2 * math.pi * freq * t)).astype(np.float32)


def dominant_frequency(samples: npt.NDArray[np.float32], rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(samples * np.hanning(samples.size)))
    return float(np.argmax(spectrum) * rate / samples.size)


def pcm_to_float(data: bytes) -> npt.NDArray[np.float32]:
    return (np.frombuffer(data, dtype="<i2").astype(np.float32) / 32768).astype(np.float32)


@pytest.mark.parametrize("fmt", FORMATS)
def test_every_format_round_trips_with_its_length_and_pitch(fmt: str) -> None:
    signal = tone(440.0, 1.5)
    encoder = open_encoder(fmt, RATE)
    parts = [encoder.encode(signal[i : i + 4410]) for i in range(0, signal.size, 4410)]
    data = b"".join(parts) + encoder.close()
    if fmt == "pcm":
        samples, rate = pcm_to_float(data), 24000
    else:
        samples, rate = decode_audio(data)
    # Opus always decodes at 48 kHz, whatever rate it was encoded from.
    assert rate == (48000 if fmt == "opus" else output_sample_rate(fmt, RATE))
    assert samples.size / rate == pytest.approx(1.5, abs=0.08)
    assert dominant_frequency(samples, rate) == pytest.approx(440.0, abs=5.0)


@pytest.mark.parametrize("fmt", FORMATS)
def test_encoders_emit_bytes_before_the_end(fmt: str) -> None:
    """A streamed response needs bytes while audio is still arriving, not only at close()."""
    encoder = open_encoder(fmt, RATE)
    emitted = [len(encoder.encode(tone(300.0, 0.25))) for _ in range(8)]
    encoder.close()
    assert sum(emitted[:4]) > 0


def test_wav_of_a_whole_signal_has_exact_sizes() -> None:
    data = encode_audio(tone(seconds=0.5), RATE, "wav")
    assert int.from_bytes(data[40:44], "little") == len(data) - 44
    samples, rate = decode_audio(data)
    assert (rate, samples.size) == (RATE, int(0.5 * RATE))


def test_decode_resamples_and_mixes_to_mono() -> None:
    data = encode_audio(tone(1000.0, 1.0, rate=48000), 48000, "flac")
    samples, rate = decode_audio(data, 16000)
    assert rate == 16000
    assert samples.dtype == np.float32 and samples.ndim == 1
    assert samples.size == pytest.approx(16000, abs=200)
    assert dominant_frequency(samples, 16000) == pytest.approx(1000.0, abs=10.0)


@pytest.mark.parametrize("garbage", [b"", b"not audio at all", b"RIFF\x00\x00\x00\x00WAVEjunk" * 10])
def test_corrupt_input_is_refused(garbage: bytes) -> None:
    with pytest.raises(AudioDecodeError):
        decode_audio(garbage)


def test_long_audio_stops_at_the_limit() -> None:
    data = encode_audio(tone(seconds=5.0), RATE, "mp3")
    with pytest.raises(AudioTooLongError):
        decode_audio(data, max_seconds=2.0)
    assert decode_audio(data, max_seconds=10.0)[0].size > 4 * RATE


def test_resample_keeps_frequency_and_duration() -> None:
    out = resample(tone(440.0, 1.0), RATE, 24000)
    assert out.size == 24000
    assert dominant_frequency(out, 24000) == pytest.approx(440.0, abs=2.0)


def test_loudness_normalisation_hits_the_target() -> None:
    quiet = tone(1000.0, 3.0, amp=0.05)
    louder = normalize_loudness(quiet, RATE, target_lufs=-23.0)
    assert loudness_lufs(louder, RATE) == pytest.approx(-23.0, abs=0.3)
    # A full-scale 1 kHz sine reads about -3 LUFS (BS.1770 calibration).
    assert loudness_lufs(tone(1000.0, 3.0, amp=1.0), RATE) == pytest.approx(-3.0, abs=0.3)


def test_normalisation_respects_the_peak_ceiling_and_leaves_silence() -> None:
    loud = normalize_loudness(tone(1000.0, 2.0, amp=0.1), RATE, target_lufs=0.0, peak_dbfs=-1.0)
    assert np.max(np.abs(loud)) <= 10 ** (-1 / 20) + 1e-6
    silence = np.zeros(RATE, dtype=np.float32)
    assert np.array_equal(normalize_loudness(silence, RATE), silence)


def _recording_with_pauses() -> tuple[np.ndarray, int]:
    """Three spoken phrases after 0.5 s of noise, with 1 s and 0.15 s of silence added between them."""
    from parla.audio.dsp import resample
    from tests.conftest import someone_saying

    parts = []
    for text, pause in (("The first phrase is here.", 1.0), ("A second one follows.", 0.15), ("And the last.", 0.5)):
        samples, rate = decode_audio(someone_saying(text))
        parts += [resample(samples, rate, 16000), np.zeros(int(16000 * pause), dtype=np.float32)]
    audio = np.concatenate([np.zeros(8000, dtype=np.float32), *parts])
    return audio + 0.002 * np.random.default_rng(0).standard_normal(len(audio)).astype(np.float32), 16000


def test_speech_spans_are_faster_whispers() -> None:
    """The VAD run here finds the spans faster-whisper's ``get_speech_timestamps`` finds with the
    same options (the model is the one it ships), in speech with long and short pauses, in noise
    and in silence."""
    from faster_whisper.vad import VadOptions, get_speech_timestamps

    from parla.audio.vad import speech_spans

    speech, _ = _recording_with_pauses()
    noise = 0.05 * np.random.default_rng(1).standard_normal(16000 * 3).astype(np.float32)
    options = VadOptions(threshold=0.5, min_silence_duration_ms=300, speech_pad_ms=100)
    for audio in (speech, noise, np.zeros(16000, dtype=np.float32), speech[: 16000 * 2 + 77]):
        want = [(s["start"], s["end"]) for s in get_speech_timestamps(audio, options, sampling_rate=16000)]
        assert speech_spans(audio, threshold=0.5, min_silence_ms=300, pad_ms=100) == want
    seconds = [(start / 16000, end / 16000) for start, end in speech_spans(speech)]
    assert len(seconds) == 3  # a span per phrase (espeak-ng ends each with 0.3 s of silence)
    assert 0.3 < seconds[0][0] < 0.5  # 0.5 s of noise first, less 0.1 s of padding
    assert seconds[1][0] - seconds[0][1] > 1.0  # the 1 s pause, and more
    assert len(speech) / 16000 - 0.8 < seconds[-1][1] < len(speech) / 16000 - 0.5  # 0.5 s pause + 0.3 s
