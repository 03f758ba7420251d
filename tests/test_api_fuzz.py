"""Every operation of the OpenAPI spec, fed requests that schemathesis generates from it: none may
answer with a 5xx. Bad input is the client's to fix and gets a 4xx that says why; a 500 is a bug.

Bounded and repeatable: 25 examples per operation with a fixed seed, on a server of its own (its
own data dir, the shared engines), with URL fetching off and URL-like strings defanged, so nothing
generated reaches beyond this machine."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from parla.app import create_app
from parla.services import Services
from parla.settings import Settings
from tests.conftest import LiveServer, serving

ROOT = Path(__file__).parents[1]

pytestmark = pytest.mark.slow  # about three minutes


@pytest.fixture
def fuzzed_server(server: LiveServer, tmp_path: Path) -> Iterator[str]:
    settings = Settings(
        data_dir=tmp_path / "data",
        database_url=None,
        url_fetch_enabled=False,
        llm_runtime_autoinstall=False,
        _env_file=None,
    )
    services = Services.build(settings, engines=server.services.engines)
    try:
        with serving(create_app(services=services)) as url:
            yield url
    finally:
        services.db.dispose()  # not close(): the engines belong to the shared server


def test_no_operation_answers_a_server_error(fuzzed_server: str, tmp_path: Path) -> None:
    st = Path(sys.executable).with_name("st")
    command = [
        str(st),
        "run",
        f"{fuzzed_server}/openapi.json",
        "--checks",
        "not_a_server_error",
        "--max-examples",
        "25",
        "--seed",
        "1",
        "--workers",
        "1",
        "--request-timeout",
        "120",
        "--continue-on-failure",
        "--max-failures",
        "100",
        "--output-truncate",
        "false",
    ]
    env = {**os.environ, "SCHEMATHESIS_HOOKS": "tests.schemathesis_hooks", "PYTHONPATH": str(ROOT)}
    result = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=1200)
    report = result.stdout + result.stderr
    summary = report[report.rfind("SUMMARY") :] if "SUMMARY" in report else report[-3000:]
    assert "Tested:" in summary, report[-5000:]
    assert result.returncode == 0, report[report.find("FAILURES") :][:20000] if "FAILURES" in report else report[-8000:]
