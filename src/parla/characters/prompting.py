"""What a character's language model is given: its persona, its style examples, the passages
retrieved from its knowledge, and the question. Pure functions, so prompts can be read in tests.

Small models (the embedded SmolLM2-135M) answer from retrieved text reliably only when the text
sits in the same message as the question, right before it: the context goes in the user turn, not
in the system prompt.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable

from pydantic import BaseModel, Field, ValidationError

from parla.characters.llm import Message
from parla.errors import InvalidInputError, validation_detail
from parla.knowledge.store import Passage

MAX_STYLE_EXAMPLES = 6
"""Few-shot pairs given to the model; more crowd a small context window without changing the style."""
MAX_STYLE_FILE_BYTES = 1024 * 1024


class StyleExample(BaseModel):
    """The Titans character API's style tuning pair."""

    question: str = Field(..., min_length=1, max_length=2000)
    response: str = Field(..., min_length=1, max_length=4000)


def parse_style_examples(data: bytes) -> list[StyleExample]:
    """A style tuning file: a JSON list of ``{"question", "response"}`` pairs (or ``{"examples": [...]}``)."""
    if len(data) > MAX_STYLE_FILE_BYTES:
        raise InvalidInputError("style_tuning_file is larger than 1 MB", param="style_tuning_file")
    try:
        value = json.loads(data.decode("utf-8-sig"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidInputError(f"style_tuning_file is not valid JSON: {exc}", param="style_tuning_file") from None
    if isinstance(value, dict) and isinstance(value.get("examples"), list):
        value = value["examples"]
    if not isinstance(value, list) or not value:
        raise InvalidInputError(
            'style_tuning_file must be a JSON list of {"question": ..., "response": ...} pairs',
            param="style_tuning_file",
        )
    try:
        return [StyleExample.model_validate(item) for item in value]
    except ValidationError as exc:
        detail = validation_detail(exc.errors(), "style_tuning_file example")[0]
        raise InvalidInputError(detail, param="style_tuning_file") from None


def default_system_prompt(name: str) -> str:
    return (
        f"You are {name}. Answer the user's question truthfully in two or three short sentences, "
        "speaking as yourself. Your answer will be spoken aloud, so use plain sentences."
    )


def knowledge_context(passages: Iterable[Passage]) -> str:
    """The Titans character API's ``knowledge_context``: ``Document 1: ...`` per retrieved passage."""
    return "\n\n".join(f"Document {i}: {p.text}" for i, p in enumerate(passages, start=1))


GROUNDING_DEMO: list[Message] = [
    {
        "role": "user",
        "content": "Here is what you know:\n2. The museum shop sells maps.\n1. The museum opens at nine in the morning"
        " and closes at five.\n\n"
        "Question: When does the museum open?",
    },
    {"role": "assistant", "content": "The museum opens at nine in the morning."},
]
"""One worked exchange that shows the model how a question with knowledge is answered: with it,
the embedded 135M model answers from the given text more often (8-9 of 10 questions against 5-7)."""

_QUESTION_WORDS = frozenset(
    [
        "who",
        "whom",
        "whose",
        "what",
        "when",
        "where",
        "why",
        "how",
        "which",
        "is",
        "are",
        "was",
        "were",
        "do",
        "does",
        "did",
        "can",
        "could",
        "will",
        "would",
        "should",
        "may",
        "might",
        "have",
        "has",
        "had",
        "shall",
    ]
)


def as_question(heard: str) -> str:
    """A transcribed question as a person would type it: Whisper often ends a spoken question with
    a full stop, and small models read "which birds nest there." as a statement to repeat."""
    text = heard.strip()
    if not text:
        return text
    text = text[0].upper() + text[1:]
    first = re.split(r"[\s,']", text, maxsplit=1)[0].lower()
    if first in _QUESTION_WORDS and not text.endswith("?"):
        text = text.rstrip(".!… ") + "?"
    return text


def build_messages(
    *,
    name: str,
    question: str,
    passages: list[Passage],
    style_examples: list[StyleExample],
    system_prompt: str | None = None,
    facts: list[str] | None = None,
) -> list[Message]:
    """The conversation the model continues. With knowledge, the style examples come first and the
    worked grounded exchange (``GROUNDING_DEMO``) last before the question: a 135M model copies the
    nearest exchange, so the nearest one answers from the text given (the style examples, answered
    from nowhere, would otherwise teach it to invent). ``facts``: the passage sentences most likely to
    answer (``Grounding.prompt_facts``), numbered, given instead of the whole passages: a short
    context is both a quicker first token and less to mix up."""
    messages: list[Message] = [{"role": "system", "content": system_prompt or default_system_prompt(name)}]
    for example in style_examples[:MAX_STYLE_EXAMPLES]:
        messages.append({"role": "user", "content": example.question})
        messages.append({"role": "assistant", "content": example.response})
    if facts:
        messages.extend(GROUNDING_DEMO)
        # Best last: the sentence nearest the question is the one a small model leans on.
        numbered = [f"{i}. {fact}" for i, fact in reversed(list(enumerate(facts, start=1)))]
        content = "Here is what you know:\n" + "\n".join(numbered) + f"\n\nQuestion: {question}"
    elif passages:
        messages.extend(GROUNDING_DEMO)
        context = "\n\n".join(p.text for p in reversed(passages))
        content = f"Here is what you know:\n{context}\n\nQuestion: {question}"
    else:
        content = question
    messages.append({"role": "user", "content": content})
    return messages


_SENTENCE_END = re.compile(r"[.!?…]+[\"')\]]*\s+")
_CLAUSE_END = re.compile(r"[,;:]\s+")


class SentenceStream:
    """Cuts a text that arrives token by token into pieces worth speaking, as early as possible.

    A piece ends at a sentence end; the first piece may also end at a clause once it is long enough
    (the listener hears something sooner), and a run-on without punctuation is cut at a space.
    """

    def __init__(self, *, first_clause_chars: int = 40, max_chars: int = 240) -> None:
        self.first_clause_chars = first_clause_chars
        self.max_chars = max_chars
        self._buffer = ""
        self._emitted = 0

    def feed(self, text: str) -> list[str]:
        self._buffer += text
        pieces: list[str] = []
        while True:
            piece = self._next_piece()
            if piece is None:
                return pieces
            if any(ch.isalnum() for ch in piece):  # "..." alone is nothing to say
                pieces.append(piece)

    def _next_piece(self) -> str | None:
        match = _SENTENCE_END.search(self._buffer)
        cut = match.end() if match else None
        if cut is None and self._emitted == 0:
            clause = _CLAUSE_END.search(self._buffer, self.first_clause_chars)
            cut = clause.end() if clause else None
        if cut is None and len(self._buffer) > self.max_chars:
            space = self._buffer.rfind(" ", 0, self.max_chars)
            cut = space + 1 if space > 0 else self.max_chars
        if cut is None:
            return None
        piece, self._buffer = self._buffer[:cut].strip(), self._buffer[cut:]
        self._emitted += 1
        return piece

    def close(self) -> list[str]:
        """What is left once the text is complete."""
        rest, self._buffer = self._buffer.strip(), ""
        return [rest] if any(ch.isalnum() for ch in rest) else []
