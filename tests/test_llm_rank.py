"""Ranking answers by log-likelihood (the LLM agent's ``decoding=constrained``) against a fake server whose
next-token log-probabilities are written by hand, in both forms servers send them."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import numpy as np
import pytest

from vlnkit.agents.llm.agent import ANSWER_PREFIX, LLMAgent
from vlnkit.agents.llm.client import OpenAIClient
from vlnkit.envs.street.actions import StreetAction

TEMPLATE = "<chat>"
CONTENT_FREE = "<chat about N/A>"
OPEN = TEMPLATE + ANSWER_PREFIX
NEXT: dict[str, dict[str, float]] = {
    OPEN: {"for": -1.0, "forward": -2.0, "left": -0.5, "ri": -3.0, "stop": -4.0, "turn": -1.5, "x": -0.1},
    OPEN + "for": {"ward": -0.2},
    OPEN + "ri": {"ght": -0.1, "g": -0.05},
    OPEN + "turn": {"_": -0.3},
    OPEN + "turn_": {"x": -0.5, "y": -2.5},   # "around" is not among the top tokens
    CONTENT_FREE + ANSWER_PREFIX: {"left": -0.1, "forward": -3.0, "ri": -3.0, "stop": -4.0, "turn": -1.0},
    CONTENT_FREE + ANSWER_PREFIX + "ri": {"ght": -0.1},
    CONTENT_FREE + ANSWER_PREFIX + "turn": {"_": -0.3},
    CONTENT_FREE + ANSWER_PREFIX + "turn_": {"around": -0.1},
}
"""Next-token log-probabilities after each prompt (the fake's whole language model)."""


class FakeLM:
    """``/apply-template`` (every chat becomes :data:`TEMPLATE`) and ``/v1/completions`` answering with
    :data:`NEXT`, as llama.cpp does (``content``) or as the legacy API does (``top_logprobs`` dicts)."""

    def __init__(self, style: str) -> None:
        self.bodies: list[tuple[str, dict[str, Any]]] = []
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                fake.bodies.append((self.path, body))
                if self.path == "/apply-template":
                    blank = "N/A" in body["messages"][-1]["content"]
                    payload: dict[str, Any] = {"prompt": CONTENT_FREE if blank else TEMPLATE}
                else:
                    top = NEXT.get(body["prompt"], {"?": -9.0})
                    if style == "llama.cpp":
                        logprobs: dict[str, Any] = {"content": [{"token": "x", "logprob": -0.1, "top_logprobs": [
                            {"token": t, "logprob": v} for t, v in top.items()]}]}
                    else:
                        logprobs = {"tokens": ["x"], "token_logprobs": [-0.1], "top_logprobs": [top], "text_offset": [0]}
                    payload = {"id": "x", "object": "text_completion", "created": 0, "model": body["model"],
                               "choices": [{"index": 0, "text": "x", "finish_reason": "length", "logprobs": logprobs}]}
                data = json.dumps(payload).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base_url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True).start()


@pytest.fixture(params=["llama.cpp", "legacy"])
def fake(request: pytest.FixtureRequest) -> Iterator[FakeLM]:
    lm = FakeLM(request.param)
    yield lm
    lm.httpd.shutdown()
    lm.httpd.server_close()


MESSAGES = [{"role": "system", "content": "S"}, {"role": "user", "content": "U"}]


def test_scores_sum_the_longest_fitting_tokens(fake: FakeLM) -> None:
    client = OpenAIClient(fake.base_url, "m", timeout=5.0)
    scores = client.rank(MESSAGES, ["forward", "left", "right", "stop", "turn_around"], prefix=ANSWER_PREFIX)
    # forward: the whole word is a token (-2.0; "for" + "ward" would be -1.2, not the tokenizer's split);
    # right: "ri" then "ght" (the longer of "ght" and "g"); turn_around: "turn", "_", then "around" is
    # outside the top tokens, so the score stops at the lowest listed one (-2.5), an upper bound
    assert scores == pytest.approx([-2.0, -0.5, -3.1, -4.0, -1.5 - 0.3 - 2.5])
    assert client.stats.below_top == 1


def test_the_constrained_agent_takes_the_most_likely_action(fake: FakeLM) -> None:
    client = OpenAIClient(fake.base_url, "m", timeout=5.0)
    agent = LLMAgent(client, num_actions=5, categories=["bank", "cafe"], sectors=8, decoding="constrained")
    observation = {"instruction": "Go.", "heading": np.array([0.0], dtype=np.float32),
                   "position": np.array([0.0, 0.0], dtype=np.float32), "links": np.array([0.0, 180.0], dtype=np.float32),
                   "panorama": np.zeros((8, 2), dtype=np.float32)}
    agent.reset(observation, {}, seed=0)
    assert agent.act(observation) == StreetAction.LEFT
    completions = [b for path, b in fake.bodies if path == "/v1/completions"]
    assert all(b["max_tokens"] == 1 and b["logprobs"] == 100 for b in completions)
    sent = len(fake.bodies)
    agent.reset(observation, {}, seed=1)
    assert agent.act(observation) == StreetAction.LEFT and len(fake.bodies) == sent, "the same prompt is cached"
    assert agent.episode_stats()["llm_fallbacks"] == 0


def test_content_free_calibration_removes_a_standing_preference(fake: FakeLM) -> None:
    client = OpenAIClient(fake.base_url, "m", timeout=5.0)
    agent = LLMAgent(client, num_actions=5, categories=[], decoding="constrained", calibration="content_free")
    observation = {"instruction": "Go.", "heading": np.array([0.0], dtype=np.float32),
                   "position": np.array([0.0, 0.0], dtype=np.float32), "links": np.array([0.0, 180.0], dtype=np.float32)}
    agent.reset(observation, {}, seed=0)
    # relative to the content-free prompt: forward -2.0 + 3.0 = +1.0, left -0.5 + 0.1 = -0.4, right -3.1 + 3.1 = 0,
    # stop 0, turn_around -4.3 + 1.4 = -2.9: forward wins where the raw scores chose left
    assert agent.act(observation) == StreetAction.FORWARD


def test_plain_prompt_format_needs_no_template_endpoint(fake: FakeLM) -> None:
    client = OpenAIClient(fake.base_url, "m", timeout=5.0, prompt_format="plain")
    assert client.chat_prompt(MESSAGES) == "system: S\nuser: U\nassistant: "
    client.rank(MESSAGES, ["left"], prefix="{")
    assert [path for path, _ in fake.bodies] == ["/v1/completions"]
    assert fake.bodies[0][1]["prompt"] == "system: S\nuser: U\nassistant: {"


def test_constrained_decoding_needs_a_ranking_client() -> None:
    class AnswersOnly:
        stats = None

        def complete(self, messages: Any, schema: Any = None, validate: Any = None) -> str:
            return '{"action": "stop"}'

    with pytest.raises(ValueError, match="rank"):
        LLMAgent(AnswersOnly(), num_actions=4, categories=[], decoding="constrained")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="decoding must be one of"):
        LLMAgent(AnswersOnly(), num_actions=4, categories=[], decoding="greedy")  # type: ignore[arg-type]
