"""Continuous navigation speed: env steps with RGB-D and panoramas against bare renders in the same run,
plus scene build time and geodesic queries.

``vlnkit bench continuous [--seconds S] [--seed N]`` prints :func:`run`'s result as one JSON line:

- ``rgbd_steps_per_s``: ``gymnasium.make("vlnkit/VLNCE-v0")`` steps per second on one synthetic house in
  one process, RGB 224x224 + depth 256x256 rendered every step, uniformly random movement actions
  (resets included), without the privileged guidance (``rgbd_steps_per_s_guided`` with it);
- ``panoramas_per_s``: 12-view panoramas (RGB + depth + semantic, 224x224 each) per second at random
  floor points of that house;
- ``scene_build_s``: loading a ``.glb`` of at least 100k triangles (a synthetic house whose meshes are
  subdivided) plus computing its navigable floor (median of 3);
- ``geodesic_query_ms``: one geodesic distance query between random floor points once the goal's field
  is computed.

Baseline: ``renders_per_s``, the backend's bare ``render()`` (the env's RGB and depth sensors, one pose,
no env step) at the same floor points; ``rgbd_steps_per_s_vs_render``,
``rgbd_steps_per_s_guided_vs_render`` and ``panoramas_per_s_vs_render`` divide by it. ``scene_build_s``
and ``geodesic_query_ms`` are absolute figures.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

import gymnasium
import numpy as np

from vlnkit.benchmarks.street import timed_rate

BENCH_TRIANGLES = 100_000
BASELINE = "render: the backend's bare RGB-D render() at the same floor points (no env step)"
QUICK = {"seconds": 1.0}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """``--seconds``, ``--seed``."""
    parser.add_argument("--seconds", type=float, default=3.0, help="time spent on each rate")
    parser.add_argument("--seed", type=int, default=0)


def _env_rate(env: gymnasium.Env, seed: int, seconds: float) -> float:
    env.reset(seed=seed)
    actions = np.random.default_rng(seed).integers(1, 4, size=10_000).tolist()
    cursor = [0]

    def chunk() -> int:
        for _ in range(20):
            _, _, terminated, truncated, _ = env.step(actions[cursor[0] % len(actions)])
            cursor[0] += 1
            if terminated or truncated:
                env.reset()
        return 20

    env.step(1)
    return timed_rate(chunk, seconds)


def heavy_house_glb(path: Path, seed: int = 0, triangles: int = BENCH_TRIANGLES) -> int:
    """Write a synthetic house whose meshes are subdivided (largest faces first) until the scene has at
    least ``triangles`` triangles; returns the count."""
    import trimesh

    from vlnkit.envs.synth.house_layout import furnish_house, house_scene, plan_house

    rng = np.random.default_rng(seed)
    layout = plan_house(rng, "bench_house")
    furnish_house(rng, layout)
    scene = house_scene(layout)
    total = sum(len(g.faces) for g in scene.geometry.values())
    while total < triangles:
        name = max(scene.geometry, key=lambda n: scene.geometry[n].area / len(scene.geometry[n].faces))
        mesh = scene.geometry[name]
        finer = mesh.subdivide()
        finer.visual = trimesh.visual.TextureVisuals(material=mesh.visual.material)
        finer.metadata = mesh.metadata
        total += len(finer.faces) - len(mesh.faces)
        scene.geometry[name] = finer
    path.write_bytes(scene.export(file_type="glb"))
    return total


def run(seconds: float = 3.0, seed: int = 0) -> dict[str, Any]:
    """Measure the continuous-navigation stack (see the module docstring); returns a JSON-able dict."""
    import vlnkit.envs.continuous  # noqa: F401  (registers the environment)
    from vlnkit.envs.continuous.mesh_backend import load_scene
    from vlnkit.envs.synth.houses import generate_houses

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        summary = generate_houses(root / "houses", seed, 1, {"train": 4, "val_seen": 1, "val_unseen": 4, "test": 1})
        rates = {}
        for guidance in (False, True):
            env = gymnasium.make("vlnkit/VLNCE-v0", data_dir=root / "houses", split="val_unseen", guidance=guidance)
            rates[guidance] = _env_rate(env.unwrapped, seed, seconds)
            if guidance:
                backend = env.unwrapped.backend
            else:
                env.close()

        rng = np.random.default_rng(seed)
        points = [backend.sample_navigable_point(rng) for _ in range(64)]
        cursor = [0]

        def panorama() -> int:
            backend.set_agent_state(points[cursor[0] % len(points)], [0.0, 0.0, 0.0, 1.0])
            cursor[0] += 1
            backend.render_panorama(12, 224, 224)
            return 1

        panorama()
        panoramas = timed_rate(panorama, seconds)

        def render() -> int:
            backend.set_agent_state(points[cursor[0] % len(points)], [0.0, 0.0, 0.0, 1.0])
            cursor[0] += 1
            backend.render()
            return 1

        render()
        renders = timed_rate(render, seconds)

        goal = points[0]
        backend.geodesic_distance(points[1], [goal])
        queries = points * 50
        start = time.perf_counter()
        for p in queries:
            backend.geodesic_distance(p, [goal])
        query_ms = (time.perf_counter() - start) / len(queries) * 1000.0
        env.close()

        heavy = root / "heavy.glb"
        triangles = heavy_house_glb(heavy, seed)
        builds = []
        for _ in range(3):
            start = time.perf_counter()
            scene = load_scene(heavy)
            builds.append(time.perf_counter() - start)
        cells = scene.navmesh.num_cells
    return {
        "baseline": BASELINE,
        "rgbd_steps_per_s": round(rates[False], 1),
        "rgbd_steps_per_s_guided": round(rates[True], 1),
        "panoramas_per_s": round(panoramas, 1),
        "renders_per_s": round(renders, 1),
        "rgbd_steps_per_s_vs_render": round(rates[False] / renders, 4),
        "rgbd_steps_per_s_guided_vs_render": round(rates[True] / renders, 4),
        "panoramas_per_s_vs_render": round(panoramas / renders, 4),
        "scene_build_s": round(float(np.median(builds)), 3),
        "geodesic_query_ms": round(query_ms, 4),
        "scene_triangles": triangles,
        "navigable_cells": cells,
        "house_rooms": summary["rooms"],
        "rgb": [224, 224],
        "depth": [256, 256],
        "seconds": seconds,
    }
