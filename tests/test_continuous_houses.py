"""Synthetic houses: same seed same bytes, labelled .glb scenes, R2R-CE episodes, truthful instructions."""

import math

import numpy as np
import pytest

from vlnkit.envs.continuous.mesh_backend import MeshBackend
from vlnkit.envs.continuous.scene import load_scene_geometry
from vlnkit.envs.datasets import check_vlnce_release, read_vlnce_gt, read_vlnce_split
from vlnkit.envs.synth.house_instructions import corner_turns, describe_path, turn_word
from vlnkit.envs.synth.house_layout import HouseLayout, HouseObject, Room
from vlnkit.envs.synth.houses import (
    GEODESIC_RANGE_M,
    build_vocab,
    default_houses,
    encode,
    generate_houses,
)


def files(root):
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_same_seed_same_bytes(tmp_path):
    one = {"train": 1, "val_seen": 1, "val_unseen": 1, "test": 1}
    a = generate_houses(tmp_path / "a", 11, 1, one)
    generate_houses(tmp_path / "b", 11, 1, one)
    generate_houses(tmp_path / "c", 12, 1, one)
    assert files(tmp_path / "a") == files(tmp_path / "b")
    assert files(tmp_path / "a") != files(tmp_path / "c")
    assert a["episodes"] == one and a["houses"] == ["house_000"]


def test_release_layout_and_check(houses):
    summary = check_vlnce_release(houses, houses / "scenes")
    assert summary["ok"], summary["problems"]
    assert summary["episodes"] == {"train": 2, "val_seen": 1, "val_unseen": 3, "test": 1}
    assert summary["without_goals"]["test"] == 1 and "test" not in summary["gt"]
    unseen = {ep.scene_id for ep in read_vlnce_split(houses / "val_unseen" / "val_unseen.json.gz").episodes}
    seen = {ep.scene_id for ep in read_vlnce_split(houses / "train" / "train.json.gz").episodes}
    assert unseen == {"synth/house_001/house_001.glb"} and seen == {"synth/house_000/house_000.glb"}


def test_scenes_carry_semantic_labels_and_layout(houses):
    geometry = load_scene_geometry(houses / "scenes" / "synth" / "house_000" / "house_000.glb")
    categories = set(geometry.labels().values())
    assert {"wall", "floor", "ceiling"} <= categories and len(categories) > 6
    assert all("colour" in extras and "room" in extras for extras in geometry.objects.values())
    rooms = geometry.metadata["rooms"]
    assert rooms[0]["type"] == "hallway" and len(rooms) >= 5
    lo, hi = geometry.bounds
    assert lo[1] == pytest.approx(-0.05) and hi[1] == pytest.approx(2.6)  # stored z-up, read back y-up


def test_episodes_follow_the_geodesic(houses):
    split = read_vlnce_split(houses / "val_unseen" / "val_unseen.json.gz")
    gt = read_vlnce_gt(houses / "val_unseen" / "val_unseen_gt.json.gz")
    backend = MeshBackend(sensors=())
    for ep in split.episodes:
        backend.load_scene(houses / "scenes" / ep.scene_id)
        goal = ep.goal_positions[0]
        d = backend.geodesic_distance(ep.start_position, [goal])
        assert d == pytest.approx(ep.geodesic_distance, abs=1e-4)
        assert GEODESIC_RANGE_M[0] <= d <= GEODESIC_RANGE_M[1]
        ref = np.array(ep.reference_path)
        assert np.allclose(ref[0], ep.start_position) and np.linalg.norm(ref[-1] - goal) < 0.1
        assert np.linalg.norm(np.diff(ref, axis=0), axis=1).max() <= 2.0 + 1e-6
        truth = gt[ep.episode_id]
        assert np.allclose(truth.locations[0], ep.start_position) and truth.actions[-1] == 0
        assert backend.geodesic_distance(truth.locations[-1], [goal]) <= 0.5
        assert len(truth.locations) == truth.forward_steps + 1
        assert len(ep.instruction_tokens) == 200
    backend.close()


def test_turn_words_follow_habitat_handedness():
    # Facing -z then turning to face -x is a left turn in Habitat's frame (y up).
    corners = np.array([[0.0, 0, 0], [0.0, 0, -2], [-2.0, 0, -2]])
    (s, angle), = corner_turns(corners, np.array([0.0, 2.0, 4.0]))
    assert s == 2.0 and angle == pytest.approx(math.pi / 2) and turn_word(angle) == "left"
    assert turn_word(-math.pi / 2) == "right" and turn_word(math.pi) == "around" and turn_word(0.2) is None


def test_instruction_names_rooms_turns_and_objects_passed():
    # Two rooms side by side along x; the path starts in room 1 facing -z, turns right (toward +x),
    # passes a blue couch on its left, crosses into room 2 and stops by a red fridge.
    hall = Room(0, "hallway", "hallway", 0.0, 0.0, 0.5, 0.5)
    kitchen = Room(1, "living room", "living room", 0.0, 0.0, 4.0, 4.0)
    other = Room(2, "kitchen", "kitchen", 4.0, 0.0, 8.0, 4.0)
    couch = HouseObject(1, "couch", "blue", 1, 2.5, 1.0, 0.0, 1.0, 0.5, 0.8, [])
    fridge = HouseObject(2, "fridge", "red", 2, 7.0, 2.0, 0.0, 0.7, 0.7, 1.8, [])
    layout = HouseLayout("h", 8.0, 4.0, [hall, kitchen, other], [], [], [couch, fridge])
    corners = np.array([[1.0, 0, 2.0], [6.5, 0, 2.0]])
    text = describe_path(layout, corners, 0.0, fridge, np.random.default_rng(0))
    assert text.startswith("Turn right and ")
    assert "the living room, passing the blue couch on your left." in text
    assert "the kitchen" in text and text.endswith("the red fridge.")


def test_vocab_and_tokens():
    vocab = build_vocab(["Walk past the sofa.", "Turn left."])
    assert vocab["word_list"][:2] == ["<pad>", "<unk>"] and vocab["stoi"] == vocab["word2idx_dict"]
    ids = encode("Walk past the piano.", vocab)
    assert len(ids) == 200 and ids[3] == vocab["UNK_INDEX"] and ids[5:] == [0] * 195


@pytest.mark.slow
def test_default_houses_are_cached(tmp_path, monkeypatch):
    monkeypatch.setenv("VLNKIT_CACHE", str(tmp_path))
    first = default_houses(seed=0, count=2)
    stamp = (first / ".complete").stat().st_mtime_ns
    assert default_houses(seed=0, count=2) == first and (first / ".complete").stat().st_mtime_ns == stamp
    assert check_vlnce_release(first)["ok"]
