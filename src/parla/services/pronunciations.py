"""The pronunciation dictionary: how to say a word, for every voice or for one voice.

An entry gives a respelling ("Nguyen" -> "win"), which any engine speaks, and/or IPA phonemes,
which engines that read phonemes (``Capabilities.phonemes``) speak instead. It is applied to the
text before any engine sees it (``SpeechService.prepare``, through ``speech_pieces``), as whole
words in any case; a voice's own entry wins over an entry for every voice. Entries for every voice
change everyone's speech, so only an admin key (or anyone while no key exists) makes them; a
voice's entries are for whoever may change that voice.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field, model_validator
from sqlalchemy import func, or_, select

from parla.errors import ConflictError, InvalidInputError, NotFoundError, PermissionDeniedError
from parla.services.keys import caller_key_id, sees_everything
from parla.services.voices import VoiceLibrary
from parla.store.db import Database
from parla.store.models import Pronunciation
from parla.text.markup import PHONEME_CLOSE, PHONEME_OPEN

_IPA_FORBIDDEN = re.compile(r"[\[\]<>]")


class PronunciationIn(BaseModel):
    word: str = Field(..., min_length=1, max_length=100, description="The word or words as written.")
    respelling: str | None = Field(None, min_length=1, max_length=200, description="How to say it, in letters.")
    phonemes: str | None = Field(
        None, min_length=1, max_length=200, description="How to say it in IPA, for engines that read phonemes."
    )
    voice: str | None = Field(None, description="A library voice (id or name) it is for; none: every voice.")

    @model_validator(mode="after")
    def _something_to_say(self) -> PronunciationIn:
        if self.respelling is None and self.phonemes is None:
            raise ValueError("give a respelling, phonemes, or both")
        if self.phonemes is not None and _IPA_FORBIDDEN.search(self.phonemes):
            raise ValueError("phonemes are IPA letters and marks, without brackets")
        if not re.search(r"\w", self.word):
            raise ValueError("word: needs letters")
        return self


class PronunciationChange(BaseModel):
    word: str | None = Field(None, min_length=1, max_length=100)
    respelling: str | None = Field(None, max_length=200)
    phonemes: str | None = Field(None, max_length=200)


class PronunciationPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    word: str
    respelling: str | None
    phonemes: str | None
    voice_id: str | None
    created_at: datetime
    updated_at: datetime


class PronunciationDictionary:
    def __init__(self, db: Database, voices: VoiceLibrary) -> None:
        self.db = db
        self.voices = voices

    def _voice_id(self, voice: str | None) -> str | None:
        """A voice the caller may change (its own), or None for every voice (admins only)."""
        if voice is None:
            if not sees_everything():
                raise PermissionDeniedError("an entry for every voice changes everyone's speech: it needs an admin key")
            return None
        return self.voices.get(voice).id

    def list(self, voice: str | None = None) -> list[PronunciationPublic]:
        query = select(Pronunciation).order_by(func.lower(Pronunciation.word))
        if voice is not None:
            query = query.where(Pronunciation.voice_id == self.voices.get(voice).id)
        with self.db.session() as session:
            rows = session.scalars(query).all()
            return [PronunciationPublic.model_validate(row) for row in rows if self._visible(row)]

    def _visible(self, row: Pronunciation) -> bool:
        """Every-voice entries are everyone's to read; a voice's, of those who see the voice."""
        if row.voice_id is None or sees_everything():
            return True
        return row.owner_key_id == caller_key_id()

    def _get(self, session: object, entry_id: str) -> Pronunciation:
        row = session.get(Pronunciation, entry_id)  # type: ignore[attr-defined]
        if row is None or not self._visible(row):
            raise NotFoundError(f"pronunciation {entry_id!r} not found")
        if row.voice_id is None and not sees_everything():
            raise PermissionDeniedError("an entry for every voice is an admin's to change")
        return row  # type: ignore[no-any-return]

    def create(self, data: PronunciationIn) -> PronunciationPublic:
        voice_id = self._voice_id(data.voice)
        word = " ".join(data.word.split())
        with self.db.session() as session:
            clash = session.scalar(
                select(Pronunciation.id).where(
                    func.lower(Pronunciation.word) == word.lower(),
                    Pronunciation.voice_id.is_(None) if voice_id is None else Pronunciation.voice_id == voice_id,
                )
            )
            if clash is not None:
                raise ConflictError(f"{word!r} has an entry already ({clash}): change that one", param="word")
            row = Pronunciation(
                word=word,
                respelling=data.respelling,
                phonemes=data.phonemes,
                voice_id=voice_id,
                owner_key_id=caller_key_id(),
            )
            session.add(row)
            session.flush()
            return PronunciationPublic.model_validate(row)

    def update(self, entry_id: str, change: PronunciationChange) -> PronunciationPublic:
        with self.db.session() as session:
            row = self._get(session, entry_id)
            given = change.model_dump(exclude_unset=True)
            for name, value in given.items():
                setattr(row, name, (value or None) if name != "word" else " ".join(str(value).split()))
            if row.respelling is None and row.phonemes is None:
                raise InvalidInputError("an entry needs a respelling, phonemes, or both", param="respelling")
            if row.phonemes and _IPA_FORBIDDEN.search(row.phonemes):
                raise InvalidInputError("phonemes are IPA letters and marks, without brackets", param="phonemes")
            session.flush()
            return PronunciationPublic.model_validate(row)

    def delete(self, entry_id: str) -> None:
        with self.db.session() as session:
            session.delete(self._get(session, entry_id))

    def rewriter(self, voice_id: str | None, *, phonemes: bool) -> Callable[[str], str]:
        """What replaces each entry's word in a text for ``voice_id``: its phonemes on an engine that
        reads them (``[[ ... ]]``), else its respelling; an entry with only phonemes leaves the word
        as written on other engines. The identity when no entry applies."""
        with self.db.session() as session:
            rows = session.scalars(
                select(Pronunciation).where(
                    or_(Pronunciation.voice_id.is_(None), Pronunciation.voice_id == voice_id)
                    if voice_id
                    else Pronunciation.voice_id.is_(None)
                )
            ).all()
            chosen: dict[str, str] = {}
            # The voice's own entries last: they win over the every-voice ones.
            for row in sorted(rows, key=lambda r: r.voice_id is not None):
                if phonemes and row.phonemes:
                    chosen[row.word.lower()] = f" {PHONEME_OPEN} {row.phonemes} {PHONEME_CLOSE} "
                elif row.respelling:
                    chosen[row.word.lower()] = row.respelling
        if not chosen:
            return lambda text: text
        # Longest first, so that "New York" is met before "New"; whole words only.
        words = sorted(chosen, key=len, reverse=True)
        pattern = re.compile(r"(?<!\w)(" + "|".join(re.escape(w) for w in words) + r")(?!\w)", re.IGNORECASE)
        return lambda text: pattern.sub(lambda m: chosen[m.group(1).lower()], text)
