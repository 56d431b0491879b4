"""``vlnkit demo``: the platform's three uses on its built-in data, in a few minutes on a laptop.

1. Rollouts: street baselines, the shortest-path and gold-route oracles and the Mem4Nav modular agent on
   the synthetic city; continuous baselines (the bump-sensor walker and VLN-CE's random and hand-crafted
   baselines), the oracle and VLN-CM's zero-shot agent on the synthetic houses (no Mem4Nav agent drives the
   continuous task yet).
2. A memory ablation: the modular agent without memory and with full Mem4Nav memory on the first episodes
   of the memory split (plain, count, return and loop routes in turn), over three seeds (three cities),
   with confidence intervals and the paired difference, overall and per episode kind.
3. A leaderboard of the rollouts (Markdown and CSV) and a self-contained HTML report of the memory agent's run.

Every table has a ``privileged`` column: the oracles read the environment's privileged actions, and the
modular agent reads the city's scene labels and VLN-CM's semantic scorer the renderer's labels (their
perception until perception from pixels lands).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from vlnkit.config import load_config

STREET_AGENTS = (("oracle", ()), ("gold", ()), ("forward", ()), ("random", ()), ("modular", ("memory=full",)))
"""Agents run on the synthetic city, each with its extra overrides."""
HOUSE_AGENTS = (("oracle", ()), ("forward_blocked", ()), ("random", ()), ("handcrafted", ()), ("vlncm", ()))
"""Agents run on the synthetic houses (``random`` and ``handcrafted`` are VLN-CE's own baselines)."""
STREET_EPISODES = 40
HOUSE_EPISODES = 6
ABLATION_SEEDS = (0, 1, 2)


def run_demo(out: str | Path, say: Callable[[str], None] = print) -> dict[str, Path]:
    """Run the demo into ``out`` and print its tables with ``say``; returns the paths of what it wrote."""
    from vlnkit.eval.ablation import run_ablation
    from vlnkit.eval.continuous import continuous_metrics_table
    from vlnkit.eval.html_report import write_html_report
    from vlnkit.eval.leaderboard import leaderboard
    from vlnkit.eval.report import metrics_table
    from vlnkit.eval.runner import evaluate

    out = Path(out)
    runs: list[Path] = []
    street, houses = {}, {}
    say(f"1/3 rollouts: {len(STREET_AGENTS)} agents on the synthetic city (dev, {STREET_EPISODES} episodes), "
        f"{len(HOUSE_AGENTS)} on the synthetic houses (val_unseen, {HOUSE_EPISODES} episodes)")
    for agent, extra in STREET_AGENTS:
        folder = out / "city" / agent
        street[agent] = evaluate(load_config("eval", [f"agent={agent}", *extra, f"limit={STREET_EPISODES}",
                                                      f"out={folder}", "progress=false"]))
        runs.append(folder)
    for agent, extra in HOUSE_AGENTS:
        folder = out / "houses" / agent
        houses[agent] = evaluate(load_config("eval", ["task=synth_houses", f"agent={agent}", *extra,
                                                      f"limit={HOUSE_EPISODES}", f"out={folder}", "progress=false"]))
        runs.append(folder)
    say("\nStreet navigation on the synthetic city (TC, SED, nDTW, sDTW, CLS, KPA in %; SPD in hops):")
    say(metrics_table(street))
    say("\nContinuous navigation (VLN-CE) on the synthetic houses:")
    say(continuous_metrics_table(houses))

    seeds = ",".join(str(s) for s in ABLATION_SEEDS)
    say(f"\n2/3 memory ablation: modular agent, memory none vs full, seeds {seeds} (one city each), "
        f"the first {STREET_EPISODES} episodes of the memory split per run")
    overrides = ['ablation.grid=["agent=modular memory=none,full"]', "ablation.sweeps={}", f"limit={STREET_EPISODES}",
                 f"ablation.seeds=[{seeds}]", f"ablation.out={out / 'ablation'}", "ablation.progress=false"]
    ablation = run_ablation(load_config("ablate", overrides), overrides)
    say((ablation / "ablation.md").read_text())
    say((ablation / "ablation_by_kind.md").read_text())

    say("3/3 leaderboard and report")
    board = out / "leaderboard"
    leaderboard(runs, out=board)
    report = write_html_report(out / "city" / "modular")
    paths = {"runs": out, "leaderboard": board / "leaderboard.md", "ablation": ablation / "ablation.md",
             "report": Path(report)}
    for name, path in paths.items():
        say(f"  {name:<12} {path}")
    return paths
