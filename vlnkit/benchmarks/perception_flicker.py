"""Label flicker of learned street perception along routes, with FloAt's flow-warped attention blend and
without it (:mod:`vlnkit.perception.temporal`).

``vlnkit bench perception_flicker --weights RUN [--episodes 20] [--split dev] [--lams 1,0.8,0.6,0.4]``
prints one JSON line (without ``--weights``: a ``skipped`` line). A readout trained with ``vlnkit train perception objective=readout`` reads the rendered
panoramas of the synthetic city ``--city-seed`` (0: unseen by the default training cities) node by node along
the gold routes of the first ``episodes`` episodes of ``split``; ``lam`` is FloAt's weight of the current
attention (1: the plain model). A label is "a landmark of category c is in sector s" (closeness at least
``--visible``, 0.2, the modular agent's threshold); labels are in the world frame (sector 0 at north), so only
the move between two nodes changes what should be seen.

Figures per ``lam`` (in ``lam_{value}``): ``spurious_flips`` (of the labels whose truth did not change
between two consecutive nodes, the share whose prediction did: flicker), ``missed_changes`` (of the labels
whose truth changed, the share whose prediction did not), and ``precision``, ``recall``, ``f1`` against the
scene's labels on every node. Baseline: ``lam=1``, the same network without the blend;
``spurious_flips_vs_plain`` divides by its flicker.
"""

from __future__ import annotations

import argparse
from typing import Any

import numpy as np

QUICK = {"episodes": 4, "lams": "1,0.6"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``vlnkit bench perception_flicker``."""
    parser.add_argument("--weights", default="", help="a `vlnkit train perception objective=readout` run folder")
    parser.add_argument("--episodes", type=int, default=20, help="gold routes to run along")
    parser.add_argument("--split", default="dev")
    parser.add_argument("--lams", default="1,0.8,0.6,0.4", help="FloAt weights of the current attention")
    parser.add_argument("--city-seed", type=int, default=0)
    parser.add_argument("--visible", type=float, default=0.2, help="closeness that counts as seen")


def run(weights: str = "", episodes: int = 20, split: str = "dev", lams: str = "1,0.8,0.6,0.4", city_seed: int = 0,
        visible: float = 0.2) -> dict[str, Any]:
    """Flicker and accuracy per FloAt weight (see the module docstring)."""
    import torch

    from vlnkit.envs.continuous.city import CityPanoramaSource
    from vlnkit.envs.datasets import load_street_split
    from vlnkit.envs.street.panorama import SceneFeatureSource
    from vlnkit.envs.synth import default_city
    from vlnkit.perception.sources import LearnedReadoutSource
    from vlnkit.perception.train import load_perception_model

    baseline = "lam=1: the same readout without FloAt's blend"
    if not weights:
        return {"name": "perception_flicker", "skipped": "needs --weights RUN, a `vlnkit train perception "
                "objective=readout` run", "baseline": baseline}
    torch.set_num_threads(1)
    _, info = load_perception_model(weights, task="readout")
    height, width = (int(v) for v in info["settings"]["image_shape"][:2])
    root = default_city(seed=city_seed)
    graph, read = load_street_split(root, split)
    routes = [[graph.index[p] for p in ep.route] for ep in read.episodes[:episodes]]
    rgb = CityPanoramaSource(root, "rgb", height=height, width=width, cache_size=4096)
    depth = CityPanoramaSource(root, "depth", height=height, width=width, cache_size=4096)
    scene = SceneFeatureSource(root / "graph" / "scene.jsonl", sectors=int(info["settings"]["sectors"]))
    scene.bind(graph)
    shared = [c for c in scene.categories if c in info["categories"]]
    columns = [scene.categories.index(c) for c in shared]
    learned = LearnedReadoutSource(rgb, weights, shared, depth=depth)
    learned.bind(graph)
    result: dict[str, Any] = {"name": "perception_flicker", "baseline": baseline, "episodes": len(routes),
                              "nodes": sum(len(r) for r in routes), "split": split, "city_seed": city_seed}
    for lam in [float(v) for v in lams.split(",") if v.strip()]:
        learned.set_float_lam(lam)
        flips = stable = missed = changed = hits = seen = real = 0
        for route in routes:
            learned.start_episode()
            previous = None
            for node in route:
                pred = learned.observe(node, 0.0) >= visible
                gt = scene.observe(node, 0.0)[:, columns] >= visible
                hits, seen, real = hits + int((pred & gt).sum()), seen + int(pred.sum()), real + int(gt.sum())
                if previous is not None:
                    same = gt == previous[1]
                    flips += int((pred != previous[0])[same].sum())
                    stable += int(same.sum())
                    missed += int((pred == previous[0])[~same].sum())
                    changed += int((~same).sum())
                previous = (pred, gt)
        precision, recall = hits / max(seen, 1), hits / max(real, 1)
        result[f"lam_{lam:g}"] = {
            "spurious_flips": round(flips / max(stable, 1), 4),
            "missed_changes": round(missed / max(changed, 1), 4),
            "precision": round(precision, 4),
            "recall": round(recall, 4),
            "f1": round(0.0 if hits == 0 else 2 * precision * recall / (precision + recall), 4),
        }
    plain = result.get("lam_1", {}).get("spurious_flips")
    if plain:
        for key, value in list(result.items()):
            if key.startswith("lam_") and key != "lam_1":
                value["spurious_flips_vs_plain"] = round(value["spurious_flips"] / plain, 3)
    return result
