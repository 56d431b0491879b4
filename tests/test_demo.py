"""``vlnkit demo`` shows the three uses: rollouts on the city and the houses, a memory ablation with its
interval, a leaderboard and an HTML report, and every table says which rows used privileged information."""

from vlnkit.eval import demo


def test_demo_writes_the_three_uses_and_marks_privileged_rows(tmp_path, monkeypatch):
    monkeypatch.setattr(demo, "STREET_EPISODES", 2)
    monkeypatch.setattr(demo, "HOUSE_EPISODES", 1)
    monkeypatch.setattr(demo, "ABLATION_SEEDS", (0, 1))
    assert [agent for agent, _ in demo.HOUSE_AGENTS] == ["oracle", "forward_blocked", "random", "handcrafted", "vlncm"]
    monkeypatch.setattr(demo, "HOUSE_AGENTS", (("oracle", ()), ("forward_blocked", ()), ("handcrafted", ())))
    lines: list[str] = []
    paths = demo.run_demo(tmp_path / "demo", say=lines.append)
    text = "\n".join(lines)
    rows = {line.split("|")[1].strip(): line.split("|")[-2].strip() for line in text.splitlines()
            if line.startswith("| ") and not line.startswith("| run") and not line.startswith("| group")}
    assert rows["oracle"] == "yes: info.oracle_action" and rows["gold"] == "yes: info.gold_action"
    assert rows["forward"] == "no" and rows["random"] == "no" and rows["forward_blocked"] == "no"
    assert rows["handcrafted"] == "no"
    assert rows["modular"] == "yes: scene labels (graph/scene.jsonl)"
    ablation = paths["ablation"].read_text()
    assert "| grid | modular | none |" in ablation and "| grid | modular | full |" in ablation
    assert "ΔTC vs none" in ablation
    board = paths["leaderboard"].read_text()
    assert "## street runs" in board and "## continuous runs" in board
    assert paths["report"].read_text().startswith("<!DOCTYPE html>")
