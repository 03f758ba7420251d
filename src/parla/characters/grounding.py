"""Answers a user can trust: what a character says about its knowledge is checked against the
retrieved passages before it is spoken.

The embedded SmolLM2-135M reads a passage and still invents ("the ship's cat is a marine mammal").
So a factual question goes through three steps, all lexical and cheap (microseconds, no model):

1. ``plan``: the passages are cut into sentences; a sentence *can answer* when it holds the
   question's topic words (content words less the words that only say what kind of answer is
   wanted: "name", "colour", "year") and an answer of the kind asked ("who": a name; "how many",
   "when": a number; "what colour": a colour). None can: the knowledge base does not say, and the
   character declines in its own words before the model is even asked (fast, and no invention).
2. ``Grounding.pieces``: the model's answer, piece by piece as ``SentenceStream`` cuts it, is kept
   only while each piece is *supported*: every number and name it states that the question did not
   is in one passage sentence, and most of its content words are in the passages. The first piece
   must also hold an answer of the kind asked (a supported sentence that does not answer is no answer).
3. The first piece unsupported: the answer is the best sentence that can answer, as the passage says
   it (``extracted``); a later one: the answer ends before it.

A question to the character itself ("How are you?") that the passages do not touch is chat, not a
fact to check: the model answers freely, in the style of its examples.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Literal

from parla.characters.prompting import SentenceStream
from parla.characters.words import NUMBER_WORDS, STOP_WORDS, content_words, is_decline, key_terms, stem, tokens
from parla.knowledge.store import Passage


def _listed(words: str) -> frozenset[str]:
    return frozenset(words.split())


AnswerSource = Literal["generated", "extracted", "declined"]

DEFAULT_UNKNOWN_ANSWER = "I'm sorry, I don't know that."
"""What a character says when its knowledge base does not answer (``llm_config.unknown_answer``)."""

SUPPORTED_SHARE = 0.75
"""The share of a piece's content words that must be in the passages (the rest: the character's
own turns of phrase, "I remember", "every visitor asks")."""
MAX_FACT_SENTENCES = 4
"""Passage sentences given to the model: the ones most likely to answer, few enough for a 135M
model not to mix them up, and a short prompt is a quick first token."""
MAX_PIECES = 2
"""A factual answer is a sentence or two; what a small model adds after that is where it invents."""

_TYPE_WORDS = _listed(
    "name named call called time colour color year years day days week month months kind sort type many much long "
    "wide high tall far old deep date"
)
"""Question words that say what kind of answer is wanted, not what it is about."""

COLOURS = _listed(
    "red orange yellow green blue purple violet pink brown black white grey gray silver gold golden maroon navy "
    "crimson scarlet turquoise teal beige cream ivory"
)
WEEKDAYS = _listed(
    "monday tuesday wednesday thursday friday saturday sunday mondays tuesdays wednesdays thursdays fridays "
    "saturdays sundays weekday weekdays weekend weekends daily"
)
MONTHS = _listed(
    "january february march april may june july august september october november december spring summer autumn winter"
)
_NUMBER_WORDS = NUMBER_WORDS | {"noon", "midnight", "o'clock"}

AnswerKind = Literal["person", "number", "measure", "age", "year", "time", "day", "month", "colour", "name", "any"]

SYNONYMS: dict[str, frozenset[str]] = {
    stem(word): frozenset(stem(other) for other in others.split())
    for word, others in {
        "biggest": "largest",
        "big": "large",
        "largest": "biggest",
        "trip": "journey",
        "journey": "trip",
        "job": "role",
        "begin": "start",
        "start": "begin",
        "price": "cost",
    }.items()
}
"""The few words that questions and knowledge bases say differently most often (stems)."""


def answer_kind(question: str) -> AnswerKind:
    """What kind of answer a question asks for, from its wording."""
    q = " ".join(question.lower().replace("’", "'").split())
    if re.search(r"\b(?:what|which)\s+(?:colou?r)\b", q):
        return "colour"
    if re.search(r"\b(?:what|which)\s+days?\b|\bwhich\s+day\b|\bon\s+(?:what|which)\s+days?\b", q):
        return "day"
    if re.search(r"\b(?:what|which|in\s+which|in\s+what)\s+month\b", q):
        return "month"
    if re.search(r"\b(?:what|which)\s+year\b", q):
        return "year"
    if re.search(r"\bhow\s+old\b", q):
        return "age"
    if re.search(r"\bhow\s+(?:long|wide|high|tall|far|big|deep|heavy)\b", q):
        return "measure"
    if re.search(r"\bhow\s+(?:many|much)\b|\b(?:what|which)\s+time\b", q):
        return "number"
    if re.search(r"\b(?:cost|costs|price)\b", q):
        return "number"
    if re.match(r"(?:\w+\s+)?when\b", q):
        return "time"
    if re.match(r"(?:\w+\s+)?(?:who|whom|whose)\b", q):
        return "person"
    if re.search(r"\bname\b|\bcalled\b|\bnamed\b", q):
        return "name"
    return "any"


def is_open_request(question: str) -> bool:
    """A request to talk about something ("Tell me about the ferry."), not a question with one answer."""
    return bool(re.match(r"\s*(?:please\s+)?(?:tell|describe|explain|talk|say)\b", question, re.IGNORECASE))


def topic_words(question: str) -> set[str]:
    """The question's content words that an answering sentence should also hold."""
    q = re.sub(r"\bof the week\b", " ", question, flags=re.IGNORECASE)
    return {w for w in content_words(q) if w not in _TYPE_WORDS and w not in {"colour", "color"}}


def _names(text: str) -> set[str]:
    """Capitalised words that are names: not a sentence's first word unless a capitalised one follows."""
    found: set[str] = set()
    words = tokens(text)
    for i, token in enumerate(words):
        if not token[0].isupper():
            continue
        first = i == 0 or bool(re.search(r"[.!?:]\s*$", text[: text.find(token)]))
        if first and not (i + 1 < len(words) and words[i + 1][0].isupper()):
            continue
        found |= content_words(token)
    return found - {w.rstrip("s") for w in WEEKDAYS} - WEEKDAYS - MONTHS


def _lower_words(text: str) -> set[str]:
    return {t.lower().replace("’", "'") for t in tokens(text)}


def holds_kind(sentence: str, kind: AnswerKind, question: str) -> bool:
    """Whether a sentence holds an answer of ``kind`` that the question does not already say."""
    if kind == "any":
        return True
    said = _lower_words(sentence) - _lower_words(question)
    numbers = any(t[0].isdigit() for t in said) or bool(said & _NUMBER_WORDS)
    if kind == "colour":
        return bool(said & COLOURS)
    if kind == "day":
        return bool(said & WEEKDAYS)
    if kind == "month":
        return bool(said & MONTHS)
    if kind == "number":
        return numbers
    if kind in ("measure", "age"):
        # A figure with its unit ("610 metres", "two hours", "40 years old"), not a bare year or date.
        asked = _lower_words(question)
        words = [t.lower() for t in tokens(sentence)]
        for number, unit in itertools.pairwise(words):
            is_number = number[0].isdigit() or number in _NUMBER_WORDS
            if not is_number or number in asked or unit in STOP_WORDS or unit[0].isdigit():
                continue
            if kind == "measure" or unit.startswith("year"):
                return True
        return kind == "age" and "aged" in said
    if kind == "time":
        return numbers or bool(said & (WEEKDAYS | MONTHS))
    if kind == "year":
        return any(re.fullmatch(r"1\d{3}|20\d{2}", t) for t in said)
    if kind == "person":
        # A person is named with two capitalised words ("Ida Marsh"); one ("Kelmsby") is a place as often.
        asked = _lower_words(question)
        pairs = re.findall(r"\b([A-Z][\w'-]+)\s+([A-Z][\w'-]+)", sentence)
        return any(a.lower() not in asked and b.lower() not in asked and a.lower() not in STOP_WORDS for a, b in pairs)
    return bool(_names(sentence) - content_words(question))  # a name


def nearest_value(sentence: str, values: frozenset[str], topic: set[str], question: str) -> str | None:
    """Of the ``values`` words in a sentence that the question does not say, the one nearest a topic word."""
    words = [t.lower() for t in tokens(sentence)]
    asked = _lower_words(question)
    found = [i for i, w in enumerate(words) if w in values and w not in asked]
    near = [i for i, w in enumerate(words) if content_words(w) & topic]
    if not found:
        return None
    if not near:
        return words[found[0]]
    return words[min(found, key=lambda i: min(abs(i - j) for j in near))]


@dataclass(frozen=True)
class FactSentence:
    """One sentence of a retrieved passage."""

    text: str
    """As the passage says it (a JSON key or Markdown heading in front taken off), to be spoken."""
    written: str
    """As the passage has it, labels and all (they name the subject: "Sea Eagle: painted blue"), for the model."""
    passage: int
    """Its passage's index in the retrieved passages."""
    words: set[str]
    """Its content words with those of the sentence before it ("It is painted yellow" is about the ferry)."""
    coverage: float
    """The share of the question's topic words it holds."""
    answers: bool
    """Whether it can answer the question: the topic words (all, or all but one of four or more) and
    an answer of the kind asked."""
    echoes: int
    """How many of its words the question has too (with repeats)."""


_REFERS_BACK = re.compile(r"\b(?:it|its|he|his|him|she|her|they|their|them|this|these|there)\b", re.IGNORECASE)
_LABEL = re.compile(r"^(?:[\w' ]{1,40}:\s+)+(?=\S)")


def speakable(sentence: str) -> str:
    """A passage sentence as a reply: without a leading ``key:`` or ``Heading:``, a capital first, a full stop last."""
    text = " ".join(sentence.split())
    label = _LABEL.match(text)
    if label and len(text[label.end() :].split()) >= 3:
        text = text[label.end() :]
    text = text[0].upper() + text[1:] if text else text
    return text if not text or text[-1] in ".!?" else text + "."


def split_sentences(text: str) -> list[str]:
    """A passage's sentences. A line break ends one when the line ends a sentence or the next line is
    a record of its own (JSON's ``key: value`` lines); otherwise it is a wrapped line ("It is white
    with a / red lantern room") and the sentence goes on."""
    lines: list[str] = []
    for line in (part.strip() for part in text.splitlines()):
        if not line:
            continue
        if lines and not re.search(r"[.!?:]$", lines[-1]) and line[0].islower() and not _LABEL.match(line):
            lines[-1] += " " + line
        else:
            lines.append(line)
    return [sentence for line in lines for sentence in re.split(r"(?<=[.!?])\s+", line) if sentence.strip()]


def fact_sentences(question: str, passages: list[Passage]) -> list[FactSentence]:
    """The passages' sentences, best answer first (can answer, coverage, retrieval rank)."""
    topic = topic_words(question)
    kind = answer_kind(question)
    asked_words = content_words(question)
    open_request = is_open_request(question)
    out: list[FactSentence] = []
    for index, passage in enumerate(passages):
        previous: set[str] = set()
        for raw in split_sentences(passage.text):
            if not raw.strip() or not content_words(raw):
                continue
            own = content_words(raw)
            # A sentence that refers back ("It is painted yellow", "About three hundred people live
            # there") or goes on about the last one's subject ("The ship's cat is named Biscuit.
            # Biscuit sleeps in the chart room.") is about what the one before it says too.
            first = next(iter(content_words(" ".join(tokens(raw)[:1]))), "")
            refers = bool(_REFERS_BACK.search(raw)) or (bool(first) and first in previous)
            words = own | previous if refers else own
            previous = own
            found = sum(1 for w in topic if w in words or SYNONYMS.get(w, frozenset()) & words)
            coverage = found / len(topic) if topic else 0.0
            enough = bool(topic) and (found == len(topic) or (len(topic) >= 4 and found >= len(topic) - 1))
            if open_request:  # "tell me about the lighthouse and the ferry": any sentence on one of them
                enough = found > 0
            asked = sum(1 for t in tokens(raw) if content_words(t) & asked_words)
            out.append(
                FactSentence(
                    speakable(raw),
                    " ".join(raw.split()),
                    index,
                    words,
                    coverage,
                    enough and holds_kind(raw, kind, question),
                    asked,
                )
            )
    # Ties go to the sentence that repeats more of the question's words ("called" for "what is it
    # called", "honey" twice for "what kind of honey goes into the honey bun"), then to retrieval's order.
    return sorted(out, key=lambda s: (not s.answers, -s.coverage, -s.echoes, s.passage))


@dataclass
class Grounding:
    """How one question is answered from its passages; ``pieces`` checks the model's answer."""

    question: str
    passages: list[Passage]
    character_name: str
    unknown_answer: str = DEFAULT_UNKNOWN_ANSWER
    facts: list[FactSentence] = field(init=False)
    kind: AnswerKind = field(init=False)
    source: AnswerSource = field(init=False, default="generated")
    supporting: list[FactSentence] = field(init=False, default_factory=list)
    """The passage sentences the answer stands on."""

    def __post_init__(self) -> None:
        self.facts = fact_sentences(self.question, self.passages)
        self.kind = answer_kind(self.question)

    @property
    def is_chat(self) -> bool:
        """A question to the character itself that its knowledge does not touch: answered freely."""
        addressed = bool(re.search(r"\b(?:you|your|yours|yourself)\b", self.question, re.IGNORECASE))
        return addressed and not any(f.coverage > 0 for f in self.facts)

    @property
    def answerable(self) -> bool:
        if not self.facts or not self.facts[0].answers:
            return False
        if not is_open_request(self.question):
            return True
        # A request about several things is answerable when the passages speak of all of them.
        topic = topic_words(self.question)
        covered = {w for w in topic if any(w in f.words or SYNONYMS.get(w, frozenset()) & f.words for f in self.facts)}
        return len(covered) == len(topic) or (len(topic) >= 4 and len(covered) >= len(topic) - 1)

    @property
    def max_pieces(self) -> int:
        """Sentences an answer may have: a request to talk about something gets one more."""
        return MAX_PIECES + 1 if is_open_request(self.question) else MAX_PIECES

    def prompt_facts(self) -> list[str]:
        """The sentences the model is given: those most likely to answer, best first."""
        return [f.written for f in self.facts[:MAX_FACT_SENTENCES] if f.coverage > 0] or [
            f.written for f in self.facts[:MAX_FACT_SENTENCES]
        ]

    def decline(self) -> str:
        self.source = "declined"
        self.supporting = []
        return self.unknown_answer

    def extract(self) -> str:
        best = self.facts[0]
        self.source = "extracted"
        self.supporting = [best]
        return best.text

    def support_of(self, piece: str) -> FactSentence | None:
        """The passage sentence that supports a piece of the answer, or ``None``: see the module's step 2."""
        if is_decline(piece, self.unknown_answer):
            return None
        words = content_words(piece)
        if not words:
            return None
        allowed = content_words(self.question) | content_words(self.character_name)
        everywhere = set().union(*(f.words for f in self.facts)) if self.facts else set()
        if len(words & (everywhere | allowed)) < SUPPORTED_SHARE * len(words):
            return None
        new_keys = key_terms(piece) - key_terms(self.question) - content_words(self.question) - allowed
        holding = [f for f in self.facts if new_keys <= f.words]
        if not holding:
            return None
        # The sentence that shares most with the piece is the one it says again.
        return max(holding, key=lambda f: (len(words & f.words), f.answers))

    def answers_with(self, piece: str, support: FactSentence) -> bool:
        """Whether a supported first piece answers the question: it restates a sentence that can
        answer (not a true but unrelated one: "the telescope is called the Lantern" for the dog's
        name), holds an answer of the kind asked, and, for a number, the passage's figure rather than
        part of it ("at eight" for "at half past eight (8:30)")."""
        if not support.answers or not holds_kind(piece, self.kind, self.question):
            return False
        values = {"colour": COLOURS, "day": WEEKDAYS, "month": MONTHS}.get(self.kind)
        if values is not None:
            # The value the passage gives the subject, not another one in the same sentence ("It is
            # white with a red lantern room": the lantern room is red).
            nearest = nearest_value(support.written, values, topic_words(self.question), self.question)
            return nearest is None or nearest in _lower_words(piece)
        if self.kind in ("number", "time", "year", "measure", "age"):
            figures = {t for t in tokens(support.text) if t[0].isdigit()} - set(tokens(self.question))
            return not figures or bool(figures & set(tokens(piece)))
        return True

    def pieces(self, written: Iterator[str]) -> Iterator[str]:
        """The model's answer as checked pieces (see the module). The caller closes ``written`` when
        this ends early, which stops the model."""
        # Whole sentences only: a first clause ("The ferry leaves Kelmsby every morning,") is checked
        # for an answer it has not reached yet.
        splitter = SentenceStream(first_clause_chars=10_000)
        kept: list[str] = []

        def check(piece: str) -> tuple[str | None, bool]:
            """(what to say, whether to go on)."""
            support = self.support_of(piece)
            if not kept:
                if support is None or not self.answers_with(piece, support):
                    return self.extract(), False
                self.supporting.append(support)
                return piece, len(kept) + 1 < self.max_pieces
            if support is None or piece in kept:
                return None, False
            if support not in self.supporting:
                self.supporting.append(support)
            return piece, len(kept) + 1 < self.max_pieces

        for token in written:
            for piece in splitter.feed(token):
                said, more = check(piece)
                if said is not None:
                    kept.append(said)
                    yield said
                if not more:
                    return
        for piece in splitter.close():
            said, more = check(piece)
            if said is not None:
                kept.append(said)
                yield said
            if not more:
                return
        if not kept:  # the model wrote nothing worth saying
            yield self.extract()

    def supporting_passages(self) -> list[dict[str, object]]:
        """The answer's support as the API shows it: ``Document N`` as in ``knowledge_context``."""
        return [
            {
                "document": f.passage + 1,
                "source": self.passages[f.passage].source,
                "sentence": f.text,
                "text": self.passages[f.passage].text,
            }
            for f in self.supporting
        ]
