"""Atomic file writes for memory states and LTM checkpoints, and the one way they are read back."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import torch


def _replace_atomically(path: Path, write: Any) -> Path:
    """Write through ``write(temp_path)`` into a temporary file beside ``path``, fsync, then rename over it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(handle)
    try:
        write(Path(temp))
        with open(temp, "rb") as done:
            os.fsync(done.fileno())
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise
    return path


def save_torch(obj: Any, path: str | Path) -> Path:
    """``torch.save`` ``obj`` to ``path`` atomically (readers never see a half-written file)."""
    return _replace_atomically(Path(path), lambda temp: torch.save(obj, temp))


def save_text(text: str, path: str | Path) -> Path:
    """Write ``text`` to ``path`` atomically."""
    return _replace_atomically(Path(path), lambda temp: temp.write_text(text))


def load_torch(path: str | Path) -> Any:
    """Read a file written by :func:`save_torch` with ``torch.load(weights_only=True)`` onto the CPU."""
    return torch.load(Path(path), map_location="cpu", weights_only=True)
