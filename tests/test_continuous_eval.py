"""`vlnkit eval` on continuous tasks through the runner: metrics, submissions, maps, baselines, resume."""

import json
import shutil

import pytest

import vlnkit.agents.continuous_baselines  # noqa: F401  (registers forward_blocked until the package imports it)
from vlnkit.config import load_config
from vlnkit.eval.continuous import ContinuousTask, continuous_metrics_table
from vlnkit.eval.runner import evaluate
from vlnkit.eval.tasks import get_task

KEYS = {"success", "spl", "navigation_error", "oracle_success", "ndtw", "sdtw", "path_length", "steps", "collisions",
        "num_episodes"}


UNITS = {"path_length": "TL (m)", "navigation_error": "NE (m)", "oracle_success": "OSR (%)", "success": "SR (%)",
         "spl": "SPL (%)", "ndtw": "nDTW (%)", "sdtw": "sDTW (%)"}


def table_row(markdown):
    """The first row of the Markdown table in ``markdown``, by column header."""
    rows = [line for line in markdown.splitlines() if line.startswith("|")]
    header, first = ([cell.strip() for cell in line.strip("|").split("|")] for line in (rows[0], rows[2]))
    return dict(zip(header, first))


def test_table_states_units_and_shows_rates_in_percent():
    metrics = {"path_length": 7.0, "navigation_error": 2.5, "oracle_success": 0.5, "success": 0.25, "spl": 0.2,
               "ndtw": 0.75, "sdtw": 0.125, "steps": 12.0, "collisions": 1.0, "num_episodes": 4}
    shown = table_row(continuous_metrics_table({"run a": metrics}))
    assert shown["run"] == "run a"
    assert {label: shown[label] for label in UNITS.values()} == {
        "TL (m)": "7.00", "NE (m)": "2.50", "OSR (%)": "50.00", "SR (%)": "25.00", "SPL (%)": "20.00",
        "nDTW (%)": "75.00", "sDTW (%)": "12.50"}
    assert shown["steps"] == "12.00" and shown["collisions"] == "1.00"


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
    # The geodesic hugs corners at exactly the agent's radius, so the follower, turning in 15-degree
    # steps, may graze one now and then (as VLN-CE's does); it must not bump along walls.
    assert metrics["ndtw"] > 0.9 and metrics["collisions"] <= 0.5
    assert json.loads((out / "metrics.json").read_text())["success"] == metrics["success"]
    records = [json.loads(line) for line in (out / "episodes.jsonl").read_text().splitlines()]
    assert [r["episode_id"] for r in records] == ["1", "2", "3"] and all(r["stopped"] for r in records)
    submission = json.loads((out / "submission.json").read_text())
    steps = submission["1"]
    assert set(steps[0]) == {"position", "heading", "stop"} and steps[-1]["stop"] and not steps[0]["stop"]
    assert len(steps) == len(records[0]["actions"]) + 1
    assert sorted(p.name for p in (out / "maps").iterdir()) == ["1.png", "2.png"]
    report = (out / "report.md").read_text()
    assert "| run | TL (m) | NE (m) | OSR (%) | SR (%) | SPL (%) | nDTW (%) | sDTW (%) |" in report
    assert "maps/1.png" in report and "OSR, SR, SPL, nDTW and sDTW in %" in report
    assert "sparse reference_path" not in report  # scored against the ground truth
    # The report's numbers are metrics.json's in the header's unit: metres as they are, rates times 100.
    saved = json.loads((out / "metrics.json").read_text())
    shown = table_row(report)
    for key, label in UNITS.items():
        scale = 100.0 if label.endswith("(%)") else 1.0
        assert float(shown[label]) == pytest.approx(saved[key] * scale, abs=0.005), label
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
    assert "forward_blocked" in table and "| run | TL (m) | NE (m) | OSR (%) | SR (%) | SPL (%) |" in table
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


def test_sparse_reference_asked_for_runs_and_says_so(houses, tmp_path):
    # A release without val_unseen_gt.json.gz: refused by default (tests/test_continuous_env.py), scored
    # against the sparse reference_path when asked, and the run records that it was.
    root = tmp_path / "release"
    (root / "val_unseen").mkdir(parents=True)
    shutil.copy(houses / "val_unseen" / "val_unseen.json.gz", root / "val_unseen" / "val_unseen.json.gz")
    out = tmp_path / "sparse"
    metrics = run(root, out, "agent=oracle", f"scenes_dir={houses / 'scenes'}", "task.ndtw_reference=sparse",
                  "limit=1", "num_plots=0")
    assert metrics["num_episodes"] == 1 and metrics["config"]["task"]["ndtw_reference"] == "sparse"
    assert json.loads((out / "metrics.json").read_text())["config"]["task"]["ndtw_reference"] == "sparse"
    assert "sparse reference_path (task.ndtw_reference=sparse)" in (out / "report.md").read_text()
    assert 0.0 <= metrics["ndtw"] <= 1.0
