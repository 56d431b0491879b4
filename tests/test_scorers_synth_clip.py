"""The small CLIP-style model vlnkit trains itself: vocabulary, model, loss, checkpoints, training run."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from vlnkit.config import config_dir
from vlnkit.perception.backbones import available_models, create_model
from vlnkit.perception.backbones.tiny_clip import UNK, TinyCLIP, WordVocab, load_tiny_clip, save_tiny_clip
from vlnkit.perception.scorers import Views, create_scorer
from vlnkit.perception.scorers.training import multi_positive_loss, train_clip

COLOURS = {"red": (220, 30, 30), "green": (30, 200, 40), "blue": (30, 40, 220)}


def swatches(names: list[str], size: int = 16) -> np.ndarray:
    """Plain images of the named colours with a little noise."""
    rng = np.random.default_rng(len(names))
    base = np.array([COLOURS[n] for n in names], dtype=np.float64)[:, None, None, :]
    return np.clip(base + rng.normal(0, 10, (len(names), size, size, 3)), 0, 255).astype(np.uint8)


def test_vocab_drops_unknown_words_and_pads() -> None:
    vocab = WordVocab.build(["red couch", "white bed"])
    ids = vocab.encode(["the red couch", "a chair", "white"])
    assert ids.shape == (3, 2)
    assert ids[0].tolist() == [vocab.index["red"], vocab.index["couch"]]
    assert ids[1].tolist() == [UNK, 0]
    assert ids[2].tolist() == [vocab.index["white"], 0]


def test_the_registry_builds_tiny_clip_with_normalised_embeddings() -> None:
    assert "tiny_clip" in available_models()
    model = create_model("tiny_clip", vocab_size=10, embed_dim=8, image_size=16, width=4, word_dim=8)
    assert isinstance(model, TinyCLIP)
    pixels = model.preprocess(swatches(["red", "blue", "green"], size=24))
    assert pixels.shape == (3, 3, 16, 16)
    model.eval()
    image = model.encode_image(pixels)
    text = model.encode_text(torch.tensor([[2, 3], [4, 0]]))
    assert image.shape == (3, 8) and text.shape == (2, 8)
    assert torch.allclose(image.norm(dim=1), torch.ones(3)) and torch.allclose(text.norm(dim=1), torch.ones(2))


def test_multi_positive_loss_by_hand() -> None:
    logits = torch.tensor([[2.0, 0.0], [0.0, 2.0]])
    assert float(multi_positive_loss(logits, torch.eye(2, dtype=torch.bool))) == pytest.approx(math.log(1 + math.exp(-2)))
    both = torch.tensor([[True, True], [False, True]])
    one_side = (0.0 + (math.log(1 + math.exp(2)) - 2.0)) / 2
    assert float(multi_positive_loss(logits, both)) == pytest.approx(one_side)


def test_the_model_learns_to_tell_colours_apart() -> None:
    torch.manual_seed(0)
    names = ["red", "green", "blue"] * 8
    vocab = WordVocab.build(COLOURS)
    model = TinyCLIP(len(vocab), embed_dim=16, image_size=16, width=8, word_dim=16)
    optimiser = torch.optim.Adam(model.parameters(), lr=0.01)
    pixels = model.preprocess(swatches(names))
    ids = vocab.encode(list(COLOURS))
    positives = torch.tensor([[n == c for c in COLOURS] for n in names])
    first = None
    for _ in range(40):
        loss = multi_positive_loss(model(pixels, ids), positives)
        first = first if first is not None else loss.item()
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    model.eval()
    with torch.no_grad():
        chosen = model(model.preprocess(swatches(["blue", "red", "green"])), ids).argmax(dim=1).tolist()
    assert loss.item() < first / 4
    assert [list(COLOURS)[i] for i in chosen] == ["blue", "red", "green"]


def test_checkpoints_round_trip_and_feed_the_scorer(tmp_path: Path) -> None:
    vocab = WordVocab.build(["red couch", "kitchen"])
    config = {"vocab_size": len(vocab), "embed_dim": 8, "image_size": 16, "width": 4, "word_dim": 8}
    model = TinyCLIP(**config).eval()
    path = tmp_path / "clip" / "weights.pt"
    save_tiny_clip(path, model, vocab, config, {"epoch": 3})
    assert [p.name for p in path.parent.iterdir()] == ["weights.pt"]
    loaded, loaded_vocab, payload = load_tiny_clip(path)
    assert loaded_vocab.words == vocab.words and payload["epoch"] == 3
    views = Views(swatches(["red", "green"]))
    scorer = create_scorer("synth_clip", weights=path)
    with torch.no_grad():
        expected = (model.encode_text(vocab.encode(["red couch"])) @ model.encode_image(model.preprocess(views.rgb)).T).numpy()
    assert np.allclose(scorer.similarity(views, ["red couch"]), expected, atol=1e-6)


def test_missing_weights_say_how_to_train_them(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="vlnkit train clip"):
        load_tiny_clip(tmp_path / "none.pt")


def test_train_clip_writes_a_checkpoint_and_resumes_from_it(tmp_path: Path) -> None:
    cfg = OmegaConf.load(Path(config_dir()) / "train_clip.yaml")
    cfg.merge_with({"out": str(tmp_path / "clip.pt"), "houses_count": 1, "places_per_house": 2, "epochs": 1,
                    "batch_size": 8, "image_size": 16, "render_size": 32, "progress": False, "eval": {"places": 0},
                    "model": {"embed_dim": 8, "width": 4, "word_dim": 8}, "workdir": str(tmp_path / "houses")})
    first = train_clip(cfg)
    assert Path(first["weights"]).is_file() and first["views"] > 0 and first["phrases"] > 0
    cfg.epochs = 2
    second = train_clip(cfg)
    _, _, payload = load_tiny_clip(tmp_path / "clip.pt")
    assert payload["epoch"] == 2
    assert payload["losses"][0] == pytest.approx(first["loss"])
    assert second["loss"] == pytest.approx(payload["losses"][1])
