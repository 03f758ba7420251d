"""Text normalisation reads like a person would; splitting keeps every word, first piece short."""

from __future__ import annotations

import pytest

from parla.text import normalize_text, split_for_speech, split_sentences
from parla.text.dialogue import script_line, split_cues
from parla.text.split import MAX_PIECE_CHARS


@pytest.mark.parametrize(
    ("written", "spoken"),
    [
        ("It costs $3.50.", "It costs three dollars and fifty cents."),
        ("A €1 coin and £20", "A one euro coin and twenty pounds"),
        ("$2.5 million", "two point five million dollars"),
        ("On 2024-01-15 we met.", "On January fifteenth, twenty twenty-four we met."),
        ("Born 12/25/1999.", "Born December twenty-fifth, nineteen ninety-nine."),
        ("See you Jan 5th", "See you January fifth"),
        ("Meet at 3:30 pm.", "Meet at three thirty P M."),
        ("Wake at 7am", "Wake at seven A M"),
        ("It's 10:05 now", "It's ten oh five now"),
        ("the 21st time", "the twenty-first time"),
        ("12.5% more", "twelve point five percent more"),
        ("1,234 people", "one thousand two hundred and thirty-four people"),
        ("In 1999 and the 1990s", "In nineteen ninety-nine and the nineteen nineties"),
        ("It was -5 °C", "It was minus five degrees Celsius"),
        ("Dr. Smith met Mr. Jones", "Doctor Smith met Mister Jones"),
        ("No. 5 on Main St. is near St. Paul.", "number five on Main Street is near Saint Paul."),
        ("fruit, e.g. apples", "fruit, for example apples"),
        ("R&D", "R and D"),
        ("Visit https://example.com/docs.", "Visit example dot com slash docs."),
        ("Mail jane.doe@example.org today", "Mail jane dot doe at example dot org today"),
        ("I said no. Then I left.", "I said no. Then I left."),
    ],
)
def test_normalisation_reads_like_a_person(written: str, spoken: str) -> None:
    assert normalize_text(written) == spoken


def test_plain_prose_is_unchanged() -> None:
    prose = "The boy was there when the sun rose. A rod is used to catch pink salmon."
    assert normalize_text(prose) == prose


def test_sentences_split_at_ends_and_paragraphs() -> None:
    text = 'He said "Go!" Then he left. Really?\n\nA new paragraph without a stop\n\nAnd another.'
    assert split_sentences(text) == [
        'He said "Go!"',
        "Then he left.",
        "Really?",
        "A new paragraph without a stop",
        "And another.",
    ]


def test_first_piece_is_cut_at_a_clause_boundary() -> None:
    text = (
        "When the sunlight strikes raindrops in the air, they act as a prism and form a rainbow. "
        "The rainbow is a division of white light into many beautiful colors."
    )
    pieces = split_for_speech(text)
    assert pieces[0] == "When the sunlight strikes raindrops in the air,"
    assert pieces[1] == "they act as a prism and form a rainbow."
    assert " ".join(pieces).split() == text.split()


def test_short_first_sentence_is_not_cut() -> None:
    assert split_for_speech("Hello, world. How are you?") == ["Hello, world.", "How are you?"]


def test_long_sentences_are_cut_below_the_limit_keeping_every_word() -> None:
    clause = "and then the long road went on past the hills, "
    text = ("It began " + clause * 40).strip() + " until it ended."
    pieces = split_for_speech(text)
    assert len(pieces) > 3
    assert all(len(p) <= MAX_PIECE_CHARS for p in pieces)
    assert " ".join(pieces).split() == text.split()


def test_text_without_words_has_no_pieces() -> None:
    assert split_for_speech("  ... !!! ") == []


@pytest.mark.parametrize(
    ("text", "parts"),
    [
        ("Ha (laughs) yes", ["Ha", "(laughs)", "yes"]),
        # Punctuation left after a cue ends the text before it, and is never a part of its own.
        ("Fine, thank you (laughs).", ["Fine, thank you.", "(laughs)"]),
        ("Well (SIGHS)...", ["Well...", "(sighs)"]),
        ("Wow! (laughs)!", ["Wow!", "(laughs)"]),
        ("(laughs) !", ["(laughs)"]),
        ("a (laughs) . (sighs) b", ["a.", "(laughs)", "(sighs)", "b"]),
        ("Hi, (laughs), yes. (sighs). Fine", ["Hi,", "(laughs)", "yes.", "(sighs)", "Fine"]),
    ],
)
def test_cues_split_from_text_leave_no_part_without_words(text: str, parts: list[str]) -> None:
    assert split_cues(text) == parts


def test_a_script_line_keeps_cues_where_they_were_or_takes_them_out() -> None:
    said = "  Fine, thank  you (Laughs). [S2] Really "
    assert script_line(said, cues=True) == "Fine, thank you (laughs). Really"
    assert script_line(said, cues=False) == "Fine, thank you. Really"


# -- other languages ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("language", "written", "said"),
    [
        (
            "fr",
            "Il coûte 3,50 € et 1.000 personnes, 25 % en 2024.",
            "Il coûte trois euros cinquante et mille personnes, vingt-cinq pour cent en deux mille vingt-quatre.",
        ),
        (
            "de",
            "Es kostet €5 und 1.5 Liter & 12 000 Leute, -3 Grad.",
            "Es kostet fünf Euro und eins Komma fünf Liter und zwölftausend Leute, minus drei Grad.",
        ),
        ("es-MX", "Son 2 gatos y 1.250,99 €.", "Son dos gatos y mil doscientos cincuenta euros noventa y nueve."),
        ("it", "Costa 7% in più.", "Costa sette per cento in più."),
        ("pt-br", "São 3 reais, 10 %.", "São três reais, dez por cento."),
        # English rules stay English: "Dr." is not a German doctor, "$" not dollars in French.
        ("de", "Dr. Müller", "Dr. Müller"),
        ("ja", "3月5日", "3月5日"),  # kept as written: the engine's front end reads it
    ],
)
def test_numbers_money_and_percentages_are_said_in_the_language(language: str, written: str, said: str) -> None:
    assert normalize_text(written, language) == said


def test_sentences_end_at_cjk_marks_and_spanish_opening_marks_stay_with_their_sentence() -> None:
    assert split_for_speech("今天天气很好。我们去公园散步吧！你呢？好的。") == [
        "今天天气很好。",
        "我们去公园散步吧！",
        "你呢？",
        "好的。",
    ]
    assert split_for_speech("「こんにちは。」と彼は言った。さようなら。") == [
        "「こんにちは。」",
        "と彼は言った。",
        "さようなら。",
    ]
    assert split_for_speech("¿Cómo estás? ¡Muy bien! Gracias.") == ["¿Cómo estás?", "¡Muy bien!", "Gracias."]
