"""LTM recall at revisits on an agent's own embeddings: does a read at a place the agent has been to
before return that place's token among the top ``m``?

The modular agent's memory layout (its embedding and descriptor sizes, LTM settings and view codec, as
`vlnkit train ltm` takes them) is trained with `vlnkit train ltm` on the synthetic city's train split for
``steps`` steps. Then the gold agent walks dev episodes along their reference routes (with the loops
and returns that revisit places); each step's view is written to the
token of its street node (positions rounded to a metre: nodes are about 10 m apart), and before that
write, at a revisit (the node was written before, and not at the previous step, which is turning on the
spot), a read with that view and position is scored a hit when the node's token is among the top ``m``.

Same-run baselines: the same LTM untrained (its seeded initial weights: what the agents read with when
``ltm_weights`` is null) and chance (``m`` over the number of places written so far, averaged over the
revisits). Figures: ``recall_at_m_trained``, ``recall_at_m_untrained``, ``chance``, ``revisits`` and the
ratio ``trained_vs_untrained``.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

QUICK = {"steps": 300, "train_episodes": 60, "episodes": 40}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``vlnkit bench ltm_recall``."""
    parser.add_argument("--steps", type=int, default=2000, help="training steps of `vlnkit train ltm`")
    parser.add_argument("--train-episodes", type=int, default=None, help="train episodes (default: all)")
    parser.add_argument("--episodes", type=int, default=100, help="dev episodes to measure on")
    parser.add_argument("--m", type=int, default=3, help="top m of a read")
    parser.add_argument("--seed", type=int, default=0)


def run(steps: int = 2000, train_episodes: int | None = None, episodes: int = 100, m: int = 3,
        seed: int = 0) -> dict[str, Any]:
    """Recall at ``m`` at revisits, trained against untrained (see the module docstring)."""
    import torch

    from vlnkit.config import load_config
    from vlnkit.memory.ltm import LongTermMemory
    from vlnkit.memory.train import agent_memory_layout, collect_street_trajectories, train_agent_ltm

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "ltm.pt"
        overrides = [f"out={out}", f"train.steps={steps}", "progress=false", f"seed={seed}",
                     f"train.checkpoint_every={max(steps, 1)}"]
        if train_episodes is not None:
            overrides.append(f"episodes={train_episodes}")
        cfg = load_config("train_ltm", overrides)
        train_agent_ltm(cfg)
        trained = torch.load(out, weights_only=True)["model"]
    layout = agent_memory_layout(cfg.agent)
    trajectories = collect_street_trajectories(None, "dev", episodes, seed, layout.embed, progress=False,
                                               describe=layout.describe, teacher="gold")
    result: dict[str, Any] = {"name": "ltm_recall", "agent": str(cfg.agent.name),
                              "baseline": "the same LTM untrained (seeded initial weights), and chance",
                              "dim": layout.dim, "train_steps": steps, "m": m}
    for label, weights in (("untrained", None), ("trained", trained)):
        torch.manual_seed(seed)
        memory = LongTermMemory(layout.dim, layout.descriptor_dim, layout.ltm)
        if weights is not None:
            memory.model.load_state_dict(weights)
        hits, chance = _recall(memory, trajectories, m)
        result[f"recall_at_m_{label}"] = round(float(np.mean(hits)), 4) if hits else None
        result["revisits"] = len(hits)
        result["chance"] = round(float(np.mean(chance)), 4) if chance else None
    if result["recall_at_m_untrained"]:
        result["trained_vs_untrained"] = round(result["recall_at_m_trained"] / result["recall_at_m_untrained"], 3)
    return result


def _recall(memory: Any, trajectories: list, m: int) -> tuple[list[bool], list[float]]:
    """Per revisit, whether the read found the place's token in the top ``m``, and chance there."""
    hits: list[bool] = []
    chance: list[float] = []
    for trajectory in trajectories:
        memory.clear()
        keys: dict[tuple[int, int], int] = {}
        written: set[int] = set()
        previous = None
        for v, p in zip(trajectory.embeddings, trajectory.positions):
            key = keys.setdefault((int(round(p[0])), int(round(p[1]))), len(keys))
            if key in written and key != previous:
                found = memory.read(v, p, m=m)
                hits.append(bool(key in found.keys.tolist()))
                chance.append(min(1.0, m / len(written)))
            memory.write(np.array([key]), v[None])
            written.add(key)
            previous = key
    return hits, chance
