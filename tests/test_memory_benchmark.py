"""The memory benchmark runs at toy sizes and reports every key the CLI prints."""

import numpy as np
import pytest

from vlnkit.memory import LTMConfig, Mem4NavConfig
from vlnkit.benchmarks.memory import run, street_walk


def test_benchmark_reports_all_keys_at_small_sizes():
    pytest.importorskip("open3d")
    config = Mem4NavConfig(dim=32, ltm=LTMConfig(depth=1))
    result = run(
        sizes=(1_000,), timed_steps=30, dim=32, octree_points=5_000, octree_queries=500, config=config
    )
    timed = [f"{prefix}{stat}_ms_1k" for prefix in ("", "default_policy_") for stat in ("median", "p99", "mean")]
    keys = timed + ["ltm_recall_at_3_1k", "bytes_per_obs", "octree_inserts_per_s", "octree_queries_per_s",
                    "octree_batch_queries_per_s", "open3d_inserts_per_s", "open3d_queries_per_s",
                    "ltm_search_ms_1k", "bruteforce_search_ms_1k", "ltm_search_ms_1k_vs_bruteforce",
                    "median_ms_1k_vs_bruteforce", "octree_inserts_per_s_vs_open3d", "octree_queries_per_s_vs_open3d"]
    for key in keys:
        assert result[key] > 0, key
    assert 0.0 <= result["default_policy_stm_hit_rate_1k"] <= 1.0
    assert result["ltm_recall_at_3_1k"] <= 1.0
    assert result["stored_observations"] == 1_060
    assert "bruteforce" in result["baseline"] and "open3d" in result["baseline"]


def test_street_walk_moves_one_step_at_a_time_on_the_grid():
    positions = street_walk(500, seed=3, step=2.0, block=20.0)
    steps = np.linalg.norm(np.diff(positions, axis=0), axis=1)
    assert np.allclose(steps, 2.0) and np.allclose(positions[:, 2], 0.0)
    assert np.allclose(np.round(positions[:, :2] / 2.0) * 2.0, positions[:, :2])


def test_cli_prints_one_json_line_on_stdout_and_progress_on_stderr(capfd):
    import json

    from vlnkit.cli import main

    # the octree comparison at its default million points takes seconds; a tiny one keeps this test fast
    assert main(["bench", "memory", "--sizes", "300,600", "--timed-steps", "20", "--dim", "16",
                 "--octree-points", "2000", "--octree-queries", "100", "--no-open3d"]) == 0
    out, err = capfd.readouterr()
    lines = out.splitlines()
    assert len(lines) == 1 and out.endswith("\n")
    result = json.loads(lines[0])
    assert list(result)[:2] == ["name", "baseline"] and result["name"] == "memory"
    assert "open3d" not in result["baseline"] and "open3d_inserts_per_s" not in result
    assert result["stored_observations"] == 640   # 600 written, then 2 x 20 timed steps
    progress = err.splitlines()
    for name in ("300", "600"):
        assert sum(line.startswith(f"bench memory: {name}: ") for line in progress) == 2, err
    assert sum(line.startswith("bench memory: octree: ") for line in progress) == 2, err
