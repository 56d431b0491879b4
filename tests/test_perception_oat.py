"""OAT as a view prior: the oracle searcher, pointer decoding over padded objects, learning on toy scanpaths,
checkpoints, and objects from a category map."""

from pathlib import Path

import numpy as np
import pytest
import torch

from vlnkit.perception.data import HOUSE_CATEGORIES
from vlnkit.perception.oat import (
    OAT,
    OATConfig,
    OATTrainConfig,
    PanoramaObjects,
    Scanpath,
    SearcherConfig,
    collate,
    count_parameters,
    fit_sequences,
    load_oat,
    oat_view_scores,
    panorama_objects,
    save_oat,
    search_fixations,
    sequence_view_accuracy,
    train_oat,
    view_scores,
)

VIEWS = 12
TOY_CATEGORIES = ("bed", "couch", "chair", "lamp", "fridge", "stove", "toilet", "sink", "desk", "tv")
TOY_WORDS = tuple(sorted({w for c in TOY_CATEGORIES for w in c.split()}))


def make_objects(rows: list[tuple[str, int, float]]) -> PanoramaObjects:
    """Objects ``(category, view, box centre x)``, each a 0.2-wide box of the same height."""
    cx = np.asarray([r[2] for r in rows])
    box = np.stack([cx - 0.1, np.full_like(cx, 0.4), cx + 0.1, np.full_like(cx, 0.6)], axis=1)
    return PanoramaObjects(np.asarray([HOUSE_CATEGORIES.index(r[0]) for r in rows]), box, np.full(len(rows), 0.04),
                           np.zeros((len(rows), 3)), np.asarray([r[1] for r in rows]), VIEWS)


def test_searcher_fixates_by_similarity_and_ends_on_target() -> None:
    # 0 target couch (view 3, centre); 1 the same couch seen from view 4; 2 a coffee table beside it in view 3;
    # 3 another couch one view away; 4 an unrelated lamp in view 3; 5 an armchair of the same room far away.
    objects = make_objects([("couch", 3, 0.5), ("couch", 4, 0.9), ("coffee table", 3, 0.7), ("couch", 2, 0.5),
                            ("lamp", 3, 0.4), ("armchair", 9, 0.5)])
    relatedness = np.asarray([1.0, 1.0, 0.7, 1.0, 0.2, 0.7])
    instance = np.asarray([10, 10, 11, 12, 13, 14])
    path = search_fixations(objects, 0, relatedness, instance=instance)
    # coffee table: 0.7 * exp(-21.8^2 / (2 * 30^2)) ~ 0.54; other couch: 1.0 * exp(-0.5) * 0.6 ~ 0.36;
    # the lamp (0.2) and the far armchair fall under the 0.3 threshold; view 4 is the target itself again
    # (its right edge looks 8.7 degrees from the target: 0.6 * 0.96 ~ 0.58 without instance ids).
    assert path == [2, 3, 0]
    assert search_fixations(objects, 0, relatedness, instance=instance, config=SearcherConfig(max_fixations=1)) == [2, 0]
    assert search_fixations(objects, 0, relatedness, excluded=[2, 3], instance=instance) == [0]
    # without instance ids the second view of the target couch is the most similar other object
    assert search_fixations(objects, 0, relatedness)[0] == 1


def test_panorama_objects_from_a_category_map() -> None:
    category = np.zeros((VIEWS, 10, 20), dtype=np.uint8)
    category[:, :5] = HOUSE_CATEGORIES.index("wall")
    category[2, 6:9, 4:10] = HOUSE_CATEGORIES.index("couch")
    category[7, 0:1, 0:1] = HOUSE_CATEGORIES.index("lamp")  # 1 pixel of 200: under min_area 0.01
    rgb = np.zeros((VIEWS, 10, 20, 3), dtype=np.uint8)
    rgb[2, 6:9, 4:10] = (255, 0, 51)
    objects = panorama_objects(category, rgb, min_area=0.01)
    names = [HOUSE_CATEGORIES[c] for c in objects.category]
    assert names == ["couch"]
    assert objects.view.tolist() == [2]
    np.testing.assert_allclose(objects.box[0], [0.2, 0.6, 0.5, 0.9])
    np.testing.assert_allclose(objects.area[0], 18 / 200)
    np.testing.assert_allclose(objects.colour[0], [1.0, 0.0, 0.2])
    with pytest.raises(ValueError, match="views, H, W"):
        panorama_objects(category[0])


def test_pointer_never_fixates_padded_objects(one_torch_thread: None) -> None:
    torch.manual_seed(0)
    model = OAT(OATConfig(words=TOY_WORDS)).eval()
    big = make_objects([(c, v, 0.5) for v, c in enumerate(TOY_CATEGORIES)])
    small = make_objects([("couch", 1, 0.5), ("lamp", 5, 0.5)])
    batch = collate(model, [(big, "the couch", [1]), (small, "the couch", [0])])
    logits = model(batch["category"], batch["features"], batch["valid"], batch["words"], batch["fixations"])
    n = batch["category"].shape[1]
    assert logits.shape == (2, 2, n + 2)
    assert torch.isinf(logits[1, :, 2:n]).all() and torch.isfinite(logits[0]).all()
    paths, first = model.greedy(batch["category"], batch["features"], batch["valid"], batch["words"])
    assert all(0 <= j < 2 for j in paths[1]) and len(paths[1]) >= 1  # step 1 never ends the scanpath
    assert len(set(paths[0])) == len(paths[0])
    assert float(first[1, 2:].sum()) == 0.0
    torch.testing.assert_close(first.sum(1), torch.ones(2))


def test_objects_are_a_set(one_torch_thread: None) -> None:
    """No positional code on the encoder: permuting the objects permutes the first step's distribution."""
    torch.manual_seed(1)
    model = OAT(OATConfig(words=TOY_WORDS)).eval()
    objects = make_objects([(c, (3 * i) % VIEWS, 0.2 + 0.06 * i) for i, c in enumerate(TOY_CATEGORIES)])
    perm = np.random.default_rng(0).permutation(len(objects))
    shuffled = PanoramaObjects(objects.category[perm], objects.box[perm], objects.area[perm], objects.colour[perm],
                               objects.view[perm], VIEWS)
    _, first = model.greedy(**{k: v for k, v in collate(model, [(objects, "the fridge", [])]).items()
                               if k in ("category", "features", "valid", "words")})
    _, moved = model.greedy(**{k: v for k, v in collate(model, [(shuffled, "the fridge", [])]).items()
                               if k in ("category", "features", "valid", "words")})
    torch.testing.assert_close(moved[0], first[0][torch.as_tensor(perm)])
    scores = view_scores(model, objects, ["the fridge", "the bed"])
    np.testing.assert_allclose(scores.sum(1), 1.0, atol=1e-6)


def toy_scanpaths(count: int, seed: int) -> list[Scanpath]:
    """Panoramas of 8 distinct toy categories in random views; the query names one, the searcher fixates
    another object of its view when there is one, then it."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(count):
        cats = rng.choice(len(TOY_CATEGORIES), 8, replace=False)
        rows = [(TOY_CATEGORIES[c], int(rng.integers(VIEWS)), float(rng.uniform(0.2, 0.8))) for c in cats]
        objects = make_objects(rows)
        target = int(rng.integers(len(rows)))
        relatedness = np.where(objects.view == objects.view[target], 0.7, 0.0)
        path = search_fixations(objects, target, relatedness)
        out.append(Scanpath(objects, f"the {rows[target][0]}", path, rows[target][1]))
    return out


def test_toy_training_beats_chance(one_torch_thread: None) -> None:
    torch.manual_seed(0)
    model = OAT(OATConfig(d_model=32, ffn=64, words=TOY_WORDS))
    train, test = toy_scanpaths(600, 0), toy_scanpaths(100, 1)
    before = sequence_view_accuracy(model, test, "last")
    losses = fit_sequences(model, train, epochs=30, batch_size=32, lr=3e-3)
    assert losses[-1] < 0.6 * losses[0]
    # chance: 1/12 of the views; views repeat among the 8 objects, so the target view is a little easier
    assert before < 0.3
    assert sequence_view_accuracy(model, test, "last") > 0.5
    assert sequence_view_accuracy(model, test, "first") > 0.5


def test_checkpoint_refusal(tmp_path: Path, one_torch_thread: None) -> None:
    torch.manual_seed(0)
    config = OATConfig(d_model=16, ffn=32, encoder_layers=1, decoder_layers=1, words=TOY_WORDS)
    model = OAT(config).eval()
    train = OATTrainConfig(houses=(0, 1), places_per_house=2, epochs=1)
    path = save_oat(tmp_path / "oat.pt", model, {"train": {**train.__dict__, "houses": list(train.houses)}})
    loaded, _ = load_oat(path, config, train)
    objects = make_objects([("couch", 1, 0.5), ("bed", 6, 0.3), ("tv", 6, 0.7)])
    np.testing.assert_allclose(view_scores(loaded, objects, ["the tv"]), view_scores(model, objects, ["the tv"]))
    assert count_parameters(loaded) == count_parameters(model)
    with pytest.raises(ValueError, match="d_model"):
        load_oat(path, OATConfig(d_model=32, ffn=32, encoder_layers=1, decoder_layers=1, words=TOY_WORDS))
    with pytest.raises(ValueError, match="places_per_house"):
        load_oat(path, config, OATTrainConfig(houses=(0, 1), places_per_house=3, epochs=1))
    with pytest.raises(ValueError, match="other training settings"):
        train_oat(path, OATTrainConfig(houses=(0, 1), places_per_house=2, epochs=2), config)  # refused, not retrained
    torch.save({"format": "something-else"}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="not an OAT checkpoint"):
        load_oat(tmp_path / "other.pt")
    payload = torch.load(path, weights_only=False)
    payload["categories"] = payload["categories"][:-1]
    torch.save(payload, tmp_path / "fewer.pt")
    with pytest.raises(ValueError, match="categories"):
        load_oat(tmp_path / "fewer.pt")


def test_view_scores_from_a_category_map(one_torch_thread: None) -> None:
    torch.manual_seed(2)
    model = OAT(OATConfig(d_model=16, ffn=32, words=TOY_WORDS)).eval()
    category = np.zeros((VIEWS, 8, 8), dtype=np.uint8)
    category[4, 2:6, 2:6] = HOUSE_CATEGORIES.index("bed")
    category[9, 2:6, 2:6] = HOUSE_CATEGORIES.index("tv")
    first = oat_view_scores(model, category, ["the bed", "the tv"])
    assert first.shape == (2, VIEWS)
    assert set(np.flatnonzero(first[0])) <= {4, 9}
    np.testing.assert_allclose(first.sum(1), 1.0, atol=1e-6)
    last = oat_view_scores(model, category, ["the bed"], view_from="last")
    assert last.sum() == 1.0 and int(np.argmax(last[0])) in (4, 9)
    assert oat_view_scores(model, np.zeros((VIEWS, 8, 8), dtype=np.uint8), ["the bed"]).sum() == 0.0
