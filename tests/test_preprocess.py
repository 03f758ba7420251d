"""Preprocessing of a character's reference recording: each option measured on synthetic signals, then the
whole path through the API, on the module's mock app (the stored voice sample is the preprocessed recording)."""

from __future__ import annotations

import json
import math
from typing import Any

import httpx
import numpy as np
import numpy.typing as npt
import pytest
from pydantic import ValidationError

from parla.audio import decode_audio, encode_audio, loudness_lufs
from parla.audio.preprocess import (
    BASS_BOOST_DB,
    MAX_PAUSE_S,
    PEAK_CEILING_DBFS,
    TREBLE_BOOST_DB,
    PreprocessSettings,
    preprocess,
)
from parla.characters.checks import preprocessing
from parla.errors import InvalidInputError
from tests.conftest import someone_saying

RATE = 24_000
FloatArray = npt.NDArray[np.float32]

NOTHING = PreprocessSettings(
    clean_audio=False,
    remove_silence=False,
    enhance_audio=False,
    fade_length_ms=0,
    bass_boost=False,
    treble_boost=False,
    compression=False,
)
"""Every option off: each test switches on the one it measures."""


def only(**options: Any) -> PreprocessSettings:
    return NOTHING.model_copy(update=options)


def tone(freq: float, seconds: float, amplitude: float = 0.5, rate: int = RATE) -> FloatArray:
    t = np.arange(round(seconds * rate)) / rate
    return (amplitude * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def noise(seconds: float, rms: float, seed: int = 0, rate: int = RATE) -> FloatArray:
    return (rms * np.random.default_rng(seed).standard_normal(round(seconds * rate))).astype(np.float32)


def db(x: npt.NDArray[Any]) -> float:
    return 20 * math.log10(float(np.sqrt(np.mean(np.asarray(x, dtype=np.float64) ** 2))))


def level_at(x: FloatArray, freq: float, rate: int = RATE) -> float:
    """dB level of one frequency's component (projection on a sine and cosine), the first 0.2 s (filter
    transients) left out."""
    part = x[round(0.2 * rate) :].astype(np.float64)
    t = np.arange(part.size) / rate
    amplitude = 2 * math.hypot(
        float(np.mean(part * np.sin(2 * np.pi * freq * t))), float(np.mean(part * np.cos(2 * np.pi * freq * t)))
    )
    return 20 * math.log10(max(amplitude, 1e-12))


def crest_db(x: FloatArray) -> float:
    return 20 * math.log10(float(np.max(np.abs(x)))) - db(x)


def bursts(rate: int = RATE) -> FloatArray:
    """Something like speech: tone bursts of very different loudness, with pauses between them."""
    parts = []
    for i, amplitude in enumerate([0.9, 0.05, 0.4, 0.02, 0.7, 0.1]):
        parts += [tone(220 + 60 * i, 0.3, amplitude, rate), np.zeros(round(0.1 * rate), dtype=np.float32)]
    return np.concatenate(parts)


# -- settings ------------------------------------------------------------------------------------------


def test_defaults_are_the_documented_ones_and_ranges_are_checked() -> None:
    assert PreprocessSettings().model_dump() == {
        "clean_audio": True,
        "remove_silence": True,
        "enhance_audio": True,
        "top_db": 40.0,
        "fade_length_ms": 50,
        "bass_boost": True,
        "treble_boost": True,
        "compression": True,
    }
    for bad in ({"top_db": 5}, {"top_db": 101}, {"fade_length_ms": -1}, {"fade_length_ms": 1001}, {"top_db": "x"}):
        with pytest.raises(ValidationError):
            PreprocessSettings.model_validate(bad)


# -- each option, measured ---------------------------------------------------------------------------


def test_silence_below_top_db_is_trimmed_and_above_it_kept() -> None:
    padding = noise(1.0, rms=0.5 / math.sqrt(2) * 10 ** (-60 / 20))  # 60 dB below the tone
    padded = np.concatenate([padding, tone(440, 2.0), padding])

    trimmed = preprocess(padded, RATE, only(remove_silence=True, top_db=40))
    assert 2.0 <= trimmed.size / RATE <= 2.15
    kept = preprocess(padded, RATE, only(remove_silence=True, top_db=80))
    assert kept.size == padded.size


def test_long_pauses_are_shortened_and_short_ones_kept() -> None:
    def with_gap(seconds: float) -> FloatArray:
        return np.concatenate([tone(300, 1.0), np.zeros(round(seconds * RATE), dtype=np.float32), tone(500, 1.0)])

    long_gap = preprocess(with_gap(3.0), RATE, only(remove_silence=True))
    assert long_gap.size / RATE == pytest.approx(2.0 + MAX_PAUSE_S, abs=0.05)
    short_gap = preprocess(with_gap(0.3), RATE, only(remove_silence=True))
    assert short_gap.size == with_gap(0.3).size
    # Both tones survive whole.
    assert level_at(long_gap[: RATE // 2], 300) == pytest.approx(level_at(tone(300, 0.5), 300), abs=0.1)
    assert level_at(long_gap[-RATE // 2 :], 500) == pytest.approx(level_at(tone(500, 0.5), 500), abs=0.1)


@pytest.mark.parametrize("length_ms", [20, 50, 300])
def test_fades_rise_from_zero_over_exactly_their_length(length_ms: int) -> None:
    signal = tone(1000, 2.0, 0.4) + 0.5  # between 0.1 and 0.9: never zero, so the gain is out / in
    out = preprocess(signal, RATE, only(fade_length_ms=length_ms))
    gain = out / signal
    n = round(length_ms * RATE / 1000)
    assert abs(gain[0]) < 1e-6
    assert np.all(np.diff(gain[:n]) > 0)  # rising all the way
    assert gain[n // 2] == pytest.approx(0.5, abs=0.02)
    assert gain[n - round(0.001 * RATE)] < 1 - 1e-5  # still fading 1 ms before its end
    assert np.allclose(gain[n:-n], 1.0, atol=1e-6)
    assert np.allclose(gain[::-1][: n + 1], gain[: n + 1], atol=1e-6)  # the fade-out mirrors it
    assert abs(gain[-1]) < 0.01


@pytest.mark.parametrize("rate", [22_050, 24_000, 48_000])
def test_bass_and_treble_shelves_add_their_gain(rate: int) -> None:
    low, high = tone(100, 1.0, 0.2, rate), tone(8000, 1.0, 0.2, rate)

    def change(x: FloatArray, freq: float, options: PreprocessSettings) -> float:
        return level_at(preprocess(x, rate, options), freq, rate) - level_at(x, freq, rate)

    bass, treble = only(bass_boost=True), only(treble_boost=True)
    assert change(low, 100, bass) == pytest.approx(BASS_BOOST_DB, abs=0.5)
    assert change(high, 8000, bass) == pytest.approx(0.0, abs=0.1)
    assert change(high, 8000, treble) == pytest.approx(TREBLE_BOOST_DB, abs=0.5)
    assert change(low, 100, treble) == pytest.approx(0.0, abs=0.1)


def test_compression_lowers_the_crest_factor_and_evens_out_levels() -> None:
    # A phrase with one loud accent: the accent is turned down, the phrase around it is not.
    accented = np.concatenate([tone(200, 1.0, 0.1), tone(300, 0.1, 0.9), tone(250, 1.0, 0.1)])
    out = preprocess(accented, RATE, only(compression=True))
    assert crest_db(out) <= crest_db(accented) - 3.0
    assert db(out) == pytest.approx(db(accented), abs=0.1)  # make-up gain restores the level
    speech, rate = decode_audio(someone_saying(SAID, "en-us+m3"))
    assert crest_db(preprocess(speech, rate, only(compression=True))) <= crest_db(speech) - 1.5

    signal = bursts()
    out = preprocess(signal, RATE, only(compression=True))

    def spread(x: FloatArray) -> float:
        step = round(0.4 * RATE)
        loud, quiet = (
            x[round(0.05 * RATE) : round(0.25 * RATE)],
            x[step + round(0.05 * RATE) : step + round(0.25 * RATE)],
        )
        return db(loud) - db(quiet)

    assert spread(out) <= spread(signal) - 6.0  # 25 dB apart before; 3:1 above the threshold


def test_clean_audio_removes_dc_and_rumble_and_keeps_the_voice_band() -> None:
    voice = tone(440, 2.0, 0.3)
    t = np.arange(voice.size) / RATE
    dirty = (voice + 0.2 + 0.2 * np.sin(2 * np.pi * 20 * t)).astype(np.float32)
    out = preprocess(dirty, RATE, only(clean_audio=True))
    assert abs(float(np.mean(out))) < 1e-3 < abs(float(np.mean(dirty)))
    assert level_at(out, 20) <= level_at(dirty, 20) - 40
    assert level_at(out, 440) == pytest.approx(level_at(voice, 440), abs=0.5)


def test_clean_audio_lowers_steady_noise_in_the_pauses() -> None:
    speech = bursts()
    hiss = noise(speech.size / RATE, rms=0.003, seed=3)
    out = preprocess(speech + hiss, RATE, only(clean_audio=True))
    pause = slice(round(0.32 * RATE), round(0.38 * RATE))  # inside the first 0.1 s pause
    assert db(out[pause]) <= db(hiss[pause]) - 6
    loud = slice(round(0.05 * RATE), round(0.25 * RATE))
    assert db(out[loud]) == pytest.approx(db(speech[loud]), abs=0.5)


def test_noise_without_pauses_is_not_gated() -> None:
    steady = tone(440, 2.0, 0.3)
    out = preprocess(steady, RATE, only(clean_audio=True))
    assert level_at(out, 440) == pytest.approx(level_at(steady, 440), abs=0.1)


@pytest.mark.parametrize("scale", [0.01, 0.3, 1.0])
def test_enhance_reaches_the_loudness_target_below_the_ceiling(scale: float) -> None:
    signal = np.clip(bursts() * scale * 1.1, -1, 1)
    out = preprocess(signal, RATE, only(enhance_audio=True))
    assert loudness_lufs(out, RATE) == pytest.approx(-20.0, abs=0.5)
    assert 20 * math.log10(float(np.max(np.abs(out)))) <= PEAK_CEILING_DBFS + 0.01


def test_a_spiky_recording_is_limited_not_turned_down() -> None:
    signal = bursts() * 0.05
    signal[::4800] = 0.99  # clicks: the peaks are far above the speech
    out = preprocess(signal, RATE, only(enhance_audio=True))
    assert loudness_lufs(out, RATE) == pytest.approx(-20.0, abs=0.5)
    assert float(np.max(np.abs(out))) <= 10 ** (PEAK_CEILING_DBFS / 20) + 1e-4


@pytest.mark.parametrize(
    "options",
    [PreprocessSettings(), only(bass_boost=True, treble_boost=True), only(compression=True, bass_boost=True)],
    ids=["defaults", "both-shelves", "compressed"],
)
def test_nothing_clips(options: PreprocessSettings) -> None:
    hot = np.clip(tone(100, 1.0, 1.0) + tone(8000, 1.0, 0.5) + noise(1.0, 0.2), -1, 1).astype(np.float32)
    out = preprocess(hot, RATE, options)
    assert out.size > 0.5 * RATE
    assert float(np.max(np.abs(out))) <= 1.0
    assert out.dtype == np.float32


def test_a_silent_recording_is_refused_when_silence_is_removed() -> None:
    with pytest.raises(ValueError, match="silent"):
        preprocess(np.zeros(RATE, dtype=np.float32), RATE)
    with pytest.raises(ValueError, match="empty"):
        preprocess(np.zeros(0, dtype=np.float32), RATE)


def test_the_settings_are_read_at_the_top_level_or_nested() -> None:
    read = preprocessing
    assert read({"top_db": 60, "bass_boost": False}) == PreprocessSettings(top_db=60, bass_boost=False)
    assert read({"audio_preprocessing": {"fade_length_ms": 10}}) == PreprocessSettings(fade_length_ms=10)
    assert read({"preprocess_audio": False, "top_db": 60}) is None
    for bad in ({"top_db": 500}, {"audio_preprocessing": {"compression": "maybe"}}, {"audio_preprocessing": 3}):
        with pytest.raises(InvalidInputError) as caught:
            read(bad)
        assert caught.value.param == "voice_cloning_settings"


# -- through the server ------------------------------------------------------------------------------

SAID = "I have kept this lighthouse for many years, and I know every stone of the island."
PAD_S, GAP_S = 2.0, 2.0


def _padded_recording() -> tuple[bytes, float]:
    """The spoken sentence twice, 2 s of faint room noise at both ends and between; and its speech seconds."""
    speech, rate = decode_audio(someone_saying(SAID, "en-us+m3"))
    room = noise(PAD_S, rms=3e-4, seed=7, rate=rate)
    padded = np.concatenate([room, speech, noise(GAP_S, rms=3e-4, seed=8, rate=rate), speech, room])
    return encode_audio(padded, rate, "wav"), 2 * speech.size / rate


async def _create(api: httpx.AsyncClient, name: str, audio: bytes, voice_settings: dict[str, Any]) -> httpx.Response:
    return await api.post(
        "/create-character",
        data={
            "name": name,
            "voice_cloning_settings": json.dumps({"reference_text": f"{SAID} {SAID}", **voice_settings}),
        },
        files={"voice_cloning_audio": ("padded.wav", audio, "audio/wav")},
    )


async def _stored_sample(api: httpx.AsyncClient, voice_id: str) -> bytes:
    voice = (await api.get(f"/v1/voices/{voice_id}")).json()
    (sample,) = voice["samples"]
    response = await api.get(f"/v1/voices/{voice_id}/samples/{sample['id']}/audio")
    assert response.status_code == 200
    return response.content


async def test_a_character_voice_is_made_from_the_preprocessed_recording(api: httpx.AsyncClient) -> None:
    audio, speech_s = _padded_recording()
    upload_s = speech_s + 2 * PAD_S + GAP_S
    made: list[int] = []
    plain_voice: str | None = None
    try:
        processed = await _create(api, "Trimmed keeper", audio, {"remove_silence": True, "top_db": 40})
        assert processed.status_code == 200, processed.text
        made.append(processed.json()["character_id"])
        untouched = await _create(api, "Untouched keeper", audio, {"preprocess_audio": False})
        assert untouched.status_code == 200, untouched.text
        made.append(untouched.json()["character_id"])

        trimmed = await _stored_sample(api, processed.json()["character"]["voice_id"])
        trimmed_samples, trimmed_rate = decode_audio(trimmed)
        trimmed_s = trimmed_samples.size / trimmed_rate
        # The padding and most of the gap are gone; what is left is the speech and one natural pause.
        assert upload_s - trimmed_s == pytest.approx(2 * PAD_S + GAP_S - MAX_PAUSE_S, abs=0.6)
        assert float(np.max(np.abs(trimmed_samples))) < 1.0

        # Without preprocessing the stored sample is exactly what a plain upload to the library gives.
        kept = await _stored_sample(api, untouched.json()["character"]["voice_id"])
        plain = await api.post(
            "/v1/voices/clone",
            data={"name": "Plain keeper", "transcript": f"{SAID} {SAID}"},
            files={"file": ("padded.wav", audio, "audio/wav")},
        )
        assert plain.status_code == 201, plain.text
        plain_voice = plain.json()["voice"]["id"]
        assert kept == await _stored_sample(api, plain_voice)
        kept_samples, kept_rate = decode_audio(kept)
        assert kept_samples.size / kept_rate - trimmed_s >= GAP_S - MAX_PAUSE_S - 0.3  # the library keeps the gap
    finally:
        for character_id in made:
            await api.delete(f"/delete-character/{character_id}")
        if plain_voice:
            await api.delete(f"/v1/voices/{plain_voice}")


@pytest.mark.parametrize(
    "voice_settings",
    [{"top_db": 500}, {"audio_preprocessing": {"top_db": 2}}, {"audio_preprocessing": {"fade_length_ms": "long"}}],
)
async def test_invalid_preprocessing_is_a_400_that_leaves_nothing(
    api: httpx.AsyncClient, voice_settings: dict[str, Any]
) -> None:
    characters_before = (await api.get("/get-characters")).json()["characters"]
    voices_before = (await api.get("/v1/voices")).json()
    audio, _ = _padded_recording()
    response = await _create(api, "Misconfigured keeper", audio, voice_settings)
    assert response.status_code == 400, response.text
    assert "voice_cloning_settings" in response.json()["detail"]
    assert "top_db" in response.json()["detail"] or "fade_length_ms" in response.json()["detail"]
    assert (await api.get("/get-characters")).json()["characters"] == characters_before
    assert (await api.get("/v1/voices")).json() == voices_before


async def test_invalid_preprocessing_is_refused_on_update_without_audio(api: httpx.AsyncClient) -> None:
    audio, _ = _padded_recording()
    created = await _create(api, "Updated keeper", audio, {})
    assert created.status_code == 200, created.text
    character_id = created.json()["character_id"]
    try:
        before = (await api.get(f"/get-character/{character_id}")).json()["character"]
        response = await api.put(
            f"/update-character/{character_id}", data={"voice_cloning_settings": json.dumps({"top_db": 500})}
        )
        assert response.status_code == 400 and "top_db" in response.json()["detail"]
        assert (await api.get(f"/get-character/{character_id}")).json()["character"] == before
    finally:
        await api.delete(f"/delete-character/{character_id}")
