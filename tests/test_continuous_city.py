"""The synthetic city's 3-D mesh and its rendered panoramas as a street panorama source."""

import json

import gymnasium
import numpy as np
import pytest

import vlnkit  # noqa: F401  (registers the street environments)
from vlnkit.envs.continuous.city import CityPanoramaSource, boxes, city_geometry
from vlnkit.envs.datasets import read_graph
from vlnkit.envs.synth.city import generate_city


@pytest.fixture(scope="module")
def city(tmp_path_factory):
    root = tmp_path_factory.mktemp("city")
    generate_city(root, seed=1, size="small")
    return root


def test_boxes_stand_on_their_base_and_turn():
    tris = boxes(np.array([[1.0, 0.0, 2.0]]), np.array([[2.0, 3.0, 4.0]]), np.array([np.pi / 2]))
    pts = tris.reshape(-1, 3)
    assert pts[:, 1].min() == 0.0 and pts[:, 1].max() == 3.0
    # Turned 90 degrees: the 4 m depth now lies along x.
    assert np.allclose([pts[:, 0].min(), pts[:, 0].max(), pts[:, 2].min(), pts[:, 2].max()], [-1, 3, 1, 3])


def test_mesh_labels_every_landmark(city):
    geometry = city_geometry(city)
    landmarks = json.loads((city / "graph" / "landmarks.json").read_text())
    labels = geometry.labels()
    assert all(labels[i + 1] == lm["category"] for i, lm in enumerate(landmarks))
    assert {"sign", "road", "ground"} <= set(labels.values())
    assert geometry.objects[1]["landmark_id"] == landmarks[0]["id"]


def test_panoramas_show_what_the_scene_file_lists(city):
    graph = read_graph(city)
    source = CityPanoramaSource(city, "semantic", height=64, width=256)
    source.bind(graph)
    scene = [json.loads(line) for line in (city / "graph" / "scene.jsonl").read_text().splitlines()]
    listed, shown = 0, 0
    for node in (0, 100, 300, 500, 900):
        seen = set(np.unique(source.observe(node, 0.0)).tolist())
        near = {int(lm["id"][2:]) + 1 for lm in scene[node]["landmarks"] if lm["distance"] < 15.0}
        listed += len(near)
        shown += len(near & seen)
    assert listed > 10 and shown >= 0.8 * listed  # landmarks close by are in view (a few hide behind others)


def test_heading_rolls_the_panorama_and_depth_is_metric(city):
    graph = read_graph(city)
    rgb = CityPanoramaSource(city, "rgb", height=64, width=256)
    rgb.bind(graph)
    north = rgb.observe(7, 0.0)
    assert north.shape == (64, 256, 3) and north.dtype == np.uint8
    assert np.array_equal(rgb.observe(7, 90.0), np.roll(north, -64, axis=1))
    assert rgb.observe(7, 0.0) is not rgb.observe(7, 0.0)  # fresh arrays
    depth = CityPanoramaSource(city, "depth", height=64, width=256, camera_height=2.5)
    depth.bind(graph)
    d = depth.observe(7, 0.0)
    assert d.shape == (64, 256, 1)
    # Looking almost straight down: the road surface 2.48 m below the camera (roads are 2 cm thick).
    assert d[-1, 128, 0] == pytest.approx(2.48 / np.cos(np.deg2rad(0.5 / 64 * 180)), abs=0.02)


def test_street_env_uses_the_rendered_source(city):
    source = CityPanoramaSource(city, "rgb", height=32, width=128)
    env = gymnasium.make("vlnkit/Touchdown-v0", data_dir=city, split="dev", panorama=source, episode_kinds="all").unwrapped
    obs, _ = env.reset(seed=0)
    assert obs["panorama"].shape == (32, 128, 3) and env.observation_space["panorama"].contains(obs["panorama"])
