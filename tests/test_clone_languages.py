"""Cloning across languages: a voice learned from a recording in French speaks English, and the
clone engine reads the recording's transcript in French to learn from it.

Each sample keeps the language it is spoken in (what Whisper heard or was told, else its voice's),
in the database and on its way to the engines (``VoiceRef.sample_languages``); the clone engine has
Piper say a transcript with espeak-ng's phonemes in that language, so that it pairs French sounds
with French sounds. The fast tests cover the record; the ``model`` ones the engine and what comes
out of it (Whisper hears it, the judge places it)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any, TypeVar

import httpx
import numpy as np
import numpy.typing as npt
import pytest
from alembic import command
from alembic.config import Config
from sqlalchemy import inspect, text
from sqlalchemy.orm import Session

from parla.audio import decode_audio
from parla.engines.base import SynthesisRequest, VoiceRef
from parla.engines.clone import CloneEngine
from parla.services.transcription import Transcriber, Transcript
from parla.services.voices import VoiceCreate, VoiceLibrary, VoiceUpdate
from parla.settings import Settings
from parla.store import Database, LocalBlobStore
from parla.store.db import MIGRATIONS
from parla.store.models import Voice, VoiceSample
from tests.conftest import InProcessApp, Listener, LiveServer, someone_saying, wer

FRENCH = (
    "Le garçon était là quand le soleil s'est levé. On attrape le saumon rose avec une canne. "
    "La source de ce grand fleuve est une fontaine claire."
)
"""What the French speaker says in the recording a voice is learned from."""
ENGLISH = ("A pot of tea helps to pass the evening.", "Glue the sheet to the dark blue background.")
"""What the voice then says: English, none of it in the recording."""
JUDGED = "Help the woman get back to her feet. Smoky fires lack flame and heat."
"""The same speaker's other words, in English, used only to score."""
SPEAKER = "f2"
"""espeak-ng's voice variant standing in for the French speaker (a woman's: far from Piper's man)."""


def french_recording() -> bytes:
    return someone_saying(FRENCH, f"fr+{SPEAKER}")


# -- the record: each sample's language ------------------------------------------------------------


async def test_a_sample_keeps_its_language_and_the_engines_get_it(
    api: httpx.AsyncClient, mock_app: InProcessApp
) -> None:
    # A French voice from a recording with its transcript (no language said for the sample): the
    # sample is in the voice's language, its transcript stays French.
    created = await api.post(
        "/v1/voices/clone",
        data={"name": "amelie", "transcript": FRENCH, "language": "fr"},
        files={"file": ("a.wav", french_recording())},
    )
    assert created.status_code == 201, created.text
    voice = created.json()["voice"]
    try:
        (sample,) = voice["samples"]
        assert sample["transcript"] == FRENCH and sample["language"] == "fr"
        library = mock_app.services.voices
        ref = library.resolve(voice["id"])
        assert ref.sample_languages == ("fr",) and ref.sample_language(0) == "fr"

        # An English sample beside it, its language said with the upload, keeps it, whatever the
        # voice's; a code that names no language is a 422 and adds nothing.
        english = someone_saying(ENGLISH[0])
        upload = {"file": ("e.wav", english)}
        refused = await api.post(
            f"/v1/voices/{voice['id']}/samples", data={"transcript": ENGLISH[0], "language": "xx"}, files=upload
        )
        assert refused.status_code == 422 and "not a language code" in refused.json()["detail"]
        added = await api.post(
            f"/v1/voices/{voice['id']}/samples", data={"transcript": ENGLISH[0], "language": "en-GB"}, files=upload
        )
        assert added.status_code == 201, added.text
        assert added.json()["sample"]["language"] == "en-gb"
        assert library.resolve(voice["id"]).sample_languages == ("fr", "en-gb")

        # Changing a sample's language changes the voice's key: conditioning learned from a French
        # reading of the transcript is not reused for another reading.
        before = library.resolve(voice["id"]).key
        with mock_app.services.db.session() as session:
            _row(session, VoiceSample, sample["id"]).language = "it"
        assert library.resolve(voice["id"]).key != before

        # An export carries each sample's language, and an import restores it.
        exported = await api.get(f"/v1/voices/{voice['id']}/export")
        imported = await api.post(
            "/v1/voices/import", files={"file": ("v.zip", exported.content)}, data={"name": "amelie-copy"}
        )
        assert imported.status_code == 201, imported.text
        assert [s["language"] for s in imported.json()["samples"]] == ["it", "en-gb"]
        await api.delete(f"/v1/voices/{imported.json()['id']}")
    finally:
        await api.delete(f"/v1/voices/{voice['id']}")


def test_a_voice_file_is_read_in_the_requests_language(mock_app: InProcessApp, tmp_path: Path) -> None:
    # The model microservice API's voice files: the request's language is the file's, so a cloning
    # engine reads its transcript in it, and what it learned is kept apart from an English reading.
    path = tmp_path / "amelie.wav"
    path.write_bytes(french_recording())
    speech = mock_app.services.speech
    french = speech.file_voice(path, transcript=FRENCH, model="mock", language="fr")
    english = speech.file_voice(path, transcript=FRENCH, model="mock", language="en")
    unsaid = speech.file_voice(path, transcript=FRENCH, model="mock")
    assert french.sample_languages == ("fr",) and french.sample_language(0) == "fr"
    assert english.sample_languages == ("en",) and unsaid.sample_languages == ()
    assert french.key != english.key and english.key == unsaid.key  # English: the key files always had


class HearsFrench(Transcriber):
    """Whisper, as far as the library can tell, hearing French (without a model to load)."""

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings)
        self.told: list[str | None] = []

    def transcribe(self, samples: npt.NDArray[np.float32], *, language: str | None = None, **_: Any) -> Transcript:
        self.told.append(language)
        return Transcript(text=FRENCH, language="fr", duration=samples.size / 16_000, segments=[], model="base")


def test_a_transcribed_sample_is_in_the_language_whisper_heard(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, database_url=None, _env_file=None)
    db = Database(f"sqlite:///{tmp_path / 'parla.db'}")
    db.migrate()
    transcriber = HearsFrench(settings)
    try:
        library = VoiceLibrary(settings=settings, db=db, blobs=LocalBlobStore(tmp_path), transcriber=transcriber)
        # An English voice (the default) given a French recording without its words: Whisper is
        # told nothing, detects French, and the sample is French, not the voice's English.
        voice = library.create(VoiceCreate(name="unsaid"))
        heard = library.add_sample(voice.id, french_recording())
        assert transcriber.told == [None]
        assert heard.sample.transcript == FRENCH and heard.sample.transcript_source == "whisper"
        assert heard.sample.language == "fr"
        # A transcript without a language: the voice's.
        given = library.add_sample(voice.id, someone_saying(ENGLISH[0]), ENGLISH[0])
        assert given.sample.language == "en"
        assert library.resolve(voice.id).sample_languages == ("fr", "en")
    finally:
        db.dispose()


_Row = TypeVar("_Row", Voice, VoiceSample)


def _row(session: Session, model: type[_Row], key: str) -> _Row:
    row = session.get(model, key)
    assert row is not None, key
    return row


# -- the column: migration 0008 on SQLite and PostgreSQL -------------------------------------------------


def _alembic(db: Database, action: str, revision: str) -> None:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    with db.engine.begin() as connection:
        config.attributes["connection"] = connection
        getattr(command, action)(config, revision)


@pytest.fixture
def db(database_url: str) -> Iterator[Database]:
    database = Database(database_url)
    yield database
    database.dispose()


def test_samples_stored_before_languages_were_kept_read_as_their_voices(db: Database, tmp_path: Path) -> None:
    # A database at the revision before the column, with a French voice and a sample in it.
    _alembic(db, "upgrade", "0007")
    with db.engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO voices (id, name, language, tags, created_at, updated_at) "
                "VALUES ('v1', 'ancienne', 'fr', '[]', CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)"
            )
        )
        conn.execute(
            text(
                "INSERT INTO voice_samples (id, voice_id, file, sha256, transcript, transcript_source, duration_s, "
                "sample_rate, report, created_at) VALUES ('s1', 'v1', 'voices/v1/s1.wav', 'abc', :words, 'user', "
                "2.0, 24000, '{}', CURRENT_TIMESTAMP)"
            ),
            {"words": FRENCH},
        )
    db.migrate()
    assert "language" in {c["name"] for c in inspect(db.engine).get_columns("voice_samples")}
    settings = Settings(data_dir=tmp_path, database_url=None, _env_file=None)
    library = VoiceLibrary(settings=settings, db=db, blobs=LocalBlobStore(tmp_path), transcriber=Transcriber(settings))
    with db.session() as session:
        assert _row(session, VoiceSample, "s1").language is None  # not known: nothing is made up
    ref = library.resolve("v1")
    assert ref.sample_languages == ("fr",)  # read in its voice's language, as before
    key = ref.key

    # The column round-trips a value, and a value of its own wins over the voice's.
    with db.session() as session:
        _row(session, VoiceSample, "s1").language = "it"
    with db.session() as session:
        assert _row(session, VoiceSample, "s1").language == "it"
    assert library.resolve("v1").sample_languages == ("it",) and library.resolve("v1").key != key

    # A sample without a language follows its voice's: a voice made French by mistake and set to
    # Italian changes the key of what was learned from that sample.
    with db.session() as session:
        _row(session, VoiceSample, "s1").language = None
        _row(session, Voice, "v1").language = "it"
    assert library.resolve("v1").key != key

    # And the migration goes down and up again, the rows kept.
    _alembic(db, "downgrade", "0007")
    assert "language" not in {c["name"] for c in inspect(db.engine).get_columns("voice_samples")}
    db.migrate()
    with db.session() as session:
        assert _row(session, VoiceSample, "s1").transcript == FRENCH


# -- the engine --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def clone(tmp_path_factory: pytest.TempPathFactory) -> CloneEngine:
    settings = Settings(data_dir=tmp_path_factory.mktemp("clone"), database_url=None, _env_file=None)
    engine = CloneEngine.from_settings(settings)
    assert isinstance(engine, CloneEngine)
    engine.load()
    return engine


@pytest.mark.model
def test_the_engine_reads_a_transcript_in_its_samples_language(clone: CloneEngine) -> None:
    french = clone.script(FRENCH, "fr")
    as_english = clone.script(FRENCH, "en")
    assert french is not None and as_english is not None
    assert french != as_english
    # French nasal vowels and uvular r are in espeak-ng's French reading and in Piper's map; English
    # letter-to-sound rules never make them.
    ids = {p: clone.piper.phoneme_id_map[p][0] for p in ("ʁ", "ɑ", "\u0303")}
    french_ids = {i for sentence in french for i in sentence}
    english_ids = {i for sentence in as_english for i in sentence}
    assert {ids["ʁ"], ids["\u0303"]} <= french_ids
    assert ids["ʁ"] not in english_ids and ids["\u0303"] not in english_ids
    # A region espeak-ng has no voice for falls back to the language; a language it cannot read at
    # all has no reading.
    assert clone.script(FRENCH, "fr-ch") is not None
    assert clone.script("Bonjour.", "tlh") is None
    # English is read as the bundled voice itself reads it.
    assert clone.script(ENGLISH[0], "en-gb") == clone.piper.phoneme_ids(ENGLISH[0])


@pytest.mark.model
def test_a_sample_in_a_language_piper_cannot_read_teaches_pitch_only(clone: CloneEngine, tmp_path: Path) -> None:
    recording = tmp_path / "a.wav"
    recording.write_bytes(french_recording())
    voice = VoiceRef("klingon", samples=((recording, FRENCH),), sample_languages=("tlh",), key="tlh")
    adaptation = clone.adapt(voice)
    # No parallel speech: the envelope and pace stay Piper's, the pitch moves to the speaker's (a
    # woman's voice, well above Piper's man's).
    assert not np.any(adaptation.w) and adaptation.length_scale == 1.0
    median = np.exp(adaptation.f0_a + adaptation.f0_b * np.log(85.0))
    assert median > 150, median
    request = SynthesisRequest(text=ENGLISH[0], voice=voice, seed=1, parameters=clone.resolve_parameters({}))
    out = np.concatenate([c.samples for c in clone.synthesize(request)])
    assert out.size > 0 and np.all(np.isfinite(out))


@pytest.mark.model
def test_a_voice_learned_from_french_speaks_english_toward_its_speaker(
    client: httpx.Client, server: LiveServer, listener: Listener
) -> None:
    from parla.evaluation import Judge

    created = client.post(
        "/v1/voices/clone",
        data={"name": "amelie-speaks-english", "transcript": FRENCH, "language": "fr"},
        files={"file": ("amelie.wav", french_recording())},
    )
    assert created.status_code == 201, created.text
    voice = created.json()["voice"]
    (sample,) = voice["samples"]
    assert sample["transcript"] == FRENCH and sample["language"] == "fr"
    try:
        judge = Judge()
        target = judge.embed(*decode_audio(someone_saying(JUDGED, f"en-us+{SPEAKER}")))
        sims: list[float] = []
        sims_plain: list[float] = []
        errors: list[float] = []
        errors_plain: list[float] = []
        for sentence in ENGLISH:
            body = {"input": sentence, "response_format": "wav", "seed": 1, "language": "en"}
            cloned = client.post("/v1/audio/speech", json={**body, "model": "clone", "voice": voice["id"]})
            plain = client.post("/v1/audio/speech", json={**body, "model": "piper", "voice": "joe"})
            assert cloned.status_code == plain.status_code == 200, cloned.text
            for spoken, sim, error in ((cloned, sims, errors), (plain, sims_plain, errors_plain)):
                sim.append(judge.similarity(judge.embed(*decode_audio(spoken.content)), target))
                error.append(wer(sentence, listener.transcribe(spoken.content)))
        # Learned once, from the sample as it is stored (French), and cached under that voice's key.
        engine = server.services.engines.get("clone")
        assert isinstance(engine, CloneEngine)
        assert engine.cache_path(server.services.voices.resolve(voice["id"]).key).is_file()
    finally:
        client.delete(f"/v1/voices/{voice['id']}")
    # Closer to the speaker than Piper's own voice, by the bar tests/test_clone.py sets for English
    # references (measured here: 0.71 against the plain voice's 0.48).
    assert np.mean(sims) > np.mean(sims_plain) + 0.1, (sims, sims_plain)
    # Whisper tiny.en hears the English: about three words misheard in the 17 at most. Measured here:
    # the plain voice 0.0, this clone 0.06; the same clone learned with its French transcript read
    # by English rules (what the engine did before samples had a language) 0.34, its pace then
    # learned from a wrong reading (0.84 instead of 1.0) and its sounds paired with wrong ones.
    assert np.mean(errors) <= 0.2, (errors, errors_plain)


def test_english_references_keep_their_key(tmp_path: Path) -> None:
    # Voices made before samples kept a language are all English: their keys, and so the
    # conditioning engines cached for them, stay what they were.
    import hashlib

    settings = Settings(data_dir=tmp_path, database_url=None, _env_file=None)
    db = Database(f"sqlite:///{tmp_path / 'parla.db'}")
    db.migrate()
    try:
        library = VoiceLibrary(
            settings=settings, db=db, blobs=LocalBlobStore(tmp_path), transcriber=Transcriber(settings)
        )
        voice = library.create(VoiceCreate(name="plain"))
        library.add_sample(voice.id, someone_saying(ENGLISH[0]), ENGLISH[0])
        with db.session() as session:
            (stored,) = _row(session, Voice, voice.id).samples
            old = hashlib.sha256((stored.sha256 + stored.transcript).encode()).hexdigest()[:32]
        assert library.resolve(voice.id).key == old
        # English in another variant is read alike, so it keeps the key too.
        library.update(voice.id, VoiceUpdate(language="en-us"))
        assert library.resolve(voice.id).key == old
    finally:
        db.dispose()
