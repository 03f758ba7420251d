"""``parla bench speech``'s measuring parts that need no server (the whole run: tests/test_cli.py)."""

from __future__ import annotations

import os
import time

from parla.audio.encode import wav_header
from parla.bench.common import cpu_count, cpu_seconds, machine_busy_seconds
from parla.bench.speech import CLONED, Machine, _AudioStart, voice_kind


def test_cpu_seconds_count_this_process_and_the_machine() -> None:
    before, busy = cpu_seconds(os.getpid()), machine_busy_seconds()
    deadline = time.process_time() + 0.2
    while time.process_time() < deadline:
        pass
    assert cpu_seconds(os.getpid()) - before >= 0.1
    assert machine_busy_seconds() - busy >= 0.1


def test_first_audio_is_after_the_headers() -> None:
    wav = _AudioStart("wav")
    assert not wav.feed(wav_header(24_000, None))
    assert wav.feed(b"\x01\x00")
    mp3 = _AudioStart("mp3")
    tag = b"ID3\x04\x00\x00\x00\x00\x00\x05" + b"x" * 5  # a 5-byte tag (sizes are synchsafe)
    assert not mp3.feed(tag)
    assert mp3.feed(b"\xff\xfb\x90\x00")
    assert _AudioStart("pcm").feed(b"\x00")


def test_a_machine_is_busy_when_others_load_it_beyond_its_cpus() -> None:
    assert cpu_count() >= 1
    quiet = Machine(2, (1.5, 1.0, 1.0), load_end=(3.5, 2.0, 1.0), own_cpus=2.0)
    assert not quiet.busy  # the bench's own work is not a busy machine
    assert Machine(2, (2.5, 1.0, 1.0), load_end=(0.5, 1.0, 1.0)).busy
    assert Machine(2, (0.5, 1.0, 1.0), load_end=(4.5, 2.0, 1.0), own_cpus=1.0).busy


def test_voice_kinds_pick_their_targets() -> None:
    assert [voice_kind(v) for v in ("joe", "alloy", CLONED)] == ["plain", "preset", "cloned"]
