"""Dependencies for routers: one per service, so that each route declares what it uses.

Every one is read from the one ``get_services`` (the app's ``Services``); tests swap that with
``app.dependency_overrides[get_services]``, and every alias below follows. None of them takes
anything but the connection or another dependency, so none adds a parameter to the OpenAPI schema.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends
from starlette.requests import HTTPConnection

# parla.services before the services' own modules: imported first, parla.characters.service would
# meet its import cycle through parla.services half-way.
from parla.services import Services

# isort: split
from parla.characters.service import CharacterService
from parla.engines.registry import EngineRegistry
from parla.services.dialogue import DialogueService
from parla.services.history import HistoryService
from parla.services.jobs import JobService
from parla.services.mappings import VoiceMappings
from parla.services.pronunciations import PronunciationDictionary
from parla.services.runtime_config import ConfigService
from parla.services.speech import SpeechService
from parla.services.transcription import Transcriber
from parla.services.voices import VoiceLibrary
from parla.settings import Settings
from parla.store.blobs import LocalBlobStore


def get_services(request: HTTPConnection) -> Services:
    """The app's services. ``HTTPConnection``: a request's, or a WebSocket's (``/v1/jobs/{id}/ws``)."""
    services: Services = request.app.state.services
    return services


ServicesDep = Annotated[Services, Depends(get_services)]
"""The whole bag: for the per-service dependencies below; a route takes those, naming what it uses."""


def provide_settings(services: ServicesDep) -> Settings:
    return services.settings


def provide_blobs(services: ServicesDep) -> LocalBlobStore:
    return services.blobs


def provide_engines(services: ServicesDep) -> EngineRegistry:
    return services.engines


def provide_voices(services: ServicesDep) -> VoiceLibrary:
    return services.voices


def provide_pronunciations(services: ServicesDep) -> PronunciationDictionary:
    return services.pronunciations


def provide_transcriber(services: ServicesDep) -> Transcriber:
    return services.transcriber


def provide_speech(services: ServicesDep) -> SpeechService:
    return services.speech


def provide_config(services: ServicesDep) -> ConfigService:
    return services.config


def provide_history(services: ServicesDep) -> HistoryService:
    return services.history


def provide_jobs(services: ServicesDep) -> JobService:
    return services.jobs


def provide_dialogue(services: ServicesDep) -> DialogueService:
    return services.dialogue


def provide_mappings(services: ServicesDep) -> VoiceMappings:
    return services.mappings


def provide_characters(services: ServicesDep) -> CharacterService:
    return services.characters


SettingsDep = Annotated[Settings, Depends(provide_settings)]
BlobsDep = Annotated[LocalBlobStore, Depends(provide_blobs)]
EnginesDep = Annotated[EngineRegistry, Depends(provide_engines)]
VoicesDep = Annotated[VoiceLibrary, Depends(provide_voices)]
PronunciationsDep = Annotated[PronunciationDictionary, Depends(provide_pronunciations)]
TranscriberDep = Annotated[Transcriber, Depends(provide_transcriber)]
SpeechDep = Annotated[SpeechService, Depends(provide_speech)]
ConfigDep = Annotated[ConfigService, Depends(provide_config)]
HistoryDep = Annotated[HistoryService, Depends(provide_history)]
JobsDep = Annotated[JobService, Depends(provide_jobs)]
DialogueDep = Annotated[DialogueService, Depends(provide_dialogue)]
MappingsDep = Annotated[VoiceMappings, Depends(provide_mappings)]
CharactersDep = Annotated[CharacterService, Depends(provide_characters)]
