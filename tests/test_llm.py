"""Language models for characters: the OpenAI-compatible client against a local chat server, and
the errors a client sees when a model cannot answer."""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar

import pytest

from parla.characters.llm import LLMConfig, LLMError, OpenAICompatibleChat


class _ChatServer(BaseHTTPRequestHandler):
    """A minimal OpenAI-compatible chat endpoint: streams back the last user message word by word."""

    requests: ClassVar[list[dict[str, Any]]] = []

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        _ChatServer.requests.append({"path": self.path, "auth": self.headers.get("Authorization"), **body})
        if self.headers.get("Authorization") != "Bearer good-key":
            self.send_response(401)
            self.end_headers()
            self.wfile.write(b'{"error": {"message": "invalid api key"}}')
            return
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.end_headers()
        for word in body["messages"][-1]["content"].split():
            chunk = {"choices": [{"delta": {"content": word + " "}}]}
            self.wfile.write(f"data: {json.dumps(chunk)}\n\n".encode())
            self.wfile.flush()
        self.wfile.write(b"data: [DONE]\n\n")

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def chat_url() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _ChatServer)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    server.shutdown()


def test_answers_stream_piece_by_piece(chat_url: str) -> None:
    config = LLMConfig(base_url=chat_url, api_key="good-key", model_name="tiny", max_tokens=50, stop_tokens=["\n"])
    pieces = list(OpenAICompatibleChat().stream([{"role": "user", "content": "the tide comes in"}], config))
    assert pieces == ["the ", "tide ", "comes ", "in "]
    sent = _ChatServer.requests[-1]
    assert sent["path"] == "/v1/chat/completions" and sent["model"] == "tiny" and sent["stream"] is True
    assert sent["max_tokens"] == 50 and sent["stop"] == ["\n"]


def test_refusals_and_unreachable_endpoints_say_why(chat_url: str) -> None:
    with pytest.raises(LLMError, match=r"answered 401: .*invalid api key"):
        list(OpenAICompatibleChat().stream([{"role": "user", "content": "hi"}], LLMConfig(base_url=chat_url)))
    with pytest.raises(LLMError, match=re.escape("could not reach the language model at http://127.0.0.1:9")):
        list(
            OpenAICompatibleChat(timeout=2).stream(
                [{"role": "user", "content": "hi"}], LLMConfig(base_url="http://127.0.0.1:9/v1")
            )
        )


def test_the_api_key_is_never_shown() -> None:
    config = LLMConfig(base_url="http://x", api_key="sk-secret")
    assert "sk-secret" not in repr(config) and "sk-secret" not in config.model_dump_json()
