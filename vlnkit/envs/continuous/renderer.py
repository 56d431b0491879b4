"""Headless rasterisation of a scene with moderngl on EGL: RGB, depth and semantic ids in one pass.

One draw writes three colour attachments: the colour (``RGBA8``), the view-space depth in metres along
the camera axis (``R32F``, what Habitat's depth sensor measures; 0 where nothing is hit) and the object id
(``R32UI``). The projection flips the image vertically so that rows come out top first and no copy is
needed to reorder them. Panoramas draw all views into one tall framebuffer, one viewport per view, and
read it back once.

EGL contexts do not survive ``fork``: the renderer remembers the process that created its context and
a worker process (forked or spawned) creates its own on first use, uploading the scene again. Contexts
are created lazily, so environments built in a parent and forked before they render work as they are.
A process forked *after* its parent created a context cannot create one (Mesa's llvmpipe rasteriser
threads are not copied by ``fork``, and its first draw would wait for them forever); the renderer
raises :class:`ForkedAfterRenderingError` there instead of hanging: start such workers with the
``spawn`` or ``forkserver`` method.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from vlnkit.envs.continuous.geometry import rotation_matrix
from vlnkit.envs.continuous.scene import SceneGeometry

_EGL_PROCESS: int | None = None
"""The process that created an EGL context through this module (inherited by forked children)."""

NEAR_PLANE = 0.01
FAR_PLANE = 1000.0
LIGHT_DIRECTION = np.array([0.35, 0.85, 0.4]) / np.linalg.norm([0.35, 0.85, 0.4])

_VERTEX_SHADER = """
#version 330
uniform mat4 u_view;
uniform mat4 u_proj;
in vec3 in_pos;
in vec3 in_normal;
in vec3 in_color;
in vec2 in_uv;
in int in_id;
out vec3 v_normal;
out vec3 v_color;
out vec2 v_uv;
out float v_depth;
flat out int v_id;
void main() {
    vec4 view = u_view * vec4(in_pos, 1.0);
    gl_Position = u_proj * view;
    v_depth = -view.z;
    v_normal = in_normal;
    v_color = in_color;
    v_uv = in_uv;
    v_id = in_id;
}
"""

_FRAGMENT_SHADER = """
#version 330
uniform sampler2D u_texture;
uniform bool u_textured;
uniform bool u_lit;
uniform vec3 u_light;
in vec3 v_normal;
in vec3 v_color;
in vec2 v_uv;
in float v_depth;
flat in int v_id;
layout(location = 0) out vec4 out_rgb;
layout(location = 1) out float out_depth;
layout(location = 2) out uint out_id;
void main() {
    vec3 colour = v_color;
    if (u_textured) {
        colour *= texture(u_texture, v_uv).rgb;
    }
    if (u_lit) {
        colour *= 0.55 + 0.45 * abs(dot(normalize(v_normal), u_light));
    }
    out_rgb = vec4(colour, 1.0);
    out_depth = v_depth;
    out_id = uint(v_id);
}
"""


class ForkedAfterRenderingError(RuntimeError):
    """Rendering was asked of a process forked after its parent had created an EGL context."""


def projection_matrix(hfov_deg: float, width: int, height: int) -> np.ndarray:
    """OpenGL perspective projection for a horizontal field of view, with the image's y flipped so that
    framebuffer row 0 is the top of the picture."""
    fx = 1.0 / math.tan(math.radians(hfov_deg) / 2.0)
    fy = fx * width / height
    n, f = NEAR_PLANE, FAR_PLANE
    return np.array(
        [[fx, 0.0, 0.0, 0.0], [0.0, -fy, 0.0, 0.0], [0.0, 0.0, (f + n) / (n - f), 2 * f * n / (n - f)], [0.0, 0.0, -1.0, 0.0]]
    )


def view_matrix(eye: np.ndarray, yaw: float, pitch: float = 0.0) -> np.ndarray:
    """World-to-camera transform of a camera at ``eye`` turned by ``yaw`` and tilted by ``pitch``."""
    rot = rotation_matrix(yaw, pitch)
    view = np.eye(4)
    view[:3, :3] = rot.T
    view[:3, 3] = -rot.T @ np.asarray(eye, dtype=np.float64)
    return view


@dataclass
class Frame:
    """One rendered set of images, rows top first: ``rgb (..., H, W, 3) uint8``, ``depth (..., H, W)``
    float32 metres (0: nothing hit), ``semantic (..., H, W) uint32``."""

    rgb: np.ndarray
    depth: np.ndarray
    semantic: np.ndarray


class Renderer:
    """Draws one :class:`SceneGeometry` from arbitrary camera poses (see the module docstring).

    Pixels that see no geometry are black, with depth 0 and id 0.

    Args:
        scene: what to draw.
        device_index: the EGL device to use (``GLCONTEXT_DEVICE_INDEX`` also works).
    """

    def __init__(self, scene: SceneGeometry, device_index: int | None = None) -> None:
        self.scene = scene
        self.device_index = device_index
        self._pid: int | None = None
        self._ctx: Any = None
        self._program: Any = None
        self._draws: list[tuple[Any, Any, Any]] = []
        self._targets: dict[tuple[int, int], Any] = {}

    def _ensure_context(self) -> None:
        """Create the EGL context, program and buffers in this process if it has none yet."""
        global _EGL_PROCESS
        if self._pid == os.getpid():
            return
        if _EGL_PROCESS is not None and _EGL_PROCESS != os.getpid():
            raise ForkedAfterRenderingError(
                f"process {os.getpid()} was forked from process {_EGL_PROCESS} after that process created an EGL "
                "context; Mesa cannot render here. Start workers with the 'spawn' or 'forkserver' method, or fork "
                "before the first render."
            )
        import moderngl

        kwargs: dict[str, Any] = {"backend": "egl"}
        if self.device_index is not None:
            kwargs["device_index"] = self.device_index
        ctx = moderngl.create_standalone_context(require=330, **kwargs)
        program = ctx.program(vertex_shader=_VERTEX_SHADER, fragment_shader=_FRAGMENT_SHADER)
        program["u_light"].value = tuple(LIGHT_DIRECTION.tolist())
        draws = []
        for batch in self.scene.batches:
            interleaved = np.empty(len(batch.positions), dtype=[("p", "f4", 3), ("n", "f4", 3), ("c", "f4", 3),
                                                                 ("t", "f4", 2), ("i", "i4")])
            interleaved["p"], interleaved["n"], interleaved["c"] = batch.positions, batch.normals, batch.colors
            interleaved["t"], interleaved["i"] = batch.uvs, batch.ids
            vbo = ctx.buffer(interleaved.tobytes())
            vao = ctx.vertex_array(program, [(vbo, "3f 3f 3f 2f 1i", "in_pos", "in_normal", "in_color", "in_uv", "in_id")])
            texture = None
            if batch.texture is not None:
                tex_h, tex_w = batch.texture.shape[:2]
                texture = ctx.texture((tex_w, tex_h), 4, batch.texture.tobytes())
                texture.build_mipmaps()
                texture.filter = (moderngl.LINEAR_MIPMAP_LINEAR, moderngl.LINEAR)
            draws.append((vao, texture, batch))
        self._ctx, self._program, self._draws, self._targets = ctx, program, draws, {}
        self._pid = _EGL_PROCESS = os.getpid()

    def _target(self, width: int, height: int) -> Any:
        """The framebuffer of this size (created once)."""
        fbo = self._targets.get((width, height))
        if fbo is None:
            ctx = self._ctx
            fbo = ctx.framebuffer(
                color_attachments=[
                    ctx.renderbuffer((width, height), 4),
                    ctx.renderbuffer((width, height), 1, dtype="f4"),
                    ctx.renderbuffer((width, height), 1, dtype="u4"),
                ],
                depth_attachment=ctx.depth_renderbuffer((width, height)),
            )
            self._targets[(width, height)] = fbo
        return fbo

    def _draw(self, view: np.ndarray, proj: np.ndarray) -> None:
        program = self._program
        program["u_view"].write(view.T.astype("f4").tobytes())
        program["u_proj"].write(proj.T.astype("f4").tobytes())
        for vao, texture, batch in self._draws:
            program["u_textured"].value = texture is not None
            program["u_lit"].value = batch.lit
            if texture is not None:
                texture.use(0)
            vao.render()

    def render_views(self, eye: np.ndarray, yaws: Sequence[float], pitch: float, width: int, height: int,
                     hfov: float) -> Frame:
        """Images from ``eye`` for each heading in ``yaws``: arrays of shape ``(len(yaws), H, W, ...)``."""
        import moderngl

        self._ensure_context()
        ctx = self._ctx
        views = len(yaws)
        fbo = self._target(width, height * views)
        fbo.use()
        ctx.enable(moderngl.DEPTH_TEST)
        ctx.disable(moderngl.CULL_FACE)
        # Black, with depth 0 and id 0 where nothing is drawn (every attachment is cleared to zeros).
        fbo.clear(0.0, 0.0, 0.0, 0.0, depth=1.0)
        proj = projection_matrix(hfov, width, height)
        for k, yaw in enumerate(yaws):
            # Flipped projection: the view drawn into viewport k lands in rows k*H..(k+1)*H of memory.
            fbo.viewport = (0, k * height, width, height)
            self._draw(view_matrix(eye, float(yaw), pitch), proj)
        rgb = bytearray(views * height * width * 3)
        depth = bytearray(views * height * width * 4)
        ids = bytearray(views * height * width * 4)
        fbo.read_into(rgb, components=3, attachment=0)
        fbo.read_into(depth, components=1, attachment=1, dtype="f4")
        fbo.read_into(ids, components=1, attachment=2, dtype="u4")
        return Frame(
            rgb=np.frombuffer(rgb, dtype=np.uint8).reshape(views, height, width, 3),
            depth=np.frombuffer(depth, dtype=np.float32).reshape(views, height, width),
            semantic=np.frombuffer(ids, dtype=np.uint32).reshape(views, height, width),
        )

    def render(self, eye: np.ndarray, yaw: float, pitch: float, width: int, height: int, hfov: float) -> Frame:
        """One image from ``eye`` facing ``yaw``: arrays of shape ``(H, W, ...)``."""
        frame = self.render_views(eye, [yaw], pitch, width, height, hfov)
        return Frame(rgb=frame.rgb[0], depth=frame.depth[0], semantic=frame.semantic[0])

    def release(self) -> None:
        """Free the GPU objects of this process's context."""
        if self._pid == os.getpid() and self._ctx is not None:
            self._ctx.release()
        self._ctx, self._program, self._draws, self._targets, self._pid = None, None, [], {}, None
