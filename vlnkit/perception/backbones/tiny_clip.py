"""A small CLIP-style image-text model (``tiny_clip``) that vlnkit trains on its own synthetic renders.

Two towers map a view and a short phrase into one normalised embedding space: a four-stage strided CNN
over a downsampled RGB view, and a bag of words (word embeddings averaged over the phrase, then an MLP).
Their cosine similarity, scaled by a learned temperature, is what the contrastive loss of
:func:`vlnkit.perception.scorers.training.train_clip` trains and what the ``synth_clip`` scorer reads.

:class:`WordVocab` is its tokenizer: lower-case words, ``<pad>`` 0 and ``<unk>`` 1, built from the
training captions and saved with the weights.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from vlnkit.perception.backbones.registry import register_model

_WORD = re.compile(r"[a-z0-9']+")
PAD, UNK = 0, 1
CHECKPOINT_FORMAT = "vlnkit-tiny-clip-v1"


class WordVocab:
    """Word ids for phrases: ``<pad>`` 0, ``<unk>`` 1, then the known words in the given order."""

    def __init__(self, words: Sequence[str]) -> None:
        self.words = ["<pad>", "<unk>"] + [w for w in words if w not in ("<pad>", "<unk>")]
        self.index = {w: i for i, w in enumerate(self.words)}

    @staticmethod
    def tokenize(text: str) -> list[str]:
        """The lower-case words of ``text``."""
        return _WORD.findall(text.lower())

    @classmethod
    def build(cls, texts: Iterable[str]) -> WordVocab:
        """A vocabulary of every word in ``texts`` (sorted, so the same texts give the same ids)."""
        return cls(sorted({w for t in texts for w in cls.tokenize(t)}))

    def __len__(self) -> int:
        return len(self.words)

    def encode(self, texts: Sequence[str], max_words: int = 16) -> torch.Tensor:
        """``(len(texts), L)`` word ids, zero-padded to the longest phrase (at most ``max_words``).
        Unknown words are left out (articles and other words no caption had carry no meaning the model
        learned); a phrase without a known word becomes a single ``<unk>``."""
        rows = [[self.index[w] for w in self.tokenize(t) if w in self.index][:max_words] or [UNK] for t in texts]
        width = max(len(r) for r in rows)
        return torch.tensor([r + [PAD] * (width - len(r)) for r in rows], dtype=torch.long)


class TinyCLIP(nn.Module):
    """The two-tower model (see the module docstring).

    Args:
        vocab_size: number of word ids (``len(WordVocab)``).
        embed_dim: size of the shared embedding.
        image_size: side of the square image the CNN sees (views are resized to it).
        width: channels of the CNN's first stage (doubled after the first two stages).
        word_dim: size of the word embeddings.
    """

    def __init__(self, vocab_size: int, embed_dim: int = 64, image_size: int = 64, width: int = 32,
                 word_dim: int = 64) -> None:
        super().__init__()
        self.image_size = int(image_size)
        chans = [3, width, width * 2, width * 4, width * 4]
        layers: list[nn.Module] = []
        for cin, cout in zip(chans[:-1], chans[1:]):
            layers += [nn.Conv2d(cin, cout, 3, stride=2, padding=1), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]
        self.cnn = nn.Sequential(*layers)
        self.image_head = nn.Linear(chans[-1] * 2, embed_dim)
        self.words = nn.Embedding(vocab_size, word_dim, padding_idx=PAD)
        self.text_head = nn.Sequential(nn.Linear(word_dim, word_dim * 2), nn.ReLU(inplace=True), nn.Linear(word_dim * 2, embed_dim))
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))

    def preprocess(self, images: np.ndarray | torch.Tensor) -> torch.Tensor:
        """``(N, H, W, 3)`` uint8 views -> ``(N, 3, S, S)`` normalised floats at the model's image size."""
        x = torch.as_tensor(np.asarray(images)) if not isinstance(images, torch.Tensor) else images
        x = x.to(self.logit_scale.device).permute(0, 3, 1, 2).float() / 255.0
        if x.shape[-1] != self.image_size or x.shape[-2] != self.image_size:
            x = F.interpolate(x, size=(self.image_size, self.image_size), mode="area")
        return (x - 0.5) / 0.25

    def encode_image(self, pixels: torch.Tensor) -> torch.Tensor:
        """Normalised embeddings of preprocessed views (average and max pooling of the last stage)."""
        f = self.cnn(pixels)
        pooled = torch.cat([f.mean(dim=(2, 3)), f.amax(dim=(2, 3))], dim=1)
        return F.normalize(self.image_head(pooled), dim=-1)

    def encode_text(self, ids: torch.Tensor) -> torch.Tensor:
        """Normalised embeddings of word-id rows (padding ignored)."""
        ids = ids.to(self.logit_scale.device)
        mask = (ids != PAD).float().unsqueeze(-1)
        mean = (self.words(ids) * mask).sum(1) / mask.sum(1).clamp_min(1.0)
        return F.normalize(self.text_head(mean), dim=-1)

    def forward(self, pixels: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        """Scaled image-text logits ``(N_images, N_texts)``."""
        return self.logit_scale.exp().clamp(max=100.0) * self.encode_image(pixels) @ self.encode_text(ids).T


@register_model("tiny_clip", backbone=False)
def _tiny_clip(**kwargs: int) -> TinyCLIP:
    return TinyCLIP(**kwargs)


def save_tiny_clip(path: str | Path, model: TinyCLIP, vocab: WordVocab, config: dict[str, Any],
                   extra: dict[str, Any] | None = None) -> None:
    """Write the weights, the model ``config`` (the keyword arguments of :class:`TinyCLIP`), the
    vocabulary and ``extra`` (training state) to ``path`` atomically (a temporary file renamed over it)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"format": CHECKPOINT_FORMAT, "config": dict(config), "words": vocab.words[2:],
               "state_dict": model.state_dict(), **(extra or {})}
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    torch.save(payload, tmp)
    os.replace(tmp, path)


def load_tiny_clip(path: str | Path, map_location: str = "cpu") -> tuple[TinyCLIP, WordVocab, dict[str, Any]]:
    """The model (in eval mode), its vocabulary and the whole checkpoint saved by :func:`save_tiny_clip`."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"no tiny_clip weights at {path}; train them with `vlnkit train clip out={path}`")
    payload = torch.load(path, map_location=map_location, weights_only=True)
    if payload.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{path} is not a tiny_clip checkpoint (format {payload.get('format')!r})")
    vocab = WordVocab(payload["words"])
    model = TinyCLIP(**payload["config"])
    model.load_state_dict(payload["state_dict"])
    return model.eval(), vocab, payload
