"""Long texts that stay right (issue 21, part 4): each piece is heard by Whisper and compared with its
text; a wrong piece is spoken again with another seed, and the record says what happened.

The engine here is Piper itself, made to slip: its rendering of a chosen piece with the request's own
seed says other words (as a sampler's bad draw would). Whisper, the comparison and the retries are
the real ones."""

from __future__ import annotations

import asyncio
from collections.abc import Container, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from parla.engines.base import AudioChunk, Capabilities, EngineContext, SynthesisRequest
from parla.engines.mock import MockEngine
from parla.engines.piper import PiperEngine
from parla.engines.registry import EngineRegistry
from parla.services import Services
from parla.services.checks import comparable_words, word_error_rate
from parla.services.speech import SpeechOptions
from tests.conftest import Listener, mock_settings, wer

SEED = 1234
GOOD = "The red boat sailed across the quiet harbour at dawn."
WRONG = "Seven purple elephants were dancing on a windy mountain."


class Slipping(PiperEngine):
    """Piper, except that a piece holding ``GOOD`` comes out as ``WRONG`` for the seeds in ``bad``."""

    name = "slipping"

    def __init__(self, context: EngineContext, bad: Container[int | None]) -> None:
        super().__init__(None, context)
        self.bad = bad
        self.seeds: list[int | None] = []

    def synthesize(self, request: SynthesisRequest) -> Iterator[AudioChunk]:
        if GOOD in request.text:
            self.seeds.append(request.seed)
            if request.seed in self.bad:
                request = replace(request, text=request.text.replace(GOOD, WRONG))
        return super().synthesize(request)


class EverySeed:
    def __contains__(self, seed: object) -> bool:
        return True


class SlippingAlways(Slipping):
    """The same slip on an engine whose output a seed does not change (nothing to gain by retrying)."""

    name = "slipping_fixed"
    capabilities = replace(PiperEngine.capabilities, seed_varies=False)


def services_with(tmp_path: Path, engine: Slipping, **settings: object) -> Services:
    return Services.build(mock_settings(tmp_path, **settings), engines=EngineRegistry([engine, MockEngine()]))


def speak(services: Services, engine: str, text: str, check: bool | None = True) -> tuple[bytes, dict[str, Any] | None]:
    options = SpeechOptions(input=text, voice="joe", model=engine, seed=SEED, check=check, response_format="wav")
    plan = services.speech.prepare(options, source="openai")
    rendered = asyncio.run(services.speech.render(plan))
    assert services.history.get(plan.id).checks == rendered.checks  # the record says the same
    return rendered.audio, rendered.checks


def test_word_error_rate_counts_edits_per_reference_word() -> None:
    four = ["a", "b", "c", "d"]
    assert word_error_rate(four, four) == 0
    assert word_error_rate(four, ["a", "x", "c"]) == 0.5  # one substitution, one deletion
    assert word_error_rate([], []) == 0
    # Numbers heard as digits are the words the engine was given spelt out.
    assert comparable_words("It costs 42 dollars.", "en") == comparable_words("it costs forty-two dollars", "en")


@pytest.mark.model
def test_a_piece_that_comes_out_wrong_is_spoken_again_and_the_record_says_so(
    tmp_path: Path, listener: Listener
) -> None:
    engine = Slipping(EngineContext(data_dir=tmp_path), bad={SEED})
    services = services_with(tmp_path, engine)
    try:
        audio, checks = speak(services, "slipping", f"Good morning to you all. {GOOD} Then the gulls woke up.")
    finally:
        services.close()
    assert checks is not None
    assert checks["pieces"] == checks["checked"] == 3
    assert checks["retried"] == 1 and checks["flagged"] == 0
    [detail] = checks["details"]
    assert detail["text"] == GOOD and detail["tries"] == 2 and detail["wer"] < 0.4 and not detail["flagged"]
    assert engine.seeds[0] == SEED and engine.seeds[1] != SEED  # spoken again with another seed
    assert wer(f"Good morning to you all. {GOOD} Then the gulls woke up.", listener.transcribe(audio)) < 0.25


@pytest.mark.model
def test_a_piece_that_stays_wrong_is_kept_and_flagged_after_the_last_try(tmp_path: Path, listener: Listener) -> None:
    engine = Slipping(EngineContext(data_dir=tmp_path), bad=EverySeed())
    services = services_with(tmp_path, engine, check_tries=3)
    try:
        audio, checks = speak(services, "slipping", GOOD)
    finally:
        services.close()
    assert checks is not None and checks["flagged"] == 1
    [detail] = checks["details"]
    assert detail["tries"] == 3 and detail["flagged"] and detail["wer"] > 0.4
    assert len(set(engine.seeds)) == 3
    assert wer(WRONG, listener.transcribe(audio)) < 0.4  # kept: the client gets audio, and the flag


@pytest.mark.model
def test_an_engine_a_seed_does_not_change_is_flagged_without_retrying(tmp_path: Path) -> None:
    engine = SlippingAlways(EngineContext(data_dir=tmp_path), bad={SEED})
    services = services_with(tmp_path, engine)
    try:
        _, checks = speak(services, "slipping_fixed", GOOD)
    finally:
        services.close()
    assert checks is not None and checks["flagged"] == 1 and checks["retried"] == 0
    assert engine.seeds == [SEED]


@pytest.mark.model
def test_long_texts_are_checked_by_default_and_short_ones_are_not(tmp_path: Path) -> None:
    engine = Slipping(EngineContext(data_dir=tmp_path), bad=set())
    services = services_with(tmp_path, engine, check_min_chars=120)
    try:
        _, short = speak(services, "slipping", GOOD, check=None)
        _, long = speak(services, "slipping", f"{GOOD} {GOOD} {GOOD}", check=None)
    finally:
        services.close()
    assert short is None
    assert long is not None and long["checked"] == 3 and long["retried"] == 0 and long["max_wer"] < 0.4


def test_capabilities_say_which_engines_a_new_seed_helps() -> None:
    assert PiperEngine.capabilities.seed_varies
    assert not MockEngine.capabilities.seed_varies
    assert isinstance(SlippingAlways.capabilities, Capabilities) and not SlippingAlways.capabilities.seed_varies
