"""The OpenAI-compatible client against a fake server on 127.0.0.1: retries with backoff, timeouts,
invalid answers, the prompt cache, and the LLM agent's fallback counting."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from vlnkit.agents.llm.agent import LLMAgent
from vlnkit.agents.llm.client import LLMInvalidOutput, LLMUnavailable, OpenAIClient
from vlnkit.agents.llm.prompt import action_schema, available_actions, parse_action
from vlnkit.envs.street.actions import StreetAction

MESSAGES = [{"role": "user", "content": "Which way?"}]
ACTIONS = available_actions(4)


class FakeOpenAI:
    """A tiny OpenAI-compatible chat server answering from a script of ``(status, content, delay)``
    (the last entry repeats); it records the JSON bodies it receives."""

    def __init__(self, script: list[tuple[int, str, float]]) -> None:
        self.script = list(script)
        self.bodies: list[dict[str, Any]] = []
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                fake.bodies.append(body)
                status, content, delay = fake.script.pop(0) if len(fake.script) > 1 else fake.script[0]
                time.sleep(delay)
                if status == 200:
                    payload = {"id": "x", "object": "chat.completion", "created": 0, "model": body["model"],
                               "choices": [{"index": 0, "finish_reason": "stop",
                                            "message": {"role": "assistant", "content": content}}]}
                else:
                    payload = {"error": {"message": content, "type": "server_error"}}
                data = json.dumps(payload).encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.base_url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def serve() -> Iterator[Any]:
    """``serve(script)`` starts a :class:`FakeOpenAI`; all are stopped after the test."""
    started: list[FakeOpenAI] = []

    def start(script: list[tuple[int, str, float]]) -> FakeOpenAI:
        started.append(FakeOpenAI(script))
        return started[-1]

    yield start
    for fake in started:
        fake.close()


def client(base_url: str, waits: list[float] | None = None, **options: Any) -> OpenAIClient:
    """A client that records backoff waits instead of sleeping."""
    return OpenAIClient(base_url, "test-model", timeout=5.0, sleep=(waits if waits is not None else []).append, **options)


def closed_port_url() -> str:
    """An API root where nothing listens."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/v1"


def validate(text: str) -> StreetAction:
    return parse_action(text, ACTIONS)


def test_server_errors_are_retried_with_exponential_backoff(serve: Any) -> None:
    fake = serve([(500, "boom", 0.0), (503, "busy", 0.0), (200, '{"action": "left"}', 0.0)])
    waits: list[float] = []
    llm = client(fake.base_url, waits, max_retries=3, backoff=0.5, backoff_factor=2.0)
    assert llm.complete(MESSAGES, action_schema(ACTIONS), validate) == '{"action": "left"}'
    assert waits == [0.5, 1.0]
    assert (llm.stats.requests, llm.stats.retries, llm.stats.failures) == (3, 2, 0)


def test_backoff_is_capped() -> None:
    llm = OpenAIClient(closed_port_url(), "m", backoff=1.0, backoff_factor=3.0, backoff_max=5.0)
    assert [llm.backoff_delay(i) for i in range(4)] == [1.0, 3.0, 5.0, 5.0]


def test_persistent_server_error_gives_up_after_the_retries(serve: Any) -> None:
    fake = serve([(500, "boom", 0.0)])
    waits: list[float] = []
    llm = client(fake.base_url, waits, max_retries=1)
    with pytest.raises(LLMUnavailable, match="after 2 attempts"):
        llm.complete(MESSAGES)
    assert len(fake.bodies) == 2 and waits == [0.5]


def test_client_errors_are_not_retried(serve: Any) -> None:
    fake = serve([(400, "bad request", 0.0)])
    with pytest.raises(LLMUnavailable):
        client(fake.base_url, max_retries=3).complete(MESSAGES)
    assert len(fake.bodies) == 1


def test_a_slow_server_times_out_and_is_retried(serve: Any) -> None:
    fake = serve([(200, '{"action": "stop"}', 1.0), (200, '{"action": "right"}', 0.0)])
    llm = OpenAIClient(fake.base_url, "m", timeout=0.2, max_retries=1, sleep=lambda s: None)
    assert llm.complete(MESSAGES, validate=validate) == '{"action": "right"}'
    assert llm.stats.retries == 1


def test_schema_goes_out_as_response_format(serve: Any) -> None:
    fake = serve([(200, '{"action": "forward"}', 0.0)])
    client(fake.base_url).complete(MESSAGES, action_schema(ACTIONS), validate)
    body = fake.bodies[0]
    assert body["response_format"]["type"] == "json_schema"
    assert body["response_format"]["json_schema"]["schema"]["properties"]["action"]["enum"] == [
        "forward", "left", "right", "stop"]
    assert (body["model"], body["temperature"], body["messages"]) == ("test-model", 0.0, MESSAGES)


def test_invalid_answer_is_asked_again_at_the_retry_temperature(serve: Any) -> None:
    fake = serve([(200, "I would go left.", 0.0), (200, '{"action": "left"}', 0.0)])
    llm = client(fake.base_url, retry_temperature=0.7)
    assert llm.complete(MESSAGES, validate=validate) == '{"action": "left"}'
    assert [b["temperature"] for b in fake.bodies] == [0.0, 0.7]
    assert llm.stats.invalid == 1


def test_invalid_answers_after_the_retry_raise(serve: Any) -> None:
    fake = serve([(200, '{"action": "fly"}', 0.0)])
    llm = client(fake.base_url)
    with pytest.raises(LLMInvalidOutput):
        llm.complete(MESSAGES, validate=validate)
    assert (len(fake.bodies), llm.stats.invalid, llm.stats.failures) == (2, 2, 1)


def test_identical_prompt_is_answered_from_the_cache(serve: Any) -> None:
    fake = serve([(200, '{"action": "left"}', 0.0), (200, '{"action": "right"}', 0.0)])
    llm = client(fake.base_url)
    first = llm.complete(MESSAGES, validate=validate)
    assert llm.complete(MESSAGES, validate=validate) == first
    assert len(fake.bodies) == 1 and llm.stats.cache_hits == 1
    llm.complete([{"role": "user", "content": "And now?"}], validate=validate)
    assert len(fake.bodies) == 2


def test_invalid_answers_are_not_cached(serve: Any) -> None:
    fake = serve([(200, "nonsense", 0.0), (200, "nonsense", 0.0), (200, '{"action": "stop"}', 0.0)])
    llm = client(fake.base_url)
    with pytest.raises(LLMInvalidOutput):
        llm.complete(MESSAGES, validate=validate)
    assert llm.complete(MESSAGES, validate=validate) == '{"action": "stop"}'
    assert len(fake.bodies) == 3


def test_disk_cache_is_shared_between_clients(serve: Any, tmp_path: Path) -> None:
    fake = serve([(200, '{"action": "right"}', 0.0)])
    client(fake.base_url, cache_dir=tmp_path).complete(MESSAGES, validate=validate)
    again = client(fake.base_url, cache_dir=tmp_path)
    assert again.complete(MESSAGES, validate=validate) == '{"action": "right"}'
    assert len(fake.bodies) == 1 and again.stats.cache_hits == 1
    assert len(list(tmp_path.rglob("*.json"))) == 1


def agent_for(llm: OpenAIClient) -> LLMAgent:
    return LLMAgent(llm, 4, ["bank", "cafe"], memory=None)


OBSERVATION = {
    "instruction": "Go ahead.",
    "heading": np.array([0.0], dtype=np.float32),
    "position": np.array([0.0, 0.0], dtype=np.float32),
    "links": np.array([0.0, 180.0], dtype=np.float32),
    "panorama": np.zeros((8, 2), dtype=np.float32),
}


def test_unreachable_server_falls_back_to_stop_and_is_counted() -> None:
    waits: list[float] = []
    agent = agent_for(client(closed_port_url(), waits, max_retries=1))
    agent.reset(OBSERVATION, {}, seed=0)
    assert agent.act(OBSERVATION) == StreetAction.STOP
    stats = agent.episode_stats()
    assert (stats["llm_calls"], stats["llm_fallbacks"], stats["llm_requests"], stats["llm_retries"]) == (1, 1, 2, 1)
    assert waits == [0.5]


def test_invalid_output_after_one_retry_falls_back(serve: Any) -> None:
    fake = serve([(200, '{"action": "turn_around"}', 0.0)])
    agent = agent_for(client(fake.base_url))
    agent.reset(OBSERVATION, {}, seed=0)
    assert agent.act(OBSERVATION) == StreetAction.STOP
    stats = agent.episode_stats()
    assert (stats["llm_fallbacks"], stats["llm_invalid"], stats["llm_requests"]) == (1, 2, 2)


def test_agent_episode_stats_count_cache_hits_per_episode(serve: Any) -> None:
    fake = serve([(200, '{"action": "forward"}', 0.0)])
    agent = agent_for(client(fake.base_url))
    for seed in range(2):
        agent.reset(OBSERVATION, {}, seed=seed)
        assert agent.act(OBSERVATION) == StreetAction.FORWARD
    stats = agent.episode_stats()
    assert (stats["llm_calls"], stats["llm_requests"], stats["llm_cache_hits"], stats["llm_fallbacks"]) == (1, 0, 1, 0)
