"""Estimate latency and memory of an ONNX file or an Arch (the API search and CLI share)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from nasctl.arch import Arch
from nasctl.errors import NasctlError
from nasctl.latency.estimator import LatencyEstimator
from nasctl.latency.kernels import Kernel, kernels_from_arch, kernels_from_graph, onnx_graph
from nasctl.latency.memory import memory_from_arch, memory_from_graph
from nasctl.resources import SHIPPED_ESTIMATORS, shipped_estimator

_CACHE: dict[str, LatencyEstimator] = {}


def estimator_path(name_or_path: str | Path | None = None) -> Path:
    """A shipped estimator by device name (``cpu``, ``sim-npu-p16``, ``sim-npu-p32``) or a file."""
    key = str(name_or_path or "cpu")
    return shipped_estimator(key) if key in SHIPPED_ESTIMATORS else Path(key)


def load_estimator(name_or_path: str | Path | None = None) -> LatencyEstimator:
    path = estimator_path(name_or_path)
    key = str(path.resolve())
    if key not in _CACHE:
        _CACHE[key] = LatencyEstimator.load(path)
    return _CACHE[key]


@dataclass
class Estimate:
    latency_ms: float
    params: int
    peak_activation_bytes: int
    macs: int
    kernels: list[Kernel]
    kernel_ms: np.ndarray
    warnings: list[str]
    band_ms: tuple[float, float] | None = None
    estimator: dict[str, Any] | None = None  # the estimator file and its device
    measured_ms: float | None = None  # set by a measurement (onnxruntime, this CPU)
    measured_std_ms: float | None = None
    # the reference network's time around the measurement, and when the estimator's rows
    # were measured: the measurement rescaled to the estimator's speed compares like with like
    reference_now_ms: float | None = None
    reference_estimator_ms: float | None = None
    # the estimator's warnings with their kernel counts and time shares (``warning_rows``);
    # ``warnings`` may hold more, without them (another machine's estimator)
    warning_rows: list[dict[str, Any]] = field(default_factory=list)

    @property
    def error_pct(self) -> float | None:
        """Estimate minus measurement, in % of the measurement (None when not measured)."""
        return None if self.measured_ms is None else (self.latency_ms - self.measured_ms) / self.measured_ms * 100

    def set_measured(self, median_ms: float, std_ms: float) -> None:
        self.measured_ms, self.measured_std_ms = median_ms, std_ms

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "latency_ms": self.latency_ms,
            "params": self.params,
            "peak_activation_bytes": self.peak_activation_bytes,
            "macs": self.macs,
            "flops": 2 * self.macs,
            "kernels": [
                {
                    "name": k.name,
                    "op": k.op if k.op != "unknown" else f"unknown:{k.onnx_op}",
                    "in_shape": list(k.in_shape),
                    "out_shape": list(k.out_shape),
                    "kernel": k.kernel,
                    "stride": k.stride,
                    "groups": k.groups,
                    "act": k.act,
                    "residual": k.residual,
                    "macs": k.macs,
                    "params": k.params,
                    "latency_ms": float(t),
                }
                for k, t in zip(self.kernels, self.kernel_ms, strict=True)
            ],
            "warnings": self.warnings,
        }
        if self.band_ms:
            d["latency_band_ms"] = list(self.band_ms)
        if self.estimator is not None:
            d["estimator"] = self.estimator
        if self.measured_ms is not None:
            d.update(measured_ms=self.measured_ms, measured_std_ms=self.measured_std_ms, error_pct=self.error_pct)
        if self.at_reference_speed_ms is not None:
            d.update(
                reference_now_ms=self.reference_now_ms,
                reference_estimator_ms=self.reference_estimator_ms,
                measured_at_reference_speed_ms=self.at_reference_speed_ms,
                error_at_reference_speed_pct=(self.latency_ms - self.at_reference_speed_ms)
                / self.at_reference_speed_ms
                * 100,
            )
        return d

    @property
    def at_reference_speed_ms(self) -> float | None:
        """The measurement rescaled to the speed the estimator's rows were rescaled to:
        ``measured * reference_estimator / reference_now`` (None without both)."""
        if self.measured_ms is None or not self.reference_now_ms or not self.reference_estimator_ms:
            return None
        return self.measured_ms * self.reference_estimator_ms / self.reference_now_ms


def _estimate(est: LatencyEstimator, kernels: list[Kernel], mem) -> Estimate:
    n = np.array([len(kernels)], dtype=float)

    def total_of(per_kernel: np.ndarray) -> float:
        return float(est._total(np.array([per_kernel.sum()]), n)[0])

    per = est.predict_kernels(kernels)
    total = total_of(per)
    band = None
    if est.quantiles:
        lo, hi = total_of(est.predict_kernels(kernels, "q10")), total_of(est.predict_kernels(kernels, "q90"))
        band = (min(lo, total), max(hi, total))
    rows = est.warning_rows(kernels)
    return Estimate(
        total,
        mem.params,
        mem.peak_activation_bytes,
        sum(k.macs for k in kernels),
        kernels,
        per,
        [r["warning"] for r in rows],
        band,
        warning_rows=rows,
    )


def estimate_onnx(path: str | Path, estimator: LatencyEstimator) -> Estimate:
    graph = onnx_graph(path)
    kernels = kernels_from_graph(graph)
    if not kernels:
        raise NasctlError(f"{path}: no computation found in the graph")
    return _estimate(estimator, kernels, memory_from_graph(graph, kernels))


def estimate_arch(arch: Arch, estimator: LatencyEstimator, head: str = "classifier") -> Estimate:
    kernels = kernels_from_arch(arch, head)
    return _estimate(estimator, kernels, memory_from_arch(arch, kernels))


def estimate_archs(archs: list[Arch], estimator: LatencyEstimator, head: str = "classifier") -> dict[str, np.ndarray]:
    """Batch estimates for search: latency_ms, params and peak_activation_bytes arrays."""
    lists = [kernels_from_arch(a, head) for a in archs]
    mems = [memory_from_arch(a, ks) for a, ks in zip(archs, lists, strict=True)]
    return {
        "latency_ms": estimator.predict_many(lists),
        "params": np.array([m.params for m in mems]),
        "peak_activation_bytes": np.array([m.peak_activation_bytes for m in mems]),
    }
