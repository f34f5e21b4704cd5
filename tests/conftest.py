"""Shared fixtures: synthetic volumes, the real FIB-SEM data in ../shared/data (skipped when absent)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("OMP_NUM_THREADS", "2")

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("TOKENUNIFY_SHARED_DATA", REPO.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The folder with the real medulla FIB-SEM volumes; skips the test when it is absent."""
    if not (SHARED_DATA / "medulla-labeled" / "test-image.h5").exists():
        pytest.skip(
            f"real EM data not found at {SHARED_DATA} (expected ../shared/data beside the repo, "
            "or set TOKENUNIFY_SHARED_DATA)"
        )
    return SHARED_DATA


@pytest.fixture(scope="session")
def synthetic_small():
    """A small isotropic synthetic EM volume (32, 64, 64) with labels, seed 0."""
    from napari_tokenunify.synthetic import make_synthetic_volume

    return make_synthetic_volume((32, 64, 64), seed=0)


@pytest.fixture
def single_torch_thread():
    """Run a test with one torch thread: tiny tensors gain nothing from two, and OpenMP
    spinning on busy cores is slow. Use with ``pytest.mark.usefixtures("single_torch_thread")``."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def seeded_tiny(shape=(1, 1, 16, 32, 32)):
    """An untrained EMmamba ``tiny`` in eval mode and a random input, both from seed 0."""
    import torch

    from napari_tokenunify.model import build_model

    torch.manual_seed(0)
    model = build_model("tiny").eval()
    return model, torch.rand(*shape)
