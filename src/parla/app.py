"""The FastAPI application factory."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware

from parla import __version__
from parla.api import dialogue, errors, generate, health, history, jobs, openai, standard, transcription, voices
from parla.api.compat import dia, voicebox, xtts
from parla.services import Services
from parla.services.queue import InProcessConsumer
from parla.settings import Settings, get_settings

log = logging.getLogger(__name__)


def _report_preload(future: asyncio.Future[None]) -> None:
    if not future.cancelled() and future.exception() is not None:
        # Not fatal: the engine reports itself unavailable in /health and requests get a 503.
        log.warning("could not preload the default engine: %s", future.exception())


async def _keep_retention(services: Services) -> None:
    """Delete generations older than the runtime config's ``output_retention_hours`` (none when it
    is 0) now and every ``cleanup_interval_s``, until cancelled at shutdown. Now too, because a
    server that was down for a while has a backlog."""
    while True:
        try:
            result = await asyncio.to_thread(services.history.apply_retention)
            if result.deleted_generations or result.deleted_files:
                log.info(
                    "retention: deleted %d generations and %d files (%d bytes)",
                    result.deleted_generations,
                    result.deleted_files,
                    result.freed_bytes,
                )
        except Exception:  # a failed round (the database away) must not end the loop: the next retries
            log.exception("the retention clean-up failed")
        await asyncio.sleep(services.settings.cleanup_interval_s)


def create_app(settings: Settings | None = None, services: Services | None = None) -> FastAPI:
    """Build the app. ``services`` may be given (tests, the CLI); otherwise built on start-up."""
    settings = settings or (services.settings if services else get_settings())

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        owned = services is None
        app.state.services = services or await asyncio.to_thread(Services.build, settings)
        # Load the default engine on its own thread, in the background: /health answers at once,
        # and the first request queues behind the load instead of racing it.
        runner = app.state.services.engines.runner(settings.default_engine)
        preload = asyncio.ensure_future(runner.call(app.state.services.engines.get(settings.default_engine).load))
        preload.add_done_callback(_report_preload)
        retention = asyncio.create_task(_keep_retention(app.state.services))
        in_process = settings.in_process_worker
        consumer = (
            InProcessConsumer(app.state.services.queue)
            if (in_process is None and not settings.redis_url) or in_process
            else None
        )
        if consumer:
            consumer.start()
        try:
            yield
        finally:
            if consumer:
                await asyncio.to_thread(consumer.stop)
            retention.cancel()
            with suppress(asyncio.CancelledError):
                await retention
            if owned:
                app.state.services.close()

    app = FastAPI(
        title="Parla",
        version=__version__,
        description="Self-hosted voice-cloning speech server with the OpenAI audio API.",
        lifespan=lifespan,
    )
    app.add_middleware(
        CORSMiddleware,
        allow_origins=settings.cors_origins,
        allow_methods=["*"],
        allow_headers=["*"],
        expose_headers=["X-Generation-Id", "X-Seed", "X-Turns"],
    )
    errors.install(app)
    app.include_router(health.router)
    app.include_router(openai.router)
    app.include_router(transcription.router)
    app.include_router(voices.router)
    app.include_router(jobs.router)
    app.include_router(dialogue.router)
    app.include_router(generate.router)
    app.include_router(voicebox.router)
    app.include_router(xtts.router)
    app.include_router(dia.router)
    app.include_router(history.router)
    app.include_router(history.dia)
    app.include_router(standard.router)
    return app
