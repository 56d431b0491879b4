"""RxR-CE as the RxR-Habitat challenge runs it (VLN-CE's rxr configs): the task config, the environment
it builds, the depth scaling, the submission's paths and the missing-data message."""

import json
from types import SimpleNamespace

import numpy as np
import pytest

from vlnkit.config import load_config
from vlnkit.envs.continuous.backend import AgentSpec, SensorSpec, process_depth
from vlnkit.envs.datasets import VLNCEEpisode
from vlnkit.eval.continuous import ContinuousTask
from vlnkit.eval.runner import ConfigError


def rxr_config(*overrides):
    return load_config("eval", ["task=rxr_ce", *overrides])


def test_config_has_the_challenge_settings():
    task = rxr_config().task
    assert (task.agent_height, task.agent_radius, task.sensor_height) == (0.88, 0.18, 0.88)
    assert list(task.rgb.size) == [640, 480] and task.rgb.hfov == 79
    assert list(task.depth.size) == [640, 480] and task.depth.hfov == 79
    assert (task.depth.min, task.depth.max, task.depth.normalize) == (0.5, 5.0, True)
    assert task.sliding is False and task.turn_angle == 30 and task.look_angle == 30 and task.forward_step == 0.25
    assert task.ndtw_reference == "gt" and task.dataset == "rxr"


def test_environment_is_built_with_the_challenge_agent_and_cameras(houses):
    # The small houses are an R2R-CE release: read them without RxR-CE's file suffix.
    cfg = rxr_config(f"data_dir={houses}", "split=val_unseen", "task.split_suffix=''")
    env = ContinuousTask().make_env(cfg, houses)
    assert env.backend.agent == AgentSpec(radius=0.18, height=0.88)
    rgb, depth = env.sensors
    assert (rgb.width, rgb.height, rgb.hfov, rgb.position) == (640, 480, 79.0, (0.0, 0.88, 0.0))
    assert (depth.width, depth.height, depth.hfov, depth.position) == (640, 480, 79.0, (0.0, 0.88, 0.0))
    assert (depth.min_depth, depth.max_depth, depth.normalize_depth) == (0.5, 5.0, True)
    assert not env.sliding and env.turn_angle == 30.0 and env.forward_step == 0.25
    assert env.action_names() == ["stop", "move_forward", "turn_left", "turn_right", "look_up", "look_down"]
    env.close()


def test_depth_is_clipped_to_half_a_metre_to_five_then_scaled():
    spec = SensorSpec("depth", "depth", 4, 1, 79.0, (0.0, 0.88, 0.0), 0.5, 5.0, True)
    # Nothing hit, 0.3 m (below the 0.5 m minimum), 2.75 m, 7 m (beyond the 5 m maximum).
    out = process_depth(np.array([[0.0, 0.3, 2.75, 7.0]], dtype=np.float32), spec)
    assert out[0, :, 0].tolist() == pytest.approx([0.0, 0.0, (2.75 - 0.5) / 4.5, 1.0])


def test_submission_keeps_only_positions_that_changed(tmp_path):
    a, b, c = [1.0, 0.0, 2.0], [1.0, 0.0, 1.75], [1.25, 0.0, 1.75]
    episodes = [VLNCEEpisode(episode_id=str(i), trajectory_id=str(i), scene_id="s.glb", start_position=(1.0, 0.0, 2.0),
                             start_rotation=(0.0, 0.0, 0.0, 1.0), instruction="go", instruction_id=iid)
                for i, iid in ((1, "17"), (2, "4"))]
    # Turns and blocked steps repeat a position; a return to an earlier place is a change.
    records = [{"trajectory": [a, a, b, b, b, c, c], "headings": [0.0] * 7, "metrics": {}},
               {"trajectory": [a, b, a, a], "headings": [0.0] * 4, "metrics": {}}]
    metrics = {"num_episodes": 2, "config": {"task": {"dataset": "rxr", "name": "rxr_ce"}, "num_plots": 0}}
    ContinuousTask().write_outputs(tmp_path, SimpleNamespace(ndtw_reference="gt"), episodes, records, metrics)
    lines = [json.loads(line) for line in (tmp_path / "submission.jsonl").read_text().splitlines()]
    assert lines == [{"instruction_id": 17, "path": [a, b, c]}, {"instruction_id": 4, "path": [a, b, a]}]


def test_no_data_dir_says_rxr_ce_has_no_built_in_data():
    with pytest.raises(ConfigError) as err:
        ContinuousTask().resolve_data_dir(rxr_config())
    message = str(err.value)
    assert "task=rxr_ce has no built-in data" in message
    assert "data_dir=PATH (the RxR_VLNCE_v0 folder)" in message and "scenes_dir=PATH" in message
    assert "\n" not in message
