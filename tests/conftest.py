"""Fixtures shared by the test suite."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, settings

ROOT = Path(__file__).resolve().parents[1]

# Tests import the example's modules the way the example's scripts do.
sys.path.insert(0, str(ROOT / "examples" / "pennfudan"))
sys.path.insert(0, str(ROOT / "tests"))

settings.register_profile(
    "detkit", deadline=None, max_examples=50, suppress_health_check=[HealthCheck.too_slow]
)
settings.load_profile("detkit")
torch.set_num_threads(max(1, min(2, torch.get_num_threads())))


@pytest.fixture(scope="session")
def synthetic_root(tmp_path_factory):
    """A small synthetic Penn-Fudan-layout folder shared by the session (read-only use)."""
    from detkit.data import write_synthetic_pennfudan

    return write_synthetic_pennfudan(
        tmp_path_factory.mktemp("pennfudan"),
        num_images=12,
        seed=1,
        size_range=(48, 96),
        negative_fraction=0.2,
        thin_fraction=0.5,
    )
