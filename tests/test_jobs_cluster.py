"""Jobs at scale: PostgreSQL, a Redis queue and two ``parla worker`` processes, one of them killed
with SIGKILL in the middle of a job. No job may be lost and none may stay running."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from parla.services import Services
from parla.services.jobs import TERMINAL, SpeechJobRequest
from parla.settings import Settings

pytestmark = pytest.mark.slow  # worker processes starting, speaking with Piper, one killed and waited out
PARAGRAPH = (
    "When the sunlight strikes raindrops in the air, they act as a prism and form a rainbow. "
    "The rainbow is a division of white light into many beautiful colors. "
    "These take the shape of a long round arch, with its path high above. "
)


class Cluster:
    def __init__(self, services: Services, env: dict[str, str]) -> None:
        self.services = services
        self.env = env
        self.workers: dict[int, subprocess.Popen[bytes]] = {}

    def start_worker(self) -> subprocess.Popen[bytes]:
        proc = subprocess.Popen([sys.executable, "-m", "parla", "worker"], env=self.env, stdin=subprocess.DEVNULL)
        self.workers[proc.pid] = proc
        return proc

    def wait(self, condition: str, check: object, timeout: float = 180) -> None:
        deadline = time.monotonic() + timeout
        while not check():  # type: ignore[operator]
            assert time.monotonic() < deadline, f"timed out waiting for {condition}"
            time.sleep(0.2)


@pytest.fixture
def cluster(postgres_url: str, redis_server: str, tmp_path: Path) -> Iterator[Cluster]:
    queue = f"parla-test-{uuid.uuid4().hex[:8]}"
    env = {
        **os.environ,
        "PARLA_DATABASE_URL": postgres_url,
        "PARLA_REDIS_URL": redis_server,
        "PARLA_QUEUE_NAME": queue,
        "PARLA_DATA_DIR": str(tmp_path / "data"),  # shared storage: workers write, the server reads
        "PARLA_JOB_LEASE_S": "3",
        "PARLA_LOG_LEVEL": "warning",
    }
    settings = Settings(
        database_url=postgres_url,
        redis_url=redis_server,
        queue_name=queue,
        data_dir=tmp_path / "data",
        job_lease_s=3,
        in_process_worker=False,
        _env_file=None,
    )
    services = Services.build(settings)
    running = Cluster(services, env)
    try:
        yield running
    finally:
        for proc in running.workers.values():
            if proc.poll() is None:
                proc.terminate()
        for proc in running.workers.values():
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
        services.queue.huey.flush()
        services.close()


def test_no_job_is_lost_when_a_worker_is_killed(cluster: Cluster) -> None:
    jobs = cluster.services.jobs
    for _ in range(2):
        cluster.start_worker()
    cluster.wait("two live workers", lambda: jobs.stats()["active_workers"] == 2)

    submitted = [
        jobs.submit(SpeechJobRequest(input=PARAGRAPH * 3, voice="joe", response_format="mp3")) for _ in range(4)
    ]
    ids = [job.id for job in submitted]
    cluster.wait("a job to run", lambda: any(jobs.get(i).status == "running" and jobs.get(i).progress > 0 for i in ids))
    victim_job = next(jobs.get(i) for i in ids if jobs.get(i).status == "running")
    assert victim_job.worker is not None
    victim_pid = int(victim_job.worker.split(":")[1])
    os.kill(victim_pid, signal.SIGKILL)
    cluster.workers[victim_pid].wait(timeout=10)

    cluster.wait("every job to finish", lambda: all(jobs.get(i).status in TERMINAL for i in ids), timeout=300)
    final = [jobs.get(i) for i in ids]
    assert [j.status for j in final] == ["completed"] * 4, [(j.status, j.error) for j in final]
    retried = jobs.get(victim_job.id)
    assert retried.attempts == 2 and retried.worker != victim_job.worker
    for job in final:
        generation = jobs.result(job.id)
        assert cluster.services.blobs.path(str(generation.file)).stat().st_size > 10_000
    stats = jobs.stats()
    assert stats["running_jobs"] == 0 and stats["pending_jobs"] == 0
    cluster.wait("the dead worker to drop out", lambda: jobs.stats()["active_workers"] == 1, timeout=30)
