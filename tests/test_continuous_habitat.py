"""The habitat-sim backend, tested only where ``habitat_sim`` imports (it has no Python 3.11 wheel here)."""

import numpy as np
import pytest
from conftest import shared_sample

from vlnkit.envs.continuous.backend import SensorSpec, SimulatorBackend
from vlnkit.envs.continuous.geometry import quat_from_yaw
from vlnkit.envs.continuous.habitat_backend import habitat_available

pytestmark = pytest.mark.skipif(not habitat_available(), reason="habitat_sim is not importable (no wheel for this Python; install it from conda)")


@pytest.fixture(scope="module")
def backend():
    from vlnkit.envs.continuous.habitat_backend import HabitatSimBackend

    sim = HabitatSimBackend((SensorSpec("rgb", "rgb", 64, 64), SensorSpec("depth", "depth", 64, 64)))
    sim.load_scene(shared_sample("test_scenes") / "simple_room.glb")
    yield sim
    sim.close()


def test_implements_the_protocol(backend):
    assert isinstance(backend, SimulatorBackend)


def test_agent_state_render_and_geodesics(backend):
    rng = np.random.default_rng(0)
    a, b = backend.sample_navigable_point(rng), backend.sample_navigable_point(rng)
    backend.set_agent_state(a, quat_from_yaw(0.5))
    state = backend.get_agent_state()
    assert np.allclose(state.position, a, atol=1e-4) and np.allclose(state.rotation, quat_from_yaw(0.5), atol=1e-5)
    obs = backend.render()
    assert obs["rgb"].shape == (64, 64, 3) and obs["depth"].shape == (64, 64, 1)
    d = backend.geodesic_distance(a, [b])
    assert d >= np.linalg.norm(np.subtract(a, b)[[0, 2]]) - 1e-3
    path = backend.shortest_path(a, [b])
    assert np.allclose(path[0], a, atol=1e-3)
    pano = backend.render_panorama(12, 32, 32)
    assert pano["rgb"].shape == (12, 32, 32, 3)
    assert backend.probe(a, np.array([b]), [b]).shape == (1,)
