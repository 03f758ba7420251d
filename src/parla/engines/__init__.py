"""Speech engines behind one seam (``Engine``), found through entry points."""

from parla.engines.base import (
    AudioChunk,
    Capabilities,
    Engine,
    EngineStatus,
    EngineUnavailableError,
    Param,
    SynthesisRequest,
    VoiceRef,
)
from parla.engines.registry import EngineRegistry, UnknownEngineError
from parla.engines.runner import EngineRunner

__all__ = [
    "AudioChunk",
    "Capabilities",
    "Engine",
    "EngineRegistry",
    "EngineRunner",
    "EngineStatus",
    "EngineUnavailableError",
    "Param",
    "SynthesisRequest",
    "UnknownEngineError",
    "VoiceRef",
]
