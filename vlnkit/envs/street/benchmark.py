"""Street navigation speed: graph load time, Gymnasium env steps/s, batched navigator steps/s.

``vlnkit bench street [--data-dir PATH]`` prints the result as one JSON line. Without a data folder it
uses a Touchdown-sized synthetic city (``size=large``, generated once and cached). The env benchmark
runs one ``gymnasium.make`` environment with feature observations and uniformly random actions,
resets included: ``env_steps_per_s`` without the privileged guidance in ``info`` (a random agent never
reads it) and ``env_steps_per_s_guided`` with the oracle action and goal distance computed every step.
The batched benchmark steps 1024 agents with random FORWARD/LEFT/RIGHT actions.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from collections.abc import Callable
from typing import Any

import gymnasium
import numpy as np

from vlnkit.envs.datasets import list_street_splits, read_graph
from vlnkit.envs.street.navigator import BatchedNavigator
from vlnkit.envs.street.panorama import FeatureArraySource, SceneFeatureSource


def timed_rate(step: Callable[[], int], seconds: float) -> float:
    """Call ``step`` (which returns how many units it did) for about ``seconds``; units per second."""
    done = 0
    start = time.perf_counter()
    while True:
        done += step()
        elapsed = time.perf_counter() - start
        if elapsed >= seconds:
            return done / elapsed


def _env_rate(env: gymnasium.Env, seed: int, seconds: float) -> float:
    """Steps per second of ``env`` under uniformly random non-STOP actions, resets included."""
    env.reset(seed=seed)
    actions = np.random.default_rng(seed).integers(1, env.action_space.n, size=100_000).tolist()
    cursor = [0]

    def chunk() -> int:
        for _ in range(1000):
            a = actions[cursor[0] % len(actions)]
            cursor[0] += 1
            _, _, terminated, truncated, _ = env.step(a)
            if terminated or truncated:
                env.reset()
        return 1000

    return timed_rate(chunk, seconds)


def run_street_benchmark(data_dir: str | Path | None = None, seconds: float = 3.0, batch: int = 1024,
                         semantics: str = "touchdown", seed: int = 0) -> dict[str, Any]:
    """Measure the street stack; returns ``graph_load_s``, ``env_steps_per_s``, ``batched_steps_per_s``."""
    import vlnkit  # noqa: F401  (registers the environments)

    if data_dir is None:
        from vlnkit.envs.synth import default_city

        data_dir = default_city(seed=0, size="large")
    data_dir = Path(data_dir)
    loads = []
    for _ in range(5):
        start = time.perf_counter()
        graph = read_graph(data_dir)
        loads.append(time.perf_counter() - start)

    scene = data_dir / "graph" / "scene.jsonl"
    with tempfile.TemporaryDirectory() as tmp:
        if scene.is_file():
            source: Any = SceneFeatureSource(scene)
        else:
            rng = np.random.default_rng(seed)
            np.save(Path(tmp) / "features.npy", rng.standard_normal((graph.num_nodes, 512), dtype=np.float32))
            (Path(tmp) / "index.txt").write_text("\n".join(graph.panoids) + "\n")
            source = FeatureArraySource(Path(tmp) / "features.npy", Path(tmp) / "index.txt")
        split = "dev" if "dev" in list_street_splits(data_dir) else list_street_splits(data_dir)[0]
        env_rates = {}
        for guidance in (False, True):
            env = gymnasium.make("vlnkit/Touchdown-v0", data_dir=data_dir, split=split, semantics=semantics,
                                 panorama=source, episode_kinds="all", guidance=guidance)
            env_rates[guidance] = _env_rate(env, seed, seconds)
            env.close()

    nav = BatchedNavigator(graph, semantics)  # type: ignore[arg-type]
    rng = np.random.default_rng(seed)
    nav.reset(rng.integers(0, graph.num_nodes, size=batch), rng.uniform(0, 360, size=batch))
    moves = rng.integers(1, 4, size=(256, batch))
    tick = [0]

    def batched_step() -> int:
        nav.step(moves[tick[0] % len(moves)])
        tick[0] += 1
        return batch

    batched_rate = timed_rate(batched_step, seconds)
    return {
        "data_dir": str(data_dir),
        "nodes": graph.num_nodes,
        "links": graph.num_links,
        "semantics": semantics,
        "graph_load_s": round(float(np.median(loads)), 4),
        "env_steps_per_s": round(env_rates[False]),
        "env_steps_per_s_guided": round(env_rates[True]),
        "batched_steps_per_s": round(batched_rate),
        "batch": batch,
    }
