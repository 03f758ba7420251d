"""Background jobs on the default set-up: the SQLite queue and the server's own consumer. What jobs
say is heard on the live server (``model``), as are long jobs, cancelling a running one and the
WebSocket; the queue's API on the module's mock app."""

from __future__ import annotations

import asyncio
import json
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from httpx_sse import connect_sse
from websockets.sync.client import connect as websocket_connect

from parla.store.models import Job, utcnow
from tests.conftest import (
    InProcessApp,
    Listener,
    LiveServer,
    duration_of,
    mock_settings,
    natural_length,
    serving_in_process,
    wer,
)

SENTENCE = "A pot of tea helps to pass the evening."


def wait_for(client: httpx.Client, job_id: str, timeout: float = 300) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        job: dict[str, Any] = client.get(f"/jobs/{job_id}").json()
        if job["status"] in ("completed", "failed", "cancelled"):
            return job
        assert time.monotonic() < deadline, job
        time.sleep(0.2)


async def finished(api: httpx.AsyncClient, job_id: str) -> dict[str, Any]:
    """The job once it has ended (within a minute: the mock engine is quick), on the mock app."""
    deadline = time.monotonic() + 60
    while True:
        job: dict[str, Any] = (await api.get(f"/jobs/{job_id}")).json()
        if job["status"] in ("completed", "failed", "cancelled"):
            return job
        assert time.monotonic() < deadline, job
        await asyncio.sleep(0.05)


@pytest.mark.model
def test_a_job_runs_in_the_background_and_its_result_says_the_text(client: httpx.Client, listener: Listener) -> None:
    # A fixed seed: what is tested is the job's way through the queue, on audio that is the same every
    # run (Piper's noise is drawn from the seed; Whisper tiny.en once heard a rare draw as "a part of T").
    body = {"input": SENTENCE, "voice": "joe", "response_format": "wav", "seed": 1}
    submitted = client.post("/v1/jobs", json=body)
    assert submitted.status_code == 202
    job = wait_for(client, submitted.json()["job_id"])
    assert job["status"] == "completed" and job["progress"] == 1.0 and job["attempts"] == 1
    result = client.get(f"/jobs/{job['id']}/result")
    assert result.headers["content-type"] == "audio/wav"
    low, high = natural_length(SENTENCE)
    assert low < duration_of(result.content) < high
    assert wer(SENTENCE, listener.transcribe(result.content)) < 0.2
    assert client.get(f"/v1/jobs/{job['id']}").json()["generation_id"] == job["generation_id"]


@pytest.mark.slow
@pytest.mark.model
def test_a_long_text_completes_with_progress_events_in_order(client: httpx.Client) -> None:
    paragraph = (
        "When the sunlight strikes raindrops in the air, they act as a prism and form a rainbow. "
        "The rainbow is a division of white light into many beautiful colors. "
    )
    text = (paragraph * (20_000 // len(paragraph) + 1))[:20_000]
    job_id = client.post("/v1/jobs", json={"input": text, "voice": "joe", "response_format": "mp3"}).json()["id"]
    with connect_sse(client, "GET", f"/jobs/{job_id}/events", timeout=600) as source:
        events = [(e.event, json.loads(e.data)) for e in source.iter_sse()]
    progress = [data["progress"] for _, data in events]
    assert progress == sorted(progress) and len(set(progress)) > 10
    assert events[-1][0] == "done" and events[-1][1]["status"] == "completed"
    assert all(kind == "progress" for kind, _ in events[:-1])
    # About 3,300 words: some twenty minutes of speech.
    seconds = duration_of(client.get(f"/jobs/{job_id}/result").content)
    assert 12 * 60 < seconds < 40 * 60


@pytest.mark.model
def test_progress_over_a_websocket(client: httpx.Client, server: LiveServer) -> None:
    job_id = client.post("/v1/jobs", json={"input": SENTENCE * 4, "voice": "joe"}).json()["id"]
    updates = []
    with websocket_connect(server.url.replace("http", "ws") + f"/jobs/{job_id}/ws") as socket:
        for message in socket:
            updates.append(json.loads(message))
    assert updates[-1]["status"] == "completed"
    assert [u["progress"] for u in updates] == sorted(u["progress"] for u in updates)


async def test_cancelling_pending_and_running_jobs(tmp_path: Path) -> None:
    # The mock engine taking a fifth of a second a sentence: the first job runs long enough to cancel.
    async with serving_in_process(mock_settings(tmp_path, mock_delay_s=0.2)) as app:
        api = app.client
        long_text = "The boy was there when the sun rose. " * 80
        running = (await api.post("/v1/jobs", json={"input": long_text, "voice": "joe"})).json()["id"]
        pending = (await api.post("/v1/jobs", json={"input": SENTENCE, "voice": "joe"})).json()["id"]
        deadline = time.monotonic() + 60
        while (await api.get(f"/jobs/{running}")).json()["status"] != "running":
            assert time.monotonic() < deadline
            await asyncio.sleep(0.05)
        # The single consumer is busy with the first job, so the second is still waiting.
        cancelled = (await api.delete(f"/jobs/{pending}")).json()
        assert cancelled["status"] == "cancelled"
        stopping = (await api.delete(f"/jobs/{running}")).json()
        assert stopping["cancel_requested"] is True
        assert (await finished(api, running))["status"] == "cancelled"
        await asyncio.sleep(1.0)  # the queue still holds the cancelled job's id; the consumer must skip it
        never_ran = (await api.get(f"/jobs/{pending}")).json()
        assert never_ran["status"] == "cancelled" and never_ran["started_at"] is None and never_ran["attempts"] == 0
        assert (await api.delete(f"/jobs/{running}")).status_code == 409
        assert (await api.get(f"/jobs/{running}/result")).status_code == 409


async def test_a_batch_of_texts(api: httpx.AsyncClient) -> None:
    texts = ["One small text.", "Another small text.", "And a third one."]
    body = {"items": [{"input": t, "voice": "alloy", "response_format": "flac"} for t in texts]}
    submitted = await api.post("/v1/batch", json=body)
    assert submitted.status_code == 202
    batch_id = submitted.json()["batch_id"]
    for job in submitted.json()["jobs"]:
        await finished(api, job["id"])
    batch = (await api.get(f"/v1/batch/{batch_id}")).json()
    assert batch["done"] and batch["counts"]["completed"] == 3 and batch["progress"] == 1.0
    bad = await api.post("/v1/batch", json={"items": [{"input": "fine"}, {"input": "x", "voice": "nobody"}]})
    assert bad.status_code == 400 and bad.json()["detail"].startswith("item 1:")
    assert (await api.post("/v1/batch", json={"items": []})).status_code == 422


async def test_a_job_lost_by_its_worker_is_retried_then_failed(mock_app: InProcessApp, api: httpx.AsyncClient) -> None:
    services = mock_app.services
    stale = utcnow() - timedelta(seconds=services.settings.job_lease_s * 2)
    with services.db.session() as session:
        retry = Job(
            request={"input": SENTENCE, "voice": "joe"},
            status="running",
            worker="gone:1",
            attempts=1,
            started_at=stale,
            heartbeat_at=stale,
        )
        give_up = Job(
            request={"input": SENTENCE},
            status="running",
            worker="gone:2",
            attempts=2,
            started_at=stale,
            heartbeat_at=stale,
        )
        session.add_all([retry, give_up])
        session.flush()
        retry_id, give_up_id = retry.id, give_up.id
    services.jobs.reap()
    assert (await finished(api, retry_id))["status"] == "completed"
    failed = (await api.get(f"/jobs/{give_up_id}")).json()
    assert failed["status"] == "failed" and "stopped responding" in failed["error"]


async def test_jobs_expire_and_are_forgotten(mock_app: InProcessApp, api: httpx.AsyncClient) -> None:
    services = mock_app.services
    old = utcnow() - timedelta(hours=services.settings.job_ttl_hours + 1)
    with services.db.session() as session:
        waiting = Job(request={"input": SENTENCE}, status="pending", created_at=old)
        done = Job(request={"input": SENTENCE}, status="completed", created_at=old, finished_at=old)
        session.add_all([waiting, done])
        session.flush()
        waiting_id, done_id = waiting.id, done.id
    services.jobs.reap()
    expired = (await api.get(f"/jobs/{waiting_id}")).json()
    assert expired["status"] == "failed" and "expired" in expired["error"]
    assert (await api.get(f"/jobs/{done_id}")).status_code == 404


async def test_queue_stats_and_clearing(api: httpx.AsyncClient) -> None:
    finished_job = (await api.post("/v1/jobs", json={"input": SENTENCE})).json()["id"]
    assert (await finished(api, finished_job))["status"] == "completed"
    stats = (await api.get("/queue/stats")).json()
    assert stats["active_workers"] >= 1 and stats["queue"] == "sqlite"
    for key in ("pending_jobs", "running_jobs", "completed_jobs", "failed_jobs", "cancelled_jobs"):
        assert isinstance(stats[key], int)
    assert (await api.get("/jobs", params={"status": "completed"})).json()["jobs"]
    cleared = (await api.delete("/jobs")).json()
    assert cleared["deleted"] >= 1
    assert (await api.get("/jobs", params={"status": "completed"})).json()["jobs"] == []


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("GET", "/jobs/no-such-job", 404),
        ("DELETE", "/jobs/no-such-job", 404),
        ("GET", "/jobs/no-such-job/result", 404),
        ("GET", "/jobs/no-such-job/events", 404),
        ("GET", "/v1/batch/no-such-batch", 404),
        ("GET", "/jobs?status=sleeping", 422),
    ],
)
async def test_unknown_jobs_and_bad_filters(api: httpx.AsyncClient, method: str, path: str, status: int) -> None:
    response = await api.request(method, path)
    assert response.status_code == status
    assert isinstance(response.json()["detail"], str)


async def test_bad_job_requests_fail_at_once(api: httpx.AsyncClient) -> None:
    assert (await api.post("/v1/jobs", json={"input": ""})).status_code == 422
    response = await api.post("/v1/jobs", json={"input": "hello", "voice": "nobody"})
    assert response.status_code == 400 and "unknown voice" in response.json()["detail"]


@pytest.mark.model
def test_a_dialogue_runs_as_a_job(client: httpx.Client, listener: Listener) -> None:
    body = {"text": "[S1] Is the kettle on? [S2] It is boiling already.", "response_format": "wav"}
    submitted = client.post("/v1/jobs/dialogue", json=body)
    assert submitted.status_code == 202, submitted.text
    job = wait_for(client, submitted.json()["id"])
    assert job["status"] == "completed" and job["kind"] == "dialogue"
    audio = client.get(f"/jobs/{job['id']}/result").content
    assert wer("Is the kettle on? It is boiling already.", listener.transcribe(audio)) < 0.3
    bad = client.post("/v1/jobs/dialogue", json={"text": "[S1] hi [S2]"})
    assert bad.status_code == 400 and "has no text" in bad.json()["detail"]
