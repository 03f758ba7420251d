"""``RemoteEngine``: an engine whose work happens in a ``parla serve-engine`` worker.

The worker speaks the model microservice API plus two additions this engine uses:
``GET /v1/engine`` (the engine's name, capabilities and status) and
``POST /v1/text-to-speech/{voice_id}/stream``, which answers the engine's own audio chunks as
they are made, framed (see ``audio_frame``) so that the gateway sees exactly the chunks a local
engine would have yielded: the crossfades between pieces depend on where chunks end.

The gateway treats a remote engine like any other. Its availability is the worker's: a thread
asks ``/v1/engine`` every ``REFRESH_INTERVAL_S`` (from ``start()`` to ``close()``; the registry
starts it), so that reading the engine's status (/health, every request's check) never waits on the
network. A worker that is down makes the engine unavailable (requests then get a 503 naming the
engine), and the next answer, without a restart, available again. The worker's answer also carries
its engine's description, capabilities, device and voice presets, which this engine takes as its own.
"""

from __future__ import annotations

import logging
import struct
import threading
from collections.abc import Iterator, Mapping
from typing import Any
from urllib.parse import quote

import httpx
import numpy as np

from parla.engines.base import (
    AudioChunk,
    Capabilities,
    Engine,
    EngineUnavailableError,
    Param,
    SynthesisRequest,
)
from parla.settings import EngineSection

log = logging.getLogger(__name__)

REFRESH_INTERVAL_S = 2.0
"""How often the worker is asked how it is: how long a change (down, back, loaded) takes to show."""
PROBE_TIMEOUT = httpx.Timeout(2.0, connect=0.5)
"""A worker that takes longer than this to say how it is counts as down."""
FRAMES_MEDIA_TYPE = "application/x-parla-audio-frames"

_FRAME = struct.Struct("<II")
"""Frame header: sample rate, then the number of float32 samples that follow. A rate of 0 ends
the stream: with a count of 0 it is complete, otherwise that many bytes of UTF-8 say what failed."""
_TYPES: dict[str, type[Any]] = {"float": float, "int": int, "str": str, "bool": bool}

UNKNOWN_CAPABILITIES = Capabilities(sample_rate=24_000, languages=("*",), cloning=True, dialogue=True)
"""Stand-in until the worker has answered once. Permissive, so that a request for a worker that
is down meets the 503 saying so rather than a refusal based on guessed capabilities."""


def audio_frame(chunk: AudioChunk) -> bytes:
    samples = np.ascontiguousarray(chunk.samples, dtype="<f4")
    return _FRAME.pack(chunk.sample_rate, samples.size) + samples.tobytes()


def end_frame(error: str | None = None) -> bytes:
    message = (error or "").encode()
    return _FRAME.pack(0, len(message)) + message


class RemoteSynthesisError(RuntimeError):
    """The worker's engine failed while speaking (the worker itself is fine)."""


class FrameReader:
    """Turns the bytes of a stream, as they arrive in any pieces, back into the worker's chunks."""

    def __init__(self) -> None:
        self._buffer = bytearray()
        self.complete = False

    def feed(self, data: bytes) -> Iterator[AudioChunk]:
        self._buffer += data
        while not self.complete and len(self._buffer) >= _FRAME.size:
            rate, count = _FRAME.unpack_from(self._buffer)
            size = _FRAME.size + (count if rate == 0 else 4 * count)
            if len(self._buffer) < size:
                return
            payload = bytes(self._buffer[_FRAME.size : size])
            del self._buffer[:size]
            if rate == 0:
                if count:
                    raise RemoteSynthesisError(payload.decode(errors="replace"))
                self.complete = True
                return
            yield AudioChunk(np.frombuffer(payload, dtype="<f4").astype(np.float32), rate)


def capabilities_from(described: dict[str, Any]) -> Capabilities:
    """The inverse of ``Capabilities.describe``, for what a worker reports."""
    params = tuple(
        Param(
            name=str(p["name"]),
            type=_TYPES.get(str(p.get("type")), object),
            default=p.get("default"),
            minimum=p.get("minimum"),
            maximum=p.get("maximum"),
            description=str(p.get("description") or ""),
        )
        for p in described.get("parameters", [])
    )
    return Capabilities(
        sample_rate=int(described["sample_rate"]),
        languages=tuple(described.get("languages") or ("en",)),
        streaming=bool(described.get("streaming", True)),
        cloning=bool(described.get("cloning", False)),
        dialogue=bool(described.get("dialogue", False)),
        nonverbal=bool(described.get("nonverbal", False)),
        instructions=bool(described.get("instructions", False)),
        parameters=params,
        single_speaker=bool(described.get("single_speaker", True)),
        min_dialogue_turns=int(described.get("min_dialogue_turns", 1)),
        needs_transcript=bool(described.get("needs_transcript", False)),
    )


def _detail(response: httpx.Response) -> str:
    try:
        return str(response.json()["detail"])
    except (ValueError, KeyError, TypeError):
        return response.text[:500] or response.reason_phrase


class RemoteEngine(Engine):
    """An engine served by a worker at ``worker.url``, under the name the settings give it."""

    def __init__(self, name: str, worker: EngineSection) -> None:
        super().__init__()
        if not worker.url:
            raise ValueError(f"engine {name!r} has no worker URL (PARLA_ENGINES__{name.upper()}__URL)")
        self.name = name
        self.url = worker.url.rstrip("/")
        self.description = f"Engine served by the worker at {self.url}."
        self.capabilities = UNKNOWN_CAPABILITIES
        self.device = "remote"
        self._client = httpx.Client(base_url=self.url, timeout=httpx.Timeout(worker.timeout_s, connect=2.0))
        self._down: str | None = f"the worker at {self.url} has not been asked yet"
        self._worker_status: Mapping[str, Any] = {}
        self._stop = threading.Event()
        self._answered = threading.Event()
        self._thread: threading.Thread | None = None

    # -- the worker's state, kept fresh in the background -----------------------------------------

    def refresh(self) -> None:
        """Ask the worker how it is, once, and take its answer (blocking: the refresher thread's work)."""
        try:
            response = self._client.get("/v1/engine", timeout=PROBE_TIMEOUT)
            response.raise_for_status()
            info = response.json()
            capabilities = capabilities_from(info["capabilities"])
            status = info.get("status") or {}
            presets = info.get("voice_presets") or {}
        except (httpx.HTTPError, ValueError, KeyError, TypeError, AttributeError) as exc:
            self._down = f"the worker at {self.url} is not answering ({type(exc).__name__}: {exc})"
        else:
            described = info.get("description")
            self.description = f"{described} (worker at {self.url})" if described else self.description
            self.capabilities = capabilities
            self.device = str(status.get("device") or "remote")
            self.voice_presets = {str(voice): dict(preset) for voice, preset in presets.items()}
            self._worker_status, self._down = status, None
        finally:
            self._answered.set()

    def start(self) -> None:
        """Start asking the worker in the background (idempotent); the first question is asked at once."""
        if self._thread is None and not self._stop.is_set():
            self._thread = threading.Thread(target=self._refresh_loop, name=f"engine-{self.name}-refresh", daemon=True)
            self._thread.start()

    def wait_answered(self, timeout: float) -> bool:
        """Wait until the worker has been asked once (answered or not); ``False`` on timeout."""
        return self._answered.wait(timeout)

    def _refresh_loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.refresh()
            except Exception:  # never let the refresher die: the engine would look as it last did forever
                if self._stop.is_set():
                    return  # closed under the question (the client is gone): nothing is wrong
                log.exception("refreshing the state of engine %s failed", self.name)
            self._stop.wait(REFRESH_INTERVAL_S)

    def _mark_down(self, exc: Exception) -> None:
        self._down = f"the worker at {self.url} stopped answering ({type(exc).__name__}: {exc})"

    def unavailable_reason(self) -> str | None:
        if self._down:
            return self._down
        reason = self._worker_status.get("reason")
        return f"{reason} (on the worker at {self.url})" if reason else None

    @property
    def loaded(self) -> bool:
        return self._down is None and bool(self._worker_status.get("loaded"))

    def _post(self, path: str) -> None:
        try:
            response = self._client.post(path)
        except httpx.TransportError as exc:
            self._mark_down(exc)
            raise EngineUnavailableError(f"engine {self.name!r} is unavailable: {self._down}") from exc
        if response.status_code == 503:
            raise EngineUnavailableError(f"engine {self.name!r} is unavailable: {_detail(response)}")
        if response.is_error:
            raise RemoteSynthesisError(f"the worker at {self.url} answered {response.status_code}: {_detail(response)}")
        self.refresh()  # its state changed: show it now, not at the next refresh

    def load(self) -> None:
        self._post("/v1/load-model")

    def unload(self) -> None:
        self._post("/v1/unload-model")

    def close(self) -> None:
        """Stop asking the worker and let go of the connections; the worker's model stays as it is
        (other gateways may use it)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=3.0)  # a question in flight ends within PROBE_TIMEOUT
        self._client.close()

    # -- synthesis ------------------------------------------------------------------------------

    def synthesize(self, request: SynthesisRequest) -> Iterator[AudioChunk]:
        voice = request.voice
        voice_id = str(voice.samples[0][0]) if voice.samples else voice.name
        body = {
            "text": request.text,
            "voice": {
                "name": voice.name,
                "samples": [[str(path), transcript] for path, transcript in voice.samples],
                "presets": {engine: dict(preset) for engine, preset in voice.presets.items()},
                "language": voice.language,
                "key": voice.key,
            },
            "speed": request.speed,
            "seed": request.seed,
            "language": request.language,
            "instructions": request.instructions,
            "parameters": dict(request.parameters),
        }
        try:
            with self._client.stream("POST", f"/v1/text-to-speech/{quote(voice_id, safe='')}/stream", json=body) as r:
                if r.status_code != 200:
                    r.read()
                    if r.status_code == 503:
                        raise EngineUnavailableError(f"engine {self.name!r} is unavailable: {_detail(r)}")
                    raise RemoteSynthesisError(f"the worker at {self.url} answered {r.status_code}: {_detail(r)}")
                frames = FrameReader()
                for data in r.iter_bytes():
                    yield from frames.feed(data)
                if not frames.complete:
                    raise httpx.RemoteProtocolError("the stream ended before its last frame")
        except httpx.TransportError as exc:
            self._mark_down(exc)
            raise EngineUnavailableError(f"engine {self.name!r} is unavailable: {self._down}") from exc
