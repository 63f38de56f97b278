"""Shared pytest fixtures: a seeded RNG, the shared data folder, a tiny generated clip."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

# Keep the suite predictable on small machines: one intra-op thread per test process.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

SHARED_DIR = Path(__file__).resolve().parents[2] / "shared"
AUDIOGROUNDING_V1 = SHARED_DIR / "data" / "audiogrounding-v1"


@pytest.fixture
def rng() -> np.random.Generator:
    """A numpy generator with a fixed seed, fresh for every test."""
    return np.random.default_rng(1234)


@pytest.fixture
def audiogrounding_v1() -> Path:
    """The real AudioGrounding v1 metadata folder; skips when ``../shared`` is absent."""
    if not (AUDIOGROUNDING_V1 / "train.json").is_file():
        pytest.skip(f"AudioGrounding v1 metadata not found at {AUDIOGROUNDING_V1} (../shared absent)")
    return AUDIOGROUNDING_V1


@pytest.fixture(scope="session")
def detector(tmp_path_factory: pytest.TempPathFactory):
    """The hand-set band-detector model (exported and loaded like a trained one)."""
    from acalign.infer.model import load_model
    from acalign.infer.synthetic import save_band_detector

    return load_model(save_band_detector(tmp_path_factory.mktemp("models") / "detector"))
