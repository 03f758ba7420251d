"""Background jobs: the Dia server API's ``/jobs`` and ``/queue/stats`` (also under ``/v1``), batches, and
live progress as server-sent events or over a WebSocket."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, WebSocket, WebSocketDisconnect
from fastapi.responses import FileResponse, StreamingResponse
from pydantic import BaseModel, Field

from parla.api.auth import ADMIN, SPEAK, accept_authorized
from parla.api.deps import BlobsDep, JobsDep
from parla.audio.encode import CONTENT_TYPES
from parla.errors import NotFoundError, ParlaError
from parla.offload import offload
from parla.services.dialogue import DialogueRequest
from parla.services.jobs import MAX_BATCH, TERMINAL, JobPublic, JobService, JobStatus, SpeechJobRequest
from parla.services.keys import Scope

router = APIRouter(tags=["Jobs"])
dia = APIRouter(tags=["Dia server API"])

POLL_S = 0.25
"""How often live progress looks at the jobs table (the truth, whichever machine runs the job)."""


class BatchRequest(BaseModel):
    items: list[SpeechJobRequest] = Field(..., min_length=1, max_length=MAX_BATCH)


@router.post("/v1/jobs", status_code=202, summary="Queue one speech generation", dependencies=[SPEAK])
def submit_job(body: SpeechJobRequest, jobs: JobsDep) -> JobPublic:
    return jobs.submit(body)


@router.post("/v1/jobs/dialogue", status_code=202, summary="Queue a dialogue", dependencies=[SPEAK])
def submit_dialogue_job(body: DialogueRequest, jobs: JobsDep) -> JobPublic:
    return jobs.submit_dialogue(body)


@router.post("/v1/batch", status_code=202, summary="Queue many texts at once", dependencies=[SPEAK])
def submit_batch(body: BatchRequest, jobs: JobsDep) -> dict[str, Any]:
    batch_id, submitted = jobs.submit_batch(body.items)
    return {"batch_id": batch_id, "jobs": [j.model_dump(mode="json") for j in submitted]}


@router.get("/v1/batch/{batch_id}", summary="A batch's jobs and overall progress", dependencies=[SPEAK])
def get_batch(batch_id: str, jobs: JobsDep) -> dict[str, Any]:
    batch = jobs.list(batch_id=batch_id, limit=MAX_BATCH)
    if not batch:
        raise NotFoundError(f"batch {batch_id!r} not found")
    counts = {s: sum(j.status == s for j in batch) for s in ("pending", "running", "completed", "failed", "cancelled")}
    return {
        "batch_id": batch_id,
        "progress": round(sum(j.progress for j in batch) / len(batch), 4),
        "done": all(j.status in TERMINAL for j in batch),
        "counts": counts,
        "jobs": [j.model_dump(mode="json") for j in reversed(batch)],
    }


def list_jobs(jobs: JobsDep, status: JobStatus | None = None, limit: int = 100) -> dict[str, Any]:
    found = jobs.list(status=status, limit=max(1, min(limit, 1000)))
    return {"jobs": [j.model_dump(mode="json") for j in found], "total": len(found)}


def clear_jobs(jobs: JobsDep) -> dict[str, Any]:
    return {"status": "success", "deleted": jobs.clear()}


def get_job(job_id: str, jobs: JobsDep) -> JobPublic:
    return jobs.get(job_id)


def cancel_job(job_id: str, jobs: JobsDep) -> JobPublic:
    return jobs.cancel(job_id)


def job_result(job_id: str, jobs: JobsDep, blobs: BlobsDep) -> FileResponse:
    generation = jobs.result(job_id)
    path = blobs.path(str(generation.file))
    return FileResponse(path, media_type=CONTENT_TYPES[generation.format], filename=f"{job_id}.{generation.format}")


def queue_stats(jobs: JobsDep) -> dict[str, Any]:
    return jobs.stats()


async def _updates(jobs: JobService, job_id: str) -> AsyncIterator[dict[str, Any]]:
    """The job each time its status or progress changes, ending with its final state."""
    last: tuple[str, float] | None = None
    while True:
        job = await offload(jobs.get, job_id)
        if (job.status, job.progress) != last:
            last = (job.status, job.progress)
            yield job.model_dump(mode="json")
        if job.status in TERMINAL:
            return
        await asyncio.sleep(POLL_S)


def job_events(job_id: str, jobs: JobsDep) -> StreamingResponse:
    jobs.get(job_id)  # 404 before the stream starts

    async def stream() -> AsyncIterator[bytes]:
        async for update in _updates(jobs, job_id):
            event = "done" if update["status"] in TERMINAL else "progress"
            yield f"event: {event}\ndata: {json.dumps(update)}\n\n".encode()

    return StreamingResponse(stream(), media_type="text/event-stream")


async def job_socket(websocket: WebSocket, job_id: str, jobs: JobsDep) -> None:
    if not await accept_authorized(websocket, Scope.SPEAK):
        return
    try:
        async for update in _updates(jobs, job_id):
            await websocket.send_json(update)
        await websocket.close()
    except ParlaError as exc:
        await websocket.send_json({"detail": exc.detail})
        await websocket.close(code=4404)
    except WebSocketDisconnect:
        pass


# The Dia server API's paths (a dialect that can be switched off or moved), and the same under /v1 for
# Parla's own clients.
for target, prefix in ((dia, ""), (router, "/v1")):
    target.add_api_route(f"{prefix}/jobs", list_jobs, methods=["GET"], summary="List jobs", dependencies=[SPEAK])
    target.add_api_route(
        f"{prefix}/jobs", clear_jobs, methods=["DELETE"], summary="Forget finished jobs", dependencies=[ADMIN]
    )
    target.add_api_route(
        f"{prefix}/jobs/{{job_id}}", get_job, methods=["GET"], summary="A job's state", dependencies=[SPEAK]
    )
    target.add_api_route(
        f"{prefix}/jobs/{{job_id}}", cancel_job, methods=["DELETE"], summary="Cancel a job", dependencies=[SPEAK]
    )
    target.add_api_route(
        f"{prefix}/jobs/{{job_id}}/result", job_result, methods=["GET"], summary="A job's audio", dependencies=[SPEAK]
    )
    target.add_api_route(
        f"{prefix}/jobs/{{job_id}}/events", job_events, methods=["GET"], summary="Progress (SSE)", dependencies=[SPEAK]
    )
    target.add_api_websocket_route(f"{prefix}/jobs/{{job_id}}/ws", job_socket)
    target.add_api_route(
        f"{prefix}/queue/stats", queue_stats, methods=["GET"], summary="Queue statistics", dependencies=[SPEAK]
    )
