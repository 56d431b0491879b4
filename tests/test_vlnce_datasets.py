"""VLN-CE readers and writers on the real R2R-CE sample and on hand-made files."""

import copy
import gzip
import json
from pathlib import Path

import pytest
from conftest import shared_sample

from vlnkit.envs.datasets import (
    DatasetFormatError,
    VLNCEGroundTruth,
    check_vlnce_release,
    list_vlnce_splits,
    read_vlnce_gt,
    read_vlnce_split,
    resolve_scene_path,
    write_vlnce_gt,
    write_vlnce_split,
)

EPISODE = {
    "episode_id": 7,
    "trajectory_id": 3,
    "scene_id": "mp3d/abc/abc.glb",
    "start_position": [1.0, 0.1, -2.0],
    "start_rotation": [0.0, 0.5, 0.0, 0.8660254037844386],
    "info": {"geodesic_distance": 5.5},
    "goals": [{"position": [3.0, 0.1, 2.0], "radius": 3.0}],
    "instruction": {"instruction_text": "Walk to the sofa.", "instruction_tokens": [4, 5, 0, 0]},
    "reference_path": [[1.0, 0.1, -2.0], [3.0, 0.1, 2.0]],
}
VOCAB = {"word_list": ["<pad>", "<unk>", "walk", "sofa"]}


def write(path, data):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(json.dumps(data).encode()))
    return path


def split_file(root, episodes, split="val_unseen", vocab=VOCAB, gt=True):
    """Write a split file and, with ``gt``, its ground truth (one location per episode)."""
    data = {"episodes": episodes}
    if vocab is not None:
        data["instruction_vocab"] = vocab
    if gt:
        write(root / split / f"{split}_gt.json.gz", {str(ep["episode_id"]): {
            "locations": [[0.0, 0.0, 0.0]], "actions": [0], "forward_steps": 0} for ep in episodes})
    return write(root / split / f"{split}.json.gz", data)


def test_check_reports_a_missing_ground_truth_file(tmp_path):
    path = split_file(tmp_path, [copy.deepcopy(EPISODE)], gt=False)
    (tmp_path / "scenes" / "mp3d" / "abc").mkdir(parents=True)
    (tmp_path / "scenes" / "mp3d" / "abc" / "abc.glb").write_bytes(b"glb")
    summary = check_vlnce_release(tmp_path)
    gt = path.parent / "val_unseen_gt.json.gz"
    assert not summary["ok"]
    assert summary["problems"] == [f"{gt}: ground-truth file not found; nDTW and sDTW are scored against its paths, "
                                   "as in VLN-CE; set task.ndtw_reference=sparse (ndtw_reference='sparse') to score "
                                   "against the episodes' sparse reference_path instead"]


def test_real_sample_reads():
    root = shared_sample("r2r_ce_sample")
    split = read_vlnce_split(root / "val_unseen" / "val_unseen.json.gz")
    assert len(split.episodes) == 20 and split.vocab["num_vocab"] == 2504
    ep = split.episodes[0]
    assert ep.episode_id == "1" and ep.trajectory_id == "15"
    assert ep.scene_id == "mp3d/zsNo4HB9uLZ/zsNo4HB9uLZ.glb"
    assert ep.start_rotation == pytest.approx((0.0, 0.5, 0.0, 0.8660254037844387))
    assert ep.goals[0][1] == 3.0 and ep.geodesic_distance == pytest.approx(7.9608, abs=1e-4)
    assert len(ep.instruction_tokens) == 200 and ep.instruction.startswith("Exit the bedroom")
    assert len(ep.reference_path) == 6
    gt = read_vlnce_gt(root / "val_unseen" / "val_unseen_gt.json.gz")
    assert set(gt) == {str(i) for i in range(1, 21)}
    assert len(gt["1"].locations) == gt["1"].forward_steps + 1 and gt["1"].actions[-1] == 0


def test_real_sample_round_trips(tmp_path):
    root = shared_sample("r2r_ce_sample")
    path = root / "val_unseen" / "val_unseen.json.gz"
    split = read_vlnce_split(path)
    out = tmp_path / "val_unseen" / "val_unseen.json.gz"
    write_vlnce_split(split.episodes, out, split.vocab)
    assert json.loads(gzip.decompress(out.read_bytes())) == json.loads(gzip.decompress(path.read_bytes()))
    gt = read_vlnce_gt(root / "val_unseen" / "val_unseen_gt.json.gz")
    write_vlnce_gt(gt, tmp_path / "gt.json.gz")
    assert read_vlnce_gt(tmp_path / "gt.json.gz") == gt


def test_real_sample_check_without_and_with_scenes():
    root = shared_sample("r2r_ce_sample")
    # The sample ships no scenes: eval would look for them in the release folder itself, and fail.
    summary = check_vlnce_release(root)
    assert summary["episodes"] == {"val_unseen": 20} and summary["gt"] == {"val_unseen": 20}
    assert summary["scenes_dir"] == str(root) and summary["scenes_referenced"] == 5
    assert not summary["ok"] and len(summary["scenes_missing"]) == 5 and len(summary["problems"]) == 5
    assert "mp3d/zsNo4HB9uLZ/zsNo4HB9uLZ.glb" in summary["scenes_missing"]
    missing = check_vlnce_release(root, shared_sample("test_scenes"))
    assert not missing["ok"] and len(missing["scenes_missing"]) == 5


def test_writer_is_deterministic_and_round_trips(tmp_path):
    path = split_file(tmp_path, [EPISODE])
    split = read_vlnce_split(path)
    a, b = tmp_path / "a.json.gz", tmp_path / "b.json.gz"
    write_vlnce_split(split.episodes, a, split.vocab)
    write_vlnce_split(split.episodes, b, split.vocab)
    assert a.read_bytes() == b.read_bytes()
    assert read_vlnce_split(a).episodes == split.episodes
    gt = {"7": VLNCEGroundTruth(((1.0, 0.1, -2.0), (1.0, 0.1, -2.25)), (1, 0), 1)}
    write_vlnce_gt(gt, tmp_path / "gt.json.gz")
    assert read_vlnce_gt(tmp_path / "gt.json.gz") == gt


def test_test_split_without_goals(tmp_path):
    bare = {k: v for k, v in EPISODE.items() if k not in ("goals", "reference_path", "info")}
    path = split_file(tmp_path, [bare], split="test")
    ep = read_vlnce_split(path).episodes[0]
    assert ep.goals == () and ep.reference_path is None and ep.geodesic_distance is None
    with pytest.raises(DatasetFormatError, match="goals"):
        read_vlnce_split(split_file(tmp_path, [bare], split="val_seen"))
    summary = check_vlnce_release(tmp_path)
    assert summary["without_goals"]["test"] == 1 and any("goals" in p for p in summary["problems"])


@pytest.mark.parametrize(
    ("change", "field", "message"),
    [
        (lambda e: e.pop("scene_id"), "episodes[0].scene_id", "missing"),
        (lambda e: e.update(start_position=[1, 2]), "episodes[0].start_position", "3 numbers"),
        (lambda e: e.update(start_rotation=[0, 0, 0, 2]), "episodes[0].start_rotation", "unit quaternion"),
        (lambda e: e["goals"][0].update(position=[1, "x", 3]), "episodes[0].goals[0].position[1]", "finite number"),
        (lambda e: e["instruction"].pop("instruction_text"), "episodes[0].instruction.instruction_text", "missing"),
        (lambda e: e["instruction"].update(instruction_tokens=[1, 2.5]), "episodes[0].instruction.instruction_tokens", "integer"),
        (lambda e: e.update(reference_path=[[0, 0]]), "episodes[0].reference_path[0]", "3 numbers"),
    ],
)
def test_malformed_episodes_name_episode_and_field(tmp_path, change, field, message):
    episode = copy.deepcopy(EPISODE)
    change(episode)
    path = split_file(tmp_path, [episode])
    with pytest.raises(DatasetFormatError) as err:
        read_vlnce_split(path)
    assert err.value.field == field and err.value.path == path
    assert "episode 7" in str(err.value) and message in str(err.value)


def test_file_level_errors(tmp_path):
    with pytest.raises(DatasetFormatError, match="file not found"):
        read_vlnce_split(tmp_path / "absent.json.gz")
    plain = tmp_path / "plain.json.gz"
    plain.write_text("{}")
    with pytest.raises(DatasetFormatError, match="not a gzip file"):
        read_vlnce_split(plain)
    broken = tmp_path / "broken.json.gz"
    broken.write_bytes(gzip.compress(b'{"episodes": [\n{]}'))
    with pytest.raises(DatasetFormatError) as err:
        read_vlnce_split(broken)
    assert err.value.line == 2 and "invalid JSON" in str(err.value)
    with pytest.raises(DatasetFormatError, match="instruction_vocab"):
        read_vlnce_split(split_file(tmp_path, [EPISODE], vocab=None))
    assert read_vlnce_split(split_file(tmp_path, [EPISODE], vocab=None), require_vocab=False).vocab is None
    duplicate = split_file(tmp_path, [EPISODE, EPISODE], split="train")
    with pytest.raises(DatasetFormatError, match="duplicate episode id"):
        read_vlnce_split(duplicate)


def test_scene_ids_may_not_escape_the_root(tmp_path):
    root = tmp_path / "scenes"
    root.mkdir()
    assert resolve_scene_path(root, "mp3d/a/a.glb") == root / "mp3d" / "a" / "a.glb"
    assert resolve_scene_path(root, "mp3d/./b/../a/a.glb") == root / "mp3d" / "a" / "a.glb"
    with pytest.raises(ValueError, match="escapes"):
        resolve_scene_path(root, "../secret.glb")
    with pytest.raises(ValueError, match="escapes"):
        resolve_scene_path(root, "mp3d/../../secret.glb")
    with pytest.raises(ValueError, match="absolute"):
        resolve_scene_path(root, "/etc/passwd")
    with pytest.raises(ValueError, match="absolute"):
        resolve_scene_path(root, str(tmp_path / "elsewhere" / "x.glb"))


def test_symlinked_scene_folder_is_followed(tmp_path):
    """Habitat's usual layout: ``scenes/mp3d`` is a link the user made to a big disk elsewhere."""
    disk = tmp_path / "big" / "disk" / "mp3d"
    (disk / "abc").mkdir(parents=True)
    (disk / "abc" / "abc.glb").write_bytes(b"glb")
    root = tmp_path / "release" / "scenes"
    root.mkdir(parents=True)
    (root / "mp3d").symlink_to(disk, target_is_directory=True)
    path = resolve_scene_path(root, "mp3d/abc/abc.glb")
    assert path == root / "mp3d" / "abc" / "abc.glb" and path.read_bytes() == b"glb"
    # Climbing out through the link is still an escape of the root as written.
    with pytest.raises(ValueError, match="escapes"):
        resolve_scene_path(root, "mp3d/../../disk/mp3d/abc/abc.glb")
    split_file(tmp_path / "release", [EPISODE])
    summary = check_vlnce_release(tmp_path / "release")
    assert summary["scenes_dir"] == str(root) and summary["scenes_missing"] == [] and summary["ok"]


def test_check_collects_problems(tmp_path):
    good = copy.deepcopy(EPISODE)
    bad = copy.deepcopy(EPISODE)
    bad["episode_id"] = 8
    bad["start_rotation"] = [1, 1, 1, 1]
    escaping = copy.deepcopy(EPISODE)
    escaping["episode_id"] = 9
    escaping["scene_id"] = "../../outside.glb"
    split_file(tmp_path, [good, bad, escaping], split="train")
    write(tmp_path / "train" / "train_gt.json.gz", {"7": {"locations": [[0, 0, 0]], "actions": [0], "forward_steps": 0},
                                                    "99": {"locations": [[0, 0, 0]], "actions": [0], "forward_steps": 0}})
    scenes = tmp_path / "scenes"
    (scenes / "mp3d" / "abc").mkdir(parents=True)
    (scenes / "mp3d" / "abc" / "abc.glb").write_bytes(b"")
    summary = check_vlnce_release(tmp_path, scenes)
    assert summary["episodes"] == {"train": 2} and summary["gt"] == {"train": 2}
    assert summary["scenes_referenced"] == 2 and summary["scenes_missing"] == ["../../outside.glb"]
    text = "\n".join(summary["problems"])
    assert "episodes[1].start_rotation" in text and "escapes" in text and "not in train.json.gz" in text
    assert not summary["ok"]
    assert list_vlnce_splits(tmp_path) == ["train"]


def test_check_reports_missing_and_unreadable_scenes(tmp_path, monkeypatch):
    episodes = []
    for n, scene in enumerate(["mp3d/abc/abc.glb", "mp3d/gone/gone.glb", "mp3d/dir/dir.glb", "mp3d/locked/locked.glb"]):
        episodes.append({**copy.deepcopy(EPISODE), "episode_id": n, "scene_id": scene})
    episodes.append({**copy.deepcopy(EPISODE), "episode_id": 9, "scene_id": "mp3d/gone/gone.glb"})
    path = split_file(tmp_path, episodes)
    scenes = tmp_path / "scenes"  # the default scenes root: <data_dir>/scenes
    for name in ("abc", "locked"):
        (scenes / "mp3d" / name).mkdir(parents=True)
        (scenes / "mp3d" / name / f"{name}.glb").write_bytes(b"glb")
    (scenes / "mp3d" / "dir" / "dir.glb").mkdir(parents=True)
    locked = scenes / "mp3d" / "locked" / "locked.glb"
    real_open = Path.open

    def refuse_locked(self, *args, **kwargs):
        if self == locked:
            raise PermissionError(13, "Permission denied")
        return real_open(self, *args, **kwargs)

    monkeypatch.setattr(Path, "open", refuse_locked)  # as root a chmod would not stop the read
    summary = check_vlnce_release(tmp_path)
    assert summary["scenes_dir"] == str(scenes) and summary["scenes_referenced"] == 4
    assert summary["scenes_missing"] == ["mp3d/dir/dir.glb", "mp3d/gone/gone.glb", "mp3d/locked/locked.glb"]
    assert not summary["ok"]
    assert summary["problems"] == [
        f"{path}: field 'episodes[1].scene_id': episode '1': scene file {scenes / 'mp3d/gone/gone.glb'} "
        f"not found under the scenes root {scenes}",
        f"{path}: field 'episodes[2].scene_id': episode '2': scene path {scenes / 'mp3d/dir/dir.glb'} "
        f"under the scenes root {scenes} is not a file",
        f"{path}: field 'episodes[3].scene_id': episode '3': scene file {locked} is not readable (Permission denied)",
    ]


def test_check_and_env_refuse_the_same_scene(tmp_path):
    from vlnkit.envs.continuous.env import VLNCEEnv
    from vlnkit.envs.datasets import check_scene_file

    scenes = tmp_path / "scenes"
    (scenes / "mp3d" / "abc" / "abc.glb").mkdir(parents=True)  # a folder where the scene file should be
    split = read_vlnce_split(split_file(tmp_path, [EPISODE]))
    with pytest.raises(ValueError, match="is not a file"):
        check_scene_file(scenes, EPISODE["scene_id"])
    with pytest.raises(DatasetFormatError, match="is not a file") as err:
        VLNCEEnv(episodes=split.episodes, scenes_dir=scenes)
    assert err.value.field == "episodes[0].scene_id"
    assert str(err.value).split(": ", 1)[1] in check_vlnce_release(tmp_path)["problems"][0]
