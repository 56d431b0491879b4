"""``vlnkit bench runner``: episodes per second on Ray with one and two actors against the in-process
backend on the same episodes, and how Ray scales.

One agent on the built-in synthetic city (or a given release), whose ``act`` burns a fixed ``work_ms``
of CPU (the ``busy`` agent registered here, a stand-in for a model's forward pass), so that throughput
is set by the agent and adding a worker should add a core's worth of episodes. The same episodes run
in process, then on a local Ray cluster (or ``ray_address``) with one and with two actors. Each backend
first runs one episode per worker untimed (start-up, caches), then the timed episodes.

Baseline: the in-process backend (one worker, no Ray) on the same episodes in the same run.

Keys of the result: ``episodes_per_s_inprocess``, ``episodes_per_s_ray_1``, ``episodes_per_s_ray_2``,
``episodes_per_s_ray_1_vs_inprocess`` and ``episodes_per_s_ray_2_vs_inprocess`` (the Ray rates over the
in-process one), ``scaling_efficiency`` (the two-actor speed-up over one actor, divided by 2: 1.0 is
perfect scaling), ``ray_overhead_ms_per_episode`` (time per episode on one Ray actor minus in process),
and the set-up: ``num_episodes``, ``work_ms``, ``mean_steps``, ``cpus``.

``vlnkit bench runner [--episodes N] [--work-ms MS] [--data-dir PATH] [--ray-address ADDR]``.
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Sequence
from typing import Any

from omegaconf import DictConfig

from vlnkit.agents import register
from vlnkit.agents.baselines import RandomAgent
from vlnkit.config import load_config, to_container
from vlnkit.eval.backends import Backend, EpisodeWorker, InProcessBackend, RayBackend, WorkerSpec
from vlnkit.eval.runner import episode_seed, run_episodes
from vlnkit.eval.tasks import get_task

MODULE = __name__
"""Workers import this module (``imports=[...]``) to register the ``busy`` agent."""
BASELINE = "inprocess: 1 in-process worker (no Ray) on the same episodes"
QUICK = {"num_episodes": 12}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """``--episodes``, ``--work-ms``, ``--data-dir``, ``--ray-address``."""
    parser.add_argument("--episodes", dest="num_episodes", type=int, default=60)
    parser.add_argument("--work-ms", type=float, default=5.0, help="CPU work per agent action, in milliseconds")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--ray-address", default=None, help="an existing Ray cluster (default: a local one)")


class BusyAgent(RandomAgent):
    """The random agent, spinning the CPU for ``work_ms`` before each action."""

    def __init__(self, num_actions: int, work_ms: float) -> None:
        super().__init__(num_actions)
        self.work_s = work_ms / 1000.0

    def act(self, observation: dict[str, Any], info: dict[str, Any] | None = None) -> int:
        """Burn ``work_ms`` of CPU, then act randomly."""
        end = time.perf_counter() + self.work_s
        while time.perf_counter() < end:
            pass
        return super().act(observation, info)


@register("busy")
def _busy(cfg: DictConfig, num_actions: int) -> BusyAgent:
    return BusyAgent(num_actions, work_ms=float(cfg.get("work_ms", 5.0)))


def _episodes_per_s(backend: Backend, jobs: Sequence[tuple[str, int]]) -> tuple[float, list[dict[str, Any]]]:
    """Warm ``backend`` up with one job per worker, then time ``jobs``; returns the rate and the records."""
    for _ in run_episodes(backend, jobs[: backend.capacity], max_retries=0):
        pass
    start = time.perf_counter()
    results = [result for result, _ in run_episodes(backend, jobs, max_retries=0)]
    elapsed = time.perf_counter() - start
    failed = [r.error for r in results if r.record is None]
    if failed:
        raise RuntimeError(f"benchmark episodes failed: {failed[0]}")
    return len(jobs) / elapsed, [r.record for r in results if r.record is not None]


def run(num_episodes: int = 60, work_ms: float = 5.0, data_dir: str | None = None,
                         ray_address: str | None = None) -> dict[str, Any]:
    """Measure the backends as the module docstring describes; returns the figures as a dict."""
    import ray

    overrides = ["agent=random", "agent.name=busy", f"+agent.work_ms={work_ms}", f"imports=[{MODULE}]",
                 f"limit={num_episodes}", "progress=false"]
    if data_dir is not None:
        overrides.append(f"data_dir={data_dir}")
    cfg = load_config("eval", overrides)
    task = get_task(str(cfg.task.kind))
    root = task.resolve_data_dir(cfg)
    env = task.make_env(cfg, root)
    episodes = list(task.episodes(env))[:num_episodes]
    jobs = [(ep.episode_id, episode_seed(int(cfg.seed), ep.episode_id)) for ep in episodes]
    resolved = to_container(cfg)
    spec = WorkerSpec(resolved, str(root), (MODULE,))

    rate_inprocess, records = _episodes_per_s(InProcessBackend(EpisodeWorker(spec, env=env)), jobs)
    started_ray = not ray.is_initialized()
    if started_ray:
        if ray_address:
            ray.init(address=ray_address)
        else:
            ray.init(num_cpus=2, include_dashboard=False)
    rates = {}
    try:
        for workers in (1, 2):
            backend = RayBackend(spec, workers)
            try:
                rates[workers], _ = _episodes_per_s(backend, jobs)
            finally:
                backend.close()
    finally:
        if started_ray:
            ray.shutdown()
    return {
        "baseline": BASELINE,
        "episodes_per_s_inprocess": round(rate_inprocess, 2),
        "episodes_per_s_ray_1": round(rates[1], 2),
        "episodes_per_s_ray_2": round(rates[2], 2),
        "episodes_per_s_ray_1_vs_inprocess": round(rates[1] / rate_inprocess, 3),
        "episodes_per_s_ray_2_vs_inprocess": round(rates[2] / rate_inprocess, 3),
        "scaling_efficiency": round(rates[2] / (2 * rates[1]), 3),
        "ray_overhead_ms_per_episode": round(1000.0 / rates[1] - 1000.0 / rate_inprocess, 2),
        "num_episodes": len(jobs),
        "work_ms": work_ms,
        "mean_steps": round(sum(len(r["actions"]) for r in records) / len(records), 1),
        "cpus": os.cpu_count(),
    }
