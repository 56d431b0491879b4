"""LLM agent prompts on hand-made observations: direction words, streets, memory cues, history; answer
parsing and the action schema; fallback counting with a scripted client."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from vlnkit.agents.llm.agent import LLMAgent, agent_config, build_memory, resolve_categories
from vlnkit.agents.llm.client import ClientStats, LLMInvalidOutput, LLMUnavailable
from vlnkit.agents.llm.prompt import (
    InvalidAction,
    action_in_text,
    action_schema,
    available_actions,
    describe_streets,
    direction_of,
    egocentric,
    parse_action,
    sector_directions,
    visible_landmarks,
)
from vlnkit.agents.llm.server import DEFAULT_BASE_URL, DEFAULT_MODEL
from vlnkit.envs.street.actions import StreetAction

CATEGORIES = ["bank", "cafe", "tree"]
BANK, CAFE, TREE = range(3)


def panorama(**cells: float) -> np.ndarray:
    """An (8, 3) closeness array from ``s<sector>_<category>=value`` keywords."""
    pano = np.zeros((8, len(CATEGORIES)), dtype=np.float32)
    for name, value in cells.items():
        sector, category = name[1:].split("_")
        pano[int(sector), CATEGORIES.index(category)] = value
    return pano


def observation(pano: np.ndarray, position: tuple[float, float] = (0.0, 0.0), heading: float = 90.0,
                links: Sequence[float] = (90.0, 180.0, 0.0, -1.0)) -> dict[str, Any]:
    return {
        "instruction": "Walk past the cafe and stop at the bank.",
        "heading": np.array([heading], dtype=np.float32),
        "position": np.array(position, dtype=np.float32),
        "links": np.array(links, dtype=np.float32),
        "panorama": pano,
    }


class ScriptedClient:
    """An LLM client answering from a list (an exception in the list is raised)."""

    def __init__(self, answers: list[str | Exception]) -> None:
        self.answers = answers
        self.stats = ClientStats()
        self.seen: list[list[dict[str, str]]] = []

    def complete(self, messages: Sequence[Mapping[str, str]], schema: Mapping[str, Any] | None = None,
                 validate: Callable[[str], Any] | None = None) -> str:
        self.seen.append([dict(m) for m in messages])
        self.stats.requests += 1
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer


def make_agent(answers: list[str | Exception], memory: str = "full", num_actions: int = 4) -> LLMAgent:
    dim = 8 * len(CATEGORIES)
    return LLMAgent(ScriptedClient(answers), num_actions, CATEGORIES, 8, build_memory(memory, dim))


def test_sector_directions_split_the_circle_into_quadrants() -> None:
    assert sector_directions(8) == ["ahead", "right", "right", "behind", "behind", "left", "left", "ahead"]
    assert [direction_of(a) for a in (0, 44.9, 45, 134.9, 180, 225, 314.9, -10)] == [
        "ahead", "ahead", "right", "right", "behind", "left", "left", "ahead"]


def test_visible_landmarks_by_direction_nearest_first_above_threshold() -> None:
    pano = panorama(s0_cafe=0.3, s7_tree=0.6, s7_cafe=0.2, s2_bank=0.9, s5_tree=0.1, s4_tree=0.4)
    assert visible_landmarks(pano, CATEGORIES, 0.25) == {
        "ahead": ["tree", "cafe"], "left": [], "right": ["bank"], "behind": ["tree"]}


def test_streets_described_from_links_relative_to_heading() -> None:
    assert describe_streets(np.array([90.0, 180.0, 0.0, -1.0]), 90.0) == (
        "You are at a 3-way intersection; streets lead ahead, left and right.")
    assert describe_streets(np.array([10.0, 190.0, -1.0]), 0.0) == (
        "You are on a street that leads ahead and behind; this is not an intersection.")
    assert describe_streets(np.array([270.0, -1.0]), 0.0) == "You are at a dead end; the street leads left."


def test_egocentric_offsets_right_and_ahead() -> None:
    x, y = egocentric(np.array([0.0, 10.0]), 90.0)
    assert (round(x, 6), round(y, 6)) == (-10.0, 0.0)
    x, y = egocentric(np.array([3.0, 4.0]), 0.0)
    assert (round(x, 6), round(y, 6)) == (3.0, 4.0)


def test_prompt_has_instruction_streets_landmarks_and_history() -> None:
    agent = make_agent(['{"action": "forward"}', '{"action": "left"}'], memory="none")
    pano = panorama(s0_cafe=0.8, s2_bank=0.9, s5_tree=0.1)
    agent.reset(observation(pano), {}, seed=0)
    assert agent.act(observation(pano)) == StreetAction.FORWARD
    assert agent.act(observation(pano, position=(10.0, 0.0))) == StreetAction.LEFT
    system, user = agent.client.seen[1]
    assert system["role"] == "system" and "- turn_around" not in system["content"]
    assert "Past memory" not in system["content"]
    assert user["content"] == "\n".join([
        "Navigate to the described target location!",
        "Action space: forward, left, right, stop",
        'Navigation instructions: "Walk past the cafe and stop at the bank."',
        "Action sequence so far:",
        "1. forward",
        "Step 2: You are at a 3-way intersection; streets lead ahead, left and right.",
        "Visible landmarks: ahead: cafe; left: none; right: bank; behind: none.",
        "Which action do you take next?",
    ])


def test_stm_memory_cue_for_a_place_passed_nearby() -> None:
    agent = make_agent(['{"action": "forward"}'] * 2, memory="stm_only")
    first = panorama(s2_bank=0.9, s0_cafe=0.8, s4_tree=0.2)
    agent.reset(observation(first), {}, seed=0)
    agent.act(observation(first))
    agent.act(observation(panorama(s0_tree=0.5), position=(2.0, 0.0)))
    assert "Past memory: at relative_pos (0, -2) recently saw bank and cafe" in agent.client.seen[1][1]["content"].splitlines()
    assert "Past memory" not in agent.client.seen[0][1]["content"]
    assert "relative_pos (x, y) in metres" in agent.client.seen[0][0]["content"]


def test_full_memory_cue_points_back_to_the_start() -> None:
    agent = make_agent(['{"action": "forward"}'] * 2, memory="full")
    agent.reset(observation(panorama(s2_bank=0.9)), {}, seed=0)
    agent.act(observation(panorama(s2_bank=0.9, s1_cafe=0.5)))
    agent.act(observation(panorama(s0_tree=0.5), position=(10.0, 0.0)))
    # one cue for the first place although the LTM holds it twice (octree leaf and graph node); the leaf's
    # centre lies half a metre beside the node, so the cue rounds to x = -1 or 0 depending on which ranks first
    memory_lines = [line for line in agent.client.seen[1][1]["content"].splitlines() if line.startswith("Past")]
    assert len(memory_lines) == 1
    assert re.fullmatch(r"Past memory: at relative_pos \((-1|0), -10\) recently saw bank and cafe", memory_lines[0])


def test_no_memory_variant_has_no_memory_line() -> None:
    agent = make_agent(['{"action": "forward"}'] * 2, memory="none")
    agent.reset(observation(panorama(s2_bank=0.9)), {}, seed=0)
    agent.act(observation(panorama(s2_bank=0.9)))
    agent.act(observation(panorama(s2_bank=0.9), position=(1.0, 0.0)))
    system, user = agent.client.seen[1]
    assert "Past memory" not in user["content"] and "Past memory" not in system["content"]


def test_observation_without_panorama_has_streets_but_no_landmarks() -> None:
    agent = make_agent(['{"action": "forward"}'])
    obs = observation(panorama())
    del obs["panorama"]
    agent.reset(obs, {}, seed=0)
    agent.act(obs)
    text = agent.client.seen[0][1]["content"]
    assert "Step 1: You are at a 3-way intersection" in text and "Visible landmarks" not in text
    assert agent.memory.writes == 0


def test_history_is_cut_to_the_latest_actions() -> None:
    agent = make_agent(['{"action": "forward"}'] * 4, memory="none")
    agent.history_limit = 2
    agent.reset(observation(panorama()), {}, seed=0)
    for _ in range(4):
        agent.act(observation(panorama()))
    text = agent.client.seen[3][1]["content"]
    assert "(actions before step 2 are not shown)\n2. forward\n3. forward\nStep 4:" in text


def test_wrong_panorama_shape_is_refused() -> None:
    agent = make_agent(['{"action": "stop"}'])
    with pytest.raises(ValueError, match="shape"):
        agent.act(observation(np.zeros((4, 3), dtype=np.float32)))


@pytest.mark.parametrize("text, expected", [
    ('{"action": "left"}', StreetAction.LEFT),
    ('```json\n{"action": " Forward "}\n```', StreetAction.FORWARD),
    ('Sure! {"action": "turn around"}', StreetAction.TURN_AROUND),
    ('{\n  "action": "stop"\n}', StreetAction.STOP),
])
def test_parse_action_accepts_valid_answers(text: str, expected: StreetAction) -> None:
    assert parse_action(text, available_actions(5)) == expected


@pytest.mark.parametrize("text", ["", "left", '{"action": "fly"}', '{"move": "left"}', '{"action": 2}',
                                  '{"action": "turn_around"}'])
def test_parse_action_rejects_invalid_answers(text: str) -> None:
    with pytest.raises(InvalidAction):
        parse_action(text, available_actions(4))


def test_schema_lists_only_available_actions() -> None:
    schema = action_schema(available_actions(4))
    assert schema["properties"]["action"]["enum"] == ["forward", "left", "right", "stop"]
    assert schema["required"] == ["action"] and schema["additionalProperties"] is False
    assert "turn_around" in action_schema(available_actions(5))["properties"]["action"]["enum"]


def test_fallback_to_stop_is_counted_per_episode() -> None:
    agent = make_agent(['{"action": "forward"}', LLMUnavailable("down"), '{"action": "right"}'])
    obs = observation(panorama())
    agent.reset(obs, {}, seed=0)
    assert agent.act(obs) == StreetAction.FORWARD
    assert agent.act(obs) == StreetAction.STOP
    stats = agent.episode_stats()
    assert (stats["llm_calls"], stats["llm_fallbacks"], stats["llm_requests"]) == (2, 1, 2)
    agent.reset(obs, {}, seed=1)
    assert agent.act(obs) == StreetAction.RIGHT
    assert agent.episode_stats()["llm_fallbacks"] == 0 and agent.episode_stats()["llm_calls"] == 1


def test_categories_come_from_the_scene_file(tmp_path: Path) -> None:
    scene = tmp_path / "graph" / "scene.jsonl"
    scene.parent.mkdir()
    scene.write_text(json.dumps({"panoid": "a", "landmarks": [
        {"category": "tree", "heading": 10.0, "distance": 5.0}, {"category": "bank", "heading": 90.0, "distance": 9.0}]}) + "\n")
    assert resolve_categories(agent_config({"scene_file": str(scene)})) == ["bank", "tree"]
    assert resolve_categories(agent_config({"release_dir": str(tmp_path)})) == ["bank", "tree"]
    assert resolve_categories(agent_config({"release_dir": str(tmp_path / "elsewhere")})) == []


def test_config_defaults_point_at_the_local_server() -> None:
    cfg = agent_config({})
    assert cfg.base_url == DEFAULT_BASE_URL and cfg.model == DEFAULT_MODEL
    assert cfg.fallback_action == "stop" and cfg.memory == "full"


@pytest.mark.parametrize("text, expected", [
    ("I will turn LEFT at the corner.", StreetAction.LEFT),
    ('{"move": "right"}', StreetAction.RIGHT),
    ("Turn around now", StreetAction.TURN_AROUND),
    ("forward, forward!", StreetAction.FORWARD),
    ("go left or right?", None),
    ("leftovers and brightness", None),
    ('{"action": "fly"}', None),
    ("", None),
    (None, None),
])
def test_action_in_text_reads_exactly_one_named_action(text: str | None, expected: StreetAction | None) -> None:
    assert action_in_text(text, available_actions(5)) == expected


def test_turn_around_in_text_is_no_action_without_it() -> None:
    assert action_in_text("turn around", available_actions(4)) is None


def test_free_text_answer_is_read_and_counted_instead_of_failing() -> None:
    agent = make_agent(["I think I should turn right here.", "asdf qwerty", '{"direction": "left"}'])
    obs = observation(panorama())
    agent.reset(obs, {}, seed=0)
    assert agent.act(obs) == StreetAction.RIGHT
    assert agent.act(obs) == StreetAction.STOP
    assert agent.act(obs) == StreetAction.LEFT
    assert agent.history == [StreetAction.RIGHT, StreetAction.STOP, StreetAction.LEFT]
    stats = agent.episode_stats()
    assert (stats["llm_calls"], stats["llm_free_text"], stats["llm_fallbacks"]) == (3, 2, 1)


class ValidatingClient(ScriptedClient):
    """A scripted client that, like :class:`OpenAIClient`, asks again after an answer ``validate`` refuses
    and raises :class:`LLMInvalidOutput` when every attempt was refused."""

    def __init__(self, answers: list[str], attempts: int = 2) -> None:
        super().__init__(answers)
        self.attempts = attempts

    def complete(self, messages: Sequence[Mapping[str, str]], schema: Mapping[str, Any] | None = None,
                 validate: Callable[[str], Any] | None = None) -> str:
        for _ in range(self.attempts):
            answer = super().complete(messages, schema, validate)
            try:
                validate(answer)
            except ValueError:
                self.stats.invalid += 1
                continue
            return answer
        raise LLMInvalidOutput("no valid answer")


def test_free_text_is_read_from_the_last_refused_answer_of_a_validating_client() -> None:
    client = ValidatingClient(["blah", "Next: forward.", "no idea", "still no idea"])
    agent = LLMAgent(client, 4, CATEGORIES, 8, None, fallback_action=StreetAction.LEFT)
    obs = observation(panorama())
    agent.reset(obs, {}, seed=0)
    assert agent.act(obs) == StreetAction.FORWARD
    assert agent.act(obs) == StreetAction.LEFT
    stats = agent.episode_stats()
    assert (stats["llm_free_text"], stats["llm_fallbacks"], stats["llm_invalid"]) == (1, 1, 4)
