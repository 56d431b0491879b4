"""``policy_attention``: what the training-free attention interventions and head pruning do to a trained
policy's navigation (#14 item 5), on the synthetic city's dev split.

For a policy checkpoint from ``vlnkit train policy`` it evaluates the policy agent
(:mod:`vlnkit.agents.policy.attention`) with each intervention of ``conditions`` on and with none, on the same
``episodes`` dev episodes (``vlnkit.evaluate``, one resumable run folder per condition under ``runs/``), and
reports task completion and nDTW with the paired bootstrap interval of each difference to ``off``
(:func:`vlnkit.eval.ablation.paired_bootstrap`, over episodes). VAR's sink dimensions come from
``calibration_episodes`` training episodes (the cross-attention's key inputs, captured; a dimension needs a
max/median ratio of at least ``sink_ratio``), so they are never fitted on the episodes they are scored on;
when none qualifies VAR changes nothing, and the table says so.

Head importance: TC on ``importance_episodes`` (the first of the dev episodes) with each cross-attention head
masked alone, minus TC with none. The pruning curve removes, for each fraction of ``prune_fractions``, that
share of the heads in order of importance (least important first) and in a random order (seeded), and
measures TC on the dev episodes.

Every condition's episode results stay in its run folder, so an interrupted experiment resumes at the episode
where it stopped. No number here uses privileged information beyond the policy's own inputs (the policy
reads the simulator's landmark labels as its panorama features; the tables say so).
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from omegaconf import DictConfig, OmegaConf  # noqa: E402

from vlnkit.agents.policy.agent import build_policy_agent  # noqa: E402
from vlnkit.agents.policy.attention import CROSS  # noqa: E402
from vlnkit.eval.ablation import paired_bootstrap  # noqa: E402
from vlnkit.eval.api import evaluate  # noqa: E402
from vlnkit.eval.experiments.runner import ExperimentContext, ExperimentResult, Table  # noqa: E402
from vlnkit.perception.attention import Capture, attach  # noqa: E402
from vlnkit.perception.attention.interventions import calibrate_sink_dimensions  # noqa: E402

PRIVILEGE = "policy panorama features: the simulator's landmark labels (privileged perception)"


def _agent(cfg: DictConfig, attention: dict[str, Any] | None) -> Any:
    """The policy agent of ``cfg.checkpoint`` with the ``attention`` interventions."""
    settings = {"checkpoint": str(cfg.checkpoint), "memory": str(cfg.memory), "attention": attention or {}}
    return build_policy_agent(settings, num_actions=4)


def _episodes(run_dir: Path) -> dict[str, dict[str, float]]:
    """Per-episode TC and nDTW (percent) of an evaluation folder, by episode id."""
    out = {}
    for line in (run_dir / "episodes.jsonl").read_text(encoding="utf-8").splitlines():
        if line.strip():
            r = json.loads(line)
            m = r["metrics"]
            out[str(r["episode_id"])] = {"tc": 100.0 * float(m["task_completion"]), "ndtw": 100.0 * float(m["ndtw"])}
    return out


def _evaluate(cfg: DictConfig, ctx: ExperimentContext, name: str, attention: dict[str, Any] | None, split: str,
              limit: int) -> dict[str, dict[str, float]]:
    """Roll the agent with ``attention`` out on the first ``limit`` episodes of ``split`` (resumable)."""
    folder = ctx.run_dir / "runs" / name
    evaluate(_agent(cfg, attention), task=str(cfg.task), split=split, limit=limit, seed=ctx.seed, out=str(folder),
             progress=False)
    return _episodes(folder)


def _calibrate(cfg: DictConfig, ctx: ExperimentContext) -> list[int]:
    """VAR's sink dimensions from the cross-attention key inputs on training episodes."""
    state = ctx.load_state("sinks")
    if state is not None:
        return list(state)
    agent = _agent(cfg, None)
    capture = Capture()
    folder = ctx.run_dir / "runs" / "calibration"
    shutil.rmtree(folder, ignore_errors=True)      # every episode must run (and be captured) again
    with attach(agent.model, CROSS, capture):
        evaluate(agent, task=str(cfg.task), split="train", limit=int(cfg.calibration_episodes), seed=ctx.seed,
                 out=str(folder), progress=False)
    keys = [r.call.key_inputs[0] for records in capture.calls.values() for r in records]
    dims = calibrate_sink_dimensions(torch.cat(keys), count=2, min_ratio=float(cfg.sink_ratio)) if keys else []
    ctx.save_state("sinks", dims)
    return dims


def _summary(values: dict[str, dict[str, float]], base: dict[str, dict[str, float]], seed: int) -> dict[str, Any]:
    """Means and the paired bootstrap of the differences to ``base`` over the shared episodes."""
    ids = sorted(set(values) & set(base))
    out: dict[str, Any] = {"episodes": len(ids)}
    for metric in ("tc", "ndtw"):
        mine = np.array([values[i][metric] for i in ids])
        theirs = np.array([base[i][metric] for i in ids])
        mean, low, high = paired_bootstrap([mine - theirs], seed=seed)
        out[metric] = float(mine.mean()) if len(ids) else math.nan
        out[f"{metric}_delta"], out[f"{metric}_low"], out[f"{metric}_high"] = mean, low, high
    return out


def run(cfg: DictConfig, ctx: ExperimentContext) -> ExperimentResult:
    """Evaluate every condition, head importance and the pruning curves (see the module docstring)."""
    checkpoint = Path(str(cfg.checkpoint)).expanduser()
    if not checkpoint.is_file():
        raise FileNotFoundError(f"policy_attention: no policy checkpoint at {checkpoint} (config key 'checkpoint'); "
                                f"train one with `vlnkit train policy out={checkpoint}`")
    episodes = int(cfg.episodes)
    conditions = {str(k): OmegaConf.to_container(v, resolve=True) or {} for k, v in cfg.conditions.items()}
    sinks = _calibrate(cfg, ctx) if any("var" in c for c in conditions.values()) else []
    for settings in conditions.values():
        if "var" in settings:
            settings["var"] = {**settings["var"], "dims": sinks}

    with ctx.bar(1 + len(conditions), desc="policy_attention conditions") as bar:
        base = _evaluate(cfg, ctx, "off", None, str(cfg.split), episodes)
        bar.update(1)
        results = {"off": _summary(base, base, ctx.seed)}
        for name, settings in conditions.items():
            results[name] = _summary(_evaluate(cfg, ctx, name, settings, str(cfg.split), episodes), base, ctx.seed)
            bar.update(1)

    model = _agent(cfg, None).model
    layers, heads = len(model.blocks), model.config.heads
    units = [(layer, head) for layer in range(layers) for head in range(heads)]
    few = int(cfg.importance_episodes)
    base_few = {k: v for k, v in list(base.items())[:few]}
    importance = {}
    with ctx.bar(len(units), desc="head importance") as bar:
        for layer, head in units:
            masked = _evaluate(cfg, ctx, f"mask_L{layer}H{head}", {"mask": {layer: [head]}}, str(cfg.split), few)
            importance[f"L{layer}H{head}"] = _summary(masked, base_few, ctx.seed)["tc_delta"]
            bar.update(1)
    ranked = sorted(units, key=lambda u: (-importance[f"L{u[0]}H{u[1]}"], u))   # least harmful to lose first
    shuffled = [units[i] for i in np.random.default_rng(ctx.seed).permutation(len(units))]
    curves: dict[str, dict[str, float]] = {"importance": {"0": results["off"]["tc"]}, "random": {"0": results["off"]["tc"]}}
    fractions = [float(f) for f in cfg.prune_fractions]
    with ctx.bar(2 * len(fractions), desc="pruning") as bar:
        for order_name, order in (("importance", ranked), ("random", shuffled)):
            for fraction in fractions:
                removed = order[: round(fraction * len(units))]
                mask: dict[int, list[int]] = {}
                for layer, head in removed:
                    mask.setdefault(layer, []).append(head)
                name = f"prune_{order_name}_{fraction:g}"
                values = _evaluate(cfg, ctx, name, {"mask": mask}, str(cfg.split), episodes)
                curves[order_name][f"{fraction:g}"] = float(np.mean([v["tc"] for v in values.values()]))
                bar.update(1)

    figure = ctx.figure_path("pruning.png")
    fig, ax = plt.subplots(figsize=(5, 3.5))
    for order_name, curve in curves.items():
        xs = sorted(curve, key=float)
        ax.plot([float(x) for x in xs], [curve[x] for x in xs], marker="o", label=f"by {order_name}")
    ax.set_xlabel("fraction of cross-attention heads removed")
    ax.set_ylabel("dev TC (%)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(figure, dpi=120)
    plt.close(fig)

    def interval(r: dict[str, Any], metric: str) -> str:
        return f"{r[f'{metric}_delta']:+.1f} [{r[f'{metric}_low']:+.1f}, {r[f'{metric}_high']:+.1f}]"

    rows = [[name, r["episodes"], f"{r['tc']:.1f}", interval(r, "tc") if name != "off" else "",
             f"{r['ndtw']:.1f}", interval(r, "ndtw") if name != "off" else ""] for name, r in results.items()]
    tables = [
        Table("Interventions on the policy's cross-attention (dev)", ["condition", "episodes", "TC %", "ΔTC [95% CI]",
              "nDTW %", "ΔnDTW [95% CI]"], rows,
              note=f"Paired episode bootstrap against off. VAR sink dimensions (calibrated on "
                   f"{cfg.calibration_episodes} train episodes, ratio >= {cfg.sink_ratio}): {sinks or 'none found'}"
                   f"{' (VAR is then the identity)' if not sinks else ''}. Checkpoint {checkpoint}; {PRIVILEGE}."),
        Table("Head importance: TC change when one cross-attention head is masked",
              ["head", "ΔTC (pp)"], [[k, f"{v:+.1f}"] for k, v in importance.items()],
              note=f"On the first {few} dev episodes."),
        Table("Pruning: dev TC against the fraction of cross-attention heads removed",
              ["order", *[f"{f:g}" for f in [0.0, *fractions]]],
              [[order_name, *[f"{curve[f'{f:g}']:.1f}" for f in [0.0, *fractions]]] for order_name, curve in curves.items()],
              note="importance: least important heads (largest ΔTC) removed first; random: a seeded random order."),
    ]
    return ExperimentResult(
        results={"conditions": results, "sink_dimensions": sinks, "importance": importance, "pruning": curves,
                 "checkpoint": str(checkpoint), "privileged": PRIVILEGE},
        tables=tables, plots=[figure.name])
