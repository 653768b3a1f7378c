"""Chat servers for the LLM backend tests: a real `transformers serve` (OpenAI-compatible) with the tiny LLaVA on
loopback, and helpers that make `fake_http.FakeServer` answer like a chat endpoint for what a real server cannot be
made to do (429 with Retry-After, 500s, slow, truncated or non-JSON answers, a refused key)."""

import json
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.request
from dataclasses import dataclass

import pytest

CHAT_PATH = "/v1/chat/completions"
START_TIMEOUT = 240.0


@dataclass(frozen=True)
class ChatServer:
    base_url: str
    model: str


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


@pytest.fixture(scope="session")
def transformers_server(tmp_path_factory):
    """`transformers serve` with the (long-context) tiny LLaVA preloaded, on a free loopback port, CPU only; killed at teardown."""
    if shutil.which("transformers") is None:
        pytest.fail("the `transformers` command is missing: install earthvl's test extra (transformers[serving])")
    folder = tmp_path_factory.mktemp("transformers-serve")
    from earthvl.models.tiny import long_context_copy

    model = long_context_copy("tiny-llava", folder / "tiny-llava-4k")
    port = free_port()
    log = folder / "serve.log"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "CUDA_VISIBLE_DEVICES": ""}
    command = [
        "transformers", "serve", model, "--host", "127.0.0.1", "--port", str(port), "--device", "cpu",
        "--log-level", "warning", "--default-seed", "0",
    ]
    with log.open("wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while not _healthy(f"http://127.0.0.1:{port}/health"):
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"transformers serve did not come up:\n{log.read_text()[-3000:]}")
            time.sleep(0.5)
        yield ChatServer(base_url=f"http://127.0.0.1:{port}/v1", model=model)
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def completion_body(text: str, *, prompt_tokens: int = 11, completion_tokens: int = 7, model: str = "fake") -> bytes:
    """A chat completion as an OpenAI-compatible server answers it."""
    return json.dumps(
        {
            "id": "chatcmpl-1",
            "object": "chat.completion",
            "created": 0,
            "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                      "total_tokens": prompt_tokens + completion_tokens},
        }
    ).encode()


def chat_route(server, text: str = "an answer", *, prompt_tokens: int = 11, completion_tokens: int = 7, **route) -> str:
    """Make `server` (a fake_http.FakeServer) a chat endpoint answering `text`; returns its base URL."""
    route.setdefault("body", completion_body(text, prompt_tokens=prompt_tokens, completion_tokens=completion_tokens))
    route.setdefault("content_type", "application/json")
    server.add(CHAT_PATH, **route)
    return server.url("/v1")


def sent_requests(server) -> list[dict]:
    """The chat requests `server` received, decoded."""
    return [json.loads(body) for body in server.bodies[CHAT_PATH]]
