"""VLN-CM on street graphs: cutting the panorama into views, from a view to a link, the spot rules, the
city's labels, and episodes in the synthetic city through the evaluation config."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

import vlnkit.agents.vlncm  # noqa: F401  (registers vlncm and vlncm_street)
from vlnkit.agents import create
from vlnkit.agents.base import AgentInputError
from vlnkit.agents.street_control import FORWARD, LEFT, RIGHT, STOP
from vlnkit.agents.vlncm.agent import VLNCMAgent
from vlnkit.agents.vlncm.street import StreetVLNCMAgent, city_labels, street_views, view_bearings
from vlnkit.config import load_config
from vlnkit.perception.backbones.tiny_clip import TinyCLIP, WordVocab, save_tiny_clip
from vlncm_fakes import ListSpots, ScriptedScorer, peak



CROSS = [0.0, 90.0, 180.0, 270.0]


def obs(heading: float = 0.0, links: Sequence[float] = CROSS, position: Sequence[float] = (0.0, 0.0)) -> dict:
    padded = np.full(5, -1.0, np.float32)
    padded[: len(links)] = links
    return {"instruction": "go", "heading": np.array([heading], np.float32), "links": padded,
            "position": np.asarray(position, np.float32), "panorama": np.zeros((16, 48, 3), np.uint8)}


def street_agent(spots: Sequence[str], scorer: ScriptedScorer, **kw) -> StreetVLNCMAgent:
    a = StreetVLNCMAgent(ListSpots(spots), scorer, num_actions=4, **kw)
    a.reset(obs(), {}, seed=0)
    return a


# ------------------------------------------------------------------------------------------ views


def test_view_bearings_go_clockwise_from_the_heading() -> None:
    assert view_bearings(12).tolist() == [0, 30, 60, 90, 120, 150, 180, -150, -120, -90, -60, -30]


def test_views_are_cut_around_their_bearing_and_wrap_the_image_edges() -> None:
    # One column per degree; a pixel holds its bearing clockwise of the heading (the centre column), 0..359.
    width, height = 360, 90
    panorama = np.tile((np.arange(width) - width // 2) % 360, (height, 1)).astype(np.uint32)
    views = street_views(panorama, views=12, fov=60.0, vfov=90.0)
    assert views.shape == (12, 45, 60) and views.dtype == np.uint32
    for k in range(12):
        bearings = views[k, 0]
        expected = (np.arange(60) + 30 * k - 30) % 360
        assert bearings.tolist() == expected.tolist()
    # rows: the 90 degrees about the horizon of a 180-degree-high image are its middle half
    rows = np.broadcast_to(np.arange(height)[:, None, None], (height, width, 3))
    cut = street_views(rows, views=4, fov=90.0, vfov=90.0)
    assert cut.shape == (4, 45, 90, 3) and cut[0, 0, 0, 0] == 22 and cut[0, -1, 0, 0] == 66


def test_bad_panoramas_and_fields_of_view_are_refused() -> None:
    with pytest.raises(ValueError, match="equirectangular"):
        street_views(np.zeros(5))
    with pytest.raises(ValueError, match="fov"):
        street_views(np.zeros((4, 8)), fov=0.0)


# ------------------------------------------------------------------------------------------ decisions


def test_the_best_view_picks_the_closest_link_and_the_agent_turns_to_it_then_goes() -> None:
    a = street_agent(["bank"], ScriptedScorer({"bank": [peak(3)]}))  # view 3: 90 degrees right
    assert a.act(obs()) == RIGHT
    assert a.act(obs(heading=90.0)) == FORWARD
    assert a.moves == 1


def test_a_view_between_links_takes_the_closer_link() -> None:
    a = street_agent(["bank"], ScriptedScorer({"bank": [peak(10)]}))  # view 10: 60 degrees left -> link 270
    assert a.act(obs()) == LEFT
    a = street_agent(["bank"], ScriptedScorer({"bank": [peak(11)]}))  # 30 degrees left -> straight on
    assert a.act(obs()) == FORWARD


def test_a_spot_out_of_sight_means_follow_the_street() -> None:
    a = street_agent(["bank"], ScriptedScorer({"bank": [peak(3, value=0.2)]}), visible=0.3)
    assert a.act(obs(heading=90.0, links=[90.0, 180.0, 270.0])) == FORWARD


def test_views_behind_are_not_directions_and_the_link_back_is_left_out() -> None:
    # The spot scores best straight behind; the best view ahead is 60 degrees right, closest to link 90.
    row = peak(6, value=1.0, rest=0.0)
    row[2] = 0.5
    a = street_agent(["bank"], ScriptedScorer({"bank": [row]}), max_turn=135.0)
    assert a.act(obs(links=[0.0, 90.0, 180.0])) == RIGHT
    # Wanting 150 degrees right: the closest link is the one back (180), left out, so 90 it is.
    row = peak(5, value=1.0, rest=0.0)
    a = street_agent(["bank"], ScriptedScorer({"bank": [row]}), max_turn=150.0)
    assert a.act(obs(links=[0.0, 90.0, 180.0])) == RIGHT
    assert a.target == 90.0


def test_a_dead_end_turns_back() -> None:
    a = street_agent(["bank"], ScriptedScorer({"bank": [peak(0)]}))
    assert a.act(obs(links=[180.0])) in (LEFT, RIGHT)
    assert a.target == 180.0


def test_falling_scores_pass_the_spots_and_the_last_one_stops() -> None:
    scorer = ScriptedScorer({"bank": [peak(0, 0.9), peak(0, 0.7), peak(0, 0.5)], "cafe": [peak(0, 0.8), peak(0, 0.6), peak(0, 0.4)]})
    a = street_agent(["bank", "cafe"], scorer, pm_window=2, reach_score=None)
    for step in range(2):
        assert a.act(obs(position=(step, 0))) == FORWARD
    assert a.act(obs(position=(2, 0))) == FORWARD  # bank passed at its third score; cafe's first
    assert a.monitor.current == 1 and a.passed == 1
    assert a.act(obs(position=(3, 0))) == FORWARD
    assert a.act(obs(position=(4, 0))) == STOP
    assert a.episode_stats() == {"spots": ["bank", "cafe"], "spots_passed": 2, "spots_reached": 0, "moves": 4, "spot_fallbacks": 0}


def test_a_spot_beside_at_its_best_is_reached() -> None:
    scorer = ScriptedScorer({"bank": [peak(1, 0.5), peak(3, 0.8)]})
    a = street_agent(["bank"], scorer, reach_score=0.6, beside_min=45.0, beside_max=135.0)
    assert a.act(obs()) == FORWARD  # view 1 (30 degrees right): straight on
    assert a.act(obs(position=(0, 1))) == STOP  # beside at 0.8 >= 0.6, its best: reached, no spot left
    assert a.reached == 1 and a.passed == 0
    # Without the rule it is a direction like any other.
    a = street_agent(["bank"], ScriptedScorer({"bank": [peak(1, 0.5), peak(3, 0.8)]}), reach_score=None)
    a.act(obs())
    assert a.act(obs(position=(0, 1))) == RIGHT


def test_the_move_budgets_end_a_spot_and_the_episode() -> None:
    a = street_agent(["bank", "cafe"], ScriptedScorer({"bank": [peak(0)], "cafe": [peak(0)]}), max_moves=3, max_spot_moves=2)
    for step in range(3):
        assert a.act(obs(position=(step, 0))) == FORWARD
    assert a.monitor.current == 1
    assert a.act(obs(position=(3, 0))) == STOP


def test_a_refused_forward_is_decided_again_at_the_same_node() -> None:
    scorer = ScriptedScorer({"bank": [peak(0)]})
    a = street_agent(["bank"], scorer)
    assert a.act(obs()) == FORWARD
    assert a.act(obs()) == FORWARD  # the navigator did not move: a new decision, a new score
    assert scorer.calls["bank"] == 2


def test_the_panorama_must_suit_the_scorer() -> None:
    a = street_agent(["bank"], ScriptedScorer({"bank": [peak(0)]}))
    semantic = obs()
    semantic["panorama"] = np.zeros((16, 48), np.uint32)
    with pytest.raises(AgentInputError, match="agent.modality=rgb"):
        a.act(semantic)
    blind = obs()
    del blind["panorama"]
    with pytest.raises(AgentInputError, match=r"agent=vlncm_street needs observation 'panorama' as an RGB panorama "
                                              r"\(H, W, 3\), got no panorama.*task.panorama=image"):
        a.reset(blind, {}, seed=0)

    class LabelScorer(ScriptedScorer):
        needs_labels = True

    with pytest.raises(ValueError, match="labels"):
        StreetVLNCMAgent(ListSpots(["bank"]), LabelScorer({}), num_actions=4)
    b = StreetVLNCMAgent(ListSpots(["bank"]), LabelScorer({"bank": [peak(0)]}), num_actions=4, labels={1: ("bank",)})
    with pytest.raises(AgentInputError, match=r"semantic panorama \(H, W\).*got shape \(16, 48, 3\) uint8.*"
                                              "agent.modality=semantic"):
        b.reset(obs(), {}, seed=0)
    b.reset(semantic, {}, seed=0)
    with pytest.raises(AgentInputError, match="agent.modality=semantic"):
        b.act(obs())
    assert b.act(semantic) == FORWARD
    seen = b.scorer.seen[-1]
    assert seen.rgb is None and seen.semantic.shape[0] == 12 and seen.labels == {1: ("bank",)}


# ------------------------------------------------------------------------------------------ the city


@pytest.fixture(scope="module")
def city() -> Path:
    from vlnkit.envs.synth import default_city

    return default_city(0)


def test_city_labels_name_landmarks_by_colour_category_and_sign(city: Path) -> None:
    landmarks = json.loads((city / "graph" / "landmarks.json").read_text(encoding="utf-8"))
    labels = city_labels(city)
    first = landmarks[0]
    assert labels[1][0] == f"{first['colour']} {first['category']}" and first["category"] in labels[1]
    named = next(i for i, lm in enumerate(landmarks) if lm["text"])
    assert landmarks[named]["text"] in labels[named + 1]
    shops = [lm for lm in landmarks if lm["kind"] == "storefront"]
    signs = [phrases for i, phrases in labels.items() if i > len(landmarks)]
    assert len(signs) == len(shops)
    assert sorted(signs) == sorted((lm["text"],) for lm in shops)
    assert all("road" not in p and "ground" not in p for p in labels.values())


def test_agent_vlncm_street_renders_the_semantic_panorama_and_runs_an_episode(city: Path) -> None:
    import gymnasium

    from vlnkit.eval.street import ENV_IDS

    cfg = load_config("eval", ["task=synth_city", "agent=vlncm_street", "agent.asp=rules", "agent.max_moves=4"])
    assert cfg.task.panorama == "render" and cfg.task.panorama_paths.modality == "semantic"
    assert load_config("eval", ["task=synth_city", "agent=vlncm_street", "agent.modality=rgb"]).task.panorama_paths.modality == "rgb"
    built = create("vlncm_street", cfg.agent, num_actions=4)
    assert isinstance(built, StreetVLNCMAgent) and not built.uses_info
    env = gymnasium.make(ENV_IDS["touchdown"], data_dir=city, split="dev", panorama="render", modality="semantic",
                         episode_kinds="all").unwrapped
    try:
        observation, info = env.reset(options={"episode_index": 0})
        built.reset(observation, info, seed=0)
        assert built.spots
        for _ in range(30):
            action = built.act(observation)
            if action == STOP:
                break
            assert env.action_space.contains(action)
            observation, _, terminated, truncated, info = env.step(action)
            assert not terminated and not truncated
        assert action == STOP and built.moves <= 4
    finally:
        env.close()


def test_agent_vlncm_builds_from_the_run_config_with_its_memory_group(tmp_path: Path) -> None:
    vocab = WordVocab.build(["red couch"])
    config = {"vocab_size": len(vocab), "embed_dim": 8, "image_size": 16, "width": 4, "word_dim": 8}
    save_tiny_clip(tmp_path / "clip.pt", TinyCLIP(**config), vocab, config)
    cfg = load_config("eval", ["task=synth_houses", "agent=vlncm", "agent.asp=rules", "agent.scorer=synth_clip",
                               f"agent.synth_clip_weights={tmp_path / 'clip.pt'}"])
    assert cfg.agent.memory == "full"  # set for every agent by the memory group; VLN-CM has none
    assert isinstance(create("vlncm", cfg.agent, num_actions=5), VLNCMAgent)
