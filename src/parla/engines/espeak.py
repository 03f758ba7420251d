"""espeak-ng: formant synthesis in about a hundred languages, when the ``espeak-ng`` binary is installed."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator, Mapping
from typing import Any

from parla.audio.decode import AudioDecodeError, decode_audio
from parla.engines.base import (
    AudioChunk,
    Capabilities,
    Engine,
    EngineSettings,
    EngineUnavailableError,
    Param,
    SynthesisRequest,
)

BASE_WPM = 175
"""espeak-ng's default rate in words per minute; a request's speed multiplies it."""


class EspeakSettings(EngineSettings):
    """``PARLA_ENGINES__ESPEAK__*`` (and ``PARLA_ESPEAK_BINARY``, the older name of ``binary``)."""

    binary: str = "espeak-ng"
    """The espeak-ng executable (a name on PATH or a path)."""


VOICE_PRESETS: dict[str, dict[str, Any]] = {
    "alloy": {"variant": "m3"},
    "echo": {"variant": "m1", "pitch": 40},
    "fable": {"variant": "m2", "english": "en-gb"},
    "nova": {"variant": "f3", "pitch": 60},
    "onyx": {"variant": "m7", "pitch": 25},
    "shimmer": {"variant": "f2", "pitch": 70},
}
"""The built-in voices as espeak-ng voice variants (``+m3``) and base pitches, in the request's
language (``fable`` speaks British English when the request is in English)."""


def espeak_voice(language: str, preset: Mapping[str, Any]) -> str:
    """espeak-ng's ``-v`` for a request's language and a built-in voice's preset: ``fr+m3``."""
    code = language.lower()
    if code.split("-")[0] == "en":
        code = str(preset.get("english") or ("en-us" if code == "en" else code))
    variant = preset.get("variant")
    return f"{code}+{variant}" if variant else code


LANGUAGES = ("en", "de", "fr", "es", "it", "pt", "nl", "pl", "ru", "fi", "cs", "tr")


class EspeakEngine(Engine):
    name = "espeak"
    description = "espeak-ng formant synthesis (many languages; needs the espeak-ng program)."
    capabilities = Capabilities(
        sample_rate=22050,
        # The languages whose round trip through Whisper is tested (tests/test_languages.py). espeak-ng
        # has voices for about a hundred, but its formant voice is not always heard as the language:
        # Whisper base heard its Swedish (character error rate 0.76) and Hindi (as Thai) as nothing,
        # and Debian's Mandarin dictionary is the small one, which reads most characters as pinyin with
        # English tone numbers. Those are not claimed.
        languages=LANGUAGES,
        streaming=True,
        parameters=(
            Param("pitch", int, 50, 0, 99, "Base pitch (espeak-ng -p)."),
            Param("voice", str, "", description="An espeak-ng voice such as en-us+f3; empty picks by language."),
        ),
    )
    voice_presets = VOICE_PRESETS
    settings_model = EspeakSettings
    settings: EspeakSettings

    def binary(self) -> str | None:
        return shutil.which(self.settings.binary)

    def unavailable_reason(self) -> str | None:
        if self.binary() is None:
            return f"{self.settings.binary!r} was not found (apt-get install espeak-ng)"
        return None

    def synthesize(self, request: SynthesisRequest) -> Iterator[AudioChunk]:
        self.load()
        binary = self.binary()
        if binary is None:
            raise EngineUnavailableError(self.unavailable_reason() or "espeak-ng missing")
        # An explicit espeak-ng voice wins; else the request's language, in the built-in voice's variant.
        voice = str(request.parameters.get("voice") or "") or espeak_voice(
            request.language or "en", request.voice.preset(self.name)
        )
        wpm = max(80, min(450, round(BASE_WPM * request.speed)))
        pitch = int(request.parameters.get("pitch", 50))
        result = subprocess.run(
            [binary, "--stdout", "-v", voice, "-s", str(wpm), "-p", str(pitch), "--", request.text],
            capture_output=True,
            timeout=120,
            check=False,
        )
        if result.returncode != 0 or not result.stdout:
            raise RuntimeError(f"espeak-ng failed: {result.stderr.decode(errors='replace').strip()}")
        try:
            samples, rate = decode_audio(result.stdout, self.capabilities.sample_rate)
        except AudioDecodeError as exc:
            raise RuntimeError(f"espeak-ng produced unreadable audio: {exc}") from exc
        yield AudioChunk(samples, rate)
