"""``vlnkit train perception``: resumable runs that refuse other settings, and weights that load back only as
what they are."""

from pathlib import Path

import numpy as np
import pytest
import torch

from vlnkit.config import load_config
from vlnkit.perception.data import PerceptionDataConfig, load_split, write_perception_data
from vlnkit.perception import train as train_module
from vlnkit.perception.train import load_perception_model, predict, train_perception

TINY = PerceptionDataConfig(houses_seed=7, houses_count=2, places_per_house=2, views_per_place=2, size=32)


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("perception-train") / "data"
    write_perception_data(out, TINY, progress=False)
    return out


def _cfg(data: Path, out: Path, *extra: str):
    return load_config("train_perception", [f"data={data}", f"out={out}", "progress=false", "batch_size=2",
                                            "warmup_steps=1", "eval_every=1", "threads=1", *extra])


def test_interrupted_run_resumes_without_repeating_epochs(data: Path, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    whole = train_perception(_cfg(data, tmp_path / "whole", "epochs=2"))
    real_save = train_module._save

    def save_then_crash(path: Path, payload: dict) -> None:
        real_save(path, payload)
        raise KeyboardInterrupt

    monkeypatch.setattr(train_module, "_save", save_then_crash)
    with pytest.raises(KeyboardInterrupt):
        train_perception(_cfg(data, tmp_path / "split", "epochs=2"))
    monkeypatch.setattr(train_module, "_save", real_save)
    resumed = train_perception(_cfg(data, tmp_path / "split", "epochs=2"))
    assert [h["epoch"] for h in resumed["history"]] == [1, 2]
    assert [h["loss"] for h in resumed["history"]] == pytest.approx([h["loss"] for h in whole["history"]], rel=1e-5)
    assert resumed["miou"] == pytest.approx(whole["miou"], abs=1e-6)
    assert 0.0 <= whole["miou"] <= 1.0 and 0.0 <= whole["pixel_accuracy"] <= 1.0
    assert set(whole["per_class_iou"]) >= {"wall", "floor", "ceiling"}
    assert (tmp_path / "whole" / "confusion.png").stat().st_size > 0


def test_resume_with_other_settings_names_them(data: Path, tmp_path: Path) -> None:
    train_perception(_cfg(data, tmp_path / "run", "epochs=1"))
    with pytest.raises(ValueError, match="lr"):
        train_perception(_cfg(data, tmp_path / "run", "epochs=1", "lr=0.01"))


def test_weights_load_back_as_what_they_are(data: Path, tmp_path: Path) -> None:
    train_perception(_cfg(data, tmp_path / "seg", "epochs=1"))
    model, info = load_perception_model(tmp_path / "seg")
    assert info["settings"]["model"] == "pp_mobileseg_tiny" and len(info["categories"]) == info["settings"]["num_classes"]
    val = load_split(data, "val")
    labels = predict(model, val["rgb"], "seg", torch.device("cpu"))
    assert labels.shape == val["label"].shape and labels.max() < info["settings"]["num_classes"]
    again, _ = load_perception_model(tmp_path / "seg" / "checkpoint.pt")
    assert np.array_equal(predict(again, val["rgb"], "seg", torch.device("cpu")), labels)
    with pytest.raises(ValueError, match="objective='seg', expected 'depth'"):
        load_perception_model(tmp_path / "seg", task="depth")
    with pytest.raises(ValueError, match="num_classes"):
        load_perception_model(tmp_path / "seg", num_classes=150)
    with pytest.raises(ValueError, match="model"):
        load_perception_model(tmp_path / "seg", model="sparsifiner_tiny")
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"\x00garbage")
    with pytest.raises(ValueError, match="not a readable perception checkpoint"):
        load_perception_model(junk)
    with pytest.raises(FileNotFoundError, match="vlnkit train perception"):
        load_perception_model(tmp_path / "missing")


def test_depth_runs_on_a_backbone_with_the_shared_head(data: Path, tmp_path: Path) -> None:
    result = train_perception(_cfg(data, tmp_path / "depth", "epochs=1", "objective=depth"))
    assert result["abs_rel"] > 0.0
    model, _ = load_perception_model(tmp_path / "depth", task="depth")
    depth = predict(model, load_split(data, "val")["rgb"], "depth", torch.device("cpu"))
    # The head's sigmoid keeps every prediction inside the configured range.
    assert depth.min() >= 0.1 - 1e-5 and depth.max() <= 10.0 + 1e-5
