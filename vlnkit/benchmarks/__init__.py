"""vlnkit's benchmarks, one module each, run as ``vlnkit bench NAME [--option value ...]`` or ``vlnkit bench all``.

Every benchmark prints one JSON line that starts with ``"name"`` and has a ``"baseline"`` key: what the
same run compares against (``"none: absolute figures"`` where nothing does). A figure measured against a
same-run baseline also comes as a ratio, ``<figure>_vs_<baseline>`` = the figure divided by the baseline's
figure in the same unit (a rate above 1, or a time below 1, is faster than the baseline), so figures from
a shared or different machine stay comparable. A benchmark that needs hardware this machine lacks prints
``{"name": ..., "skipped": "why", "baseline": ...}`` and succeeds.

A benchmark module has

* ``run(**options) -> dict``: measures and returns its JSON-serialisable figures, ``baseline`` included;
* ``add_arguments(parser)`` (optional): its command-line options, each ``dest`` one of ``run``'s keywords;
* ``QUICK`` (optional): the options ``vlnkit bench all`` runs it with (default: ``run``'s own defaults).

Adding a benchmark is adding its module and one line to :data:`BENCHMARKS`.
"""

from __future__ import annotations

import argparse
import importlib
from collections.abc import Sequence
from types import ModuleType
from typing import Any

BENCHMARKS: dict[str, tuple[str, str]] = {
    "street": ("vlnkit.benchmarks.street", "street graph load, env and batched steps/s vs the bare navigator"),
    "continuous": ("vlnkit.benchmarks.continuous", "RGB-D steps/s, panoramas/s vs bare renders; scene build, geodesic"),
    "geodesics": ("vlnkit.benchmarks.geodesics", "geodesic error vs an exact shapely solver; query ms; the grid metric's error"),
    "memory": ("vlnkit.benchmarks.memory", "Mem4Nav step latency vs brute-force top-3; octree vs open3d"),
    "agent_memory": ("vlnkit.benchmarks.agent_memory", "modular agent episode ms per memory variant vs memory=none"),
    "ltm_recall": ("vlnkit.benchmarks.ltm_recall", "LTM recall@m at revisits on the modular agent's views, trained vs untrained"),
    "runner": ("vlnkit.benchmarks.runner", "episodes/s on Ray with 1 and 2 workers vs in-process"),
    "attention": ("vlnkit.benchmarks.attention", "CUDA: lightning, fla and sparse attention times vs SDPA"),
    "vlncm_asp": ("vlnkit.benchmarks.vlncm_asp", "spot predictor precision/recall vs the generators' ground truth"),
    "vlncm_views": ("vlnkit.benchmarks.vlncm_views", "view-selection accuracy of each scorer vs chance"),
    "perception_flicker": ("vlnkit.benchmarks.perception_flicker", "learned street labels' flicker along routes with FloAt vs without"),
    "policy_attention": ("vlnkit.benchmarks.policy_attention", "FLAME policy ms per decision per self-attention mixer vs softmax; attention hook cost"),
    "perception": ("vlnkit.benchmarks.perception", "backbones: params, GMACs, 12-view panorama ms vs rendering it, train images/s"),
}
"""Benchmark name -> (module, one-line description), in the order ``vlnkit bench all`` runs them."""


def load(name: str) -> ModuleType:
    """The module of benchmark ``name`` (KeyError for an unknown name)."""
    return importlib.import_module(BENCHMARKS[name][0])


def parse_options(name: str, argv: Sequence[str]) -> dict[str, Any]:
    """``run`` keywords of benchmark ``name`` from command-line options (``--help`` describes them)."""
    module = load(name)
    parser = argparse.ArgumentParser(prog=f"vlnkit bench {name}", description=module.__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    if hasattr(module, "add_arguments"):
        module.add_arguments(parser)
    return vars(parser.parse_args(list(argv)))


def run_benchmark(name: str, quick: bool = False, **options: Any) -> dict[str, Any]:
    """Run benchmark ``name`` (with its ``QUICK`` options under ``quick``, then ``options``); its result with
    ``name`` first."""
    module = load(name)
    result = module.run(**{**(getattr(module, "QUICK", {}) if quick else {}), **options})
    if "baseline" not in result:
        raise RuntimeError(f"benchmark {name} reported no 'baseline' (see vlnkit/benchmarks/__init__.py)")
    return {"name": name, **{key: value for key, value in result.items() if key != "name"}}
