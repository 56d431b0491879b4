"""Evaluation from Python (``vlnkit.evaluate``) and a user's own agent class from the command line
(``agent=my.module:MyAgent``)."""

import json

import pytest

import vlnkit
from vlnkit.cli import main

from test_eval_runner import release  # noqa: F401  (a 5x5 grid, routes 11, 12, 13 of 5, 4 and 4 nodes)

AGENT_MODULE = '''
class StopAfter:
    """Moves forward ``steps`` times, then stops."""

    uses_info = False

    def __init__(self, cfg, num_actions):
        self.steps = int(cfg.get("steps", 1))
        self.taken = 0

    def reset(self, observation, info, seed):
        self.taken = 0

    def act(self, observation, info=None):
        self.taken += 1
        return 1 if self.taken <= self.steps else 0
'''


class StopAtOnce:
    """An agent object that stops before moving."""

    uses_info = False

    def reset(self, observation, info, seed):
        pass

    def act(self, observation, info=None):
        return 0


def test_evaluate_by_name_returns_metrics_and_the_run_folder(release, tmp_path):
    result = vlnkit.evaluate("oracle", task="touchdown", data_dir=str(release), out=str(tmp_path / "run"),
                             progress=False, limit=2)
    assert result.run_dir == tmp_path / "run"
    assert result.metrics["task_completion"] == 1.0 and result.metrics["num_episodes"] == 2
    assert json.loads((result.run_dir / "metrics.json").read_text())["num_episodes"] == 2


def test_evaluate_an_agent_object(release, tmp_path):
    result = vlnkit.evaluate(StopAtOnce(), task="touchdown", data_dir=str(release), out=str(tmp_path / "run"),
                             progress=False, overrides=["task.max_steps=10"])
    # Each start is 4, 3 and 3 hops from its goal and the agent never moves: TC 0, SPD 10/3, no privilege.
    assert result.metrics["task_completion"] == 0.0
    assert result.metrics["shortest_path_distance"] == pytest.approx(10 / 3)
    assert result.metrics["config"]["agent"]["name"] == "test_python_api:StopAtOnce"
    assert result.metrics["privileged"] == []
    with pytest.raises(ValueError, match="runs in this process only"):
        vlnkit.evaluate(StopAtOnce(), task="touchdown", data_dir=str(release), out=str(tmp_path / "v"),
                        runner="vector")
    with pytest.raises(TypeError, match="reset\\(\\) and act\\(\\)"):
        vlnkit.evaluate(object(), task="touchdown")


def test_own_agent_class_from_the_command_line(release, tmp_path, monkeypatch, capsys):
    (tmp_path / "my_agents.py").write_text(AGENT_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    common = ["eval", "task=touchdown", f"data_dir={release}", "progress=false"]
    assert main([*common, "agent=my_agents:StopAfter", "+agent.steps=2", f"out={tmp_path / 'run'}"]) == 0
    records = [json.loads(line) for line in (tmp_path / "run" / "episodes.jsonl").read_text().splitlines()]
    # The agent's own decisions, recorded as it made them: two FORWARDs, then STOP.
    assert [r["actions"] for r in records] == [[1, 1, 0]] * 3
    assert "| my_agents:StopAfter on touchdown/dev |" in capsys.readouterr().out
    assert main([*common, "agent=my_agents:Missing", f"out={tmp_path / 'bad'}"]) == 2
    assert "cannot load 'Missing' from module 'my_agents'" in capsys.readouterr().err
    assert main([*common, "agent=no_such_module_xyz:Agent", f"out={tmp_path / 'bad2'}"]) == 2
    assert "No module named 'no_such_module_xyz'" in capsys.readouterr().err
