"""Voice blending (issue 21, part 1): ``alloy(2)+Ada(1)`` on every API that takes a voice, spoken
by engines that blend (``clone``: the parts' adaptations averaged), refused by the others."""

from __future__ import annotations

import httpx
import numpy as np
import pytest

from parla.audio.decode import decode_audio
from parla.errors import InvalidInputError
from parla.evaluation import Judge
from parla.services.voices import parse_blend
from tests.conftest import speech_body


def test_blend_syntax_is_read_and_weights_normalised() -> None:
    parts = parse_blend("alloy(2)+Ada(1)") or []
    assert [name for name, _ in parts] == ["alloy", "Ada"]
    assert [weight for _, weight in parts] == pytest.approx([2 / 3, 1 / 3])
    assert parse_blend("nova + shimmer") == [("nova", 0.5), ("shimmer", 0.5)]
    assert parse_blend("nova") is None
    for bad in ("nova(0)+echo", "nova(x)+echo", "+echo", "a+b+c+d+e+f+g+h+i"):
        with pytest.raises(InvalidInputError):
            parse_blend(bad)


async def test_engines_that_cannot_blend_refuse_naming_those_that_can(api: httpx.AsyncClient) -> None:
    response = await api.post("/v1/audio/speech", json=speech_body(voice="alloy(2)+echo(1)", model="mock"))
    assert response.status_code == 400
    assert "cannot blend" in response.json()["detail"] and "clone" in response.json()["detail"]
    unknown = await api.post("/v1/audio/speech", json=speech_body(voice="alloy+nobody", model="mock"))
    assert unknown.status_code == 400 and "in the blend 'alloy+nobody'" in unknown.json()["detail"]


@pytest.mark.model
def test_a_blend_sounds_between_its_parts(client: httpx.Client) -> None:
    """The judge's similarity of the blend to each part lies between the other part's and that
    part's own (a second rendition of it with another seed), and its pitch between theirs."""
    import parselmouth

    judge = Judge()
    text = "The lighthouse keeper rowed across the bay before the storm arrived."

    def render(voice: str, seed: int = 5) -> tuple[np.ndarray, int]:
        response = client.post(
            "/v1/audio/speech", json=speech_body(input=text, voice=voice, response_format="wav", seed=seed)
        )
        assert response.status_code == 200, response.text
        return decode_audio(response.content)

    def pitch(audio: tuple[np.ndarray, int]) -> float:
        f0 = (
            parselmouth.Sound(audio[0].astype(np.float64), audio[1]).to_pitch(0.01, 50, 500).selected_array["frequency"]
        )
        return float(np.median(f0[f0 > 0]))

    a, b, mixed = render("onyx"), render("shimmer"), render("onyx(1)+shimmer(1)")
    a_again, b_again = render("onyx", seed=9), render("shimmer", seed=9)
    embed = {
        name: judge.embed(*audio)
        for name, audio in (("a", a), ("b", b), ("mix", mixed), ("a2", a_again), ("b2", b_again))
    }
    sim = Judge.similarity
    assert sim(embed["b"], embed["a2"]) < sim(embed["mix"], embed["a2"]) < sim(embed["a"], embed["a2"])
    assert sim(embed["a"], embed["b2"]) < sim(embed["mix"], embed["b2"]) < sim(embed["b"], embed["b2"])
    assert pitch(a) < pitch(mixed) < pitch(b)

    # Kept as a library voice, the blend speaks as the blend itself does.
    saved = client.post("/v1/voices", json={"name": "Onyx and Shimmer", "blend": "onyx(1)+shimmer(1)"})
    assert saved.status_code == 201, saved.text
    assert saved.json()["blend"] == "onyx(1)+shimmer(1)"
    try:
        again = render(saved.json()["id"])
        assert len(again[0]) == len(mixed[0]) and np.allclose(again[0], mixed[0], atol=1e-3)
    finally:
        client.delete(f"/v1/voices/{saved.json()['id']}")


async def test_a_blend_is_checked_before_it_is_kept(api: httpx.AsyncClient) -> None:
    for blend, needle in (("alloy", "two voices or more"), ("alloy+nobody", "unknown voice 'nobody'")):
        response = await api.post("/v1/voices", json={"name": "Mix", "blend": blend})
        assert response.status_code == 400 and needle in response.json()["detail"], response.text
    kept = await api.post("/v1/voices", json={"name": "Mix", "blend": "alloy(2)+echo(1)"})
    assert kept.status_code == 201 and kept.json()["blend"] == "alloy(2)+echo(1)"
