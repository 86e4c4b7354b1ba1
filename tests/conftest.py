from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SPACES_DIR = ROOT / "search_spaces"
SHIPPED = sorted(SPACES_DIR.glob("*.yaml"))
DEFAULT_SPACE = SPACES_DIR / "mobilenetv2_32.yaml"
UNCURATED_SPACE = SPACES_DIR / "mobilenetv2_32_uncurated.yaml"


@pytest.fixture
def tiny_space_dict() -> dict:
    """A space small enough to enumerate completely."""
    return {
        "name": "tiny",
        "input": {"resolution": [16, 24], "channels": 3},
        "parallelism": 8,
        "depth_multiplier": [0.5, 1.0],
        "stem": {"channels": 8},
        "stages": [
            {"depth": [1], "channels": 8, "stride": 1, "kind": ["ibn"], "kernel": [3], "expansion": [1]},
            {
                "depth": [1, 2],
                "channels": [16, 24],
                "stride": 2,
                "kind": ["ibn", "fused_ibn"],
                "kernel": [3, 5],
                "expansion": [2],
            },
        ],
        "head": {"channels": 32},
        "output": {"classes": 4},
    }


@pytest.fixture(scope="session")
def small_digits(tmp_path_factory):
    """240 real digits (8x8) as a .npz: quick trainings."""
    import numpy as np
    from sklearn.datasets import load_digits

    d = load_digits()
    idx = np.random.default_rng(0).permutation(len(d.target))[:240]
    path = tmp_path_factory.mktemp("data") / "digits240.npz"
    np.savez(path, x=(d.images[idx] * 16).astype(np.uint8), y=d.target[idx])
    return path
