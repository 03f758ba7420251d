"""The FastAPI application factory."""

from __future__ import annotations

import asyncio
import ctypes
import logging
import os
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress

from fastapi import APIRouter, FastAPI
from fastapi.middleware.cors import CORSMiddleware

from parla import __version__
from parla.api import (
    dialogue,
    engines,
    errors,
    generate,
    health,
    history,
    jobs,
    openai,
    pronunciations,
    speech_ws,
    standard,
    transcription,
    ui,
    voices,
)
from parla.api.auth import mark_scopes, startup_problem
from parla.api.body_limit import MULTIPART_MARGIN, BodyLimit
from parla.api.compat import dia, titans, voicebox, xtts
from parla.engines.supervisor import Supervisor
from parla.offload import offload
from parla.services import Services
from parla.services.queue import InProcessConsumer
from parla.settings import Settings, get_settings

log = logging.getLogger(__name__)


MALLOC_ARENAS = 2
"""glibc malloc arenas for the server (``MALLOC_ARENA_MAX`` wins when set). glibc gives each thread
that allocates its own arena, up to 8 per core, and a freed block goes back to its thread's arena,
not to the system: the engines' runner threads and the offload pool each kept their own high-water
mark (some 60 MB more after twenty speech requests on a 2-core machine). Two arenas hold the same
work with no measurable loss of speed."""
_M_ARENA_MAX = -8  # mallopt's parameter number, from glibc's malloc.h


def _glibc() -> ctypes.CDLL | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt  # noqa: B018 - musl and others lack glibc's tuning calls
        libc.malloc_trim  # noqa: B018
    except (OSError, AttributeError):
        return None
    return libc


def limit_malloc_arenas() -> None:
    """Cap glibc's malloc arenas at ``MALLOC_ARENAS`` (see there) unless ``MALLOC_ARENA_MAX`` says
    otherwise; nothing on other C libraries. Before the server's threads start: an arena a thread
    has is kept."""
    libc = _glibc()
    if libc is not None and "MALLOC_ARENA_MAX" not in os.environ:
        libc.mallopt(_M_ARENA_MAX, MALLOC_ARENAS)


def trim_malloc() -> None:
    """Give the memory freed after loading a model back to the system (glibc keeps freed heap
    otherwise: loading Piper's graph leaves some 25 MB of copies behind)."""
    libc = _glibc()
    if libc is not None:
        libc.malloc_trim(0)


def _report_preload(future: asyncio.Future[None]) -> None:
    if not future.cancelled() and future.exception() is not None:
        # Not fatal: the engine reports itself unavailable in /health and requests get a 503.
        log.warning("could not preload the default engine: %s", future.exception())
        return
    trim_malloc()


async def _keep_retention(services: Services) -> None:
    """Delete generations older than the runtime config's ``output_retention_hours`` (none when it
    is 0) now and every ``cleanup_interval_s``, until cancelled at shutdown. Now too, because a
    server that was down for a while has a backlog."""
    while True:
        try:
            result = await offload(services.history.apply_retention)
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


def _supervise(settings: Settings) -> Supervisor | None:
    """Start a worker for each heavy engine installed in its own environment with its weights
    present (``parla.engines.supervisor``); ``None`` when there is none to start."""
    supervisor = Supervisor.from_settings(settings)
    for name, reason in supervisor.skipped.items():
        if not reason.startswith("not installed"):
            log.info("engine %s gets no worker: %s", name, reason)
    if not supervisor.names():
        return None
    supervisor.start()
    return supervisor


def _install_llm_runtime(services: Services) -> None:
    """Start building the characters' embedded model runtime in the background when it is missing:
    speech never waits for it, and characters say it is coming (503) until it is there."""
    settings = services.settings
    if settings.llm_runtime_autoinstall and services.characters.llm_runtime.start_install():
        log.info(
            "installing the characters' language model runtime in the background (log: %s)",
            services.characters.llm_runtime.log_path,
        )


DIALECT_ROUTERS: dict[str, tuple[APIRouter, ...]] = {
    "openai": (openai.router, transcription.router),
    "standard": (standard.router,),
    "xtts": (xtts.router,),
    "titans": (titans.router,),
    "dia": (dia.router, generate.router, history.dia, jobs.dia),
    "voicebox": (voicebox.router, generate.router, transcription.voicebox),
}


def create_app(settings: Settings | None = None, services: Services | None = None) -> FastAPI:
    """Build the app. ``services`` may be given (tests, the CLI); otherwise built on start-up."""
    settings = settings or (services.settings if services else get_settings())

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        owned = services is None
        if owned:
            limit_malloc_arenas()
        # Heavy engines' workers first: each is registered as its engine's remote section, so the
        # services are built with them (an app given its services has its engines already).
        supervisor = await offload(_supervise, settings) if owned and settings.supervise_engines else None
        app.state.supervisor = supervisor
        try:
            app.state.services = services or await offload(
                Services.build, supervisor.apply(settings) if supervisor else settings
            )
        except BaseException:
            if supervisor is not None:
                await offload(supervisor.stop)
            raise
        problem = startup_problem(settings, await offload(app.state.services.keys.required))
        if problem is not None:
            log.error("%s", problem)
            if owned:
                app.state.services.close()
            if supervisor is not None:
                await offload(supervisor.stop)
            raise RuntimeError(problem)
        # Load the default engines (plain voices', and cloned and preset voices') each on its own
        # thread, in the background: /health answers at once, and the first request queues behind
        # the load instead of racing it.
        for name in dict.fromkeys((settings.default_engine, settings.default_clone_engine)):
            if name in app.state.services.engines.names():
                engine = app.state.services.engines.get(name)
                if engine.unavailable_reason() is None:
                    preload = asyncio.ensure_future(app.state.services.engines.load(name))
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
        _install_llm_runtime(app.state.services)
        log.info(
            "Parla is ready on http://%s:%d - web studio /ui/, API docs /docs; first audio: "
            "curl -s http://%s:%d/v1/audio/speech -H 'Content-Type: application/json' "
            """-d '{"input": "Hello from Parla.", "voice": "nova"}' -o hello.mp3""",
            settings.host,
            settings.port,
            settings.host,
            settings.port,
        )
        try:
            yield
        finally:
            if consumer:
                await offload(consumer.stop)
            retention.cancel()
            with suppress(asyncio.CancelledError):
                await retention
            if owned:
                app.state.services.close()
            if supervisor is not None:
                await offload(supervisor.stop)

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
    mark_scopes(app)
    # The largest body a route takes: a voice archive (up to four uploads' worth) and its form.
    app.add_middleware(BodyLimit, max_bytes=settings.max_upload_bytes * 4 + MULTIPART_MARGIN)
    # Parla's own API, always there.
    for router in (
        health.router,
        engines.router,
        voices.router,
        pronunciations.router,
        speech_ws.router,
        dialogue.router,
        jobs.router,
        history.router,
        ui.router,
    ):
        app.include_router(router)
    # The compatibility dialects, each switchable and movable (settings.dialects). /generate
    # belongs to both the Dia server and voicebox: it is mounted once per distinct prefix.
    mounted: set[tuple[int, str]] = set()
    for name, routers in DIALECT_ROUTERS.items():
        dialect = settings.dialect(name)
        if not dialect.enabled:
            continue
        for router in routers:
            if (id(router), dialect.prefix) not in mounted:
                mounted.add((id(router), dialect.prefix))
                app.include_router(router, prefix=dialect.prefix)
    return app
