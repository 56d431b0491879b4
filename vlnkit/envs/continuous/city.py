"""The synthetic city in 3-D, and its panoramas rendered as a panorama source of the street environments.

:func:`city_geometry` builds a scene from a street release folder that carries ``graph/landmarks.json``
(the synthetic city writes it): a ground plane, a road strip along every link, a box per building
(its facade on the landmark's position, facing its ``facing`` heading, ``[width, depth, height]`` as
stored), a sign board on every storefront (two halves in its category's colours, :func:`sign_colours`, so a
camera can tell a bank from a cafe), and the street objects (trees as trunk and crown, the rest as
boxes of their size). Landmark ``i`` of the file has semantic id ``i + 1``; signs, roads and the ground
follow. The frame is Habitat's with ``x`` east, ``-z`` north and the graph's own equirectangular
projection, so a node's position is ``(east, 0, -north)`` of :attr:`StreetGraph.xy`.

:class:`CityPanoramaSource` renders, lazily and with an LRU cache, an equirectangular panorama per node
(six 90-degree cube faces from :class:`~vlnkit.envs.continuous.renderer.Renderer`, resampled): ``rgb``
(``uint8``), ``depth`` (metres along each ray, 0 for the sky) or ``semantic`` (object ids). The rendered
image's centre column faces north; :meth:`CityPanoramaSource.observe` rolls it so that the agent's
heading is at the centre column, as :class:`~vlnkit.envs.street.panorama.ImageFolderSource` does with
real panoramas.
"""

from __future__ import annotations

import json
import math
from collections import OrderedDict
from pathlib import Path
from typing import Any, Literal

import numpy as np
from gymnasium import spaces

from vlnkit.envs.continuous.geometry import rotation_matrix
from vlnkit.envs.continuous.renderer import FAR_PLANE, Renderer
from vlnkit.envs.continuous.scene import DrawBatch, SceneGeometry
from vlnkit.envs.street.graph import EARTH_RADIUS_M, StreetGraph

Modality = Literal["rgb", "depth", "semantic"]

CITY_COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (176, 48, 44), "blue": (52, 84, 160), "green": (62, 126, 66), "yellow": (222, 192, 70),
    "white": (232, 232, 226), "black": (40, 40, 44), "orange": (220, 122, 46), "purple": (112, 66, 140),
    "grey": (128, 128, 132), "gray": (128, 128, 132), "brown": (124, 86, 54), "beige": (212, 194, 158),
    "silver": (186, 188, 194),
}
ROAD_RGB = (62, 62, 66)
GROUND_RGB = (150, 150, 146)
SIGN_RGB = (240, 240, 232)
ROAD_WIDTH_M = 9.0
CAMERA_HEIGHT_M = 2.5

SIGN_PALETTE: tuple[tuple[int, int, int], ...] = tuple(
    CITY_COLOURS[c] for c in ("red", "blue", "green", "yellow", "black", "orange", "purple"))
"""Colours of the shop signs' two halves: each storefront category has its own ordered pair (see
:func:`sign_colours`), as a real shop's name and logo tell what it is."""

_BOX_CORNERS = np.array([[x, y, z] for x in (-0.5, 0.5) for y in (0.0, 1.0) for z in (-0.5, 0.5)])
_BOX_FACES = np.array([
    [0, 1, 3], [0, 3, 2], [4, 6, 7], [4, 7, 5], [0, 4, 5], [0, 5, 1],
    [2, 3, 7], [2, 7, 6], [0, 2, 6], [0, 6, 4], [1, 5, 7], [1, 7, 3],
])


def boxes(centres: np.ndarray, sizes: np.ndarray, yaws: np.ndarray) -> np.ndarray:
    """Triangles ``(N, 12, 3, 3)`` of ``N`` boxes standing on ``centres`` ``(N, 3)`` (the bottom face's
    centre), ``sizes`` ``(N, 3)`` = ``(width along x, height, depth along z)`` before turning by ``yaws``
    (radians about ``+y``)."""
    corners = _BOX_CORNERS[None, :, :] * sizes[:, None, :]
    c, s = np.cos(yaws)[:, None], np.sin(yaws)[:, None]
    x = c * corners[..., 0] + s * corners[..., 2]
    z = -s * corners[..., 0] + c * corners[..., 2]
    world = np.stack([x, corners[..., 1], z], axis=-1) + centres[:, None, :]
    return world[:, _BOX_FACES]


def sign_colours(category: str) -> np.ndarray:
    """The ``(2, 3)`` RGB colours (left and right half, seen from the street) of a storefront category's sign:
    the ``i``-th storefront category of :data:`~vlnkit.envs.synth.scene.STOREFRONTS` gets the ``i``-th ordered
    pair of distinct :data:`SIGN_PALETTE` colours; a category outside that list gets plain white halves."""
    from vlnkit.envs.synth.scene import STOREFRONTS

    names = [c.name for c in STOREFRONTS]
    if category not in names:
        return np.array([SIGN_RGB, SIGN_RGB], dtype=np.float64)
    pairs = [(a, b) for a in range(len(SIGN_PALETTE)) for b in range(len(SIGN_PALETTE)) if a != b]
    a, b = pairs[names.index(category)]
    return np.array([SIGN_PALETTE[a], SIGN_PALETTE[b]], dtype=np.float64)


def _to_habitat(east: np.ndarray, north: np.ndarray, y: np.ndarray | float = 0.0) -> np.ndarray:
    return np.stack([east, np.broadcast_to(y, np.shape(east)), -north], axis=-1).astype(np.float64)


def _bearing_yaw(bearing_deg: np.ndarray) -> np.ndarray:
    """The yaw that turns a box's ``+z`` face (its front) toward a compass bearing."""
    return np.pi - np.deg2rad(bearing_deg)


def city_geometry(data_dir: str | Path, graph: StreetGraph | None = None) -> SceneGeometry:
    """The 3-D scene of a street release folder with ``graph/landmarks.json`` (see the module docstring)."""
    from vlnkit.envs.datasets import read_graph

    root = Path(data_dir)
    graph = graph if graph is not None else read_graph(root)
    landmarks = json.loads((root / "graph" / "landmarks.json").read_text(encoding="utf-8"))
    lat0 = np.deg2rad(graph.lat.mean())
    lat = np.array([lm["lat"] for lm in landmarks], dtype=np.float64)
    lng = np.array([lm["lng"] for lm in landmarks], dtype=np.float64)
    east = np.deg2rad(lng - graph.lng.mean()) * EARTH_RADIUS_M * np.cos(lat0)
    north = np.deg2rad(lat - graph.lat.mean()) * EARTH_RADIUS_M
    size = np.array([lm["size"] for lm in landmarks], dtype=np.float64).reshape(-1, 3)
    facing = np.array([lm["facing"] for lm in landmarks], dtype=np.float64)
    kind = np.array([lm["kind"] for lm in landmarks])
    category = [lm["category"] for lm in landmarks]
    front = np.stack([np.sin(np.deg2rad(facing)), np.cos(np.deg2rad(facing))], axis=1)
    is_building = kind != "object"
    # A building's position is its facade: the box extends behind it, away from the street.
    depth_shift = np.where(is_building, size[:, 1] / 2, 0.0)
    base = _to_habitat(east - front[:, 0] * depth_shift, north - front[:, 1] * depth_shift)
    dims = np.stack([size[:, 0], size[:, 2], size[:, 1]], axis=1)
    yaw = _bearing_yaw(facing)
    rgb = np.array([CITY_COLOURS.get(lm["colour"], CITY_COLOURS["grey"]) for lm in landmarks], dtype=np.float64) / 255.0
    ids = np.arange(1, len(landmarks) + 1)

    trees = np.array([c == "tree" for c in category])
    parts = [(boxes(base[~trees], dims[~trees], yaw[~trees]), rgb[~trees], ids[~trees])]
    if trees.any():
        trunk = np.tile([0.35, 3.0, 0.35], (int(trees.sum()), 1))
        crown = np.stack([dims[trees, 0], dims[trees, 1] - 2.5, dims[trees, 2]], axis=1)
        crown_base = base[trees] + np.array([0.0, 2.5, 0.0])
        parts.append((boxes(base[trees], trunk, yaw[trees]), np.tile(CITY_COLOURS["brown"], (len(trunk), 1)) / 255.0, ids[trees]))
        parts.append((boxes(crown_base, crown, yaw[trees]), np.tile(CITY_COLOURS["green"], (len(crown), 1)) / 255.0, ids[trees]))

    objects: dict[int, dict[str, Any]] = {
        int(i): {"category": lm["category"], "landmark_id": lm["id"], "colour": lm["colour"], "text": lm["text"]}
        for i, lm in zip(ids, landmarks)
    }
    shops = np.flatnonzero(kind == "storefront")
    if len(shops):
        sign_ids = np.arange(len(landmarks) + 1, len(landmarks) + 1 + len(shops))
        # The board is two halves side by side along the facade, coloured by the shop's category.
        along = np.stack([front[shops, 1], -front[shops, 0]], axis=1) * (0.2 * size[shops, 0])[:, None]
        halves = np.stack([sign_colours(category[s]) for s in shops]) / 255.0
        sign_dims = np.stack([0.4 * size[shops, 0], np.full(len(shops), 1.0), np.full(len(shops), 0.3)], axis=1)
        for half, sign in ((0, 1.0), (1, -1.0)):  # along points to the left of a viewer facing the shop
            at = _to_habitat(east[shops] + front[shops, 0] * 0.15 + sign * along[:, 0],
                             north[shops] + front[shops, 1] * 0.15 + sign * along[:, 1], 3.0)
            parts.append((boxes(at, sign_dims, yaw[shops]), halves[:, half], sign_ids))
        for sid, s in zip(sign_ids, shops):
            objects[int(sid)] = {"category": "sign", "landmark_id": landmarks[s]["id"], "colour": "white", "text": landmarks[s]["text"]}
    next_id = len(landmarks) + len(shops) + 1

    src, dst = graph.link_src, graph.out_dst
    undirected = src < dst
    a, b = graph.xy[src[undirected]], graph.xy[dst[undirected]]
    mid = (a + b) / 2
    length = np.linalg.norm(b - a, axis=1) + ROAD_WIDTH_M / 2
    bearing = np.rad2deg(np.arctan2(b[:, 0] - a[:, 0], b[:, 1] - a[:, 1]))
    road_dims = np.stack([np.full(len(mid), ROAD_WIDTH_M), np.full(len(mid), 0.02), length], axis=1)
    parts.append((boxes(_to_habitat(mid[:, 0], mid[:, 1]), road_dims, _bearing_yaw(bearing)),
                  np.tile(ROAD_RGB, (len(mid), 1)) / 255.0, np.full(len(mid), next_id)))
    objects[next_id] = {"category": "road"}
    lo = graph.xy.min(axis=0) - 60.0
    hi = graph.xy.max(axis=0) + 60.0
    ground_centre = _to_habitat(np.array([(lo[0] + hi[0]) / 2]), np.array([(lo[1] + hi[1]) / 2]), -0.05)
    ground = boxes(ground_centre, np.array([[hi[0] - lo[0], 0.05, hi[1] - lo[1]]]), np.zeros(1))
    parts.append((ground, np.array([GROUND_RGB]) / 255.0, np.array([next_id + 1])))
    objects[next_id + 1] = {"category": "ground"}

    tris = np.concatenate([p[0].reshape(-1, 3, 3) for p in parts]).astype(np.float32)
    colours = np.concatenate([np.repeat(p[1], 12, axis=0) for p in parts])
    tri_ids = np.concatenate([np.repeat(p[2], 12) for p in parts]).astype(np.int32)
    normals = np.cross(tris[:, 1] - tris[:, 0], tris[:, 2] - tris[:, 0])
    normals /= np.maximum(np.linalg.norm(normals, axis=1, keepdims=True), 1e-12)
    batch = DrawBatch(
        positions=tris.reshape(-1, 3),
        normals=np.repeat(normals, 3, axis=0).astype(np.float32),
        colors=np.repeat(colours, 3, axis=0).astype(np.float32),
        uvs=np.zeros((3 * len(tris), 2), np.float32),
        ids=np.repeat(tri_ids, 3),
    )
    return SceneGeometry(triangles=tris, triangle_ids=tri_ids, batches=[batch], objects=objects,
                         metadata={"generator": "vlnkit synthetic city mesh"}, path=root)


_FACE_POSES = ((0.0, 0.0), (-math.pi / 2, 0.0), (math.pi, 0.0), (math.pi / 2, 0.0), (0.0, math.pi / 2), (0.0, -math.pi / 2))
"""``(yaw, pitch)`` of the cube faces: north, east, south, west, up, down."""


def _cube_lookup(height: int, width: int, face: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """For each equirectangular pixel: its cube face (0-3 north, east, south, west; 4 up; 5 down), the
    face pixel's row and column, and the factor turning the face's axis depth into ray length."""
    bearing = np.deg2rad((np.arange(width) + 0.5) / width * 360.0 - 180.0)
    lat = np.deg2rad(90.0 - (np.arange(height) + 0.5) / height * 180.0)
    b, la = np.meshgrid(bearing, lat)
    d = np.stack([np.cos(la) * np.sin(b), np.sin(la), -np.cos(la) * np.cos(b)], axis=-1)
    axes = np.array([[0, 0, -1], [1, 0, 0], [0, 0, 1], [-1, 0, 0], [0, 1, 0], [0, -1, 0]], dtype=np.float64)
    which = np.argmax(d @ axes.T, axis=-1)
    rows = np.empty(which.shape, dtype=np.int64)
    cols = np.empty(which.shape, dtype=np.int64)
    scale = np.empty(which.shape)
    for f, (yaw, pitch) in enumerate(_FACE_POSES):
        mask = which == f
        rot = rotation_matrix(yaw, pitch)
        cam = d[mask] @ rot  # camera coordinates: x right, y up, -z forward
        forward = -cam[:, 2]
        u = (cam[:, 0] / forward + 1.0) / 2.0 * face
        v = (1.0 - cam[:, 1] / forward) / 2.0 * face
        cols[mask] = np.clip(u.astype(np.int64), 0, face - 1)
        rows[mask] = np.clip(v.astype(np.int64), 0, face - 1)
        scale[mask] = 1.0 / forward
    return which, rows, cols, scale


class CityPanoramaSource:
    """Rendered equirectangular panoramas of the synthetic city (see the module docstring).

    Args:
        data_dir: the city's release folder (``graph/landmarks.json`` beside the graph).
        modality: ``rgb``, ``depth`` or ``semantic``.
        height, width: panorama size (``width`` a multiple of 4).
        camera_height: the camera's height above the street in metres.
        cache_size: how many nodes' panoramas to keep.
    """

    def __init__(self, data_dir: str | Path, modality: Modality = "rgb", height: int = 128, width: int = 512,
                 camera_height: float = CAMERA_HEIGHT_M, cache_size: int = 256) -> None:
        if modality not in ("rgb", "depth", "semantic"):
            raise ValueError(f"modality must be 'rgb', 'depth' or 'semantic', got {modality!r}")
        if width % 4:
            raise ValueError(f"width must be a multiple of 4, got {width}")
        self.data_dir = Path(data_dir)
        if not (self.data_dir / "graph" / "landmarks.json").is_file():
            raise FileNotFoundError(f"{self.data_dir / 'graph' / 'landmarks.json'} not found: the rendered source needs the synthetic city's landmarks")
        self.modality = modality
        self.privileged = ("semantic labels (rendered panorama)",) if modality == "semantic" else ()
        self.height, self.width = height, width
        self.face = width // 4
        self.camera_height = camera_height
        self.cache_size = cache_size
        self._cache: OrderedDict[int, np.ndarray] = OrderedDict()
        self._graph: StreetGraph | None = None
        self._renderer: Renderer | None = None
        self._lookup = _cube_lookup(height, width, self.face)

    def bind(self, graph: StreetGraph) -> None:
        """Build the city's mesh for ``graph`` (its renderer's context comes on first use)."""
        self._graph = graph
        self.geometry = city_geometry(self.data_dir, graph)
        if self._renderer is not None:
            self._renderer.release()
        self._renderer = Renderer(self.geometry)
        self._cache.clear()

    @property
    def space(self) -> spaces.Box:
        """The observation space of one panorama of the chosen modality."""
        shape = (self.height, self.width)
        if self.modality == "rgb":
            return spaces.Box(0, 255, shape=(*shape, 3), dtype=np.uint8)
        if self.modality == "depth":
            return spaces.Box(0.0, FAR_PLANE * math.sqrt(3.0), shape=(*shape, 1), dtype=np.float32)
        return spaces.Box(0, np.iinfo(np.uint32).max, shape=shape, dtype=np.uint32)

    def labels(self) -> dict[int, dict[str, Any]]:
        """What each semantic id is: ``category`` and, for landmarks and signs, ``landmark_id`` and ``text``."""
        return self.geometry.objects

    def panorama(self, node: int) -> np.ndarray:
        """The node's panorama with north at the centre column (rendered on first use, then cached)."""
        hit = self._cache.get(node)
        if hit is not None:
            self._cache.move_to_end(node)
            return hit
        if self._graph is None or self._renderer is None:
            raise RuntimeError("bind() the source to a graph first")
        east, north = self._graph.xy[node]
        eye = np.array([east, self.camera_height, -north])
        sides = self._renderer.render_views(eye, [p[0] for p in _FACE_POSES[:4]], 0.0, self.face, self.face, 90.0)
        up = self._renderer.render_views(eye, [0.0], math.pi / 2, self.face, self.face, 90.0)
        down = self._renderer.render_views(eye, [0.0], -math.pi / 2, self.face, self.face, 90.0)
        which, rows, cols, scale = self._lookup
        if self.modality == "rgb":
            faces = np.concatenate([sides.rgb, up.rgb, down.rgb])
            image = faces[which, rows, cols]
        elif self.modality == "depth":
            faces = np.concatenate([sides.depth, up.depth, down.depth])
            image = (faces[which, rows, cols] * scale).astype(np.float32)[..., None]
        else:
            faces = np.concatenate([sides.semantic, up.semantic, down.semantic])
            image = faces[which, rows, cols]
        self._cache[node] = image
        if len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)
        return image

    def observe(self, node: int, heading: float) -> np.ndarray:
        """The panorama rolled so that compass ``heading`` (degrees) is at the centre column (a new array)."""
        shift = int(round((heading % 360.0) / 360.0 * self.width))
        return np.roll(self.panorama(node), -shift, axis=1)
