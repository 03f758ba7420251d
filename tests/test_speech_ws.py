"""``/v1/audio/speech/ws`` (issue 21, part 5): text deltas in, each sentence's audio out as soon
as it is complete, in any voice; flush, cancel and end."""

from __future__ import annotations

import json
import time
from typing import Any

import numpy as np
import pytest
from websockets.sync.client import ClientConnection, connect

from parla.audio.encode import encode_audio
from parla.bench.common import PCM_RATE
from tests.conftest import Listener, LiveServer, wer


def events_until(socket: ClientConnection, kind: str, timeout: float = 60) -> tuple[list[dict[str, Any]], bytes]:
    """JSON events and audio bytes received until an event of ``kind``."""
    events: list[dict[str, Any]] = []
    audio = bytearray()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        message = socket.recv(timeout=max(0.1, deadline - time.monotonic()))
        if isinstance(message, bytes):
            audio += message
            continue
        event = json.loads(message)
        events.append(event)
        if event["type"] == kind:
            return events, bytes(audio)
    raise AssertionError(f"no {kind!r} within {timeout} s: {events}")


def ws_url(server: LiveServer) -> str:
    return server.url.replace("http", "ws", 1) + "/v1/audio/speech/ws"


@pytest.mark.model
@pytest.mark.parametrize("voice", ["joe", "nova"])
def test_the_first_sentence_is_heard_before_the_last_token_is_sent(
    server: LiveServer, listener: Listener, voice: str
) -> None:
    first = "The kettle is boiling in the kitchen."
    second = "Please bring two cups to the garden."
    with connect(ws_url(server)) as socket:
        socket.send(json.dumps({"type": "config", "voice": voice, "response_format": "pcm", "seed": 2}))
        for token in first.split(" "):
            socket.send(json.dumps({"type": "text", "text": token + " "}))
        # The second sentence has not begun: the first one's audio must come all the same.
        events, audio = events_until(socket, "sentence.done")
        assert [e["type"] for e in events] == ["sentence.start", "sentence.done"]
        assert events[0]["text"] == first
        samples = np.frombuffer(audio, dtype="<i2").astype(np.float32) / np.float32(32768)
        assert wer(first, listener.transcribe(encode_audio(samples, PCM_RATE, "wav"))) < 0.3
        assert events[1]["duration_s"] == pytest.approx(len(samples) / PCM_RATE, abs=0.05)
        for token in second.split(" "):
            socket.send(json.dumps({"type": "text", "text": token + " "}))
        socket.send(json.dumps({"type": "end"}))
        events, audio = events_until(socket, "done")
        assert [e["type"] for e in events] == ["sentence.start", "sentence.done", "done"]
        samples = np.frombuffer(audio, dtype="<i2").astype(np.float32) / np.float32(32768)
        assert wer(second, listener.transcribe(encode_audio(samples, PCM_RATE, "wav"))) < 0.3


@pytest.mark.model
def test_flush_cancel_and_errors(server: LiveServer) -> None:
    with connect(ws_url(server)) as socket:
        socket.send(json.dumps({"type": "config", "speed": 9}))
        events, _ = events_until(socket, "error")
        assert events[-1]["status"] == 422 and "speed" in events[-1]["detail"]
        socket.send(json.dumps({"type": "text", "text": "No sentence end yet"}))
        socket.send(json.dumps({"type": "flush"}))
        events, audio = events_until(socket, "sentence.done")
        assert events[0]["text"] == "No sentence end yet" and len(audio) > 0
        long = " ".join(f"Sentence number {i} is here." for i in range(30))
        socket.send(json.dumps({"type": "text", "text": long}))
        events_until(socket, "sentence.start")
        socket.send(json.dumps({"type": "cancel"}))
        events, _ = events_until(socket, "cancelled")
        # Nothing of the cancelled text comes afterwards: the next sentence is the next one sent.
        socket.send(json.dumps({"type": "text", "text": "After the cancel."}))
        socket.send(json.dumps({"type": "end"}))
        events, _ = events_until(socket, "done")
        spoken = [e["text"] for e in events if e["type"] == "sentence.start"]
        assert spoken == ["After the cancel."], spoken
