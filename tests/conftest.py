"""Shared fixtures: a private cache directory and small, fast datasets."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

# Tests share one cache (MNIST archive, small teachers) across the session; CI points
# PQLIB_CACHE at a throwaway folder.
os.environ.setdefault("PQLIB_CACHE", str(Path.home() / ".cache" / "pqlib"))
torch.set_num_threads(int(os.environ.get("PQLIB_TEST_THREADS", min(2, os.cpu_count() or 1))))


@pytest.fixture(scope="session")
def digits():
    from pqlib.data import load

    return load("digits", "train")


@pytest.fixture(scope="session")
def digits_test():
    from pqlib.data import load

    return load("digits", "test")


@pytest.fixture(scope="session")
def digits_teacher():
    """A ConvNet-BN teacher on scikit-learn digits (trained in seconds, cached)."""
    from pqlib.train import train_teacher

    return train_teacher("digits", "convnet_bn", epochs=20, progress=False)
