"""``vlnkit train clip``: train the ``synth_clip`` scorer's model on views of synthetic houses.

The data are panoramas rendered at random floor points of freshly generated houses
(``houses_seed``/``houses_count``; a seed other than the evaluation release's keeps every evaluation
house unseen) at the environment's panorama size (``render_size``) and shrunk to the model's input size
as the scorer shrinks what the agent sees, each view captioned with the phrases of the objects it shows
(:mod:`vlnkit.perception.scorers.synthetic`). Training is contrastive with several positives: in a batch
of views and the union of their phrases, each view should pick out any of its own phrases and each
phrase any of the views showing it (a symmetric cross-entropy over the positives' summed probability).

A checkpoint (weights, vocabulary, optimiser, finished epochs) is written atomically after every epoch to
``out``; running the same command again resumes from it (``resume=false`` starts over). At the end the
model's view-selection accuracy is measured on the unseen houses of the evaluation release
(``eval.houses_seed``/``eval.houses_count``, its ``val_unseen`` scenes) and returned with the losses.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from tqdm import tqdm

from vlnkit.perception.backbones import create_model
from vlnkit.perception.backbones.tiny_clip import TinyCLIP, WordVocab, load_tiny_clip, save_tiny_clip
from vlnkit.perception.scorers.synthetic import (
    Place,
    render_places,
    selection_accuracy,
    selection_queries,
    synthetic_house_scenes,
)


def shrink(images: np.ndarray, size: int) -> np.ndarray:
    """``(N, H, W, 3)`` uint8 images resized to ``size`` x ``size`` by area averaging."""
    x = torch.as_tensor(images).permute(0, 3, 1, 2).float()
    x = torch.nn.functional.interpolate(x, size=(size, size), mode="area")
    return x.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()


def training_views(places: list[Place], min_coverage: float, size: int) -> tuple[np.ndarray, list[list[str]]]:
    """All views of ``places`` that show at least one phrase, shrunk to ``size``, and their phrases."""
    images, captions = [], []
    for place in places:
        keep = []
        for v, phrases in enumerate(place.captions(min_coverage)):
            if phrases:
                keep.append(v)
                captions.append(sorted(phrases))
        if keep:
            images.append(shrink(place.rgb[keep], size))
    return np.concatenate(images), captions


def multi_positive_loss(logits: torch.Tensor, positives: torch.Tensor) -> torch.Tensor:
    """Symmetric contrastive loss of ``(views, phrases)`` logits where ``positives`` marks every
    matching pair: minus the log of the probability mass on the positives, averaged over views and over
    phrases."""
    def one_side(x: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        hit = torch.logsumexp(x.masked_fill(~pos, float("-inf")), dim=1)
        return (torch.logsumexp(x, dim=1) - hit).mean()

    return 0.5 * (one_side(logits, positives) + one_side(logits.T, positives.T))


def _batch(images: np.ndarray, captions: list[list[str]], index: np.ndarray, vocab: WordVocab,
           model: TinyCLIP, rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    phrases = sorted({p for i in index for p in captions[i]})
    column = {p: j for j, p in enumerate(phrases)}
    positives = torch.zeros(len(index), len(phrases), dtype=torch.bool)
    for row, i in enumerate(index):
        positives[row, [column[p] for p in captions[i]]] = True
    batch = images[index]
    flip = rng.random(len(index)) < 0.5
    batch = np.where(flip[:, None, None, None], batch[:, :, ::-1], batch)
    return model.preprocess(np.ascontiguousarray(batch)), vocab.encode(phrases), positives


def heldout_places(seed: int, count: int, places_per_scene: int, size: int, rng_seed: int) -> list[Place]:
    """Panoramas of the ``val_unseen`` scenes of the synthetic houses release ``(seed, count)``."""
    from vlnkit.envs.datasets import read_vlnce_split, vlnce_split_path
    from vlnkit.envs.synth.houses import default_houses

    release = default_houses(seed=seed, count=count)
    scenes = sorted({ep.scene_id for ep in read_vlnce_split(vlnce_split_path(release, "val_unseen")).episodes})
    rng = np.random.default_rng(rng_seed)
    return [p for scene in scenes for p in render_places(release / "scenes" / scene, places_per_scene, rng, size)]


def train_clip(cfg: DictConfig) -> dict[str, Any]:
    """Train (or resume training) the ``tiny_clip`` model as ``configs/train_clip.yaml`` describes; returns
    the checkpoint path, the data sizes, the last epoch's mean loss and the held-out view-selection
    accuracy (see the module docstring)."""
    seed = int(cfg.seed)
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    size, render = int(cfg.image_size), int(cfg.render_size)
    parts: list[tuple[np.ndarray, list[list[str]]]] = []
    with tempfile.TemporaryDirectory(prefix="vlnkit-clip-houses-") as tmp:
        work = Path(str(cfg.workdir)).expanduser() if cfg.workdir else Path(tmp)
        scenes = synthetic_house_scenes(int(cfg.houses_seed), range(int(cfg.houses_count)), work)
        for scene in tqdm(scenes, total=int(cfg.houses_count), desc="render houses", disable=not cfg.progress):
            places = render_places(scene, int(cfg.places_per_house), rng, render)
            parts.append(training_views(places, float(cfg.caption_min_coverage), size))
    images = np.concatenate([p[0] for p in parts])
    captions = [c for p in parts for c in p[1]]
    vocab = WordVocab.build(p for c in captions for p in c)
    model_cfg = {"vocab_size": len(vocab), "image_size": size, **OmegaConf.to_container(cfg.model, resolve=True)}
    out = Path(str(cfg.out)).expanduser()
    start, history = 0, []
    model: TinyCLIP = create_model("tiny_clip", **model_cfg)  # type: ignore[assignment]
    optimiser = torch.optim.AdamW(model.parameters(), lr=float(cfg.lr), weight_decay=float(cfg.weight_decay))
    if cfg.resume and out.is_file():
        saved, saved_vocab, payload = load_tiny_clip(out)
        if payload["config"] == model_cfg and saved_vocab.words == vocab.words:
            model.load_state_dict(saved.state_dict())
            optimiser.load_state_dict(payload["optimizer"])
            start, history = int(payload["epoch"]), list(payload["losses"])
    epochs = int(cfg.epochs)
    batch_size = int(cfg.batch_size)
    steps = max(1, len(images) // batch_size)
    bar = tqdm(total=epochs * steps, initial=start * steps, desc="train clip", unit="batch", disable=not cfg.progress)
    for epoch in range(start, epochs):
        model.train()
        order = np.random.default_rng([seed, epoch]).permutation(len(images))
        total = 0.0
        for step in range(steps):
            pixels, ids, positives = _batch(images, captions, order[step * batch_size:(step + 1) * batch_size], vocab, model, rng)
            loss = multi_positive_loss(model(pixels, ids), positives)
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            total += loss.item()
            bar.update()
            bar.set_postfix(loss=f"{total / (step + 1):.3f}", refresh=False)
        history.append(total / steps)
        save_tiny_clip(out, model, vocab, model_cfg,
                       {"epoch": epoch + 1, "losses": history, "optimizer": optimiser.state_dict()})
    bar.close()
    result: dict[str, Any] = {"weights": str(out), "views": len(images), "phrases": len(vocab) - 2,
                              "epochs": epochs, "loss": history[-1] if history else None}
    if int(cfg.eval.places) > 0:
        from vlnkit.perception.scorers.synth_clip import SynthClipScorer

        test = heldout_places(int(cfg.eval.houses_seed), int(cfg.eval.houses_count), int(cfg.eval.places), render, seed)
        result["heldout_view_selection"] = selection_accuracy(SynthClipScorer(out), test, selection_queries(test))
    return result
