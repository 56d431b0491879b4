"""``vlnkit data perception``: labelled house views split by house, resumable, refusing other settings."""

import json
from pathlib import Path

import numpy as np
import pytest

from vlnkit.perception.data import (
    HOUSE_CATEGORIES,
    PerceptionDataConfig,
    category_lookup,
    house_splits,
    load_split,
    read_meta,
    write_perception_data,
)

TINY = PerceptionDataConfig(houses_seed=7, houses_count=2, places_per_house=2, views_per_place=2, size=32)


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("perception") / "data"
    write_perception_data(out, TINY, progress=False)
    return out


def test_house_splits_hold_out_the_last_quarter() -> None:
    assert house_splits(12) == {"train": list(range(9)), "val": [9, 10, 11]}
    assert house_splits(2) == {"train": [0], "val": [1]}
    assert house_splits(5) == {"train": [0, 1, 2, 3], "val": [4]}


def test_category_lookup_maps_ids_and_refuses_unknown_categories() -> None:
    table = category_lookup({3: {"category": "wall"}, 5: {"category": "couch"}})
    assert table[3] == HOUSE_CATEGORIES.index("wall")
    assert table[5] == HOUSE_CATEGORIES.index("couch")
    assert table[0] == table[4] == 0
    with pytest.raises(ValueError, match="spaceship"):
        category_lookup({1: {"category": "spaceship"}})


def test_views_are_labelled_consistently_with_depth(tiny_data: Path) -> None:
    meta = read_meta(tiny_data)
    assert meta["images"] == {"train": 4, "val": 4}
    assert set(meta["splits"]["train"]).isdisjoint(meta["splits"]["val"])
    for split in ("train", "val"):
        data = load_split(tiny_data, split)
        assert data["rgb"].shape == (4, 32, 32, 3) and data["rgb"].dtype == np.uint8
        assert data["label"].shape == data["depth"].shape == (4, 32, 32)
        assert int(data["label"].max()) < len(HOUSE_CATEGORIES)
        # A pixel that sees geometry has a positive depth and a category; "nothing" has neither.
        hit = data["depth"] > 0
        assert np.array_equal(hit, data["label"] > 0)
        # Indoors with a camera at 1.25 m, every view sees walls and floor or ceiling somewhere.
        present = {HOUSE_CATEGORIES[i] for i in np.unique(data["label"])}
        assert "wall" in present and present & {"floor", "ceiling"}


def test_interrupted_run_resumes_with_the_same_images(tiny_data: Path, tmp_path: Path) -> None:
    again = tmp_path / "again"
    write_perception_data(again, TINY, progress=False)
    shard = next((again / "houses" / "val").glob("*.npz"))
    before = np.load(shard)["label"].copy()
    shard.unlink()
    meta = json.loads((again / "meta.json").read_text())
    (again / "meta.json").write_text(json.dumps({**meta, "complete": False}))
    with pytest.raises(ValueError, match="incomplete"):
        load_split(again, "val")
    write_perception_data(again, TINY, progress=False)
    assert np.array_equal(np.load(shard)["label"], before)
    assert np.array_equal(load_split(again, "val")["label"], load_split(tiny_data, "val")["label"])


def test_other_settings_are_refused_naming_them(tiny_data: Path) -> None:
    with pytest.raises(ValueError, match="size"):
        write_perception_data(tiny_data, PerceptionDataConfig(**{**TINY.__dict__, "size": 48}), progress=False)


def test_bad_settings_and_damaged_shards_give_clear_errors(tiny_data: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="places_per_house"):
        PerceptionDataConfig(places_per_house=0)
    with pytest.raises(ValueError, match="houses_count"):
        PerceptionDataConfig(houses_count=1)
    with pytest.raises(FileNotFoundError, match="vlnkit data perception"):
        read_meta(tmp_path)
    broken = tmp_path / "broken"
    write_perception_data(broken, TINY, progress=False)
    next((broken / "houses" / "train").glob("*.npz")).write_bytes(b"not an npz")
    with pytest.raises(ValueError, match="unreadable perception shard"):
        load_split(broken, "train")
