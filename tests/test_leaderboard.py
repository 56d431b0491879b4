"""Leaderboard outputs: provenance in metrics.json, ranked Markdown and CSV across runs."""

import csv
import json
import shutil
import subprocess

import numpy
import pytest

from vlnkit.eval.leaderboard import leaderboard
from vlnkit.eval.provenance import git_commit, package_versions

from test_eval_runner import release, run  # noqa: F401  (release is a fixture)


def fake_run(root, name, kind, dataset="d1", **means):
    """A run folder holding only a metrics.json."""
    folder = root / name
    folder.mkdir()
    metrics = {**means, "num_episodes": 10, "num_failed": 0, "seed": 0, "config_hash": f"c-{name}",
               "dataset_hash": dataset, "git_commit": None,
               "config": {"task": {"kind": kind, "name": kind}, "agent": {"name": name}, "split": "val"}}
    (folder / "metrics.json").write_text(json.dumps(metrics))
    return folder


def test_runs_are_ranked_per_kind_and_written_as_markdown_and_csv(tmp_path):
    runs = [
        fake_run(tmp_path, "weak", "street", task_completion=0.5, shortest_path_distance=3.0),
        fake_run(tmp_path, "tie_far", "street", task_completion=0.7, shortest_path_distance=2.0),
        fake_run(tmp_path, "tie_near", "street", task_completion=0.7, shortest_path_distance=1.0),
        fake_run(tmp_path, "sr_low_spl", "continuous", success=0.4, spl=0.30),
        fake_run(tmp_path, "sr_high_spl", "continuous", "d2", success=0.4, spl=0.35),
        fake_run(tmp_path, "sr_best", "continuous", success=0.6, spl=0.10),
    ]
    text = leaderboard(runs, out=tmp_path / "board")
    street, continuous = text.split("## street runs")[1], text.split("## continuous runs")[1].split("## street")[0]
    assert street.index("tie_near") < street.index("tie_far") < street.index("weak")
    assert continuous.index("sr_best") < continuous.index("sr_high_spl") < continuous.index("sr_low_spl")
    assert "| 1 | " + str(tmp_path / "tie_near") + " |" in street and "| 70.00 | 1.00 |" in street
    assert "different datasets (d1, d2)" in continuous and "different datasets" not in street
    assert (tmp_path / "board" / "leaderboard.md").read_text() == text
    rows = list(csv.DictReader((tmp_path / "board" / "leaderboard.csv").open()))
    assert [(r["kind"], r["rank"], r["agent"]) for r in rows] == [
        ("continuous", "1", "sr_best"), ("continuous", "2", "sr_high_spl"), ("continuous", "3", "sr_low_spl"),
        ("street", "1", "tie_near"), ("street", "2", "tie_far"), ("street", "3", "weak"),
    ]
    assert float(rows[3]["task_completion"]) == 0.7 and rows[0]["task_completion"] == ""


def test_real_runs_carry_provenance_and_rank(release, tmp_path):  # noqa: F811
    oracle = run(release, tmp_path / "oracle", "agent=oracle")
    run(release, tmp_path / "forward", "agent=forward", "agent.steps=0")
    assert oracle["versions"]["numpy"] == numpy.__version__
    assert set(oracle["versions"]) == {"vlnkit", "torch", "numpy", "gymnasium"}
    assert oracle["config_hash"] == json.loads((tmp_path / "oracle" / "run.json").read_text())["config_hash"]
    assert len(oracle["dataset_hash"]) == 16 and oracle["seed"] == 0
    assert oracle["git_commit"] is None or len(oracle["git_commit"]) == 40
    text = leaderboard([tmp_path / "forward", tmp_path / "oracle"])
    assert text.index("| 1 | " + str(tmp_path / "oracle")) < text.index("| 2 | " + str(tmp_path / "forward"))


def test_git_commit_inside_and_outside_a_checkout(tmp_path):
    assert git_commit(tmp_path) is None
    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    git = ["git", "-C", str(tmp_path), "-c", "user.name=t", "-c", "user.email=t@example.invalid"]
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "commit", "-q", "--allow-empty", "-m", "first"], check=True)
    head = subprocess.run([*git, "rev-parse", "HEAD"], check=True, capture_output=True, text=True).stdout.strip()
    assert git_commit(tmp_path) == head


def test_package_versions_and_missing_run(tmp_path):
    assert package_versions(["numpy", "no-such-package-vlnkit"]) == {"numpy": numpy.__version__,
                                                                     "no-such-package-vlnkit": None}
    with pytest.raises(FileNotFoundError, match="no metrics.json"):
        leaderboard([tmp_path])
