"""The gold-route agent (``agent=gold``): it walks the reference route node by node, even where the route is
not a shortest path, so the path metrics reach their upper bound; the shortest-path oracle does not."""

from __future__ import annotations

import math

import pytest

import vlnkit.agents  # noqa: F401  (registers every agent)
from vlnkit.agents.base import AgentInputError, create
from vlnkit.config import load_config
from vlnkit.envs.datasets import StreetEpisode
from vlnkit.envs.street.actions import StreetAction as A
from vlnkit.envs.street.env import StreetEnv
from vlnkit.envs.street.graph import StreetGraph
from vlnkit.eval.backends import rollout
from vlnkit.eval.tasks import get_task


def square() -> StreetGraph:
    """Four corners of a block, about 10 m apart, linked both ways around it: sw -> se is east (90), se -> ne
    north (0), ne -> nw west (270), nw -> sw south (180)."""
    nodes = [("sw", 0, 40.0, -73.0), ("se", 0, 40.0, -72.99988), ("ne", 0, 40.00009, -72.99988),
             ("nw", 0, 40.00009, -73.0)]
    links = [("sw", 90, "se"), ("se", 270, "sw"), ("se", 0, "ne"), ("ne", 180, "se"), ("ne", 270, "nw"),
             ("nw", 90, "ne"), ("nw", 180, "sw"), ("sw", 0, "nw")]
    return StreetGraph.from_lists(nodes, links)


AROUND = StreetEpisode("around", "touchdown", "Go round the block to the corner north of you.",
                       ("sw", "se", "ne", "nw"), 0.0)
"""The long way round to nw, one hop north of the start (where the start heading already faces)."""
THERE_AND_BACK = StreetEpisode("back", "touchdown", "Go east one block, come back, then go north.",
                               ("sw", "se", "sw", "nw"), 0.0)
"""A route that comes back through its start before the goal."""


def run(agent_name: str, episode: StreetEpisode, semantics: str) -> dict:
    env = StreetEnv(task="touchdown", graph=square(), episodes=[AROUND, THERE_AND_BACK], semantics=semantics,
                    panorama="none")
    agent = create(agent_name, {}, num_actions=env.navigator.num_actions)
    return rollout(get_task("street"), env, agent, episode, seed=0)


# Hand-derived actions. touchdown: at sw facing north (0), LEFT turns to the only other link (east, 90); each
# FORWARD then snaps the heading to the next node's link closest to it, which is the route's next link.
# velma: on a two-link node LEFT/RIGHT become FORWARD, so TURN_AROUND faces the link closest to the back.
@pytest.mark.parametrize("semantics, episode, actions", [
    ("touchdown", AROUND, [A.LEFT, A.FORWARD, A.FORWARD, A.FORWARD, A.STOP]),
    ("velma", AROUND, [A.TURN_AROUND, A.FORWARD, A.FORWARD, A.FORWARD, A.STOP]),
    ("touchdown", THERE_AND_BACK, [A.LEFT, A.FORWARD, A.LEFT, A.FORWARD, A.FORWARD, A.STOP]),
    ("velma", THERE_AND_BACK, [A.TURN_AROUND, A.FORWARD, A.TURN_AROUND, A.FORWARD, A.FORWARD, A.STOP]),
])
def test_gold_reproduces_a_route_that_is_not_the_shortest_path(semantics: str, episode: StreetEpisode,
                                                               actions: list[A]) -> None:
    record = run("gold", episode, semantics)
    assert record["route_panoids"] == list(episode.route)
    assert record["actions"] == [int(a) for a in actions]
    assert record["stopped"]
    metrics = record["metrics"]
    assert metrics["task_completion"] == 1.0
    assert metrics["ndtw"] == 1.0 and metrics["ndtw_street"] == 1.0 and metrics["sed"] == 1.0


def test_the_oracle_takes_the_shortcut() -> None:
    record = run("oracle", AROUND, "touchdown")
    assert record["route_panoids"] == ["sw", "nw"]
    assert record["actions"] == [int(A.FORWARD), int(A.STOP)]
    metrics = record["metrics"]
    assert metrics["task_completion"] == 1.0
    # Hop DTW of R = sw,se,ne,nw against P = sw,nw: rows of costs (0,1) (1,2) (2,1) (1,0), cheapest warp 2,
    # so exp(-2 / (2 * sqrt(4))); SED: two insertions turn P into R, 1 - 2 / 4.
    assert metrics["ndtw_street"] == pytest.approx(math.exp(-0.5))
    assert metrics["sed"] == pytest.approx(0.5)
    assert metrics["ndtw"] < 1.0


def test_off_the_route_the_gold_action_is_the_oracles() -> None:
    env = StreetEnv(task="touchdown", graph=square(), episodes=[THERE_AND_BACK], panorama="none")
    _, info = env.reset(options={"episode_index": 0})
    assert info["gold_action"] == A.LEFT and info["oracle_action"] == A.FORWARD
    _, _, _, _, info = env.step(int(A.FORWARD))         # to nw, the goal, skipping se and the way back
    assert info["panoid"] == "nw" and info["gold_action"] == info["oracle_action"] == A.STOP


@pytest.mark.parametrize("name, key", [("gold", "gold_action"), ("oracle", "oracle_action")])
def test_privileged_agents_refuse_an_environment_without_their_guidance(name: str, key: str) -> None:
    env = StreetEnv(task="touchdown", graph=square(), episodes=[AROUND], panorama="none", guidance=False)
    obs, info = env.reset(options={"episode_index": 0})
    with pytest.raises(AgentInputError, match=rf"agent={name} needs the environment's privileged info\['{key}'\]"):
        create(name).reset(obs, info, 0)


def test_agent_gold_is_a_config_choice_marked_privileged() -> None:
    cfg = load_config("eval", ["agent=gold"])
    assert cfg.agent.name == "gold"
    assert create("gold", cfg.agent).uses_info is True
