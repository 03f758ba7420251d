"""``RemoteEngine``: an engine whose work happens in another process, over HTTP.

Two kinds of server can stand behind ``PARLA_ENGINES__<NAME>__URL``, and the engine finds out which
it is talking to (``RemoteEngine.kind``):

- a **Parla worker** (``parla serve-engine NAME``), which answers ``GET /v1/engine`` (the engine's
  name, capabilities, status, voice presets and own voices) and ``POST /v1/text-to-speech/{voice_id}/stream``:
  the engine's own audio chunks as they are made, framed (see ``audio_frame``), so that the gateway
  sees exactly the chunks a local engine would have yielded (the crossfades between pieces depend on
  where chunks end). The engine's own voices (Kokoro's styles) are listed from ``/v1/engine`` and
  resolved by the worker (``GET /v1/engine/voices/{name}``), blends included; ``prepare_voice`` is
  forwarded (``POST /v1/voices/prepare``), so a cloning worker learns a voice before its first request;
- a **plain model microservice**, an existing service that speaks the model microservice API alone
  (``/v1/engine`` is a 404, ``GET /health`` answers): ``POST /v1/text-to-speech/{voice_id}`` with a
  reference audio file's path as ``voice_id`` and an ``output_filepath`` that it writes, both on
  storage that Parla and the service share; ``/v1/load-model``, ``/v1/unload-model``, ``/health``
  (``model_loaded``, ``device``) and ``/`` (what it is). Parla copies the voice's reference audio
  into the shared directory under a content-hash name, asks the service for one piece of text at a
  time (the gateway splits by sentence, so audio still streams sentence by sentence), reads the file
  it wrote and deletes it. What such a service can do is not said by it, so its capabilities are
  conservative defaults that the engine's section may override (``ServiceSettings``).

The gateway treats a remote engine like any other. Its availability is the remote server's: a
thread asks it every ``REFRESH_INTERVAL_S`` (from ``start()`` to ``close()``; the registry starts
it), so that reading the engine's status (/health, every request's check) never waits on the
network. A server that is down makes the engine unavailable (requests then get a 503 naming the
engine), and the next answer, without a restart, available again; after a failure the kind is
detected afresh, so a URL whose server changed kind is followed.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import struct
import threading
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import replace
from pathlib import Path, PurePosixPath
from typing import Any, Literal
from urllib.parse import quote

import httpx
import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from parla.audio.decode import AudioDecodeError, decode_audio
from parla.engines.base import (
    DOCUMENTED_PARAMETERS,
    AudioChunk,
    Capabilities,
    Engine,
    EngineContext,
    EngineUnavailableError,
    EngineVoice,
    Param,
    SynthesisRequest,
    VoiceRef,
)
from parla.errors import InvalidInputError, UpstreamError
from parla.settings import EngineSection

log = logging.getLogger(__name__)

REFRESH_INTERVAL_S = 2.0
"""How often the remote server is asked how it is: how long a change (down, back, loaded) takes to show."""
PROBE_TIMEOUT = httpx.Timeout(2.0, connect=0.5)
"""A server that takes longer than this to say how it is counts as down."""
FRAMES_MEDIA_TYPE = "application/x-parla-audio-frames"

_FRAME = struct.Struct("<II")
"""Frame header: sample rate, then the number of float32 samples that follow. A rate of 0 ends
the stream: with a count of 0 it is complete, otherwise that many bytes of UTF-8 say what failed."""
_TYPES: dict[str, type[Any]] = {"float": float, "int": int, "str": str, "bool": bool}
_NOT_THERE = frozenset({404, 405})
"""What a server answers for a path it does not serve."""

UNKNOWN_CAPABILITIES = Capabilities(sample_rate=24_000, languages=("*",), cloning=True, dialogue=True)
"""Stand-in until the server has answered once. Permissive, so that a request for a server that
is down meets the 503 saying so rather than a refusal based on guessed capabilities."""
DEFAULT_SERVICE_SAMPLE_RATE = 24_000
"""The sample rate a plain model microservice is said to have until it has written a file (the
audio itself always carries its true rate), unless its section's ``sample_rate`` says otherwise."""

_VOICE_WORD = re.compile(r"[A-Za-z0-9_.-]+")
"""The words of a voice name (``jf_alpha(0.3)+jm_kumo(0.7)``: ``jf_alpha``, ``0.3``...): a name that has
none of a worker's voices among them is never asked of the worker."""
Kind = Literal["worker", "service"]
"""What stands behind a remote engine's URL: a Parla worker, or a plain model microservice."""
_KIND_WORDS: dict[Kind | None, str] = {"worker": "worker", "service": "model microservice", None: "server"}


def audio_frame(chunk: AudioChunk) -> bytes:
    samples = np.ascontiguousarray(chunk.samples, dtype="<f4")
    return _FRAME.pack(chunk.sample_rate, samples.size) + samples.tobytes()


def end_frame(error: str | None = None) -> bytes:
    message = (error or "").encode()
    return _FRAME.pack(0, len(message)) + message


class RemoteSynthesisError(UpstreamError):
    """The remote engine failed while speaking, or answered with an error (the server itself is
    up): a 502 carrying the server's own words."""


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


def quote_path(path: str) -> str:
    """A voice id (a path, a name) as one URL path segment, as the model microservice API takes it."""
    return quote(path, safe="")


def voices_from(described: Any) -> tuple[EngineVoice, ...]:
    """The inverse of ``EngineVoice.describe``, for the ``voices`` a worker lists (none when it lists
    none: a worker older than the field; entries without a name are skipped)."""
    if not isinstance(described, list):
        return ()
    return tuple(
        EngineVoice(
            name=str(v["name"]),
            description=str(v.get("description") or ""),
            gender=str(v.get("gender") or "neutral"),
            language=str(v.get("language") or "en"),
        )
        for v in described
        if isinstance(v, dict) and v.get("name")
    )


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
    limit = described.get("max_script_bytes")
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
        scripted_dialogue=bool(described.get("scripted_dialogue", False)),
        # Absent from an older worker's answer: no limit known, as before.
        max_script_bytes=None if limit is None else int(limit),
        phonemes=bool(described.get("phonemes", False)),
        blending=bool(described.get("blending", False)),
        word_timing=bool(described.get("word_timing", False)),
        seed_varies=bool(described.get("seed_varies", False)),
    )


def _detail(response: httpx.Response) -> str:
    """What a server said about its error: FastAPI's ``detail``, or a ``message`` or ``error``."""
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict):
        for key in ("detail", "message", "error"):
            if body.get(key):
                return str(body[key])
    return response.text[:500] or response.reason_phrase


class ServiceSettings(BaseModel):
    """A remote engine's own fields, from the rest of its section (``PARLA_ENGINES__<NAME>__<FIELD>``),
    for a plain model microservice (a Parla worker says all this itself). Unknown fields are logged
    and ignored: in the testing mode, the mock's section keeps the mock's own settings."""

    model_config = ConfigDict(extra="allow")

    sample_rate: int | None = Field(default=None, gt=0)
    """The service's sample rate, as clients are told; unset: learned from the first file it writes
    (24000 until then). The audio itself always goes on at the rate of the file."""
    shared_dir: Path | None = None
    """Where Parla puts the copies of reference audio and where the service writes its files: a
    directory on storage that the service reads and writes too. Default: ``<data_dir>/shared/<name>``."""
    service_shared_dir: str | None = None
    """The same directory as the service names it, when it is mounted elsewhere on the service's
    side (a container: ``/shared``); default: the same path as ``shared_dir``."""
    default_voice: Path | None = None
    """A reference audio file for voices that have no samples (the built-in ``alloy``...). Unset,
    such voices are refused: the service speaks in the voice of a file."""
    dialogue: bool = True
    """Said to clients; Parla speaks a dialogue turn by turn through text-to-speech either way."""
    single_speaker: bool = True
    """False for a service that makes dialogue only: requests for one speaker are then refused."""

    @field_validator("shared_dir", "service_shared_dir", "default_voice", "sample_rate", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: Any) -> Any:
        return None if isinstance(value, str) and not value.strip() else value


class RemoteEngine(Engine):
    """An engine served at ``worker.url`` (a Parla worker or a plain model microservice), under the
    name the settings give it. ``context``: the server's data dir, under which a plain service's
    shared directory is by default."""

    def __init__(self, name: str, worker: EngineSection, *, context: EngineContext | None = None) -> None:
        super().__init__(context=context)
        if not worker.url:
            raise ValueError(f"engine {name!r} has no worker URL (PARLA_ENGINES__{name.upper()}__URL)")
        self.name = name
        self.url = worker.url.rstrip("/")
        self.description = f"Engine served by {self.url}."
        self.capabilities = UNKNOWN_CAPABILITIES
        self.device = "remote"
        self.kind: Kind | None = None
        """What answered at the URL: ``worker``, ``service``, or ``None`` until something has."""
        self._client = httpx.Client(base_url=self.url, timeout=httpx.Timeout(worker.timeout_s, connect=2.0))
        self._down: str | None = f"the server at {self.url} has not been asked yet"
        self._status: Mapping[str, Any] = {}
        """The server's word on its engine: ``loaded``, ``device``, ``reason`` (why it cannot run)."""
        self._stop = threading.Event()
        self._answered = threading.Event()
        self._thread: threading.Thread | None = None
        self._misconfigured: str | None = None
        variable = f"PARLA_ENGINES__{name.upper()}__"
        fields = worker.engine_fields()
        try:
            self.service_settings = ServiceSettings.model_validate(fields)
        except ValidationError as exc:
            # The engine is unavailable, saying why; the fields that are right still count (shared_dir...).
            wrong = {str(e["loc"][0]) for e in exc.errors() if e["loc"]}
            self.service_settings = ServiceSettings.model_validate({k: v for k, v in fields.items() if k not in wrong})
            self._misconfigured = "; ".join(
                f"{variable}{'__'.join(map(str, e['loc'])).upper()}: {e['msg']}" for e in exc.errors()
            )
        unknown = sorted(self.service_settings.model_extra or {})
        if unknown:
            log.warning(
                "engine %s is remote: %s ignored (a remote engine's own settings: %s)",
                name,
                ", ".join(variable + field.upper() for field in unknown),
                ", ".join(ServiceSettings.model_fields),
            )
        shared = self.service_settings.shared_dir or self.context.data_dir / "shared" / name
        self.shared_dir = shared.expanduser().absolute()
        """Where a plain service's reference copies (``voices/``) and output files (``out/``) go."""
        self._learned_rate: int | None = None
        self._copies: dict[tuple[str, int, int], Path] = {}
        """Reference files already in the shared directory, by (source path, mtime, size)."""
        self._worker_engine = name
        """The name the worker's engine goes by there (presets on the wire are keyed by it), which
        may differ from ``name``, the gateway's."""
        self._voices: tuple[EngineVoice, ...] = ()
        """The worker's engine's own voices, as it last listed them."""
        self._voice_names: frozenset[str] = frozenset()
        """Their names, lowercase: what ``voice`` checks a name against before asking the worker."""

    # -- the remote server's state, kept fresh in the background ----------------------------------

    def _what(self) -> str:
        return f"the {_KIND_WORDS[self.kind]} at {self.url}"

    def refresh(self) -> None:
        """Ask the server how it is, once, and take its answer (blocking: the refresher thread's work).
        Which kind of server it is, is detected here: a worker answers ``/v1/engine``; a plain model
        microservice does not, but answers ``/health``."""
        try:
            self._down = self._ask()
        except (httpx.HTTPError, ValueError, KeyError, TypeError, AttributeError) as exc:
            self._down = f"{self._what()} is not answering ({type(exc).__name__}: {exc})"
        finally:
            self._answered.set()

    def _ask(self) -> str | None:
        """The server's answer taken; ``None``, or why it cannot be used although it answered."""
        if self.kind == "service" and self._down is None:
            return self._take_health(self._client.get("/health", timeout=PROBE_TIMEOUT))
        response = self._client.get("/v1/engine", timeout=PROBE_TIMEOUT)
        if response.status_code not in _NOT_THERE:
            response.raise_for_status()
            self._take_worker(response.json())
            return None
        health = self._client.get("/health", timeout=PROBE_TIMEOUT)
        if health.status_code in _NOT_THERE:
            return (
                f"the server at {self.url} is neither a Parla worker (no /v1/engine) nor a model microservice "
                "(no /health)"
            )
        reason = self._take_health(health)
        self._take_service_info()
        return reason

    def _take_worker(self, info: dict[str, Any]) -> None:
        # Word times do not cross the wire (the worker sends audio only): the server aligns them.
        capabilities = replace(capabilities_from(info["capabilities"]), word_timing=False)
        status = info.get("status") or {}
        presets = {str(voice): dict(preset) for voice, preset in (info.get("voice_presets") or {}).items()}
        described = info.get("description")
        self.kind = "worker"
        self.description = (
            f"{described} (Parla worker at {self.url})"
            if described
            else f"Engine served by the Parla worker at {self.url}."
        )
        self.capabilities = capabilities
        self.device = str(status.get("device") or "remote")
        self.voice_presets = presets
        self._worker_engine = str(info.get("name") or self.name)
        voices = voices_from(info.get("voices"))
        self._voices = voices
        self._voice_names = frozenset(v.name.lower() for v in voices)
        self._status = status

    def _take_health(self, response: httpx.Response) -> str | None:
        """A plain service's ``/health``: loaded from ``model_loaded`` (loaded when it does not say),
        its ``device``; an error status, ``dependencies_available: false`` or a ``status`` of
        ``unhealthy`` makes it unavailable, with what it said."""
        if self.kind != "service":
            self.kind = "service"
            self.voice_presets = {}
            self._voices, self._voice_names = (), frozenset()
            self.description = f"Model microservice at {self.url} (voices are reference files on shared storage)."
        self.capabilities = self._service_capabilities()
        if response.is_error:
            self._status = {"loaded": False}
            return f"{self._what()} answered /health with {response.status_code}: {_detail(response)}"
        try:
            health = response.json()
        except ValueError:  # a bare "OK": healthy, and nothing more said
            health = {}
        if not isinstance(health, dict):
            health = {}
        self.device = str(health.get("device") or "remote")
        self._status = {"loaded": bool(health.get("model_loaded", True)), "device": self.device}
        if health.get("dependencies_available") is False:
            return f"{self._what()} says its dependencies are not available"
        if str(health.get("status", "")).lower() in {"unhealthy", "error"}:
            return f"{self._what()} says it is {health['status']}"
        return None

    def _take_service_info(self) -> None:
        """What the service says it is (``GET /``: ``message``, ``model``), for the description."""
        try:
            response = self._client.get("/", timeout=PROBE_TIMEOUT)
            info = response.json() if response.is_success else {}
        except (httpx.HTTPError, ValueError):
            info = {}
        if not isinstance(info, dict):
            return
        said = [str(info[key]) for key in ("message", "model") if info.get(key)]
        what = ", ".join(dict.fromkeys(said)) or "Speech model"
        self.description = f"{what} (model microservice at {self.url}; voices are reference files on shared storage)"

    def _service_capabilities(self) -> Capabilities:
        """What a plain service is taken to do: it clones (its voices are reference files), speaks
        any language it is asked to, takes the documented sampling knobs (passed on when given), and
        its sample rate is the setting's or the last file's."""
        own = self.service_settings
        return Capabilities(
            sample_rate=own.sample_rate or self._learned_rate or DEFAULT_SERVICE_SAMPLE_RATE,
            languages=("*",),
            streaming=True,  # by sentence: the gateway asks for one piece at a time
            cloning=True,
            dialogue=own.dialogue,
            single_speaker=own.single_speaker,
            parameters=DOCUMENTED_PARAMETERS,
        )

    def start(self) -> None:
        """Start asking the server in the background (idempotent); the first question is asked at once."""
        if self._thread is None and not self._stop.is_set():
            self._thread = threading.Thread(target=self._refresh_loop, name=f"engine-{self.name}-refresh", daemon=True)
            self._thread.start()

    def wait_answered(self, timeout: float) -> bool:
        """Wait until the server has been asked once (answered or not); ``False`` on timeout."""
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
        self._down = f"{self._what()} stopped answering ({type(exc).__name__}: {exc})"

    def _unavailable(self, exc: Exception) -> EngineUnavailableError:
        self._mark_down(exc)
        return EngineUnavailableError(f"engine {self.name!r} is unavailable: {self._down}")

    def unavailable_reason(self) -> str | None:
        if self._misconfigured:
            return self._misconfigured
        if self._down:
            return self._down
        reason = self._status.get("reason")
        return f"{reason} (on {self._what()})" if reason else None

    @property
    def loaded(self) -> bool:
        return self._down is None and bool(self._status.get("loaded"))

    def _refuse(self, response: httpx.Response) -> None:
        """Raise what an error answer means: a 503 is the engine's unavailability; a Parla worker's
        400, 413 or 422 is the client's request refused there (a language, a voice the worker's
        engine cannot speak), said to the client as a 400 with the worker's words; anything else a 502."""
        if response.status_code == 503:
            raise EngineUnavailableError(
                f"engine {self.name!r} is unavailable: {self._what()} answered 503: {_detail(response)}"
            )
        if self.kind == "worker" and response.status_code in (400, 413, 422):
            raise InvalidInputError(f"engine {self.name!r} refused the request: {_detail(response)}")
        if response.is_error:
            raise self._failed(f"{self._what()} answered {response.status_code}: {_detail(response)}")

    def _failed(self, what: str) -> RemoteSynthesisError:
        return RemoteSynthesisError(f"engine {self.name!r} failed: {what}")

    def _post(self, path: str) -> None:
        try:
            response = self._client.post(path)
        except httpx.TransportError as exc:
            raise self._unavailable(exc) from exc
        self._refuse(response)
        self.refresh()  # its state changed: show it now, not at the next refresh

    def load(self) -> None:
        self._post("/v1/load-model")

    def unload(self) -> None:
        self._post("/v1/unload-model")

    def close(self) -> None:
        """Stop asking the server and let go of the connections; its model stays as it is (other
        gateways may use it)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=3.0)  # a question in flight ends within PROBE_TIMEOUT
        self._client.close()

    # -- the worker's engine's own voices -----------------------------------------------------------

    def voices(self) -> Sequence[EngineVoice]:
        """The worker's engine's own voices (Kokoro's styles) as it last listed them: kept while it
        is down, so that a request naming one meets the 503 saying so, not "unknown voice"."""
        return self._voices

    def voice(self, name: str) -> VoiceRef | None:
        """One of the worker's engine's own voices, or a blend of them, as the worker resolves it
        (``GET /v1/engine/voices/{name}``), for this engine. Only a name with one of its voices among
        its words is asked (within ``PROBE_TIMEOUT``): every other name the library does not know is
        answered here, with no network I/O. Raises ``InvalidInputError`` with the worker's words for
        a name it refuses (a blend naming a voice it does not have), and ``EngineUnavailableError``
        when the worker cannot say (down, or failing): a 503 saying so, not "unknown voice"."""
        if self.kind != "worker" or not self._voice_names:
            return None
        if not any(word.lower() in self._voice_names for word in _VOICE_WORD.findall(name)):
            return None
        if self._down is not None:
            raise EngineUnavailableError(f"engine {self.name!r} is unavailable: {self._down}")
        try:
            response = self._client.get(f"/v1/engine/voices/{quote_path(name)}", timeout=PROBE_TIMEOUT)
        except httpx.TransportError as exc:
            raise self._unavailable(exc) from exc
        if response.status_code == 404:
            return None
        if response.status_code in (400, 413, 422):
            raise InvalidInputError(_detail(response), param="voice")
        if response.is_error:
            raise EngineUnavailableError(
                f"engine {self.name!r} is unavailable: {self._what()} could not look up voice {name!r} "
                f"({response.status_code}: {_detail(response)})"
            )
        return self._voice_from(response.json())

    def _voice_from(self, found: dict[str, Any]) -> VoiceRef:
        """The worker's ``VoiceRef``, for this engine: its presets for the worker's engine become
        this engine's (the gateway's name for it may differ from the worker's)."""
        presets = {
            self.name if engine == self._worker_engine else str(engine): dict(preset)
            for engine, preset in (found.get("presets") or {}).items()
        }
        return VoiceRef(
            name=str(found["name"]),
            id=str(found["id"]) if found.get("id") is not None else None,
            presets=presets,
            language=str(found.get("language") or "en"),
            key=str(found.get("key") or ""),
            engine=self.name,
        )

    def prepare_voice(self, voice: VoiceRef) -> None:
        """Have the worker's engine compute a voice's conditioning now (``POST /v1/voices/prepare``),
        so the first request in it does not wait. A plain model microservice has no such thing, and
        a voice without samples has nothing to learn."""
        if self.kind != "worker" or not voice.samples:
            return
        try:
            response = self._client.post("/v1/voices/prepare", json=self._voice_body(voice))
        except httpx.TransportError as exc:
            raise self._unavailable(exc) from exc
        self._refuse(response)

    # -- synthesis ------------------------------------------------------------------------------

    def synthesize(self, request: SynthesisRequest) -> Iterator[AudioChunk]:
        if self.kind == "service":
            return self._speak_to_file(request)
        return self._stream_from_worker(request)

    def _voice_body(self, voice: VoiceRef) -> dict[str, Any]:
        """``voice`` as a worker takes it (its ``VoiceSpec``). This engine's presets go under the
        worker's name for its engine, which is what the worker looks them up by."""
        presets = {
            engine: dict(preset)
            for engine, preset in voice.presets.items()
            if engine not in (self.name, self._worker_engine)
        }
        if self.name in voice.presets:
            presets[self._worker_engine] = dict(voice.presets[self.name])
        return {
            "name": voice.name,
            "samples": [[str(path), transcript] for path, transcript in voice.samples],
            "presets": presets,
            "language": voice.language,
            "sample_languages": list(voice.sample_languages),
            "key": voice.key,
        }

    def _stream_from_worker(self, request: SynthesisRequest) -> Iterator[AudioChunk]:
        voice = request.voice
        voice_id = str(voice.samples[0][0]) if voice.samples else voice.name
        body = {
            "text": request.text,
            "voice": self._voice_body(voice),
            "speed": request.speed,
            "seed": request.seed,
            "language": request.language,
            "instructions": request.instructions,
            "parameters": dict(request.parameters),
        }
        try:
            with self._client.stream("POST", f"/v1/text-to-speech/{quote_path(voice_id)}/stream", json=body) as r:
                if r.status_code != 200:
                    r.read()
                    self._refuse(r)
                frames = FrameReader()
                for data in r.iter_bytes():
                    yield from frames.feed(data)
                if not frames.complete:
                    raise httpx.RemoteProtocolError("the stream ended before its last frame")
        except httpx.TransportError as exc:
            raise self._unavailable(exc) from exc

    # -- a plain model microservice: files on shared storage ---------------------------------------

    def _speak_to_file(self, request: SynthesisRequest) -> Iterator[AudioChunk]:
        """One piece of text through ``POST /v1/text-to-speech/{voice_id}``: the voice's reference
        file copied into the shared directory, the service's file read back and deleted."""
        if self._misconfigured:
            raise EngineUnavailableError(f"engine {self.name!r} is unavailable: {self._misconfigured}")
        if self._status.get("loaded") is False:
            self.load()  # unloaded (by Parla or by someone else): the service's model comes back first
        reference, transcript = self._reference(request.voice)
        output = self._shared_path("out", f"{uuid.uuid4().hex}.wav")
        body = {
            "text": request.text,
            "output_filepath": self._as_service_path(output),
            "parameters": self._service_parameters(request, transcript),
        }
        try:
            try:
                response = self._client.post(
                    f"/v1/text-to-speech/{quote_path(self._as_service_path(reference))}", json=body
                )
            except httpx.TransportError as exc:
                raise self._unavailable(exc) from exc
            self._refuse(response)
            samples, rate = self._read_output(output, response)
        finally:
            output.unlink(missing_ok=True)
        if rate != self._learned_rate:
            self._learned_rate = rate
            self.capabilities = self._service_capabilities()
        yield AudioChunk(samples, rate)

    def _reference(self, voice: VoiceRef) -> tuple[Path, str | None]:
        """The voice's reference audio as a file in the shared directory, and what it says."""
        if voice.samples:
            source, transcript = voice.samples[0]
        elif self.service_settings.default_voice is not None:
            source, transcript = self.service_settings.default_voice.expanduser(), None
            if not source.is_file():
                raise EngineUnavailableError(
                    f"engine {self.name!r} is unavailable: its default voice file {str(source)!r} "
                    f"(PARLA_ENGINES__{self.name.upper()}__DEFAULT_VOICE) is not a file"
                )
        else:
            raise InvalidInputError(
                f"engine {self.name!r} is a model microservice, which speaks in the voice of a reference recording, "
                f"and voice {voice.name!r} has none: use a voice with samples (a library voice, a voice file), "
                f"or set PARLA_ENGINES__{self.name.upper()}__DEFAULT_VOICE to a recording for voices without samples",
                param="voice",
            )
        return self._shared_copy(source), transcript

    def _shared_copy(self, source: Path) -> Path:
        """``source``'s bytes in the shared directory, named by their hash (written once, whole)."""
        stat = source.stat()
        key = (str(source), stat.st_mtime_ns, stat.st_size)
        known = self._copies.get(key)
        if known is not None and known.is_file():
            return known
        data = source.read_bytes()
        copy = self._shared_path("voices", f"{hashlib.sha256(data).hexdigest()[:32]}{source.suffix.lower() or '.wav'}")
        if not copy.is_file():
            partial = copy.with_name(f".{copy.name}.{uuid.uuid4().hex}.part")
            try:
                partial.write_bytes(data)
                os.replace(partial, copy)
            except OSError as exc:
                partial.unlink(missing_ok=True)
                raise self._no_shared_dir(exc) from exc
        if len(self._copies) >= 1024:  # a bound, not an LRU: a copy found again costs a hash
            self._copies.clear()
        self._copies[key] = copy
        return copy

    def _shared_path(self, folder: str, name: str) -> Path:
        directory = self.shared_dir / folder
        try:
            directory.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise self._no_shared_dir(exc) from exc
        return directory / name

    def _no_shared_dir(self, exc: OSError) -> EngineUnavailableError:
        return EngineUnavailableError(
            f"engine {self.name!r} is unavailable: its shared directory {self.shared_dir} cannot be written "
            f"({exc.strerror or exc}); set PARLA_ENGINES__{self.name.upper()}__SHARED_DIR to storage that Parla and "
            "the service share"
        )

    def _as_service_path(self, path: Path) -> str:
        """``path`` (in the shared directory) as the service names it."""
        mounted = self.service_settings.service_shared_dir
        if not mounted:
            return str(path)
        return str(PurePosixPath(mounted) / path.relative_to(self.shared_dir).as_posix())

    @staticmethod
    def _service_parameters(request: SynthesisRequest, transcript: str | None) -> dict[str, Any]:
        """The model microservice API's ``parameters``: the request's controls, what the reference
        recording says, and the engine parameters the client gave."""
        parameters = {name: value for name, value in request.parameters.items() if value is not None}
        controls = {
            "seed": request.seed,
            "speed": request.speed,
            "language": request.language,
            "instructions": request.instructions,
            "transcription": transcript,
        }
        parameters.update((name, value) for name, value in controls.items() if value is not None)
        return parameters

    def _read_output(self, output: Path, response: httpx.Response) -> tuple[npt.NDArray[np.float32], int]:
        """The audio the service wrote to ``output``, decoded; a 502 saying what went wrong otherwise."""
        try:
            answer = response.json()
        except ValueError:
            answer = {}
        if isinstance(answer, dict) and answer.get("status") not in (None, "success"):
            said = answer.get("message") or answer.get("detail") or answer.get("status")
            raise self._failed(f"{self._what()} did not make the audio: {said}")
        if not output.is_file():
            written = answer.get("output_filepath") if isinstance(answer, dict) else None
            raise self._failed(
                f"{self._what()} answered success, but no file is at {output}"
                + (f" (it says it wrote {written})" if written else "")
                + f": it must write to storage shared with Parla; set PARLA_ENGINES__{self.name.upper()}__SHARED_DIR "
                "to that storage, and ..._SERVICE_SHARED_DIR to where the service sees it if that differs"
            )
        try:
            return decode_audio(output)
        except AudioDecodeError as exc:
            raise self._failed(f"{self._what()} wrote a file that is not audio Parla can read: {exc}") from None
