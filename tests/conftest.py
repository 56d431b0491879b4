"""Shared fixtures: paths to the real public samples in ``../shared/data`` (absent in a user's clone)."""

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
