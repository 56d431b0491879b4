"""Synthetic street city written in the real Touchdown/Map2Seq release formats (entry point:
:func:`vlnkit.envs.synth.city.generate_city`)."""

import os
import shutil
import tempfile
from pathlib import Path

from vlnkit.envs.synth.city import generate_city
from vlnkit.envs.synth.episodes import MEMORY_SPLIT, SPLITS

__all__ = ["cache_dir", "default_city", "generate_city"]


def cache_dir() -> Path:
    """Where generated data is cached: ``$VLNKIT_CACHE`` or ``~/.cache/vlnkit``."""
    return Path(os.environ.get("VLNKIT_CACHE", Path.home() / ".cache" / "vlnkit")).expanduser()


def default_city(seed: int = 0, size: str = "small") -> Path:
    """The release folder of the synthetic city ``(seed, size)``, generated on first use and cached.

    Generation goes to a temporary folder beside the cache entry and is renamed into place, so an
    interrupted or concurrent first use never leaves a half-written city behind. An entry cached by an
    older version without the ``memory`` split is generated again (the same seed gives the same other
    splits, so nothing else changes).
    """
    target = cache_dir() / "synth_city" / f"{size}-seed{seed}"
    if _complete(target):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        generate_city(tmp, seed=seed, size=size)
        if target.is_dir() and not _complete(target):
            shutil.rmtree(target, ignore_errors=True)
        try:
            tmp.rename(target)
        except OSError:
            if not _complete(target):
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    return target


def _complete(city: Path) -> bool:
    """Whether a cached city folder holds every split this version writes."""
    return all((city / "data" / f"{split}.json").is_file() for split in (*SPLITS, MEMORY_SPLIT))
