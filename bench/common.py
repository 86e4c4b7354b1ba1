"""Shared helpers for the benchmarks: machine/version record and result saving."""

from __future__ import annotations

import json
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"


def environment() -> dict[str, Any]:
    """The record of where and how a bench ran; the commit is the one it started at."""
    import lightgbm
    import onnx
    import onnxruntime
    import torch

    from nasctl import __version__
    from nasctl.latency.estimator import machine_info

    return {
        "git": _START_GIT,
        "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
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


def _git() -> dict[str, Any]:
    """The commit the bench ran at, and the tracked files it had changed when the bench ran
    (the benches' own outputs under bench/results aside)."""
    root = Path(__file__).resolve().parents[1]

    def git(*args: str) -> str:
        r = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True)
        return r.stdout.rstrip("\n") if r.returncode == 0 else ""

    changed = [
        line[3:]
        for line in git("status", "--porcelain", "--untracked-files=no", "--", ".", ":!bench/results").splitlines()
    ]
    return {"commit": git("rev-parse", "HEAD") or None, "dirty": bool(changed), "changed": changed}


def save(name: str, results: dict[str, Any], config: dict[str, Any]) -> Path:
    """Write ``results/NAME.json`` whole: the environment (git commit, command, machine,
    versions), the bench's full ``config`` (every option it ran with) and its results."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    record = {"benchmark": name, **environment(), "config": config, **results}
    path.write_text(json.dumps(record, indent=2, default=str) + "\n")
    print(f"saved {path}")
    return path


class Partial:
    """Finished runs of a long bench, kept in ``results/NAME.partial.json`` (not committed)
    so that an interrupted bench resumes where it stopped; ``fresh`` starts over."""

    def __init__(self, name: str, fresh: bool = False) -> None:
        self.path = RESULTS / f"{name}.partial.json"
        self.runs: dict[str, Any] = {}
        if self.path.is_file() and not fresh:
            self.runs = json.loads(self.path.read_text())

    def __contains__(self, key: str) -> bool:
        return key in self.runs

    def __getitem__(self, key: str) -> Any:
        return self.runs[key]

    def put(self, key: str, value: Any) -> None:
        self.runs[key] = value
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.write_text(json.dumps(self.runs, indent=1, default=str))


def mean_std(values: list[float]) -> dict[str, Any]:
    """Mean and (population) standard deviation of per-seed values, with the values."""
    import numpy as np

    return {"mean": float(np.mean(values)), "std": float(np.std(values)), "n": len(values), "values": list(values)}


_START_GIT = _git()  # at import, when the bench starts: a later checkout does not change what it ran
