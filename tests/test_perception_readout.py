"""Learned perception for the street agents: exact panorama augmentation, readout scores by hand, a readout that
trains and loads back only as a readout, and the learned panorama source that turns its predictions as the
scene-label source turns its labels."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from vlnkit.config import load_config
from vlnkit.envs.continuous.city import SIGN_PALETTE, city_geometry, sign_colours
from vlnkit.envs.street.graph import StreetGraph
from vlnkit.envs.street.panorama import ImageFolderSource
from vlnkit.envs.synth.scene import STOREFRONTS
from vlnkit.perception.data import FORMAT, write_meta, write_npz
from vlnkit.perception.heads import panorama_augment, readout_scores
from vlnkit.perception.readout_data import NORTH_AT_COLUMN_0, shard_path
from vlnkit.perception.sources import LearnedReadoutSource, street_perception_source
from vlnkit.perception.train import load_perception_model, normalise, train_perception

CATEGORIES = ["bank", "cafe", "tree"]
SECTORS, HEIGHT, WIDTH = 4, 32, 64


def test_augment_keeps_every_column_in_its_target_sector() -> None:
    per = WIDTH // SECTORS
    columns = torch.arange(WIDTH).view(1, 1, WIDTH, 1).expand(6, HEIGHT, WIDTH, 1)
    sectors = torch.arange(SECTORS).view(1, SECTORS, 1).expand(6, SECTORS, 2).float()
    flip = torch.tensor([False, True, False, True, True, False])
    shift = torch.tensor([0, 0, 1, 1, 3, 2])
    x, y = panorama_augment(columns, sectors, flip, shift)
    for b in range(6):
        # The image column j shows original column x[j]; it must lie in the sector the target now puts at j.
        assert (x[b, 0, :, 0] // per == y[b, torch.arange(WIDTH) // per, 0].long()).all()
    assert y[1, :, 0].tolist() == [3, 2, 1, 0]  # a mirror: bearing b -> 360 - b
    assert y[2, :, 0].tolist() == [1, 2, 3, 0]  # a turn by one sector to the right
    assert x[3, 0, :, 0].tolist() == list(range(per - 1, -1, -1)) + list(range(WIDTH - 1, per - 1, -1))


def test_readout_scores_by_hand() -> None:
    target = torch.tensor([[[0.0, 0.5], [0.3, 0.0]]])
    pred = torch.tensor([[[0.25, 0.5], [0.1, 0.1]]])
    scores = readout_scores(pred, target, visible=0.2)
    # seen: (0,0) and (0,1); truly there: (0,1) and (1,0); one hit.
    assert scores["precision"] == pytest.approx(0.5) and scores["recall"] == pytest.approx(0.5)
    assert scores["f1"] == pytest.approx(0.5)
    assert scores["mae"] == pytest.approx((0.25 + 0.0 + 0.2 + 0.1) / 4)


def test_every_storefront_category_has_its_own_sign_and_the_mesh_shows_it(tmp_path: Path) -> None:
    pairs = {tuple(map(tuple, sign_colours(c.name))) for c in STOREFRONTS}
    assert len(pairs) == len(STOREFRONTS)
    assert all(a != b for a, b in pairs) and all(a in SIGN_PALETTE and b in SIGN_PALETTE for a, b in pairs)
    from vlnkit.envs.synth.city import generate_city

    generate_city(tmp_path, seed=3, size="small")
    geometry = city_geometry(tmp_path)
    landmarks = json.loads((tmp_path / "graph" / "landmarks.json").read_text())
    shop = next(i for i, lm in enumerate(landmarks) if lm["kind"] == "storefront")
    sign_id = next(i for i, o in geometry.objects.items() if o["category"] == "sign" and o["landmark_id"] == landmarks[shop]["id"])
    batch = geometry.batches[0]
    colours = {tuple(np.round(c * 255).astype(int)) for c in batch.colors[batch.ids == sign_id]}
    assert colours == {tuple(int(v) for v in c) for c in sign_colours(landmarks[shop]["category"])}


def _toy_data(root: Path, rng: np.random.Generator, count: int = 48) -> None:
    """Panoramas with one bright block whose colour says the category and whose column says the sector."""
    for split, seed in (("train", 1), ("val", 0)):
        rgb = np.full((count, HEIGHT, WIDTH, 3), 60, dtype=np.uint8)
        closeness = np.zeros((count, SECTORS, len(CATEGORIES)), dtype=np.float32)
        per = WIDTH // SECTORS
        for i in range(count):
            sector, category = rng.integers(SECTORS), rng.integers(len(CATEGORIES))
            colour = np.zeros(3, dtype=np.uint8)
            colour[category] = 250
            rgb[i, 8:24, sector * per:(sector + 1) * per] = colour
            closeness[i, sector, category] = 0.8
        write_npz(shard_path(root, split, seed), {"rgb": rgb, "closeness": closeness})
    config = {"height": HEIGHT, "width": WIDTH, "sectors": SECTORS}
    write_meta(root, {"format": FORMAT, "source": "city", "config": config, "categories": CATEGORIES,
                      "sectors": SECTORS, "splits": {"train": [1], "val": [0]}, "images": {"train": count, "val": count}})


@pytest.fixture(scope="module")
def readout_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("readout")
    _toy_data(root / "data", np.random.default_rng(0))
    cfg = load_config("train_perception", [f"data={root / 'data'}", f"out={root / 'run'}", "objective=readout",
                                           "progress=false", "batch_size=8", "epochs=6", "lr=0.003", "warmup_steps=5",
                                           "eval_every=100", "threads=1", "readout.d_model=32", "readout.heads=2",
                                           "readout.ffn_dim=64"])
    return root / "run", train_perception(cfg)


def test_readout_learns_where_and_what(readout_run: tuple[Path, dict]) -> None:
    _, result = readout_run
    losses = [h["loss"] for h in result["history"]]
    assert losses[-1] < 0.6 * losses[0]
    assert {"mae", "precision", "recall", "f1"} <= set(result)


def test_readout_weights_load_only_as_a_readout(readout_run: tuple[Path, dict]) -> None:
    run, _ = readout_run
    with pytest.raises(ValueError, match="objective='readout', expected 'seg'"):
        load_perception_model(run, task="seg")
    model, info = load_perception_model(run, task="readout")
    assert info["categories"] == CATEGORIES and info["settings"]["image_shape"] == [HEIGHT, WIDTH, 3]
    assert model(torch.zeros(1, 3, HEIGHT, WIDTH)).shape == (1, SECTORS, len(CATEGORIES))


class _Pixels:
    """A pixel source of fixed random panoramas (column 0 at bearing 0 when observed at heading 180)."""

    def __init__(self, nodes: int, shape: tuple[int, ...] = (HEIGHT, WIDTH, 3)) -> None:
        self.images = np.random.default_rng(1).integers(0, 255, (nodes, *shape), dtype=np.uint8)
        self.calls: list[tuple[int, float]] = []

    def bind(self, graph: StreetGraph) -> None:
        self.bound = graph

    def observe(self, node: int, heading: float) -> np.ndarray:
        self.calls.append((node, heading))
        return self.images[node].copy()


def test_learned_source_turns_its_predictions_like_the_scene_labels(readout_run: tuple[Path, dict]) -> None:
    run, _ = readout_run
    pixels = _Pixels(3)
    source = LearnedReadoutSource(pixels, run, categories=["tree", "bank"])
    source.bind(StreetGraph.from_lists([("a", 0, 0.0, 0.0), ("b", 0, 0.0, 1e-4), ("c", 0, 1e-4, 0.0)], []))
    model, _ = load_perception_model(run, task="readout")
    with torch.no_grad():
        full = model(normalise(torch.as_tensor(pixels.images[2])[None]))[0].numpy()
    north = source.observe(2, 0.0)
    assert north.shape == (SECTORS, 2) and source.privileged == ()
    assert np.allclose(north, full[:, [2, 0]], atol=1e-6)
    for k in range(SECTORS):
        assert np.array_equal(source.observe(2, 90.0 * k), np.roll(north, -k, axis=0))
    assert pixels.calls == [(2, NORTH_AT_COLUMN_0)]  # the network saw the node once, north at column 0
    with pytest.raises(ValueError, match="no \\['bus stop'\\]"):
        LearnedReadoutSource(pixels, run, categories=["bus stop"])
    wrong = LearnedReadoutSource(_Pixels(1, (HEIGHT, 2 * WIDTH, 3)), run)
    with pytest.raises(ValueError, match="trained on \\(32, 64, 3\\) panoramas"):
        wrong.predict(0)


def test_learned_perception_needs_weights(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="perception.weights=RUN"):
        street_perception_source({"mode": "learned", "weights": None}, tmp_path, {})


def test_image_folder_names_the_panoid_of_a_bad_panorama(tmp_path: Path) -> None:
    graph = StreetGraph.from_lists([("good", 0, 0.0, 0.0), ("small", 0, 0.0, 1e-4), ("cut", 0, 1e-4, 0.0)], [])
    Image.fromarray(np.zeros((40, 80, 3), dtype=np.uint8)).save(tmp_path / "good.jpg")
    Image.fromarray(np.zeros((20, 80, 3), dtype=np.uint8)).save(tmp_path / "small.jpg")
    whole = (tmp_path / "good.jpg").read_bytes()
    (tmp_path / "cut.jpg").write_bytes(whole[: len(whole) // 2])
    source = ImageFolderSource(tmp_path, height=16, width=32)
    source.bind(graph)
    assert source.observe(0, 0.0).shape == (16, 32, 3)
    with pytest.raises(ValueError, match="panoid 'small' is 20 x 80 pixels, expected 40 x 80"):
        source.observe(1, 0.0)
    with pytest.raises(ValueError, match="panoid 'cut' is not a readable image"):
        source.observe(2, 0.0)
    strict = ImageFolderSource(tmp_path, height=16, width=32, image_size=(1500, 3000))
    strict.bind(graph)
    with pytest.raises(ValueError, match="panoid 'good' is 40 x 80 pixels, expected 1500 x 3000"):
        strict.observe(0, 0.0)


def test_readout_with_a_neck_reads_the_finer_fused_map(one_torch_thread: None) -> None:
    from vlnkit.perception.train import build_dense_model

    settings = {"d_model": 32, "heads": 2, "ffn_dim": 64}
    plain = build_dense_model("cswin_nano", "readout", 3, readout={"level": -2, **settings}, sectors=SECTORS)
    necked = build_dense_model("cswin_nano", "readout", 3, readout={"neck_from": 1, **settings}, sectors=SECTORS)
    x = torch.randn(2, 3, HEIGHT, WIDTH)
    assert plain(x).shape == necked(x).shape == (2, SECTORS, 3)
    assert plain.readout.attention_size == (HEIGHT // 16, WIDTH // 16)
    assert necked.readout.attention_size == (HEIGHT // 8, WIDTH // 8)  # the stride-8 map of the FPN neck


def test_sectored_readout_reads_each_sector_from_its_own_columns(one_torch_thread: None) -> None:
    from vlnkit.perception.heads import CategoryReadout

    torch.manual_seed(0)
    readout = CategoryReadout(16, 3, sectors=4, d_model=32, heads=4, ffn_dim=64, dropout=0.0, sectored=True).eval()
    x = torch.randn(2, 16, 3, 8)  # 8 columns: 2 per sector
    with torch.no_grad():
        base = readout(x)
        turned = readout(torch.roll(x, -2, dims=-1))  # a turn by one sector
        poked = x.clone()
        poked[:, :, 1, 5] += 3.0  # column 5 lies in sector 2
        changed = readout(poked)
    assert base.shape == (2, 4, 3)
    assert torch.allclose(turned, torch.roll(base, -1, dims=1), atol=1e-6)
    delta = (changed - base).abs().amax(dim=(0, 2))
    assert delta[2] > 1e-4 and torch.equal(delta[[0, 1, 3]], torch.zeros(3))
    assert readout.attention.shape == (2, 4, 12, 24)
    assert torch.equal(readout.attention[:, :, 0, 2:] > 0, torch.zeros_like(readout.attention[:, :, 0, 2:], dtype=torch.bool)
                       | (torch.arange(2, 24) % 8 < 2))  # sector 0's query sees columns 0 and 1 only


def test_eval_config_swaps_the_street_panorama_for_the_learned_readout(readout_run: tuple[Path, dict]) -> None:
    from vlnkit.eval.street import StreetTask
    from vlnkit.envs.synth import default_city

    run, _ = readout_run
    city = default_city(seed=0, size="small")
    task = StreetTask()
    cfg = load_config("eval", ["agent=modular", "perception=learned", f"perception.weights={run}"])
    assert cfg.out.endswith("-learned-dev-seed0")
    # The toy readout knows 3 categories; the city's scene names 46, so the source refuses to stand in for it.
    with pytest.raises(ValueError, match="trained on other categories"):
        task.make_env(cfg, city)
    gt = task.make_env(load_config("eval", ["agent=modular"]), city)
    assert gt.panorama.privileged  # the default reads the scene labels, and says so


def test_flicker_benchmark_runs_floats_along_gold_routes(readout_run: tuple[Path, dict]) -> None:
    from vlnkit.benchmarks import run_benchmark
    from vlnkit.envs.synth import default_city

    run, _ = readout_run
    assert "skipped" in run_benchmark("perception_flicker")
    result = run_benchmark("perception_flicker", weights=str(run), episodes=1, lams="1,0.5")
    first = json.loads((default_city(0) / "data" / "dev.json").read_text().splitlines()[0])
    assert result["nodes"] == len(first["route_panoids"]) and result["episodes"] == 1
    plain, floated = result["lam_1"], result["lam_0.5"]
    for figures in (plain, floated):
        assert all(0.0 <= figures[k] <= 1.0 for k in ("spurious_flips", "missed_changes", "precision", "recall", "f1"))
    if plain["spurious_flips"]:
        assert floated["spurious_flips_vs_plain"] == pytest.approx(floated["spurious_flips"] / plain["spurious_flips"],
                                                                    abs=1e-3)
