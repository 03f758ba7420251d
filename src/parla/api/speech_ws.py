"""``/v1/audio/speech/ws``: speech while the text is still being written.

A client (an LLM's token stream, a chat UI) sends text deltas; each sentence is spoken as soon as
it is complete, in any voice, with the sentence cutting the characters use (``SentenceStream``:
a short first clause, then sentences). Messages, JSON text frames from the client:

- ``{"type": "config", "voice": "nova", "model": "tts-1", "response_format": "pcm", "speed": 1,
  "language": "en", "seed": 1, "instructions": "..."}`` (optional, before any text);
- ``{"type": "text", "text": "Hello, wor"}``: a delta;
- ``{"type": "flush"}``: speak what is buffered now, sentence end or not;
- ``{"type": "cancel"}``: stop the audio under way and forget the text not yet spoken;
- ``{"type": "end"}``: no more text: speak the rest, then the server closes.

From the server: ``{"type": "sentence.start", "index", "text"}``, the sentence's audio as binary
frames (``pcm``: 24 kHz 16-bit mono; another format: one stream per sentence),
``{"type": "sentence.done", "index", "generation_id", "duration_s"}``, ``{"type": "cancelled"}``,
``{"type": "error", "status", "detail"}`` (a sentence that cannot be spoken; the next ones still
are), and ``{"type": "done"}`` before the close.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from fastapi import APIRouter, WebSocket, WebSocketDisconnect
from pydantic import ValidationError

from parla.api.auth import accept_authorized
from parla.characters.prompting import SentenceStream
from parla.errors import ParlaError, validation_detail
from parla.offload import offload
from parla.services.history import HistoryService
from parla.services.keys import Scope
from parla.services.speech import SpeechOptions, SpeechService

router = APIRouter()

MAX_BUFFER_CHARS = 20_000
"""Text waiting for a sentence end beyond this is refused: a client must flush or end."""


class _Socket:
    def __init__(self, websocket: WebSocket, speech: SpeechService, history: HistoryService) -> None:
        self.websocket = websocket
        self.speech = speech
        self.history = history
        self.pending = 0  # characters fed and not yet cut into a sentence (about: pieces are stripped)
        self.options: dict[str, Any] = {"response_format": "pcm"}
        self.sentences = SentenceStream()
        self.queue: asyncio.Queue[str | None] = asyncio.Queue()
        self.index = 0
        self.speaking: asyncio.Task[None] | None = None

    async def run(self) -> None:
        self.speaking = asyncio.create_task(self._speak_all())
        try:
            await self._receive()
        finally:
            if self.speaking is not None:
                self.speaking.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self.speaking

    async def _receive(self) -> None:
        while True:
            try:
                message = await self.websocket.receive_json()
            except WebSocketDisconnect:
                return
            except ValueError:
                await self._error(400, "messages are JSON objects with a type")
                continue
            kind = message.get("type") if isinstance(message, dict) else None
            if kind == "config":
                await self._configure(message)
            elif kind == "text":
                text = message.get("text")
                if not isinstance(text, str):
                    await self._error(400, "a text message carries its delta as text")
                    continue
                self.pending += len(text)
                for sentence in self.sentences.feed(text):
                    self.pending = max(0, self.pending - len(sentence))
                    self.queue.put_nowait(sentence)
                if self.pending > MAX_BUFFER_CHARS:
                    await self._error(413, f"over {MAX_BUFFER_CHARS} characters without a sentence end: flush")
                    self.sentences, self.pending = SentenceStream(), 0
            elif kind == "flush":
                self.pending = 0
                for sentence in self.sentences.close():
                    self.queue.put_nowait(sentence)
            elif kind == "cancel":
                await self._cancel()
            elif kind == "end":
                for sentence in self.sentences.close():
                    self.queue.put_nowait(sentence)
                self.queue.put_nowait(None)
                if self.speaking is not None:
                    await self.speaking
                await self.websocket.send_json({"type": "done"})
                await self.websocket.close()
                return
            else:
                await self._error(400, f"unknown message type {kind!r}: config, text, flush, cancel or end")

    async def _configure(self, message: dict[str, Any]) -> None:
        given = {k: v for k, v in message.items() if k != "type"}
        try:
            SpeechOptions.model_validate({**self.options, **given, "input": "check"})
        except ValidationError as exc:
            await self._error(422, validation_detail(exc.errors())[0])
            return
        self.options.update(given)

    async def _cancel(self) -> None:
        while not self.queue.empty():
            self.queue.get_nowait()
        self.sentences, self.pending = SentenceStream(), 0
        if self.speaking is not None:
            self.speaking.cancel()  # stops the synthesis under way (its stream is closed)
            with contextlib.suppress(asyncio.CancelledError):
                await self.speaking
        self.speaking = asyncio.create_task(self._speak_all())
        await self.websocket.send_json({"type": "cancelled"})

    async def _speak_all(self) -> None:
        while True:
            sentence = await self.queue.get()
            if sentence is None:
                return
            await self._speak(sentence)

    async def _speak(self, sentence: str) -> None:
        index, self.index = self.index, self.index + 1
        try:
            options = SpeechOptions.model_validate({**self.options, "input": sentence})
            plan = await offload(self.speech.prepare, options, source="websocket")
        except ParlaError as exc:
            await self._error(exc.status_code, f"sentence {index}: {exc.detail}")
            return
        await self.websocket.send_json({"type": "sentence.start", "index": index, "text": sentence})
        try:
            async for data in self.speech.stream(plan):
                await self.websocket.send_bytes(data)
        except ParlaError as exc:
            await self._error(exc.status_code, f"sentence {index}: {exc.detail}")
            return
        recorded = await offload(self.history.get, plan.id)
        await self.websocket.send_json(
            {"type": "sentence.done", "index": index, "generation_id": plan.id, "duration_s": recorded.duration_s}
        )

    async def _error(self, status: int, detail: str) -> None:
        await self.websocket.send_json({"type": "error", "status": status, "detail": detail})


@router.websocket("/v1/audio/speech/ws")
async def speech_socket(websocket: WebSocket) -> None:
    if not await accept_authorized(websocket, Scope.SPEAK):
        return
    services = websocket.app.state.services
    await _Socket(websocket, services.speech, services.history).run()
