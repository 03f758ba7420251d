"""What every heavy engine shares: a library in an environment of its own, weights on disk, torch.

A heavy engine (XTTS-v2, F5-TTS, Dia, Chatterbox, Qwen3-TTS, Higgs Audio v2) runs in the environment
``parla engines install NAME`` builds (``parla.engines.catalog``), as a worker that a gateway reaches
as a ``RemoteEngine``. Its module must import cleanly anywhere, so the libraries are imported in
``_load``. Each of them answers the same three questions the same way, and this base class is where
that is written once:

- is its library here? (``required_packages``, found without importing them: ``/health`` asks often);
- are its weights here? (``find_weights``: ``parla.engines.weights.locate``, which names what is
  missing where); ``_load`` takes them from ``located()``, which raises when they are not;
- where does its model run? (``torch_device``: the context's device, or the CPU, said in the log,
  when torch sees no GPU).

Unloading drops the model and what the engine learned of voices with it (``_memory``), then gives
the memory back (``gc.collect``, and the CUDA cache on a GPU), so ``/v1/models/unload`` frees it.
"""

from __future__ import annotations

import gc
import importlib.util
import logging
from typing import Any, ClassVar

from parla.engines.base import Engine, EngineContext, EngineSettings, EngineUnavailableError
from parla.engines.memory import VoiceMemory
from parla.engines.weights import FoundWeights, locate

log = logging.getLogger(__name__)


class HeavyEngine(Engine):
    """An engine whose library and weights are installed apart from Parla's own (module docstring)."""

    title: ClassVar[str]
    """How messages name the model (``XTTS-v2``)."""
    required_packages: ClassVar[tuple[tuple[str, str], ...]]
    """What ``_load`` imports: each module's import name and the package that provides it."""
    memory_size: ClassVar[int] = 32
    """Voices whose learned prompt or conditioning is kept in memory (``VoiceMemory``)."""

    def __init__(self, settings: EngineSettings | None = None, context: EngineContext | None = None) -> None:
        super().__init__(settings, context)
        self.device = self.context.device
        self._torch: Any = None
        self._model: Any = None
        self._memory: VoiceMemory[Any] = VoiceMemory(self.memory_size)
        """What the model learned per voice: it belongs to the model and goes with it at unload."""

    @property
    def install_hint(self) -> str:
        return (
            f"install its environment with `parla engines install {self.name}` "
            f"and serve it with `parla serve-engine {self.name}`"
        )

    @classmethod
    def missing_package(cls) -> str | None:
        """The first package ``_load`` needs that is not installed here, by its pip name."""
        for module, package in cls.required_packages:
            if importlib.util.find_spec(module) is None:
                return package
        return None

    def find_weights(self) -> FoundWeights:
        """Where this engine's weights are, or what is missing where; disk only, cheap."""
        return locate(self.name, self.context)

    def located(self) -> FoundWeights:
        """The weights ``_load`` reads. Raises ``EngineUnavailableError`` saying what is missing where."""
        found = self.find_weights()
        if not found.complete:
            raise EngineUnavailableError(f"engine {self.name!r} is unavailable: {found.reason}")
        return found

    def unavailable_reason(self) -> str | None:
        package = self.missing_package()
        if package is not None:
            return f"{package} is not installed in this environment: {self.title} runs in its own; {self.install_hint}"
        return self.find_weights().reason

    def torch_device(self, torch: Any) -> str:
        """The device the model goes to: the context's, or the CPU when torch sees no CUDA GPU there."""
        device = self.context.device
        if device.startswith("cuda") and not torch.cuda.is_available():
            log.warning("%s: %s was asked for but torch sees no CUDA GPU here; running on the CPU", self.name, device)
            return "cpu"
        return device

    def _unload(self) -> None:
        """Drop the model and what it learned of voices, and give the memory back. Engines that hold
        more of the model (a vocoder, a default voice) drop it first, then call this."""
        self._model = None
        self._memory.clear()
        gc.collect()
        if self._torch is not None and self.device.startswith("cuda"):
            self._torch.cuda.empty_cache()
