"""The voice catalogue: built-in voices now, library voices (profiles with samples) later.

Built-in voices carry the OpenAI names so OpenAI clients work unchanged. Until the cloning engine
gives each its own timbre, they are distinct presets of the bundled Piper voice (pace and
variation) and distinct espeak-ng voices.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from parla.engines.base import VoiceRef
from parla.errors import InvalidInputError


@dataclass(frozen=True)
class BuiltinVoice:
    name: str
    description: str
    gender: str
    presets: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)

    def ref(self) -> VoiceRef:
        return VoiceRef(name=self.name, presets=self.presets)

    def describe(self) -> dict[str, Any]:
        return {
            "id": self.name,
            "name": self.name,
            "description": self.description,
            "gender": self.gender,
            "language": "en",
            "builtin": True,
        }


BUILTIN_VOICES: tuple[BuiltinVoice, ...] = (
    BuiltinVoice("joe", "The bundled Piper voice (US English, male), unmodified.", "male"),
    BuiltinVoice(
        "alloy",
        "Neutral and even.",
        "neutral",
        {"piper": {"noise_scale": 0.5, "noise_w_scale": 0.6}, "espeak": {"voice": "en-us+m3"}},
    ),
    BuiltinVoice(
        "echo",
        "Calm and unhurried.",
        "male",
        {
            "piper": {"length_scale": 1.12, "noise_scale": 0.4, "noise_w_scale": 0.5},
            "espeak": {"voice": "en-us+m1", "pitch": 40},
        },
    ),
    BuiltinVoice(
        "fable",
        "Expressive, a storyteller.",
        "male",
        {
            "piper": {"length_scale": 1.05, "noise_scale": 0.9, "noise_w_scale": 1.0},
            "espeak": {"voice": "en-gb+m2"},
        },
    ),
    BuiltinVoice(
        "nova",
        "Bright and brisk.",
        "female",
        {
            "piper": {"length_scale": 0.85, "noise_scale": 0.75, "noise_w_scale": 0.9},
            "espeak": {"voice": "en-us+f3", "pitch": 60},
        },
    ),
    BuiltinVoice(
        "onyx",
        "Deep and deliberate.",
        "male",
        {
            "piper": {"length_scale": 1.25, "noise_scale": 0.5, "noise_w_scale": 0.4},
            "espeak": {"voice": "en-us+m7", "pitch": 25},
        },
    ),
    BuiltinVoice(
        "shimmer",
        "Light and lively.",
        "female",
        {
            "piper": {"length_scale": 0.95, "noise_scale": 0.8, "noise_w_scale": 1.1},
            "espeak": {"voice": "en-us+f2", "pitch": 70},
        },
    ),
)

# OpenAI's newer voice names, so clients that send them get the closest built-in voice.
ALIASES = {
    "ash": "onyx",
    "ballad": "fable",
    "coral": "nova",
    "sage": "alloy",
    "verse": "echo",
    "marin": "shimmer",
    "cedar": "onyx",
}


class VoiceCatalog:
    def __init__(self) -> None:
        self._builtin = {v.name: v for v in BUILTIN_VOICES}

    def names(self) -> list[str]:
        return list(self._builtin)

    def list(self) -> list[dict[str, Any]]:
        return [v.describe() for v in self._builtin.values()]

    def resolve(self, name: str) -> VoiceRef:
        """A voice by name or id (case-insensitive for built-ins); ``InvalidInputError`` if unknown."""
        key = name.strip().lower()
        key = ALIASES.get(key, key)
        voice = self._builtin.get(key)
        if voice is None:
            raise InvalidInputError(f"unknown voice {name!r}; available: {', '.join(self.names())}", param="voice")
        return voice.ref()
