"""View-selection accuracy of each image-text scorer backend on held-out synthetic views.

    vlnkit bench vlncm_views [--houses-seed 0 --houses-count 4] [--places 30]
        [--synth-clip runs/clip/tiny_clip.pt] [--clip-dir DIR | --tiny-random-clip]
        [--oat runs/oat/oat.pt [--oat-seg SEG_RUN]]

The views are 12-view panoramas (224 x 224, as the VLN-CE environment renders them) at random floor points
of the ``val_unseen`` scenes of the synthetic houses release ``(houses-seed, houses-count)``, houses that
``vlnkit train clip`` never sees (it trains on another seed). Each question names an object or room
visible in the panorama as instructions do ("the red couch"); the answer is the view where it covers the
most pixels (:func:`vlnkit.perception.scorers.synthetic.selection_queries`). Reported per backend:
top-1 accuracy (``exact``) and within one view (30 degrees), next to chance. Backends: ``semantic``
(simulator labels + all-MiniLM-L6-v2), ``synth_clip`` (when its weights exist), ``clip`` (with a local
CLIP folder, or ``--tiny-random-clip``: an untrained 2-layer CLIP, the floor any real weights should beat),
and with ``--oat PATH`` the OAT view prior (:mod:`vlnkit.perception.oat`; the checkpoint at PATH, or
one trained into PATH with the default settings when there is none, ~6 minutes on one core): ``oat``
scores the first fixation's view and ``oat_last`` the view of the greedy scanpath's last fixation, both
with objects from the ground-truth category maps (``objects_from: labels``, privileged), and with
``--oat-seg RUN`` also ``oat_seg`` / ``oat_seg_last`` with objects from the segmentation run's
predictions on the RGB views (``objects_from: segmentation``).
Prints one JSON line: ``panoramas``, ``queries``, and per backend ``exact``, ``within_one``,
``chance_exact``, ``chance_within_one`` and ``ms_per_panorama``.

Baseline: chance on the same queries (1/12 top-1, 3/12 within one view); ``exact_vs_chance`` and
``within_one_vs_chance`` divide each backend's accuracy by it. ``ms_per_panorama`` is absolute.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

from vlnkit.perception.scorers import ImageTextScorer, create_scorer
from vlnkit.perception.scorers.synthetic import Place, Query, selection_accuracy, selection_queries
from vlnkit.perception.scorers.training import heldout_places


BASELINE = "chance: a uniformly random view for the same queries (1/12 top-1, 3/12 within one view)"
QUICK = {"places": 5}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The held-out release, the number of panoramas and the backends' weights."""
    parser.add_argument("--houses-seed", type=int, default=0)
    parser.add_argument("--houses-count", type=int, default=4)
    parser.add_argument("--places", type=int, default=30, help="panoramas per held-out scene")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--synth-clip", default="runs/clip/tiny_clip.pt", help="weights from `vlnkit train clip`")
    parser.add_argument("--clip-dir", default=None, help="a local CLIP folder (save_pretrained layout)")
    parser.add_argument("--tiny-random-clip", action="store_true", help="score an untrained tiny CLIP as `clip`")
    parser.add_argument("--oat", default=None, help="an OAT checkpoint (trained there when absent)")
    parser.add_argument("--oat-seg", default=None, help="a `vlnkit train perception` seg run: OAT objects from its predictions")


def write_tiny_random_clip(folder: Path) -> Path:
    """Write an untrained 2-layer CLIP with a byte-level tokenizer to ``folder`` (offline)."""
    import torch
    from tokenizers import pre_tokenizers
    from transformers import CLIPConfig, CLIPModel, CLIPProcessor, CLIPTokenizer
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

    symbols = sorted(pre_tokenizers.ByteLevel.alphabet())
    vocab = {t: i for i, t in enumerate(["<|startoftext|>", "<|endoftext|>", *symbols, *(s + "</w>" for s in symbols)])}
    text = dict(vocab_size=len(vocab), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                num_attention_heads=2, max_position_embeddings=77, bos_token_id=0, eos_token_id=1, pad_token_id=1)
    vision = dict(image_size=64, patch_size=16, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                  num_attention_heads=2)
    torch.manual_seed(0)
    CLIPModel(CLIPConfig(text_config=text, vision_config=vision, projection_dim=32)).save_pretrained(folder)
    processor = CLIPProcessor(image_processor=CLIPImageProcessorPil(size={"shortest_edge": 64},
                                                                     crop_size={"height": 64, "width": 64}),
                              tokenizer=CLIPTokenizer(vocab=vocab, merges=[]))
    processor.save_pretrained(folder)
    return folder


def run(houses_seed: int = 0, houses_count: int = 4, places: int = 30, seed: int = 0,
        synth_clip: str = "runs/clip/tiny_clip.pt", clip_dir: str | None = None,
        tiny_random_clip: bool = False, oat: str | None = None, oat_seg: str | None = None) -> dict[str, Any]:
    """Score each backend as the module docstring describes; returns a JSON-able dict."""
    views = heldout_places(houses_seed, houses_count, places, 224, seed)
    queries = selection_queries(views)
    with tempfile.TemporaryDirectory() as tmp:
        scorers: dict[str, ImageTextScorer] = {"semantic": create_scorer("semantic")}
        if Path(synth_clip).is_file():
            scorers["synth_clip"] = create_scorer("synth_clip", weights=synth_clip)
        if clip_dir or tiny_random_clip:
            folder = Path(clip_dir) if clip_dir else write_tiny_random_clip(Path(tmp))
            scorers["clip"] = create_scorer("clip", model_dir=folder)
        out: dict[str, Any] = {"baseline": BASELINE, "panoramas": len(views), "queries": len(queries)}
        for name, scorer in scorers.items():
            started = time.perf_counter()
            result = selection_accuracy(scorer, views, queries)
            out[name] = {**{k: round(v, 4) for k, v in result.items()},
                         "exact_vs_chance": round(result["exact"] / result["chance_exact"], 3),
                         "within_one_vs_chance": round(result["within_one"] / result["chance_within_one"], 3),
                         "ms_per_panorama": round(1000 * (time.perf_counter() - started) / max(len(views), 1), 1)}
    if oat:
        out.update(oat_backends(views, queries, oat, oat_seg, houses_seed, houses_count, places))
    return out


def oat_backends(views: list[Place], queries: list[Query], weights: str, seg_run: str | None, houses_seed: int,
                 houses_count: int, places: int) -> dict[str, Any]:
    """The OAT rows of the result: objects from the ground-truth category maps, and from ``seg_run``'s
    predictions when given (see the module docstring)."""
    from vlnkit.perception.oat import (
        heldout_scenes,
        labelled_category_map,
        load_oat,
        oat_selection_accuracy,
        scene_category_table,
        segment_panorama,
        train_oat,
    )

    if Path(weights).expanduser().is_file():
        model, payload = load_oat(weights)
        summary = dict(payload.get("summary", {}))
    else:
        model, summary = train_oat(weights)
    tables = [scene_category_table(scene) for scene in heldout_scenes(houses_seed, houses_count)]
    sources: dict[str, tuple[str, Any]] = {
        "oat": ("labels", lambda i: labelled_category_map(views[i].semantic, tables[i // places]))}
    if seg_run:
        from vlnkit.perception.train import load_perception_model

        segmenter, _ = load_perception_model(seg_run, task="seg")
        sources["oat_seg"] = ("segmentation", lambda i: segment_panorama(segmenter, views[i].rgb))
    out: dict[str, Any] = {}
    for name, (objects_from, category_map) in sources.items():
        started = time.perf_counter()
        maps = [category_map(i) for i in range(len(views))]
        seconds_maps = time.perf_counter() - started
        for suffix, view_from in (("", "first"), ("_last", "last")):
            started = time.perf_counter()
            result = oat_selection_accuracy(model, views, maps, queries, view_from, objects_from == "labels")
            seconds = time.perf_counter() - started + seconds_maps
            out[name + suffix] = {**{k: round(v, 4) for k, v in result.items()}, "objects_from": objects_from,
                                  "view_from": view_from,
                                  "exact_vs_chance": round(result["exact"] / result["chance_exact"], 3),
                                  "within_one_vs_chance": round(result["within_one"] / result["chance_within_one"], 3),
                                  "ms_per_panorama": round(1000 * seconds / max(len(views), 1), 1)}
    out["oat_model"] = {k: summary[k] for k in ("parameters", "train_scanpaths", "val_first_view_exact",
                                                "val_last_view_exact") if k in summary}
    return out
