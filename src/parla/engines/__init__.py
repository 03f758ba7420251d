"""Speech engines behind one seam (``Engine``), found through entry points."""

from parla.engines.base import (
    AudioChunk,
    Capabilities,
    Engine,
    EngineContext,
    EngineSettings,
    EngineStatus,
    EngineUnavailableError,
    Param,
    SynthesisRequest,
    VoiceRef,
)
from parla.engines.manager import ModelManager
from parla.engines.registry import EngineRegistry, UnknownEngineError
from parla.engines.runner import EngineRunner

__all__ = [
    "AudioChunk",
    "Capabilities",
    "Engine",
    "EngineContext",
    "EngineRegistry",
    "EngineRunner",
    "EngineSettings",
    "EngineStatus",
    "EngineUnavailableError",
    "ModelManager",
    "Param",
    "SynthesisRequest",
    "UnknownEngineError",
    "VoiceRef",
]
