"""Learned perception as a street panorama source: the agents' ``(sectors, categories)`` input from pixels.

:class:`LearnedReadoutSource` wraps a pixel source (the city's renders,
:class:`~vlnkit.envs.continuous.city.CityPanoramaSource`, or real panoramas,
:class:`~vlnkit.envs.street.panorama.ImageFolderSource`) and a readout trained with ``vlnkit train perception
objective=readout`` (:class:`~vlnkit.perception.heads.ReadoutPredictor`). It answers
:meth:`~vlnkit.envs.street.panorama.PanoramaSource.observe` with the same array
:class:`~vlnkit.envs.street.panorama.SceneFeatureSource` gives from the simulator's labels (sector 0 at the
agent's heading), so an agent that reads the scene labels runs unchanged on pixels and only the source
differs. The network sees each node once, with column 0 at bearing 0 as in training; turning rolls the predicted
sectors as the scene source rolls its labels. It reads no labels: :attr:`privileged` is empty.

With ``float_lam`` below 1 (FloAt, :class:`~vlnkit.perception.temporal.FloAtReadout`) a prediction also depends
on the node observed before it: the readout's attention is blended with the previous node's, warped by the exact
flow from the rendered depth and the move between the nodes. Predictions then follow the order of observation
instead of a per-node cache (turning on the spot reuses the node's prediction: the panorama did not move).

:func:`street_perception_source` builds it from an eval config's ``perception`` group (``perception=learned
perception.weights=RUN``).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from gymnasium import spaces

from vlnkit.envs.street.graph import StreetGraph
from vlnkit.envs.street.panorama import PanoramaSource, sector_shift
from vlnkit.perception.readout_data import NORTH_AT_COLUMN_0
from vlnkit.perception.temporal import FloAtReadout
from vlnkit.perception.train import load_perception_model, normalise


class LearnedReadoutSource:
    """Landmark closeness per sector predicted from a pixel source (see the module docstring).

    Args:
        pixels: the RGB panorama source the network reads (its images must have the training size).
        weights: a ``vlnkit train perception objective=readout`` run folder or checkpoint.
        categories: the columns to return, in this order (each must be one of the network's categories);
            ``None`` returns the network's own.
        cache_size: how many nodes' predictions to keep.
        device: where the network runs.
        float_lam: FloAt's weight of the current attention (1: off; see the module docstring).
        depth: the depth panoramas of the pixel source's nodes (needed when ``float_lam`` is below 1).
    """

    privileged: tuple[str, ...] = ()

    def __init__(self, pixels: PanoramaSource, weights: str | Path, categories: Sequence[str] | None = None,
                 cache_size: int = 4096, device: str = "cpu", float_lam: float = 1.0,
                 depth: PanoramaSource | None = None) -> None:
        self.pixels = pixels
        self.depth = depth
        self.weights = Path(weights).expanduser()
        self.model, info = load_perception_model(self.weights, task="readout", map_location=device)
        self.device = torch.device(device)
        self.model.to(self.device)
        trained = [str(c) for c in info["categories"]]
        self.categories = list(trained if categories is None else categories)
        unknown = [c for c in self.categories if c not in trained]
        if unknown:
            raise ValueError(f"{self.weights}: the readout was trained on other categories; it has no {unknown[:5]} "
                             f"(it has {len(trained)}: {', '.join(trained[:8])}, ...)")
        self._columns = np.array([trained.index(c) for c in self.categories])
        self.sectors = int(info["settings"]["sectors"])
        meta = info["settings"]
        self.image_shape = tuple(int(v) for v in meta.get("image_shape", ())) or None
        self.cache_size = cache_size
        self._cache: OrderedDict[int, np.ndarray] = OrderedDict()
        self._last: tuple[int, np.ndarray] | None = None
        self._graph: StreetGraph | None = None
        self.set_float_lam(float_lam)

    def set_float_lam(self, lam: float) -> None:
        """Switch FloAt to weight ``lam`` of the current attention (1: off) and forget the previous observation."""
        if lam < 1.0 and self.depth is None:
            raise ValueError(f"float_lam={lam} needs depth panoramas (FloAt warps with the depth's flow)")
        self.floating = FloAtReadout(self.model, lam) if lam < 1.0 else None
        self._last = None

    def bind(self, graph: StreetGraph) -> None:
        """Bind the pixel (and depth) source to ``graph`` and forget cached predictions."""
        self.pixels.bind(graph)
        if self.depth is not None:
            self.depth.bind(graph)
        self._graph = graph
        self._cache.clear()
        self._last = None

    def start_episode(self) -> None:
        """Forget the previous observation (the street env calls this at every reset): FloAt never blends
        across episodes."""
        self._last = None
        if self.floating is not None:
            self.floating.reset()

    @property
    def space(self) -> spaces.Box:
        """Closeness ``(sectors, categories)`` in ``[0, 1]``."""
        return spaces.Box(0.0, 1.0, shape=(self.sectors, len(self.categories)), dtype=np.float32)

    def predict(self, node: int) -> np.ndarray:
        """The network's ``(sectors, categories)`` closeness of ``node`` with sector 0 at bearing 0 (cached)."""
        hit = self._cache.get(node)
        if hit is not None:
            self._cache.move_to_end(node)
            return hit
        with torch.no_grad():
            pred = self.model(self._input(node))[0].float().cpu().numpy()
        feat = pred[:, self._columns].astype(np.float32)
        self._cache[node] = feat
        if len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)
        return feat

    def predict_after(self, node: int) -> np.ndarray:
        """With FloAt: ``node``'s closeness (sector 0 at bearing 0) blended with the node observed before it."""
        assert self.floating is not None and self.depth is not None
        if self._last is not None and self._last[0] == node:
            return self._last[1]
        if self._graph is None:
            raise RuntimeError("bind() the source to a graph first")
        east, north = self._graph.xy[node]
        depth = self.depth.observe(node, NORTH_AT_COLUMN_0)[..., 0]
        pred = self.floating.predict(self._input(node), depth, np.array([east, north, 0.0]))
        feat = pred[:, self._columns].astype(np.float32)
        self._last = (node, feat)
        return feat

    def _input(self, node: int) -> torch.Tensor:
        """The network's input for ``node``: its panorama with column 0 at bearing 0, checked and normalised."""
        image = self.pixels.observe(node, NORTH_AT_COLUMN_0)
        if self.image_shape is not None and tuple(image.shape) != self.image_shape:
            raise ValueError(f"{self.weights}: the readout was trained on {self.image_shape} panoramas but the pixel "
                             f"source gives {tuple(image.shape)}; set the source's height and width to match")
        return normalise(torch.as_tensor(np.ascontiguousarray(image))[None].to(self.device))

    def observe(self, node: int, heading: float) -> np.ndarray:
        """The predicted closeness rolled so that sector 0 faces ``heading`` (a new array)."""
        feat = self.predict(node) if self.floating is None else self.predict_after(node)
        return np.roll(feat, -sector_shift(heading, 0.0, self.sectors), axis=0)


def street_perception_source(perception: Mapping[str, Any], data_dir: Path,
                             panorama_paths: Mapping[str, Any]) -> LearnedReadoutSource:
    """The learned source an eval config's ``perception`` group asks for: ``pixels`` ``render`` (the synthetic
    city's renders of ``data_dir``) or ``image`` (``panorama_paths.image_dir``), at the readout's training size,
    with the columns of the release's ``graph/scene.jsonl`` categories when it has one (the names only)."""
    weights = perception.get("weights")
    if not weights:
        raise ValueError("perception=learned needs perception.weights=RUN, a `vlnkit train perception "
                         "objective=readout` run folder (train one on `vlnkit data perception --source city` data)")
    _, info = load_perception_model(str(weights), task="readout")
    height, width = (int(v) for v in info["settings"]["image_shape"][:2])
    kind = str(perception.get("pixels", "render"))
    float_lam = float(perception.get("float_lam", 1.0))
    pixels: PanoramaSource
    depth: PanoramaSource | None = None
    if kind == "render":
        from vlnkit.envs.continuous.city import CityPanoramaSource

        pixels = CityPanoramaSource(data_dir, "rgb", height=height, width=width, cache_size=1)
        if float_lam < 1.0:
            depth = CityPanoramaSource(data_dir, "depth", height=height, width=width, cache_size=1)
    elif kind == "image":
        from vlnkit.envs.street.panorama import ImageFolderSource

        if not panorama_paths.get("image_dir"):
            raise ValueError("perception.pixels=image needs task.panorama_paths.image_dir (a folder of <panoid>.jpg)")
        pixels = ImageFolderSource(panorama_paths["image_dir"], height=height, width=width, cache_size=1)
    else:
        raise ValueError(f"perception.pixels must be render or image, got {kind!r}")
    if float_lam < 1.0 and depth is None:
        raise ValueError(f"perception.float_lam={float_lam} needs depth, which only perception.pixels=render has")
    scene = data_dir / "graph" / "scene.jsonl"
    categories = None
    if scene.is_file():
        from vlnkit.envs.street.panorama import SceneFeatureSource

        categories = SceneFeatureSource(scene).categories
    return LearnedReadoutSource(pixels, str(weights), categories, float_lam=float_lam, depth=depth)
