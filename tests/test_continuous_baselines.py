"""VLN-CE's own baselines and the project's: ``random`` samples VLN-CE's action distribution, ``handcrafted``
turns to a random heading and walks 37 steps, ``uniform_random`` is the uniform walker, and
``forward_blocked`` walks until a move is blocked. Action ids are checked against the environment's names."""

import math

import numpy as np
import pytest

from vlnkit.agents import create
from vlnkit.agents.base import AgentInputError
from vlnkit.config import load_config
from vlnkit.envs.continuous.env import ACTION_NAMES
from vlnkit.envs.street.actions import StreetAction
from vlnkit.eval.continuous import ContinuousTask

TURN_RIGHT = ACTION_NAMES.index("turn_right")

VLNCE_PROBS = {"stop": 0.02, "move_forward": 0.68, "turn_left": 0.15, "turn_right": 0.15}
"""VLN-CE's random baseline (Krantz et al. 2020): R2R-CE's training action frequencies, by action name."""


def houses_config(houses, *overrides):
    return load_config("eval", ["task=synth_houses", f"data_dir={houses}", "split=val_unseen",
                                "task.rgb.size=[8,8]", "task.depth.size=[8,8]", *overrides])


@pytest.fixture(scope="module")
def env(houses):
    """The small houses' continuous environment, with tiny cameras (the baselines read no image)."""
    environment = ContinuousTask().make_env(houses_config(houses), houses)
    yield environment
    environment.close()


def agent_for(cfg, env):
    return create(str(cfg.agent.name), cfg.agent, num_actions=env.action_space.n)


def draws(agent, seed, n):
    agent.reset({}, {}, seed)
    return [agent.act({}) for _ in range(n)]


def rollout(env, agent, episode_index, seed):
    """Run one episode; the actions' names and the infos after reset and after each step."""
    obs, info = env.reset(seed=seed, options={"episode_index": episode_index})
    agent.reset(obs, info, seed)
    names, infos = [], [info]
    done = False
    while not done:
        action = agent.act(obs, info if agent.uses_info else None)
        obs, _, terminated, truncated, info = env.step(action)
        names.append(env.action_names()[action])
        infos.append(info)
        done = terminated or truncated
    return names, infos


def test_random_samples_vlnce_action_distribution_by_the_envs_action_names(houses, env):
    agent = agent_for(houses_config(houses, "agent=random"), env)
    names = env.action_names()
    counts = np.bincount(draws(agent, 7, 20000), minlength=len(names))
    assert set(np.flatnonzero(counts)) <= {names.index(name) for name in VLNCE_PROBS}
    for name, p in VLNCE_PROBS.items():
        assert abs(counts[names.index(name)] / 20000 - p) < 0.01, name


def test_random_never_looks_or_turns_around():
    # RxR-CE adds LOOK_UP/LOOK_DOWN (6 actions); VLN-CE's random agent samples only the four.
    agent = create("random", load_config("eval", ["task=rxr_ce", "agent=random"]).agent, num_actions=6)
    taken = set(draws(agent, 3, 5000))
    assert {ACTION_NAMES[a] for a in taken} == set(VLNCE_PROBS)
    # On street tasks the same four ids are the street's STOP, FORWARD, LEFT and RIGHT (never TURN_AROUND).
    street = create("random", load_config("eval", ["agent=random"]).agent, num_actions=5)
    assert {StreetAction(a).name for a in draws(street, 3, 5000)} == {"STOP", "FORWARD", "LEFT", "RIGHT"}


def test_random_is_deterministic_given_the_episode_seed():
    agent = create("random", load_config("eval", ["agent=random"]).agent)
    assert draws(agent, 11, 300) == draws(agent, 11, 300)
    assert draws(agent, 11, 300) != draws(agent, 12, 300)


def test_random_rejects_a_bad_distribution_and_points_stop_prob_to_uniform_random():
    with pytest.raises(ValueError, match="summing to 1"):
        create("random", {"probs": [0.5, 0.5, 0.5, 0.5]})
    with pytest.raises(ValueError, match="agent=uniform_random"):
        create("random", {"stop_prob": 0.1})


def test_uniform_random_takes_every_other_action_uniformly(houses, env):
    agent = agent_for(houses_config(houses, "agent=uniform_random"), env)
    names = env.action_names()
    counts = np.bincount(draws(agent, 5, 20000), minlength=len(names)) / 20000
    assert abs(counts[names.index("stop")] - 0.05) < 0.01
    for name in ("move_forward", "turn_left", "turn_right"):
        assert abs(counts[names.index(name)] - 0.95 / 3) < 0.015, name
    assert draws(agent, 5, 300) == draws(agent, 5, 300) != draws(agent, 6, 300)


def test_handcrafted_turns_right_then_walks_37_steps_then_stops(houses, env):
    cfg = houses_config(houses, "agent=handcrafted")
    assert cfg.agent.turn_angle == env.turn_angle == 15
    agent = agent_for(cfg, env)
    turns = set()
    for seed in range(4):
        names, infos = rollout(env, agent, seed % len(env.episodes), seed)
        k = names.index("move_forward")
        assert names == ["turn_right"] * k + ["move_forward"] * 37 + ["stop"]
        assert 0 <= k <= 24  # 0 .. 360 / 15
        # k right turns of the env's 15 degrees each (clockwise: the heading decreases)
        turned = math.remainder(infos[k]["heading"] - infos[0]["heading"] + math.radians(15 * k), 2 * math.pi)
        assert abs(turned) < 1e-4
        turns.add(k)
        again, _ = rollout(env, agent, seed % len(env.episodes), seed)
        assert again == names
    assert len(turns) > 1


def test_handcrafted_draws_its_turns_uniformly_from_0_to_360_over_the_turn_angle():
    agent = create("handcrafted", load_config("eval", ["task=synth_houses", "agent=handcrafted"]).agent)
    ks = [draws(agent, seed, 30).count(TURN_RIGHT) for seed in range(2000)]
    assert set(ks) == set(range(25))  # 0..24 right turns of 15 degrees, as VLN-CE's randint(0, 360 / 15 + 1)
    assert max(ks.count(k) for k in range(25)) < 2.0 * min(ks.count(k) for k in range(25))
    rxr = load_config("eval", ["task=rxr_ce", "agent=handcrafted"]).agent
    assert rxr.turn_angle == 30
    agent = create("handcrafted", rxr, num_actions=6)
    assert {draws(agent, seed, 13).count(TURN_RIGHT) for seed in range(500)} == set(range(13))


def test_handcrafted_refuses_street_tasks():
    with pytest.raises(AgentInputError, match="agent=handcrafted needs the task's turn_angle"):
        create("handcrafted", load_config("eval", ["agent=handcrafted"]).agent)


def test_forward_blocked_walks_until_a_move_is_blocked(houses, env):
    agent = agent_for(houses_config(houses, "agent=forward_blocked"), env)
    for index in range(len(env.episodes)):
        names, infos = rollout(env, agent, index, 0)
        assert names[:-1] == ["move_forward"] * (len(names) - 1)
        if names[-1] == "stop":  # stopped right after the first blocked move
            assert [info["collided"] for info in infos[1:-1]] == [False] * (len(names) - 2) + [True]
        else:  # or walked unblocked until the step limit
            assert len(names) == env.max_steps and not any(info["collided"] for info in infos)


def test_forward_blocked_reads_only_the_collision_flag_and_its_budget():
    agent = create("forward_blocked", {})
    agent.reset({}, {}, 0)
    free, bump = {"collided": False}, {"collided": True}
    # The flag at reset describes no move of the agent's: it moves first.
    assert [agent.act({}, bump)] + [agent.act({}, free) for _ in range(5)] + [agent.act({}, bump)] == [1] * 6 + [0]
    capped = create("forward_blocked", {"max_forward": 3})
    capped.reset({}, {}, 0)
    assert [capped.act({}, free) for _ in range(5)] == [1, 1, 1, 0, 0]
    with pytest.raises(ValueError, match="collision flag"):
        capped.act({}, None)
