"""The EGL renderer: depth in metres, semantic ids, colours, panorama order, fork safety, real scenes."""

import math
import subprocess
import sys

import numpy as np
import pytest
import trimesh
from conftest import shared_sample
from trimesh.visual.material import PBRMaterial

from vlnkit.envs.continuous.backend import SensorSpec, process_depth
from vlnkit.envs.continuous.geometry import habitat_to_zup, quat_from_yaw
from vlnkit.envs.continuous.mesh_backend import MeshBackend
from vlnkit.envs.continuous.renderer import LIGHT_DIRECTION, Renderer
from vlnkit.envs.continuous.scene import load_scene_geometry

RED, GREEN = (200, 20, 20), (20, 200, 20)


def labelled_box(lo, hi, rgb, category, object_id):
    """A box in Habitat's frame, stored z-up as in a .glb, with a colour and semantic extras."""
    mesh = trimesh.creation.box(extents=np.subtract(hi, lo))
    mesh.apply_translation(np.add(lo, hi) / 2)
    mesh = trimesh.Trimesh(habitat_to_zup(mesh.vertices), mesh.faces, process=False)
    mesh.visual = trimesh.visual.TextureVisuals(material=PBRMaterial(baseColorFactor=[*rgb, 255]))
    mesh.metadata = {"category": category, "object_id": object_id}
    return mesh


@pytest.fixture(scope="module")
def wall_scene(tmp_path_factory):
    """Floor around the origin, a red wall 2.95 m ahead (-z), a green pillar 3 m to the left (-x)."""
    scene = trimesh.Scene()
    scene.add_geometry(labelled_box((-5, -0.05, -5), (5, 0, 5), (128, 128, 128), "floor", 1), node_name="floor")
    scene.add_geometry(labelled_box((-5, 0, -3.05), (5, 5, -2.95), RED, "wall", 5), node_name="wall")
    scene.add_geometry(labelled_box((-3.2, 0, -0.5), (-2.8, 3, 0.5), GREEN, "pillar", 7), node_name="pillar")
    path = tmp_path_factory.mktemp("render") / "scene.glb"
    path.write_bytes(scene.export(file_type="glb"))
    return path


def test_depth_semantics_and_colour(wall_scene):
    geometry = load_scene_geometry(wall_scene)
    assert geometry.labels() == {1: "floor", 5: "wall", 7: "pillar"}
    frame = Renderer(geometry).render(np.array([0.0, 1.25, 0.0]), 0.0, 0.0, 64, 48, 90.0)
    assert frame.rgb.shape == (48, 64, 3) and frame.depth.shape == (48, 64) and frame.semantic.shape == (48, 64)
    assert frame.rgb.flags.writeable and frame.depth.flags.writeable
    wall = frame.semantic == 5
    # Habitat's depth is the distance along the camera axis, so a wall facing the camera reads the same
    # everywhere: 2.95 m.
    assert wall[:20].all() and np.allclose(frame.depth[wall], 2.95, atol=1e-3)
    assert frame.semantic[-1, 32] == 1  # floor at the bottom row
    shade = 0.55 + 0.45 * abs(LIGHT_DIRECTION[2])
    assert np.allclose(frame.rgb[10, 32], np.array(RED) * shade, atol=2)


def test_depth_sensor_processing():
    spec = SensorSpec("depth", "depth", min_depth=0.5, max_depth=4.5)
    out = process_depth(np.array([[0.0, 0.25, 2.5, 9.0]], dtype=np.float32), spec)
    assert out.shape == (1, 4, 1) and out.dtype == np.float32
    assert np.allclose(out[0, :, 0], [0.0, 0.0, 0.5, 1.0])  # no hit stays 0; clipped, then scaled


def test_panorama_views_turn_left(wall_scene):
    backend = MeshBackend()
    backend.load_scene(wall_scene)
    backend.set_agent_state([0.0, 0.0, 0.0], quat_from_yaw(0.0))
    pano = backend.render_panorama(12, 32, 32)
    assert pano["rgb"].shape == (12, 32, 32, 3) and pano["depth"].shape == (12, 32, 32, 1)
    assert pano["semantic"][0, 16, 16] == 5  # ahead: the wall
    assert pano["semantic"][3, 16, 16] == 7  # 90 degrees left: the pillar
    assert pano["depth"][3, 16, 16, 0] == pytest.approx(2.8, abs=1e-3)
    assert pano["semantic"][9, 16, 16] != 7  # 90 degrees right: not the pillar
    rgb = backend.render()
    assert rgb["rgb"].shape == (224, 224, 3) and rgb["depth"].shape == (256, 256, 1)
    backend.close()


FORK_SCRIPT = """
import multiprocessing, sys
import numpy as np
from vlnkit.envs.continuous.renderer import ForkedAfterRenderingError, Renderer
from vlnkit.envs.continuous.scene import load_scene_geometry

def child(renderer, conn):
    try:
        conn.send(renderer.render(np.array([0.0, 1.25, 0.0]), 0.3, 0.0, 32, 32, 90.0).rgb.tobytes())
    except ForkedAfterRenderingError as err:
        conn.send(str(err))

def fork_and_render(renderer):
    ctx = multiprocessing.get_context("fork")
    receive, send = ctx.Pipe(duplex=False)
    worker = ctx.Process(target=child, args=(renderer, send))
    worker.start()
    answer = receive.recv() if receive.poll(60) else None
    worker.join(10)
    return answer

renderer = Renderer(load_scene_geometry(sys.argv[1]))
first = fork_and_render(renderer)
parent = renderer.render(np.array([0.0, 1.25, 0.0]), 0.3, 0.0, 32, 32, 90.0).rgb.tobytes()
second = fork_and_render(renderer)
print("same" if first == parent else "different", "error" if isinstance(second, str) and "spawn" in second else second)
"""


def test_forked_worker_creates_its_own_context(wall_scene):
    # In a fresh interpreter: a worker forked before the parent draws creates its own EGL context and
    # renders the same image; one forked after the parent drew gets a clear error instead of a hang.
    result = subprocess.run([sys.executable, "-c", FORK_SCRIPT, str(wall_scene)], capture_output=True, text=True,
                            timeout=180)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["same", "error"]


def test_real_scene_renders():
    scenes = shared_sample("test_scenes")
    backend = MeshBackend(sensors=(SensorSpec("rgb", "rgb", 64, 64), SensorSpec("depth", "depth", 64, 64),
                                   SensorSpec("semantic", "semantic", 64, 64)))
    backend.load_scene(scenes / "simple_room.glb")
    nav = backend.navmesh
    floor = nav.positions[nav.component == nav.largest]
    point = floor[np.argmin(np.linalg.norm(floor - floor.mean(axis=0), axis=1))]  # mid-room, not by a wall
    backend.set_agent_state(point, quat_from_yaw(math.pi / 4))
    obs = backend.render()
    assert obs["rgb"].shape == (64, 64, 3) and obs["rgb"].max() > 0
    assert (obs["depth"] > 0).mean() > 0.3  # the floor at least
    assert obs["semantic"].dtype == np.uint32
    backend.close()
