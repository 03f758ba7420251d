"""Speech recognition: OpenAI's ``/v1/audio/transcriptions`` and the voicebox API's ``/transcribe``."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Annotated, Any, Literal

from fastapi import APIRouter, File, Form, UploadFile
from fastapi.responses import PlainTextResponse, Response, StreamingResponse

from parla.api.auth import SPEAK
from parla.api.deps import SettingsDep, TranscriberDep
from parla.api.voices import read_upload
from parla.audio.decode import decode_upload
from parla.languages import language_code
from parla.offload import offload
from parla.services.transcription import RATE, SIZES, Segment, Transcriber, Transcript

router = APIRouter(tags=["Transcription"])
voicebox = APIRouter(tags=["voicebox API"])

MAX_TRANSCRIBE_SECONDS = 4 * 3600
"""Longest recording accepted for transcription."""

ResponseFormat = Literal["json", "text", "srt", "vtt", "verbose_json"]
Granularity = Literal["word", "segment"]


def _decode(data: bytes) -> Any:
    return decode_upload(data, RATE, max_seconds=MAX_TRANSCRIBE_SECONDS, param="file")[0]


def _timestamp(seconds: float, separator: str) -> str:
    ms = round(seconds * 1000)
    h, rest = divmod(ms, 3_600_000)
    m, rest = divmod(rest, 60_000)
    s, ms = divmod(rest, 1000)
    return f"{h:02d}:{m:02d}:{s:02d}{separator}{ms:03d}"


def to_srt(transcript: Transcript) -> str:
    blocks = [
        f"{i}\n{_timestamp(s.start, ',')} --> {_timestamp(s.end, ',')}\n{s.text}\n"
        for i, s in enumerate(transcript.segments, start=1)
    ]
    return "\n".join(blocks)


def to_vtt(transcript: Transcript) -> str:
    cues = [f"{_timestamp(s.start, '.')} --> {_timestamp(s.end, '.')}\n{s.text}\n" for s in transcript.segments]
    return "WEBVTT\n\n" + "\n".join(cues)


def to_verbose(transcript: Transcript, words: bool, segments: bool) -> dict[str, Any]:
    body: dict[str, Any] = {
        "task": "transcribe",
        "language": transcript.language,
        "duration": round(transcript.duration, 3),
        "text": transcript.text,
    }
    if segments:
        body["segments"] = [
            {
                "id": s.id,
                "seek": 0,
                "start": round(s.start, 3),
                "end": round(s.end, 3),
                "text": s.text,
                "tokens": [],
                "temperature": 0.0,
                "avg_logprob": s.avg_logprob,
                "compression_ratio": s.compression_ratio,
                "no_speech_prob": s.no_speech_prob,
            }
            for s in transcript.segments
        ]
    if words:
        body["words"] = [
            {"word": w.word.strip(), "start": round(w.start, 3), "end": round(w.end, 3)} for w in transcript.words
        ]
    return body


async def _stream_events(
    transcriber: Transcriber, samples: Any, language: str | None, prompt: str | None, size: str | None
) -> AsyncIterator[bytes]:
    """Server-sent events: a ``transcript.text.delta`` as each segment is recognised, with the
    fraction of the recording done, then ``transcript.text.done``: long recordings show progress."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[tuple[Segment, float] | None] = asyncio.Queue()

    def on_segment(segment: Segment, done: float) -> None:
        loop.call_soon_threadsafe(queue.put_nowait, (segment, done))

    job = asyncio.ensure_future(
        offload(transcriber.transcribe, samples, language=language, prompt=prompt, on_segment=on_segment, size=size)
    )
    job.add_done_callback(lambda _: queue.put_nowait(None))
    while (item := await queue.get()) is not None:
        segment, done = item
        yield _event({"type": "transcript.text.delta", "delta": segment.text + " ", "progress": round(done, 3)})
    try:
        transcript = job.result()
    except Exception as exc:  # the status line is long gone: report the failure as an event
        yield _event({"type": "error", "error": {"message": f"transcription failed: {exc}"}})
        return
    yield _event({"type": "transcript.text.done", "text": transcript.text, "duration": round(transcript.duration, 3)})


def _event(payload: dict[str, Any]) -> bytes:
    return f"data: {json.dumps(payload)}\n\n".encode()


@router.post("/v1/audio/transcriptions", summary="Transcribe audio (OpenAI)", dependencies=[SPEAK])
async def create_transcription(
    settings: SettingsDep,
    transcriber: TranscriberDep,
    file: Annotated[UploadFile, File(description="The recording, any format FFmpeg reads.")],
    model: Annotated[str, Form()] = "whisper-1",
    language: Annotated[str | None, Form()] = None,
    prompt: Annotated[str | None, Form()] = None,
    response_format: Annotated[ResponseFormat, Form()] = "json",
    temperature: Annotated[float, Form(ge=0.0, le=1.0)] = 0.0,
    timestamp_granularities: Annotated[
        list[Literal["word", "segment"]] | None, Form(alias="timestamp_granularities[]")
    ] = None,
    stream: Annotated[bool, Form()] = False,
) -> Response:
    _ = temperature  # decoding is beam search, not sampled
    spoken = language_code(language) if language else None
    # "whisper-1" (OpenAI's name) lets the server choose; a model installed here by name is that model.
    size = model if model.removeprefix("whisper-") in SIZES else None
    data = await read_upload(file, settings.max_upload_bytes)
    samples = await offload(_decode, data)
    if stream:
        return StreamingResponse(
            _stream_events(transcriber, samples, spoken, prompt, size), media_type="text/event-stream"
        )
    granularities = set(timestamp_granularities or ["segment"])
    words = response_format == "verbose_json" and "word" in granularities
    transcript = await offload(
        transcriber.transcribe, samples, language=spoken, prompt=prompt, word_timestamps=words, size=size
    )
    if response_format == "text":
        return PlainTextResponse(transcript.text)
    if response_format == "srt":
        return PlainTextResponse(to_srt(transcript))
    if response_format == "vtt":
        return PlainTextResponse(to_vtt(transcript), media_type="text/vtt")
    if response_format == "verbose_json":
        body = to_verbose(transcript, words=words, segments="segment" in granularities)
        return Response(json.dumps(body), media_type="application/json")
    return Response(json.dumps({"text": transcript.text}), media_type="application/json")


@voicebox.post("/transcribe", summary="Transcribe audio (voicebox)", dependencies=[SPEAK])
async def transcribe(
    settings: SettingsDep,
    transcriber: TranscriberDep,
    file: Annotated[UploadFile, File()],
    language: Annotated[str | None, Form()] = None,
) -> dict[str, Any]:
    spoken = language_code(language) if language else None
    data = await read_upload(file, settings.max_upload_bytes)
    samples = await offload(_decode, data)
    transcript = await offload(transcriber.transcribe, samples, language=spoken)
    return {"text": transcript.text, "duration": round(transcript.duration, 3)}  # voicebox's shape, as it is
