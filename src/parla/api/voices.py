"""The voice library: ``/v1/voices``. Profiles, samples (upload, base64 or URL), export and import."""

from __future__ import annotations

import base64
import binascii
from typing import Annotated, Any

from fastapi import APIRouter, BackgroundTasks, File, Form, Request, UploadFile
from fastapi.responses import FileResponse, Response
from pydantic import BaseModel, Field

from parla.api.auth import SPEAK, VOICES
from parla.api.deps import SettingsDep, SpeechDep, VoicesDep
from parla.errors import InvalidInputError, TooLargeError
from parla.languages import language_code
from parla.net import FetchError, fetch
from parla.offload import offload
from parla.services.voices import SampleAdded, SamplePublic, VoiceCreate, VoicePublic, VoiceUpdate
from parla.settings import Settings

router = APIRouter(prefix="/v1/voices", tags=["Voices"])


class SampleJSON(BaseModel):
    """A sample sent as JSON: the audio as base64, or a URL to fetch it from."""

    audio_base64: str | None = Field(None, description="The recording, base64-encoded (any format).")
    url: str | None = Field(None, description="An http(s) URL of the recording.")
    transcript: str | None = Field(None, description="What is said; made by Whisper when absent.")
    language: str | None = Field(
        None,
        description="The language the recording is spoken in (en, fr, pt-br...); unset: the one Whisper hears, "
        "or the voice's when a transcript is given.",
    )


class TranscriptUpdate(BaseModel):
    transcript: str = Field(..., min_length=1)


async def read_upload(upload: UploadFile, limit: int) -> bytes:
    data = await upload.read(limit + 1)
    if len(data) > limit:
        raise TooLargeError(f"the upload is larger than the limit of {limit} bytes", param="file")
    return data


def audio_from_json(settings: Settings, body: SampleJSON) -> bytes:
    """The bytes of a sample given as base64 or URL (blocking: call off the event loop)."""
    if bool(body.audio_base64) == bool(body.url):
        raise InvalidInputError("give exactly one of audio_base64 or url", param="audio_base64")
    if body.audio_base64:
        encoded = body.audio_base64.split(",", 1)[1] if body.audio_base64.startswith("data:") else body.audio_base64
        if len(encoded) > settings.max_upload_bytes * 4 // 3 + 4:
            raise TooLargeError(f"the audio is larger than the limit of {settings.max_upload_bytes} bytes")
        try:
            return base64.b64decode(encoded, validate=True)
        except (binascii.Error, ValueError):
            raise InvalidInputError("audio_base64 is not valid base64", param="audio_base64") from None
    if not settings.url_fetch_enabled:
        raise InvalidInputError(
            "this server does not fetch URLs (PARLA_URL_FETCH_ENABLED=false): send the audio itself", param="url"
        )
    try:
        return fetch(
            str(body.url),
            max_bytes=settings.max_upload_bytes,
            timeout=settings.url_fetch_timeout_s,
            allow_private=settings.url_fetch_allow_private,
        )
    except FetchError as exc:
        raise InvalidInputError(str(exc), param="url") from None


async def sample_from_request(request: Request, settings: Settings) -> tuple[bytes, str | None, str | None]:
    """A sample from multipart (``file``, ``transcript``, ``language``) or JSON (``audio_base64``/``url``,
    ``transcript``, ``language``): its audio, transcript and language (a code read by
    ``parla.languages.language_code``: an unknown one is a 422 before the audio is fetched)."""
    content_type = request.headers.get("content-type", "")
    if content_type.startswith("multipart/form-data"):
        form = await request.form(max_part_size=settings.max_upload_bytes + 1)
        language = _spoken_in(form.get("language"))
        upload = form.get("file")
        if not isinstance(upload, UploadFile) and not hasattr(upload, "read"):
            raise InvalidInputError("the form has no 'file' field with the recording", param="file")
        data = await read_upload(upload, settings.max_upload_bytes)  # type: ignore[arg-type]
        transcript = form.get("transcript") or form.get("reference_text")
        return data, str(transcript) if transcript else None, language
    try:
        body = SampleJSON.model_validate_json(await request.body())
    except ValueError:
        raise InvalidInputError(
            "send the sample as multipart form data (file, transcript) or as JSON (audio_base64 or url, transcript)"
        ) from None
    language = _spoken_in(body.language)
    return await offload(audio_from_json, settings, body), body.transcript, language


def _spoken_in(given: object) -> str | None:
    return language_code(given) if isinstance(given, str) and given.strip() else None


@router.get("", summary="All voices: built-in and library", dependencies=[SPEAK])
def list_voices(voices: VoicesDep) -> dict[str, Any]:
    return {"voices": voices.list_all()}


@router.post("", status_code=201, summary="Create a voice profile", dependencies=[VOICES])
def create_voice(body: VoiceCreate, voices: VoicesDep) -> VoicePublic:
    return voices.create(body)


@router.post("/clone", status_code=201, summary="Create a voice from one recording in one step", dependencies=[VOICES])
async def clone_voice(
    settings: SettingsDep,
    voices: VoicesDep,
    speech: SpeechDep,
    background: BackgroundTasks,
    name: Annotated[str, Form(min_length=1, max_length=100)],
    file: Annotated[UploadFile, File(description="A recording of the speaker (any format).")],
    transcript: Annotated[str | None, Form()] = None,
    description: Annotated[str | None, Form()] = None,
    language: Annotated[str, Form()] = "en",
) -> dict[str, Any]:
    data = await read_upload(file, settings.max_upload_bytes)

    def create() -> dict[str, Any]:
        fields = VoiceCreate(name=name, description=description, language=language)
        voice, added = voices.create_with_sample(fields, data, transcript)
        return {"voice": voice.model_dump(mode="json"), "warnings": added.warnings}

    created = await offload(create)
    background.add_task(speech.warm_voice, created["voice"]["id"])
    return created


@router.post("/import", status_code=201, summary="Import a voice archive made by export", dependencies=[VOICES])
async def import_voice(
    settings: SettingsDep,
    voices: VoicesDep,
    speech: SpeechDep,
    background: BackgroundTasks,
    file: Annotated[UploadFile, File(description="A .parla-voice.zip archive.")],
    name: Annotated[str | None, Form(description="A new name, if the archive's is taken.")] = None,
) -> VoicePublic:
    data = await read_upload(file, settings.max_upload_bytes * 4)
    imported = await offload(voices.import_, data, name=name)
    background.add_task(speech.warm_voice, imported.id)
    return imported


@router.get("/{voice}", summary="One voice with its samples", dependencies=[SPEAK])
def get_voice(voice: str, voices: VoicesDep) -> VoicePublic:
    return voices.get(voice)


@router.patch("/{voice}", summary="Rename or describe a voice", dependencies=[VOICES])
def update_voice(voice: str, body: VoiceUpdate, voices: VoicesDep) -> VoicePublic:
    return voices.update(voice, body)


@router.delete(
    "/{voice}", status_code=204, summary="Delete a voice, its samples and cached conditioning", dependencies=[VOICES]
)
def delete_voice(voice: str, voices: VoicesDep) -> Response:
    voices.delete(voice)
    return Response(status_code=204)


@router.post(
    "/{voice}/samples", status_code=201, summary="Add a sample (multipart upload, base64 or URL)", dependencies=[VOICES]
)
async def add_sample(
    voice: str,
    request: Request,
    settings: SettingsDep,
    voices: VoicesDep,
    speech: SpeechDep,
    background: BackgroundTasks,
) -> SampleAdded:
    await offload(voices.get, voice)  # 404 before reading a large body
    data, transcript, language = await sample_from_request(request, settings)
    added = await offload(voices.add_sample, voice, data, transcript, language=language)
    background.add_task(speech.warm_voice, added.sample.voice_id)
    return added


@router.get("/{voice}/samples", summary="A voice's samples", dependencies=[SPEAK])
def list_samples(voice: str, voices: VoicesDep) -> list[SamplePublic]:
    return voices.list_samples(voice)


@router.get("/{voice}/samples/{sample_id}/audio", summary="A sample's cleaned audio (WAV)", dependencies=[SPEAK])
def sample_audio(voice: str, sample_id: str, voices: VoicesDep) -> FileResponse:
    return FileResponse(voices.sample_path(voice, sample_id), media_type="audio/wav")


@router.patch("/{voice}/samples/{sample_id}", summary="Correct a sample's transcript", dependencies=[VOICES])
def update_sample(
    voice: str,
    sample_id: str,
    body: TranscriptUpdate,
    voices: VoicesDep,
    speech: SpeechDep,
    background: BackgroundTasks,
) -> SamplePublic:
    updated = voices.update_sample(voice, sample_id, body.transcript)
    background.add_task(speech.warm_voice, updated.voice_id)
    return updated


@router.delete("/{voice}/samples/{sample_id}", status_code=204, summary="Delete a sample", dependencies=[VOICES])
def delete_sample(voice: str, sample_id: str, voices: VoicesDep) -> Response:
    voices.delete_sample(voice, sample_id)
    return Response(status_code=204)


@router.get("/{voice}/export", summary="Download the voice as one archive (manifest + WAVs)", dependencies=[SPEAK])
def export_voice(voice: str, voices: VoicesDep) -> Response:
    filename, data = voices.export(voice)
    return Response(
        data, media_type="application/zip", headers={"Content-Disposition": f'attachment; filename="{filename}"'}
    )
