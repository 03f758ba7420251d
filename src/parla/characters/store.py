"""Where characters are kept: the database row, the voice made for it, its knowledge base in
Chroma and its files under ``characters/<id>/``; and the audio of its answers.

A character spans all of these, and no database transaction covers them, so every write here
undoes what it wrote when a later step fails: no half-made characters, voices, files or
collections. Everything here blocks; async callers hand it to ``offload``.
"""

from __future__ import annotations

import contextlib
import logging
import re
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from parla.audio.decode import AudioDecodeError, AudioTooLongError, decode_audio
from parla.audio.encode import encode_audio
from parla.audio.preprocess import PreprocessSettings, preprocess
from parla.audio.quality import MAX_SECONDS as MAX_SAMPLE_SECONDS
from parla.characters.shapes import (
    ANSWER_SOURCE,
    CharacterChange,
    CharacterPublic,
    Image,
    Knowledge,
    NewCharacter,
    VoiceSource,
)
from parla.errors import ConflictError, InvalidInputError, NotFoundError, ParlaError
from parla.knowledge.store import KnowledgeBase
from parla.services.keys import caller_key_id, may_see, visible
from parla.services.voices import VoiceCreate, VoiceLibrary
from parla.store.blobs import LocalBlobStore
from parla.store.db import Database
from parla.store.models import Character, Generation, new_id, utcnow

log = logging.getLogger(__name__)

T = TypeVar("T")


def knowledge_owner(character_id: int) -> str:
    """The character's knowledge base in Chroma."""
    return f"character-{character_id}"


def _row(session: Session, character_id: int) -> Character:
    # Ids beyond a 64-bit integer cannot be in any database (and SQLite's driver raises on them).
    row = session.get(Character, character_id) if 0 < character_id < 2**63 else None
    if row is None or not may_see(row.owner_key_id):  # another key's character is as good as absent
        raise NotFoundError(f"character {character_id} not found", param="character_id")
    return row


def _safe_filename(name: str) -> str:
    base = Path(name or "knowledge.txt").name
    return re.sub(r"[^A-Za-z0-9._-]+", "_", base).strip("._") or "knowledge.txt"


def _preprocessed(data: bytes, options: PreprocessSettings) -> bytes:
    """The upload after preprocessing, as a WAV at its own rate. Audio that cannot be decoded, or is too long,
    is passed on as it is: the voice library refuses it with its usual reason."""
    try:
        samples, rate = decode_audio(data, max_seconds=MAX_SAMPLE_SECONDS + 1)
    except (AudioDecodeError, AudioTooLongError):
        return data
    try:
        return encode_audio(preprocess(samples, rate, options), rate, "wav")
    except ValueError as exc:
        raise InvalidInputError(f"voice_cloning_audio: {exc}", param="voice_cloning_audio") from None


class CharacterStore:
    def __init__(self, *, db: Database, blobs: LocalBlobStore, voices: VoiceLibrary, knowledge: KnowledgeBase) -> None:
        self.db = db
        self.blobs = blobs
        self.voices = voices
        self.knowledge = knowledge

    # -- reading ------------------------------------------------------------------------------------

    def read(self, character_id: int, view: Callable[[Character], T]) -> T:
        """``view`` of the character's row, taken inside one session (404 for an unknown character)."""
        with self.db.session() as session:
            return view(_row(session, character_id))

    def get(self, character_id: int) -> CharacterPublic:
        return self.read(character_id, CharacterPublic.of)

    def list_all(self) -> list[CharacterPublic]:
        with self.db.session() as session:
            rows = session.scalars(
                select(Character).where(visible(Character.owner_key_id)).order_by(Character.id)
            ).all()
            return [CharacterPublic.of(row) for row in rows]

    def image_path(self, character_id: int, filename: str) -> Path:
        image = self.read(character_id, lambda row: row.image_file)
        if not image or Path(image).name != filename:
            raise NotFoundError(f"character {character_id} has no image {filename!r}")
        return self.blobs.path(image)

    def answer_audio(self, character_id: int, filename: str) -> Path:
        """The file of an answer's audio, by its name in ``audio_url``: 404 for an unknown character
        or answer, and for audio that retention has removed since."""
        with self.db.session() as session:
            _row(session, character_id)
            row = session.scalar(
                select(Generation).where(Generation.id == Path(filename).stem, Generation.source == ANSWER_SOURCE)
            )
            if row is None or not row.file or Path(row.file).name != filename:
                raise NotFoundError(f"no answer audio {filename!r}")
            path = self.blobs.path(row.file)
        if not path.is_file():
            raise NotFoundError(f"the audio {filename!r} was deleted (retention)")
        return path

    # -- writing ------------------------------------------------------------------------------------

    def create(self, new: NewCharacter) -> CharacterPublic:
        with self.db.session() as session:
            if session.scalar(select(Character.id).where(Character.name == new.name)) is not None:
                raise ConflictError(f"a character named {new.name!r} already exists", param="name")
        voice_id: str | None = None
        character_id: int | None = None
        try:
            if new.voice:
                voice_id = self._make_voice(new.name, new.voice)
            try:
                with self.db.session() as session:
                    row = Character(
                        name=new.name,
                        llm_model=new.llm_model,
                        llm_config=new.llm_config,
                        voice_cloning_settings=new.voice_cloning_settings,
                        stt_settings=new.stt_settings,
                        voice_id=voice_id,
                        owns_voice=voice_id is not None,
                        knowledge_files=[],
                        style_examples=new.style_examples,
                        owner_key_id=caller_key_id(),
                    )
                    session.add(row)
                    session.flush()
                    character_id = row.id
            except IntegrityError:
                raise ConflictError(f"a character named {new.name!r} already exists", param="name") from None
            image = self._store_image(character_id, new.image) if new.image else None
            knowledge = [self._store_knowledge(character_id, new.knowledge)] if new.knowledge else []
            with self.db.session() as session:
                row = _row(session, character_id)
                row.image_file, row.knowledge_files = image, knowledge
                session.flush()
                return CharacterPublic.of(row)
        except BaseException:
            self._undo_create(character_id, voice_id)
            raise

    def update(self, character_id: int, change: CharacterChange) -> CharacterPublic:
        columns = dict(change.columns)
        new_voice: str | None = None
        try:
            if change.voice:
                new_voice = self._make_voice(columns.get("name", str(character_id)), change.voice)
                columns["voice_id"], columns["owns_voice"] = new_voice, True
            try:
                with self.db.session() as session:
                    row = _row(session, character_id)
                    old_voice, owned = row.voice_id, row.owns_voice
                    for key, value in columns.items():
                        setattr(row, key, value)
                    row.updated_at = utcnow()
                    session.flush()
            except IntegrityError:
                raise ConflictError(f"a character named {columns.get('name')!r} already exists", param="name") from None
        except BaseException:
            if new_voice:
                self.voices.delete(new_voice)
            raise
        # The row is updated; files follow. A replaced voice made for this character goes.
        if new_voice and old_voice and owned:
            with contextlib.suppress(NotFoundError):
                self.voices.delete(old_voice)
        with self.db.session() as session:
            row = _row(session, character_id)
            if change.image:
                row.image_file = self._store_image(character_id, change.image)
            if change.knowledge:
                self.knowledge.drop(knowledge_owner(character_id))
                shutil.rmtree(self.blobs.path(f"characters/{character_id}/knowledge"), ignore_errors=True)
                row.knowledge_files = [self._store_knowledge(character_id, change.knowledge)]
            session.flush()
            return CharacterPublic.of(row)

    def delete(self, character_id: int) -> None:
        """The character, its files, its knowledge base, and the voice made for it."""
        with self.db.session() as session:
            row = _row(session, character_id)
            voice_id, owned = row.voice_id, row.owns_voice
            session.delete(row)
        self._remove_files(character_id)
        if voice_id and owned:
            with contextlib.suppress(NotFoundError):
                self.voices.delete(voice_id)

    # -- the parts ----------------------------------------------------------------------------------

    def _make_voice(self, name: str, source: VoiceSource) -> str:
        """A library voice from the character's reference recording; returns its id."""
        data = source.upload.data
        if source.preprocessing is not None:
            data = _preprocessed(data, source.preprocessing)
        voice_name = f"character: {name}"[:100]
        try:
            try:
                voice, _ = self.voices.create_with_sample(
                    VoiceCreate(name=voice_name, language=source.language), data, source.transcript
                )
            except ConflictError:  # a voice of that name exists (made by hand): this one gets a suffix
                fields = VoiceCreate(name=f"{voice_name[:92]} #{new_id()[:6]}", language=source.language)
                voice, _ = self.voices.create_with_sample(fields, data, source.transcript)
        except ParlaError as exc:
            raise InvalidInputError(f"voice_cloning_audio: {exc.detail}", param="voice_cloning_audio") from None
        return voice.id

    def _store_knowledge(self, character_id: int, knowledge: Knowledge) -> dict[str, Any]:
        filename = _safe_filename(knowledge.upload.filename)
        writer = self.blobs.writer(f"characters/{character_id}/knowledge/{filename}")
        writer.write(knowledge.upload.data)
        writer.commit()
        count = self.knowledge.add_passages(knowledge_owner(character_id), knowledge.passages, filename)
        return {"filename": filename, "passages": count, "bytes": len(knowledge.upload.data)}

    def _store_image(self, character_id: int, image: Image) -> str:
        key = f"characters/{character_id}/image.{image.kind}"
        for old in self.blobs.path(f"characters/{character_id}").glob("image.*"):
            old.unlink(missing_ok=True)
        writer = self.blobs.writer(key)
        writer.write(image.upload.data)
        writer.commit()
        return key

    def _undo_create(self, character_id: int | None, voice_id: str | None) -> None:
        if character_id is not None:
            with self.db.session() as session:
                row = session.get(Character, character_id)
                if row is not None:
                    session.delete(row)
            self._remove_files(character_id)
        if voice_id:
            with contextlib.suppress(NotFoundError):
                self.voices.delete(voice_id)

    def _remove_files(self, character_id: int) -> None:
        shutil.rmtree(self.blobs.path(f"characters/{character_id}"), ignore_errors=True)
        try:
            self.knowledge.drop(knowledge_owner(character_id))
        except Exception:  # the collection may never have been made; Chroma's errors vary by version
            log.warning("could not drop the knowledge base of character %s", character_id, exc_info=True)
