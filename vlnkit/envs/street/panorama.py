"""Panorama sources: what an agent sees at a street node, behind one small protocol.

A source is bound to a graph once (:meth:`PanoramaSource.bind`) and then answers
:meth:`PanoramaSource.observe` for a node index and the agent's heading, fast enough to sit in the
environment's step. Sources:

- :class:`ImageFolderSource`: equirectangular images named by panoid (``<root>/<panoid>.jpg`` or
  ``.png``), what StreetLearn users have. The observation is the panorama resized and rolled so that the
  agent's heading is at the centre column (the pano's ``yaw`` gives the heading of its centre column).
- :class:`FeatureArraySource`: precomputed features as one ``.npy`` array plus a panoid index (a text
  file with one panoid per line, row order), or :class:`FeatureFolderSource` with one ``<panoid>.npy``
  per node. Features of shape ``(S, D)`` are taken as ``S`` equal slices around the panorama starting at
  its yaw and are rolled so that slice 0 faces the agent's heading; ``(D,)`` features are returned as is.
- :class:`SceneFeatureSource`: features computed from a release's per-node scene description
  (``graph/scene.jsonl``, written by the synthetic city): for each of ``S`` sectors around the agent and
  each landmark category, the closeness (1 at the node, 0 at the visibility radius) of the nearest such
  landmark. It is the synthetic city's own panorama source.

:func:`perspective_crop` cuts a pinhole view at a heading and field of view out of an equirectangular
image.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np
from gymnasium import spaces
from PIL import Image

from vlnkit.envs.street.graph import StreetGraph


@runtime_checkable
class PanoramaSource(Protocol):
    """Anything that turns (node, heading) into an observation array.

    A source that hands out the simulator's labels rather than what a camera sees (the scene description,
    a rendered semantic panorama) names them in an attribute ``privileged`` (a tuple of descriptions);
    results of agents that read such a panorama are marked with it.
    """

    def bind(self, graph: StreetGraph) -> None:
        """Prepare lookups for ``graph`` (called once by the environment)."""

    @property
    def space(self) -> spaces.Box:
        """The observation space of one panorama."""

    def observe(self, node: int, heading: float) -> np.ndarray:
        """The panorama observation at ``node`` for an agent facing ``heading`` degrees (a new array on
        every call: callers may keep or modify it)."""


def sector_shift(heading: float, origin: float, sectors: int) -> int:
    """How many sectors to roll features whose sector 0 faces compass ``origin`` so that sector 0 faces
    ``heading`` (to the nearest sector, halves rounded up)."""
    return int(((heading - origin) % 360.0) * sectors / 360.0 + 0.5) % sectors


class ImageFolderSource:
    """Equirectangular panoramas stored as ``<root>/<panoid>.<ext>``, loaded lazily with an LRU cache.

    A missing, truncated or unreadable image, or one of another size than ``image_size`` (by default the size of
    the first image read), is an error naming the panoid, the file and what was expected."""

    def __init__(self, root: str | Path, height: int = 128, width: int = 512, cache_size: int = 256,
                 extensions: tuple[str, ...] = (".jpg", ".jpeg", ".png"),
                 image_size: tuple[int, int] | None = None) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise FileNotFoundError(f"panorama folder {self.root} does not exist")
        self.height, self.width = height, width
        self.image_size = None if image_size is None else (int(image_size[0]), int(image_size[1]))
        """``(height, width)`` every stored image must have; ``None``: the size of the first one read."""
        self.extensions = extensions
        self.cache_size = cache_size
        self._cache: OrderedDict[int, np.ndarray] = OrderedDict()
        self._graph: StreetGraph | None = None

    def bind(self, graph: StreetGraph) -> None:
        """Remember the graph for panoids and yaw angles."""
        self._graph = graph
        self._cache.clear()

    @property
    def space(self) -> spaces.Box:
        """RGB images of ``height x width``."""
        return spaces.Box(0, 255, shape=(self.height, self.width, 3), dtype=np.uint8)

    def image(self, node: int) -> np.ndarray:
        """The resized equirectangular image of ``node`` (not rolled)."""
        hit = self._cache.get(node)
        if hit is not None:
            self._cache.move_to_end(node)
            return hit
        assert self._graph is not None, "bind() the source to a graph first"
        panoid = self._graph.panoids[node]
        for ext in self.extensions:
            path = self.root / f"{panoid}{ext}"
            if path.is_file():
                break
        else:
            raise FileNotFoundError(f"no panorama image for panoid {panoid!r} in {self.root} (tried {', '.join(self.extensions)})")
        try:
            with Image.open(path) as im:
                size = (im.height, im.width)
                if self.image_size is not None and size != self.image_size:
                    raise ValueError(f"{path}: the panorama of panoid {panoid!r} is {size[0]} x {size[1]} pixels, "
                                     f"expected {self.image_size[0]} x {self.image_size[1]} (height x width) like "
                                     "the folder's other panoramas")
                arr = np.asarray(im.convert("RGB").resize((self.width, self.height), Image.BILINEAR))
        except OSError as err:
            raise ValueError(f"{path}: the panorama of panoid {panoid!r} is not a readable image ({err}); expected "
                             "a complete equirectangular JPEG or PNG") from err
        self.image_size = self.image_size or size
        self._cache[node] = arr
        if len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)
        return arr

    def observe(self, node: int, heading: float) -> np.ndarray:
        """The panorama rolled so that ``heading`` is at the centre column."""
        assert self._graph is not None, "bind() the source to a graph first"
        arr = self.image(node)
        shift = int(round((heading - self._graph.yaw[node]) / 360.0 * self.width))
        return np.roll(arr, -shift, axis=1)


class _FeatureSource:
    """Shared lookup for feature sources: rows per node, heading roll for sliced features."""

    def __init__(self, missing: str = "error") -> None:
        if missing not in ("error", "zeros"):
            raise ValueError(f"missing must be 'error' or 'zeros', got {missing!r}")
        self.missing = missing
        self._graph: StreetGraph | None = None

    def _feature_for(self, panoid: str) -> np.ndarray | None:
        raise NotImplementedError

    def _feature_shape(self) -> tuple[int, ...]:
        raise NotImplementedError

    @property
    def space(self) -> spaces.Box:
        """Float32 features of the stored shape."""
        return spaces.Box(-np.inf, np.inf, shape=self._feature_shape(), dtype=np.float32)

    def bind(self, graph: StreetGraph) -> None:
        """Resolve every node's features once; missing panoids raise or become zeros (``missing``)."""
        shape = self._feature_shape()
        table = np.zeros((graph.num_nodes, *shape), dtype=np.float32)
        absent = []
        for i, p in enumerate(graph.panoids):
            feat = self._feature_for(p)
            if feat is None:
                absent.append(p)
            else:
                table[i] = feat
        if absent and self.missing == "error":
            raise KeyError(f"{self.describe()}: no features for {len(absent)} graph nodes, e.g. {absent[:3]} (use missing='zeros' to allow)")
        self._table = table
        self._origin = self._slice_origin(graph)
        slices = shape[0] if len(shape) > 1 else 1
        self._rolls = [np.roll(np.arange(slices), -k) for k in range(slices)]
        self._graph = graph

    def _slice_origin(self, graph: StreetGraph) -> np.ndarray:
        """Compass heading that slice 0 of each node's features faces (the panorama's yaw)."""
        return graph.yaw

    def describe(self) -> str:
        """Where the features come from, for error messages."""
        return type(self).__name__

    def observe(self, node: int, heading: float) -> np.ndarray:
        """The node's features, slices rolled so that slice 0 faces ``heading`` (to the nearest slice,
        halves rounded up)."""
        feat = self._table[node]
        if feat.ndim == 1:
            return feat.copy()
        return feat[self._rolls[sector_shift(heading, float(self._origin[node]), feat.shape[0])]]


class FeatureArraySource(_FeatureSource):
    """Features in one ``.npy`` array (rows) with a panoid index file (one panoid per line)."""

    def __init__(self, features: str | Path, index: str | Path, missing: str = "error") -> None:
        super().__init__(missing)
        self.features_path, self.index_path = Path(features), Path(index)
        self.array = np.load(self.features_path, mmap_mode="r")
        panoids = [line.strip() for line in self.index_path.read_text(encoding="utf-8").splitlines() if line.strip()]
        if len(panoids) != len(self.array):
            raise ValueError(
                f"{self.index_path}: {len(panoids)} panoids but {self.features_path} has {len(self.array)} rows; "
                "expected one panoid per row"
            )
        self.rows = {p: i for i, p in enumerate(panoids)}

    def describe(self) -> str:
        """The array's path."""
        return str(self.features_path)

    def _feature_shape(self) -> tuple[int, ...]:
        return tuple(self.array.shape[1:])

    def _feature_for(self, panoid: str) -> np.ndarray | None:
        row = self.rows.get(panoid)
        return None if row is None else np.asarray(self.array[row], dtype=np.float32)


class FeatureFolderSource(_FeatureSource):
    """Features stored one file per panoid, ``<root>/<panoid>.npy``, all of the same shape."""

    def __init__(self, root: str | Path, missing: str = "error") -> None:
        super().__init__(missing)
        self.root = Path(root)
        files = sorted(self.root.glob("*.npy"))
        if not files:
            raise FileNotFoundError(f"no <panoid>.npy feature files in {self.root}")
        self._shape = tuple(np.load(files[0], mmap_mode="r").shape)

    def describe(self) -> str:
        """The folder's path."""
        return str(self.root)

    def _feature_shape(self) -> tuple[int, ...]:
        return self._shape

    def _feature_for(self, panoid: str) -> np.ndarray | None:
        path = self.root / f"{panoid}.npy"
        if not path.is_file():
            return None
        feat = np.load(path)
        if feat.shape != self._shape:
            raise ValueError(f"{path}: features of shape {feat.shape}, expected {self._shape} like the other files")
        return feat.astype(np.float32)


def perspective_crop(
    equirect: np.ndarray,
    heading: float,
    yaw: float = 0.0,
    fov: float = 90.0,
    size: tuple[int, int] = (224, 224),
    pitch: float = 0.0,
) -> np.ndarray:
    """A pinhole view of ``size`` (height, width) with horizontal field of view ``fov`` degrees, looking
    at compass ``heading`` and ``pitch`` (up positive), cut from an equirectangular image whose centre
    column faces ``yaw``. Bilinear sampling, wrapping around horizontally."""
    h_out, w_out = size
    h_in, w_in = equirect.shape[:2]
    focal = 0.5 * w_out / np.tan(np.deg2rad(fov) / 2.0)
    xs = np.arange(w_out) - (w_out - 1) / 2.0
    ys = (h_out - 1) / 2.0 - np.arange(h_out)
    x, y = np.meshgrid(xs, ys)
    dirs = np.stack([x, y, np.full_like(x, focal)], axis=-1)
    dirs /= np.linalg.norm(dirs, axis=-1, keepdims=True)
    p = np.deg2rad(pitch)
    rot = np.array([[1, 0, 0], [0, np.cos(p), np.sin(p)], [0, -np.sin(p), np.cos(p)]])
    d = dirs @ rot.T
    lon = np.rad2deg(np.arctan2(d[..., 0], d[..., 2])) + (heading - yaw)
    lat = np.rad2deg(np.arcsin(np.clip(d[..., 1], -1.0, 1.0)))
    u = ((lon / 360.0 + 0.5) * w_in - 0.5) % w_in
    v = np.clip((0.5 - lat / 180.0) * h_in - 0.5, 0, h_in - 1)
    u0 = np.floor(u).astype(np.int64)
    v0 = np.floor(v).astype(np.int64)
    du, dv = (u - u0)[..., None], (v - v0)[..., None]
    u1 = (u0 + 1) % w_in
    v1 = np.minimum(v0 + 1, h_in - 1)
    img = equirect.astype(np.float32)
    top = img[v0, u0] * (1 - du) + img[v0, u1] * du
    bottom = img[v1, u0] * (1 - du) + img[v1, u1] * du
    out = top * (1 - dv) + bottom * dv
    return out.round().astype(equirect.dtype) if np.issubdtype(equirect.dtype, np.integer) else out.astype(equirect.dtype)


class SceneFeatureSource(_FeatureSource):
    """Semantic features from a scene description file (``graph/scene.jsonl``).

    Each line is ``{"panoid": ..., "landmarks": [{"category": ..., "heading": deg, "distance": m, ...}]}``.
    The feature of a node is an ``(sectors, categories)`` array: sector ``k`` covers compass headings
    ``[k, k + 1) * 360 / sectors`` (rolled to the agent's heading on observation) and holds, per
    category, ``max(0, 1 - distance / radius)`` of the closest landmark of that category in it.
    Categories are the sorted set found in the file (listed in :attr:`categories`). These are the
    simulator's labels, so observations from this source are privileged.
    """

    privileged = ("scene labels (graph/scene.jsonl)",)

    def __init__(self, scene_path: str | Path, sectors: int = 8, radius: float = 30.0) -> None:
        super().__init__(missing="zeros")
        self.path = Path(scene_path)
        self.sectors, self.radius = sectors, radius
        self.scene: dict[str, list[dict]] = {}
        with self.path.open(encoding="utf-8") as f:
            for lineno, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    rec = json.loads(line)
                    self.scene[rec["panoid"]] = rec["landmarks"]
                except (json.JSONDecodeError, KeyError, TypeError) as err:
                    raise ValueError(f"{self.path}:{lineno}: expected a JSON object with 'panoid' and 'landmarks' ({err})") from err
        self.categories = sorted({lm["category"] for lms in self.scene.values() for lm in lms})
        self._column = {c: i for i, c in enumerate(self.categories)}

    def describe(self) -> str:
        """The scene file's path."""
        return str(self.path)

    def _feature_shape(self) -> tuple[int, ...]:
        return (self.sectors, len(self.categories))

    def _slice_origin(self, graph: StreetGraph) -> np.ndarray:
        return np.zeros(graph.num_nodes)

    def _feature_for(self, panoid: str) -> np.ndarray | None:
        feat = np.zeros(self._feature_shape(), dtype=np.float32)
        for lm in self.scene.get(panoid, ()):
            sector = int((float(lm["heading"]) % 360.0) / 360.0 * self.sectors) % self.sectors
            col = self._column[lm["category"]]
            feat[sector, col] = max(feat[sector, col], max(0.0, 1.0 - float(lm["distance"]) / self.radius))
        return feat
