"""Shared fixtures: paths to the real public samples in ``../shared/data`` (absent in a user's clone), a
small synthetic houses release for the continuous tests; one-thread torch for the memory tests."""

from collections.abc import Iterator
from pathlib import Path

import pytest

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def shared_sample(name: str) -> Path:
    """Path of a real-data sample folder, skipping the calling test when it is absent."""
    path = SHARED_DATA / name
    if not path.is_dir():
        pytest.skip(f"real-data sample {path} is absent (it ships only beside the project's own checkout)")
    return path


@pytest.fixture
def touchdown_sample() -> Path:
    """The 40-episode real Touchdown sample with its local street graph."""
    return shared_sample("touchdown_sample")


SMALL_HOUSES_SPLITS = {"train": 2, "val_seen": 1, "val_unseen": 3, "test": 1}
"""Episodes per house of each split of the small houses release (2 houses, seed 3)."""


@pytest.fixture(scope="session")
def houses(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small synthetic houses release (seed 3, 2 houses, :data:`SMALL_HOUSES_SPLITS`), generated once."""
    from vlnkit.envs.synth.houses import generate_houses

    root = tmp_path_factory.getbasetemp() / "vlnce-houses-seed3"
    if not (root / ".done").is_file():
        generate_houses(root, 3, 2, SMALL_HOUSES_SPLITS)
        (root / ".done").write_text("ok")
    return root


@pytest.fixture
def one_torch_thread() -> Iterator[None]:
    """Tiny torch ops run fastest, and steadiest on a shared machine, on one thread (restored after)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
