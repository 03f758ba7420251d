"""Background jobs: the ``jobs`` table is the truth, the queue (huey) only carries job ids.

A job is claimed by one consumer with a conditional update (pending -> running), reports
progress and a heartbeat while it runs, and ends completed, failed or cancelled. A consumer that
dies mid-job stops heartbeating; ``reap`` (run periodically by every consumer and the server)
puts such a job back in the queue, or fails it with the reason once it has had its attempts.
Nothing is ever left running forever.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any, Literal, cast

from pydantic import BaseModel, ConfigDict
from sqlalchemy import CursorResult, Executable, delete, func, select, update
from sqlalchemy.orm import Session

from parla.errors import ConflictError, InvalidInputError, NotFoundError, ParlaError
from parla.services.dialogue import DialogueRequest, DialogueService
from parla.services.keys import acting_for, caller_key_id, may_see, principal_of_key, visible
from parla.services.queue import JobQueue
from parla.services.speech import SpeechOptions, SpeechService
from parla.settings import Settings
from parla.store.db import Database
from parla.store.models import Generation, Job, Worker, new_id, utcnow

log = logging.getLogger(__name__)

JobStatus = Literal["pending", "running", "completed", "failed", "cancelled"]
TERMINAL = ("completed", "failed", "cancelled")
MAX_BATCH = 100


SpeechJobRequest = SpeechOptions
"""A speech job asks for what ``/v1/audio/speech`` does."""


class JobPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    job_id: str
    kind: str
    status: str
    progress: float
    error: str | None
    error_message: str | None
    """The same as ``error``: the Dia server API's JavaScript client reads this name."""
    batch_id: str | None
    generation_id: str | None
    worker: str | None
    attempts: int
    cancel_requested: bool
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    result_url: str | None

    @classmethod
    def of(cls, job: Job) -> JobPublic:
        return cls(
            id=job.id,
            job_id=job.id,
            kind=job.kind,
            status=job.status,
            progress=round(job.progress, 4),
            error=job.error,
            error_message=job.error,
            batch_id=job.batch_id,
            generation_id=job.generation_id,
            worker=job.worker,
            attempts=job.attempts,
            cancel_requested=job.cancel_requested,
            created_at=job.created_at,
            started_at=job.started_at,
            finished_at=job.finished_at,
            result_url=f"/jobs/{job.id}/result" if job.status == "completed" else None,
        )


def _changed(session: Session, statement: Executable) -> int:
    """Rows an UPDATE or DELETE touched (how a conditional update tells who won a race)."""
    return int(cast("CursorResult[Any]", session.execute(statement)).rowcount or 0)


class JobCancelledError(Exception):
    """Raised inside a running job when a client cancelled it; stops it at the next piece."""


class JobService:
    def __init__(
        self,
        *,
        settings: Settings,
        db: Database,
        speech: SpeechService,
        dialogue: DialogueService,
        role: str = "server",
    ) -> None:
        """``role``: what this process is to the queue (``server``, or ``worker`` for ``parla worker``)."""
        self.settings = settings
        self.db = db
        self.speech = speech
        self.dialogue = dialogue
        self.queue = JobQueue(settings, self, role=role)

    def _send(self, job_ids: list[str]) -> None:
        for job_id in job_ids:
            self.queue.enqueue(job_id)

    # -- clients' side ------------------------------------------------------------------------

    def submit(self, request: SpeechJobRequest, *, source: str = "job") -> JobPublic:
        """Check the request now (a bad one gets its 4xx at once), then queue it. ``source`` is the
        API asking, recorded on the generation so that API's retention and listings see it."""
        return self.submit_batch([request], source=source)[1][0]

    def submit_batch(self, requests: list[SpeechJobRequest], *, source: str = "job") -> tuple[str, list[JobPublic]]:
        if not requests:
            raise InvalidInputError("a batch needs at least one item", param="items")
        if len(requests) > MAX_BATCH:
            raise InvalidInputError(f"a batch holds at most {MAX_BATCH} items", param="items")
        for i, request in enumerate(requests):
            try:
                self.speech.prepare(request, source=source)
            except ParlaError as exc:
                if len(requests) > 1:
                    raise exc.within(f"item {i}") from None
                raise
        batch_id = new_id() if len(requests) > 1 else None
        with self.db.session() as session:
            jobs = [
                Job(
                    kind="speech",
                    request=r.model_dump(mode="json"),
                    batch_id=batch_id,
                    source=source,
                    owner_key_id=caller_key_id(),
                )
                for r in requests
            ]
            session.add_all(jobs)
            session.flush()
            public = [JobPublic.of(j) for j in jobs]
        self._send([j.id for j in public])
        return batch_id or public[0].id, public

    def submit_dialogue(self, request: DialogueRequest, *, source: str = "job") -> JobPublic:
        self.dialogue.prepare(request, source=source)  # a bad dialogue gets its 4xx now
        with self.db.session() as session:
            job = Job(
                kind="dialogue", request=request.model_dump(mode="json"), source=source, owner_key_id=caller_key_id()
            )
            session.add(job)
            session.flush()
            public = JobPublic.of(job)
        self._send([public.id])
        return public

    @staticmethod
    def _get(session: Session, job_id: str) -> Job:
        """A job the caller may see (its key's own, or any for admin)."""
        job = session.get(Job, job_id)
        if job is None or not may_see(job.owner_key_id):
            raise NotFoundError(f"job {job_id!r} not found")
        return job

    def get(self, job_id: str) -> JobPublic:
        with self.db.session() as session:
            return JobPublic.of(self._get(session, job_id))

    def list(self, *, status: str | None = None, batch_id: str | None = None, limit: int = 100) -> list[JobPublic]:
        query = select(Job).where(visible(Job.owner_key_id)).order_by(Job.created_at.desc()).limit(limit)
        if status:
            query = query.where(Job.status == status)
        if batch_id:
            query = query.where(Job.batch_id == batch_id)
        with self.db.session() as session:
            return [JobPublic.of(j) for j in session.scalars(query)]

    def cancel(self, job_id: str) -> JobPublic:
        """A pending job is cancelled at once and never runs; a running one stops at its next piece."""
        with self.db.session() as session:
            job = self._get(session, job_id)
            if job.status in TERMINAL:
                raise ConflictError(f"job {job_id!r} is already {job.status}")
            if job.status == "pending":
                job.status, job.finished_at = "cancelled", utcnow()
            else:
                job.cancel_requested = True
            session.flush()
            return JobPublic.of(job)

    def clear(self) -> int:
        """Forget finished jobs (completed, failed, cancelled); their audio stays in the history."""
        with self.db.session() as session:
            return _changed(session, delete(Job).where(Job.status.in_(TERMINAL)))

    def result(self, job_id: str) -> Generation:
        with self.db.session() as session:
            job = self._get(session, job_id)
            if job.status != "completed" or job.generation_id is None:
                raise ConflictError(f"job {job_id!r} is {job.status}: there is no result (yet)")
            generation = session.get(Generation, job.generation_id)
            if generation is None or generation.file is None:
                raise NotFoundError(f"the audio of job {job_id!r} is no longer kept")
            return generation

    def stats(self) -> dict[str, Any]:
        alive = utcnow() - timedelta(seconds=self.settings.job_lease_s)
        with self.db.session() as session:
            counts = dict(session.execute(select(Job.status, func.count()).group_by(Job.status)).all())
            workers = session.scalars(select(Worker.name).where(Worker.heartbeat_at >= alive)).all()
        return {
            "pending_jobs": counts.get("pending", 0),
            "running_jobs": counts.get("running", 0),
            "completed_jobs": counts.get("completed", 0),
            "failed_jobs": counts.get("failed", 0),
            "cancelled_jobs": counts.get("cancelled", 0),
            "total_jobs": sum(counts.values()),
            "active_workers": len(workers),
            "workers": sorted(workers),
            "queue": "redis" if self.settings.redis_url else "sqlite",
        }

    # -- consumers' side ----------------------------------------------------------------------

    def run(self, job_id: str, worker: str) -> None:
        """Run one job on this consumer, unless another claimed it or it was cancelled."""
        now = utcnow()
        with self.db.session() as session:
            claimed = _changed(
                session,
                update(Job)
                .where(Job.id == job_id, Job.status == "pending")
                .values(status="running", worker=worker, started_at=now, heartbeat_at=now, attempts=Job.attempts + 1),
            )
            job = session.get(Job, job_id) if claimed else None
            kind, request, source = (job.kind, job.request, job.source) if job else ("", None, "job")
            owner = job.owner_key_id if job else None
        if request is None:
            return
        # Done for the key that queued it (its generation is that key's, its audio counts against
        # that key's day); its text was charged when it was queued, and the queue runs one job at a
        # time, so neither of those limits applies again here.
        principal = principal_of_key(self.db, owner)
        acting_for.set(
            replace(principal, limits={**principal.limits, "text_chars_per_day": 0, "concurrent_generations": 0})
        )
        stop = threading.Event()
        beat = threading.Thread(target=self._heartbeat, args=(job_id, worker, stop), daemon=True)
        beat.start()

        def progress(done: int, total: int) -> None:
            self._progress(job_id, worker, done / total)

        try:
            self._progress(job_id, worker, 0.0)
            if kind == "dialogue":
                generation_id = self._run_dialogue(DialogueRequest.model_validate(request), progress, source)
            else:
                plan = self.speech.prepare(SpeechJobRequest.model_validate(request), source=source)
                # The engine's thread synthesises; this consumer thread's own loop encodes and records.
                asyncio.run(self.speech.render(plan, progress))
                generation_id = plan.id
            self._finish(job_id, worker, "completed", generation_id=generation_id)
        except JobCancelledError:
            self._finish(job_id, worker, "cancelled", error="cancelled while running")
        except ParlaError as exc:
            self._finish(job_id, worker, "failed", error=exc.detail)
        except Exception as exc:
            log.exception("job %s failed", job_id)
            self._finish(job_id, worker, "failed", error=f"{type(exc).__name__}: {exc}")
        finally:
            stop.set()

    def _run_dialogue(self, request: DialogueRequest, progress: Callable[[int, int], None], source: str) -> str:
        """A dialogue's turns may need several engines, each on its own thread: drive them from an
        event loop of this consumer thread's own."""
        plan = self.dialogue.prepare(request, source=source)
        return asyncio.run(self.dialogue.render(plan, progress)).id

    def _progress(self, job_id: str, worker: str, fraction: float) -> None:
        with self.db.session() as session:
            job = session.get(Job, job_id)
            if job is None or job.worker != worker or job.status != "running":
                raise JobCancelledError()  # reaped and handed to another consumer, or deleted
            if job.cancel_requested:
                raise JobCancelledError()
            # Stop short of 1.0: the job is complete only when its file and record are.
            job.progress, job.heartbeat_at = min(fraction, 0.99), utcnow()

    def _heartbeat(self, job_id: str, worker: str, stop: threading.Event) -> None:
        """Proof of life while a long piece is synthesised between two progress reports."""
        while not stop.wait(self.settings.job_lease_s / 3):
            with self.db.session() as session:
                session.execute(
                    update(Job)
                    .where(Job.id == job_id, Job.worker == worker, Job.status == "running")
                    .values(heartbeat_at=utcnow())
                )

    def _finish(
        self, job_id: str, worker: str, status: str, *, error: str | None = None, generation_id: str | None = None
    ) -> None:
        values: dict[str, Any] = {"status": status, "error": error, "finished_at": utcnow()}
        if status == "completed":
            values |= {"progress": 1.0, "generation_id": generation_id}
        with self.db.session() as session:
            session.execute(
                update(Job).where(Job.id == job_id, Job.worker == worker, Job.status == "running").values(**values)
            )

    def heartbeat_worker(self, name: str) -> None:
        with self.db.session() as session:
            worker = session.get(Worker, name)
            if worker is None:
                session.add(Worker(name=name))
            else:
                worker.heartbeat_at = utcnow()

    def forget_worker(self, name: str) -> None:
        with self.db.session() as session:
            session.execute(delete(Worker).where(Worker.name == name))

    def reap(self) -> dict[str, int]:
        """Retry or fail jobs whose consumer died, expire old pending jobs, forget old finished ones."""
        now = utcnow()
        lost_before = now - timedelta(seconds=self.settings.job_lease_s)
        ttl = now - timedelta(hours=self.settings.job_ttl_hours)
        retried: list[str] = []
        failed = 0
        with self.db.session() as session:
            lost = session.scalars(select(Job).where(Job.status == "running", Job.heartbeat_at < lost_before)).all()
            for job in lost:
                retry = job.attempts < self.settings.job_max_attempts
                values: dict[str, Any] = (
                    {"status": "pending", "worker": None, "progress": 0.0}
                    if retry
                    else {
                        "status": "failed",
                        "finished_at": now,
                        "error": f"its worker {job.worker} stopped responding (after {job.attempts} attempts)",
                    }
                )
                # Conditional, so that of two reapers only one acts on a job.
                won = _changed(
                    session,
                    update(Job)
                    .where(Job.id == job.id, Job.status == "running", Job.heartbeat_at < lost_before)
                    .values(**values),
                )
                if won and retry:
                    retried.append(job.id)
                elif won:
                    failed += 1
            expired = _changed(
                session,
                update(Job)
                .where(Job.status == "pending", Job.created_at < ttl)
                .values(status="failed", finished_at=now, error="expired before a worker ran it"),
            )
            forgotten = _changed(session, delete(Job).where(Job.status.in_(TERMINAL), Job.finished_at < ttl))
            session.execute(delete(Worker).where(Worker.heartbeat_at < ttl))
        if retried:
            log.warning("re-queued %d job(s) whose worker stopped responding", len(retried))
            self._send(retried)
        return {
            "retried": len(retried),
            "failed": failed,
            "expired": int(expired or 0),
            "forgotten": int(forgotten or 0),
        }
