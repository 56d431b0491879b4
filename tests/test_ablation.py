"""The memory ablation study: confidence intervals, Hydra-style sweep expansion, the table and plot, and a
tiny study end to end (resumable)."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pytest

from vlnkit.agents import modular as _registers  # noqa: F401  (registers "modular")
from vlnkit.config import load_config
from vlnkit.eval.ablation import (
    Row,
    expand,
    mean_ci,
    plan_rows,
    plot_ablation,
    run_ablation,
    summarize,
    summarize_by_kind,
    write_kind_table,
    write_table,
)


def test_mean_ci_on_hand_made_numbers() -> None:
    mean, half = mean_ci([1.0, 2.0, 3.0])
    # sd 1, sem 1/sqrt(3), t(0.975, 2 df) = 4.302653
    assert mean == pytest.approx(2.0)
    assert half == pytest.approx(4.302653 / math.sqrt(3), rel=1e-5)
    assert mean_ci([0.6, 0.6, 0.6]) == (pytest.approx(0.6), 0.0)
    single = mean_ci([0.5])
    assert single[0] == 0.5 and math.isnan(single[1])
    assert mean_ci([10.0, 20.0], confidence=0.9)[1] == pytest.approx(6.313752 * 5.0, rel=1e-5)


def test_expand_follows_hydra_multirun() -> None:
    combos = expand("agent=modular,policy memory=none,full seed=0")
    assert [c for c, _ in combos] == [
        ["agent=modular", "memory=none", "seed=0"], ["agent=modular", "memory=full", "seed=0"],
        ["agent=policy", "memory=none", "seed=0"], ["agent=policy", "memory=full", "seed=0"],
    ]
    assert combos[1][1] == {"agent": "modular", "memory": "full"}
    assert [v for _, v in expand("++agent.memory_overrides.tau=range(1,3)")] == [
        {"agent.memory_overrides.tau": "1"}, {"agent.memory_overrides.tau": "2"},
    ]


def test_plan_rows_labels_sweeps() -> None:
    rows = plan_rows({"grid": ["agent=modular memory=none,full"],
                      "sweeps": {"K": "agent=modular memory=stm_only ++agent.memory_overrides.stm.capacity=8,16"}})
    assert [r.group for r in rows] == ["grid", "grid", "K", "K"]
    assert (rows[2].swept_key, rows[2].swept_value) == ("agent.memory_overrides.stm.capacity", "8")
    assert rows[3].value("memory") == "stm_only" and rows[0].value("agent") == "modular"
    assert rows[2].slug == "agent-modular_memory-stm_only_agent.memory_overrides.stm.capacity-8"


def _results(rows: list[Row]) -> list[dict]:
    values = {
        rows[0]: [(0.40, 7.0), (0.50, 6.0), (0.45, 6.5)],
        rows[1]: [(0.60, 5.0), (0.70, 4.0), (0.65, 4.5)],
    }
    return [
        {"group": row.group, "overrides": list(row.overrides), "seed": seed,
         "metrics": {"task_completion": tc, "shortest_path_distance": spd, "ndtw": tc, "sed": tc / 2}}
        for row, runs in values.items() for seed, (tc, spd) in enumerate(runs)
    ]


def test_table_and_plot_from_hand_made_results(tmp_path: Path) -> None:
    rows = plan_rows({"grid": ["agent=modular memory=none,full"]})
    metrics = ["task_completion", "shortest_path_distance", "ndtw", "sed"]
    table = summarize(_results(rows), rows, metrics)
    none, full = table
    assert none["seeds"] == 3 and none["memory"] == "none"
    assert none["task_completion_mean"] == pytest.approx(45.0)
    assert none["task_completion_ci"] == pytest.approx(4.302653 * 5.0 / math.sqrt(3), rel=1e-5)
    assert full["shortest_path_distance_mean"] == pytest.approx(4.5)
    md, csv_path = write_table(table, metrics, tmp_path, title="demo")
    text = md.read_text()
    assert "| TC | SPD | nDTW | SED | ΔTC vs none |" in text
    # Seed by seed full beats none by 20 points exactly: the paired interval is 0 although the rows' own are wide.
    assert "| grid | modular | full | - | 3 | 65.0 ± 12.4 | 4.5 ± 1.2 | 65.0 ± 12.4 | 32.5 ± 6.2 | 20.0 ± 0.0 * |" in text
    assert "| grid | modular | none | - | 3 | 45.0 ± 12.4 |" in text and text.count("| - | ? |\n") == 1
    with csv_path.open() as f:
        records = list(csv.DictReader(f))
    assert float(records[0]["task_completion_mean"]) == pytest.approx(45.0)
    assert plot_ablation(table, tmp_path / "ablation.png").stat().st_size > 1000


def test_by_kind_table_from_hand_made_episodes(tmp_path: Path) -> None:
    rows = plan_rows({"grid": ["agent=modular memory=none,full"]})
    kinds = {"e1": "plain", "e2": "plain", "e3": "loop", "e4": "loop"}
    tc = {  # per row, per seed: TC of e1..e4
        rows[0]: [(1, 1, 0, 0), (1, 0, 0, 0)],
        rows[1]: [(1, 1, 1, 0), (1, 0, 1, 1)],
    }
    results = [
        {"group": row.group, "overrides": list(row.overrides), "seed": seed, "memory_kinds": kinds,
         "per_episode": {"task_completion": dict(zip(kinds, map(float, values)))}}
        for row, runs in tc.items() for seed, values in enumerate(runs)
    ]
    table = {(e["memory"], e["kind"]): e for e in summarize_by_kind(results, rows, "task_completion")}
    assert [k for m, k in table if m == "none"] == ["plain", "loop"]   # the kinds in MEMORY_KINDS order
    none_loop, full_loop, full_plain = table["none", "loop"], table["full", "loop"], table["full", "plain"]
    assert none_loop["task_completion_mean"] == 0.0 and none_loop["episodes"] == 4 and math.isnan(none_loop["delta_mean"])
    # full on loops: seeds 50 and 100 %, t(0.975, 1 df) = 12.706205 times the sem 25
    assert full_loop["task_completion_mean"] == pytest.approx(75.0)
    assert full_loop["task_completion_ci"] == pytest.approx(12.706205 * 25.0, rel=1e-5)
    # paired: seed 0 differs by (1, 0), seed 1 by (1, 1): the mean of the seed means is 75 points
    assert full_loop["delta_mean"] == pytest.approx(75.0) and full_loop["delta_lo"] <= 75.0 <= full_loop["delta_hi"]
    # on plain episodes full and none agree episode by episode: the paired difference is exactly 0
    assert full_plain["task_completion_mean"] == pytest.approx(75.0)
    assert (full_plain["delta_mean"], full_plain["delta_lo"], full_plain["delta_hi"]) == (0.0, 0.0, 0.0)
    assert not full_plain["delta_excludes_zero"]
    against_full = {(e["memory"], e["kind"]): e for e in summarize_by_kind(results, rows, "task_completion",
                                                                             reference="full")}
    assert against_full["none", "loop"]["delta_mean"] == pytest.approx(-75.0)
    assert math.isnan(against_full["full", "loop"]["delta_mean"])
    md, _ = write_kind_table(list(table.values()), "task_completion", tmp_path)
    # the seeds' interval (75 ± 317.7) is clipped to TC's range, as in ablation.md
    assert "| grid | modular | full | - | 75.0 [0.0, 100.0] (4) [+0.0: +0.0, +0.0] | 75.0 [0.0, 100.0] (4) [+75.0:" \
        in md.read_text()


def test_tiny_study_runs_and_resumes(tmp_path: Path) -> None:
    overrides = [
        f"ablation.out={tmp_path}", "ablation.seeds=[0,1]", "ablation.seed_keys=[seed,agent.memory_seed]",
        "ablation.grid=['agent=modular memory=none,stm_only']", "ablation.sweeps=null", "ablation.progress=false",
        "split=memory", "limit=4",
    ]
    cfg = load_config("ablate", overrides)
    out = run_ablation(cfg, overrides)
    lines = (out / "results.jsonl").read_text().splitlines()
    assert len(lines) == 4
    assert {json.loads(line)["num_episodes"] for line in lines} == {4}
    # the memory split interleaves its kinds: the first four episodes are one of each
    assert sorted(json.loads(lines[0])["memory_kinds"].values()) == ["count", "loop", "plain", "return"]
    run = out / "runs" / "agent-modular_memory-stm_only" / "seed1"
    episodes = [json.loads(line) for line in (run / "episodes.jsonl").read_text().splitlines()]
    per_kind = json.loads((run / "metrics.json").read_text())["by_memory_kind"]
    assert {k: v["num_episodes"] for k, v in per_kind.items()} == {"count": 1, "loop": 1, "plain": 1, "return": 1}
    assert all(per_kind[e["memory_kind"]]["task_completion"] == e["metrics"]["task_completion"] for e in episodes)
    by_kind = (out / "ablation_by_kind.md").read_text()
    assert "| plain (n) | count (n) | return (n) | loop (n) |" in by_kind
    assert (out / "ablation.md").is_file() and (out / "ablation.csv").is_file() and (out / "ablation.png").is_file()
    assert (out / "runs" / "agent-modular_memory-stm_only" / "seed1" / "metrics.json").is_file()
    stats = [json.loads(line)["agent_stats"] for line in lines]   # which memory part answered, per run
    assert all("mem_questions" in s and "mem_answers_fallback" in s for s in stats)
    run_ablation(cfg, overrides)
    assert len((out / "results.jsonl").read_text().splitlines()) == 4
