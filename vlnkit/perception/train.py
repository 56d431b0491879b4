"""``vlnkit train perception``: train a registered backbone for semantic segmentation or depth on the house views
of ``vlnkit data perception`` (:mod:`vlnkit.perception.data`), or for the category readout on the city panoramas of
``vlnkit data perception --source city`` (:mod:`vlnkit.perception.readout_data`), and measure it on the unseen
validation houses or city.

The network is :func:`build_dense_model`: a model that is itself a segmentation network (``dense_task ==
"seg"``, e.g. ``pp_mobileseg_tiny`` with its AAM and head) is used as it is for ``task=seg``; any other
backbone, and every backbone for ``task=depth``, gets the shared heads of :mod:`vlnkit.perception.heads` on its
feature maps; ``task=readout`` puts a :class:`~vlnkit.perception.heads.CategoryReadout` on one of its maps
(:class:`~vlnkit.perception.heads.ReadoutPredictor`). Training is AdamW with a linear warm-up and cosine decay,
random horizontal flips (for the readout also random turns by whole sectors, both exact on the targets), pixel
cross-entropy (segmentation), the depth head's loss, or binary cross-entropy of the closeness (readout: most
targets are 0, and BCE, with the entries of landmarks that are there weighted ``1 + readout.pos_weight``, keeps the
rare landmarks from being averaged away), and bfloat16 autocast on CUDA (``amp: auto``).

The run folder holds ``checkpoint.pt`` (weights, optimiser, schedule position, history; written atomically
after every epoch, so an interrupted run resumes at its last finished epoch; a folder of other settings is
refused, naming the keys that differ), and at the end ``metrics.json`` (mIoU, pixel accuracy and per-class IoU,
depth AbsRel, or the readout's closeness MAE and seen-landmark precision/recall/F1, on the val split) and, for
segmentation, ``confusion.png``. :func:`load_perception_model`
reads a run folder back for agents (``perception.weights=DIR``), refusing weights of another model, objective
or class count.
"""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from omegaconf import DictConfig, OmegaConf
from torch import Tensor, nn
from tqdm import tqdm

from vlnkit.perception.backbones import create_model
from vlnkit.perception.data import load_split, read_meta
from vlnkit.perception.heads import (
    CategoryReadout,
    DensePredictor,
    DepthHead,
    FPNNeck,
    ReadoutPredictor,
    SegmentationHead,
    class_iou,
    confusion_matrix,
    depth_abs_rel,
    depth_loss,
    miou,
    panorama_augment,
    pixel_accuracy,
    readout_scores,
)

CHECKPOINT_FORMAT = "vlnkit-perception-model-v1"
IMAGE_MEAN = (0.485, 0.456, 0.406)
IMAGE_STD = (0.229, 0.224, 0.225)
SETTINGS = ("model", "model_kwargs", "objective", "num_classes", "data", "epochs", "batch_size", "lr", "weight_decay",
            "warmup_steps", "flip", "turns", "seed", "depth_range", "readout", "sectors")
"""Config keys a resumed run must share with its checkpoint."""
READOUT_TRAINING_KEYS = ("visible", "pos_weight")
"""Keys of the ``readout`` config that set its loss and metrics, not the network."""


def normalise(rgb: Tensor) -> Tensor:
    """``(B, H, W, 3)`` uint8 images -> ``(B, 3, H, W)`` float inputs, normalised per channel."""
    x = rgb.permute(0, 3, 1, 2).float() / 255.0
    mean = x.new_tensor(IMAGE_MEAN).view(1, 3, 1, 1)
    std = x.new_tensor(IMAGE_STD).view(1, 3, 1, 1)
    return (x - mean) / std


def build_dense_model(name: str, task: str, num_classes: int, model_kwargs: dict[str, Any] | None = None,
                      depth_range: tuple[float, float] = (0.1, 10.0), readout: dict[str, Any] | None = None,
                      sectors: int = 8) -> nn.Module:
    """The network of a perception task: ``(B, 3, H, W)`` images -> ``(B, num_classes, H, W)`` logits (``seg``),
    ``(B, H, W)`` metres (``depth``) or ``(B, sectors, num_classes)`` closeness (``readout``, ``num_classes``
    landmark categories, ``readout`` the :class:`CategoryReadout` settings). See the module docstring for which
    head a model gets."""
    kwargs = dict(model_kwargs or {})
    if task not in ("seg", "depth", "readout"):
        raise ValueError(f"task must be seg, depth or readout, got {task!r}")
    if task == "readout":
        backbone = create_model(name, num_classes=0, **kwargs)
        settings = {k: v for k, v in (readout or {}).items() if k not in READOUT_TRAINING_KEYS}
        level = int(settings.pop("level", -1))
        neck_from = settings.pop("neck_from", None)
        if neck_from is None:
            head = CategoryReadout(backbone.feature_info[level].channels, num_classes, sectors=sectors, level=level,
                                   **settings)
            return ReadoutPredictor(backbone, head)
        neck = FPNNeck(backbone.feature_info[int(neck_from):], channels=int(settings.get("d_model", 256)))
        head = CategoryReadout(neck.out_channels, num_classes, sectors=sectors, **settings)
        return ReadoutPredictor(backbone, head, neck, int(neck_from))
    if task == "seg":
        model = create_model(name, num_classes=num_classes, **kwargs)
        if getattr(model, "dense_task", None) == "seg":
            return model
    backbone = create_model(name, num_classes=0, **kwargs)
    if task == "seg":
        return DensePredictor(backbone, SegmentationHead(backbone.feature_info, num_classes))
    head = DepthHead(backbone.feature_info, activation="sigmoid", min_depth=depth_range[0], max_depth=depth_range[1])
    return DensePredictor(backbone, head)


def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("device=cuda but no CUDA device is present; use device=cpu or device=auto")
    return torch.device(name)


def _amp(setting: Any, device: torch.device) -> bool:
    if str(setting) == "auto":
        return device.type == "cuda"
    return bool(setting)


def _lr_factor(step: int, total: int, warmup: int) -> float:
    if step < warmup:
        return (step + 1) / warmup
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, (step - warmup) / max(1, total - warmup))))


def _settings(cfg: DictConfig, num_classes: int) -> dict[str, Any]:
    plain = OmegaConf.to_container(cfg, resolve=True)
    assert isinstance(plain, dict)
    out = {k: plain[k] for k in SETTINGS if k in plain}
    out["data"] = str(Path(str(plain["data"])).expanduser().resolve())
    out["num_classes"] = num_classes
    if plain["objective"] != "readout":
        out.pop("readout", None)
        out.pop("turns", None)
        out.pop("sectors", None)
    return out


def _save(path: Path, payload: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    torch.save(payload, tmp)
    os.replace(tmp, path)


@torch.no_grad()
def predict(model: nn.Module, images: np.ndarray, task: str, device: torch.device, batch_size: int = 32,
            amp: bool = False) -> np.ndarray:
    """Predictions of ``images`` ``(N, H, W, 3)`` uint8: class indices ``(N, H, W)`` (``seg``), metres
    ``(N, H, W)`` (``depth``) or closeness ``(N, sectors, categories)`` (``readout``)."""
    model.eval()
    out = []
    for start in range(0, len(images), batch_size):
        x = normalise(torch.as_tensor(images[start:start + batch_size]).to(device))
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            y = model(x).float()
        out.append((y.argmax(1) if task == "seg" else y).cpu().numpy())
    return np.concatenate(out)


def evaluate(model: nn.Module, data: dict[str, np.ndarray], task: str, num_classes: int, device: torch.device,
             batch_size: int = 32, amp: bool = False, visible: float = 0.2) -> dict[str, Any]:
    """Metrics on one split: mIoU, pixel accuracy, per-class IoU and the confusion matrix (``seg``), depth
    AbsRel on pixels that see geometry (``depth``), or closeness MAE and the precision/recall/F1 of landmarks seen
    at closeness ``visible`` (``readout``, :func:`~vlnkit.perception.heads.readout_scores`)."""
    pred = torch.as_tensor(predict(model, data["rgb"], task, device, batch_size, amp))
    if task == "readout":
        target = torch.as_tensor(data["closeness"])
        per_category = [readout_scores(pred[..., c], target[..., c], visible)["f1"] for c in range(target.shape[-1])]
        return {**readout_scores(pred, target, visible), "f1_per_category": per_category, "images": len(pred)}
    if task == "depth":
        target = torch.as_tensor(data["depth"])
        return {"abs_rel": float(depth_abs_rel(pred, target, valid=target > 0)), "images": len(pred)}
    target = torch.as_tensor(data["label"]).long()
    matrix = confusion_matrix(pred.long(), target, num_classes)
    iou = class_iou(matrix)
    return {"miou": float(miou(pred.long(), target, num_classes)), "pixel_accuracy": float(pixel_accuracy(pred.long(), target)),
            "iou": [None if math.isnan(v) else float(v) for v in iou.tolist()], "images": len(pred),
            "confusion": matrix.tolist()}


def plot_confusion(matrix: np.ndarray, names: list[str], path: Path) -> None:
    """Row-normalised confusion matrix (true class per row) as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = matrix / np.maximum(matrix.sum(1, keepdims=True), 1)
    fig, ax = plt.subplots(figsize=(10, 9))
    image = ax.imshow(rows, cmap="viridis", vmin=0.0, vmax=1.0)
    ax.set_xticks(range(len(names)), names, rotation=90, fontsize=7)
    ax.set_yticks(range(len(names)), names, fontsize=7)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    fig.colorbar(image, ax=ax, fraction=0.046)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def train_perception(cfg: DictConfig) -> dict[str, Any]:
    """Train (or resume) as ``configs/train_perception.yaml`` describes; returns the final metrics (also in
    ``out/metrics.json``)."""
    task = str(cfg.objective)
    meta = read_meta(str(cfg.data))
    names = list(meta["categories"])
    num_classes = len(names)
    settings = _settings(cfg, num_classes)
    if cfg.threads:
        torch.set_num_threads(int(cfg.threads))
    device = _device(str(cfg.device))
    amp = _amp(cfg.amp, device)
    torch.manual_seed(int(cfg.seed))
    depth_range = (float(cfg.depth_range[0]), float(cfg.depth_range[1]))
    if (task == "readout") != (meta.get("source") == "city"):
        needs = ("city panoramas (`vlnkit data perception --source city`)" if task == "readout"
                 else "house views (`vlnkit data perception`)")
        raise ValueError(f"{cfg.data}: objective={task} needs {needs}")
    if task == "readout":
        settings["sectors"] = int(meta["sectors"])
        settings["image_shape"] = [int(meta["config"]["height"]), int(meta["config"]["width"]), 3]
    visible = float(cfg.readout.visible)
    pos_weight = float(cfg.readout.get("pos_weight", 0.0))
    model = build_dense_model(str(cfg.model), task, num_classes, settings.get("model_kwargs"), depth_range,
                              settings.get("readout"), settings.get("sectors", 8)).to(device)
    train = load_split(str(cfg.data), "train")
    val = load_split(str(cfg.data), "val")
    epochs, batch_size = int(cfg.epochs), int(cfg.batch_size)
    steps_per_epoch = max(1, len(train["rgb"]) // batch_size)
    total = epochs * steps_per_epoch
    optimiser = torch.optim.AdamW(model.parameters(), lr=float(cfg.lr), weight_decay=float(cfg.weight_decay))
    out = Path(str(cfg.out)).expanduser()
    path = out / "checkpoint.pt"
    start, history = 0, []
    if path.is_file():
        if not cfg.resume:
            raise ValueError(f"{path} exists; pass resume=true to continue it or choose another out=")
        payload = torch.load(path, map_location=device, weights_only=False)
        if payload.get("settings") != settings:
            old = payload.get("settings", {})
            diff = sorted(k for k in set(old) | set(settings) if old.get(k) != settings.get(k))
            raise ValueError(f"{path} was trained with other settings ({', '.join(diff)} differ); "
                             "choose another out= or delete it")
        model.load_state_dict(payload["state_dict"])
        optimiser.load_state_dict(payload["optimizer"])
        start, history = int(payload["epoch"]), list(payload["history"])
    images = torch.as_tensor(train["rgb"])
    targets = torch.as_tensor(train[{"seg": "label", "depth": "depth", "readout": "closeness"}[task]])
    targets = targets.long() if task == "seg" else targets
    bar = tqdm(total=total, initial=start * steps_per_epoch, desc=f"train {cfg.model} {task}", unit="batch",
               disable=not cfg.progress)
    began = time.perf_counter()
    for epoch in range(start, epochs):
        model.train()
        torch.manual_seed(int(cfg.seed) * 100_003 + epoch)  # dropout draws: a resumed epoch repeats exactly
        generator = torch.Generator().manual_seed(int(cfg.seed) * 100_003 + epoch)
        order = torch.randperm(len(images), generator=generator)
        flips = torch.rand(len(images), generator=generator) < 0.5
        turns = torch.randint(0, settings.get("sectors", 1), (len(images),), generator=generator)
        running = 0.0
        for step in range(steps_per_epoch):
            index = order[step * batch_size:(step + 1) * batch_size]
            x, y = images[index], targets[index]
            if task == "readout":
                flip = flips[index] if cfg.flip else torch.zeros(len(index), dtype=torch.bool)
                x, y = panorama_augment(x, y, flip, turns[index] if cfg.turns else torch.zeros_like(index))
            elif cfg.flip:
                flip = flips[index]
                x = torch.where(flip.view(-1, 1, 1, 1), x.flip(2), x)
                y = torch.where(flip.view(-1, 1, 1), y.flip(2), y)
            x, y = normalise(x.to(device)), y.to(device)
            for group in optimiser.param_groups:
                group["lr"] = float(cfg.lr) * _lr_factor(epoch * steps_per_epoch + step, total, int(cfg.warmup_steps))
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
                output = model(x).float()
            if task == "seg":
                loss = F.cross_entropy(output, y)
            elif task == "depth":
                loss = depth_loss(output, y, valid=y > 0)
            else:
                weight = 1.0 + pos_weight * (y > 0).float()
                loss = F.binary_cross_entropy(output.clamp(1e-6, 1 - 1e-6), y, weight=weight)
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            running += loss.item()
            bar.update()
            bar.set_postfix(loss=f"{running / (step + 1):.3f}", refresh=False)
        record: dict[str, Any] = {"epoch": epoch + 1, "loss": running / steps_per_epoch}
        if (epoch + 1) % int(cfg.eval_every) == 0 and epoch + 1 < epochs:
            scores = evaluate(model, val, task, num_classes, device, amp=amp, visible=visible)
            record.update({k: v for k, v in scores.items() if k in ("miou", "pixel_accuracy", "abs_rel", "mae", "f1")})
            bar.write(json.dumps(record))
        history.append(record)
        _save(path, {"format": CHECKPOINT_FORMAT, "settings": settings, "categories": names,
                     "state_dict": model.state_dict(), "optimizer": optimiser.state_dict(),
                     "epoch": epoch + 1, "history": history})
    bar.close()
    train_seconds = time.perf_counter() - began
    scores = evaluate(model, val, task, num_classes, device, amp=amp, visible=visible)
    result: dict[str, Any] = {"model": str(cfg.model), "task": task, "checkpoint": str(path), "epochs": epochs,
                              "train_images": len(train["rgb"]), "val_images": len(val["rgb"]),
                              "train_seconds_this_run": round(train_seconds, 1), "history": history,
                              **{k: v for k, v in scores.items() if k != "confusion"}}
    if task == "readout":
        result["f1_per_category"] = dict(zip(names, result["f1_per_category"]))
    if task == "seg":
        result["per_class_iou"] = dict(zip(names, result.pop("iou")))
        plot_confusion(np.asarray(scores["confusion"]), names, out / "confusion.png")
    (out / "metrics.json").write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    return result


def load_perception_model(run: str | Path, model: str | None = None, task: str | None = None,
                          num_classes: int | None = None, map_location: str = "cpu") -> tuple[nn.Module, dict[str, Any]]:
    """The trained network of a ``vlnkit train perception`` run folder (eval mode) and its checkpoint's
    settings and categories. ``model``, ``task`` and ``num_classes``, when given, must match the checkpoint."""
    path = Path(run).expanduser()
    path = path / "checkpoint.pt" if path.is_dir() else path
    if not path.is_file():
        raise FileNotFoundError(f"no perception weights at {path}; train them with "
                                f"`vlnkit train perception out={path.parent}`")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=False)
    except Exception as err:  # noqa: BLE001 - torch raises many kinds on a damaged file
        raise ValueError(f"{path}: not a readable perception checkpoint ({err})") from err
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{path} is not a vlnkit perception checkpoint (format "
                         f"{payload.get('format') if isinstance(payload, dict) else type(payload).__name__!r})")
    settings = payload["settings"]
    for key, wanted in (("model", model), ("objective", task), ("num_classes", num_classes)):
        if wanted is not None and settings[key] != wanted:
            raise ValueError(f"{path} holds {key}={settings[key]!r}, expected {wanted!r}")
    net = build_dense_model(settings["model"], settings["objective"], settings["num_classes"], settings.get("model_kwargs"),
                            tuple(settings.get("depth_range", (0.1, 10.0))), settings.get("readout"),
                            int(settings.get("sectors", 8)))
    net.load_state_dict(payload["state_dict"])
    net.eval()
    return net, {"settings": settings, "categories": payload["categories"]}
