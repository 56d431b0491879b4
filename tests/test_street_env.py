"""The street Gymnasium environment: API contract, oracle guidance and panorama observations."""

import gymnasium
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

import vlnkit  # noqa: F401
from vlnkit.envs.datasets import StreetEpisode
from vlnkit.envs.street.actions import StreetAction as A
from vlnkit.envs.street.graph import StreetGraph
from vlnkit.envs.street.panorama import FeatureArraySource, perspective_crop


def grid_graph(n: int = 5) -> StreetGraph:
    """An n x n grid of nodes 10 m apart (roughly), links both ways, headings 0/90/180/270."""
    nodes, links = [], []
    for r in range(n):
        for c in range(n):
            nodes.append((f"n{r}_{c}", 0, 40.0 + r * 9e-5, -73.0 + c * 1.2e-4))
    for r in range(n):
        for c in range(n):
            if r + 1 < n:
                links += [(f"n{r}_{c}", 0, f"n{r + 1}_{c}"), (f"n{r + 1}_{c}", 180, f"n{r}_{c}")]
            if c + 1 < n:
                links += [(f"n{r}_{c}", 90, f"n{r}_{c + 1}"), (f"n{r}_{c + 1}", 270, f"n{r}_{c}")]
    return StreetGraph.from_lists(nodes, links)


def episodes() -> list[StreetEpisode]:
    route = ("n0_0", "n1_0", "n2_0", "n2_1", "n2_2")
    return [
        StreetEpisode("1", "touchdown", "Go north two blocks, turn right, stop after two blocks.", route, 0.0, 90.0),
        StreetEpisode("2", "touchdown", "Walk east to the corner café.", ("n4_0", "n4_1", "n4_2", "n4_3"), 0.0),
    ]


@pytest.fixture
def env():
    e = gymnasium.make("vlnkit/Touchdown-v0", graph=grid_graph(), episodes=episodes(), panorama="none")
    yield e
    e.close()


def test_check_env_passes(env):
    check_env(env.unwrapped, skip_render_check=True)


def test_start_heading_snaps_to_nearest_link_and_observation_fields(env):
    obs, info = env.reset(seed=0, options={"episode_id": "1"})
    assert obs["heading"][0] == 0.0  # 0.0 is a link heading at n0_0 (north)
    assert obs["instruction"].startswith("Go north")
    assert sorted(obs["links"][obs["links"] >= 0].tolist()) == [0.0, 90.0]
    assert info["panoid"] == "n0_0" and info["distance_to_goal"] == 4
    assert obs["position"].shape == (2,)


def test_oracle_walks_the_route_and_gets_reward(env):
    obs, info = env.reset(options={"episode_id": "1"})
    visited, total = [info["panoid"]], 0.0
    for _ in range(30):
        obs, reward, terminated, truncated, info = env.step(info["oracle_action"])
        total += reward
        if visited[-1] != info["panoid"]:
            visited.append(info["panoid"])
        if terminated or truncated:
            break
    assert terminated and total == 1.0
    assert visited[-1] == "n2_2" and info["distance_to_goal"] == 0
    assert len(visited) == 5  # a shortest path: four moves


def test_step_limit_truncates():
    e = gymnasium.make("vlnkit/Touchdown-v0", graph=grid_graph(), episodes=episodes(), panorama="none", max_steps=3)
    e.reset(options={"episode_id": "2"})
    results = [e.step(int(A.LEFT)) for _ in range(3)]
    assert [r[3] for r in results] == [False, False, True]
    assert not any(r[2] for r in results)


def test_stop_away_from_goal_gives_no_reward(env):
    env.reset(options={"episode_id": "1"})
    _, reward, terminated, _, _ = env.step(int(A.STOP))
    assert terminated and reward == 0.0


def test_feature_panorama_rolls_slices_with_heading(tmp_path):
    g = grid_graph()
    feats = np.zeros((g.num_nodes, 4, 2), dtype=np.float32)
    feats[:, :, 0] = np.arange(4)  # slice k faces yaw + 90k; yaw is 0 here
    np.save(tmp_path / "f.npy", feats)
    (tmp_path / "i.txt").write_text("\n".join(g.panoids))
    e = gymnasium.make("vlnkit/Touchdown-v0", graph=g, episodes=episodes(),
                       panorama=FeatureArraySource(tmp_path / "f.npy", tmp_path / "i.txt"))
    obs, _ = e.reset(options={"episode_id": "2"})  # n4_0: links east (90) and south (180); snaps to 90
    assert obs["heading"][0] == 90.0
    assert obs["panorama"][:, 0].tolist() == [1.0, 2.0, 3.0, 0.0]


def test_feature_index_mismatch_is_a_clear_error(tmp_path):
    np.save(tmp_path / "f.npy", np.zeros((3, 2), dtype=np.float32))
    (tmp_path / "i.txt").write_text("a\nb\n")
    with pytest.raises(ValueError, match="i.txt: 2 panoids but .*f.npy has 3 rows"):
        FeatureArraySource(tmp_path / "f.npy", tmp_path / "i.txt")


def test_perspective_crop_looks_at_the_heading():
    pano = np.zeros((90, 360, 3), dtype=np.uint8)
    pano[:, 265:275] = 255  # a white stripe at +90 deg from the centre column (yaw 0 -> heading 90)
    ahead = perspective_crop(pano, heading=90.0, yaw=0.0, fov=60.0, size=(32, 33))
    behind = perspective_crop(pano, heading=270.0, yaw=0.0, fov=60.0, size=(32, 33))
    assert ahead[16, 16].tolist() == [255, 255, 255]
    assert behind.max() == 0


def test_guidance_off_leaves_only_public_info():
    e = gymnasium.make("vlnkit/Touchdown-v0", graph=grid_graph(), episodes=episodes(), panorama="none", guidance=False)
    _, info = e.reset(options={"episode_id": "1"})
    assert set(info) == {"episode_id", "panoid"}


def test_image_folder_source_centres_the_heading(tmp_path):
    from PIL import Image

    from vlnkit.envs.street.panorama import ImageFolderSource

    g = grid_graph(2)
    for p in g.panoids:
        img = np.zeros((16, 64, 3), dtype=np.uint8)
        img[:, 48] = 200  # column 48 of 64 faces yaw + (48 - 32) / 64 * 360 = 90 degrees (yaw is 0)
        Image.fromarray(img).save(tmp_path / f"{p}.png")
    src = ImageFolderSource(tmp_path, height=16, width=64)
    src.bind(g)
    facing_east = src.observe(0, 90.0)
    assert facing_east.shape == (16, 64, 3)
    assert facing_east[8, 32].tolist() == [200, 200, 200]  # the marked column is now in the centre
    assert src.observe(0, 0.0)[8, 48].tolist() == [200, 200, 200]
    with pytest.raises(FileNotFoundError, match="no panorama image for panoid 'zz'"):
        missing = StreetGraph.from_lists([("zz", 0, 0.0, 0.0)], [])
        src.bind(missing)
        src.observe(0, 0.0)


def test_bfs_hops_equal_scipy_shortest_paths_on_random_graphs():
    from scipy.sparse.csgraph import shortest_path

    from vlnkit.envs.street.graph import bfs_hops

    from test_navigator import random_graph

    rng = np.random.default_rng()
    for _ in range(5):
        g = random_graph(rng, 80)
        goal = int(rng.integers(g.num_nodes))
        expected = shortest_path(g.adjacency, directed=False, unweighted=True, indices=goal)
        assert np.array_equal(g.hops_to(goal), expected)
        directed = shortest_path(g.adjacency, directed=True, unweighted=True, indices=goal)
        assert np.array_equal(bfs_hops(g.adjacency, goal, directed=True), directed)


@pytest.mark.parametrize("semantics, final", [("touchdown", "B"), ("velma", "D")])
def test_oracle_respects_what_each_semantics_can_enter(semantics, final):
    """A triangle A-B-C with a spur B-D that ends at D (D has one outgoing link). Touchdown refuses to
    move onto D, so its oracle stops next to it at B; under VELMA the oracle walks onto D and stops."""
    nodes = [(p, 0, 40.0 + i * 1e-4, -73.0 + (i % 2) * 1e-4) for i, p in enumerate("ABCD")]
    links = [("A", 90, "B"), ("B", 270, "A"), ("B", 180, "C"), ("C", 0, "B"), ("C", 300, "A"), ("A", 120, "C"),
             ("B", 0, "D"), ("D", 180, "B")]
    g = StreetGraph.from_lists(nodes, links)
    ep = StreetEpisode("1", "touchdown", "go to the spur", ("A", "B", "D"), 90.0)
    e = gymnasium.make("vlnkit/Touchdown-v0", graph=g, episodes=[ep], panorama="none", semantics=semantics)
    _, info = e.reset(options={"episode_id": "1"})
    for _ in range(10):
        _, _, terminated, truncated, info = e.step(info["oracle_action"])
        if terminated or truncated:
            break
    assert terminated and info["panoid"] == final


def test_velma_oracle_stops_at_a_start_it_cannot_leave():
    """Under VELMA every action but TURN_AROUND at a one-link node ends the episode: stop at once."""
    nodes = [(p, 0, 40.0, -73.0 + i * 1e-4) for i, p in enumerate("ABC")]
    links = [("A", 90, "B"), ("B", 270, "A"), ("B", 90, "C"), ("C", 270, "B")]
    ep = StreetEpisode("1", "map2seq", "go east", ("A", "B", "C"), 90.0)
    e = gymnasium.make("vlnkit/Map2Seq-v0", graph=StreetGraph.from_lists(nodes, links), episodes=[ep], panorama="none")
    _, info = e.reset(options={"episode_id": "1"})
    assert info["oracle_action"] == int(A.STOP)


def test_render_panorama_kind_builds_the_city_renderer(tmp_path):
    from vlnkit.envs.continuous.city import CityPanoramaSource
    from vlnkit.envs.street.env import make_panorama_source

    (tmp_path / "graph").mkdir()
    (tmp_path / "graph" / "landmarks.json").write_text("[]")
    source = make_panorama_source("render", tmp_path, modality="depth", height=32, width=128)
    assert isinstance(source, CityPanoramaSource)
    assert source.space.shape[:2] == (32, 128)
    with pytest.raises(ValueError, match="unknown panorama kind 'video'"):
        make_panorama_source("video", tmp_path)


def test_steps_per_node_gives_long_routes_their_budget():
    """A 5-node route with steps_per_node=2 gets max(3, ceil(2 * 5)) = 10 steps; without it, 3."""
    from vlnkit.envs.street.env import StreetEnv

    graph = grid_graph()
    route = ("n0_0", "n1_0", "n2_0", "n3_0", "n4_0")
    episode = StreetEpisode("1", "touchdown", "north", route, 0.0, 0.0)
    for steps_per_node, budget in ((None, 3), (2.0, 10), (0.1, 3)):
        env = StreetEnv(graph=graph, episodes=[episode], max_steps=3, steps_per_node=steps_per_node, panorama="none")
        env.reset(options={"episode_id": "1"})
        steps, truncated = 0, False
        while not truncated:
            _, _, terminated, truncated, _ = env.step(2)  # LEFT: turns in place, never ends the episode
            steps += 1
            assert not terminated
        assert steps == budget == env.step_budget(episode)
    with pytest.raises(ValueError, match="steps_per_node"):
        StreetEnv(graph=graph, episodes=[episode], steps_per_node=0, panorama="none")


def _positions_along(env, seed: int, moves: int) -> tuple[np.ndarray, np.ndarray]:
    """Observed and true positions of an agent moving forward ``moves`` times (north from n0_0 on the grid)."""
    obs, info = env.reset(seed=seed, options={"episode_id": "1"})
    observed, true = [obs["position"]], [env.unwrapped.graph.xy[env.unwrapped.state.node]]
    for _ in range(moves):
        obs, *_ = env.step(int(A.FORWARD))
        observed.append(obs["position"])
        true.append(env.unwrapped.graph.xy[env.unwrapped.state.node])
    return np.array(observed, dtype=np.float64), np.array(true)


def test_pose_noise_and_odometry_drift_are_seeded_and_shaped_as_specified():
    exact = gymnasium.make("vlnkit/Touchdown-v0", graph=grid_graph(), episodes=episodes(), panorama="none")
    observed, true = _positions_along(exact, 0, 4)
    assert np.allclose(observed, true, atol=1e-3)  # no noise: the node's own position
    noisy = gymnasium.make("vlnkit/Touchdown-v0", graph=grid_graph(), episodes=episodes(), panorama="none", pose_noise=2.0)
    errors = np.concatenate([np.subtract(*_positions_along(noisy, s, 4)) for s in range(200)])
    assert np.std(errors) == pytest.approx(2.0, rel=0.1) and abs(np.mean(errors)) < 0.2
    again = _positions_along(noisy, 7, 4)[0]
    assert np.array_equal(again, _positions_along(noisy, 7, 4)[0])  # the same seed, the same errors
    drift = gymnasium.make("vlnkit/Touchdown-v0", graph=grid_graph(), episodes=episodes(), panorama="none",
                           odometry_drift=1.0)
    runs = np.stack([np.subtract(*_positions_along(drift, s, 4)) for s in range(300)])  # (runs, 5 obs, 2)
    assert np.allclose(runs[:, 0], 0.0, atol=1e-4)  # no move yet, no drift (float32 positions)
    # A random walk: the error after k moves has variance k (1 m per move in each axis).
    for k in (1, 2, 4):
        assert np.var(runs[:, k]) == pytest.approx(k, rel=0.2)
    with pytest.raises(ValueError, match="non-negative"):
        gymnasium.make("vlnkit/Touchdown-v0", graph=grid_graph(), episodes=episodes(), panorama="none", pose_noise=-1.0)
