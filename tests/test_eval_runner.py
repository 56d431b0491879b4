"""The evaluation run: oracle scores, results layout, resume without duplicates, config refusal."""

import json

import pytest

from vlnkit.config import load_config
from vlnkit.envs.datasets import StreetEpisode, write_episodes, write_graph
from vlnkit.eval.runner import evaluate, read_finished

from test_street_env import grid_graph


@pytest.fixture
def release(tmp_path):
    """A tiny release folder: a 5x5 grid and three Touchdown routes."""
    root = tmp_path / "release"
    write_graph(grid_graph(), root)
    eps = [
        StreetEpisode("11", "touchdown", "north then east", ("n0_0", "n1_0", "n2_0", "n2_1", "n2_2"), 0.0, 90.0),
        StreetEpisode("12", "touchdown", "east along the bottom", ("n0_0", "n0_1", "n0_2", "n0_3"), 0.0, 90.0),
        StreetEpisode("13", "touchdown", "west and south", ("n4_4", "n4_3", "n3_3", "n2_3"), 0.0, 180.0),
    ]
    write_episodes(eps, root / "data" / "dev.json")
    return root


def run(release, out, *extra):
    cfg = load_config("eval", ["task=touchdown", f"data_dir={release}", f"out={out}", "progress=false", *extra])
    return evaluate(cfg)


def test_oracle_is_perfect_and_results_layout_is_complete(release, tmp_path):
    out = tmp_path / "run"
    metrics = run(release, out, "agent=oracle")
    assert metrics["task_completion"] == 1.0 and metrics["shortest_path_distance"] == 0.0
    assert metrics["num_episodes"] == 3 and metrics["seed"] == 0
    assert metrics["config"]["agent"]["name"] == "oracle"
    lines = (out / "episodes.jsonl").read_text().splitlines()
    assert [json.loads(line)["episode_id"] for line in lines] == ["11", "12", "13"]
    first = json.loads(lines[0])
    assert first["route_panoids"] == ["n0_0", "n1_0", "n2_0", "n2_1", "n2_2"]
    submission = [json.loads(line) for line in (out / "submission.jsonl").read_text().splitlines()]
    assert submission[1] == {"route_id": 12, "route_panoids": ["n0_0", "n0_1", "n0_2", "n0_3"]}
    assert "| oracle on touchdown/dev |" in (out / "report.md").read_text()
    assert (out / "trajectories.png").stat().st_size > 1000
    on_disk = json.loads((out / "metrics.json").read_text())
    assert on_disk["task_completion"] == 1.0


def test_stop_at_start_scores_hand_computed_metrics(release, tmp_path):
    metrics = run(release, tmp_path / "run", "agent=forward", "agent.steps=0")
    # Every route's start is >= 3 hops from its goal, so nothing is completed; SPD is the mean of
    # the undirected hop distances start->goal: (4 + 3 + 3) / 3.
    assert metrics["task_completion"] == 0.0
    assert metrics["shortest_path_distance"] == pytest.approx(10 / 3)
    assert metrics["steps"] == 1.0 and metrics["path_length"] == 0.0


def test_resume_skips_finished_and_repairs_a_torn_line(release, tmp_path):
    out = tmp_path / "run"
    run(release, out, "agent=random", "limit=2")
    log = out / "episodes.jsonl"
    before = log.read_text().splitlines()
    with log.open("a") as f:
        f.write('{"episode_id": "13", "route_pa')  # a crash in the middle of writing episode 13
    run(release, out, "agent=random", "limit=2")  # same config: resumes, nothing to redo
    assert log.read_text().splitlines() == before
    assert set(read_finished(log)) == {"11", "12"}


def test_same_seed_same_metrics_and_other_config_is_refused(release, tmp_path):
    a = run(release, tmp_path / "a", "agent=random", "seed=3")
    b = run(release, tmp_path / "b", "agent=random", "seed=3")
    assert {k: a[k] for k in a if k != "config"} == {k: b[k] for k in b if k != "config"}
    with pytest.raises(ValueError, match="different config"):
        run(release, tmp_path / "a", "agent=random", "seed=4")


@pytest.mark.parametrize("semantics", ["touchdown", "velma"])
def test_oracle_on_real_touchdown_sample(touchdown_sample, tmp_path, semantics):
    metrics = run(touchdown_sample, tmp_path / "run", "agent=oracle", f"task.semantics={semantics}")
    assert metrics["num_episodes"] == 40
    assert metrics["task_completion"] == 1.0 and metrics["shortest_path_distance"] == 0.0


def test_agent_episode_stats_are_recorded_per_episode(release, tmp_path):
    from vlnkit.agents import register
    from vlnkit.agents.baselines import ForwardAgent

    class CountingAgent(ForwardAgent):
        """Forward-only, reporting how many actions it chose in the episode."""

        def episode_stats(self):
            return {"chosen": self.taken}

    register("counting_forward_test")(lambda cfg, n: CountingAgent(steps=2))
    out = tmp_path / "run"
    cfg = load_config("eval", ["task=touchdown", f"data_dir={release}", f"out={out}", "progress=false",
                               "agent=forward", "agent.name=counting_forward_test"])
    evaluate(cfg)
    records = [json.loads(line) for line in (out / "episodes.jsonl").read_text().splitlines()]
    assert [r["agent_stats"] for r in records] == [{"chosen": 2}] * 3
