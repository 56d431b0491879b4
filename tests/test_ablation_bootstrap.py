"""The ablation's paired bootstrap: the same episodes and seeds, two stages, intervals that mean something."""

import math

import numpy as np
import pytest

from vlnkit.eval.ablation import paired_bootstrap, plan_rows, summarize, write_table


def test_constant_differences_give_a_zero_width_interval():
    mean, low, high = paired_bootstrap([[20.0] * 10, [20.0] * 7])
    assert (mean, low, high) == (20.0, 20.0, 20.0)


def test_one_seed_matches_the_normal_approximation_of_the_episode_mean():
    """One seed of 400 episodes, differences 0 or 100 with p = 0.3: the mean is 30 and the bootstrap
    interval approaches 30 +- 1.96 * sqrt(0.3 * 0.7 / 400) * 100 = 30 +- 4.49."""
    rng = np.random.default_rng(7)
    diffs = np.zeros(400)
    diffs[rng.permutation(400)[:120]] = 100.0
    mean, low, high = paired_bootstrap([diffs])
    assert mean == pytest.approx(30.0)
    assert low == pytest.approx(30.0 - 4.49, abs=0.6) and high == pytest.approx(30.0 + 4.49, abs=0.6)


def test_between_seed_variation_widens_the_interval():
    """Seeds whose mean differences are 0 and 40 (each with no spread inside): the seed stage alone makes
    the interval span nearly [0, 40], while the pooled episode bootstrap would collapse to 20."""
    mean, low, high = paired_bootstrap([[0.0] * 50, [40.0] * 50])
    assert mean == 20.0 and low == 0.0 and high == 40.0


def test_the_table_marks_differences_whose_interval_excludes_zero(tmp_path):
    rows = plan_rows({"grid": ["agent=modular memory=none,full,stm_only"]})
    episodes = [str(i) for i in range(40)]

    def record(memory, seed, values):
        row = next(r for r in rows if r.value("memory") == memory)
        return {"group": "grid", "overrides": list(row.overrides), "seed": seed,
                "metrics": {"task_completion": float(np.mean(values))},
                "per_episode": {"task_completion": dict(zip(episodes, map(float, values)))}}

    rng = np.random.default_rng(0)
    results = []
    for seed in (0, 1, 2):
        none = (rng.random(40) < 0.4).astype(float)
        better = np.maximum(none, (rng.random(40) < 0.5).astype(float))  # never worse, often better
        noisy = np.where(rng.random(40) < 0.5, none, 1.0 - none)  # flips half the outcomes either way
        results += [record("none", seed, none), record("full", seed, better), record("stm_only", seed, noisy)]
    table = {e["memory"]: e for e in summarize(results, rows, ["task_completion"])}
    assert table["full"]["delta_method"] == "bootstrap" and table["full"]["delta_excludes_zero"]
    assert table["full"]["delta_lo"] > 0
    assert table["stm_only"]["delta_lo"] < 0 < table["stm_only"]["delta_hi"]
    assert not table["stm_only"]["delta_excludes_zero"]
    md, _ = write_table(list(table.values()), ["task_completion"], tmp_path)
    text = md.read_text()
    full = next(line for line in text.splitlines() if "| full |" in line)
    stm = next(line for line in text.splitlines() if "| stm_only |" in line)
    assert full.split("|")[-3].strip().endswith("] *") and not stm.split("|")[-3].strip().endswith("*")
    assert not math.isnan(table["full"]["delta_mean"])
