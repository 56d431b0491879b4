"""Street navigation speed: graph load time, Gymnasium env steps/s and batched navigator steps/s, each
against the bare single-agent navigator's steps/s measured in the same run.

``vlnkit bench street [--data-dir PATH] [--seconds S]`` prints the result as one JSON line. Without a data
folder it uses a Touchdown-sized synthetic city (``size=large``, generated once and cached). The env
benchmark runs one ``gymnasium.make`` environment with feature observations and uniformly random actions,
resets included: ``env_steps_per_s`` without the privileged guidance in ``info`` (a random agent never reads
it) and ``env_steps_per_s_guided`` with the oracle action and goal distance computed every step. The
batched benchmark steps ``batch`` (1024) agents with random FORWARD/LEFT/RIGHT actions.

Baseline: ``navigator_steps_per_s``, one :class:`StreetNavigator` stepped with the same kind of random
actions on the same graph (no environment, no observations, no resets): what a step costs at least.
``env_steps_per_s_vs_navigator``, ``env_steps_per_s_guided_vs_navigator`` and
``batched_steps_per_s_vs_navigator`` divide by it (agent-steps for the batched one). ``graph_load_s`` is an
absolute figure (median of 5 loads).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import gymnasium
import numpy as np

from vlnkit.envs.datasets import list_street_splits, read_graph
from vlnkit.envs.street.navigator import BatchedNavigator, StreetNavigator
from vlnkit.envs.street.panorama import FeatureArraySource, SceneFeatureSource

BASELINE = "navigator: a bare StreetNavigator stepped with random moves on the same graph (no env)"
QUICK = {"seconds": 1.0}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """``--data-dir``, ``--seconds``."""
    parser.add_argument("--data-dir", default=None, help="release folder (default: a Touchdown-sized synthetic city)")
    parser.add_argument("--seconds", type=float, default=3.0, help="time spent on each rate")


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


def _navigator_rate(nav: StreetNavigator, seed: int, seconds: float) -> float:
    """Steps per second of one bare navigator under uniformly random non-STOP actions."""
    rng = np.random.default_rng(seed)
    actions = rng.integers(1, nav.num_actions, size=100_000).tolist()
    state = [nav.start(int(rng.integers(nav.graph.num_nodes)), float(rng.uniform(0, 360)))]
    cursor = [0]

    def chunk() -> int:
        s = state[0]
        for _ in range(1000):
            s, _ = nav.step(s, actions[cursor[0] % len(actions)])
            cursor[0] += 1
        state[0] = s
        return 1000

    return timed_rate(chunk, seconds)


def run(data_dir: str | Path | None = None, seconds: float = 3.0, batch: int = 1024,
        semantics: str = "touchdown", seed: int = 0) -> dict[str, Any]:
    """Measure the street stack (see the module docstring); returns a JSON-able dict."""
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

    navigator_rate = _navigator_rate(StreetNavigator(graph, semantics), seed, seconds)  # type: ignore[arg-type]
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
        "baseline": BASELINE,
        "data_dir": str(data_dir),
        "nodes": graph.num_nodes,
        "links": graph.num_links,
        "semantics": semantics,
        "graph_load_s": round(float(np.median(loads)), 4),
        "env_steps_per_s": round(env_rates[False]),
        "env_steps_per_s_guided": round(env_rates[True]),
        "batched_steps_per_s": round(batched_rate),
        "navigator_steps_per_s": round(navigator_rate),
        "env_steps_per_s_vs_navigator": round(env_rates[False] / navigator_rate, 4),
        "env_steps_per_s_guided_vs_navigator": round(env_rates[True] / navigator_rate, 4),
        "batched_steps_per_s_vs_navigator": round(batched_rate / navigator_rate, 2),
        "batch": batch,
        "seconds": seconds,
    }
