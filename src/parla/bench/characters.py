"""``parla bench characters``: a character's spoken answer through the server, streaming against
answer-then-speak, and the language model alone; with ``--qa``, how often it answers a question
set right, unsupported, or declines what its knowledge base does not say."""

from __future__ import annotations

import json
import re
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console
from rich.markup import escape
from rich.progress import Progress
from rich.table import Table

from parla.audio.decode import decode_audio
from parla.bench.common import PCM_RATE, memory_mb, serve_in_child
from parla.characters.words import content_words, is_decline, key_terms, normalised

CHARACTER_KNOWLEDGE = """# Marrow Island

Marrow Island lies forty kilometres off the coast. About three hundred people live there all year.

## The lighthouse

The lighthouse on Marrow Island was built in 1887 by the engineer Clara Voss. It is white with a
red lantern room, and its light can be seen from thirty kilometres away.

## The ferry

The ferry to Marrow Island leaves from Port Elsin every morning at seven o'clock. The crossing
takes two hours when the sea is calm.

## Wildlife

Blue puffins nest on the northern cliffs of the island every June. Grey seals rest on the southern
beaches in winter.
"""
CHARACTER_QUESTIONS = [
    "Who built the lighthouse on Marrow Island?",
    "When does the ferry leave Port Elsin?",
    "Tell me about the lighthouse and the ferry, please.",
]
"""Two one-sentence answers (nothing to speak before the text is done) and one longer answer."""


@dataclass
class AnswerTiming:
    first_token: list[float] = field(default_factory=list)
    first_audio: list[float] = field(default_factory=list)
    written: list[float] = field(default_factory=list)
    total: list[float] = field(default_factory=list)
    audio: list[float] = field(default_factory=list)


def _ask_streaming(client: httpx.Client, url: str, character_id: int, question: str) -> tuple[float, ...]:
    """(first token, first audio, text written, total, seconds of audio) of ``/ask-question-stream``."""
    import base64

    start = time.perf_counter()
    marks: dict[str, float] = {}
    pcm = 0
    body = {"character_id": character_id, "question": question}
    with client.stream("POST", f"{url}/ask-question-stream", json=body, timeout=300) as response:
        response.raise_for_status()
        for line in response.iter_lines():
            if not line.startswith("data:"):
                continue
            event = json.loads(line[5:])
            marks.setdefault(event["type"], time.perf_counter() - start)
            if event["type"] == "speech.audio.delta":
                pcm += len(base64.b64decode(event["audio"]))
            if event["type"] == "error":
                raise RuntimeError(event["detail"])
    total = time.perf_counter() - start
    return (
        marks["answer.delta"],
        marks.get("speech.audio.delta", total),
        marks["answer.done"],
        total,
        pcm / 2 / PCM_RATE,
    )


def _ask_whole(client: httpx.Client, url: str, character_id: int, question: str) -> tuple[float, ...]:
    """The Titans character API's way: ``/ask-question-text`` answers when everything is done, then the WAV is
    fetched. Its first audio is its total."""
    start = time.perf_counter()
    body = {"character_id": character_id, "question": question}
    answer = client.post(f"{url}/ask-question-text", json=body, timeout=300)
    answer.raise_for_status()
    written = time.perf_counter() - start
    wav = client.get(answer.json()["audio_url"], timeout=60).content
    total = time.perf_counter() - start
    samples, rate = decode_audio(wav)
    return written, total, written, total, samples.size / rate


def run_characters_bench(*, rounds: int, console: Console) -> None:
    """A character (embedded model, knowledge base, preset voice) answers through the server, by
    ``/ask-question-stream`` (speaking while thinking) and by ``/ask-question-text`` (answer, then
    audio), alternating; and the same model alone in this process, for the language model's share."""
    from parla.characters.llm import LlamaCppChat, LLMConfig
    from parla.characters.prompting import build_messages

    config = {"temperature": 0.0, "max_tokens": 120}
    results: dict[tuple[int, str], AnswerTiming] = {}
    with serve_in_child() as (url, proc), httpx.Client(timeout=300) as client:
        created = client.post(
            f"{url}/create-character",
            data={
                "name": "Keeper",
                "llm_config": json.dumps(config),
                "voice_cloning_settings": json.dumps({"voice": "nova"}),
            },
            files={"knowledge_base_file": ("marrow.md", CHARACTER_KNOWLEDGE.encode(), "text/markdown")},
        )
        created.raise_for_status()
        character_id = int(created.json()["character_id"])
        client.post(f"{url}/load-character", json={"character_id": character_id}, timeout=300).raise_for_status()
        # The model alone, given the same kind of prompt (the server's retrieval is not repeated here).
        raw = LlamaCppChat()
        raw.load(LLMConfig(**config))
        rss_idle, _ = memory_mb(proc.pid)
        with Progress(console=console, transient=True) as bar:
            task = bar.add_task("asking", total=rounds * len(CHARACTER_QUESTIONS) * 3)
            for r in range(rounds):
                for q, question in enumerate(CHARACTER_QUESTIONS):
                    order = ("stream", "whole") if r % 2 == 0 else ("whole", "stream")
                    for side in order:
                        ask = _ask_streaming if side == "stream" else _ask_whole
                        timing = results.setdefault((q, side), AnswerTiming())
                        first_token, first_audio, written, total, audio = ask(client, url, character_id, question)
                        timing.first_token.append(first_token)
                        timing.first_audio.append(first_audio)
                        timing.written.append(written)
                        timing.total.append(total)
                        timing.audio.append(audio)
                        bar.advance(task)
                    start = time.perf_counter()
                    first = 0.0
                    messages = build_messages(name="Keeper", question=question, passages=[], style_examples=[])
                    for _ in raw.stream(messages, LLMConfig(**config)):
                        first = first or time.perf_counter() - start
                    timing = results.setdefault((q, "model"), AnswerTiming())
                    timing.first_token.append(first)
                    timing.written.append(time.perf_counter() - start)
                    bar.advance(task)
        rss_after, rss_peak = memory_mb(proc.pid)

    def med(values: list[float]) -> str:
        return f"{statistics.median(values):.2f} s" if values else "-"

    table = Table(title=f"a spoken answer (medians of {rounds} rounds)")
    for col in ("question", "path", "first token", "first audio", "text written", "total", "audio"):
        table.add_column(col, justify="right")
    labels = {
        "stream": "/ask-question-stream (speaks while writing)",
        "whole": "/ask-question-text, then GET audio_url",
        "model": "the model alone in process (no retrieval, no speech)",
    }
    for q, question in enumerate(CHARACTER_QUESTIONS):
        for side in ("stream", "whole", "model"):
            t = results[(q, side)]
            table.add_row(
                question if side == "stream" else "",
                labels[side],
                med(t.first_token),
                med(t.first_audio),
                med(t.written),
                med(t.total),
                med(t.audio),
            )
    console.print(table)
    console.print(
        f"server RSS: {rss_idle:.0f} MiB with the character loaded, {rss_after:.0f} after, peak {rss_peak:.0f}"
    )


# -- the question-answering measure (--qa) ---------------------------------------------------------

SHIPPED_QA = Path(__file__).resolve().parent / "qa" / "questions.json"
"""The question set that ships with Parla: four invented subjects in TXT, Markdown, JSON and PDF."""

TARGET_ACCURACY = 0.90
TARGET_UNSUPPORTED = 0.05
TARGET_REFUSAL = 0.80
SUPPORTED_SHARE = 0.75
"""A sentence is supported when this share of its content words is in the knowledge base (and
every number and name it states is)."""

SUPPORT_DEFINITION = (
    "an answer is supported when it declines, or when each of its sentences has every number and name "
    "(capitalised word, spelt-out number) and at least 75% of its content words (lower case, stop words "
    "removed, crudely stemmed) in the knowledge file's text or the question, the character's own name "
    "allowed; unsupported rate = unsupported answers / all questions"
)
"""How the bench decides that an answer is unsupported, shown in its output and help."""


class QAError(ValueError):
    """The question set cannot be used; the message says why."""


@dataclass(frozen=True)
class QAQuestion:
    question: str
    answers: list[str] | None
    """``None``: the knowledge base does not say; the character should decline."""


@dataclass(frozen=True)
class QASet:
    name: str
    knowledge: Path
    character: dict[str, Any]
    questions: list[QAQuestion]

    def knowledge_text(self) -> str:
        """The knowledge file as the server reads it (the PDF through pypdf too)."""
        from parla.knowledge.documents import passages

        return "\n".join(passages(self.knowledge.read_bytes(), self.knowledge.name))


def load_qa(path: Path) -> list[QASet]:
    """A question set file: ``{"sets": [{"name", "knowledge", "character": {"name", ...},
    "questions": [{"question", "answers": [...] | null}]}]}``, knowledge files relative to it."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        sets = []
        for raw in data["sets"]:
            knowledge = path.parent / raw["knowledge"]
            if not knowledge.is_file():
                raise QAError(f"set {raw['name']!r}: no knowledge file {knowledge}")
            questions = [QAQuestion(str(q["question"]), q["answers"]) for q in raw["questions"]]
            if not questions:
                raise QAError(f"set {raw['name']!r} has no questions")
            sets.append(QASet(str(raw["name"]), knowledge, dict(raw["character"]), questions))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise QAError(f"cannot read {path}: {exc}") from None
    except (KeyError, TypeError) as exc:
        raise QAError(f"{path} is not a question set (missing or wrong {exc})") from None
    if not sets:
        raise QAError(f"{path} has no sets")
    return sets


def is_correct(text: str, answers: list[str]) -> bool:
    """Exact-answer accuracy: one expected string appears in the reply (case and whitespace aside)."""
    said = normalised(text)
    return any(normalised(answer) in said for answer in answers)


def unsupported_terms(text: str, knowledge: str, question: str, own_name: str) -> list[str]:
    """What an answer states that the knowledge base does not (empty: supported); see ``SUPPORT_DEFINITION``."""
    allowed = content_words(knowledge) | content_words(question) | content_words(own_name)
    allowed_keys = allowed | key_terms(question)
    missing: list[str] = []
    for sentence in re.split(r"(?<=[.!?])\s+", text.strip()):
        words = content_words(sentence)
        if not words:
            continue
        absent_keys = sorted(key_terms(sentence) - allowed_keys)
        absent = words - allowed
        if absent_keys or len(words - absent) < SUPPORTED_SHARE * len(words):
            missing += absent_keys or sorted(absent)
    return missing


@dataclass
class QAResult:
    set_name: str
    question: str
    answers: list[str] | None
    text: str
    source: str | None
    declined: bool
    correct: bool
    unsupported: list[str]
    first_token: float
    first_audio: float
    total: float

    @property
    def answerable(self) -> bool:
        return self.answers is not None


def _ask_qa(
    client: httpx.Client, url: str, character_id: int, question: str
) -> tuple[str, str | None, float, float, float]:
    """``/ask-question-stream``: (final text, answer_source if the server says, first token, first audio, total)."""
    start = time.perf_counter()
    marks: dict[str, float] = {}
    final: dict[str, Any] = {}
    body = {"character_id": character_id, "question": question}
    with client.stream("POST", f"{url}/ask-question-stream", json=body, timeout=300) as response:
        if response.status_code >= 400:
            raise RuntimeError(f"{question!r}: {response.status_code} {response.read().decode(errors='replace')}")
        for line in response.iter_lines():
            if not line.startswith("data:"):
                continue
            event = json.loads(line[5:])
            marks.setdefault(event["type"], time.perf_counter() - start)
            if event["type"] == "error":
                raise RuntimeError(f"{question!r}: {event.get('detail')}")
            if event["type"] == "speech.audio.done":
                final = event
    total = time.perf_counter() - start
    text = str(final.get("text_response") or "")
    source = final.get("answer_source")
    return (
        text,
        str(source) if source else None,
        marks.get("answer.delta", marks.get("answer.done", total)),
        marks.get("speech.audio.delta", total),
        total,
    )


def _rate(part: int, whole: int) -> float | None:
    return part / whole if whole else None


def qa_summary(results: list[QAResult]) -> dict[str, Any]:
    answerable = [r for r in results if r.answerable]
    unanswerable = [r for r in results if not r.answerable]
    spoken = [r.first_audio for r in results if not r.declined] or [r.first_audio for r in results]
    return {
        "questions": len(results),
        "answerable": len(answerable),
        "unanswerable": len(unanswerable),
        "accuracy": _rate(sum(r.correct for r in answerable), len(answerable)),
        "unsupported_rate": _rate(sum(bool(r.unsupported) for r in results), len(results)),
        "refusal_accuracy": _rate(sum(r.declined for r in unanswerable), len(unanswerable)),
        "first_token_median_s": statistics.median(r.first_token for r in results) if results else None,
        "first_audio_median_s": statistics.median(r.first_audio for r in results) if results else None,
        "first_audio_answers_median_s": statistics.median(spoken) if spoken else None,
        "sources": {s: sum(r.source == s for r in results) for s in sorted({r.source for r in results if r.source})},
    }


def _pct(value: float | None, ok: bool | None = None) -> str:
    if value is None:
        return "-"
    mark = "" if ok is None else (" [green]✓[/green]" if ok else " [red]✗[/red]")
    return f"{value:.0%}{mark}"


def _secs(value: float | None) -> str:
    return f"{value:.2f} s" if value is not None else "-"


def _qa_row(table: Table, name: str, s: dict[str, Any]) -> None:
    accuracy, unsupported, refusal = s["accuracy"], s["unsupported_rate"], s["refusal_accuracy"]
    table.add_row(
        name,
        f"{s['answerable']} + {s['unanswerable']}",
        _pct(accuracy, None if accuracy is None else accuracy >= TARGET_ACCURACY),
        _pct(unsupported, None if unsupported is None else unsupported <= TARGET_UNSUPPORTED),
        _pct(refusal, None if refusal is None else refusal >= TARGET_REFUSAL),
        _secs(s["first_token_median_s"]),
        _secs(s["first_audio_median_s"]),
        _secs(s["first_audio_answers_median_s"]),
        ", ".join(f"{k} {v}" for k, v in s["sources"].items()) or "- (not reported)",
    )


def run_qa_bench(
    *, qa_path: Path, console: Console, json_path: Path | None = None, llm_config: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Each set's character (embedded model unless the set's ``character.llm_config`` says otherwise,
    its knowledge file, a preset voice) is asked every question through the server's
    ``/ask-question-stream``; the spoken answers are scored. Returns what ``json_path`` gets."""
    sets = load_qa(qa_path)
    results: list[QAResult] = []
    total_questions = sum(len(s.questions) for s in sets)
    with (
        serve_in_child() as (url, _proc),
        httpx.Client(timeout=300) as client,
        Progress(console=console, transient=True) as bar,
    ):
        task = bar.add_task("asking", total=total_questions)
        for qa_set in sets:
            character = qa_set.character
            config = {**dict(character.get("llm_config") or {}), **(llm_config or {})}
            created = client.post(
                f"{url}/create-character",
                data={
                    "name": str(character["name"]),
                    "llm_config": json.dumps(config),
                    "voice_cloning_settings": json.dumps({"voice": character.get("voice", "nova")}),
                },
                files={"knowledge_base_file": (qa_set.knowledge.name, qa_set.knowledge.read_bytes())},
            )
            if created.status_code >= 400:
                raise RuntimeError(f"set {qa_set.name!r}: the character was refused: {created.text}")
            character_id = int(created.json()["character_id"])
            client.post(f"{url}/load-character", json={"character_id": character_id}).raise_for_status()
            knowledge = qa_set.knowledge_text()
            own_words = config.get("unknown_answer")
            for item in qa_set.questions:
                text, source, first_token, first_audio, total = _ask_qa(client, url, character_id, item.question)
                declined = is_decline(text, own_words)
                results.append(
                    QAResult(
                        set_name=qa_set.name,
                        question=item.question,
                        answers=item.answers,
                        text=text,
                        source=source,
                        declined=declined,
                        correct=item.answers is not None and is_correct(text, item.answers),
                        unsupported=[]
                        if declined
                        else unsupported_terms(text, knowledge, item.question, str(character["name"])),
                        first_token=first_token,
                        first_audio=first_audio,
                        total=total,
                    )
                )
                bar.advance(task)
            client.delete(f"{url}/delete-character/{character_id}")

    summary = {s.name: qa_summary([r for r in results if r.set_name == s.name]) for s in sets}
    overall = qa_summary(results)
    table = Table(title=f"characters answering from their knowledge ({escape(str(qa_path))})")
    for col in (
        "set",
        "answerable + not",
        f"accuracy (≥{TARGET_ACCURACY:.0%})",
        f"unsupported (≤{TARGET_UNSUPPORTED:.0%})",
        f"declined when unanswerable (≥{TARGET_REFUSAL:.0%})",
        "first token",
        "first audio",
        "first audio (answers)",
        "answered by",
    ):
        table.add_column(col, justify="right")
    for name, s in summary.items():
        _qa_row(table, name, s)
    _qa_row(table, "[bold]overall[/bold]", overall)
    console.print(table)

    misses = Table(title="answers that missed (wrong, unsupported, or not declined)")
    for col in ("set", "question", "expected", "answer", "source", "why"):
        misses.add_column(col, overflow="fold")
    for r in results:
        why = []
        if r.answerable and not r.correct:
            why.append("declined" if r.declined else "wrong")
        if not r.answerable and not r.declined:
            why.append("not declined")
        if r.unsupported:
            why.append("unsupported: " + ", ".join(r.unsupported[:6]))
        if why:
            expected = " | ".join(r.answers) if r.answers is not None else "(decline)"
            misses.add_row(r.set_name, r.question, expected, escape(r.text), str(r.source), "; ".join(why))
    if misses.row_count:
        console.print(misses)
    console.print(
        "accuracy: an expected answer appears in the spoken answer (case and whitespace aside), over answerable"
        " questions; " + SUPPORT_DEFINITION + "; declined: the answer says the character does not know"
        " (first audio and first token are medians over every question; 'answers': those not declined)",
        highlight=False,
    )
    result = {
        "qa_file": str(qa_path),
        "targets": {"accuracy": TARGET_ACCURACY, "unsupported": TARGET_UNSUPPORTED, "refusal": TARGET_REFUSAL},
        "support_definition": SUPPORT_DEFINITION,
        "overall": overall,
        "sets": summary,
        "answers": [
            {
                "set": r.set_name,
                "question": r.question,
                "expected": r.answers,
                "answer": r.text,
                "answer_source": r.source,
                "declined": r.declined,
                "correct": r.correct,
                "unsupported_terms": r.unsupported,
                "first_token_s": round(r.first_token, 3),
                "first_audio_s": round(r.first_audio, 3),
                "total_s": round(r.total, 3),
            }
            for r in results
        ],
    }
    if json_path is not None:
        json_path.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
        console.print(f"written to {escape(str(json_path))}", highlight=False)
    return result
