"""Synthetic street city written in the real Touchdown/Map2Seq release formats (entry point:
:func:`vlnkit.envs.synth.city.generate_city`)."""

import os
import shutil
import tempfile
from pathlib import Path

from vlnkit.envs.synth.city import generate_city

__all__ = ["cache_dir", "default_city", "generate_city"]


def cache_dir() -> Path:
    """Where generated data is cached: ``$VLNKIT_CACHE`` or ``~/.cache/vlnkit``."""
    return Path(os.environ.get("VLNKIT_CACHE", Path.home() / ".cache" / "vlnkit")).expanduser()


def default_city(seed: int = 0, size: str = "small") -> Path:
    """The release folder of the synthetic city ``(seed, size)``, generated on first use and cached.

    Generation goes to a temporary folder beside the cache entry and is renamed into place, so an
    interrupted or concurrent first use never leaves a half-written city behind.
    """
    target = cache_dir() / "synth_city" / f"{size}-seed{seed}"
    if (target / "data").is_dir():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        generate_city(tmp, seed=seed, size=size)
        try:
            tmp.rename(target)
        except OSError:
            if not (target / "data").is_dir():
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    return target
