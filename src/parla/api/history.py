"""Generation history: Parla's ``/v1/history``, and the Dia server API's ``/config``, ``/logs`` and ``/cleanup``."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Body, Depends, Query
from fastapi.responses import FileResponse, Response

from parla.api.auth import ADMIN, SPEAK
from parla.api.deps import ConfigDep, HistoryDep
from parla.audio.encode import CONTENT_TYPES
from parla.services.alignment import captions
from parla.services.history import (
    DEFAULT_LIMIT,
    MAX_LIMIT,
    CleanupResult,
    GenerationPage,
    GenerationPublic,
    HistoryFilter,
    HistoryService,
    HistoryStats,
)
from parla.services.runtime_config import GOVERNED_SOURCES, RuntimeConfig

router = APIRouter(prefix="/v1/history", tags=["History"])
dia = APIRouter(tags=["Dia server API"])

Limit = Annotated[int, Query(ge=1, le=MAX_LIMIT, description="Results per page.")]
Offset = Annotated[int, Query(ge=0, description="Results to skip.")]


def history_filter(
    search: Annotated[str | None, Query(description="Text the generation spoke (any case).")] = None,
    voice: Annotated[str | None, Query()] = None,
    engine: Annotated[str | None, Query()] = None,
    source: Annotated[str | None, Query(description="Where it came from: openai, cli, job...")] = None,
    created_after: Annotated[datetime | None, Query(description="ISO 8601; UTC when no offset is given.")] = None,
    created_before: Annotated[datetime | None, Query(description="ISO 8601; UTC when no offset is given.")] = None,
) -> HistoryFilter:
    return HistoryFilter(
        search=search,
        voice=voice,
        engine=engine,
        source=source,
        created_after=created_after,
        created_before=created_before,
    )


FilterDep = Annotated[HistoryFilter, Depends(history_filter)]


def _audio(history: HistoryService, generation_id: str, disposition: str) -> FileResponse:
    path, fmt = history.audio(generation_id)
    return FileResponse(
        path, media_type=CONTENT_TYPES[fmt], filename=f"{generation_id}.{fmt}", content_disposition_type=disposition
    )


# -- /v1/history ------------------------------------------------------------------------------------


@router.get("", summary="Generations, newest first, with search and filters", dependencies=[SPEAK])
def list_history(
    history: HistoryDep, filters: FilterDep, limit: Limit = DEFAULT_LIMIT, offset: Offset = 0
) -> GenerationPage:
    return history.list_page(filters, limit=limit, offset=offset)


@router.get("/stats", summary="Totals, real-time factor, counts per voice and engine", dependencies=[SPEAK])
def history_stats(history: HistoryDep, filters: FilterDep) -> HistoryStats:
    return history.stats(filters)


@router.get("/{generation_id}", summary="One generation", dependencies=[SPEAK])
def get_generation(generation_id: str, history: HistoryDep) -> GenerationPublic:
    return history.get(generation_id)


@router.get("/{generation_id}/audio", summary="A generation's audio, when it was kept", dependencies=[SPEAK])
def generation_audio(generation_id: str, history: HistoryDep) -> FileResponse:
    return _audio(history, generation_id, "inline")


@router.get(
    "/{generation_id}/captions",
    summary="A generation's words as captions (SRT, WebVTT) or timestamps (JSON)",
    dependencies=[SPEAK],
    response_model=None,
)
def generation_captions(
    generation_id: str, history: HistoryDep, format: Literal["srt", "vtt", "json"] = "vtt"
) -> Response | dict[str, Any]:
    """For a generation made with ``timestamps: true``: its words grouped in cues, as subtitle
    files players read, or each word's start and end."""
    words = history.words(generation_id)
    if format == "json":
        return {"id": generation_id, "timestamps": [w.describe() for w in words]}
    media = "application/x-subrip" if format == "srt" else "text/vtt"
    return Response(
        captions(words, format),
        media_type=f"{media}; charset=utf-8",
        headers={"Content-Disposition": f'inline; filename="{generation_id}.{format}"'},
    )


@router.delete("/{generation_id}", status_code=204, summary="Delete a generation and its audio", dependencies=[SPEAK])
def delete_generation(generation_id: str, history: HistoryDep) -> Response:
    history.delete(generation_id)
    return Response(status_code=204)


# -- the Dia server API: /config, /logs, /cleanup -------------------------------------------------------------


@dia.get("/config", summary="The runtime configuration", dependencies=[SPEAK])
def get_config(config: ConfigDep) -> RuntimeConfig:
    return config.get()


@dia.put("/config", summary="Change some of the runtime configuration", dependencies=[ADMIN])
def update_config(
    config: ConfigDep,
    changes: Annotated[dict[str, Any], Body(examples=[{"save_outputs": True, "output_retention_hours": 48}])],
) -> RuntimeConfig:
    return config.update(changes)


def _log_entry(generation: GenerationPublic, show_prompts: bool) -> dict[str, Any]:
    entry = {
        "id": generation.id,
        "timestamp": generation.created_at,
        "voice_id": generation.voice,
        "engine": generation.engine,
        "model": generation.model,
        "response_format": generation.format,
        "text_length": len(generation.text),
        "duration": generation.duration_s,
        "generation_time": generation.elapsed_s,
        "real_time_factor": generation.real_time_factor,
        "seed": generation.seed,
        "source": generation.source,
        "audio_available": generation.has_audio,
        "download_url": f"/logs/{generation.id}/download" if generation.has_audio else None,
    }
    # The text people had spoken can be private: shown only when the operator asks for it.
    return (entry | {"prompt": generation.text}) if show_prompts else entry


Scope = Annotated[
    Literal["dia", "all"],
    Query(
        description="`dia`: the Dia server API's outputs (its /generate), which its config governs; "
        "`all`: every API's generations, voicebox history and characters' answers included."
    ),
]


def _sources(scope: str) -> frozenset[str] | None:
    return GOVERNED_SOURCES if scope == "dia" else None


@dia.get("/logs", summary="Recent generations of the Dia server API", dependencies=[SPEAK])
def list_logs(
    config: ConfigDep, history: HistoryDep, limit: Limit = DEFAULT_LIMIT, scope: Scope = "dia"
) -> list[dict[str, Any]]:
    show_prompts = config.get().show_prompts
    page = history.list_page(HistoryFilter(sources=_sources(scope)), limit=limit)
    return [_log_entry(g, show_prompts) for g in page.items]


@dia.get("/logs/{generation_id}/download", summary="A generation's audio file", dependencies=[SPEAK])
def download_log(generation_id: str, history: HistoryDep) -> FileResponse:
    return _audio(history, generation_id, "attachment")


@dia.delete("/logs", summary="Delete the Dia server API's generations and their audio", dependencies=[ADMIN])
def clear_logs(history: HistoryDep, scope: Scope = "dia") -> CleanupResult:
    return history.delete_all(sources=_sources(scope))


@dia.post("/cleanup", summary="Delete the Dia server API's generations older than the retention", dependencies=[ADMIN])
def cleanup(
    history: HistoryDep,
    older_than_hours: Annotated[
        float | None, Query(ge=0, description="Instead of the config's output_retention_hours.")
    ] = None,
    scope: Scope = "dia",
) -> CleanupResult:
    return history.apply_retention(older_than_hours, sources=_sources(scope))
