"""CLIP weights from a local folder through transformers' ``CLIPModel`` and ``CLIPProcessor``.

The folder is what ``save_pretrained`` writes (``config.json``, the weights, the processor and tokenizer
files), for instance a user's own download of ``openai/clip-vit-base-patch32``. It is read with
``local_files_only=True``: nothing is fetched.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from vlnkit.perception.scorers.base import Views


class HFClipScorer:
    """Cosine similarity of CLIP's text and image embeddings.

    Args:
        model_dir: the local CLIP folder.
        device: torch device (``cpu``, ``cuda``).
        batch_size: views embedded per forward pass.
    """

    needs_labels = False

    def __init__(self, model_dir: str | Path, device: str = "cpu", batch_size: int = 16) -> None:
        from transformers import CLIPModel, CLIPProcessor

        path = Path(model_dir).expanduser()
        if not (path / "config.json").is_file():
            raise FileNotFoundError(f"no CLIP model folder at {path} (expected config.json from save_pretrained)")
        self.device = torch.device(device)
        self.model = CLIPModel.from_pretrained(str(path), local_files_only=True).to(self.device).eval()
        self.processor = CLIPProcessor.from_pretrained(str(path), local_files_only=True)
        self.batch_size = int(batch_size)
        self._text_cache: dict[str, torch.Tensor] = {}

    @torch.no_grad()
    def _embed_texts(self, texts: Sequence[str]) -> torch.Tensor:
        missing = [t for t in dict.fromkeys(texts) if t not in self._text_cache]
        if missing:
            batch = self.processor.tokenizer(missing, padding=True, truncation=True, return_tensors="pt").to(self.device)
            out = self.model.text_model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
            emb = torch.nn.functional.normalize(self.model.text_projection(out.pooler_output), dim=-1)
            self._text_cache.update(zip(missing, emb))
        return torch.stack([self._text_cache[t] for t in texts])

    @torch.no_grad()
    def _embed_images(self, rgb: np.ndarray) -> torch.Tensor:
        chunks = []
        for start in range(0, len(rgb), self.batch_size):
            images = list(rgb[start:start + self.batch_size])
            pixels = self.processor.image_processor(images=images, return_tensors="pt")["pixel_values"].to(self.device)
            out = self.model.vision_model(pixel_values=pixels)
            chunks.append(torch.nn.functional.normalize(self.model.visual_projection(out.pooler_output), dim=-1))
        return torch.cat(chunks)

    def similarity(self, views: Views, texts: Sequence[str]) -> np.ndarray:
        """``(len(texts), len(views))`` cosine similarities."""
        return (self._embed_texts(texts) @ self._embed_images(views.images()).T).cpu().numpy().astype(np.float64)
