"""`vlnkit bench`: one registry, one JSON line per benchmark, each naming its same-run baseline."""

import importlib
import json
import sys
import types

import pytest
import torch

from vlnkit import benchmarks
from vlnkit.benchmarks import BENCHMARKS, parse_options, run_benchmark
from vlnkit.cli import main


def _figures(result: dict, keys: list[str]) -> None:
    assert list(result)[:2] == ["name", "baseline"] and isinstance(result["baseline"], str) and result["baseline"]
    json.dumps(result)  # JSON-serialisable
    for key in keys:
        assert result[key] > 0, key


def test_list_shows_every_registered_benchmark(capsys):
    assert main(["bench", "--list"]) == 0
    listed = [line.split()[0] for line in capsys.readouterr().out.splitlines()]
    assert listed == list(BENCHMARKS)


@pytest.mark.parametrize("name", list(BENCHMARKS))
def test_every_module_imports_and_parses_its_default_options(name):
    module = importlib.import_module(BENCHMARKS[name][0])
    assert callable(module.run) and module.__doc__
    options = parse_options(name, [])
    assert set(options) | set(getattr(module, "QUICK", {})) <= set(module.run.__code__.co_varnames)


def test_street_on_a_small_city():
    from vlnkit.envs.synth import default_city

    result = run_benchmark("street", data_dir=default_city(0, "small"), seconds=0.05, batch=64)
    _figures(result, ["graph_load_s", "env_steps_per_s", "env_steps_per_s_guided", "batched_steps_per_s",
                      "navigator_steps_per_s", "env_steps_per_s_vs_navigator", "batched_steps_per_s_vs_navigator"])
    assert result["name"] == "street" and "navigator" in result["baseline"]


def test_memory_at_tiny_sizes():
    result = run_benchmark("memory", sizes=(200,), timed_steps=10, dim=16, octree_points=1_000,
                           octree_queries=50, include_open3d=False, progress=False)
    _figures(result, ["median_ms_200", "bruteforce_search_ms_200", "ltm_search_ms_200_vs_bruteforce",
                      "median_ms_200_vs_bruteforce", "octree_inserts_per_s"])
    assert "bruteforce" in result["baseline"]


def test_agent_memory_on_two_episodes():
    result = run_benchmark("agent_memory", episodes=2, variants="full", repeats=1)
    _figures(result, ["ms_per_episode_none", "ms_per_episode_full", "ms_per_step_full", "ms_per_episode_full_vs_none"])
    assert result["episodes"] == 2 and 0.0 <= result["task_completion_full"] <= 100.0
    assert "memory=none" in result["baseline"]


def test_runner_with_two_episodes():
    result = run_benchmark("runner", num_episodes=2, work_ms=1.0)
    _figures(result, ["episodes_per_s_inprocess", "episodes_per_s_ray_1", "episodes_per_s_ray_2",
                      "episodes_per_s_ray_1_vs_inprocess", "episodes_per_s_ray_2_vs_inprocess"])
    assert "in-process" in result["baseline"]


def test_policy_attention_times_each_mixer_and_the_hook_against_softmax():
    result = run_benchmark("policy_attention", mixers=["mlp"], batch=2, history=3, repeats=2)
    _figures(result, ["softmax_ms_per_decision", "mlp_ms_per_decision", "mlp_train_ms_per_decision",
                      "mlp_ms_vs_softmax", "detached_ms_per_decision", "capture_ms_per_decision",
                      "detached_ms_vs_softmax", "capture_ms_vs_softmax"])
    assert result["softmax_ms_vs_softmax"] == 1.0 and "softmax" in result["baseline"]
    assert result["mlp_parameters"] == result["softmax_parameters"]   # the swap keeps the parameter count


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only answer")
def test_attention_is_skipped_without_a_gpu(capsys):
    assert main(["bench", "attention", "--ns", "1024"]) == 0
    line = json.loads(capsys.readouterr().out)
    assert line["name"] == "attention" and line["skipped"] == "needs a CUDA GPU" and "sdpa" in line["baseline"]


def test_unknown_name_exits_2_listing_the_valid_names(capsys):
    assert main(["bench", "nope"]) == 2
    err = capsys.readouterr().err
    assert "nope" in err and all(name in err for name in [*BENCHMARKS, "all"])


def test_all_runs_every_benchmark_quick_and_exits_1_after_a_failure(monkeypatch, capsys):
    def fake(name: str, **run) -> str:
        module = types.ModuleType(name)
        module.__dict__.update(run)
        monkeypatch.setitem(sys.modules, name, module)
        return name

    def broken() -> dict:
        raise RuntimeError("no data")

    fast = fake("fake_fast", run=lambda seconds=9.0: {"baseline": "none: absolute figures", "seconds": seconds},
                QUICK={"seconds": 0.5})
    monkeypatch.setattr(benchmarks, "BENCHMARKS", {"fast": (fast, "ok"), "broken": (fake("fake_broken", run=broken), "")})
    assert main(["bench", "all"]) == 1
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert lines == [{"name": "fast", "baseline": "none: absolute figures", "seconds": 0.5},
                     {"name": "broken", "error": "RuntimeError: no data"}]
    monkeypatch.setitem(benchmarks.BENCHMARKS, "broken", (fast, ""))
    assert main(["bench", "all"]) == 0


def test_a_result_without_baseline_is_refused(monkeypatch):
    module = types.ModuleType("fake_no_baseline")
    module.run = lambda: {"rate": 1.0}
    monkeypatch.setitem(sys.modules, "fake_no_baseline", module)
    monkeypatch.setitem(benchmarks.BENCHMARKS, "nobase", ("fake_no_baseline", ""))
    with pytest.raises(RuntimeError, match="baseline"):
        run_benchmark("nobase")


def test_options_reach_run():
    options = parse_options("runner", ["--episodes", "3", "--work-ms", "2"])
    assert options == {"num_episodes": 3, "work_ms": 2.0, "data_dir": None, "ray_address": None}
    assert parse_options("memory", ["--sizes", "10,20"])["sizes"] == [10, 20]
    with pytest.raises(SystemExit):
        parse_options("street", ["--bogus"])
