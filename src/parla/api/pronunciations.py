"""``/v1/pronunciations``: the pronunciation dictionary (see ``services.pronunciations``)."""

from __future__ import annotations

from fastapi import APIRouter, Response

from parla.api.auth import SPEAK, VOICES
from parla.api.deps import PronunciationsDep
from parla.services.pronunciations import PronunciationChange, PronunciationIn, PronunciationPublic

router = APIRouter(prefix="/v1/pronunciations", tags=["Pronunciations"])


@router.get("", summary="The dictionary's entries (for one voice with ?voice=)", dependencies=[SPEAK])
def list_pronunciations(
    dictionary: PronunciationsDep, voice: str | None = None
) -> dict[str, list[PronunciationPublic]]:
    return {"pronunciations": dictionary.list(voice)}


@router.post("", status_code=201, summary="Add how to say a word", dependencies=[VOICES])
def create_pronunciation(body: PronunciationIn, dictionary: PronunciationsDep) -> PronunciationPublic:
    return dictionary.create(body)


@router.patch("/{entry_id}", summary="Change an entry", dependencies=[VOICES])
def update_pronunciation(
    entry_id: str, body: PronunciationChange, dictionary: PronunciationsDep
) -> PronunciationPublic:
    return dictionary.update(entry_id, body)


@router.delete("/{entry_id}", status_code=204, summary="Remove an entry", dependencies=[VOICES])
def delete_pronunciation(entry_id: str, dictionary: PronunciationsDep) -> Response:
    dictionary.delete(entry_id)
    return Response(status_code=204)
