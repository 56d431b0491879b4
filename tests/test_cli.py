"""The vlnkit command line: data check and eval print what they promise and exit accordingly."""

import json

from vlnkit.cli import main
from vlnkit.envs.datasets import StreetEpisode, write_episodes, write_graph

from test_street_env import grid_graph


def make_release(root):
    write_graph(grid_graph(), root)
    eps = [StreetEpisode("5", "map2seq", "go", ("n0_0", "n0_1", "n0_2"), 90.0)]
    write_episodes(eps, root / "data" / "dev.json")


def test_data_check_prints_summary_and_exit_code(tmp_path, capsys):
    make_release(tmp_path)
    assert main(["data", "check", "task=map2seq", f"data_dir={tmp_path}"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["nodes"] == 25 and summary["links"] == 80
    assert summary["episodes"] == {"dev": 1} and summary["problems"] == []
    (tmp_path / "data" / "train.json").write_text('{"id": 1, "navigation_text": "x", "route_panoids": ["n0_0", "zz"], "start_heading": 0}\n')
    assert main(["data", "check", "task=map2seq", f"data_dir={tmp_path}"]) == 1
    problems = json.loads(capsys.readouterr().out)["problems"]
    assert len(problems) == 1 and "train.json:1" in problems[0] and "route_panoids[1]" in problems[0]


def test_eval_prints_table_and_writes_metrics(tmp_path, capsys):
    make_release(tmp_path / "rel")
    out = tmp_path / "run"
    assert main(["eval", "task=map2seq", f"data_dir={tmp_path / 'rel'}", "agent=oracle", f"out={out}", "progress=false"]) == 0
    printed = capsys.readouterr().out
    assert "| oracle on map2seq/dev | 100.00 | 0.00 |" in printed
    assert json.loads((out / "metrics.json").read_text())["num_episodes"] == 1


def test_train_ltm_writes_a_loadable_checkpoint_and_resumes(tmp_path, monkeypatch, capsys):
    import torch

    monkeypatch.setenv("VLNKIT_CACHE", str(tmp_path / "cache"))
    ckpt = tmp_path / "ltm.pt"
    args = ["train", "ltm", "episodes=4", "train.steps=6", "train.batch_size=16", "train.checkpoint_every=3",
            f"out={ckpt}", "progress=false"]
    assert main(args) == 0
    first = json.loads(capsys.readouterr().out)
    assert first["trajectories"] == 4 and first["checkpoint"] == str(ckpt)
    state = torch.load(ckpt, weights_only=True)
    assert state["step"] == 6
    assert main([*args[:3], "train.steps=8", *args[4:]]) == 0  # resumes from step 6
    assert torch.load(ckpt, weights_only=True)["step"] == 8
