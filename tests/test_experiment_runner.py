"""The experiment runner: run folder contents, resume after an interruption, refusal of another config, the
HTML page. A counting experiment defined here stands in for a real one (each real one has its own tests)."""

from __future__ import annotations

import json
import sys
import types
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from vlnkit.config import config_dir
from vlnkit.eval.experiments import runner
from vlnkit.eval.experiments.runner import ExperimentResult, Table, run_experiment
from vlnkit.eval.html_report import write_html_report

CALLS = {"run": 0, "fail_at": None}


def _counting(cfg, ctx) -> ExperimentResult:
    """Sums 1..steps, one step at a time, saving its state after every step (optionally failing once)."""
    CALLS["run"] += 1
    state = ctx.load_state("sum") or {"step": 0, "total": 0}
    for step in range(state["step"] + 1, int(cfg.steps) + 1):
        if CALLS["fail_at"] == step:
            CALLS["fail_at"] = None
            raise KeyboardInterrupt
        state = {"step": step, "total": state["total"] + step * int(cfg.scale)}
        ctx.save_state("sum", state)
    plots = []
    if cfg.plot:
        ctx.figure_path("curve.png").write_bytes(b"\x89PNG\r\n\x1a\n")
        plots.append("curve.png")
    return ExperimentResult(results={"total": state["total"], "seed": ctx.seed},
                            tables=[Table("Sums", ["steps", "total"], [[int(cfg.steps), state["total"]]], "by hand")],
                            plots=plots)


@pytest.fixture
def counting(monkeypatch):
    """Register the counting experiment as ``counting`` (config: _base + steps, scale, plot)."""
    module = types.ModuleType("vlnkit_test_counting")
    module.run = _counting
    monkeypatch.setitem(sys.modules, module.__name__, module)
    monkeypatch.setitem(runner.EXPERIMENTS, "counting", (module.__name__, "a test experiment"))
    base = OmegaConf.load(Path(config_dir()) / "experiment" / "_base.yaml")

    def compose(name, overrides=(), folder=None):
        assert (name, folder) == ("counting", "experiment")
        cfg = OmegaConf.merge(base, {"steps": 5, "scale": 1, "plot": True})
        return OmegaConf.merge(cfg, OmegaConf.from_dotlist(list(overrides)))

    monkeypatch.setattr(runner, "load_config", compose)
    CALLS.update(run=0, fail_at=None)
    return CALLS


def test_a_run_writes_results_tables_and_config(counting, tmp_path):
    run_dir = run_experiment("counting", [f"out={tmp_path / 'a'}", "progress=false", "seed=3"])
    done = json.loads((run_dir / "results.json").read_text())
    assert done["results"] == {"total": 15, "seed": 3}   # 1 + 2 + 3 + 4 + 5
    assert done["tables"][0]["rows"] == [[5, 15]]
    assert done["plots"] == ["curve.png"]
    assert "| 5 | 15 |" in (run_dir / "results.md").read_text()
    assert json.loads((run_dir / "config.json").read_text())["config"]["steps"] == 5
    assert (run_dir / "checkpoints" / "sum.pt").is_file()


def test_an_interrupted_run_resumes_and_a_finished_one_returns_at_once(counting, tmp_path):
    counting["fail_at"] = 3
    with pytest.raises(KeyboardInterrupt):
        run_experiment("counting", [f"out={tmp_path}", "progress=false"])
    assert not (tmp_path / "results.json").exists()
    run_experiment("counting", [f"out={tmp_path}", "progress=false"])
    assert json.loads((tmp_path / "results.json").read_text())["results"]["total"] == 15   # not 1 + 2 + 1 + ...
    calls = counting["run"]
    run_experiment("counting", [f"out={tmp_path}", "progress=false", "device=cpu"])   # device is not hashed
    assert counting["run"] == calls


def test_another_config_is_refused_unless_starting_over(counting, tmp_path):
    run_experiment("counting", [f"out={tmp_path}", "progress=false"])
    with pytest.raises(ValueError, match="keys that differ: scale"):
        run_experiment("counting", [f"out={tmp_path}", "progress=false", "scale=2"])
    run_experiment("counting", [f"out={tmp_path}", "progress=false", "scale=2", "resume=false"])
    assert json.loads((tmp_path / "results.json").read_text())["results"]["total"] == 30


def test_a_listed_plot_that_was_not_written_is_an_error(counting, tmp_path, monkeypatch):
    monkeypatch.setattr(sys.modules["vlnkit_test_counting"], "run",
                        lambda cfg, ctx: ExperimentResult({}, [], ["missing.png"]))
    with pytest.raises(RuntimeError, match="missing.png"):
        run_experiment("counting", [f"out={tmp_path}", "progress=false"])
    assert not (tmp_path / "results.json").exists()


def test_unknown_experiment_and_missing_cuda_are_clear_errors(tmp_path, monkeypatch):
    with pytest.raises(KeyError, match="icl_regression"):
        run_experiment("no_such_experiment", [f"out={tmp_path}"])
    monkeypatch.setattr(runner.torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError, match="device=cuda"):
        runner.resolve_device("cuda")
    assert runner.resolve_device("auto").type == "cpu"


def test_the_html_report_of_an_experiment_shows_its_tables_and_plots(counting, tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    run_dir = run_experiment("counting", [f"out={tmp_path}", "progress=false", "plot=false"])
    plt.figure()
    plt.plot([0, 1])
    plt.savefig(run_dir / "extra.png")
    plt.close()
    page = write_html_report(run_dir).read_text()
    assert "Experiment: counting" in page and "<h2>Sums</h2>" in page and "by hand" in page
    assert "<td>15</td>" in page and "extra.png" in page and "data:image/png;base64," in page


def test_the_command_lists_experiments_and_prints_a_run_s_tables(counting, tmp_path, capsys):
    from vlnkit.cli import main

    assert main(["experiment", "--list"]) == 0
    listed = capsys.readouterr().out
    assert all(name in listed for name in ("icl_regression", "deconstructed_attention", "associative_capacity"))
    assert main(["experiment", "counting", f"out={tmp_path}", "progress=false"]) == 0
    assert "| 5 | 15 |" in capsys.readouterr().out
    assert main(["experiment", "nonexistent"]) == 2
