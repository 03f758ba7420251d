"""The OpenAI audio API: ``/v1/audio/speech``, ``/v1/models``, ``/v1/audio/voices``.

Clients built for OpenAI (the official SDK, SillyTavern, Open WebUI, Home Assistant) work
unchanged. Audio always streams: bytes leave as soon as the first piece is synthesised.
"""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncGenerator
from contextlib import aclosing
from typing import Any, Literal

from fastapi import APIRouter
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import Field

from parla.api.auth import SPEAK
from parla.api.deps import EnginesDep, SettingsDep, SpeechDep, VoicesDep
from parla.api.streams import started
from parla.audio.encode import CONTENT_TYPES
from parla.engines.base import TimedWord
from parla.errors import NotFoundError
from parla.offload import offload
from parla.services.speech import OPENAI_MODELS, Rendered, SpeechOptions, SpeechPlan, SpeechService, ignored_header

router = APIRouter(tags=["OpenAI"])


class SpeechRequest(SpeechOptions):
    """OpenAI's speech request (Parla's options, with OpenAI's default model and stream formats)."""

    model: str | None = Field("tts-1", description="tts-1, tts-1-hd, gpt-4o-mini-tts or an engine name.")
    stream_format: Literal["audio", "sse"] = "audio"


def _sse(event: dict[str, Any]) -> bytes:
    return f"data: {json.dumps(event)}\n\n".encode()


async def _sse_stream(speech: SpeechService, plan: SpeechPlan) -> AsyncGenerator[bytes, None]:
    """OpenAI's speech events; with timestamps, ``speech.audio.words`` events between them as the
    words are timed (each word once, on the whole audio's clock)."""
    total = 0
    async with aclosing(speech.stream_timed(plan)) as audio:
        async for data in audio:
            if isinstance(data, bytes):
                total += len(data)
                yield _sse({"type": "speech.audio.delta", "audio": base64.b64encode(data).decode()})
            else:
                yield _sse({"type": "speech.audio.words", "words": [w.describe() for w in data]})
    words = len(plan.text.split())
    yield _sse(
        {
            "type": "speech.audio.done",
            "usage": {"input_tokens": words, "output_tokens": total // 1000, "total_tokens": words + total // 1000},
        }
    )


@router.post("/v1/audio/speech", summary="Generate speech (OpenAI)", dependencies=[SPEAK], response_model=None)
async def create_speech(body: SpeechRequest, speech: SpeechDep) -> StreamingResponse | JSONResponse:
    """The audio, streamed as it is made; with ``timestamps`` and no stream format, a JSON object with
    the whole audio (base64) and each word's start and end, as ``/dev/captioned_speech`` answers."""
    plan = await offload(speech.prepare, body, source="openai")
    headers = {"X-Generation-Id": plan.id, "X-Seed": str(plan.seed), **ignored_header(plan.ignored)}
    if body.timestamps and body.stream_format == "audio":
        return JSONResponse(_captioned(await speech.render(plan)), headers=headers)
    if body.stream_format == "sse":
        return StreamingResponse(
            await started(_sse_stream(speech, plan)), media_type="text/event-stream", headers=headers
        )
    headers["Content-Disposition"] = f'attachment; filename="speech.{body.response_format}"'
    return StreamingResponse(
        await started(speech.stream(plan)), media_type=CONTENT_TYPES[body.response_format], headers=headers
    )


def _captioned(rendered: Rendered) -> dict[str, Any]:
    return {
        "id": rendered.id,
        "audio": base64.b64encode(rendered.audio).decode(),
        "audio_format": CONTENT_TYPES[rendered.format],
        "timestamps": [w.describe() for w in rendered.words],
        "duration": round(rendered.duration, 3),
    }


class CaptionedSpeechRequest(SpeechRequest):
    """Kokoro-FastAPI's captioned speech request: OpenAI's, streamed by default, timed by default."""

    stream: bool = True
    return_timestamps: bool = True


@router.post("/dev/captioned_speech", summary="Speech with word timestamps (Kokoro-FastAPI)", dependencies=[SPEAK])
async def captioned_speech(body: CaptionedSpeechRequest, speech: SpeechDep) -> Response:
    """Kokoro-FastAPI's form: streamed, one JSON object per line, each with a stretch of the encoded
    audio (base64) and the words timed since the line before; else one such object for the whole."""
    options = body.model_copy(update={"timestamps": body.return_timestamps})
    plan = await offload(speech.prepare, options, source="openai")
    headers = {"X-Generation-Id": plan.id, "X-Seed": str(plan.seed), **ignored_header(plan.ignored)}
    if not body.stream:
        return JSONResponse(_captioned(await speech.render(plan)), headers=headers)
    return StreamingResponse(
        await started(_captioned_lines(speech, plan)), media_type="application/x-ndjson", headers=headers
    )


async def _captioned_lines(speech: SpeechService, plan: SpeechPlan) -> AsyncGenerator[bytes, None]:
    audio_format = CONTENT_TYPES[plan.format]

    def line(audio: bytes, words: list[TimedWord]) -> bytes:
        item = {"audio": base64.b64encode(audio).decode(), "audio_format": audio_format}
        return (json.dumps({**item, "timestamps": [w.describe() for w in words]}) + "\n").encode()

    words: list[TimedWord] = []
    async with aclosing(speech.stream_timed(plan)) as parts:
        async for data in parts:
            if isinstance(data, bytes):
                yield line(data, words)
                words = []
            else:
                words.extend(data)
    if words:  # timed after the last audio (a piece Whisper aligned)
        yield line(b"", words)


def _model(model_id: str, **extra: Any) -> dict[str, Any]:
    return {"id": model_id, "object": "model", "created": 1_700_000_000, "owned_by": "parla", **extra}


@router.get("/v1/models", summary="List models (OpenAI)", dependencies=[SPEAK])
def list_models(settings: SettingsDep, engines: EnginesDep) -> dict[str, Any]:
    """The OpenAI names of the default engine, then every engine with its capabilities and status."""
    # Plain ``def``, so FastAPI runs it on a thread: a local engine's status looks for its packages
    # and files (a remote engine's is refreshed in the background and reading it does no I/O).
    default = settings.default_engine
    data = [
        _model(m, engine=default, description=f"OpenAI name for the default engine ({default})") for m in OPENAI_MODELS
    ]
    for engine in engines:
        status = engine.status()
        data.append(
            _model(
                engine.name,
                engine=engine.name,
                description=engine.description,
                available=status.available,
                reason=status.reason,
                capabilities=engine.capabilities.describe(),
            )
        )
    return {"object": "list", "data": data}


@router.get("/v1/models/{model_id}", summary="One model (OpenAI)", dependencies=[SPEAK])
async def get_model(model_id: str, settings: SettingsDep, engines: EnginesDep) -> dict[str, Any]:
    for model in (await offload(list_models, settings, engines))["data"]:
        if model["id"] == model_id:
            return dict(model)
    raise NotFoundError(f"unknown model {model_id!r}", param="model")


@router.get("/v1/audio/voices", summary="List voices", dependencies=[SPEAK])
async def list_voices(library: VoicesDep) -> dict[str, Any]:
    voices = await offload(library.list_all)
    return {"object": "list", "voices": voices, "data": voices}
