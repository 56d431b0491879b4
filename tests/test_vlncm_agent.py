"""The VLN-CM agent: configuration, decisions on hand-made observations, one episode in a synthetic house."""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

import vlnkit.agents.vlncm  # noqa: F401  (registers vlncm)
from vlnkit.agents import create
from vlnkit.agents.vlncm.agent import MOVE_FORWARD, STOP, TURN_LEFT, SceneLabels, VLNCMAgent
from vlnkit.agents.vlncm.asp import RuleSpotPredictor
from vlnkit.agents.vlncm.open_map import OpenMapConfig, OpenMapPredictor
from vlnkit.config import load_config
from vlnkit.perception.backbones.tiny_clip import TinyCLIP, WordVocab, save_tiny_clip
from vlnkit.perception.scorers.semantic import SemanticLabelScorer
from vlncm_fakes import ListSpots, ScriptedScorer, peak

GO_TOWARD_POINT = 4
OPEN = OpenMapConfig(max_distance=2.0, pixel_stride=4)


def observation(walls: dict[int, float] | None = None) -> dict:
    """A 12-view panorama over an open floor, with walls ``walls[k]`` metres ahead in some views."""
    size = 32
    t = (np.arange(size) + 0.5 - size / 2) / (size / 2)
    up = -t[:, None].repeat(size, 1)
    floor = np.where(up < 0, 1.25 / np.maximum(-up, 1e-9), 0.0)
    depth = np.stack([np.where(floor > 0, np.minimum(floor, (walls or {}).get(k, np.inf)), (walls or {}).get(k, 0.0))
                      for k in range(12)])
    return {"instruction": "go", "heading": np.array([0.0], np.float32), "panorama_rgb": np.zeros((12, size, size, 3), np.uint8),
            "panorama_depth": depth[..., None].astype(np.float32)}


def agent(spots: Sequence[str], scorer: ScriptedScorer, **kw) -> VLNCMAgent:
    a = VLNCMAgent(ListSpots(spots), scorer, num_actions=5, **{"omp": OpenMapPredictor(OPEN), **kw})
    a.reset(observation(), {"scene_id": "x"}, seed=0)
    return a


def test_the_agent_goes_toward_the_best_view_as_far_as_the_omp_allows() -> None:
    a = agent(["sofa"], ScriptedScorer({"sofa": [peak(3)]}))
    action = a.act(observation(), {"collided": False})
    assert action["action"] == GO_TOWARD_POINT
    assert float(action["angle"][0]) == pytest.approx(math.pi / 2)
    assert float(action["distance"][0]) == pytest.approx(OPEN.max_distance)


def test_without_the_omp_every_move_has_the_fixed_length() -> None:
    a = agent(["sofa"], ScriptedScorer({"sofa": [peak(0)]}), omp=None, step_distance=1.5)
    action = a.act(observation({0: 1.0}))
    assert float(action["distance"][0]) == pytest.approx(1.5)


def test_consecutive_falls_move_on_to_the_next_spot_and_the_last_one_stops() -> None:
    scorer = ScriptedScorer({"sofa": [peak(2, 0.9), peak(2, 0.8), peak(2, 0.7)],
                             "lamp": [peak(6, 0.9), peak(6, 0.8), peak(6, 0.7)]})
    a = agent(["sofa", "lamp"], scorer, pm_window=2)
    assert a.act(observation())["angle"][0] == pytest.approx(math.radians(60))
    a.act(observation())
    third = a.act(observation())
    assert a.current_spot == "lamp" and a.passed == 1
    assert float(third["angle"][0]) == pytest.approx(math.pi)
    assert isinstance(a.act(observation()), dict)
    assert a.act(observation()) == STOP
    assert a.episode_stats()["spots_passed"] == 2


def test_blocked_toward_a_spot_at_its_best_similarity_means_reached() -> None:
    scorer = ScriptedScorer({"sofa": [peak(0, 0.5), peak(0, 0.9)], "lamp": [peak(6)]})
    a = agent(["sofa", "lamp"], scorer)
    a.act(observation())
    action = a.act(observation({0: 0.3}))
    assert a.reached == 1 and a.current_spot == "lamp"
    assert float(action["angle"][0]) == pytest.approx(math.pi)


def test_blocked_before_getting_closer_takes_the_best_open_view() -> None:
    row = [0.1] * 12
    row[0], row[9], row[3], row[6] = 0.9, 0.8, 0.6, 0.5
    a = agent(["sofa"], ScriptedScorer({"sofa": [row]}))
    action = a.act(observation({0: 0.4, 9: 0.4}))
    assert float(action["angle"][0]) == pytest.approx(math.pi / 2)
    assert a.reached == 0


def test_a_collision_blocks_straight_ahead_for_the_next_move() -> None:
    row = peak(0, 0.9)
    row[3] = 0.5
    a = agent(["sofa"], ScriptedScorer({"sofa": [row]}))
    action = a.act(observation(), {"collided": True})
    assert float(action["angle"][0]) == pytest.approx(math.pi / 2)
    assert float(agent(["sofa"], ScriptedScorer({"sofa": [row]})).act(observation())["angle"][0]) == 0.0
    turned = observation()
    turned["heading"] = np.array([math.pi / 2], np.float32)
    row[0], row[9] = 0.8, 0.7
    a.scorer.rows["sofa"] = [np.asarray(row)]
    second = a.act(turned, {"collided": True})
    assert len(a.bumps) == 2
    assert float(second["angle"][0]) == pytest.approx(math.pi / 2)
    a.act(observation(), {"collided": False})
    assert a.bumps == []


def test_discrete_motion_spells_a_move_out_in_turns_and_steps() -> None:
    a = agent(["sofa"], ScriptedScorer({"sofa": [peak(3)]}), motion="discrete", turn_angle=15.0, forward_step=0.5)
    actions = [a.act(observation()) for _ in range(10)]
    assert actions == [TURN_LEFT] * 6 + [MOVE_FORWARD] * 4


def test_the_move_budget_ends_the_episode() -> None:
    a = agent(["sofa"], ScriptedScorer({"sofa": [peak(0)]}), max_moves=2)
    assert [isinstance(a.act(observation()), dict) for _ in range(2)] == [True, True]
    assert a.act(observation()) == STOP


def test_point_motion_needs_go_toward_point_and_label_scorers_need_labels() -> None:
    with pytest.raises(ValueError, match="go_toward_point"):
        VLNCMAgent(ListSpots(["a"]), ScriptedScorer({}), num_actions=4)
    needs = SemanticLabelScorer(encoder=object())  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="label source"):
        VLNCMAgent(ListSpots(["a"]), needs, num_actions=5)


def test_agent_vlncm_sets_up_the_task_and_omp_false_switches_the_omp_off() -> None:
    cfg = load_config("eval", ["task=synth_houses", "agent=vlncm"])
    assert cfg.task.panorama and cfg.task.go_toward_point and cfg.agent.omp
    assert cfg.agent.open_map.camera_height == cfg.task.sensor_height
    assert not load_config("eval", ["task=synth_houses", "agent=vlncm", "omp=false"]).agent.omp
    assert not load_config("eval", ["task=synth_houses", "agent=vlncm", "agent.omp=false"]).agent.omp
    assert "omp" not in load_config("eval", ["task=synth_houses", "agent=random"])


def test_the_registry_builds_vlncm_from_a_bare_config(tmp_path: Path) -> None:
    vocab = WordVocab.build(["red couch"])
    config = {"vocab_size": len(vocab), "embed_dim": 8, "image_size": 16, "width": 4, "word_dim": 8}
    save_tiny_clip(tmp_path / "clip.pt", TinyCLIP(**config), vocab, config)
    built = create("vlncm", {"asp": "rules", "scorer": "synth_clip", "synth_clip_weights": str(tmp_path / "clip.pt"),
                             "omp": False, "step_distance": 1.0}, num_actions=5)
    assert isinstance(built, VLNCMAgent) and built.omp is None and built.step_distance == 1.0
    assert isinstance(built.asp, RuleSpotPredictor)
    with pytest.raises(ValueError, match="clip_dir"):
        create("vlncm", {"asp": "rules", "scorer": "clip"}, num_actions=5)


class HashEncoder:
    """A stand-in text model: sums of fixed pseudo-random word vectors, normalised."""

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        rows = []
        for text in texts:
            vec = np.zeros(64)
            for word in text.lower().split():
                if word not in ("the", "a", "an"):
                    seed = int(hashlib.sha256(word.encode()).hexdigest()[:8], 16)
                    vec += np.random.default_rng(seed).normal(size=64)
            rows.append(vec / max(np.linalg.norm(vec), 1e-9))
        return np.array(rows)


def test_an_episode_in_a_synthetic_house_ends_with_stop_and_valid_actions() -> None:
    import gymnasium

    from vlnkit.envs.continuous import ENV_ID
    from vlnkit.envs.continuous.env import default_scenes_dir
    from vlnkit.envs.synth.houses import default_houses

    release = default_houses()
    env = gymnasium.make(ENV_ID, data_dir=release, split="val_unseen", panorama=True, go_toward_point=True).unwrapped
    try:
        labels = SceneLabels(default_scenes_dir(release))
        a = VLNCMAgent(RuleSpotPredictor(), SemanticLabelScorer(encoder=HashEncoder()), num_actions=5,
                       omp=OpenMapPredictor(), max_moves=6, labels=labels)
        obs, info = env.reset(options={"episode_index": 0})
        a.reset(obs, info, seed=0)
        assert any("living room" in phrases for phrases in a.labels.values())
        assert a.spots == RuleSpotPredictor().predict(obs["instruction"])
        steps = 0
        while True:
            action = a.act(obs, info)
            steps += 1
            if action == STOP:
                break
            assert env.action_space.contains({k: np.asarray(v) for k, v in action.items()})
            obs, _, terminated, truncated, info = env.step(action)
            assert not terminated
        assert steps <= 7
        assert info["collisions"] <= 2
    finally:
        env.close()
