"""`vlnkit eval` on continuous tasks through the runner: metrics, submissions, maps, baselines, resume."""

import json

import pytest

import vlnkit.agents.continuous_baselines  # noqa: F401  (registers forward_blocked until the package imports it)
from vlnkit.config import load_config
from vlnkit.eval.continuous import ContinuousTask, continuous_metrics_table
from vlnkit.eval.runner import evaluate
from vlnkit.eval.tasks import get_task

KEYS = {"success", "spl", "navigation_error", "oracle_success", "ndtw", "sdtw", "path_length", "steps", "collisions",
        "num_episodes"}


def run(houses, out, *overrides):
    cfg = load_config("eval", ["task=synth_houses", f"data_dir={houses}", "split=val_unseen", f"out={out}",
                               "progress=false", *overrides])
    return evaluate(cfg)


def test_task_is_registered():
    assert isinstance(get_task("continuous"), ContinuousTask)


def test_oracle_eval_writes_the_results_layout(houses, tmp_path):
    out = tmp_path / "oracle"
    metrics = run(houses, out, "agent=oracle", "num_plots=2")
    assert KEYS <= set(metrics) and metrics["num_episodes"] == 3
    assert metrics["success"] >= 0.95 and metrics["spl"] > 0.9 and metrics["navigation_error"] < 0.5
    assert metrics["ndtw"] > 0.9 and metrics["collisions"] == 0.0
    assert json.loads((out / "metrics.json").read_text())["success"] == metrics["success"]
    records = [json.loads(line) for line in (out / "episodes.jsonl").read_text().splitlines()]
    assert [r["episode_id"] for r in records] == ["1", "2", "3"] and all(r["stopped"] for r in records)
    submission = json.loads((out / "submission.json").read_text())
    steps = submission["1"]
    assert set(steps[0]) == {"position", "heading", "stop"} and steps[-1]["stop"] and not steps[0]["stop"]
    assert len(steps) == len(records[0]["actions"]) + 1
    assert sorted(p.name for p in (out / "maps").iterdir()) == ["1.png", "2.png"]
    report = (out / "report.md").read_text()
    assert "| run | TL | NE | OSR | SR | SPL | nDTW | sDTW |" in report and "maps/1.png" in report
    again = run(houses, out, "agent=oracle", "num_plots=2")  # resumes: nothing left to run
    assert again["success"] == metrics["success"]


def test_baselines_and_rxr_submission(houses, tmp_path):
    rows = {
        "random": run(houses, tmp_path / "random", "agent=random"),
        "forward_blocked": run(houses, tmp_path / "blocked", "agent=forward", "agent.name=forward_blocked"),
    }
    assert rows["random"]["success"] <= 0.5
    blocked = [json.loads(line) for line in (tmp_path / "blocked" / "episodes.jsonl").read_text().splitlines()]
    assert all(r["actions"][-1] == 0 for r in blocked)  # stops once blocked
    assert all(r["metrics"]["collisions"] == 1.0 or len(r["actions"]) == 500 for r in blocked)
    table = continuous_metrics_table(rows)
    assert "forward_blocked" in table and "| run | TL | NE | OSR | SR | SPL |" in table
    run(houses, tmp_path / "rxr", "agent=oracle", "task.dataset=rxr", "num_plots=0")
    lines = [json.loads(line) for line in (tmp_path / "rxr" / "submission.jsonl").read_text().splitlines()]
    assert len(lines) == 3 and set(lines[0]) == {"instruction_id", "path"} and len(lines[0]["path"][0]) == 3


def test_test_split_has_no_success_metrics(houses, tmp_path):
    metrics = run(houses, tmp_path / "test", "agent=random", "split=test", "num_plots=1")
    assert metrics["num_episodes"] == 1
    assert metrics["success"] != metrics["success"]  # nan: no goals in test splits
    assert metrics["path_length"] >= 0.0


@pytest.mark.slow
def test_oracle_on_the_default_synthetic_houses(tmp_path, monkeypatch):
    monkeypatch.setenv("VLNKIT_CACHE", str(tmp_path / "cache"))
    for split in ("val_unseen", "val_seen"):
        cfg = load_config("eval", ["task=synth_houses", f"split={split}", "agent=oracle", f"out={tmp_path / split}",
                                   "progress=false", "num_plots=0"])
        metrics = evaluate(cfg)
        assert metrics["num_episodes"] >= 18 and metrics["success"] >= 0.95
