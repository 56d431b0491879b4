"""``policy_attention``: what the training-free attention interventions and head pruning do to a trained
policy's navigation (#14 item 5), on the synthetic city's dev split.

For each policy checkpoint from ``vlnkit train policy`` (``checkpoint``: a path, or a list of them, one per
training seed) it evaluates the policy agent (:mod:`vlnkit.agents.policy.attention`) with each intervention
of ``conditions`` on and with none, on the same ``episodes`` dev episodes (``vlnkit.evaluate``, one
resumable run folder per policy and condition under ``runs/p<i>/``), and reports task completion and nDTW,
averaged over the policies, with the paired two-stage bootstrap interval of each difference to ``off``
(:func:`vlnkit.eval.ablation.paired_bootstrap`: policies, then episodes). VAR's sink dimensions come from
``calibration_episodes`` training episodes (the cross-attention's key inputs, captured; a dimension needs a
max/median ratio of at least ``sink_ratio``), so they are never fitted on the episodes they are scored on;
when none qualifies VAR changes nothing, and the table says so.

Head importance, per policy: TC on ``importance_episodes`` (the first of the dev episodes) with each
cross-attention head masked alone, minus TC with none. The pruning curve removes, for each fraction of
``prune_fractions``, that share of the policy's heads in order of importance (least important first) and in
a random order (seeded), measures TC on the dev episodes, and is averaged over the policies.

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


def _agent(cfg: DictConfig, checkpoint: Path, attention: dict[str, Any] | None) -> Any:
    """The policy agent of ``checkpoint`` with the ``attention`` interventions."""
    settings = {"checkpoint": str(checkpoint), "memory": str(cfg.memory), "attention": attention or {}}
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


class _Policy:
    """One checkpoint's evaluations, each in its resumable folder ``runs/p<index>/<name>``."""

    def __init__(self, cfg: DictConfig, ctx: ExperimentContext, index: int, checkpoint: Path) -> None:
        self.cfg, self.ctx, self.index, self.checkpoint = cfg, ctx, index, checkpoint
        self.folder = ctx.run_dir / "runs" / f"p{index}"
        self.record = [f"memory={cfg.memory}"]   # so each run folder's config names the memory it used

    def evaluate(self, name: str, attention: dict[str, Any] | None, limit: int) -> dict[str, dict[str, float]]:
        """Roll the agent with ``attention`` out on the first ``limit`` episodes of the split."""
        out = self.folder / name
        evaluate(_agent(self.cfg, self.checkpoint, attention), task=str(self.cfg.task), split=str(self.cfg.split),
                 limit=limit, seed=self.ctx.seed, out=str(out), progress=False, overrides=self.record)
        return _episodes(out)

    def sink_dimensions(self) -> list[int]:
        """VAR's sink dimensions from the cross-attention key inputs on training episodes."""
        state = self.ctx.load_state(f"sinks_p{self.index}")
        if state is not None:
            return list(state)
        agent = _agent(self.cfg, self.checkpoint, None)
        capture = Capture()
        out = self.folder / "calibration"
        shutil.rmtree(out, ignore_errors=True)      # every episode must run (and be captured) again
        with attach(agent.model, CROSS, capture):
            evaluate(agent, task=str(self.cfg.task), split="train", limit=int(self.cfg.calibration_episodes),
                     seed=self.ctx.seed, out=str(out), progress=False, overrides=self.record)
        keys = [r.call.key_inputs[0] for records in capture.calls.values() for r in records]
        dims = calibrate_sink_dimensions(torch.cat(keys), count=2, min_ratio=float(self.cfg.sink_ratio)) if keys else []
        self.ctx.save_state(f"sinks_p{self.index}", dims)
        return dims


def _paired(values: list[dict[str, dict[str, float]]], bases: list[dict[str, dict[str, float]]], seed: int
            ) -> dict[str, Any]:
    """Means over policies and the two-stage paired bootstrap (policies, then episodes) of the differences to
    each policy's ``base`` over the episodes both have."""
    out: dict[str, Any] = {}
    shared = [sorted(set(v) & set(b)) for v, b in zip(values, bases)]
    out["episodes"] = int(sum(map(len, shared)))
    for metric in ("tc", "ndtw"):
        diffs = [np.array([v[i][metric] - b[i][metric] for i in ids]) for v, b, ids in zip(values, bases, shared)]
        levels = [np.mean([v[i][metric] for i in ids]) for v, ids in zip(values, shared) if ids]
        mean, low, high = paired_bootstrap(diffs, seed=seed)
        out[metric] = float(np.mean(levels)) if levels else math.nan
        out[f"{metric}_per_policy"] = [float(x) for x in levels]
        out[f"{metric}_delta"], out[f"{metric}_low"], out[f"{metric}_high"] = mean, low, high
    return out


def _pruning(policy: _Policy, base: dict[str, dict[str, float]], heads_of: tuple[int, int], episodes: int,
             few: int, fractions: list[float]) -> tuple[dict[str, float], dict[str, dict[str, float]]]:
    """One policy's head importance (TC change with each head masked alone, on ``few`` episodes) and its
    pruning curves by importance and at random."""
    layers, heads = heads_of
    units = [(layer, head) for layer in range(layers) for head in range(heads)]
    base_few = dict(list(base.items())[:few])
    importance = {}
    for layer, head in units:
        masked = policy.evaluate(f"mask_L{layer}H{head}", {"mask": {layer: [head]}}, few)
        importance[f"L{layer}H{head}"] = _paired([masked], [base_few], policy.ctx.seed)["tc_delta"]
    ranked = sorted(units, key=lambda u: (-importance[f"L{u[0]}H{u[1]}"], u))   # least harmful to lose first
    shuffled = [units[i] for i in np.random.default_rng(policy.ctx.seed + policy.index).permutation(len(units))]
    start = float(np.mean([v["tc"] for v in base.values()]))
    curves: dict[str, dict[str, float]] = {"importance": {"0": start}, "random": {"0": start}}
    for order_name, order in (("importance", ranked), ("random", shuffled)):
        for fraction in fractions:
            mask: dict[int, list[int]] = {}
            for layer, head in order[: round(fraction * len(units))]:
                mask.setdefault(layer, []).append(head)
            values = policy.evaluate(f"prune_{order_name}_{fraction:g}", {"mask": mask}, episodes)
            curves[order_name][f"{fraction:g}"] = float(np.mean([v["tc"] for v in values.values()]))
    return importance, curves


def run(cfg: DictConfig, ctx: ExperimentContext) -> ExperimentResult:
    """Evaluate every condition, head importance and the pruning curves (see the module docstring)."""
    paths = cfg.checkpoint if OmegaConf.is_list(cfg.checkpoint) else [cfg.checkpoint]
    checkpoints = [Path(str(p)).expanduser() for p in paths]
    for checkpoint in checkpoints:
        if not checkpoint.is_file():
            raise FileNotFoundError(f"policy_attention: no policy checkpoint at {checkpoint} (config key 'checkpoint'); "
                                    f"train one with `vlnkit train policy out={checkpoint}`")
    policies = [_Policy(cfg, ctx, i, path) for i, path in enumerate(checkpoints)]
    episodes, few = int(cfg.episodes), int(cfg.importance_episodes)
    fractions = [float(f) for f in cfg.prune_fractions]
    names = [str(k) for k in cfg.conditions]
    per_condition: dict[str, list[dict[str, dict[str, float]]]] = {"off": []}
    sinks, importance, curves = [], [], []
    with ctx.bar(len(policies), desc="policy_attention policies") as bar:
        for policy in policies:
            conditions = {str(k): OmegaConf.to_container(v, resolve=True) or {} for k, v in cfg.conditions.items()}
            dims = policy.sink_dimensions() if any("var" in c for c in conditions.values()) else []
            sinks.append(dims)
            base = policy.evaluate("off", None, episodes)
            per_condition["off"].append(base)
            for name, settings in conditions.items():
                if "var" in settings:
                    settings["var"] = {**settings["var"], "dims": dims}
                per_condition.setdefault(name, []).append(policy.evaluate(name, settings, episodes))
            model = _agent(cfg, policy.checkpoint, None).model
            found, curve = _pruning(policy, base, (len(model.blocks), model.config.heads), episodes, few, fractions)
            importance.append(found)
            curves.append(curve)
            bar.update(1)
    results = {name: _paired(per_condition[name], per_condition["off"], ctx.seed) for name in ["off", *names]}
    mean_curves = {order: {x: float(np.mean([c[order][x] for c in curves])) for x in curves[0][order]}
                   for order in curves[0]}

    figure = ctx.figure_path("pruning.png")
    fig, ax = plt.subplots(figsize=(5, 3.5))
    for order_name, curve in mean_curves.items():
        xs = sorted(curve, key=float)
        ax.plot([float(x) for x in xs], [curve[x] for x in xs], marker="o", label=f"by {order_name}")
    ax.set_xlabel("fraction of cross-attention heads removed")
    ax.set_ylabel(f"dev TC (%), mean of {len(policies)} policies")
    ax.legend()
    fig.tight_layout()
    fig.savefig(figure, dpi=120)
    plt.close(fig)

    def interval(r: dict[str, Any], metric: str) -> str:
        return f"{r[f'{metric}_delta']:+.1f} [{r[f'{metric}_low']:+.1f}, {r[f'{metric}_high']:+.1f}]"

    rows = [[name, r["episodes"], f"{r['tc']:.1f}", " / ".join(f"{x:.0f}" for x in r["tc_per_policy"]),
             interval(r, "tc") if name != "off" else "", f"{r['ndtw']:.1f}",
             interval(r, "ndtw") if name != "off" else ""] for name, r in results.items()]
    heads = list(importance[0])
    tables = [
        Table("Interventions on the policy's cross-attention (dev)",
              ["condition", "episodes", "TC %", "TC per policy", "ΔTC [95% CI]", "nDTW %", "ΔnDTW [95% CI]"], rows,
              note=f"{len(policies)} policies (one per training seed); paired two-stage bootstrap (policies, then "
                   f"episodes) against off. VAR sink dimensions per policy (calibrated on {cfg.calibration_episodes} "
                   f"train episodes, ratio >= {cfg.sink_ratio}): {sinks}; an empty list makes VAR the identity. "
                   f"{PRIVILEGE}."),
        Table("Head importance: TC change when one cross-attention head is masked",
              ["head", *[f"policy {i}" for i in range(len(policies))]],
              [[h, *[f"{imp[h]:+.1f}" for imp in importance]] for h in heads],
              note=f"On the first {few} dev episodes."),
        Table("Pruning: dev TC against the fraction of cross-attention heads removed",
              ["order", *[f"{f:g}" for f in [0.0, *fractions]]],
              [[order_name, *[f"{curve[f'{f:g}']:.1f}" for f in [0.0, *fractions]]]
               for order_name, curve in mean_curves.items()],
              note=f"Mean over {len(policies)} policies; importance: each policy's least important heads (largest "
                   "ΔTC) removed first; random: a seeded random order per policy."),
    ]
    return ExperimentResult(
        results={"conditions": results, "sink_dimensions": sinks, "importance": importance, "pruning": mean_curves,
                 "pruning_per_policy": curves, "checkpoints": [str(c) for c in checkpoints], "privileged": PRIVILEGE},
        tables=tables, plots=[figure.name])
