"""The shipped question-answering set (src/parla/bench/qa): every answer is in its knowledge file,
as parla's own document loader reads it (the PDF through pypdf), and some questions have none."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from parla.knowledge.documents import passages

QA = Path(__file__).resolve().parent.parent / "src" / "parla" / "bench" / "qa"


def _sets() -> list[dict[str, Any]]:
    data = json.loads((QA / "questions.json").read_text(encoding="utf-8"))
    assert isinstance(data["description"], str) and data["description"]
    sets: list[dict[str, Any]] = data["sets"]
    return sets


def _loaded_text(filename: str) -> str:
    """The knowledge file's text as the loader gives it, whitespace made single spaces, lower case."""
    return re.sub(r"\s+", " ", " ".join(passages((QA / filename).read_bytes(), filename))).lower()


def test_the_set_is_large_enough_with_unanswerable_questions() -> None:
    sets = _sets()
    assert {s["knowledge"].rsplit(".", 1)[1] for s in sets} == {"txt", "md", "json", "pdf"}
    assert len({s["name"] for s in sets}) == len(sets)
    questions = [q for s in sets for q in s["questions"]]
    assert len(questions) >= 48
    assert all(len(s["questions"]) >= 12 for s in sets)
    assert sum(q["answers"] is None for q in questions) >= 10
    assert all(any(q["answers"] is None for q in s["questions"]) for s in sets)


@pytest.mark.parametrize("qa_set", _sets(), ids=lambda s: str(s["name"]))
def test_every_answer_is_in_the_knowledge_file(qa_set: dict[str, Any]) -> None:
    assert (QA / qa_set["knowledge"]).is_file()
    character = qa_set["character"]
    assert all(isinstance(character[key], str) and character[key] for key in ("name", "description", "personality"))
    text = _loaded_text(qa_set["knowledge"])
    seen: set[str] = set()
    for question in qa_set["questions"]:
        assert question["question"].endswith("?") and question["question"] not in seen
        seen.add(question["question"])
        answers = question["answers"]
        if answers is None:  # unanswerable: the knowledge base does not say
            continue
        assert isinstance(answers, list) and answers, question
        for answer in answers:
            assert isinstance(answer, str) and answer.strip()
            assert answer.lower() in text, f"{answer!r} ({question['question']}) is not in {qa_set['knowledge']}"
