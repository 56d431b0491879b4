"""Cost of the vision backbones on this machine: size, compute, panorama inference and training throughput.

    vlnkit bench perception [--models pp_mobileseg_tiny,cswin_t,...] [--repeats 3]

Per model (built by name with no arguments, as published; ``--num-classes`` sets the class count of the
segmentation models, 32 by default as ``vlnkit data perception`` labels houses): ``params``; ``gmacs_224``, the
multiply-accumulates of one 224 x 224 view counted with FlopCounterMode (conv/matmul only, FLOPs / 2, the
papers' convention); ``panorama_ms_1thread`` and ``panorama_ms_2threads``, the median time of one forward pass
over a 12-view panorama (batch 12 at 224 x 224, no gradients) on 1 and 2 torch threads; ``train_images_per_s``,
forward + backward + AdamW step on batches of 8 views at 224 on 2 threads.

Baseline: the same panorama rendered by the houses environment (12 RGB-D views of 224 x 224 on this machine's
renderer, ``render_ms``); ``panorama_ms_1thread_vs_render`` divides the model's one-thread panorama time by it,
so learned perception costs an agent less than its rendering where the ratio is below 1.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from typing import Any

import numpy as np
import torch

from vlnkit.perception.backbones import create_model
from vlnkit.perception.backbones.layers import count_gmacs, count_parameters

BASELINE = "render_ms: the houses environment rendering the same 12-view 224x224 RGB-D panorama"
QUICK = {"models": "pp_mobileseg_tiny", "repeats": 2}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Which models, how many repeats."""
    parser.add_argument("--models", default="pp_mobileseg_tiny,overlock_xt,cswin_t,sparsifiner_s,dependencyvit_t",
                        help="comma-separated registered backbone names")
    parser.add_argument("--repeats", type=int, default=3, help="timed repeats per figure (the median is reported)")
    parser.add_argument("--num-classes", dest="num_classes", type=int, default=32,
                        help="class count of the segmentation models")


def _median_ms(fn: Any, repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1000.0)
    return statistics.median(times)


def render_ms(repeats: int) -> float:
    """Median time of rendering one 12-view 224 x 224 RGB-D panorama of a synthetic house."""
    from vlnkit.envs.continuous.backend import AgentSpec
    from vlnkit.envs.continuous.geometry import quat_from_yaw
    from vlnkit.envs.continuous.mesh_backend import MeshBackend
    from vlnkit.perception.scorers.synthetic import synthetic_house_scenes

    with tempfile.TemporaryDirectory(prefix="vlnkit-bench-perception-") as work:
        scene = next(synthetic_house_scenes(0, [0], work))
        backend = MeshBackend(sensors=(), agent=AgentSpec())
        try:
            backend.load_scene(scene)
            backend.set_agent_state(backend.sample_navigable_point(np.random.default_rng(0)), quat_from_yaw(0.0))
            return _median_ms(lambda: backend.render_panorama(12, 224, 224, 90.0), repeats)
        finally:
            backend.close()


def measure(name: str, repeats: int, num_classes: int) -> dict[str, Any]:
    """The figures of one model (see the module docstring)."""
    torch.manual_seed(0)
    kwargs = {"num_classes": num_classes} if name.startswith("pp_mobileseg") else {}
    model = create_model(name, **kwargs)
    height, width = 224, 224
    view = torch.randn(1, 3, height, width)
    model.eval()
    out: dict[str, Any] = {"params": count_parameters(model),
                           "gmacs_224": round(count_gmacs(model, view), 3)}
    panorama = torch.randn(12, 3, height, width)
    threads = torch.get_num_threads()
    try:
        for n in (1, 2):
            torch.set_num_threads(n)
            with torch.no_grad():
                out[f"panorama_ms_{n}thread{'s' if n > 1 else ''}"] = round(_median_ms(lambda: model(panorama), repeats), 1)
        model.train()
        optimiser = torch.optim.AdamW(model.parameters(), lr=1e-4)
        batch = torch.randn(8, 3, height, width)

        def step() -> None:
            result = model(batch)
            loss = (result if isinstance(result, torch.Tensor) else sum(m.float().mean() for m in result)).float().square().mean()
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()

        out["train_images_per_s"] = round(8000.0 / _median_ms(step, repeats), 1)
    finally:
        torch.set_num_threads(threads)
    return out


def run(models: str = "pp_mobileseg_tiny,overlock_xt,cswin_t,sparsifiner_s,dependencyvit_t", repeats: int = 3,
        num_classes: int = 32) -> dict[str, Any]:
    """Measure every model of ``models`` against the same-run render baseline."""
    base = render_ms(repeats)
    result: dict[str, Any] = {"baseline": BASELINE, "render_ms": round(base, 1)}
    for name in [m.strip() for m in models.split(",") if m.strip()]:
        figures = measure(name, repeats, num_classes)
        figures["panorama_ms_1thread_vs_render"] = round(figures["panorama_ms_1thread"] / base, 3)
        result[name] = figures
    return result
