"""The memory engines keep of what they learned per voice."""

from __future__ import annotations

from parla.engines.memory import VoiceMemory


def test_the_least_recently_used_voice_is_forgotten_first() -> None:
    memory: VoiceMemory[int] = VoiceMemory(2)
    memory.put("a", 1)
    memory.put("b", 2)
    assert memory.get("a") == 1  # a is now the most recently used
    memory.put("c", 3)
    assert (memory.get("a"), memory.get("b"), memory.get("c")) == (1, None, 3)
    memory.clear()
    assert memory.get("a") is None and memory.get("c") is None
