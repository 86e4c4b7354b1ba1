"""Shared helpers for the benchmarks: machine/version record and result saving."""

from __future__ import annotations

import json
import platform
import time
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"


def environment() -> dict[str, Any]:
    import lightgbm
    import onnx
    import onnxruntime
    import torch

    from nasctl import __version__
    from nasctl.latency.estimator import machine_info

    return {
        "machine": machine_info(),
        "versions": {
            "nasctl": __version__,
            "torch": torch.__version__,
            "onnx": onnx.__version__,
            "onnxruntime": onnxruntime.__version__,
            "lightgbm": lightgbm.__version__,
            "python": platform.python_version(),
        },
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def save(name: str, results: dict[str, Any]) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps({"benchmark": name, **environment(), **results}, indent=2) + "\n")
    print(f"saved {path}")
    return path
