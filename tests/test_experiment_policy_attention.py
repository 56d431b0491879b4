"""The policy_attention and attention_analysis experiments end to end on a tiny trained policy: every condition,
per-head masking and both pruning orders evaluated on the same episodes, tables and plots written, a finished
run resumed; per-head segment shares, entropy and VHD."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from vlnkit.agents.policy.train import train_policy
from vlnkit.config import load_config
from vlnkit.eval.experiments.runner import run_experiment


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny two-layer policy trained for one epoch on three episodes."""
    path = tmp_path_factory.mktemp("policy") / "policy.pt"
    train_policy(load_config("train_policy", [
        f"out={path}", "episodes=3", "train.epochs=1", "train.batch_size=2", "train.warmup_epochs=0",
        "model.d_model=16", "model.heads=2", "model.layers=2", "model.queries=2", "memory_variant=none",
        "progress=false", "train.threads=1", "cities=[0]", "dagger.rounds=1", "dagger.eval_episodes=1",
        "dagger.eval_memory=[none]"]))
    return path


def test_tiny_policy_attention_run(tmp_path: Path, checkpoint: Path) -> None:
    args = [f"out={tmp_path / 'run'}", f"checkpoint={checkpoint}", "episodes=3", "importance_episodes=2",
            "calibration_episodes=1", "prune_fractions=[0.5,1.0]", "progress=false"]
    run_dir = run_experiment("policy_attention", args)
    results = json.loads((run_dir / "results.json").read_text())["results"]
    conditions = results["conditions"]
    assert sorted(conditions) == ["carve", "off", "paint", "var", "vhr"]
    assert all(c["episodes"] == 3 for c in conditions.values())
    assert conditions["off"]["tc_delta"] == 0.0 and conditions["off"]["tc_low"] == 0.0
    assert len(results["importance"]) == 1 and sorted(results["importance"][0]) == ["L0H0", "L0H1", "L1H0", "L1H1"]
    assert sorted(results["pruning"]) == ["importance", "random"]
    for curve in results["pruning"].values():
        assert sorted(curve) == ["0", "0.5", "1"] and curve["0"] == conditions["off"]["tc"]
    # Both orders remove every head at fraction 1: the same runs, the same TC.
    assert results["pruning"]["importance"]["1"] == results["pruning"]["random"]["1"]
    recorded = json.loads((run_dir / "runs" / "p0" / "off" / "run.json").read_text())["config"]["agent"]
    assert recorded["memory"] == "none"                  # each run folder names the memory the agent used
    folders = sorted(p.name for p in (run_dir / "runs" / "p0").iterdir())
    assert "mask_L1H1" in folders and "prune_random_0.5" in folders and "calibration" in folders
    assert (run_dir / "pruning.png").is_file() and "Head importance" in (run_dir / "results.md").read_text()
    stamp = (run_dir / "runs" / "p0" / "off" / "episodes.jsonl").stat().st_mtime_ns
    assert run_experiment("policy_attention", args) == run_dir
    assert (run_dir / "runs" / "p0" / "off" / "episodes.jsonl").stat().st_mtime_ns == stamp
    # Two policies (the same checkpoint twice): per-policy levels, pooled means, the same differences.
    two = json.loads((run_experiment("policy_attention", [*args[2:], f"out={tmp_path / 'two'}",
                                                           f"checkpoint=[{checkpoint},{checkpoint}]"])
                      / "results.json").read_text())["results"]["conditions"]
    assert two["vhr"]["tc_per_policy"] == [conditions["vhr"]["tc"]] * 2
    assert two["vhr"]["tc_delta"] == conditions["vhr"]["tc_delta"] and two["vhr"]["episodes"] == 6


def test_analyze_attention_summarises_every_head(tmp_path: Path, checkpoint: Path) -> None:
    from vlnkit.cli import main

    out = tmp_path / "analysis"
    assert main(["analyze", "attention", f"out={out}", f"checkpoint={checkpoint}", "episodes=2", "progress=false"]) == 0
    results = json.loads((out / "results.json").read_text())["results"]
    assert sorted(results["shares"]) == ["blocks.0.cross_attn", "blocks.1.cross_attn"]
    for site, shares in results["shares"].items():
        assert np.allclose(np.sum(shares, axis=1), 1.0, atol=1e-5)       # every decision row sums to 1
        assert all(0.0 <= e <= np.log(60) for e in results["entropy"][site])
        assert len(results["vhd"][site]) == 2 and results["episodes_with_vhd"] == 2
    assert (out / "segments.png").is_file()
