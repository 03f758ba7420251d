"""Characters answer from their knowledge: the embedded model's answer is checked against the
retrieved passages, replaced by the passage sentence that answers when it is not supported, and a
question the knowledge base does not answer is declined in the character's words, unless the
character answers from general knowledge. And ``parla bench characters --qa`` measures how often.

The check is pure (``parla.characters.grounding``) and tested as such; the answers are the real
embedded SmolLM2 on the live server (``model``)."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from parla.bench.characters import SHIPPED_QA, QAError, is_correct, load_qa, unsupported_terms
from parla.characters.grounding import DEFAULT_UNKNOWN_ANSWER, Grounding, answer_kind, speakable
from parla.characters.words import content_words, is_decline, key_terms
from parla.knowledge.store import Passage

SHIP = """The Meridian is a cargo ship that sails between Halden and Porto Vell.
The captain of the Meridian is Agnes Holloway. She has commanded the ship since 2011.

The ship's cat is named Biscuit. Biscuit is a ginger tom who sleeps in the chart room.

The Meridian carries timber and salt. Her crew numbers fourteen sailors.
"""
"""The issue's four-paragraph knowledge base: a ship, its captain, its cat, its cargo."""

SHIP_PASSAGES = [Passage(block.strip(), "ship.txt", 0.5) for block in SHIP.split("\n\n")]
"""Three passages, as retrieval might return them: the ship and captain, the cat, the cargo and crew."""


def _grounding(question: str, passages: list[Passage] = SHIP_PASSAGES) -> Grounding:
    return Grounding(question, passages, "Quartermaster")


def _checked(question: str, model_says: str) -> tuple[str, Grounding]:
    grounding = _grounding(question)
    return " ".join(grounding.pieces(word + " " for word in model_says.split(" "))), grounding


# -- the check, as a pure function ---------------------------------------------------------------


def test_a_supported_answer_is_kept_as_the_model_wrote_it() -> None:
    said, grounding = _checked("What is the name of the ship's cat?", "The ship's cat is named Biscuit.")
    assert said == "The ship's cat is named Biscuit."
    assert grounding.source == "generated"
    [support] = grounding.supporting_passages()
    assert support["document"] == 2 and support["sentence"] == "The ship's cat is named Biscuit."


def test_an_invented_answer_is_replaced_by_the_passage_sentence() -> None:
    # The answer: true-sounding, and not what the knowledge base says.
    said, grounding = _checked(
        "What is the name of the ship's cat?",
        "The ship's cat is not a cat, but rather a marine mammal, the Sea Dog.",
    )
    assert said == "The ship's cat is named Biscuit."
    assert grounding.source == "extracted"
    assert grounding.supporting_passages()[0]["text"] == SHIP_PASSAGES[1].text


def test_an_invented_captain_is_replaced_and_a_later_invention_cut() -> None:
    said, grounding = _checked("Who is the captain of the Meridian?", "The captain of the Meridian is John Harper.")
    assert "Agnes Holloway" in said and "Harper" not in said and grounding.source == "extracted"
    # A true first sentence is kept; the invented one after it is not said.
    said, grounding = _checked(
        "Who is the captain of the Meridian?",
        "The captain of the Meridian is Agnes Holloway. She was born in Lisbon in 1970.",
    )
    assert said == "The captain of the Meridian is Agnes Holloway." and grounding.source == "generated"


def test_a_true_sentence_that_does_not_answer_is_not_an_answer() -> None:
    said, grounding = _checked("What is the name of the ship's cat?", "The Meridian carries timber and salt.")
    assert "Biscuit" in said and grounding.source == "extracted"
    # Part of a figure is not the figure.
    said, _ = _checked("Since which year has she commanded the ship?", "She has commanded the ship since 20.")
    assert "2011" in said


def test_the_value_the_passage_gives_the_subject_is_the_answer() -> None:
    lighthouse = [Passage("The lighthouse was built in 1887. It is white with a red lantern room.", "kb.md", 0.5)]
    grounding = Grounding("What colour is the lantern room?", lighthouse, "Keeper")
    said = " ".join(grounding.pieces(iter(["The lantern room is white. "])))
    assert "red" in said and grounding.source == "extracted"
    # A year is no age, and a bare number no length.
    assert not _grounding("How old is the captain?").answerable
    assert not Grounding("How long is the pier?", [Passage("The pier was built in 1901.", "kb", 0.5)], "K").answerable


def test_what_the_knowledge_base_does_not_say_is_declined() -> None:
    for question in ("What colour is the Meridian?", "Who cooks for the crew?", "How old is Biscuit?"):
        grounding = _grounding(question)
        assert not grounding.answerable, question
        assert grounding.decline() == DEFAULT_UNKNOWN_ANSWER and grounding.source == "declined"
    assert _grounding("How many sailors are in the crew?").answerable
    # A question to the character that its knowledge does not touch is chat, not a fact to check.
    assert _grounding("How are you today?").is_chat
    assert not _grounding("Do you know the captain of the Meridian?").is_chat


@pytest.mark.parametrize(
    ("question", "kind"),
    [
        ("Who is the captain?", "person"),
        ("What colour is the ferry?", "colour"),
        ("In which year was it built?", "year"),
        ("How much is a rye loaf?", "number"),
        ("On which day of the week is it closed?", "day"),
        ("What is the dog called?", "name"),
        ("When does the ferry leave?", "time"),
        ("How do visitors get there?", "any"),
        ("How old is the captain?", "age"),
        ("How long is the tunnel?", "measure"),
    ],
)
def test_the_kind_of_answer_a_question_asks_for(question: str, kind: str) -> None:
    assert answer_kind(question) == kind


def test_words_as_grounding_compares_them() -> None:
    assert content_words("The ferries were baked, 2,940 metres!") == {"ferry", "bak", "2940", "metr"}
    assert content_words("the bakery") == content_words("a baker")
    assert key_terms("Biscuit sleeps at seven with Agnes.") == {"biscuit", "seven", "agn"}
    assert is_decline("Well, I'm sorry, I don't know that.") and is_decline("No idea, friend.")
    assert is_decline("Arr, the sea keeps that secret.", "the sea keeps that secret")
    assert not is_decline("The captain is Agnes Holloway.")
    assert speakable("price: the Rye loaf costs 4 euros") == "The Rye loaf costs 4 euros."


# -- the bench's scoring -------------------------------------------------------------------------


def test_the_bench_scores_exact_and_unsupported_answers() -> None:
    assert is_correct("It leaves at  Seven o'clock, friend.", ["seven o'clock"])
    assert not is_correct("It leaves at eight.", ["seven o'clock", "7:00"])
    question = "What is the name of the ship's cat?"
    assert unsupported_terms("The ship's cat is named Biscuit.", SHIP, question, "Quartermaster") == []
    invented = unsupported_terms("The cat is a marine mammal, the Sea Dog.", SHIP, question, "Quartermaster")
    assert "sea" in invented and "dog" in invented


def test_question_sets_are_checked(tmp_path: Path) -> None:
    sets = load_qa(SHIPPED_QA)
    assert len(sets) == 4 and sum(len(s.questions) for s in sets) >= 40
    assert "Ida Marsh" in sets[0].knowledge_text()
    (tmp_path / "bad.json").write_text('{"sets": [{"name": "x", "knowledge": "missing.txt"}]}')
    with pytest.raises(QAError, match=r"missing\.txt"):
        load_qa(tmp_path / "bad.json")
    (tmp_path / "worse.json").write_text("{nope")
    with pytest.raises(QAError, match="cannot read"):
        load_qa(tmp_path / "worse.json")


def test_bench_characters_qa_refuses_a_file_that_is_not_a_question_set(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from parla.cli import app

    (tmp_path / "qa.json").write_text('{"sets": []}')
    result = CliRunner().invoke(app, ["bench", "characters", "--qa", str(tmp_path / "qa.json")])
    assert result.exit_code == 2 and "has no sets" in " ".join(result.output.split())


@pytest.mark.parametrize(
    ("llm_config", "named"),
    [({"general_knowledge": "maybe"}, "general_knowledge"), ({"unknown_answer": "x" * 501}, "unknown_answer")],
)
async def test_bad_grounding_settings_are_a_400_that_names_them(
    api: httpx.AsyncClient, llm_config: dict[str, Any], named: str
) -> None:
    response = await api.post("/create-character", data={"name": "Bad", "llm_config": json.dumps(llm_config)})
    assert response.status_code == 400 and named in response.json()["detail"], response.text


# -- the real model on the live server -----------------------------------------------------------


def _ship_character(client: httpx.Client, name: str, **llm: Any) -> int:
    created = client.post(
        "/create-character",
        data={
            "name": name,
            "llm_config": json.dumps(llm),
            "voice_cloning_settings": json.dumps({"voice": "nova"}),
        },
        files={"knowledge_base_file": ("ship.txt", SHIP.encode(), "text/plain")},
    )
    assert created.status_code == 200, created.text
    return int(created.json()["character_id"])


@pytest.fixture(scope="module")
def quartermaster(server: Any) -> Iterator[int]:
    with httpx.Client(base_url=server.url, timeout=300) as client:
        character_id = _ship_character(client, "Quartermaster")
        yield character_id
        client.delete(f"/delete-character/{character_id}")


def _ask(client: httpx.Client, character_id: int, question: str) -> dict[str, Any]:
    response = client.post("/ask-question-text", json={"character_id": character_id, "question": question}, timeout=300)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


@pytest.mark.model
def test_the_ships_cat_is_named_from_the_knowledge_base(client: httpx.Client, quartermaster: int) -> None:
    body = _ask(client, quartermaster, "What is the name of the ship's cat?")
    assert "biscuit" in body["text_response"].lower(), body
    assert body["answer_source"] in ("generated", "extracted")
    [support] = body["supporting_passages"]
    assert "Biscuit" in support["sentence"] and support["source"] == "ship.txt"
    assert f"Document {support['document']}: {support['text']}" in body["knowledge_context"]
    assert body["audio_url"] and client.get(body["audio_url"]).status_code == 200


@pytest.mark.model
def test_the_captain_is_named_while_the_answer_streams(client: httpx.Client, quartermaster: int) -> None:
    body = {"character_id": quartermaster, "question": "Who is the captain of the Meridian?"}
    with client.stream("POST", "/ask-question-stream", json=body, timeout=300) as response:
        assert response.status_code == 200
        events = [json.loads(line[5:]) for line in response.iter_lines() if line.startswith("data:")]
    kinds = [e["type"] for e in events]
    assert kinds.index("answer.delta") < kinds.index("speech.audio.delta")
    done = next(e for e in events if e["type"] == "answer.done")
    assert "agnes holloway" in done["text"].lower(), done
    assert "".join(e["delta"] for e in events if e["type"] == "answer.delta").strip() == done["text"]
    assert done["answer_source"] in ("generated", "extracted") and done["supporting_passages"]
    final = events[-1]
    assert final["type"] == "speech.audio.done" and final["text_response"] == done["text"]
    assert final["answer_source"] == done["answer_source"]


@pytest.mark.model
def test_what_the_knowledge_base_does_not_say_gets_the_characters_decline(
    client: httpx.Client, quartermaster: int
) -> None:
    body = _ask(client, quartermaster, "What colour is the Meridian painted?")
    assert body["text_response"] == DEFAULT_UNKNOWN_ANSWER and body["answer_source"] == "declined"
    assert body["supporting_passages"] == [] and body["audio_url"]
    own = _ship_character(client, "Bosun", unknown_answer="Arr, the sea keeps that secret.")
    try:
        assert _ask(client, own, "What colour is the Meridian painted?")["text_response"] == (
            "Arr, the sea keeps that secret."
        )
    finally:
        client.delete(f"/delete-character/{own}")


@pytest.mark.model
def test_a_character_with_general_knowledge_is_not_made_to_decline(client: httpx.Client) -> None:
    scholar = _ship_character(client, "Scholar", general_knowledge=True, temperature=0.0)
    try:
        body = _ask(client, scholar, "What is the capital of France?")
        assert body["answer_source"] == "generated" and body["text_response"]
        assert body["text_response"] != DEFAULT_UNKNOWN_ANSWER
    finally:
        client.delete(f"/delete-character/{scholar}")


@pytest.mark.slow
@pytest.mark.model
def test_bench_characters_qa_measures_a_small_set(tmp_path: Path) -> None:
    (tmp_path / "ship.txt").write_text(SHIP)
    qa = {
        "sets": [
            {
                "name": "ship",
                "knowledge": "ship.txt",
                "character": {"name": "Quartermaster", "description": "-", "personality": "-"},
                "questions": [
                    {"question": "What is the name of the ship's cat?", "answers": ["Biscuit"]},
                    {"question": "Who is the captain of the Meridian?", "answers": ["Agnes Holloway"]},
                    {"question": "What colour is the Meridian painted?", "answers": None},
                ],
            }
        ]
    }
    (tmp_path / "qa.json").write_text(json.dumps(qa))
    out = tmp_path / "qa-result.json"
    result = subprocess.run(
        [sys.executable, "-m", "parla", "bench", "characters", "--qa", str(tmp_path / "qa.json"), "--json", str(out)],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    for heading in ("accuracy (≥90%)", "unsupported (≤5%)", "declined when unanswerable", "first audio", "overall"):
        assert heading in result.stdout
    data = json.loads(out.read_text())
    overall = data["overall"]
    assert overall["questions"] == 3 and overall["answerable"] == 2 and overall["unanswerable"] == 1
    assert overall["accuracy"] == 1.0 and overall["refusal_accuracy"] == 1.0 and overall["unsupported_rate"] == 0.0
    assert overall["first_token_median_s"] > 0 and overall["first_audio_median_s"] > 0
    assert [a["answer_source"] for a in data["answers"]][2] == "declined"
    assert "content words" in data["support_definition"]
