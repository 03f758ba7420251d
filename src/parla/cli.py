"""The ``parla`` command: serve, serve-engine, worker, say, voices, engines (install, remove), doctor,
llm-runtime, bench."""

from __future__ import annotations

import asyncio
import sys
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from parla.audio.encode import FORMATS
from parla.devices import cuda_device_count
from parla.errors import ParlaError, validation_detail
from parla.settings import Settings

if TYPE_CHECKING:
    from parla.services.keys import KeyService

app = typer.Typer(help="Parla: a self-hosted voice-cloning speech server.", no_args_is_help=True)
bench_app = typer.Typer(help="Measure speed and memory; prints a table.", no_args_is_help=True)
app.add_typer(bench_app, name="bench")
llm_runtime_app = typer.Typer(
    help="The characters' embedded language model runtime (llama-cpp-python).", no_args_is_help=True
)
app.add_typer(llm_runtime_app, name="llm-runtime")
engines_app = typer.Typer(
    help="The engines: list them (no command), install or remove a heavy engine's own environment."
)
app.add_typer(engines_app, name="engines")
keys_app = typer.Typer(help="API keys: create, list, revoke (see README, 'Keys').", no_args_is_help=True)
app.add_typer(keys_app, name="keys")
err = Console(stderr=True)


def _log_to_console(settings: Settings) -> None:
    """Parla's own log lines (start-up, background work, retention) beside uvicorn's, in its format,
    at ``PARLA_LOG_LEVEL``; other libraries stay quiet."""
    import logging

    from uvicorn.logging import DefaultFormatter

    handler = logging.StreamHandler()
    handler.setFormatter(DefaultFormatter("%(levelprefix)s %(message)s"))
    logger = logging.getLogger("parla")
    logger.addHandler(handler)
    logger.setLevel(settings.log_level.upper())
    logger.propagate = False


def _serve_settings(overrides: dict[str, object]) -> Settings:
    """The settings, or a clear exit: a refused value (an unknown ``EMBEDDING_MODEL``, a missing
    ``GGUF_MODEL_PATH``...) is one line per problem, not a traceback."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        for error in exc.errors():
            where = "".join(f"{part}: " for part in error["loc"])
            err.print(f"[red]error:[/red] {where}{error['msg'].removeprefix('Value error, ')}", highlight=False)
        raise typer.Exit(2) from None


def _check_device(settings: Settings) -> str:
    """The device engines get; ``cuda`` asked for where there is none is refused, not pretended."""
    gpus = cuda_device_count()
    if settings.device.startswith("cuda") and int(settings.device.partition(":")[2] or 0) >= gpus:
        seen = f"only {gpus} CUDA GPU(s) (cuda:0 to cuda:{gpus - 1}) are" if gpus else "no CUDA GPU is"
        err.print(
            f"[red]error:[/red] a GPU is asked for (PARLA_DEVICE={settings.device}, XTTS_USE_GPU or ENABLE_GPU=true)"
            f" but {seen} visible here; set it to cpu or auto, or unset it",
            highlight=False,
        )
        raise typer.Exit(2)
    return ("cuda" if gpus else "cpu") if settings.device == "auto" else settings.device


def _multi_process_problems(settings: Settings) -> list[str]:
    """What stops several server processes from sharing one Parla: each process has its own memory,
    so every piece of state must live in a store that several processes may write at once."""
    problems = []
    if settings.resolved_database_url.startswith("sqlite"):
        problems.append("a database server (PARLA_DATABASE_URL=postgresql+psycopg://...): SQLite is one process's")
    if not settings.redis_url:
        problems.append("Redis for the job queue (PARLA_REDIS_URL): the SQLite queue's consumer runs in one process")
    if not settings.chroma_url and settings.dialect("titans").enabled:
        problems.append(
            "a Chroma server for the characters' knowledge (PARLA_CHROMA_URL), or the characters switched off "
            "(PARLA_DIALECTS__TITANS__ENABLED=false): an embedded Chroma is one process's"
        )
    return problems


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Bind address (default PARLA_HOST or 127.0.0.1).")] = None,
    port: Annotated[int | None, typer.Option(help="Port (default PARLA_PORT or 8000).")] = None,
    workers: Annotated[
        int,
        typer.Option(
            min=1,
            help="Server processes (the Dia server API's --workers). More than 1 needs PostgreSQL, Redis and a "
            "Chroma server; jobs run on `parla worker`s.",
        ),
    ] = 1,
    retention_hours: Annotated[
        float | None,
        typer.Option(
            min=0,
            help="Default hours the Dia server API's outputs are kept, 0 forever (PARLA_OUTPUT_RETENTION_HOURS, "
            "24); PUT /config wins.",
        ),
    ] = None,
    save_outputs: Annotated[
        bool | None,
        typer.Option(
            "--save-outputs/--no-save-outputs",
            help="Default of keeping generated audio (PARLA_SAVE_OUTPUTS, on); PUT /config wins.",
        ),
    ] = None,
    debug: Annotated[bool, typer.Option("--debug", help="Log at debug level (PARLA_LOG_LEVEL=debug).")] = False,
) -> None:
    """Start the HTTP server."""
    import os

    import uvicorn

    from parla.api.auth import is_loopback, startup_problem
    from parla.app import create_app
    from parla.engines.supervisor import Supervisor
    from parla.engines.weights import hub_offline

    options: dict[str, object | None] = {
        "host": host,
        "port": port,
        "output_retention_hours": retention_hours,
        "save_outputs": save_outputs,
        "log_level": "debug" if debug else None,
    }
    overrides = {name: value for name, value in options.items() if value is not None}
    settings = _serve_settings(overrides)
    # The database is asked (and brought up to date) only when its answer matters: beyond loopback.
    needs_keys = settings.auth == "on" and not is_loopback(settings.host)
    problem = startup_problem(settings, _key_service(settings).required()) if needs_keys else None
    if problem is not None:
        err.print(f"[red]error:[/red] {escape(problem)}", highlight=False, soft_wrap=True)
        raise typer.Exit(2)
    device = _check_device(settings)
    _log_to_console(settings)
    hub_offline()  # engines that run here read model hubs' caches, never the network
    if workers == 1:
        import logging

        logging.getLogger("parla").info("engines that can use a GPU run on: %s", device)
        uvicorn.run(create_app(settings), host=settings.host, port=settings.port, log_level=settings.log_level)
        return
    problems = _multi_process_problems(settings)
    if problems:
        err.print(
            f"[red]error:[/red] --workers {workers} runs {workers} server processes, which needs:", highlight=False
        )
        for problem in problems:
            err.print(f"  - {problem}", highlight=False)
        err.print("With the embedded stores, run one process (the default).", highlight=False)
        raise typer.Exit(2)
    # Each process builds its app from the environment (uvicorn starts them by import string), so the
    # options travel as Parla's variables, which win over any alias set there.
    for name, value in overrides.items():
        os.environ[f"PARLA_{name.upper()}"] = str(value).lower() if isinstance(value, bool) else str(value)
    # One worker per heavy engine for all the processes: started here, and handed to them as
    # configured workers (an engine with a URL is not supervised again by each process).
    supervisor = Supervisor.from_settings(settings) if settings.supervise_engines else None
    if supervisor is not None and supervisor.names():
        supervisor.start()
        for name, section in supervisor.sections().items():
            os.environ[f"PARLA_ENGINES__{name.upper()}__URL"] = str(section.url)
    try:
        uvicorn.run(
            "parla.app:create_app",
            factory=True,
            host=settings.host,
            port=settings.port,
            workers=workers,
            log_level=settings.log_level,
        )
    finally:
        if supervisor is not None:
            supervisor.stop()


@app.command("serve-engine")
def serve_engine(
    name: Annotated[str, typer.Argument(help="The engine to serve (see `parla engines`).")],
    host: Annotated[str | None, typer.Option(help="Bind address (default PARLA_HOST or 127.0.0.1).")] = None,
    port: Annotated[
        int | None,
        typer.Option(
            help="Port (default: the model microservice API's: dia 8003, chatterbox 8004, higgs 8005, mock 8999; 8006)."
        ),
    ] = None,
) -> None:
    """Serve one local engine alone as a worker (the model microservice API plus streaming) for gateways to use."""
    import uvicorn

    from parla.engines import EngineUnavailableError, UnknownEngineError
    from parla.engines.supervisor import watch_supervisor
    from parla.engines.weights import hub_offline
    from parla.worker_app import create_worker_app, default_port

    settings = Settings(**({"host": host} if host else {}))  # type: ignore[arg-type]
    _log_to_console(settings)
    hub_offline()  # the engine reads model hubs' caches, never the network
    watch_supervisor()  # started by `parla serve`: stop with it, even when it is killed outright
    try:
        worker_app = create_worker_app(name, settings)
    except (UnknownEngineError, EngineUnavailableError) as exc:
        err.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from None
    uvicorn.run(worker_app, host=settings.host, port=port or default_port(name), log_level=settings.log_level)


@app.command()
def worker() -> None:
    """Consume the job queue (set PARLA_REDIS_URL to share one queue between machines)."""
    from parla.services import Services
    from parla.services.queue import run_worker

    services = Services.build(Settings(), role="worker")
    try:
        run_worker(services.queue)
    finally:
        services.close()


@app.command()
def say(
    text: Annotated[str, typer.Argument(help="Text to speak; '-' reads standard input.")],
    voice: Annotated[str | None, typer.Option(help="Voice name or id.")] = None,
    fmt: Annotated[str, typer.Option("--format", "-f", help=f"One of {', '.join(FORMATS)}.")] = "mp3",
    output: Annotated[Path | None, typer.Option("--output", "-o", help="File to write; stdout if absent.")] = None,
    model: Annotated[str | None, typer.Option(help="Engine or OpenAI model name.")] = None,
    speed: Annotated[float, typer.Option(help="0.25 to 4.0.")] = 1.0,
    seed: Annotated[int | None, typer.Option(help="Same seed, same audio.")] = None,
) -> None:
    """Speak TEXT into an audio file (or standard output)."""
    from parla.services import Services
    from parla.services.speech import SpeechOptions

    if text == "-":
        text = sys.stdin.read()
    services = Services.build(Settings())
    try:
        options = SpeechOptions(input=text, voice=voice, model=model, response_format=fmt, speed=speed, seed=seed)
        plan = services.speech.prepare(options, source="cli")
        with Progress(
            TextColumn("speaking"),
            BarColumn(),
            TaskProgressColumn(),
            TimeElapsedColumn(),
            console=err,
            transient=True,
            disable=output is None and not err.is_terminal,
        ) as bar:
            task = bar.add_task("speak", total=len(plan.pieces))
            rendered = asyncio.run(services.speech.render(plan, lambda done, _total: bar.update(task, completed=done)))
    except ParlaError as exc:
        err.print(f"[red]error:[/red] {exc.detail}")
        raise typer.Exit(2) from None
    except ValidationError as exc:
        err.print(f"[red]error:[/red] {validation_detail(exc.errors())[0]}")
        raise typer.Exit(2) from None
    finally:
        services.close()
    if output is None:
        sys.stdout.buffer.write(rendered.audio)
        sys.stdout.buffer.flush()
    else:
        output.write_bytes(rendered.audio)
        err.print(f"wrote {output} ({len(rendered.audio)} bytes, {rendered.duration:.1f} s, seed {plan.seed})")


@app.command()
def voices() -> None:
    """List the voices."""
    from parla.services import Services

    services = Services.build(Settings())
    try:
        table = Table("name", "id", "samples", "description")
        for v in services.voices.list_all():
            table.add_row(
                v["name"], "built-in" if v.get("builtin") else v["id"], str(v["samples"]), v["description"] or ""
            )
        Console().print(table)
    finally:
        services.close()


def _key_service(settings: Settings | None = None) -> KeyService:
    from parla.services.keys import KeyService
    from parla.store.db import Database

    db = Database((settings or Settings()).resolved_database_url)
    db.migrate()
    return KeyService(db)


LimitOption = Annotated[
    float | None,
    typer.Option(help="Its own limit (0: none); without it, PARLA_KEY_LIMITS__<NAME> applies.", show_default=False),
]


def _limits(**given: float | None) -> dict[str, float]:
    return {name: value for name, value in given.items() if value is not None}


@keys_app.command("create")
def keys_create(
    name: Annotated[str, typer.Option(help="What the key is for (unique): a person, an app.")],
    scopes: Annotated[
        str, typer.Option(help="Comma-separated: speak (generate, transcribe), voices (make voices), admin (all).")
    ] = "speak",
    requests_per_minute: LimitOption = None,
    concurrent_generations: LimitOption = None,
    text_chars_per_day: LimitOption = None,
    audio_seconds_per_day: LimitOption = None,
) -> None:
    """Make a key and print it once: the server keeps only its hash."""
    limits = _limits(
        requests_per_minute=requests_per_minute,
        concurrent_generations=concurrent_generations,
        text_chars_per_day=text_chars_per_day,
        audio_seconds_per_day=audio_seconds_per_day,
    )
    try:
        info, secret = _key_service().create(name, scopes, limits)
    except ParlaError as exc:
        err.print(f"[red]error:[/red] {escape(exc.detail)}", highlight=False)
        raise typer.Exit(2) from None
    err.print(
        f"key [bold]{escape(info.name)}[/bold] ({', '.join(info.scopes)}); shown this once, keep it now:",
        highlight=False,
    )
    print(secret)


@keys_app.command("list")
def keys_list() -> None:
    """The keys: name, first characters, scopes, when made, last used, revoked."""
    table = Table("name", "key", "scopes", "own limits", "created", "last used", "revoked")

    def when(value: datetime | None) -> str:
        return value.strftime("%Y-%m-%d %H:%M") if value else ""

    for info in _key_service().list():
        table.add_row(
            info.name,
            f"{info.prefix}…",
            ",".join(info.scopes),
            ", ".join(f"{k}={v:g}" for k, v in info.limits.items()),
            when(info.created_at),
            when(info.last_used_at),
            when(info.revoked_at),
        )
    Console().print(table)


@keys_app.command("limits")
def keys_limits(
    key: Annotated[str, typer.Argument(help="The key's name, or its first characters as listed.")],
    requests_per_minute: LimitOption = None,
    concurrent_generations: LimitOption = None,
    text_chars_per_day: LimitOption = None,
    audio_seconds_per_day: LimitOption = None,
) -> None:
    """Set a key's own limits (-1 returns one to the default); counts within 5 seconds."""
    limits = _limits(
        requests_per_minute=requests_per_minute,
        concurrent_generations=concurrent_generations,
        text_chars_per_day=text_chars_per_day,
        audio_seconds_per_day=audio_seconds_per_day,
    )
    try:
        info = _key_service().set_limits(key, limits)
    except ParlaError as exc:
        err.print(f"[red]error:[/red] {escape(exc.detail)}", highlight=False)
        raise typer.Exit(2) from None
    own = ", ".join(f"{k}={v:g}" for k, v in info.limits.items()) or "the defaults"
    err.print(f"{escape(info.name)}: {escape(own)}", highlight=False)


@keys_app.command("revoke")
def keys_revoke(key: Annotated[str, typer.Argument(help="The key's name, or its first characters as listed.")]) -> None:
    """Revoke a key: requests with it get 401 within seconds. It stays listed."""
    try:
        info = _key_service().revoke(key)
    except ParlaError as exc:
        err.print(f"[red]error:[/red] {escape(exc.detail)}", highlight=False)
        raise typer.Exit(2) from None
    err.print(f"revoked {escape(info.name)} ({info.prefix}…)", highlight=False)


@engines_app.callback(invoke_without_command=True)
def engines(ctx: typer.Context) -> None:
    """List every engine, built-in and heavy: whether it can speak and why not, where it runs, its
    environment, its weights (where, or what to put where), device, loaded, memory."""
    if ctx.invoked_subcommand is not None:
        return
    from parla.engines.inventory import memory_note, survey
    from parla.engines.registry import EngineRegistry

    settings = Settings()
    registry = EngineRegistry.from_entry_points(settings)
    registry.start()  # asks the workers of remote engines how they are
    try:
        facts = survey(settings, registry)
    finally:
        registry.shutdown()
    table = Table("engine", "speaks", "runs", "environment", "weights", "device", "loaded", "memory")
    for fact in facts:
        if fact.weights:
            weights = fact.weights
        elif fact.weights_missing:
            weights = "[yellow]missing (below)[/yellow]"
        else:
            weights = "-"
        table.add_row(
            fact.name,
            "[green]yes[/green]" if fact.available else "[yellow]no[/yellow]",
            fact.runs,
            fact.environment or ("[dim]not installed[/dim]" if fact.kind == "heavy" else "-"),
            weights,
            fact.device or "-",
            "yes" if fact.loaded else "no",
            memory_note(fact),
        )
    console = Console() if sys.stdout.isatty() else Console(width=200)
    console.print(table)
    for fact in facts:
        if not fact.available and fact.reason:
            console.print(f"[bold]{fact.name}[/bold]: {escape(fact.reason)}", highlight=False, soft_wrap=True)
        if fact.weights_missing and fact.weights_missing != fact.reason:
            console.print(
                f"[bold]{fact.name}[/bold] weights: {escape(fact.weights_missing)}", highlight=False, soft_wrap=True
            )


@engines_app.command("install")
def engines_install(
    name: Annotated[str, typer.Argument(help="A heavy engine: xtts, f5, kokoro, dia, chatterbox, qwen3, higgs.")],
    device: Annotated[
        str, typer.Option(help="cpu or cuda: the device the environment is for (torch 2.13.0 either way).")
    ] = "cpu",
    force: Annotated[bool, typer.Option("--force", help="Rebuild the environment even when it is whole.")] = False,
) -> None:
    """Make the engine's own environment under PARLA_ENGINES_DIR (<data_dir>/engines): torch 2.13.0,
    Parla with the engine's extra and its pinned recipe. Safe to re-run: the same recipe does nothing."""
    import time

    from parla.bench.common import step_bar
    from parla.engines import envs
    from parla.engines.catalog import UnknownCatalogEntryError, entry
    from parla.engines.weights import find_weights

    if device not in envs.DEVICES:
        err.print(f"[red]error:[/red] --device must be one of {', '.join(envs.DEVICES)}, not {device!r}")
        raise typer.Exit(2)
    try:
        recipe = entry(name)
    except UnknownCatalogEntryError as exc:
        err.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from None
    settings = Settings()
    env = envs.engine_env(settings, name)
    log_path = envs.install_log(settings, name)
    err.print(
        f"installing {name} ({recipe.title}) for {device} into {env.root}: about {recipe.minutes:.0f} minute"
        f"{'' if recipe.minutes == 1 else 's'} and {recipe.size_gb:.1f} GB the first time; pip's output goes to "
        f"{log_path}",
        highlight=False,
        soft_wrap=True,
    )
    current: list[tuple[str, float]] = []  # the step under way and when it started (one at most)

    with step_bar(err) as bar:
        task = bar.add_task("checking", total=None)

        def finish_step(mark: str) -> None:
            if current:
                label, started = current.pop()
                took = time.monotonic() - started
                bar.console.print(f"  {mark} {escape(label)} ({took:.0f} s)", highlight=False)

        def step(index: int, total: int, label: str) -> None:
            finish_step("[green]✓[/green]")
            current.append((label, time.monotonic()))
            bar.update(task, description=escape(label), completed=index, total=total)

        try:
            result = envs.install(recipe, env, device=device, force=force, log_path=log_path, progress=step)
        except envs.InstallError as exc:
            finish_step("[red]✗[/red]")
            err.print(f"[red]error:[/red] {exc}", highlight=False, soft_wrap=True)
            raise typer.Exit(1) from None
        finish_step("[green]✓[/green]")
    if result.skipped:
        print(f"{name} is installed already, from the same recipe ({env.root}): nothing to do (--force rebuilds)")
    else:
        print(f"{name} is installed in {env.root} ({result.seconds:.0f} s)")
    found = find_weights(
        name, recipe.weights, models_dir=settings.resolved_models_dir, reference_dir=settings.engine_weights_dir(name)
    )
    if found.complete:
        print(f"its weights: {found.where()}; `parla serve` runs it as a worker")
    else:
        print(f"its weights: {found.reason}")


@engines_app.command("remove")
def engines_remove(
    name: Annotated[str, typer.Argument(help="The heavy engine whose environment to delete.")],
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask.")] = False,
) -> None:
    """Delete a heavy engine's environment (its weights stay where they are)."""
    from parla.engines import envs
    from parla.engines.catalog import UnknownCatalogEntryError, entry

    try:
        entry(name)
    except UnknownCatalogEntryError as exc:
        err.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from None
    env = envs.engine_env(Settings(), name)
    if not env.root.exists():
        print(f"{name} has no environment ({env.root} does not exist)")
        return
    if not yes:
        typer.confirm(f"delete {env.root}?", abort=True)
    try:
        envs.remove(env)
    except envs.InstallBusyError as exc:
        err.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(1) from None
    print(f"deleted {env.root}")


@app.command()
def doctor() -> None:
    """What is installed, which engines can run and why not, where the data lives, and whether the
    configured PostgreSQL, Redis, Chroma and language model endpoint answer. Exits 1 when something
    speech needs, or something configured, does not work."""
    from parla.doctor import run_checks

    settings = Settings()
    colours = {"ok": "green", "warn": "yellow", "fail": "red", "off": "dim"}
    table = Table("check", "state", "detail")
    checks = run_checks(settings)
    for check in checks:
        table.add_row(check.name, f"[{colours[check.status]}]{check.status}[/]", check.detail)
    (Console() if sys.stdout.isatty() else Console(width=200)).print(table)
    if any(check.status == "fail" for check in checks):
        raise typer.Exit(1)


@llm_runtime_app.command("install")
def llm_runtime_install() -> None:
    """Build llama-cpp-python without native CPU flags (once per machine; the wheel is kept in
    ~/.cache/parla/wheels or PARLA_WHEELS_DIR) and install it into this environment."""
    from parla.characters import runtime

    if runtime.is_installed():
        print(f"{runtime.PACKAGE} is installed", flush=True)
        return
    try:
        runtime.install(runtime.wheels_dir(), say=lambda line: print(line, flush=True))
    except RuntimeError as exc:
        err.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(1) from None
    print(f"{runtime.PACKAGE} {runtime.VERSION} is installed: characters can use the embedded model", flush=True)


@bench_app.command("speech")
def bench_speech(
    rounds: Annotated[int, typer.Option(min=1, help="Alternating rounds per voice and format.")] = 5,
    clients: Annotated[int, typer.Option(min=1, help="Concurrent clients in the load test.")] = 8,
    voices: Annotated[
        str, typer.Option(help="Comma-separated voices; 'cloned' is a library voice cloned at the start.")
    ] = "joe,alloy,cloned",
    formats: Annotated[str, typer.Option("--formats", "-f", help="Comma-separated response formats.")] = "pcm,wav,mp3",
    load_runs: Annotated[
        int, typer.Option(min=1, help="Passes of the load test over the voices (memory should stay flat).")
    ] = 2,
    json_path: Annotated[
        Path | None, typer.Option("--json", help="Also write every number to this JSON file (to compare runs).")
    ] = None,
) -> None:
    """The server against raw in-process Piper, per voice (plain, preset, cloned) and format: first
    audio, total, CPU seconds, concurrency, memory, as ratios to raw Piper against the targets, with
    the machine's load average."""
    from parla.bench.speech import run_speech_bench

    voice_list = [v.strip() for v in voices.split(",") if v.strip()]
    format_list = [f.strip() for f in formats.split(",") if f.strip()]
    unknown = [f for f in format_list if f not in FORMATS]
    if unknown or not format_list or not voice_list:
        err.print(f"[red]error:[/red] formats are some of {', '.join(FORMATS)}; voices and formats may not be empty")
        raise typer.Exit(2)
    # Piped into a file or a test, rich would squeeze the tables into 80 columns.
    console = Console() if sys.stdout.isatty() else Console(width=200)
    run_speech_bench(
        rounds=rounds,
        clients=clients,
        voices=voice_list,
        formats=format_list,
        console=console,
        load_runs_count=load_runs,
        json_path=json_path,
    )


@bench_app.command("engines")
def bench_engines(
    engine: Annotated[
        list[str] | None, typer.Option("--engine", "-e", help="An engine to measure (repeat; default: every one).")
    ] = None,
    rounds: Annotated[int, typer.Option(min=1, help="Rounds per engine; the table shows medians.")] = 3,
    text: Annotated[str | None, typer.Option(help="The paragraph the real-time factor is measured on.")] = None,
) -> None:
    """Each engine that can run here, in this process or as a worker: load time, first audio, RTF,
    memory (RSS, GPU); the others with the reason they cannot run."""
    from parla.bench.engines import run_engines_bench

    console = Console() if sys.stdout.isatty() else Console(width=200)
    run_engines_bench(names=engine or [], rounds=rounds, text=text, console=console)


@bench_app.command("load")
def bench_load(
    clients: Annotated[int, typer.Option(min=1, max=512, help="Clients at once.")] = 16,
    seconds: Annotated[float, typer.Option(min=1, help="How long they keep asking.")] = 30,
    mix: Annotated[
        str, typer.Option(help="Weights of the kinds of request: speech, transcription, voice (upload), job.")
    ] = "speech=6,transcription=2,voice=1,job=1",
    json_path: Annotated[Path | None, typer.Option("--json", help="Also write every number to this JSON file.")] = None,
) -> None:
    """Many clients, mixed requests, with a key: throughput, p50/p95/p99, errors by status, memory."""
    from parla.bench.load import parse_mix, run_load_bench

    try:
        weights = parse_mix(mix)
    except ValueError as exc:
        err.print(f"[red]error:[/red] --mix {escape(str(exc))}", highlight=False)
        raise typer.Exit(2) from None
    console = Console() if sys.stdout.isatty() else Console(width=160)
    run_load_bench(clients=clients, seconds=seconds, mix=weights, console=console, json_path=json_path)


@bench_app.command("long")
def bench_long(
    text: Annotated[
        Path | None,
        typer.Argument(
            help="A text file to speak (default: the shipped 10,000 characters).", exists=True, dir_okay=False
        ),
    ] = None,
    engine: Annotated[
        list[str] | None,
        typer.Option("--engine", "-e", help="An engine to measure (repeat; default: piper, clone, espeak, kokoro)."),
    ] = None,
) -> None:
    """A long text through each engine with every piece heard by Whisper: the share of pieces spoken
    again with another seed, those still wrong, and the word error rate before and after."""
    from parla.bench.long import run_long_bench

    console = Console() if sys.stdout.isatty() else Console(width=200)
    run_long_bench(names=engine or [], text_path=text, console=console)


@bench_app.command("clone")
def bench_clone(
    directory: Annotated[Path, typer.Argument(help="Speakers: folders with ref.wav (+ ref.txt) and judge.wav.")],
    limit: Annotated[int | None, typer.Option(help="Only the first N speakers.")] = None,
) -> None:
    """Clone each speaker and score it: similarity (resemblyzer), margin, WER, adaptation time, RTF."""
    from parla.bench.clone import run_clone_bench

    console = Console() if sys.stdout.isatty() else Console(width=160)
    run_clone_bench(directory, console=console, speakers_limit=limit)


@bench_app.command("characters")
def bench_characters(
    qa_file: Annotated[
        Path | None,
        typer.Argument(
            help="A question set for --qa (default: the shipped one, parla/bench/qa/questions.json).",
            exists=True,
            dir_okay=False,
        ),
    ] = None,
    qa: Annotated[
        bool,
        typer.Option(
            "--qa",
            help="Measure answers instead of speed: each set's character is asked its questions through the server"
            " (/ask-question-stream) and scored: exact-answer accuracy, unsupported-answer rate (an answer whose"
            " numbers, names or content words the knowledge file does not hold), refusal accuracy on unanswerable"
            " questions, time to first token and first audio.",
        ),
    ] = False,
    rounds: Annotated[int, typer.Option(min=1, help="Rounds over the three questions (speed mode).")] = 3,
    json_path: Annotated[
        Path | None, typer.Option("--json", help="With --qa: also write every answer and figure to this JSON file.")
    ] = None,
) -> None:
    """A character's spoken answer: time to first token, first audio and total, streaming against
    answer-then-speak, and the language model alone. With --qa [FILE]: how well characters answer
    from their knowledge (see `parla bench characters --help` for the measures)."""
    from parla.bench.characters import SHIPPED_QA, QAError, run_characters_bench, run_qa_bench

    console = Console() if sys.stdout.isatty() else Console(width=200)
    if qa or qa_file is not None:
        try:
            run_qa_bench(qa_path=qa_file or SHIPPED_QA, console=console, json_path=json_path)
        except QAError as exc:
            err.print(f"[red]error:[/red] {exc}")
            raise typer.Exit(2) from None
        return
    run_characters_bench(rounds=rounds, console=console)


if __name__ == "__main__":
    app()
