"""``attention_analysis`` (also ``vlnkit analyze attention``): what each attention head of a trained policy
reads, from maps captured on real rollouts (#14 item 2).

The policy agent of ``checkpoint`` runs ``episodes`` episodes of ``split`` with a
:class:`~vlnkit.perception.attention.Capture` on every cross-attention site. Per (layer, head), at the
decision token (query 0): the share of attention on each latent segment (instruction slots, sub-goals, the
views, the history, the memory tokens), the entropy of its row in nats, and the vision-aware head divergence
VHD (:func:`~vlnkit.perception.attention.interventions.head_divergence`) at each episode's first step
against the same step with a null panorama (VHR's head choice). The pruning-based head importance of the
same policy is the ``policy_attention`` experiment's. Output: a table per analysis, ``segments.png`` (a
head x segment heatmap) and the arrays in ``results.json``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from omegaconf import DictConfig  # noqa: E402

from vlnkit.agents.policy.agent import build_policy_agent  # noqa: E402
from vlnkit.agents.policy.attention import CROSS  # noqa: E402
from vlnkit.eval.api import evaluate  # noqa: E402
from vlnkit.eval.experiments.runner import ExperimentContext, ExperimentResult, Table  # noqa: E402
from vlnkit.perception.attention import Capture, attach  # noqa: E402

SEGMENTS = ("instruction", "subgoals", "views", "history", "memory")


def _segment_shares(probs: torch.Tensor, segments: dict[str, slice]) -> np.ndarray:
    """``(H, len(SEGMENTS))`` attention mass of the decision token per segment (the views summed)."""
    row = probs[0, :, 0]
    out = np.zeros((row.shape[0], len(SEGMENTS)))
    for name, where in segments.items():
        column = SEGMENTS.index("views") if name.startswith("view") else SEGMENTS.index(name)
        out[:, column] += row[:, where].sum(-1).float().numpy()
    return out


class _FirstStepVHD:
    """Wraps the agent's decision so that each episode's first step also runs on a null panorama, recording
    VHD per site and head."""

    def __init__(self, agent: Any) -> None:
        self.agent, self.divergence = agent, {}
        inner = agent.attention.decide

        def decide(fn, panorama, links):  # noqa: ANN001, ANN202 - PolicyAttention.decide's signature
            if agent.steps == 0:
                for site, (vhd, _) in agent.attention.vision_divergence(fn, panorama, links).items():
                    self.divergence.setdefault(site, []).append(vhd.numpy())
            return inner(fn, panorama, links)

        agent.attention.decide = decide


def run(cfg: DictConfig, ctx: ExperimentContext) -> ExperimentResult:
    """Capture the policy's cross-attention on rollouts and summarise it per head (module docstring)."""
    if str(cfg.model) != "policy":
        raise ValueError(f"attention_analysis: model={cfg.model!r} is not supported yet; expected 'policy'")
    checkpoint = Path(str(cfg.checkpoint)).expanduser()
    if not checkpoint.is_file():
        raise FileNotFoundError(f"attention_analysis: no policy checkpoint at {checkpoint} (config key 'checkpoint'); "
                                f"train one with `vlnkit train policy out={checkpoint}`")
    state = ctx.load_state("summary")
    if state is None:
        agent = build_policy_agent({"checkpoint": str(checkpoint), "memory": str(cfg.memory)}, num_actions=4)
        vhd = _FirstStepVHD(agent)
        capture = Capture()
        with ctx.bar(1, desc="attention_analysis rollouts") as bar, attach(agent.model, CROSS, capture):
            evaluate(agent, task=str(cfg.task), split=str(cfg.split), limit=int(cfg.episodes), seed=ctx.seed,
                     out=str(ctx.run_dir / "rollouts"), progress=False, overrides=[f"memory={cfg.memory}"])
            bar.update(1)
        shares, entropy = {}, {}
        for site, records in capture.calls.items():
            decisions = [r for r in records if r.probs is not None]
            shares[site] = np.mean([_segment_shares(r.probs, r.call.key_segments) for r in decisions], axis=0).tolist()
            rows = [r.probs[0, :, 0].float() for r in decisions]     # (H, latents); the history grows
            entropy[site] = torch.stack([-(p * p.clamp_min(1e-12).log()).sum(-1) for p in rows]).mean(0).tolist()
        state = {"shares": shares, "entropy": entropy, "steps": len(next(iter(capture.calls.values()))),
                 "vhd": {site: np.mean(v, axis=0).tolist() for site, v in vhd.divergence.items()},
                 "episodes_with_vhd": len(next(iter(vhd.divergence.values()), []))}
        ctx.save_state("summary", state)

    sites = sorted(state["shares"])
    labels = [f"L{site.split('.')[1]} H{h}" for site in sites for h in range(len(state["shares"][site]))]
    matrix = np.array([row for site in sites for row in state["shares"][site]])
    figure = ctx.figure_path("segments.png")
    fig, ax = plt.subplots(figsize=(6, 0.35 * len(labels) + 1.5))
    image = ax.imshow(matrix, aspect="auto", cmap="viridis", vmin=0.0, vmax=1.0)
    ax.set_xticks(range(len(SEGMENTS)), SEGMENTS)
    ax.set_yticks(range(len(labels)), labels)
    fig.colorbar(image, ax=ax, label="decision-token attention share")
    fig.tight_layout()
    fig.savefig(figure, dpi=120)
    plt.close(fig)

    rows = []
    for site in sites:
        for h, shares in enumerate(state["shares"][site]):
            rows.append([site, h, *[f"{s:.2f}" for s in shares], f"{state['entropy'][site][h]:.2f}",
                         f"{state['vhd'].get(site, [float('nan')] * (h + 1))[h]:.3f}"])
    table = Table("Decision-token cross-attention per head", ["site", "head", *SEGMENTS, "entropy (nats)", "VHD"], rows,
                  note=f"{state['steps']} decisions of {cfg.episodes} {cfg.split} episodes; VHD at the "
                       f"{state['episodes_with_vhd']} episode starts against a null panorama. Checkpoint {checkpoint}; "
                       "the policy's panorama features are the simulator's landmark labels (privileged perception).")
    return ExperimentResult(results={**state, "checkpoint": str(checkpoint), "segments": list(SEGMENTS)},
                            tables=[table], plots=[figure.name])
