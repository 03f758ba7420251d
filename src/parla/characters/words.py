"""Words as grounding compares them: content words (lower case, stop words removed, crudely
stemmed), numbers and names. Pure functions, shared by the answer's grounding check
(``parla.characters.grounding``) and the question-answering bench (``parla bench characters --qa``).

Stemming is deliberately crude (a few English suffixes): both sides of every comparison go through
the same function, so "baked"/"bakes"/"baking" meet at "bak" without a stemmer's dependency.
"""

from __future__ import annotations

import re

_STOP_WORDS_LISTED = """
    a about above after again against all also am an and any are as at be because been before being below
    between both but by can could did do does doing done down during each either else ever every few for from
    further get gets got had has have having he her here hers herself him himself his how i if in into is it its
    itself just let like me more most much my myself no nor not now of off on once only or other our ours
    ourselves out over same say says said she should so some such than that the their theirs them
    themselves then there these they this those through to too under until up upon very was we were what
    when where which while who whom whose why will with would you your yours yourself yourselves
    yes yeah oh ah well sure certainly indeed hello hi dear friend course really quite just
    i'm i've i'd i'll it's that's there's here's we're they're you're don't doesn't didn't isn't aren't
    wasn't weren't can't cannot won't
    tell know knows think one thing things may might must shall go goes going went come comes came
    make makes made take work works working please thanks thank
"""
STOP_WORDS = frozenset(_STOP_WORDS_LISTED.split())
"""Words that carry no fact of their own, and a few light verbs ("works as", "gets to") that a
question uses where the knowledge base says the same with another verb."""

_WORD = re.compile(r"[A-Za-z][A-Za-z'’-]*|\d+(?:[.,:]\d+)*")
_NUMBER = re.compile(r"^\d+(?:[.,:]\d+)*$")

_NUMBER_WORDS_LISTED = (
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen "
    "seventeen eighteen nineteen twenty thirty forty fifty sixty seventy eighty ninety hundred thousand "
    "million half quarter"
)
NUMBER_WORDS = frozenset(_NUMBER_WORDS_LISTED.split())
"""Spelt-out numbers: an answer's "seven" is as much a claim as its "7"."""


def _normal(token: str) -> str:
    token = token.lower().replace("’", "'")
    if token.endswith("'s"):
        token = token[:-2]
    return token.strip("'-")


def stem(word: str) -> str:
    """A crude English stem: plural, past and -ing forms meet ("ferries"/"ferry", "baked"/"bakes"), and a
    trade its place ("bakery"/"baker")."""
    for suffix, replacement in (
        ("ery", "er"),
        ("ies", "y"),
        ("ied", "y"),
        ("ing", ""),
        ("ed", ""),
        ("es", ""),
        ("s", ""),
    ):
        if word.endswith(suffix) and len(word) - len(suffix) >= 3:
            word = word[: -len(suffix)] + replacement
            break
    # "baked" -> "bak", "bakes" -> "bak", "bake" -> "bak": a final e is dropped after the suffix.
    return word[:-1] if word.endswith("e") and len(word) > 3 else word


def tokens(text: str) -> list[str]:
    """The words and numbers of a text as written (case kept), numbers with their separators."""
    return _WORD.findall(text)


def number_key(token: str) -> str:
    """A number as compared: "2,940" and "2940" are the same number."""
    return token.replace(",", "")


def content_words(text: str) -> set[str]:
    """Stems of the words that carry meaning, and every number as written."""
    out: set[str] = set()
    for token in tokens(text):
        if _NUMBER.match(token):
            out.add(number_key(token))
            continue
        word = _normal(token)
        if word and word not in STOP_WORDS and len(word) > 1:
            out.add(stem(word))
    return out


def key_terms(text: str) -> set[str]:
    """The terms an answer is most likely to invent: numbers (digits or spelt out) and names
    (capitalised words, a sentence's first word too, unless it is a stop word)."""
    out: set[str] = set()
    for token in tokens(text):
        if _NUMBER.match(token):
            out.add(number_key(token))
            continue
        word = _normal(token)
        if not word or word in STOP_WORDS:
            continue
        if word in NUMBER_WORDS or token[0].isupper():
            out.add(stem(word))
    return out


def normalised(text: str) -> str:
    """Lower case, typographic apostrophes made plain, whitespace runs made single spaces."""
    return re.sub(r"\s+", " ", text.lower().replace("’", "'")).strip()


DECLINE_PATTERNS = re.compile(
    r"\b(?:i\s+(?:do\s+not|don't|dont)\s+know|i'm\s+not\s+sure|i\s+am\s+not\s+sure|i\s+(?:can't|cannot|can\s+not)"
    r"\s+(?:say|tell)|no\s+idea|(?:does\s+not|doesn't|do\s+not|don't)\s+(?:say|mention|tell)|not\s+(?:mentioned|"
    r"in\s+(?:my|the)\s+(?:notes|knowledge))|i\s+have\s+no\s+(?:information|record)|i\s+(?:do\s+not|don't)\s+have"
    r"\s+(?:that|any|this)\s+information)"
)
"""The ways a character says it does not know (the default decline and what small models write)."""


def is_decline(text: str, own_words: str | None = None) -> bool:
    """Whether an answer says the character does not know (in the usual words, or its own)."""
    said = normalised(text)
    if own_words and normalised(own_words) in said:
        return True
    return bool(DECLINE_PATTERNS.search(said))
