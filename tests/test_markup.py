"""Pauses, SSML and phonemes in the text to speak (issue 21, part 2): what the parser makes of
them, and the silence and refusals a client gets."""

from __future__ import annotations

import httpx
import pytest

from parla.audio.decode import decode_audio
from parla.text.markup import MarkupError, parse, speech_pieces
from tests.conftest import Listener, speech_body


def test_pause_tags_and_breaks_become_pauses_after_the_text_before_them() -> None:
    pieces = speech_pieces("[pause:0.3] Hello there. [pause:800ms] How are you? <break time='1s'/> Fine.")
    assert pieces.lead == pytest.approx(0.3)
    assert pieces.texts == ["Hello there.", "How are you?", "Fine."]
    assert pieces.pauses == pytest.approx([0.8, 0.0, 0.0]) or pieces.pauses[0] == pytest.approx(0.8)
    plain = speech_pieces('A <break time="1.5s"/> b <break strength="strong"/> c [pause:99]')
    assert plain.pauses == pytest.approx([1.5, 0.75, 10.0])  # capped at ten seconds


def test_ssml_subset_is_read() -> None:
    ssml = (
        "<speak><p>Call <say-as interpret-as='characters'>abc</say-as> on "
        "<say-as interpret-as='date' format='dmy'>25/12/2024</say-as>.</p>"
        "<prosody rate='50%'>Slowly.</prosody> <sub alias='World Wide Web'>WWW</sub> "
        "<say-as interpret-as='digits'>42</say-as> <phoneme alphabet='ipa' ph='pɑːɹlə'>Parla</phoneme></speak>"
    )
    runs = parse(ssml)
    assert runs[0].text == "Call A B C on December twenty-fifth, twenty twenty-four."
    assert runs[0].pause_after == pytest.approx(0.6)  # a paragraph's pause
    assert (runs[1].text, runs[1].rate) == ("Slowly.", 0.5)
    assert runs[2].text == "World Wide Web four two [[ pɑːɹlə ]]"
    pieces = speech_pieces(ssml)
    assert any("[[ pɑːɹlə ]]" in text for text in pieces.texts) and pieces.has_phonemes


@pytest.mark.parametrize(
    ("ssml", "needle"),
    [
        ("<speak>\nHello <emphasis>there</emphasis></speak>", "line 2: <emphasis> is not in the SSML"),
        ("<speak>\n\nHi <break time='1s'>\n</speak>", "line 4, column 3: the SSML is not well-formed"),
        ("<speak><prosody volume='loud'>x</prosody></speak>", "only rate is read"),
        ("<speak><break time='soon'/></speak>", "a pause of 'soon'"),
        ("<speak><say-as interpret-as='date' format='dmy'>31/31/2024</say-as></speak>", "is not a date"),
        ("<!DOCTYPE x [<!ENTITY a 'b'>]><speak>&a;</speak>", "DOCTYPE"),
    ],
)
def test_malformed_ssml_is_refused_naming_the_line(ssml: str, needle: str) -> None:
    with pytest.raises(MarkupError, match=needle):
        parse(ssml)


async def test_a_pause_adds_silence_of_the_asked_length(api: httpx.AsyncClient) -> None:
    async def duration(text: str) -> float:
        body = speech_body(input=text, voice="joe", model="mock", response_format="wav", seed=3)
        response = await api.post("/v1/audio/speech", json=body)
        assert response.status_code == 200, response.text
        samples, rate = decode_audio(response.content)
        return len(samples) / rate

    plain = await duration("Hello there. How are you?")
    for tagged, pause in (
        ("Hello there. [pause:0.8] How are you?", 0.8),
        ('Hello there. <break time="1200ms"/> How are you?', 1.2),
        ('<speak>Hello there. <break time="500ms"/> How are you?</speak>', 0.5),
    ):
        assert await duration(tagged) - plain == pytest.approx(pause, abs=0.05), tagged


async def test_markup_errors_and_phonemes_where_they_cannot_be_read_are_400s(api: httpx.AsyncClient) -> None:
    bad = await api.post("/v1/audio/speech", json=speech_body(input="<speak>\nHi <foo/></speak>", model="mock"))
    assert bad.status_code == 400 and "line 2: <foo>" in bad.json()["detail"]
    ssml = "<speak>Say <phoneme alphabet='ipa' ph='hɛloʊ'>hello</phoneme></speak>"
    refused = await api.post("/v1/audio/speech", json=speech_body(input=ssml, model="mock"))
    assert refused.status_code == 400
    assert "cannot read phonemes" in refused.json()["detail"] and "piper" in refused.json()["detail"]


@pytest.mark.model
@pytest.mark.parametrize("voice", ["joe", "alloy"])
def test_pauses_are_exact_on_the_real_voices(client: httpx.Client, voice: str) -> None:
    def duration(text: str) -> float:
        body = speech_body(input=text, voice=voice, response_format="wav", seed=3)
        response = client.post("/v1/audio/speech", json=body)
        assert response.status_code == 200, response.text
        samples, rate = decode_audio(response.content)
        return len(samples) / rate

    plain = duration("The lamp is on the table. The door is open.")
    paused = duration("The lamp is on the table. [pause:0.8] The door is open.")
    assert paused - plain == pytest.approx(0.8, abs=0.05)


# -- the pronunciation dictionary -------------------------------------------------------------------


async def test_pronunciation_entries_are_kept_changed_and_removed(api: httpx.AsyncClient) -> None:
    made = await api.post("/v1/pronunciations", json={"word": "Nguyen", "respelling": "win"})
    assert made.status_code == 201, made.text
    entry = made.json()
    assert (await api.post("/v1/pronunciations", json={"word": "nguyen", "respelling": "new"})).status_code == 409
    nothing = await api.post("/v1/pronunciations", json={"word": "Nguyen"})
    assert nothing.status_code == 422 and "respelling" in nothing.json()["detail"]
    brackets = await api.post("/v1/pronunciations", json={"word": "x", "phonemes": "[[ a ]]"})
    assert brackets.status_code == 422
    listed = (await api.get("/v1/pronunciations")).json()["pronunciations"]
    assert any(e["id"] == entry["id"] for e in listed)
    changed = await api.patch(f"/v1/pronunciations/{entry['id']}", json={"phonemes": "wˈɪn"})
    assert changed.status_code == 200 and changed.json()["phonemes"] == "wˈɪn"
    assert (await api.delete(f"/v1/pronunciations/{entry['id']}")).status_code == 204
    assert (await api.delete(f"/v1/pronunciations/{entry['id']}")).status_code == 404
    unknown_voice = await api.post("/v1/pronunciations", json={"word": "x", "respelling": "y", "voice": "nobody"})
    assert unknown_voice.status_code == 404


def test_the_dictionary_rewrites_words_not_markup() -> None:
    pieces = speech_pieces(
        "<speak>I said Nguyen, not nguyenese. <break time='1s'/> NGUYEN again.</speak>",
        rewrite=lambda text: __import__("re").sub(r"(?i)(?<!\w)nguyen(?!\w)", "win", text),
    )
    assert pieces.texts[0] == "I said win, not nguyenese." and "win again." in pieces.texts[-1]


@pytest.mark.model
def test_a_dictionary_entry_changes_what_whisper_hears(client: httpx.Client, listener: Listener) -> None:
    """A made-up word, respelled and then given as phonemes: what the listener hears follows."""
    text = "Please bring me the zorblat now."

    def heard() -> str:
        response = client.post("/v1/audio/speech", json=speech_body(input=text, voice="joe", response_format="wav"))
        assert response.status_code == 200, response.text
        return listener.transcribe(response.content).lower()

    assert "bicycle" not in heard()
    entry = client.post("/v1/pronunciations", json={"word": "zorblat", "respelling": "bicycle"}).json()
    try:
        assert "bicycle" in heard()
        client.patch(f"/v1/pronunciations/{entry['id']}", json={"respelling": None, "phonemes": "tˈeɪbəl"})
        assert "table" in heard()  # Piper reads the phonemes
    finally:
        client.delete(f"/v1/pronunciations/{entry['id']}")
    assert "bicycle" not in heard()
