"""Every result says whether it used privileged information: the oracle's and gold's info items, the
city's scene labels in the panorama of agents that read it, and nothing for observation-only agents."""

import json

from vlnkit.cli import main
from vlnkit.config import load_config
from vlnkit.eval.leaderboard import leaderboard
from vlnkit.eval.runner import evaluate

from test_eval_runner import release  # noqa: F401  (a 5x5 grid without a scene description)

SCENE = "scene labels (graph/scene.jsonl)"


def city_run(out, *extra):
    return evaluate(load_config("eval", [f"out={out}", "progress=false", "limit=2", *extra]))


def test_oracle_gold_and_random_on_a_release_without_labels(release, tmp_path):
    common = ["task=touchdown", f"data_dir={release}", "progress=false"]
    oracle = evaluate(load_config("eval", [*common, "agent=oracle", f"out={tmp_path / 'o'}"]))
    gold = evaluate(load_config("eval", [*common, "agent=gold", f"out={tmp_path / 'g'}"]))
    plain = evaluate(load_config("eval", [*common, "agent=random", f"out={tmp_path / 'r'}"]))
    assert oracle["privileged"] == ["info.oracle_action"]
    assert gold["privileged"] == ["info.gold_action"]
    assert plain["privileged"] == []
    record = json.loads((tmp_path / "o" / "episodes.jsonl").read_text().splitlines()[0])
    assert record["privileged"] == ["info.oracle_action"]


def test_scene_labels_mark_agents_that_read_the_panorama_only(tmp_path, capsys):
    assert city_run(tmp_path / "modular", "agent=modular", "memory=none")["privileged"] == [SCENE]
    assert city_run(tmp_path / "forward", "agent=forward")["privileged"] == []
    assert main(["eval", f"out={tmp_path / 'cli'}", "progress=false", "limit=2", "agent=modular", "memory=none"]) == 0
    assert f"| 0 | yes: {SCENE} |" in capsys.readouterr().out
    board = leaderboard([tmp_path / "modular", tmp_path / "forward"])
    assert f"| yes: {SCENE} |" in board and "| forward | synth_city | dev | no |" in board
