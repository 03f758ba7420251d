"""``parla bench``: speed, memory and quality, measured and printed as tables.

One module per benchmark: ``speech`` (the server against raw Piper), ``clone`` (cloning quality on a
set of speakers, by the protocol of ``docs/cloning-evaluation.md``) and ``characters`` (a
character's spoken answer) and ``engines`` (every engine here: load time, first audio, RTF, memory);
``common`` holds what they share (a server in a child process, its
memory).
"""

from __future__ import annotations

from parla.bench.characters import run_characters_bench
from parla.bench.clone import run_clone_bench
from parla.bench.engines import run_engines_bench
from parla.bench.speech import run_speech_bench

__all__ = ["run_characters_bench", "run_clone_bench", "run_engines_bench", "run_speech_bench"]
