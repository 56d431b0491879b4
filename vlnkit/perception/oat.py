"""OAT (Object-level Attention Transformer) as a view-selection prior for VLN-CM.

OAT (ECCV 2024) predicts a visual-search scanpath at the level of objects: an encoder reads one token per
object plus a token for the search target, and a decoder points, step by step, at the object fixated next,
or at the target token itself to say "done" (EOS). Here the objects are those a 12-view panorama shows and
the target is an attention spot of VLN-CM ("the red couch"); the view of the first fixation is a direction.

Objects (:func:`panorama_objects`) come from a per-pixel category map ``(views, H, W)`` of
:data:`~vlnkit.perception.data.HOUSE_CATEGORIES` indices: one object per category seen in a view (walls and
"nothing" left out), described by its category, its box (normalised ``x0, y0, x1, y1``), the fraction of
the view it covers, its mean colour and its view index as a circular code. The map can be the simulator's
ground truth (:func:`labelled_category_map`; privileged annotations) or a segmentation network's prediction
(:func:`segment_panorama` with :func:`~vlnkit.perception.train.load_perception_model`): one function builds
the objects from either.

The model (:class:`OAT`, a few hundred thousand parameters) follows the paper's layout at a small size:
object tokens and the appended query token go through a Transformer encoder without positional encoding
(permuting the objects permutes the output); the decoder reads a BOS token and the fixated objects' tokens
with a 1-D sinusoidal position code under a causal mask; a two-head pointer scores every encoder token
(objects, then the query token = EOS) and a constant-0 PAD slot, so the vocabulary of a panorama with ``N``
object slots is ``N + 2``. The query token embeds the words of the phrase (mean of word embeddings).
Padded object slots get no probability.

Training data (:func:`search_fixations`, :func:`house_sequences`) are scanpaths of an oracle searcher on
panoramas of synthetic houses: for each view-selection question of a place
(:func:`~vlnkit.perception.scorers.synthetic.selection_queries`) the target is the object of the target
view holding most of the phrase's pixels; the searcher fixates, in decreasing similarity to the target,
the other objects whose similarity reaches a threshold (similarity = relatedness of the two objects, from
the scene annotations, times their closeness in azimuth, higher within the target's own view), then ends
on the target. Other views of the target instance are never fixated.

:func:`oat_view_scores` is the prior: per query, the probability that the first fixation lands in each
view; ``view_from="last"`` instead decodes the scanpath greedily and puts all mass on the view of the
fixation before EOS (the object the model takes for the target). :class:`OATScorer` wraps it as an
:class:`~vlnkit.perception.scorers.ImageTextScorer`.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from vlnkit.perception.data import HOUSE_CATEGORIES

CHECKPOINT_FORMAT = "vlnkit-oat-v1"
SKIPPED_CATEGORIES = ("nothing", "wall")
"""Categories that never become objects (walls are everywhere and never asked for)."""
STRUCTURE_CATEGORIES = ("floor", "ceiling")
"""Categories that stand for the room they belong to."""
FEATURES = 4 + 1 + 3 + 4
"""Per-object numbers: box (4), covered fraction (1), mean colour (3), view code (cos, sin of 1x and 2x the
view's angle)."""


def default_words() -> tuple[str, ...]:
    """The query vocabulary: the words of the house categories, object colours and room kinds."""
    from vlnkit.envs.synth.house_layout import OBJECT_COLOURS, ROOM_FURNITURE

    words = {"potted"}
    for phrase in (*HOUSE_CATEGORIES, *OBJECT_COLOURS, *ROOM_FURNITURE):
        words.update(phrase.split())
    return tuple(sorted(words))


def query_words(text: str) -> list[str]:
    """The words of a spot as the query reads them (lower case, articles dropped)."""
    return [w for w in text.lower().replace(",", " ").split() if w not in ("the", "a", "an")]


@dataclass
class PanoramaObjects:
    """The objects of one panorama (see the module docstring); arrays have one row per object."""

    category: np.ndarray
    box: np.ndarray
    area: np.ndarray
    colour: np.ndarray
    view: np.ndarray
    views: int
    pixels: list[np.ndarray] = field(default_factory=list, repr=False)

    def __len__(self) -> int:
        return int(len(self.category))

    def features(self) -> np.ndarray:
        """``(N, FEATURES)`` float32 numbers of each object (box, area, colour, view code)."""
        angle = 2.0 * np.pi * self.view / self.views
        code = np.stack([np.cos(angle), np.sin(angle), np.cos(2 * angle), np.sin(2 * angle)], axis=1)
        return np.concatenate([self.box, self.area[:, None], self.colour, code], axis=1).astype(np.float32)

    def azimuth(self, hfov: float = 90.0) -> np.ndarray:
        """Each object's box-centre azimuth in degrees (left positive, view 0 ahead)."""
        cx = 0.5 * (self.box[:, 0] + self.box[:, 2])
        offset = np.degrees(np.arctan((1.0 - 2.0 * cx) * math.tan(math.radians(hfov / 2))))
        return 360.0 * self.view / self.views + offset


def panorama_objects(category_map: np.ndarray, rgb: np.ndarray | None = None, min_area: float = 0.002,
                     keep_pixels: bool = False) -> PanoramaObjects:
    """The objects of a ``(views, H, W)`` category map (HOUSE_CATEGORIES indices, from labels or a
    segmentation model): one per category covering at least ``min_area`` of a view. ``rgb`` ``(views, H, W,
    3)`` gives their mean colour (zeros without it); ``keep_pixels`` keeps each object's flat pixel indices
    (for :func:`house_sequences`)."""
    category_map = np.asarray(category_map)
    if category_map.ndim != 3:
        raise ValueError(f"category map must be (views, H, W), got shape {category_map.shape}")
    views, height, width = category_map.shape
    skipped = [HOUSE_CATEGORIES.index(c) for c in SKIPPED_CATEGORIES]
    rows: dict[str, list[Any]] = {"category": [], "box": [], "area": [], "colour": [], "view": [], "pixels": []}
    for v in range(views):
        flat = category_map[v].reshape(-1)
        ids, counts = np.unique(flat, return_counts=True)
        for c, n in zip(ids.tolist(), counts.tolist()):
            if c in skipped or n < min_area * flat.size:
                continue
            where = np.flatnonzero(flat == c)
            ys, xs = where // width, where % width
            rows["category"].append(c)
            rows["box"].append([xs.min() / width, ys.min() / height, (xs.max() + 1) / width, (ys.max() + 1) / height])
            rows["area"].append(n / flat.size)
            colour = rgb[v].reshape(-1, 3)[where].mean(0) / 255.0 if rgb is not None else np.zeros(3)
            rows["colour"].append(colour)
            rows["view"].append(v)
            rows["pixels"].append(where if keep_pixels else np.empty(0, dtype=np.int64))
    return PanoramaObjects(np.asarray(rows["category"], dtype=np.int64),
                           np.asarray(rows["box"], dtype=np.float64).reshape(-1, 4),
                           np.asarray(rows["area"], dtype=np.float64),
                           np.asarray(rows["colour"], dtype=np.float64).reshape(-1, 3),
                           np.asarray(rows["view"], dtype=np.int64), views, rows["pixels"])


# ----------------------------------------------------------------------------------------------------
# The oracle searcher
# ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SearcherConfig:
    """How the oracle searcher scores an object's similarity to the target (see :func:`search_fixations`)."""

    max_fixations: int = 4
    threshold: float = 0.3
    sigma_deg: float = 30.0
    other_view: float = 0.6
    same_category: float = 1.0
    same_room: float = 0.7
    structure: float = 0.3
    unrelated: float = 0.2


def search_fixations(objects: PanoramaObjects, target: int, relatedness: np.ndarray,
                     excluded: Iterable[int] = (), instance: np.ndarray | None = None,
                     config: SearcherConfig = SearcherConfig()) -> list[int]:
    """The oracle scanpath toward object ``target``: the objects other than the target and ``excluded``
    whose similarity to the target (``relatedness[j]`` times ``exp(-d^2 / 2 sigma^2)`` of their azimuth
    gap ``d``, times ``other_view`` outside the target's view) reaches ``threshold``, most similar first, at
    most ``max_fixations`` of them, then the target. ``instance`` (one id per object) says which objects
    are views of the same thing: only the most similar view of each is fixated."""
    azimuth = objects.azimuth()
    gap = np.abs((azimuth - azimuth[target] + 180.0) % 360.0 - 180.0)
    similarity = np.asarray(relatedness, dtype=np.float64) * np.exp(-gap ** 2 / (2 * config.sigma_deg ** 2))
    similarity = similarity * np.where(objects.view == objects.view[target], 1.0, config.other_view)
    instance = np.arange(len(objects)) if instance is None else np.asarray(instance)
    banned = {int(target), *map(int, excluded)}
    seen = {int(instance[target])}
    order = []
    for j in np.argsort(-similarity, kind="stable").tolist():
        if len(order) == config.max_fixations or similarity[j] < config.threshold:
            break
        if j not in banned and int(instance[j]) not in seen:
            order.append(j)
            seen.add(int(instance[j]))
    return [*order, int(target)]


@dataclass
class Scanpath:
    """One training example: a panorama's objects, the query phrase and the searcher's fixations."""

    objects: PanoramaObjects
    text: str
    fixations: list[int]
    target_view: int


def _dominant_ids(objects: PanoramaObjects, semantic: np.ndarray) -> np.ndarray:
    """The object id covering most of each object's pixels."""
    out = np.zeros(len(objects), dtype=np.int64)
    for j in range(len(objects)):
        ids, counts = np.unique(semantic[objects.view[j]].reshape(-1)[objects.pixels[j]], return_counts=True)
        out[j] = ids[np.argmax(counts)]
    return out


def place_sequences(place: Any, table: np.ndarray, extras: dict[int, dict[str, Any]],
                    config: SearcherConfig = SearcherConfig()) -> list[Scanpath]:
    """The searcher's scanpaths for every view-selection question of ``place`` (a
    :class:`~vlnkit.perception.scorers.synthetic.Place`), ``table`` mapping its object ids to categories and
    ``extras`` holding each object id's annotations (``category``, ``room``)."""
    from vlnkit.perception.scorers.synthetic import selection_queries

    category_map = labelled_category_map(place.semantic, table)
    objects = panorama_objects(category_map, place.rgb, keep_pixels=True)
    if not len(objects):
        return []
    dominant = _dominant_ids(objects, place.semantic)
    structure = {HOUSE_CATEGORIES.index(c) for c in STRUCTURE_CATEGORIES}
    out = []
    for query in selection_queries([place]):
        phrase = query.text[len("the "):]
        phrase_ids = np.asarray(sorted(i for i, names in place.labels.items() if phrase in names), dtype=np.int64)
        in_phrase = [int(np.isin(place.semantic[objects.view[j]].reshape(-1)[objects.pixels[j]], phrase_ids).sum())
                     for j in range(len(objects))]
        candidates = [j for j in range(len(objects)) if objects.view[j] == query.target and in_phrase[j] > 0]
        if not candidates:
            continue
        target = max(candidates, key=lambda j: in_phrase[j])
        target_info = extras.get(int(dominant[target]), {})
        relatedness = np.empty(len(objects))
        for j in range(len(objects)):
            info = extras.get(int(dominant[j]), {})
            if objects.category[j] == objects.category[target]:
                relatedness[j] = config.same_category
            elif objects.category[j] in structure and objects.category[target] not in structure:
                relatedness[j] = config.structure
            elif info.get("room") and info.get("room") == target_info.get("room"):
                relatedness[j] = config.same_room
            else:
                relatedness[j] = config.unrelated
        excluded = [j for j in range(len(objects)) if in_phrase[j] > 0]
        fixations = search_fixations(objects, target, relatedness, excluded, dominant, config)
        out.append(Scanpath(replace(objects, pixels=[]), query.text, fixations, int(query.target)))
    return out


def house_sequences(houses_seed: int, houses: Sequence[int], places_per_house: int, size: int = 224,
                    seed: int = 0, config: SearcherConfig = SearcherConfig(),
                    progress: Callable[[str], None] | None = None) -> list[Scanpath]:
    """Searcher scanpaths on ``places_per_house`` panoramas of each generated house ``houses`` of
    ``houses_seed`` (objects from the ground-truth category map)."""
    from vlnkit.envs.continuous.scene import load_scene_geometry
    from vlnkit.perception.data import category_lookup
    from vlnkit.perception.scorers.synthetic import render_places, synthetic_house_scenes

    rng = np.random.default_rng([seed, houses_seed])
    out: list[Scanpath] = []
    with tempfile.TemporaryDirectory(prefix="vlnkit-oat-houses-") as work:
        for scene in synthetic_house_scenes(houses_seed, houses, work):
            extras = {int(k): dict(v) for k, v in load_scene_geometry(scene).objects.items()}
            table = category_lookup(extras)
            for place in render_places(scene, places_per_house, rng, size):
                out.extend(place_sequences(place, table, extras, config))
            if progress is not None:
                progress(f"{scene.name}: {len(out)} scanpaths")
    return out


def labelled_category_map(semantic: np.ndarray, table: np.ndarray) -> np.ndarray:
    """The ground-truth ``(views, H, W)`` category map of a panorama's semantic object ids, ``table`` mapping
    its scene's object ids to categories (:func:`scene_category_table`; privileged: simulator annotations)."""
    return table[np.minimum(semantic, len(table) - 1)]


@torch.no_grad()
def segment_panorama(model: nn.Module, rgb: np.ndarray, batch_size: int = 12) -> np.ndarray:
    """A segmentation network's ``(views, H, W)`` category map of ``(views, H, W, 3)`` uint8 views (a model of
    :func:`~vlnkit.perception.train.load_perception_model` trained on the houses' categories)."""
    from vlnkit.perception.train import predict

    return predict(model, rgb, "seg", torch.device("cpu"), batch_size=batch_size)


# ----------------------------------------------------------------------------------------------------
# The model
# ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class OATConfig:
    """Sizes of :class:`OAT`."""

    d_model: int = 64
    heads: int = 4
    ffn: int = 128
    encoder_layers: int = 2
    decoder_layers: int = 2
    pointer_heads: int = 2
    dropout: float = 0.1
    max_steps: int = 16
    num_categories: int = len(HOUSE_CATEGORIES)
    words: tuple[str, ...] = ()


def sinusoidal_code(length: int, dim: int) -> torch.Tensor:
    """``(length, dim)`` 1-D sinusoidal position code (Transformer style)."""
    position = torch.arange(length, dtype=torch.float32)[:, None]
    freq = torch.exp(torch.arange(0, dim, 2, dtype=torch.float32) * (-math.log(10000.0) / dim))
    code = torch.zeros(length, dim)
    code[:, 0::2] = torch.sin(position * freq)
    code[:, 1::2] = torch.cos(position * freq)
    return code


class OAT(nn.Module):
    """Object-level attention transformer over panorama objects (see the module docstring).

    Inputs of :meth:`forward` (batch ``B``, ``N`` object slots, ``T`` decoder steps): ``category`` ``(B, N)``,
    ``features`` ``(B, N, FEATURES)``, ``valid`` ``(B, N)`` bool (False: padding), ``words`` ``(B, W)`` word
    indices (0: padding), ``fixations`` ``(B, T)`` indices of the fixated objects fed to the decoder after BOS.
    """

    def __init__(self, config: OATConfig) -> None:
        super().__init__()
        self.config = config
        d = config.d_model
        self.category = nn.Embedding(config.num_categories, d)
        self.feature = nn.Linear(FEATURES, d)
        self.word = nn.Embedding(len(config.words) + 2, d, padding_idx=0)
        self.query_type = nn.Parameter(torch.zeros(d))
        self.bos = nn.Parameter(torch.zeros(d))
        self.encoder = nn.TransformerEncoder(
            nn.TransformerEncoderLayer(d, config.heads, config.ffn, config.dropout, batch_first=True),
            config.encoder_layers, enable_nested_tensor=False)
        self.decoder = nn.TransformerDecoder(
            nn.TransformerDecoderLayer(d, config.heads, config.ffn, config.dropout, batch_first=True),
            config.decoder_layers)
        self.register_buffer("position", sinusoidal_code(config.max_steps + 1, d), persistent=False)
        self.key = nn.Linear(d, d * config.pointer_heads)
        self.point = nn.Linear(d, d * config.pointer_heads)
        self.readout = nn.Linear(config.pointer_heads, 1)
        self.word_index = {w: i + 2 for i, w in enumerate(config.words)}
        for p in self.parameters():
            if p.dim() > 1:
                nn.init.xavier_uniform_(p)
        nn.init.normal_(self.query_type, std=0.02)
        nn.init.normal_(self.bos, std=0.02)

    def encode_words(self, texts: Sequence[str]) -> torch.Tensor:
        """``(len(texts), W)`` word indices of the phrases (1: unknown word, 0: padding)."""
        rows = [[self.word_index.get(w, 1) for w in query_words(t)] or [1] for t in texts]
        out = torch.zeros(len(rows), max(map(len, rows)), dtype=torch.long)
        for i, r in enumerate(rows):
            out[i, :len(r)] = torch.as_tensor(r)
        return out

    def object_tokens(self, category: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
        """``(B, N, d)`` tokens of the objects."""
        return self.category(category) + self.feature(features)

    def encode(self, tokens: torch.Tensor, valid: torch.Tensor, words: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Encoder output over the objects and the appended query token ``(B, N + 1, d)``, and its padding
        mask (True: padding)."""
        mask = (words > 0).float()
        query = (self.word(words) * mask[..., None]).sum(1) / mask.sum(1, keepdim=True).clamp(min=1) + self.query_type
        x = torch.cat([tokens, query[:, None]], dim=1)
        padding = torch.cat([~valid, torch.zeros_like(valid[:, :1])], dim=1)
        return self.encoder(x, src_key_padding_mask=padding), padding

    def step_logits(self, memory: torch.Tensor, padding: torch.Tensor, tokens: torch.Tensor,
                    fixations: torch.Tensor) -> torch.Tensor:
        """``(B, T + 1, N + 2)`` pointer logits after BOS and each of ``fixations`` ``(B, T)``: objects, EOS (the
        query token) and a constant-0 PAD slot; padded objects get ``-inf``."""
        b, n = tokens.shape[:2]
        fixated = torch.gather(tokens, 1, fixations.clamp(0, n - 1)[..., None].expand(-1, -1, tokens.shape[-1]))
        x = torch.cat([self.bos.expand(b, 1, -1), fixated], dim=1)
        steps = x.shape[1]
        if steps > self.position.shape[0]:
            raise ValueError(f"OAT decodes at most {self.position.shape[0]} steps, got {steps}")
        x = x + self.position[:steps]
        causal = torch.triu(torch.ones(steps, steps, dtype=torch.bool, device=x.device), diagonal=1)
        out = self.decoder(x, memory, tgt_mask=causal, memory_key_padding_mask=padding)
        h, d = self.config.pointer_heads, self.config.d_model
        keys = self.key(memory).view(b, n + 1, h, d)
        points = self.point(out).view(b, steps, h, d)
        scores = torch.einsum("bjhd,bthd->bthj", keys, points) / math.sqrt(d)
        logits = self.readout(scores.permute(0, 1, 3, 2)).squeeze(-1)
        logits = logits.masked_fill(padding[:, None, :], float("-inf"))
        return torch.cat([logits, torch.zeros_like(logits[..., :1])], dim=-1)

    def forward(self, category: torch.Tensor, features: torch.Tensor, valid: torch.Tensor, words: torch.Tensor,
                fixations: torch.Tensor) -> torch.Tensor:
        """Teacher-forced pointer logits ``(B, T + 1, N + 2)`` (see :meth:`step_logits`)."""
        tokens = self.object_tokens(category, features)
        memory, padding = self.encode(tokens, valid, words)
        return self.step_logits(memory, padding, tokens, fixations)

    @torch.no_grad()
    def greedy(self, category: torch.Tensor, features: torch.Tensor, valid: torch.Tensor, words: torch.Tensor,
               max_steps: int | None = None) -> tuple[list[list[int]], torch.Tensor]:
        """Greedy scanpaths (object indices, ending where EOS is chosen) and the first step's probabilities
        over the object slots ``(B, N)``. The first step never chooses EOS; no step chooses PAD, a padded slot
        or an object already fixated."""
        b, n = category.shape
        tokens = self.object_tokens(category, features)
        memory, padding = self.encode(tokens, valid, words)
        steps = min(max_steps or self.config.max_steps, self.config.max_steps)
        fixations = torch.zeros(b, 0, dtype=torch.long)
        seen = torch.zeros(b, n + 2, dtype=torch.bool)
        seen[:, n + 1] = True
        done = torch.zeros(b, dtype=torch.bool)
        paths: list[list[int]] = [[] for _ in range(b)]
        first = torch.zeros(b, n)
        for t in range(steps):
            logits = self.step_logits(memory, padding, tokens, fixations)[:, -1]
            logits = logits.masked_fill(seen, float("-inf"))
            if t == 0:
                logits[:, n] = float("-inf")
                first = torch.softmax(logits, dim=-1)[:, :n]
            choice = logits.argmax(-1)
            for i in range(b):
                if not done[i]:
                    if int(choice[i]) == n:
                        done[i] = True
                    else:
                        paths[i].append(int(choice[i]))
            seen[torch.arange(b), choice.clamp(max=n - 1)] |= choice < n
            fixations = torch.cat([fixations, choice.clamp(max=n - 1)[:, None]], dim=1)
            if bool(done.all()):
                break
        return paths, first


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def collate(model: OAT, items: Sequence[tuple[PanoramaObjects, str, list[int]]]) -> dict[str, torch.Tensor]:
    """A padded batch of ``(objects, phrase, fixations)``: the model's inputs and ``targets`` ``(B, T + 1)``
    (each fixation, then EOS = ``N``; PAD = ``N + 1`` after the end)."""
    n = max(max(len(o) for o, _, _ in items), 1)
    steps = max(len(f) for _, _, f in items)
    b = len(items)
    category = torch.zeros(b, n, dtype=torch.long)
    features = torch.zeros(b, n, FEATURES)
    valid = torch.zeros(b, n, dtype=torch.bool)
    fixations = torch.zeros(b, steps, dtype=torch.long)
    targets = torch.full((b, steps + 1), n + 1, dtype=torch.long)
    for i, (objects, _, path) in enumerate(items):
        k = len(objects)
        category[i, :k] = torch.as_tensor(objects.category)
        features[i, :k] = torch.as_tensor(objects.features())
        valid[i, :k] = True
        fixations[i, :len(path)] = torch.as_tensor(path, dtype=torch.long)
        targets[i, :len(path)] = torch.as_tensor(path, dtype=torch.long)
        targets[i, len(path)] = n
    return {"category": category, "features": features, "valid": valid,
            "words": model.encode_words([t for _, t, _ in items]), "fixations": fixations, "targets": targets}


def sequence_loss(model: OAT, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Teacher-forced cross-entropy of the fixations and EOS (PAD targets ignored)."""
    logits = model(batch["category"], batch["features"], batch["valid"], batch["words"], batch["fixations"])
    pad = logits.shape[-1] - 1
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), batch["targets"].reshape(-1), ignore_index=pad)


# ----------------------------------------------------------------------------------------------------
# Training, checkpoints, the prior
# ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class OATTrainConfig:
    """What :func:`train_oat` trains on and how."""

    houses_seed: int = 1000
    houses: tuple[int, ...] = tuple(range(8))
    places_per_house: int = 40
    render_size: int = 224
    seed: int = 0
    epochs: int = 100
    batch_size: int = 32
    lr: float = 2e-3
    clip: float = 1.0


def save_oat(path: str | Path, model: OAT, extra: dict[str, Any] | None = None) -> Path:
    """Write ``model`` (config, categories, weights, ``extra``) atomically to ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"format": CHECKPOINT_FORMAT, "config": asdict(model.config), "categories": list(HOUSE_CATEGORIES),
               "state_dict": model.state_dict(), **(extra or {})}
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    torch.save(payload, tmp)
    os.replace(tmp, path)
    return path


def load_oat(path: str | Path, config: OATConfig | None = None,
             train: OATTrainConfig | None = None) -> tuple[OAT, dict[str, Any]]:
    """The OAT model saved at ``path`` (eval mode) and its checkpoint. Refuses a file that is not an OAT
    checkpoint, one over other categories than :data:`HOUSE_CATEGORIES`, and, when given, one of another
    model ``config`` or training ``train`` settings (naming the fields that differ)."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"no OAT checkpoint at {path}; train one with train_oat(out={str(path)!r})")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as err:  # noqa: BLE001 - torch raises many kinds on a damaged file
        raise ValueError(f"{path}: not a readable OAT checkpoint ({err})") from err
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{path} is not an OAT checkpoint (format "
                         f"{payload.get('format') if isinstance(payload, dict) else type(payload).__name__!r})")
    if payload.get("categories") != list(HOUSE_CATEGORIES):
        raise ValueError(f"{path} was trained over other categories than HOUSE_CATEGORIES")
    saved = dict(payload["config"], words=tuple(payload["config"]["words"]))
    for name, wanted, have in (("model", config, saved), ("training", train, payload.get("train"))):
        if wanted is not None:
            want = asdict(wanted)
            have = dict(have or {})
            if name == "training":
                have = {k: tuple(v) if isinstance(v, list) else v for k, v in have.items()}
            diff = sorted(k for k in set(want) | set(have) if want.get(k) != have.get(k))
            if diff:
                raise ValueError(f"{path} holds an OAT of other {name} settings ({', '.join(diff)} differ)")
    model = OAT(OATConfig(**saved))
    model.load_state_dict(payload["state_dict"])
    model.eval()
    return model, payload


def fit_sequences(model: OAT, train: Sequence[Scanpath], epochs: int, batch_size: int = 32, lr: float = 1e-3,
                  clip: float = 1.0, seed: int = 0, time_limit_s: float | None = None) -> list[float]:
    """Train ``model`` on ``train`` scanpaths (Adam, teacher forcing, gradient clipping); returns the mean
    loss of each epoch. ``time_limit_s`` stops early (after a finished batch)."""
    optimiser = torch.optim.Adam(model.parameters(), lr=lr)
    generator = np.random.default_rng(seed)
    torch.manual_seed(seed)
    began = time.perf_counter()
    history = []
    for _ in range(epochs):
        model.train()
        order = generator.permutation(len(train))
        total, count = 0.0, 0
        for start in range(0, len(order), batch_size):
            items = [(train[i].objects, train[i].text, train[i].fixations) for i in order[start:start + batch_size]]
            loss = sequence_loss(model, collate(model, items))
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), clip)
            optimiser.step()
            total, count = total + loss.item(), count + 1
            if time_limit_s is not None and time.perf_counter() - began > time_limit_s:
                break
        history.append(total / max(count, 1))
        if time_limit_s is not None and time.perf_counter() - began > time_limit_s:
            break
    model.eval()
    return history


def sequence_view_accuracy(model: OAT, items: Sequence[Scanpath], view_from: str = "first") -> float:
    """Fraction of ``items`` whose predicted view (:func:`oat_view_scores`) is the target view."""
    hits = 0
    for item in items:
        scores = view_scores(model, item.objects, [item.text], view_from)
        hits += int(np.argmax(scores[0]) == item.target_view)
    return hits / max(len(items), 1)


def train_oat(out: str | Path, config: OATTrainConfig = OATTrainConfig(), model_config: OATConfig | None = None,
              progress: Callable[[str], None] | None = None) -> tuple[OAT, dict[str, Any]]:
    """Train OAT on searcher scanpaths of the training houses (:func:`house_sequences`) and save it to
    ``out`` (a ``.pt`` path, or a folder for ``out/oat.pt``); a checkpoint already there of the same settings
    is loaded instead, one of other settings refused. Returns the model and a summary (data sizes, losses,
    the view accuracy of the last training house's scanpaths, held out from training)."""
    path = Path(out).expanduser()
    path = path if path.suffix == ".pt" else path / "oat.pt"
    model_config = model_config or OATConfig(words=default_words())
    if path.is_file():
        model, payload = load_oat(path, model_config, config)
        return model, dict(payload.get("summary", {}))
    began = time.perf_counter()
    train = house_sequences(config.houses_seed, config.houses[:-1], config.places_per_house, config.render_size,
                            config.seed, progress=progress)
    val = house_sequences(config.houses_seed, config.houses[-1:], config.places_per_house, config.render_size,
                          config.seed + 1)
    torch.manual_seed(config.seed)
    model = OAT(model_config)
    history = fit_sequences(model, train, config.epochs, config.batch_size, config.lr, config.clip, config.seed)
    summary = {"checkpoint": str(path), "parameters": count_parameters(model), "train_scanpaths": len(train),
               "val_scanpaths": len(val), "mean_fixations": float(np.mean([len(s.fixations) for s in train])),
               "losses": [round(x, 4) for x in history],
               "val_first_view_exact": sequence_view_accuracy(model, val, "first"),
               "val_last_view_exact": sequence_view_accuracy(model, val, "last"),
               "train_seconds": round(time.perf_counter() - began, 1)}
    save_oat(path, model, {"train": asdict(config), "summary": summary})
    if progress is not None:
        progress(json.dumps(summary))
    return model, summary


def view_scores(model: OAT, objects: PanoramaObjects, texts: Sequence[str], view_from: str = "first") -> np.ndarray:
    """``(len(texts), views)`` prior over the views for each phrase: the first fixation's probability per view
    (``first``), or 1 on the view of the greedy scanpath's last fixation (``last``). A panorama without
    objects scores 0 everywhere."""
    if view_from not in ("first", "last"):
        raise ValueError(f"view_from must be first or last, got {view_from!r}")
    out = np.zeros((len(texts), objects.views))
    if not len(objects) or not texts:
        return out
    items = [(objects, t, []) for t in texts]
    batch = collate(model, items)
    model.eval()
    paths, first = model.greedy(batch["category"], batch["features"], batch["valid"], batch["words"])
    if view_from == "first":
        np.add.at(out, (slice(None), objects.view), first.numpy().astype(np.float64))
    else:
        for i, path in enumerate(paths):
            out[i, objects.view[path[-1]]] = 1.0
    return out


def oat_view_scores(model: OAT, category_map: np.ndarray, texts: Sequence[str], rgb: np.ndarray | None = None,
                    view_from: str = "first") -> np.ndarray:
    """The OAT prior over the views of a panorama for each phrase, from its ``(views, H, W)`` category map
    (ground-truth labels or a segmentation model's prediction) and optionally its RGB views (object colours):
    see :func:`view_scores`. The argmax is the first fixation's view."""
    return view_scores(model, panorama_objects(category_map, rgb), texts, view_from)


class OATScorer:
    """OAT as an :class:`~vlnkit.perception.scorers.ImageTextScorer` of VLN-CM's view selector.

    Args:
        model: a trained :class:`OAT`.
        categories: turns the observed :class:`~vlnkit.perception.scorers.Views` into a ``(views, H, W)``
            category map (a segmentation model on the RGB views, or a lookup of the semantic ids).
        needs_labels: whether ``categories`` reads the simulator's semantic ids (privileged).
        view_from: ``first`` or ``last`` (see :func:`view_scores`).
    """

    def __init__(self, model: OAT, categories: Callable[[Any], np.ndarray], needs_labels: bool,
                 view_from: str = "first") -> None:
        self.model = model
        self.categories = categories
        self.needs_labels = bool(needs_labels)
        self.view_from = view_from

    def similarity(self, views: Any, texts: Sequence[str]) -> np.ndarray:
        """``(len(texts), len(views))`` view priors."""
        return oat_view_scores(self.model, self.categories(views), texts, views.rgb, self.view_from)


def scene_category_table(scene: str | Path) -> np.ndarray:
    """The object id -> HOUSE_CATEGORIES index table of a scene file (its ground-truth annotations)."""
    from vlnkit.envs.continuous.scene import load_scene_geometry
    from vlnkit.perception.data import category_lookup

    return category_lookup(load_scene_geometry(scene).objects)


def heldout_scenes(seed: int, count: int) -> list[Path]:
    """The ``val_unseen`` scene files of the houses release ``(seed, count)`` in the order
    :func:`~vlnkit.perception.scorers.training.heldout_places` renders them."""
    from vlnkit.envs.datasets import read_vlnce_split, vlnce_split_path
    from vlnkit.envs.synth.houses import default_houses

    release = default_houses(seed=seed, count=count)
    names = sorted({ep.scene_id for ep in read_vlnce_split(vlnce_split_path(release, "val_unseen")).episodes})
    return [release / "scenes" / name for name in names]


def oat_selection_accuracy(model: OAT, places: Sequence[Any], category_maps: Sequence[np.ndarray],
                           queries: Sequence[Any], view_from: str = "first", from_labels: bool = True) -> dict[str, float]:
    """:func:`~vlnkit.perception.scorers.synthetic.selection_accuracy` of OAT on ``queries``, the objects of
    place ``i`` coming from ``category_maps[i]`` (and its RGB views for their colours); ``from_labels`` says
    whether the maps are the simulator's labels."""
    from vlnkit.perception.scorers.synthetic import selection_accuracy

    totals = {"exact": 0.0, "within_one": 0.0}
    result: dict[str, float] = {}
    for i, place in enumerate(places):
        group = [replace(q, place=0) for q in queries if q.place == i]
        if not group:
            continue
        scorer = OATScorer(model, lambda views, m=category_maps[i]: m, needs_labels=from_labels, view_from=view_from)
        result = selection_accuracy(scorer, [place], group)
        for key in totals:
            totals[key] += result[key] * len(group)
    n = max(len(queries), 1)
    return {**result, "exact": totals["exact"] / n, "within_one": totals["within_one"] / n, "queries": float(len(queries))}
