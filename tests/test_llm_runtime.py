"""The characters' language model runtime (llama-cpp-python): how the server reports it while it is
missing, being built in the background, failed or ready, and what characters answer meanwhile."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from parla.characters import runtime
from parla.characters.runtime import LlamaRuntime
from tests.characters_data import character_form
from tests.conftest import LiveServer


@contextmanager
def build_under_way(wheels: Path) -> Iterator[None]:
    """Another process (a `make test` in another clone, a server's child) building: it holds the
    build lock of ``wheels`` until the block ends."""
    wheels.mkdir(parents=True, exist_ok=True)
    hold = (
        "import fcntl, sys, time; f = open(sys.argv[1], 'w'); fcntl.flock(f, fcntl.LOCK_EX);"
        " print('held'); time.sleep(60)"
    )
    holder = subprocess.Popen(
        [sys.executable, "-u", "-c", hold, str(wheels / ".llama-cpp-python.lock")],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        yield
    finally:
        holder.kill()
        holder.wait()


async def test_this_environment_has_the_runtime_and_the_server_says_so(api: httpx.AsyncClient) -> None:
    assert runtime.is_installed()
    assert (await api.get("/health")).json()["llm_runtime"]["state"] == "ready"


def test_a_build_in_another_process_is_seen_as_under_way(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(runtime, "is_installed", lambda: False)
    state = LlamaRuntime(tmp_path / "logs" / "llm-runtime.log", wheels=tmp_path / "wheels")
    assert state.state().phase == "missing"
    assert "parla llm-runtime install" in state.state().detail
    with build_under_way(tmp_path / "wheels"):
        assert state.state().phase == "installing"
        assert str(tmp_path / "logs" / "llm-runtime.log") in state.state().detail
    assert state.state().phase == "missing"


def test_a_failed_background_build_says_why(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(runtime, "is_installed", lambda: False)
    # The background install's child (`python -m parla llm-runtime install`) as it ends when the
    # compiler is missing: a stand-in package first on its import path.
    stand_in = tmp_path / "stand-in" / "parla"
    stand_in.mkdir(parents=True)
    (stand_in / "__init__.py").write_text("")
    (stand_in / "__main__.py").write_text(
        textwrap.dedent(
            """\
            import sys

            print("-- Building for: Ninja")
            print("CMake Error: CMAKE_C_COMPILER not set, after EnableLanguage")
            sys.exit(3)
            """
        )
    )
    monkeypatch.setenv("PYTHONPATH", str(stand_in.parent))
    state = LlamaRuntime(tmp_path / "llm-runtime.log", wheels=tmp_path / "wheels")
    assert state.start_install()
    deadline = time.monotonic() + 60
    while (failed := state.state()).phase == "installing":
        assert time.monotonic() < deadline, failed
        time.sleep(0.1)
    assert failed.phase == "failed"
    assert "exit 3" in failed.detail and "CMAKE_C_COMPILER not set" in failed.detail
    assert str(state.log_path) in failed.detail


def test_a_failing_pip_step_reports_pips_own_words() -> None:
    with pytest.raises(RuntimeError, match=r"pip install failed .*no-such-parla-package"):
        runtime._pip(["install", "--no-index", "no-such-parla-package==1.0"], output=None)


@pytest.mark.model
def test_characters_answer_503_until_the_runtime_is_ready(
    client: httpx.Client, server: LiveServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    created = client.post("/create-character", **character_form("Patient", voice_cloning_audio=None))
    assert created.status_code == 200, created.text
    character_id = created.json()["character_id"]
    characters = server.services.characters
    installing = LlamaRuntime(tmp_path / "llm-runtime.log", wheels=tmp_path / "wheels")
    monkeypatch.setattr(characters, "llm_runtime", installing)
    monkeypatch.setattr(runtime, "is_installed", lambda: False)
    question = {"character_id": character_id, "question": "Who built the lighthouse?"}
    try:
        with build_under_way(tmp_path / "wheels"):
            for path, body in (
                ("/ask-question-text", question),
                ("/ask-question-text", {**question, "stream": True}),
                ("/ask-question-stream", question),
                ("/load-character", {"character_id": character_id}),
            ):
                response = client.post(path, json=body)
                assert response.status_code == 503, (path, response.text)
                assert "being built in the background" in response.json()["detail"], path
            assert client.get("/health").json()["llm_runtime"]["state"] == "installing"
        response = client.post("/ask-question-text", json=question)
        assert response.status_code == 503 and "parla llm-runtime install" in response.json()["detail"]
        monkeypatch.undo()
        assert client.post("/ask-question-text", json=question).status_code == 200
    finally:
        client.delete(f"/delete-character/{character_id}")
