"""The ``vlnkit/VLNCE-v0`` environment: Gymnasium contract, R2R-CE motion, info, options, errors."""

import math
import re
import shutil

import gymnasium
import numpy as np
import pytest
import trimesh
from gymnasium.utils.env_checker import check_env

import vlnkit.envs.continuous  # noqa: F401  (registers the environment)
from vlnkit.envs.continuous.env import (
    LOOK_UP,
    MOVE_FORWARD,
    STOP,
    TURN_LEFT,
    TURN_RIGHT,
)
from vlnkit.envs.continuous.geometry import habitat_to_zup, quat_from_yaw
from vlnkit.envs.datasets import DatasetFormatError, VLNCEEpisode, read_vlnce_gt, write_vlnce_gt


def room_glb(path):
    """A 6 x 4 m room (floor at y = 0) split by a wall at x = 3 with a 1 m door, stored z-up."""
    scene = trimesh.Scene()
    for name, lo, hi in (("floor", (0, -0.05, 0), (6, 0, 4)), ("wall_a", (2.95, 0, 0), (3.05, 2.5, 1.5)),
                         ("wall_b", (2.95, 0, 2.5), (3.05, 2.5, 4))):
        box = trimesh.creation.box(extents=np.subtract(hi, lo))
        box.apply_translation(np.add(lo, hi) / 2)
        scene.add_geometry(trimesh.Trimesh(habitat_to_zup(box.vertices), box.faces), node_name=name)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(scene.export(file_type="glb"))


def episode(episode_id="1", start=(1.0, 0.0, 2.0), yaw=0.0, goal=(5.0, 0.0, 2.0), scene="test/room/room.glb"):
    return VLNCEEpisode(episode_id=episode_id, trajectory_id=episode_id, scene_id=scene, start_position=start,
                        start_rotation=tuple(quat_from_yaw(yaw)), instruction="Go through the door.",
                        goals=() if goal is None else ((goal, 3.0),))


@pytest.fixture(scope="module")
def scenes(tmp_path_factory):
    root = tmp_path_factory.mktemp("scenes")
    room_glb(root / "test" / "room" / "room.glb")
    return root


def make(scenes, episodes=None, **kw):
    return gymnasium.make("vlnkit/VLNCE-v0", episodes=episodes or [episode()], scenes_dir=scenes, **kw).unwrapped


def test_check_env_with_r2r_ce_defaults(houses):
    env = gymnasium.make("vlnkit/VLNCE-v0", data_dir=houses, split="val_unseen").unwrapped
    check_env(env, skip_render_check=True)
    assert env.action_space == gymnasium.spaces.Discrete(4)
    assert env.action_names() == ["stop", "move_forward", "turn_left", "turn_right"]
    obs, info = env.reset(seed=0)
    assert obs["rgb"].shape == (224, 224, 3) and obs["rgb"].dtype == np.uint8
    assert obs["depth"].shape == (256, 256, 1) and 0.0 <= obs["depth"].min() and obs["depth"].max() <= 1.0
    assert env.forward_step == 0.25 and env.turn_angle == 15.0 and env.success_distance == 3.0
    assert env.max_steps == 500 and env.sliding
    assert {"episode_id", "scene_id", "position", "heading", "collided", "collisions", "distance_to_goal",
            "oracle_action"} <= set(info)
    env.close()


@pytest.mark.filterwarnings("ignore:.*symmetric and normalized space")
def test_check_env_with_extensions(scenes):
    env = make(scenes, semantic=True, panorama=True, panorama_size=(32, 24), go_toward_point=True, look_angle=30,
               rgb_size=(64, 48), depth_size=(64, 48))
    check_env(env, skip_render_check=True)
    obs, _ = env.reset(seed=0)
    assert obs["panorama_rgb"].shape == (12, 24, 32, 3) and obs["semantic"].shape == (48, 64)
    assert env.action_names()[-1] == "go_toward_point" and env.action_space["action"].n == 7
    env.close()


def test_forward_turns_and_fresh_observations(scenes):
    env = make(scenes, rgb_size=(32, 32), depth_size=(32, 32))
    obs, info = env.reset(options={"episode_id": "1"})
    assert info["position"] == [1.0, 0.0, 2.0] and info["heading"] == 0.0
    obs["rgb"][:] = 0
    obs2, _, _, _, info = env.step(MOVE_FORWARD)
    assert info["position"] == pytest.approx([1.0, 0.0, 1.75])  # 0.25 m toward -z
    assert not info["collided"] and obs2["rgb"].any()
    _, _, _, _, info = env.step(TURN_LEFT)
    assert info["heading"] == pytest.approx(math.radians(15))
    _, _, _, _, info = env.step(TURN_RIGHT)
    assert info["heading"] == pytest.approx(0.0)
    env.close()


def test_collisions_slide_and_count(scenes):
    env = make(scenes, episodes=[episode(start=(2.0, 0.0, 0.6), yaw=-math.pi / 2)], rgb_size=(16, 16), depth_size=(16, 16))
    env.reset()
    positions, flags = [], []
    for _ in range(6):
        _, _, _, _, info = env.step(MOVE_FORWARD)
        positions.append(info["position"][0])
        flags.append(info["collided"])
    assert positions[:3] == pytest.approx([2.25, 2.5, 2.75])
    assert positions[-1] == pytest.approx(2.85, abs=0.05) and flags[-1]
    assert info["collisions"] == sum(flags) >= 2
    # Heading 30 degrees off the wall normal: the step slides along the wall (z grows).
    env.reset()
    env.backend.set_agent_state([2.8, 0.0, 0.6], quat_from_yaw(-math.pi / 2 + math.radians(30)))
    env._yaw = -math.pi / 2 + math.radians(30)
    _, _, _, _, info = env.step(MOVE_FORWARD)
    assert info["collided"] and info["position"][2] < 0.6 - 0.1
    env.close()


def test_no_sliding_stops_at_the_wall(scenes):
    env = make(scenes, episodes=[episode(start=(2.8, 0.0, 0.6), yaw=-math.pi / 2 + math.radians(30))], sliding=False,
               rgb_size=(16, 16), depth_size=(16, 16))
    env.reset()
    _, _, _, _, info = env.step(MOVE_FORWARD)
    assert info["collided"] and info["position"][2] == pytest.approx(0.6, abs=0.05)
    env.close()


def test_oracle_reaches_the_goal_and_is_rewarded(scenes):
    env = make(scenes, rgb_size=(16, 16), depth_size=(16, 16))
    _, info = env.reset()
    assert info["distance_to_goal"] == pytest.approx(env.backend.geodesic_distance([1, 0, 2], [[5, 0, 2]]))
    reward, steps = 0.0, 0
    while True:
        _, reward, terminated, truncated, info = env.step(info["oracle_action"])
        steps += 1
        if terminated or truncated:
            break
    assert terminated and reward == 1.0 and info["distance_to_goal"] <= 0.5 and steps < 40
    env.close()


def test_go_toward_point_and_look(scenes):
    env = make(scenes, go_toward_point=True, look_angle=30, rgb_size=(32, 32), depth_size=(32, 32))
    point = env.go_toward_point_id
    obs, _ = env.reset()
    _, _, _, _, info = env.step({"action": point, "distance": np.array([1.0], np.float32), "angle": np.array([0.0], np.float32)})
    assert info["position"] == pytest.approx([1.0, 0.0, 1.0]) and not info["collided"]
    _, _, _, _, info = env.step({"action": point, "distance": np.array([3.0], np.float32),
                                 "angle": np.array([-math.pi / 2], np.float32)})
    assert info["heading"] == pytest.approx(-math.pi / 2)
    assert info["collided"] and info["position"][0] == pytest.approx(2.85, abs=0.05)  # stopped at the wall
    before = env.step(TURN_LEFT)[0]["rgb"]
    after, _, _, _, info2 = env.step(LOOK_UP)
    assert info2["position"] == info["position"] and not np.array_equal(before, after["rgb"])
    env.close()


def test_episode_without_goal_never_succeeds(scenes):
    env = make(scenes, episodes=[episode(goal=None)], rgb_size=(16, 16), depth_size=(16, 16))
    _, info = env.reset()
    assert info["oracle_action"] == STOP and info["distance_to_goal"] is None
    _, reward, terminated, _, _ = env.step(STOP)
    assert terminated and reward == 0.0
    env.close()


def test_check_env_on_a_split_without_goals(houses):
    # Test splits have no goals: distance_to_goal is None (a NaN there is unequal to itself, and
    # check_env's determinism check compares infos).
    env = gymnasium.make("vlnkit/VLNCE-v0", data_dir=houses, split="test", rgb_size=(16, 16), depth_size=(16, 16)).unwrapped
    assert all(not ep.goals for ep in env.episodes)
    check_env(env, skip_render_check=True)
    _, info = env.reset(seed=0)
    assert info["distance_to_goal"] is None and info["oracle_action"] == STOP
    env.close()


def off_floor_error(scenes, ep):
    env = make(scenes, episodes=[ep], rgb_size=(16, 16), depth_size=(16, 16))
    with pytest.raises(DatasetFormatError) as err:
        env.reset()
    env.close()
    return err.value


def test_goal_far_off_the_map_is_refused(scenes):
    err = off_floor_error(scenes, episode(episode_id="7", goal=(1.4e6, 0.0, 2.0)))
    assert err.field == "episodes[0].goals[0].position"
    message = str(err)
    assert "episode '7'" in message and "[1400000.0, 0.0, 2.0]" in message
    assert "1.0 m horizontally and 0.5 m vertically" in message  # the tolerance
    # The nearest navigable point is at the floor's east edge, x = 6 m less the 0.1 m agent radius.
    away = float(re.search(r"is ([0-9.]+) m away horizontally", message).group(1))
    assert away == pytest.approx(1.4e6 - 5.9, abs=0.1)


def test_extreme_start_is_refused_not_an_index_error(scenes):
    err = off_floor_error(scenes, episode(episode_id="8", start=(1e300, 0.0, 2.0)))
    assert err.field == "episodes[0].start_position"
    assert "episode '8'" in str(err) and "[1e+300, 0.0, 2.0]" in str(err) and "no navigable point" in str(err)


def test_floor_tolerance_bounds(scenes):
    # A goal 1 m above the floor: 0.5 m vertically is the most allowed.
    err = off_floor_error(scenes, episode(goal=(5.0, 1.0, 2.0)))
    assert "1.00 m vertically" in str(err)
    # 0.6 m beyond the east edge of the floor (nearest navigable x is about 5.9): within the metre, snapped.
    env = make(scenes, episodes=[episode(goal=(6.5, 0.0, 2.0))], rgb_size=(16, 16), depth_size=(16, 16))
    _, info = env.reset()
    assert info["distance_to_goal"] == pytest.approx(4.9, rel=0.03)  # straight through the door to x = 5.9
    env.close()


def test_truncation_at_max_steps(scenes):
    env = make(scenes, max_steps=3, rgb_size=(16, 16), depth_size=(16, 16))
    env.reset()
    results = [env.step(TURN_LEFT) for _ in range(3)]
    assert [r[3] for r in results] == [False, False, True] and not any(r[2] for r in results)
    env.close()


def test_scene_errors_name_the_episode(scenes, houses):
    with pytest.raises(DatasetFormatError, match="escapes") as err:
        make(scenes, episodes=[episode(episode_id="42", scene="../outside.glb")])
    assert err.value.field == "episodes[0].scene_id" and "42" in str(err.value)
    with pytest.raises(DatasetFormatError, match="not found"):
        make(scenes, episodes=[episode(scene="test/none/none.glb")])
    with pytest.raises(DatasetFormatError, match="splits present: train, val_seen, val_unseen, test"):
        gymnasium.make("vlnkit/VLNCE-v0", data_dir=houses, split="dev")


def wall_approach(scenes, sliding):
    """GO_TOWARD_POINT 2 m from (2, 0, 1.4) at 60 degrees right of the -z heading: toward the wall at x = 3
    (agent edge x = 2.85) 30 degrees off its normal, reaching it after 0.98 m at z = 1.4 - 0.49 = 0.91."""
    env = make(scenes, episodes=[episode(start=(2.0, 0.0, 1.4))], go_toward_point=True, sliding=sliding,
               rgb_size=(16, 16), depth_size=(16, 16))
    env.reset()
    _, _, _, _, info = env.step({"action": env.go_toward_point_id, "distance": np.array([2.0], np.float32),
                                 "angle": np.array([-math.radians(60)], np.float32)})
    env.close()
    return info


def test_go_toward_point_slides_along_the_wall_when_sliding(scenes):
    info = wall_approach(scenes, sliding=True)
    x, _, z = info["position"]
    assert info["collided"] and x == pytest.approx(2.85, abs=0.05)
    assert z < 0.91 - 0.2  # kept going along the wall (-z) after reaching it


def test_go_toward_point_stops_at_the_wall_without_sliding(scenes):
    info = wall_approach(scenes, sliding=False)
    x, _, z = info["position"]
    assert info["collided"] and x == pytest.approx(2.85, abs=0.05) and z == pytest.approx(0.91, abs=0.05)


def split_without_gt(houses, tmp_path, split="val_unseen"):
    """A copy of the small houses' ``split`` file alone, without its ``{split}_gt.json.gz``."""
    (tmp_path / split).mkdir()
    shutil.copy(houses / split / f"{split}.json.gz", tmp_path / split / f"{split}.json.gz")
    return tmp_path


def make_from(root, houses, **kw):
    """The environment on the split ``val_unseen`` of the release ``root``, with the small houses' scenes."""
    return gymnasium.make("vlnkit/VLNCE-v0", data_dir=root, split="val_unseen", scenes_dir=houses / "scenes",
                          rgb_size=(16, 16), depth_size=(16, 16), **kw).unwrapped


def test_missing_ground_truth_is_refused_naming_the_file(houses, tmp_path):
    root = split_without_gt(houses, tmp_path)
    with pytest.raises(DatasetFormatError) as err:
        make_from(root, houses)
    assert err.value.path == root / "val_unseen" / "val_unseen_gt.json.gz"
    assert "ground-truth file not found" in str(err.value) and "task.ndtw_reference=sparse" in str(err.value)
    assert "\n" not in str(err.value)


def test_ground_truth_lacking_an_episode_is_refused(houses, tmp_path):
    root = split_without_gt(houses, tmp_path)
    truth = read_vlnce_gt(houses / "val_unseen" / "val_unseen_gt.json.gz")
    write_vlnce_gt({k: v for k, v in truth.items() if k != "2"}, root / "val_unseen" / "val_unseen_gt.json.gz")
    with pytest.raises(DatasetFormatError) as err:
        make_from(root, houses)
    assert err.value.field == "2" and "no ground truth for episode '2'" in str(err.value)


def test_sparse_reference_asked_for_scores_against_reference_path(houses, tmp_path):
    root = split_without_gt(houses, tmp_path)
    env = make_from(root, houses, ndtw_reference="sparse")
    ep = env.episodes[0]
    assert env.ndtw_reference == "sparse"
    assert env.reference_path(ep).tolist() == [list(p) for p in ep.reference_path]
    with pytest.raises(ValueError, match="must be 'gt' or 'sparse', got 'dense'"):
        make_from(root, houses, ndtw_reference="dense")
    env.close()

