"""Runs that never give a quiet wrong number: failed episodes change the exit status, a run folder names
the config keys that differ and is locked while a run writes, bad config values are refused, ablation
intervals stay inside the metric's range, and a submission scores exactly as its run did."""

import json
import math

import filelock
import pytest

from vlnkit.cli import main
from vlnkit.config import load_config
from vlnkit.eval.ablation import plan_rows, summarize, write_table, _replace_study_lists
from vlnkit.eval.runner import ConfigError, RunFolderError, evaluate
from vlnkit.eval.score import score_submission

from test_eval_runner import release  # noqa: F401  (the fixture: a 5x5 grid and three routes 11, 12, 13)


def args(release, out, *extra):
    return ["task=touchdown", f"data_dir={release}", f"out={out}", "progress=false", *extra]


def run(release, out, *extra):
    return evaluate(load_config("eval", args(release, out, *extra)))


FAULTY = ("agent=random", "agent.name=faulty", "imports=[runner_agents]", "max_retries=0")


def test_a_failed_episode_is_in_the_table_and_the_exit_status(release, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["eval", *args(release, out, *FAULTY, "+agent.fail_ids=[12]")]) == 1
    captured = capsys.readouterr()
    assert "| episodes | failed |" in captured.out and "| 3 | 1 |" in captured.out
    assert "1 of 3 episodes FAILED" in captured.err and "12: ValueError: agent refuses episode 12" in captured.err
    allowed = tmp_path / "allowed"
    assert main(["eval", *args(release, allowed, *FAULTY, "+agent.fail_ids=[12]", "allow_failed=true")]) == 0
    assert main(["eval", *args(release, tmp_path / "clean", "agent=random")]) == 0


@pytest.mark.parametrize("runner", ["inprocess", "vector"])
def test_an_agent_that_refuses_its_inputs_stops_the_run_before_any_record(release, tmp_path, capsys, runner):
    out = tmp_path / runner
    extra = ("agent=random", "agent.name=refusing", "imports=[runner_agents]", f"runner={runner}")
    assert main(["eval", *args(release, out, *extra)]) == 2
    assert capsys.readouterr().err == ("vlnkit: error: agent=refusing needs observation 'panorama'; "
                                       "set task.panorama=features\n")
    assert not (out / "episodes.jsonl").read_text().strip()


def test_a_different_config_names_the_keys_that_differ(release, tmp_path):
    out = tmp_path / "run"
    run(release, out, "agent=random", "seed=3")
    with pytest.raises(RunFolderError, match=r"changed: seed: 3 -> 4\)"):
        run(release, out, "agent=random", "seed=4")
    with pytest.raises(RunFolderError, match=r"agent.name: 'random' -> 'oracle'"):
        run(release, out, "agent=oracle", "seed=3")


def test_a_run_that_stopped_at_start_up_does_not_block_the_corrected_command(release, tmp_path):
    out = tmp_path / "run"
    with pytest.raises(Exception):
        run(release, out, "agent=random", "agent.name=no_such_agent")
    assert (out / "run.json").is_file() and not (out / "episodes.jsonl").exists()
    metrics = run(release, out, "agent=oracle")
    assert metrics["num_episodes"] == 3 and metrics["task_completion"] == 1.0


def test_two_runs_cannot_write_into_one_folder(release, tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    held = filelock.FileLock(str(out / "run.lock"))
    held.acquire()
    try:
        with pytest.raises(RunFolderError, match="another run is writing"):
            run(release, out, "agent=random")
        assert not (out / "episodes.jsonl").exists()
    finally:
        held.release()
    assert run(release, out, "agent=random")["num_episodes"] == 3


@pytest.mark.parametrize("limit", ["-5", "0", "2.5", "true"])
def test_limit_out_of_range_is_refused_with_one_line(release, tmp_path, capsys, limit):
    with pytest.raises(ConfigError, match=rf"limit={limit if limit != 'true' else 'True'}"):
        run(release, tmp_path / "run", "agent=random", f"limit={limit}")
    assert main(["eval", *args(release, tmp_path / "cli", "agent=random", f"limit={limit}")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("vlnkit: error: limit=") and err.count("\n") == 1


def test_eval_help_lists_groups_with_choices_and_keys(capsys):
    with pytest.raises(SystemExit):
        main(["eval", "--help"])
    text = capsys.readouterr().out
    agent_line = next(line for line in text.splitlines() if line.strip().startswith("agent="))
    assert {"oracle", "gold", "modular", "forward_blocked", "custom"} <= set(agent_line.split()[0][6:].split("|"))
    assert "(default oracle)" in agent_line
    assert "task=map2seq|rxr_ce|synth_city|synth_houses|touchdown|vlnce" in text
    assert "limit=null   evaluate only the first N episodes of the split" in text
    assert "allow_failed=false" in text


def test_empty_sweeps_override_removes_the_sweeps():
    cfg = load_config("ablate", ["ablation.sweeps={}"])
    _replace_study_lists(cfg, ["ablation.sweeps={}"])
    assert {row.group for row in plan_rows(cfg.ablation)} == {"grid"}
    cfg = load_config("ablate", ["ablation.sweeps={K: 'agent=modular memory=stm_only ++agent.x=1,2'}"])
    _replace_study_lists(cfg, ["ablation.sweeps={K: 'agent=modular memory=stm_only ++agent.x=1,2'}"])
    assert [(r.group, r.swept_value) for r in plan_rows(cfg.ablation) if r.group != "grid"] == [("K", "1"), ("K", "2")]


def test_an_empty_study_is_refused(tmp_path):
    from vlnkit.eval.ablation import run_ablation

    overrides = ["ablation.grid=[]", "ablation.sweeps={}", f"ablation.out={tmp_path}"]
    with pytest.raises(ConfigError, match="no rows"):
        run_ablation(load_config("ablate", overrides), overrides)


def test_ablation_intervals_are_clipped_to_the_metric_range(tmp_path):
    rows = plan_rows({"grid": ["agent=modular memory=full"]})
    results = [{"group": "grid", "overrides": list(rows[0].overrides), "seed": s, "metrics": {"task_completion": v}}
               for s, v in ((0, 0.2), (1, 1.0))]
    [entry] = summarize(results, rows, ["task_completion"])
    # Two seeds, 20 % and 100 %: mean 60, half-width t(0.975, 1) * s / sqrt(2) = 12.706 * 56.57 / 1.414 = 508.2.
    assert entry["task_completion_mean"] == pytest.approx(60.0)
    assert entry["task_completion_ci"] == pytest.approx(508.25, abs=0.1)
    assert (entry["task_completion_lo"], entry["task_completion_hi"]) == (0.0, 100.0)
    md, csv_path = write_table([entry], ["task_completion"], tmp_path)
    assert "| 60.0 [0.0, 100.0] |" in md.read_text() and "±" not in md.read_text().splitlines()[-1]
    assert "task_completion_lo,task_completion_hi" in csv_path.read_text().splitlines()[0]
    assert not math.isnan(entry["task_completion_hi"])


def test_a_submission_scores_exactly_as_its_run(release, tmp_path):
    out = tmp_path / "run"
    metrics = run(release, out, "agent=random", "seed=5")
    scored = score_submission(out / "submission.jsonl", ["task=touchdown", f"data_dir={release}"])
    assert scored["unscored"] == ["steps"] and "steps" not in scored
    for key in ("task_completion", "shortest_path_distance", "sed", "ndtw", "sdtw", "kpa", "path_length"):
        assert scored[key] == pytest.approx(metrics[key])
    assert scored["num_episodes"] == 3


def test_a_broken_submission_is_refused_naming_the_line(release, tmp_path, capsys):
    route = ["n0_0", "n1_0"]
    bad = tmp_path / "dup.jsonl"
    bad.write_text("".join(json.dumps({"route_id": i, "route_panoids": route}) + "\n" for i in (11, 12, 11)))
    with pytest.raises(ValueError, match=r"dup.jsonl:3: field 'route_id': 11 again \(first on line 1\)"):
        score_submission(bad, ["task=touchdown", f"data_dir={release}"])
    short = tmp_path / "short.jsonl"
    short.write_text(json.dumps({"route_id": 11, "route_panoids": route}) + "\n")
    assert main(["score", str(short), "--task", "touchdown", "--data-dir", str(release)]) == 2
    assert "2 of 3 episodes of the split have no row" in capsys.readouterr().err
    unknown = tmp_path / "unknown.jsonl"
    unknown.write_text(json.dumps({"route_id": 11, "route_panoids": ["n0_0", "nowhere"]}) + "\n")
    with pytest.raises(ValueError, match=r"unknown.jsonl:1: field 'route_panoids': panoids not in the graph"):
        score_submission(unknown, ["task=touchdown", f"data_dir={release}"])


def test_a_continuous_submission_scores_exactly_as_its_run(houses, tmp_path):
    common = ["task=synth_houses", f"data_dir={houses}", "split=val_unseen"]
    out = tmp_path / "run"
    metrics = evaluate(load_config("eval", [*common, "agent=forward_blocked", f"out={out}", "progress=false", "limit=3"]))
    scored = score_submission(out / "submission.json", [*common, "limit=3"])
    assert scored["unscored"] == ["steps", "collisions"]
    # The submission holds positions rounded to 0.1 mm (as episodes.jsonl does), hence the tolerance.
    for key in ("success", "spl", "navigation_error", "oracle_success", "ndtw", "sdtw", "cls", "path_length"):
        assert scored[key] == pytest.approx(metrics[key], rel=1e-4, abs=1e-4, nan_ok=True)
    with pytest.raises(ValueError, match="entries are not episodes of the split"):
        bad = tmp_path / "bad.json"
        bad.write_text(json.dumps({"no-such-episode": [{"position": [0, 0, 0], "heading": 0, "stop": True}]}))
        score_submission(bad, [*common, "limit=3"])


def test_a_worker_caps_torch_threads_as_configured(release, tmp_path):
    import torch
    from omegaconf import OmegaConf

    from vlnkit.eval.backends import EpisodeWorker, WorkerSpec

    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        cfg = load_config("eval", args(release, tmp_path / "run", "agent=random"))
        assert cfg.torch_threads == 1
        EpisodeWorker(WorkerSpec(OmegaConf.to_container(cfg, resolve=True), str(release)))
        assert torch.get_num_threads() == 1
        torch.set_num_threads(2)
        EpisodeWorker(WorkerSpec(OmegaConf.to_container(load_config(
            "eval", args(release, tmp_path / "run", "agent=random", "torch_threads=null")), resolve=True), str(release)))
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


@pytest.mark.parametrize("override, expected", [
    ("agent=nope", "Could not find 'agent/nope' Available options in 'agent': custom forward forward_blocked gold"),
    ("task=nope", "Could not find 'task/nope' Available options in 'task': map2seq rxr_ce synth_city"),
    ("foo=1", "Could not override 'foo'. To append to your config use +foo=1 (`vlnkit eval --help` lists the keys)"),
])
def test_unknown_names_get_one_line_listing_what_is_valid(capsys, override, expected):
    assert main(["eval", override]) == 2
    err = capsys.readouterr().err
    assert expected in err and err.count("\n") == 1 and "Config search path" not in err


def test_agent_fallbacks_are_totalled_and_reported(release, tmp_path, capsys, monkeypatch):
    from vlnkit.agents.baselines import ForwardAgent

    monkeypatch.setattr(ForwardAgent, "episode_stats", lambda self: {"llm_fallbacks": 2, "llm_calls": 3},
                        raising=False)
    assert main(["eval", *args(release, tmp_path / "run", "agent=forward")]) == 0
    on_disk = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert on_disk["agent_stats"] == {"llm_fallbacks": 6, "llm_calls": 9}  # 3 episodes x (2, 3)
    assert "warning: llm_fallbacks = 6" in capsys.readouterr().err
