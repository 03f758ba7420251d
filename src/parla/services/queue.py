"""The job queue on huey: SQLite under the data dir by default, Redis at scale.

The server enqueues job ids. Consumers run them: a thread inside the server (the default with
SQLite) and ``parla worker`` processes on any machine (the way with Redis). Every consumer also
heartbeats, so ``/queue/stats`` can count the live ones, and reaps jobs lost by dead consumers.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from typing import TYPE_CHECKING, Any

from huey import Huey, RedisHuey, SqliteHuey

from parla.settings import Settings

if TYPE_CHECKING:  # the job service builds its queue: a run-time import would be circular
    from parla.services.jobs import JobService

log = logging.getLogger(__name__)

TASK_NAME = "parla.run_job"


def make_huey(settings: Settings) -> Huey:
    if settings.redis_url:
        return RedisHuey(settings.queue_name, url=settings.redis_url, results=False)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    return SqliteHuey(settings.queue_name, filename=str(settings.data_dir / "queue.db"), results=False)


def worker_name(kind: str) -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{kind}"


class JobQueue:
    """The huey instance with Parla's one task registered, running a ``JobService``'s jobs; made
    by that service. ``role`` names this process's consumers (``server`` or ``worker``)."""

    def __init__(self, settings: Settings, jobs: JobService, *, role: str) -> None:
        self.settings = settings
        self.jobs = jobs
        self.huey = make_huey(settings)
        self.name = worker_name(role)
        self._task: Any = self.huey.task(name=TASK_NAME)(self._run)

    def enqueue(self, job_id: str) -> None:
        self._task(job_id)

    def _run(self, job_id: str) -> None:
        self.jobs.run(job_id, self.name)

    def maintain(self, stop: threading.Event) -> None:
        """Heartbeat this consumer and reap lost jobs until ``stop`` is set."""
        interval = max(0.5, self.settings.job_lease_s / 3)
        while not stop.is_set():
            try:
                self.jobs.heartbeat_worker(self.name)
                self.jobs.reap()
            except Exception as exc:  # a database hiccup must not kill the consumer
                log.warning("queue maintenance failed: %s", exc)
            stop.wait(interval)
        self.jobs.forget_worker(self.name)


class InProcessConsumer:
    """A consumer thread inside the server (huey's own consumer wants the main thread for signals)."""

    def __init__(self, queue: JobQueue) -> None:
        self.queue = queue
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._consume, name="parla-consumer", daemon=True),
            threading.Thread(target=queue.maintain, args=(self._stop,), name="parla-queue-maintenance", daemon=True),
        ]

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def _consume(self) -> None:
        huey = self.queue.huey
        while not self._stop.is_set():
            try:
                task = huey.dequeue()
            except Exception as exc:
                log.warning("could not read the queue: %s", exc)
                task = None
            if task is None:
                self._stop.wait(0.2)
                continue
            huey.execute(task)

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout)


def run_worker(queue: JobQueue) -> None:
    """``parla worker``: huey's consumer in this process, plus heartbeat and reaping."""
    stop = threading.Event()
    maintenance = threading.Thread(target=queue.maintain, args=(stop,), daemon=True)
    maintenance.start()
    consumer = queue.huey.create_consumer(workers=1, worker_type="thread", periodic=False, initial_delay=0.2)
    try:
        consumer.run()
    finally:
        stop.set()
        maintenance.join(timeout=10)
