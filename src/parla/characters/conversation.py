"""Answering as a character: from a question to the passages it retrieves, the model's tokens, and
the answer, whole (``answer``) or as events while it is written and spoken (``converse``).

The model writes on a worker thread and its tokens cross to the event loop through the shared
bridge (``iterate_in_thread``), as an engine's audio does. Each sentence is spoken through the
speech service as soon as it is complete; the answer's audio is then kept as one ordinary
generation (history, retention), served at ``audio_url``.

A character with a knowledge base answers through ``grounding.Grounding``: declined when no passage
can answer, else the model's answer (greedy) checked sentence by sentence against the passages,
and replaced by the passage sentence that answers when it is not supported; only checked sentences
are shown and spoken.
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncGenerator, Callable, Coroutine, Generator, Iterator
from contextlib import aclosing, closing
from typing import Any

from parla.audio.encode import AudioFormat
from parla.characters.checks import CharacterChecks
from parla.characters.grounding import DEFAULT_UNKNOWN_ANSWER, Grounding
from parla.characters.llm import LlamaCppChat, LLMConfig, LLMError, Message, OpenAICompatibleChat, chat_model_for
from parla.characters.prompting import SentenceStream, StyleExample, build_messages, knowledge_context
from parla.characters.runtime import LlamaRuntime
from parla.characters.shapes import (
    ANSWER_SOURCE,
    ENGINE_ALIASES,
    Answer,
    Persona,
    STTSettings,
    VoiceCloningSettings,
)
from parla.characters.store import CharacterStore, knowledge_owner
from parla.engines.base import AudioChunk
from parla.errors import ServiceUnavailableError, UpstreamError
from parla.knowledge.store import KnowledgeBase, Passage
from parla.offload import iterate_in_thread, offload
from parla.services.speech import SpeechOptions, SpeechPlan, SpeechService, encode_live
from parla.store.models import Character

PASSAGES_PER_ANSWER = 3
RELEVANCE_FLOOR = 0.6
"""Passages scoring below this fraction of the best one are left out: a small model answers from
whatever text it is given, so a weakly related passage is a wrong answer waiting to happen."""
ANSWER_FORMAT: AudioFormat = "wav"
"""The Titans character API serves answers as WAV files."""
FACTUAL_MAX_TOKENS = 80
"""A factual answer is a sentence or two (``grounding.MAX_PIECES``); the model is not let ramble on."""
LIVE_FORMAT: AudioFormat = "pcm"
"""``speech.audio.delta`` carries OpenAI's ``pcm``: 24 kHz 16-bit little-endian mono."""

Event = dict[str, Any]


async def _replay(chunks: list[AudioChunk]) -> AsyncGenerator[AudioChunk, None]:
    for chunk in chunks:
        yield chunk


class Conversation:
    def __init__(
        self,
        *,
        store: CharacterStore,
        checks: CharacterChecks,
        speech: SpeechService,
        knowledge: KnowledgeBase,
        embedded: LlamaCppChat,
        remote: OpenAICompatibleChat,
        runtime: Callable[[], LlamaRuntime],
    ) -> None:
        self.store = store
        self.checks = checks
        self.speech = speech
        self.knowledge = knowledge
        self.embedded = embedded
        self.remote = remote
        # Asked at each question, not kept: the runtime is installed (and swapped) while the server runs.
        self.runtime = runtime

    # -- the character ------------------------------------------------------------------------------

    def persona(self, character_id: int) -> Persona:
        """What answering needs of the character (blocking: reads the database)."""
        return self.store.read(character_id, self._persona)

    def _persona(self, row: Character) -> Persona:
        config, _ = self.checks.llm_config(row.llm_model, row.llm_config)
        voice_settings = VoiceCloningSettings.model_validate(row.voice_cloning_settings or {})
        engine = self._engine_for(voice_settings.model)
        return Persona(
            id=row.id,
            name=row.name,
            llm=config,
            voice=row.voice_id or voice_settings.voice,
            engine=engine,
            language=voice_settings.language,
            stt=STTSettings.model_validate(row.stt_settings or {}),
            style_examples=[StyleExample.model_validate(e) for e in row.style_examples or []],
        )

    def _engine_for(self, model: str | None) -> str | None:
        """The engine a character's ``voice_cloning_settings.model`` names: an engine by that name, else
        the Parla engine a Titans name stands for (``f5tts``: ``f5``) when it can run; else ``None``, the default."""
        registry = self.speech.registry
        if model is None or model in registry.names():
            return model
        alias = ENGINE_ALIASES.get(model)
        if alias is not None and alias in registry.names() and registry.get(alias).unavailable_reason() is None:
            return alias
        return None

    def require_language_model(self, persona: Persona) -> None:
        """A 503 that says when, before any work, while the embedded model's runtime is still being
        installed (or is missing); a character on an endpoint does not need it. Blocking: the
        runtime's state takes a file lock and asks the import system."""
        if persona.llm.base_url:
            return
        state = self.runtime().state()
        if not state.ready:
            raise ServiceUnavailableError(state.detail)

    async def load_model(self, persona: Persona) -> bool:
        """Load the embedded model the character answers with; ``False`` when it answers from an endpoint."""
        if persona.llm.base_url:
            return False
        await offload(self.require_language_model, persona)
        try:
            await offload(self.embedded.load, persona.llm)
        except LLMError as exc:
            raise UpstreamError(f"the language model failed to load: {exc}") from None
        return True

    # -- the parts of an answer ---------------------------------------------------------------------

    def context(self, persona: Persona, question: str) -> tuple[list[Message], list[Passage], Grounding | None]:
        """The retrieved passages, the messages for the model, and how the answer is checked against
        the passages (``None``: it is not, see ``grounding_for``). Blocking: embeds the question."""
        found = self.knowledge.search(knowledge_owner(persona.id), question, k=PASSAGES_PER_ANSWER)
        found = [p for p in found if p.score >= RELEVANCE_FLOOR * found[0].score] if found else []
        grounding = self.grounding_for(persona, question, found)
        messages = build_messages(
            name=persona.name,
            question=question,
            passages=found,
            style_examples=persona.style_examples,
            system_prompt=persona.llm.system_prompt,
            facts=grounding.prompt_facts() if grounding is not None else None,
        )
        return messages, found, grounding

    @staticmethod
    def grounding_for(persona: Persona, question: str, found: list[Passage]) -> Grounding | None:
        """The check a character's answer goes through; none for a character without knowledge, one
        configured to answer from general knowledge, or a chat question to the character itself."""
        if not found or persona.llm.general_knowledge:
            return None
        grounding = Grounding(question, found, persona.name, persona.llm.unknown_answer or DEFAULT_UNKNOWN_ANSWER)
        return None if grounding.is_chat else grounding

    def tokens(
        self, persona: Persona, messages: list[Message], config: LLMConfig | None = None
    ) -> Generator[str, None, None]:
        """The answer as the model writes it (blocking); the model's failures become a 502."""
        model = chat_model_for(persona.llm, self.embedded, self.remote)
        try:
            yield from model.stream(messages, config or persona.llm)
        except LLMError as exc:
            raise UpstreamError(f"the language model failed: {exc}") from None

    def grounded_pieces(self, persona: Persona, messages: list[Message], grounding: Grounding) -> Iterator[str]:
        """The checked answer, sentence by sentence (blocking): the decline without asking the model
        when no passage can answer; else the model's sentences while the passages support them, or
        the passage sentence that answers (``Grounding.pieces``)."""
        if not grounding.answerable:
            yield grounding.decline()
            return
        # Greedy decoding: a factual answer should be the model's most likely reading of the
        # passages, the same each time, not a sample (temperature 0.7 made up colours and captains).
        config = persona.llm.model_copy(
            update={"temperature": 0.0, "max_tokens": min(persona.llm.max_tokens, FACTUAL_MAX_TOKENS)}
        )
        # Closed when the check ends the answer early, which stops the model (and frees it).
        with closing(self.tokens(persona, messages, config)) as tokens:
            yield from grounding.pieces(tokens)

    def speech_plan(self, persona: Persona, text: str, fmt: AudioFormat = ANSWER_FORMAT) -> SpeechPlan:
        """Blocking: the voice is looked up in the database."""
        options = SpeechOptions(
            input=text,
            voice=persona.voice,
            model=persona.engine,
            response_format=fmt,
            seed=persona.id,  # one character, one delivery: the same seed for every sentence
            language=persona.language,
        )
        return self.speech.prepare(options, source=ANSWER_SOURCE)

    # -- answering ----------------------------------------------------------------------------------

    @staticmethod
    def _answer(
        question: str, text: str, found: list[Passage], persona: Persona, grounding: Grounding | None
    ) -> Answer:
        answer = Answer(question, text, found, persona.id, persona.name)
        if grounding is not None:
            answer.source = grounding.source
            answer.supporting_passages = grounding.supporting_passages()
        return answer

    async def answer(self, character_id: int, question: str) -> Answer:
        """The whole answer: text, then its audio kept as a generation (the Titans character API's ask endpoints)."""
        question = self.checks.question(question)
        persona = await offload(self.persona, character_id)
        await offload(self.require_language_model, persona)
        messages, found, grounding = await offload(self.context, persona, question)
        if grounding is not None:
            text = " ".join(await offload(lambda: list(self.grounded_pieces(persona, messages, grounding))))
        else:
            text = (await offload(lambda: "".join(self.tokens(persona, messages)))).strip()
        answer = self._answer(question, text, found, persona, grounding)
        if not text:
            answer.warnings.append("the language model gave an empty answer")
            return answer
        plan = await offload(self.speech_plan, persona, text)
        await self.speech.render(plan, keep=True)
        answer.generation_id = plan.id
        return answer

    async def converse(self, character_id: int, question: str, *, speak: bool = True) -> AsyncGenerator[Event, None]:
        """The answer as events while it is made: ``answer.delta`` (text as the model writes it),
        with ``speak`` also ``speech.audio.delta`` (24 kHz 16-bit PCM, base64) sentence by sentence
        while the model is still writing, then ``answer.done`` and ``speech.audio.done`` (the kept
        answer's ``audio_url``). A client that leaves stops the model and the synthesis."""
        question = self.checks.question(question)
        persona = await offload(self.persona, character_id)
        # The model and speech are checked before the model starts: fail fast, not mid-answer.
        await offload(self.require_language_model, persona)
        await offload(self.speech_plan, persona, question)
        messages, found, grounding = await offload(self.context, persona, question)
        # The writer and the speaker run side by side; their events meet here, in the order they happen.
        events: asyncio.Queue[Event | BaseException] = asyncio.Queue()
        sentences: asyncio.Queue[str | None] = asyncio.Queue()
        spoken: list[AudioChunk] = []

        async def write_checked(grounding: Grounding) -> None:
            """A checked answer goes out a sentence at a time, once it is checked: nothing unsupported
            is shown or spoken."""
            try:
                checked = iterate_in_thread(lambda: self.grounded_pieces(persona, messages, grounding))
                async with aclosing(checked) as pieces:
                    first = True
                    async for piece in pieces:
                        events.put_nowait({"type": "answer.delta", "delta": piece if first else " " + piece})
                        first = False
                        if speak:
                            sentences.put_nowait(piece)
                events.put_nowait({"type": "answer.written"})
            finally:
                sentences.put_nowait(None)

        async def write() -> None:
            splitter = SentenceStream()
            try:
                async with aclosing(iterate_in_thread(lambda: self.tokens(persona, messages))) as tokens:
                    async for token in tokens:
                        events.put_nowait({"type": "answer.delta", "delta": token})
                        for piece in splitter.feed(token) if speak else ():
                            sentences.put_nowait(piece)
                for piece in splitter.close() if speak else ():
                    sentences.put_nowait(piece)
                events.put_nowait({"type": "answer.written"})
            finally:
                sentences.put_nowait(None)

        async def sentence_audio() -> AsyncGenerator[AudioChunk, None]:
            while (piece := await sentences.get()) is not None:
                plan = await offload(self.speech_plan, persona, piece, LIVE_FORMAT)
                async with aclosing(self.speech.audio(plan)) as chunks:
                    async for chunk in chunks:
                        spoken.append(chunk)
                        yield chunk

        async def say() -> None:
            async with aclosing(encode_live(sentence_audio(), LIVE_FORMAT)) as pcm:
                async for data in pcm:
                    events.put_nowait({"type": "speech.audio.delta", "audio": base64.b64encode(data).decode()})
            events.put_nowait({"type": "speech.spoken"})

        async def reporting(work: Coroutine[Any, Any, None]) -> None:
            try:
                await work
            except BaseException as exc:  # wakes the loop below, which raises it to the client
                events.put_nowait(exc)
                raise

        tasks = [asyncio.create_task(reporting(write() if grounding is None else write_checked(grounding)))]
        if speak:
            tasks.append(asyncio.create_task(reporting(say())))
        text = ""
        pending = {"answer.written", "speech.spoken"} if speak else {"answer.written"}
        try:
            while pending:
                event = await events.get()
                if isinstance(event, BaseException):
                    raise event
                kind = event["type"]
                if kind in pending:
                    pending.discard(kind)
                    if kind == "answer.written":
                        text = text.strip()
                        answer = self._answer(question, text, found, persona, grounding)
                        yield {
                            "type": "answer.done",
                            "text": text,
                            "knowledge_context": knowledge_context(found),
                            "answer_source": answer.source,
                            "supporting_passages": answer.supporting_passages,
                        }
                    continue
                if kind == "answer.delta":
                    text += event["delta"]
                yield event
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        answer = self._answer(question, text, found, persona, grounding)
        if text:
            plan = await offload(self.speech_plan, persona, text)
            # The sentences already spoken are the answer's audio; without them (speak off), it is made now.
            await self.speech.render(plan, keep=True, audio=_replay(spoken) if spoken else None)
            answer.generation_id = plan.id
        yield {"type": "speech.audio.done", "generation_id": answer.generation_id, "answer": answer}
