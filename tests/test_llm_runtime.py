"""The characters' language model runtime (llama-cpp-python): how the server reports it while it is
missing, being built in the background, failed or ready, and what characters answer meanwhile."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from parla.characters import runtime
from parla.characters.runtime import LlamaRuntime
from tests.conftest import LiveServer
from tests.test_characters import _create


def test_this_environment_has_the_runtime_and_the_server_says_so(client: httpx.Client) -> None:
    assert runtime.is_installed()
    assert client.get("/health").json()["llm_runtime"]["state"] == "ready"


def test_a_build_in_another_process_is_seen_as_under_way(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(runtime, "is_installed", lambda: False)
    state = LlamaRuntime(tmp_path / "logs" / "llm-runtime.log", wheels=tmp_path / "wheels")
    assert state.state().phase == "missing"
    assert "parla llm-runtime install" in state.state().detail
    # Another process (a `make test` in another clone, a server's child) holds the build lock.
    (tmp_path / "wheels").mkdir(exist_ok=True)
    hold = (
        "import fcntl, sys, time; f = open(sys.argv[1], 'w'); fcntl.flock(f, fcntl.LOCK_EX);"
        " print('held'); time.sleep(60)"
    )
    holder = subprocess.Popen(
        [sys.executable, "-u", "-c", hold, str(tmp_path / "wheels" / ".llama-cpp-python.lock")],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        assert state.state().phase == "installing"
        assert str(tmp_path / "logs" / "llm-runtime.log") in state.state().detail
    finally:
        holder.kill()
        holder.wait()
    assert state.state().phase == "missing"


def test_a_failed_background_build_says_why(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(runtime, "is_installed", lambda: False)
    state = LlamaRuntime(tmp_path / "llm-runtime.log", wheels=tmp_path / "wheels")
    with open(state.log_path, "w") as log:
        # What the background install's child leaves when the compiler is missing.
        state._process = subprocess.Popen(
            [sys.executable, "-c", "import sys; print('CMake Error: CMAKE_C_COMPILER not set'); sys.exit(3)"],
            stdout=log,
        )
    state._process.wait()
    failed = state.state()
    assert failed.phase == "failed"
    assert "exit 3" in failed.detail and "CMAKE_C_COMPILER not set" in failed.detail


def test_a_failing_pip_step_reports_pips_own_words() -> None:
    with pytest.raises(RuntimeError, match=r"pip install failed .*no-such-parla-package"):
        runtime._pip(["install", "--no-index", "no-such-parla-package==1.0"], output=None)


def test_characters_answer_503_until_the_runtime_is_ready(
    client: httpx.Client, server: LiveServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    created = _create(client, "Patient", voice_cloning_audio=None)
    assert created.status_code == 200, created.text
    character_id = created.json()["character_id"]
    characters = server.services.characters
    installing = LlamaRuntime(tmp_path / "llm-runtime.log", wheels=tmp_path / "wheels")
    monkeypatch.setattr(characters, "llm_runtime", installing)
    monkeypatch.setattr(runtime, "is_installed", lambda: False)
    question = {"character_id": character_id, "question": "Who built the lighthouse?"}
    try:
        with runtime._exclusive(tmp_path / "wheels", wait=True):  # a build under way
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
