"""What an engine remembers per voice: its conditioning (a clone adaptation, XTTS latents, an F5
prompt), kept for the most recently used voices and shared by every engine that learns voices.

Engines compute conditioning on their runner thread, but ``prepare_voice`` and requests for other
voices may read the memory at the same time, so every access holds one lock.

And what an idle engine gives back: ``trim_heap`` (see ``Engine.release_memory``)."""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import threading
from collections import OrderedDict
from typing import Generic, TypeVar

T = TypeVar("T")


class VoiceMemory(Generic[T]):
    """A thread-safe map from a voice's key to what was learned from it, holding the ``size`` most
    recently used; the least recently used is forgotten first."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._items: OrderedDict[str, T] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: str) -> T | None:
        """What is remembered for ``key`` (now the most recently used), or ``None``."""
        with self._lock:
            item = self._items.get(key)
            if item is not None:
                self._items.move_to_end(key)
            return item

    def put(self, key: str, item: T) -> None:
        with self._lock:
            self._items[key] = item
            self._items.move_to_end(key)
            while len(self._items) > self.size:
                self._items.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._items.clear()


@functools.cache
def _malloc_trim() -> ctypes._NamedFuncPointer | None:
    """glibc's ``malloc_trim``, or ``None`` under another C library (musl, macOS)."""
    name = ctypes.util.find_library("c")
    try:
        return ctypes.CDLL(name).malloc_trim if name else None
    except (OSError, AttributeError):
        return None


def trim_heap() -> None:
    """Give the C heap's free pages back to the system. Freed buffers stay in the process otherwise
    (glibc returns only what lies at the top of its heaps), so a server that once converted a long
    text holds that memory, unused, until it exits."""
    trim = _malloc_trim()
    if trim is not None:
        trim(0)
