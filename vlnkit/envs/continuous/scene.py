"""Scene files as triangles, draw batches and labelled objects, in Habitat's frame.

:func:`load_scene_geometry` reads a ``.glb``/``.gltf``/``.ply``/``.obj`` file with trimesh, applies the
node transforms and converts to Habitat's y-up frame. Like habitat-sim, a ``.glb`` is taken to be z-up
with ``+y`` front (the Matterport convention) and every other format y-up; ``up="y"``/``"z"`` overrides.

Semantic labels travel in the file as glTF mesh ``extras`` (trimesh's ``mesh.metadata``):
``{"category": "chair", "object_id": 12, ...}``. A mesh with a ``category`` gets that object id (or a
fresh one when it has none); meshes without one render as id 0 (no object). Several meshes may share an
object id (an object built of parts).

Colours come from, in order: a base-colour texture with UVs (drawn textured and unlit, as scans carry
their lighting), a material's base colour or diffuse colour, vertex colours, or light grey.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from vlnkit.envs.continuous.geometry import ZUP_TO_HABITAT

SCENE_SUFFIXES = (".glb", ".gltf", ".ply", ".obj")
DEFAULT_GREY = (0.75, 0.75, 0.75)
UpAxis = Literal["auto", "y", "z"]


class SceneLoadError(ValueError):
    """A scene file that cannot be read or holds no triangles."""


@dataclass
class DrawBatch:
    """Triangles drawn with one texture (or none), as a triangle soup with flat normals.

    Attributes:
        positions: ``(3T, 3)`` float32 vertex positions.
        normals: ``(3T, 3)`` float32 face normals repeated per vertex.
        colors: ``(3T, 3)`` float32 colours in ``[0, 1]`` (multiplied with the texture when textured).
        uvs: ``(3T, 2)`` float32 texture coordinates (zeros without a texture).
        ids: ``(3T,)`` int32 object ids (0: no object).
        texture: ``(H, W, 4)`` uint8 image, rows bottom first as OpenGL expects, or ``None``.
        lit: shade with a directional light (plain colours) or draw as stored (textured scans).
    """

    positions: np.ndarray
    normals: np.ndarray
    colors: np.ndarray
    uvs: np.ndarray
    ids: np.ndarray
    texture: np.ndarray | None = None
    lit: bool = True

    @property
    def num_triangles(self) -> int:
        """Number of triangles."""
        return len(self.positions) // 3


@dataclass
class SceneGeometry:
    """A loaded scene: all triangles for geometry queries, batches for drawing, labelled objects.

    Attributes:
        triangles: ``(T, 3, 3)`` float32 vertex positions of every triangle.
        triangle_ids: ``(T,)`` int32 object id of each triangle.
        batches: the draw batches (one for all untextured triangles, one per texture).
        objects: object id -> the mesh extras of the object (``category`` at least).
        metadata: the scene's own extras (glTF ``scenes[0].extras``), e.g. room layouts.
        path: the file it came from.
    """

    triangles: np.ndarray
    triangle_ids: np.ndarray
    batches: list[DrawBatch]
    objects: dict[int, dict[str, Any]] = field(default_factory=dict)
    metadata: dict[str, Any] = field(default_factory=dict)
    path: Path | None = None

    @property
    def bounds(self) -> np.ndarray:
        """``(2, 3)`` axis-aligned bounds."""
        flat = self.triangles.reshape(-1, 3)
        return np.stack([flat.min(axis=0), flat.max(axis=0)])

    def labels(self) -> dict[int, str]:
        """Category of each object id."""
        return {i: str(extras.get("category", "")) for i, extras in self.objects.items()}


def _frame(path: Path, up: UpAxis) -> np.ndarray | None:
    """The rotation into Habitat's frame for ``path`` (``None``: already y-up)."""
    if up == "auto":
        up = "z" if path.suffix.lower() == ".glb" else "y"
    if up not in ("y", "z"):
        raise ValueError(f"up must be 'auto', 'y' or 'z', got {up!r}")
    return ZUP_TO_HABITAT if up == "z" else None


def _material_colour(material: Any) -> tuple[np.ndarray, Any]:
    """Base colour (RGB in [0, 1]) and base-colour image (PIL or ``None``) of a trimesh material."""
    factor = getattr(material, "baseColorFactor", None)
    image = getattr(material, "baseColorTexture", None)
    if factor is None and hasattr(material, "diffuse"):
        factor = material.diffuse
        image = getattr(material, "image", None)
    colour = np.asarray(factor if factor is not None else (255, 255, 255, 255), dtype=np.float64)[:3]
    if colour.max() > 1.0:
        colour = colour / 255.0
    return colour.astype(np.float32), image


def _texture_array(image: Any) -> np.ndarray:
    """A PIL image as an RGBA uint8 array with rows bottom first (OpenGL's texture row order)."""
    return np.ascontiguousarray(np.asarray(image.convert("RGBA"))[::-1])


def _face_colours(mesh: Any) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
    """Per-corner colours ``(F, 3, 3)``, UVs ``(F, 3, 2)`` or ``None``, and texture or ``None``."""
    visual = mesh.visual
    faces = mesh.faces
    kind = getattr(visual, "kind", None)
    if kind == "texture" or hasattr(visual, "material"):
        material = getattr(visual, "material", None)
        colour, image = _material_colour(material) if material is not None else (np.ones(3, np.float32), None)
        uv = getattr(visual, "uv", None)
        if image is not None and uv is not None and len(uv) == len(mesh.vertices):
            return np.broadcast_to(colour, (len(faces), 3, 3)), np.asarray(uv, np.float32)[faces], _texture_array(image)
        return np.broadcast_to(colour, (len(faces), 3, 3)), None, None
    if kind == "vertex":
        rgb = np.asarray(visual.vertex_colors, dtype=np.float32)[:, :3] / 255.0
        return rgb[faces], None, None
    if kind == "face":
        rgb = np.asarray(visual.face_colors, dtype=np.float32)[:, :3] / 255.0
        return np.repeat(rgb[:, None, :], 3, axis=1), None, None
    return np.broadcast_to(np.asarray(DEFAULT_GREY, np.float32), (len(faces), 3, 3)), None, None


def _batch(tris: np.ndarray, colours: np.ndarray, uvs: np.ndarray | None, ids: np.ndarray,
           texture: np.ndarray | None) -> DrawBatch:
    normals = np.cross(tris[:, 1] - tris[:, 0], tris[:, 2] - tris[:, 0])
    length = np.linalg.norm(normals, axis=1, keepdims=True)
    normals = np.divide(normals, length, out=np.zeros_like(normals), where=length > 0)
    n = len(tris)
    return DrawBatch(
        positions=tris.reshape(-1, 3).astype(np.float32),
        normals=np.repeat(normals, 3, axis=0).astype(np.float32),
        colors=np.ascontiguousarray(colours, dtype=np.float32).reshape(-1, 3),
        uvs=(np.zeros((3 * n, 2), np.float32) if uvs is None else uvs.reshape(-1, 2).astype(np.float32)),
        ids=np.repeat(ids.astype(np.int32), 3),
        texture=texture,
        lit=texture is None,
    )


def load_scene_geometry(path: str | Path, up: UpAxis = "auto") -> SceneGeometry:
    """Read a scene file into a :class:`SceneGeometry` in Habitat's frame (see the module docstring).

    Raises :class:`SceneLoadError` when the file is missing, cannot be parsed or has no triangles.
    """
    import trimesh

    path = Path(path)
    if not path.is_file():
        raise SceneLoadError(f"scene file {path} not found")
    if path.suffix.lower() not in SCENE_SUFFIXES:
        raise SceneLoadError(f"{path}: unsupported scene format {path.suffix!r}; expected one of {', '.join(SCENE_SUFFIXES)}")
    try:
        scene = trimesh.load(str(path), force="scene")
    except Exception as err:  # trimesh raises many types for broken files
        raise SceneLoadError(f"{path}: cannot read the mesh ({type(err).__name__}: {err})") from err
    frame = _frame(path, up)

    tris_all, ids_all = [], []
    plain_tris, plain_colours, plain_ids = [], [], []
    textured: list[DrawBatch] = []
    objects: dict[int, dict[str, Any]] = {}
    next_id = 1 + max((int(g.metadata.get("object_id", 0)) for g in scene.geometry.values()
                       if isinstance(g.metadata.get("object_id"), int)), default=0)
    id_of_geometry: dict[str, int] = {}
    for node in scene.graph.nodes_geometry:
        transform, geom_name = scene.graph[node]
        mesh = scene.geometry[geom_name]
        if not isinstance(mesh, trimesh.Trimesh) or len(mesh.faces) == 0:
            continue
        verts = trimesh.transform_points(mesh.vertices, transform)
        if frame is not None:
            verts = verts @ frame.T
        tris = verts[mesh.faces].astype(np.float32)
        extras = mesh.metadata or {}
        object_id = 0
        if extras.get("category"):
            object_id = extras.get("object_id") if isinstance(extras.get("object_id"), int) else None
            if object_id is None:
                if geom_name not in id_of_geometry:
                    id_of_geometry[geom_name] = next_id
                    next_id += 1
                object_id = id_of_geometry[geom_name]
            objects.setdefault(object_id, {k: v for k, v in extras.items() if k not in ("units", "from_gltf_primitive")})
        ids = np.full(len(tris), object_id, dtype=np.int32)
        colours, uvs, texture = _face_colours(mesh)
        tris_all.append(tris)
        ids_all.append(ids)
        if texture is not None:
            textured.append(_batch(tris, colours, uvs, ids, texture))
        else:
            plain_tris.append(tris)
            plain_colours.append(np.asarray(colours, np.float32))
            plain_ids.append(ids)
    if not tris_all:
        raise SceneLoadError(f"{path}: the file holds no triangle meshes")
    batches = []
    if plain_tris:
        batches.append(_batch(np.concatenate(plain_tris), np.concatenate(plain_colours), None,
                              np.concatenate(plain_ids), None))
    batches.extend(textured)
    return SceneGeometry(
        triangles=np.concatenate(tris_all),
        triangle_ids=np.concatenate(ids_all),
        batches=batches,
        objects=objects,
        metadata=dict(scene.metadata or {}),
        path=path,
    )
