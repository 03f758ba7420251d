"""Characters (Titans character API): a persona answers from its own knowledge, in its voice, by text and by
speech, and speaks while it is still writing. The embedded SmolLM2 model answers; a local
OpenAI-compatible server stands in for a remote model where the test needs a fixed pace.

Answers, heard questions and spoken replies are on the live server (``model``); making, changing and
refusing characters, and choosing their language model, are on the module's mock app."""

from __future__ import annotations

import asyncio
import base64
import json
import threading
import time
from collections.abc import AsyncIterator, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar

import httpx
import numpy as np
import pytest

from parla.characters.prompting import (
    GROUNDING_DEMO,
    SentenceStream,
    StyleExample,
    as_question,
    build_messages,
    parse_style_examples,
)
from parla.errors import InvalidInputError
from parla.knowledge.store import Passage
from parla.services import Services
from parla.settings import Settings
from tests.characters_data import IMAGE, character_form
from tests.conftest import InProcessApp, Listener, LiveServer, duration_of, natural_length, someone_saying, wer


def _create(client: httpx.Client, name: str, **overrides: Any) -> httpx.Response:
    return client.post("/create-character", **character_form(name, **overrides))


async def _make(api: httpx.AsyncClient, name: str, **overrides: Any) -> httpx.Response:
    return await api.post("/create-character", **character_form(name, **overrides))


@pytest.fixture(scope="module")
def keeper(server: LiveServer) -> Iterator[int]:
    with httpx.Client(base_url=server.url, timeout=300) as client:
        response = _create(client, "Keeper")
        assert response.status_code == 200, response.text
        character_id = int(response.json()["character_id"])
        yield character_id
        client.delete(f"/delete-character/{character_id}")


@pytest.fixture(scope="module")
async def mock_keeper(mock_app: InProcessApp) -> AsyncIterator[int]:
    """The keeper on the module's mock app."""
    response = await _make(mock_app.client, "Keeper")
    assert response.status_code == 200, response.text
    character_id = int(response.json()["character_id"])
    yield character_id
    await mock_app.client.delete(f"/delete-character/{character_id}")


def _events(response: httpx.Response) -> Iterator[tuple[float, dict[str, Any]]]:
    for line in response.iter_lines():
        if line.startswith("data:"):
            yield time.perf_counter(), json.loads(line[5:])


# -- asking --------------------------------------------------------------------------------------


@pytest.mark.model
def test_a_character_answers_from_its_knowledge_in_its_voice(
    client: httpx.Client, keeper: int, listener: Listener
) -> None:
    response = client.post(
        "/ask-question-text", json={"character_id": keeper, "question": "Who built the lighthouse on Marrow Island?"}
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["status"] == "success" and body["character_name"] == "Keeper"
    assert "voss" in body["text_response"].lower(), body
    assert "Document 1:" in body["knowledge_context"] and "Clara Voss" in body["knowledge_context"]
    assert body["knowledge_sources"][0]["source"] == "marrow.md"

    audio = client.get(body["audio_url"])
    assert audio.status_code == 200 and audio.headers["content-type"] == "audio/wav"
    low, high = natural_length(body["text_response"])
    assert low <= duration_of(audio.content) <= high
    # The spoken answer says the written one.
    assert wer(body["text_response"], listener.transcribe(audio.content)) <= 0.35
    # It is a generation like any other: in the history, in the character's cloned voice.
    record = client.get(f"/v1/history/{body['generation_id']}").json()
    voice_id = client.get(f"/get-character/{keeper}").json()["character"]["voice_id"]
    assert record["source"] == "character" and record["engine"] == "clone"
    assert record["voice"] == client.get(f"/v1/voices/{voice_id}").json()["name"]


@pytest.mark.model
def test_a_spoken_question_is_heard_and_answered(client: httpx.Client, keeper: int) -> None:
    # The keeper's stt_settings name Whisper base, as the character API's examples do; base hears
    # espeak-ng's robotic "lighthouse" as "right house", Piper's voice (a person's, nearly) as it is.
    spoken = {"input": "Who built the lighthouse on Marrow Island?", "voice": "joe", "response_format": "wav"}
    question = client.post("/v1/audio/speech", json=spoken | {"seed": 1}).content
    response = client.post(
        "/ask-question-audio",
        data={"character_id": str(keeper)},
        files={"audio_file": ("question.wav", question, "audio/wav")},
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert "lighthouse" in body["transcribed_question"].lower()
    assert "voss" in body["text_response"].lower(), body
    assert body["audio_url"] and client.get(body["audio_url"]).status_code == 200


@pytest.mark.model
def test_the_answer_streams_sentence_by_sentence(client: httpx.Client, keeper: int) -> None:
    # An answer from the knowledge base is shown a sentence at a time, each once it is checked
    # against the passages (nothing unsupported is shown or spoken): see test_characters_grounding.
    body = {"character_id": keeper, "question": "When does the ferry leave Port Elsin?", "stream": True}
    with client.stream("POST", "/ask-question-text", json=body) as response:
        assert response.status_code == 200
        events = [event for _, event in _events(response)]
    deltas = [e["delta"] for e in events if e["type"] == "answer.delta"]
    done = next(e for e in events if e["type"] == "answer.done")
    final = events[-1]
    assert deltas and "".join(deltas).strip() == done["text"]
    assert "seven" in done["text"].lower() or "7" in done["text"]
    assert final["type"] == "speech.audio.done" and final["text_response"] == done["text"]
    assert client.get(final["audio_url"]).status_code == 200


# -- speaking while thinking -----------------------------------------------------------------------

SLOW_ANSWER = (
    "The lighthouse was built in 1887. Clara Voss designed it herself, and she chose the red lantern room. "
    "Ships have trusted its light ever since, even on the darkest winter nights. The keepers lived in the "
    "small house beside the tower, and they wrote down the weather every morning. Today the light runs by "
    "itself, but people still climb the stairs to watch the sun go down over the sea."
)


class _SlowChat(BaseHTTPRequestHandler):
    """An OpenAI-compatible model that writes at a steady pace (80 ms a token, a CPU model's)."""

    delay_s: ClassVar[float] = 0.08

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers["Content-Length"]))
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.end_headers()
        for word in SLOW_ANSWER.split(" "):
            chunk = {"choices": [{"delta": {"content": word + " "}}]}
            self.wfile.write(f"data: {json.dumps(chunk)}\n\n".encode())
            self.wfile.flush()
            time.sleep(self.delay_s)
        self.wfile.write(b"data: [DONE]\n\n")

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def slow_model() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _SlowChat)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    server.shutdown()


@pytest.mark.model
def test_speech_starts_before_the_answer_is_written(client: httpx.Client, slow_model: str, listener: Listener) -> None:
    created = _create(
        client,
        "Narrator",
        llm_config=json.dumps({"base_url": slow_model, "model_name": "slow"}),
        voice_cloning_settings=json.dumps({"voice": "nova"}),
        voice_cloning_audio=None,
        knowledge_base_file=None,
    )
    assert created.status_code == 200, created.text
    character_id = created.json()["character_id"]
    try:
        assert client.post("/load-character", json={"character_id": character_id}).status_code == 200
        body = {"character_id": character_id, "question": "Tell me about the lighthouse."}
        with client.stream("POST", "/ask-question-stream", json=body) as response:
            assert response.status_code == 200
            timeline = list(_events(response))
        kinds = [event["type"] for _, event in timeline]
        first_audio = kinds.index("speech.audio.delta")
        written = kinds.index("answer.done")
        # The first sentence is heard while the model is still writing the rest: most of the
        # answer's tokens come after the first audio.
        assert first_audio < written
        assert kinds[:first_audio].count("answer.delta") < kinds.count("answer.delta") / 2
        pcm = b"".join(base64.b64decode(e["audio"]) for _, e in timeline if e["type"] == "speech.audio.delta")
        samples = (np.frombuffer(pcm, "<i2") / 32768).astype(np.float32)
        low, high = natural_length(SLOW_ANSWER)
        assert low <= samples.size / 24_000 <= high
        assert wer(SLOW_ANSWER, listener.transcribe(_to_16k(samples))) <= 0.3
        final = timeline[-1][1]
        assert final["type"] == "speech.audio.done" and final["text_response"] == SLOW_ANSWER.strip()
        kept = client.get(final["audio_url"])
        assert abs(duration_of(kept.content) - samples.size / 24_000) < 0.1
    finally:
        client.delete(f"/delete-character/{character_id}")


def _to_16k(samples: np.ndarray[Any, np.dtype[np.float32]]) -> np.ndarray[Any, np.dtype[np.float32]]:
    from parla.audio.dsp import resample

    return resample(samples, 24_000, 16_000)


@pytest.mark.model
def test_a_voice_question_can_be_answered_as_a_stream(client: httpx.Client, keeper: int) -> None:
    question = someone_saying("Which birds nest on the northern cliffs?")
    with client.stream(
        "POST",
        "/ask-question-audio",
        data={"character_id": str(keeper), "stream": "true"},
        files={"audio_file": ("q.wav", question, "audio/wav")},
    ) as response:
        assert response.status_code == 200
        events = [event for _, event in _events(response)]
    kinds = {e["type"] for e in events}
    assert {"answer.delta", "speech.audio.delta", "answer.done", "speech.audio.done"} <= kinds
    assert "puffin" in events[-1]["text_response"].lower(), events[-1]
    assert "cliffs" in events[-1]["transcribed_question"].lower()


# -- managing characters -------------------------------------------------------------------------


@pytest.mark.model
def test_characters_are_listed_shown_loaded_changed_and_deleted(client: httpx.Client) -> None:
    created = _create(client, "Ferryman", voice_cloning_audio=None, voice_cloning_settings=None)
    assert created.status_code == 200, created.text
    assert created.json()["message"] == "Character created successfully"
    character_id = created.json()["character_id"]
    listed = client.get("/get-characters").json()
    assert listed["status"] == "success"
    entry = next(c for c in listed["characters"] if c["id"] == character_id)
    assert entry["name"] == "Ferryman" and entry["created_at"]
    assert client.get(entry["image_url"]).content == IMAGE

    detail = client.get(f"/get-character/{character_id}").json()["character"]
    assert detail["knowledge_files"][0]["filename"] == "marrow.md" and detail["style_examples"] == 2
    assert detail["stt_settings"]["language"] == "en"

    loaded = client.post("/load-character", json={"character_id": character_id})
    assert loaded.status_code == 200 and loaded.json()["message"] == "Models loaded for character Ferryman"

    # A new knowledge file replaces the old one; the answer follows it.
    changed = client.put(
        f"/update-character/{character_id}",
        data={"name": "Ferry captain", "llm_config": json.dumps({"temperature": 0, "max_tokens": 40})},
        files={"knowledge_base_file": ("ferry.txt", b"The ferry captain is called Olaf Brandt.", "text/plain")},
    )
    assert changed.status_code == 200, changed.text
    assert changed.json()["character"]["name"] == "Ferry captain"
    answer = client.post(
        "/ask-question-text", json={"character_id": character_id, "question": "What is the ferry captain called?"}
    ).json()
    assert "olaf" in answer["text_response"].lower(), answer
    assert "Clara Voss" not in answer["knowledge_context"]

    assert client.delete(f"/delete-character/{character_id}").status_code == 200
    assert client.get(f"/get-character/{character_id}").status_code == 404
    assert client.get(entry["image_url"]).status_code == 404


async def test_deleting_a_character_takes_its_voice_and_files(api: httpx.AsyncClient, mock_app: InProcessApp) -> None:
    created = await _make(api, "Temporary", knowledge_base_file=None)
    assert created.status_code == 200, created.text
    character = created.json()["character"]
    assert (await api.get(f"/v1/voices/{character['voice_id']}")).status_code == 200
    folder = mock_app.settings.data_dir / "characters" / str(character["id"])
    assert folder.is_dir()
    await api.delete(f"/delete-character/{character['id']}")
    assert (await api.get(f"/v1/voices/{character['voice_id']}")).status_code == 404
    assert not folder.exists()


async def test_models_for_characters(api: httpx.AsyncClient) -> None:
    models = {m["name"]: m for m in (await api.get("/get-tts-models")).json()["models"]}
    assert models["clone"]["available"] and models["clone"]["cloning"]
    # f5tts is the f5 engine (unavailable here: it runs in its own environment); zonos needs a worker of its own.
    assert (
        not models["f5tts"]["available"]
        and "the 'f5' engine: f5-tts is not installed" in (models["f5tts"]["dependencies"][0])
    )
    assert not models["zonos"]["available"] and "PARLA_ENGINES__ZONOS__URL" in models["zonos"]["dependencies"][0]
    bundled = await api.post("/download-model", json={"model_name": "smollm2", "model_type": "gguf"})
    assert bundled.status_code == 200 and bundled.json()["model_path"].endswith(".gguf")
    openai = await api.post("/download-model", json={"model_name": "gpt-4o", "model_type": "openai"})
    assert openai.status_code == 200
    hub = await api.post(
        "/download-model", json={"model_name": "microsoft/DialoGPT-medium", "model_type": "huggingface"}
    )
    assert hub.status_code == 400 and "downloads no models" in hub.json()["detail"]


# -- bad input -----------------------------------------------------------------------------------


async def test_unknown_characters_and_empty_questions(api: httpx.AsyncClient, mock_keeper: int) -> None:
    for response in (
        await api.get("/get-character/999999"),
        await api.post("/ask-question-text", json={"character_id": 999999, "question": "Hello?"}),
        await api.post("/ask-question-stream", json={"character_id": 999999, "question": "Hello?"}),
        await api.post("/load-character", json={"character_id": 999999}),
        await api.post(
            "/ask-question-audio",
            data={"character_id": "999999"},
            files={"audio_file": ("q.wav", someone_saying("Hello there"), "audio/wav")},
        ),
        await api.delete("/delete-character/999999"),
    ):
        assert response.status_code == 404, response.text
        assert "character 999999 not found" in response.json()["detail"]
    empty = await api.post("/ask-question-text", json={"character_id": mock_keeper, "question": "   "})
    assert empty.status_code == 400 and "question is empty" in empty.json()["detail"]
    broken = await api.post(
        "/ask-question-audio",
        data={"character_id": str(mock_keeper)},
        files={"audio_file": ("q.wav", b"this is not audio", "audio/wav")},
    )
    assert broken.status_code == 400 and "audio_file" in broken.json()["detail"]


@pytest.mark.model
def test_a_silent_question_is_refused(client: httpx.Client, keeper: int) -> None:
    # Whisper listens, and hears nothing.
    silent = client.post(
        "/ask-question-audio",
        data={"character_id": str(keeper)},
        files={"audio_file": ("q.wav", _silence_wav(), "audio/wav")},
    )
    assert silent.status_code == 400 and "no speech" in silent.json()["detail"]


def _silence_wav() -> bytes:
    from parla.audio.encode import encode_audio

    return encode_audio(np.zeros(16_000 * 2, np.float32), 16_000, "wav")


@pytest.mark.parametrize(
    ("override", "reason"),
    [
        ({"knowledge_base_file": ("kb.pdf", b"%PDF-1.4 broken", "application/pdf")}, "PDF cannot be read"),
        ({"knowledge_base_file": ("kb.txt", b"\x00\x01\x02binary", "text/plain")}, "binary"),
        ({"style_tuning_file": ("style.json", b"{not json", "application/json")}, "not valid JSON"),
        ({"style_tuning_file": ("style.json", b'[{"question": "hi"}]', "application/json")}, "response"),
        ({"voice_cloning_audio": ("voice.wav", b"just text, not audio", "audio/wav")}, "voice_cloning_audio"),
        ({"character_image": ("face.png", b"GIF? no, text", "image/png")}, "not a PNG"),
        ({"llm_config": "{broken"}, "llm_config is not valid JSON"),
        ({"llm_config": json.dumps({"temperature": 9})}, "temperature"),
        ({"llm_config": json.dumps({"model_path": "/etc/passwd.gguf"})}, "outside the allowed directories"),
        ({"stt_settings": json.dumps({"model": "wav2vec"})}, "whisper"),
        ({"voice_cloning_settings": json.dumps({"voice": "nobody-at-all"})}, "nobody-at-all"),
        ({"display_name": "  "}, "name"),
    ],
)
async def test_bad_uploads_are_refused_and_leave_nothing(
    api: httpx.AsyncClient, mock_app: InProcessApp, override: dict[str, Any], reason: str
) -> None:
    characters_before = (await api.get("/get-characters")).json()["characters"]
    voices_before = (await api.get("/v1/voices")).json()
    response = await _make(api, "Broken", **override)
    assert 400 <= response.status_code < 500, response.text
    assert reason in response.json()["detail"]
    assert (await api.get("/get-characters")).json()["characters"] == characters_before
    assert (await api.get("/v1/voices")).json() == voices_before
    folder = mock_app.settings.data_dir / "characters"
    left = {p.name for p in folder.iterdir()} if folder.exists() else set()
    assert left <= {str(c["id"]) for c in characters_before}


async def test_names_are_unique(api: httpx.AsyncClient, mock_keeper: int) -> None:
    response = await _make(api, "Keeper", voice_cloning_audio=None)
    assert response.status_code == 409 and "already exists" in response.json()["detail"]


async def test_an_unreachable_model_is_a_502_with_the_reason(api: httpx.AsyncClient) -> None:
    created = await _make(
        api,
        "Offline",
        llm_config=json.dumps({"base_url": "http://127.0.0.1:9/v1", "model_name": "gone"}),
        voice_cloning_audio=None,
    )
    character_id = created.json()["character_id"]
    try:
        for path, extra in (
            ("/ask-question-text", {}),
            ("/ask-question-text", {"stream": True}),
            ("/ask-question-stream", {}),
        ):
            question = {"character_id": character_id, "question": "Are you there?", **extra}
            response = await api.post(path, json=question)
            assert response.status_code == 502, (path, response.text)
            assert "could not reach the language model at http://127.0.0.1:9/v1" in response.json()["detail"]
    finally:
        await api.delete(f"/delete-character/{character_id}")


# -- prompts and sentences -------------------------------------------------------------------------


def test_prompts_carry_persona_style_and_knowledge() -> None:
    messages = build_messages(
        name="Keeper",
        question="Who built it?",
        passages=[Passage("Clara Voss built the lighthouse.", "kb.md", 0.8)],
        style_examples=[StyleExample(question="Hi?", response="Ahoy.")],
    )
    assert messages[0]["role"] == "system" and "Keeper" in messages[0]["content"]
    # The style examples first, the grounded exchange nearest the question: the model copies the nearest.
    assert messages[1:3] == [{"role": "user", "content": "Hi?"}, {"role": "assistant", "content": "Ahoy."}]
    assert messages[-3:-1] == GROUNDING_DEMO
    assert messages[-1]["role"] == "user"
    assert messages[-1]["content"].index("Clara Voss") < messages[-1]["content"].index("Who built it?")
    # The checked path gives the model numbered sentences, best last (nearest the question).
    facts = build_messages(
        name="Keeper",
        question="Who built it?",
        passages=[],
        style_examples=[],
        facts=["Clara Voss built the lighthouse.", "It is white."],
    )[-1]["content"]
    assert facts.index("2. It is white.") < facts.index("1. Clara Voss built the lighthouse.") < facts.index("Who")
    assert build_messages(name="K", question="Q?", passages=[], style_examples=[], system_prompt="Be brief.") == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Q?"},
    ]
    assert as_question("which birds nest there.") == "Which birds nest there?"
    assert as_question("tell me about the island.") == "Tell me about the island."
    assert parse_style_examples(b'{"examples": [{"question": "a", "response": "b"}]}')[0].response == "b"
    with pytest.raises(InvalidInputError):
        parse_style_examples(b"[]")


def test_sentences_are_cut_from_a_stream_of_tokens() -> None:
    stream = SentenceStream(first_clause_chars=20, max_chars=60)
    tokens = "Well, the light was built long ago, in the year 1887. It still works! Doesn't it? Yes"
    pieces = [piece for token in tokens.split(" ") for piece in stream.feed(token + " ")] + stream.close()
    assert pieces == [
        "Well, the light was built long ago,",
        "in the year 1887.",
        "It still works!",
        "Doesn't it?",
        "Yes",
    ]
    run_on = SentenceStream(max_chars=30)
    cut = run_on.feed("word " * 20) + run_on.close()
    assert all(len(p) <= 30 for p in cut) and " ".join(cut) == ("word " * 20).strip()
    assert SentenceStream().feed("... ") == []


def test_characters_live_in_postgresql_too(postgres_url: str, tmp_path: Any) -> None:
    services = Services.build(Settings(data_dir=tmp_path, database_url=postgres_url, _env_file=None))
    try:
        from parla.characters.service import CharacterFields, CharacterUploads, Upload

        made = services.characters.create(
            CharacterFields(name="Pg", llm_config={"max_tokens": 20}),
            CharacterUploads(knowledge_base_file=Upload(b"Postgres keeps the rows.", "kb.txt")),
        )
        assert isinstance(made.id, int)
        assert [c.name for c in services.characters.list_all()] == ["Pg"]
        assert services.characters.knowledge.count(f"character-{made.id}") == 1
        services.characters.delete(made.id)
        assert services.characters.list_all() == []
    finally:
        services.close()


@pytest.mark.model
def test_another_gguf_file_is_chosen_by_path(tmp_path: Any) -> None:
    from parla.characters.llm import bundled_model_path
    from parla.characters.service import CharacterFields, CharacterUploads, Upload

    gguf = bundled_model_path()  # any GGUF file inside an allowed directory; this one is at hand
    settings = Settings(data_dir=tmp_path, database_url=None, allowed_paths=[gguf.parent], _env_file=None)
    services = Services.build(settings)
    try:
        made = services.characters.create(
            CharacterFields(name="Local", llm_model=str(gguf), llm_config={"temperature": 0, "max_tokens": 30}),
            CharacterUploads(knowledge_base_file=Upload(b"The harbour master is called Ines Duarte.", "kb.txt")),
        )
        assert services.characters.persona(made.id).llm.model_path == str(gguf.resolve())
        answer = asyncio.run(services.characters.answer(made.id, "What is the harbour master called?"))
        assert "ines" in answer.text.lower() and answer.generation_id
    finally:
        services.close()


# -- the model a character names is the model that answers ------------------------------------------


async def _bare(api: httpx.AsyncClient, name: str, **overrides: Any) -> httpx.Response:
    """A character with no voice and no knowledge: only its language model matters here."""
    return await _make(api, name, voice_cloning_audio=None, knowledge_base_file=None, **overrides)


def _hf_cache(root: Any, repo: str, files: dict[str, bytes]) -> Any:
    """A Hugging Face hub cache entry as huggingface_hub leaves it: refs/main names the snapshot."""
    org, name = repo.split("/")
    folder = root / f"models--{org}--{name}"
    snapshot = folder / "snapshots" / "0123456789abcdef0123456789abcdef01234567"
    snapshot.mkdir(parents=True)
    (folder / "refs").mkdir()
    (folder / "refs" / "main").write_text(snapshot.name)
    for filename, data in files.items():
        (snapshot / filename).write_bytes(data)
    return snapshot


@pytest.fixture
def no_endpoint(mock_app: InProcessApp, monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> Any:
    """No default endpoint and an empty Hugging Face cache of the test's own."""
    monkeypatch.setattr(mock_app.settings, "llm_base_url", None)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    return tmp_path / "hub"


@pytest.mark.parametrize("named", ["gpt-3.5-turbo", "HuggingFaceTB/SmolLM2-360M-Instruct", "SmolLM2-135M"])
async def test_a_model_that_is_not_here_is_refused_not_replaced(
    api: httpx.AsyncClient, no_endpoint: Any, named: str
) -> None:
    response = await _bare(api, "Hosted", llm_model=named)
    assert response.status_code == 400, response.text
    detail = response.json()["detail"]
    assert repr(named) in detail and "llm_config.base_url" in detail and "OPENAI_BASE_URL" in detail
    assert "GGUF" in detail and str(no_endpoint) in detail  # what to configure, and where to put a file
    assert "Hosted" not in {c["name"] for c in (await api.get("/get-characters")).json()["characters"]}
    in_config = await _bare(api, "Hosted", llm_config=json.dumps({"model_name": named}))
    assert in_config.status_code == 400 and "llm_config.model_name" in in_config.json()["detail"]


async def test_changing_to_a_model_that_is_not_here_is_refused(api: httpx.AsyncClient, no_endpoint: Any) -> None:
    created = await _bare(api, "Steady")
    assert created.status_code == 200, created.text
    character_id = created.json()["character_id"]
    try:
        changed = await api.put(f"/update-character/{character_id}", data={"llm_model": "gpt-4o"})
        assert changed.status_code == 400 and "'gpt-4o'" in changed.json()["detail"]
        assert (await api.get(f"/get-character/{character_id}")).json()["character"]["llm_model"] is None
    finally:
        await api.delete(f"/delete-character/{character_id}")


@pytest.mark.parametrize("named", ["SmolLM2-135M-Instruct", "HuggingFaceTB/SmolLM2-135M-Instruct", "smollm2:135m"])
async def test_the_bundled_model_by_any_name_runs_embedded(
    api: httpx.AsyncClient, mock_app: InProcessApp, no_endpoint: Any, named: str
) -> None:
    created = await _bare(api, "Small", llm_model=named)
    assert created.status_code == 200, created.text
    character_id = created.json()["character_id"]
    try:
        llm = mock_app.services.characters.persona(character_id).llm
        assert llm.base_url is None and llm.model_path is None  # the embedded runtime's bundled file
    finally:
        await api.delete(f"/delete-character/{character_id}")


class _RecordingChat(BaseHTTPRequestHandler):
    """An OpenAI-compatible endpoint that notes which model each request names."""

    models: ClassVar[list[str]] = []

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.models.append(body["model"])
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.end_headers()
        self.wfile.write(b'data: {"choices": [{"delta": {"content": "Hello."}}]}\n\ndata: [DONE]\n\n')

    def log_message(self, *args: Any) -> None:
        pass


async def test_a_named_model_is_sent_to_the_configured_endpoint(
    api: httpx.AsyncClient, mock_app: InProcessApp, monkeypatch: pytest.MonkeyPatch
) -> None:
    characters = mock_app.services.characters
    endpoint = ThreadingHTTPServer(("127.0.0.1", 0), _RecordingChat)
    threading.Thread(target=endpoint.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{endpoint.server_address[1]}/v1"
    monkeypatch.setattr(mock_app.settings, "llm_base_url", url)  # PARLA_LLM_BASE_URL or OPENAI_BASE_URL
    created = await _bare(api, "Remote", llm_model="gpt-3.5-turbo")
    try:
        assert created.status_code == 200, created.text
        persona = characters.persona(created.json()["character_id"])
        assert (persona.llm.base_url, persona.llm.model_name) == (url, "gpt-3.5-turbo")
        assert "".join(characters.tokens(persona, [{"role": "user", "content": "Hi?"}])) == "Hello."
        assert _RecordingChat.models == ["gpt-3.5-turbo"]
    finally:
        await api.delete(f"/delete-character/{created.json().get('character_id')}")
        endpoint.shutdown()


async def test_a_model_in_the_hugging_face_cache_is_used_offline(
    api: httpx.AsyncClient, mock_app: InProcessApp, no_endpoint: Any
) -> None:
    gguf = _hf_cache(no_endpoint, "acme/tiny-chat-GGUF", {"tiny-chat.Q4_K_M.gguf": b"GGUF"}) / "tiny-chat.Q4_K_M.gguf"
    found = await api.post("/download-model", json={"model_name": "acme/tiny-chat-GGUF", "model_type": "huggingface"})
    assert found.status_code == 200 and found.json() == {"model_path": str(gguf), "status": "success"}
    created = await _bare(api, "Cached", llm_model="acme/tiny-chat-GGUF")
    assert created.status_code == 200, created.text
    try:
        assert mock_app.services.characters.persona(created.json()["character_id"]).llm.model_path == str(gguf)
    finally:
        await api.delete(f"/delete-character/{created.json()['character_id']}")

    # Several files: one is named; a transformers model is found but cannot run here.
    _hf_cache(no_endpoint, "acme/multi", {"a.Q4.gguf": b"GGUF", "a.Q8.gguf": b"GGUF"})
    several = await api.post("/download-model", json={"model_name": "acme/multi"})
    assert several.status_code == 400 and "acme/multi/<file>.gguf" in several.json()["detail"]
    one = await api.post("/download-model", json={"model_name": "acme/multi/a.Q8.gguf"})
    assert one.status_code == 200 and one.json()["model_path"].endswith("a.Q8.gguf")
    _hf_cache(no_endpoint, "microsoft/DialoGPT-medium", {"config.json": b"{}", "model.safetensors": b""})
    hub = await api.post("/download-model", json={"model_name": "microsoft/DialoGPT-medium"})
    assert hub.status_code == 400 and "transformers model" in hub.json()["detail"]
    absent = (await api.post("/download-model", json={"model_name": "acme/absent"})).json()["detail"]
    assert "downloads no models" in absent and f"{no_endpoint}/models--<org>--<name>/snapshots/" in absent
    assert (await api.post("/download-model", json={"model_name": "../../etc/passwd"})).status_code == 400


async def test_a_gguf_file_in_the_models_dir_is_found_by_its_name(
    api: httpx.AsyncClient, mock_app: InProcessApp, no_endpoint: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    models = no_endpoint.parent / "models"
    models.mkdir()
    (models / "local.gguf").write_bytes(b"GGUF")
    monkeypatch.setattr(mock_app.settings, "models_dir", models)  # PARLA_MODELS_DIR or MODELS_DIR
    for name in ("local.gguf", "./models/local.gguf"):  # the Titans character API's relative form too
        found = await api.post("/download-model", json={"model_name": name, "model_type": "gguf"})
        assert found.status_code == 200 and found.json()["model_path"] == str((models / "local.gguf").resolve())
    both = await _bare(api, "Both", llm_config=json.dumps({"model_path": "local.gguf", "base_url": "http://x/v1"}))
    assert both.status_code == 400 and "keep one" in both.json()["detail"]
