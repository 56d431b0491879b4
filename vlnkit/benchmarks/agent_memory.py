"""What memory costs an agent: the modular agent's episode time per Mem4Nav memory variant against the same
agent without memory (``memory=none``) on the same episodes, in the same process.

``vlnkit bench agent_memory [--episodes N] [--split memory] [--variants full,stm_only,...] [--repeats R]``
prints one JSON line. The episodes are the first ``N`` of the synthetic city's ``split`` (the ``memory``
split by default: plain, count, return and loop routes in turn, so every memory part is exercised). Every
variant first runs one untimed episode (imports, caches), then each episode is timed with
``perf_counter`` from ``reset`` to the last step, ``repeats`` times, keeping each episode's fastest time
(the figure least disturbed by other work on a shared machine). torch runs on one thread, as in
evaluation workers.

Keys per variant ``v`` (``none`` included): ``ms_per_episode_{v}`` (mean over episodes of the fastest
time), ``ms_per_step_{v}``, ``task_completion_{v}`` (TC in %, to show the variants did different work);
and ``ms_per_episode_{v}_vs_none``, the ratio to the baseline. Target (#13): ``full`` within 2x of ``none``.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

QUICK = {"episodes": 12, "variants": "full"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``vlnkit bench agent_memory``."""
    parser.add_argument("--episodes", type=int, default=100, help="episodes of the split to time")
    parser.add_argument("--split", default="memory", help="synthetic city split")
    parser.add_argument("--variants", default="full,octree_only,graph_only,stm_only,ltm_only,oracle",
                        help="comma-separated memory variants (configs/memory/) to time against none")
    parser.add_argument("--repeats", type=int, default=2, help="timings per episode (the fastest is kept)")
    parser.add_argument("--seed", type=int, default=0)


def run(episodes: int = 100, split: str = "memory", variants: str = "full,octree_only,graph_only,stm_only,ltm_only,oracle",
        repeats: int = 2, seed: int = 0) -> dict[str, Any]:
    """Episode time per memory variant against ``none`` (see the module docstring)."""
    import numpy as np
    import torch

    from vlnkit.agents import create
    from vlnkit.config import load_config
    from vlnkit.eval.backends import num_actions, rollout
    from vlnkit.eval.runner import episode_seed
    from vlnkit.eval.tasks import get_task

    torch.set_num_threads(1)
    names = ["none", *[v.strip() for v in variants.split(",") if v.strip() and v.strip() != "none"]]
    base = load_config("eval", ["agent=modular", f"split={split}", f"seed={seed}"])
    task = get_task("street")
    data_dir = task.resolve_data_dir(base)
    env = task.make_env(base, data_dir)
    chosen = list(task.episodes(env))[:episodes]
    result: dict[str, Any] = {"name": "agent_memory",
                              "baseline": "memory=none: the same agent and episodes without memory",
                              "split": split, "episodes": len(chosen), "repeats": repeats}
    for name in names:
        cfg = load_config("eval", ["agent=modular", f"memory={name}", f"split={split}", f"seed={seed}"])
        agent = create(str(cfg.agent.name), cfg.agent, num_actions=num_actions(env.action_space))
        rollout(task, env, agent, chosen[0], seed)
        times, steps, completed = [], 0, 0.0
        for episode in chosen:
            best = float("inf")
            for _ in range(max(1, repeats)):
                start = time.perf_counter()
                record = rollout(task, env, agent, episode, episode_seed(seed, episode.episode_id))
                best = min(best, time.perf_counter() - start)
            times.append(best)
            steps += len(record["actions"])
            completed += record["metrics"]["task_completion"]
        result[f"ms_per_episode_{name}"] = round(1000.0 * float(np.mean(times)), 3)
        result[f"ms_per_step_{name}"] = round(1000.0 * float(np.sum(times)) / max(steps, 1), 4)
        result[f"task_completion_{name}"] = round(100.0 * completed / max(len(chosen), 1), 1)
    for name in names[1:]:
        result[f"ms_per_episode_{name}_vs_none"] = round(result[f"ms_per_episode_{name}"]
                                                         / result["ms_per_episode_none"], 3)
    return result
