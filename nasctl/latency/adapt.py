"""``nasctl measure --quick``: adapt an estimator fitted on another machine to this one.

An estimator's kernel models carry the CPU they were measured on: another CPU model, or
the same model in another virtual machine, runs some kernel types faster and others
slower (depthwise convolutions, memory-bound kernels and dense convolutions do not scale
alike). A full ``measure`` + ``fit-estimator`` takes ten minutes; ``--quick`` takes about
a minute and a half:

1. measure a fixed, seeded mix of reference networks (the same on every machine: space
   samples, random zoo-like CNNs, zoo variants) for ``QUICK_BUDGET_S`` seconds, in
   context, with the same noise monitor as ``measure``;
2. per kernel type, fit a correction of the existing estimator's predictions in log
   space, ``log ms' = shift + slope * log ms``: the shift is the median log ratio
   measured / predicted, shrunk toward the all-kernel median when the type has few rows
   (``SHRINK`` rows of weight); the slope is fitted (and clipped to
   [``SLOPE_MIN``, ``SLOPE_MAX``]) only for types with ``MIN_SLOPE_ROWS`` rows spanning a
   wide range of latencies, else 1;
3. refit the per-network overhead (``wall = a * sum(kernels) + b + c * n_kernels``) on
   this machine's networks;
4. state the error to expect: leave-one-network-out over the reference networks (a
   network's rows never in the correction that predicts it), the adapted and the
   unadapted estimator side by side, beside the run's noise figure.

The adapted estimator is the original one plus the corrections (JSON, no pickle), with
this machine's description as its device, so that ``estimate`` no longer warns.
"""

from __future__ import annotations

import copy
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from nasctl.errors import NasctlError
from nasctl.latency.estimator import (
    MIN_NODE_FIT,
    LatencyEstimator,
    MeasurementTable,
    accuracy_metrics,
    corrected,
    network_total,
    profiler_node_cost,
    read_measurements,
    without_profiler_cost,
)
from nasctl.latency.features import OP_GROUP

QUICK_BUDGET_S = 70.0  # measurement; with start-up and fitting the command stays under 90 s
QUICK_SEED = 7  # the reference networks: the same on every machine
SHRINK = 10.0
MIN_SLOPE_ROWS = 40
MIN_SLOPE_SPREAD = 0.5  # std of log(predicted ms) a type needs for a fitted slope
SLOPE_MIN, SLOPE_MAX = 0.8, 1.2


def _fit_groups(groups: np.ndarray, log_pred: np.ndarray, log_ratio: np.ndarray) -> dict[str, dict[str, float]]:
    """Per-group (shift, slope) of ``log measured = shift + slope * log predicted``."""
    overall = float(np.median(log_ratio)) if len(log_ratio) else 0.0
    out: dict[str, dict[str, float]] = {"*": {"shift": overall, "slope": 1.0, "n": int(len(log_ratio))}}
    for g in sorted(set(groups)):
        m = groups == g
        n = int(m.sum())
        d, lp = log_ratio[m], log_pred[m]
        slope = 1.0
        if n >= MIN_SLOPE_ROWS and float(np.std(lp)) >= MIN_SLOPE_SPREAD:
            keep = np.abs(d - np.median(d)) <= 3 * 1.4826 * np.median(np.abs(d - np.median(d))) + 1e-12
            b = np.polyfit(lp[keep], lp[keep] + d[keep], 1)[0]
            slope = float(np.clip(b, SLOPE_MIN, SLOPE_MAX))
        # the shift makes the median residual zero for this slope, shrunk toward the overall one
        resid_shift = float(np.median(lp + d - slope * lp))
        overall_shift = overall + float(np.median((1.0 - slope) * lp))
        shift = (n * resid_shift + SHRINK * overall_shift) / (n + SHRINK)
        out[g] = {"shift": shift, "slope": slope, "n": n}
    return out


def _network_index(table: MeasurementTable) -> tuple[list[str], dict[str, np.ndarray], dict[str, dict]]:
    """Networks with a whole-model row: ids, their kernel rows, their model rows."""
    ids = np.array(table.model_ids)
    models = {r["model_id"]: r for r in table.model_rows}
    names = [m for m in models if np.any(ids == m)]
    return names, {m: np.flatnonzero(ids == m) for m in names}, models


def comparable(est: LatencyEstimator, table: MeasurementTable) -> tuple[MeasurementTable, dict[str, float]]:
    """``table``'s kernel times as ``est`` learnt them: where ``est`` was fitted with the
    profiler's cost per extra node taken off, the same is done here, with the cost fitted on
    ``table``'s own networks (this machine's), or ``est``'s where they are too few.
    Returns (the table, the cost used)."""
    fitted = est.meta.get("overhead", {}).get("profiler", {})
    if not fitted.get("per_extra_node_ms"):
        return table, {"per_extra_node_ms": 0.0, "n": 0}
    cost = profiler_node_cost(table)
    if cost["n"] < MIN_NODE_FIT:
        cost = dict(fitted)
    return without_profiler_cost(table, cost["per_extra_node_ms"]), cost


def corrections(est: LatencyEstimator, table: MeasurementTable) -> dict[str, Any]:
    """The per-kernel-type corrections and the per-network overhead fitted on ``table``."""
    table, cost = comparable(est, table)
    raw = est.predict_rows(table.ops, table.X, adapted=False, networks=table.networks())
    groups = np.array([OP_GROUP.get(op, "unknown") for op in table.ops])
    lp = np.log(raw)
    overhead = LatencyEstimator._fit_overhead(table) | {"profiler": cost}
    if overhead.get("n", 0) < 5:
        overhead = est.meta.get("overhead", {})
    return {"groups": _fit_groups(groups, lp, np.log(table.y) - lp), "overhead": overhead}


def expected_error(est: LatencyEstimator, table: MeasurementTable) -> dict[str, Any]:
    """Leave-one-network-out: each reference network predicted with corrections (and the
    overhead) fitted on the others' rows; the unadapted estimator on the same networks."""
    table, _ = comparable(est, table)
    names, rows_of, models = _network_index(table)
    raw = est.predict_rows(table.ops, table.X, adapted=False, networks=table.networks())
    groups = np.array([OP_GROUP.get(op, "unknown") for op in table.ops])
    lp, lr = np.log(raw), np.log(table.y) - np.log(raw)
    measured, adapted, unadapted = [], [], []
    for m in names:
        idx = rows_of[m]
        rest = np.setdiff1d(np.arange(len(table)), idx)
        corr = _fit_groups(groups[rest], lp[rest], lr[rest])
        others = MeasurementTable(
            [], np.zeros((0, table.X.shape[1])), np.zeros(0), [r for r in table.model_rows if r["model_id"] != m]
        )
        overhead = LatencyEstimator._fit_overhead(others)
        if overhead.get("n", 0) < 5:
            overhead = est.meta.get("overhead", {})
        fixed = np.concatenate([corrected(corr, g, raw[[i]]) for g, i in zip(groups[idx], idx, strict=True)])
        n_k = models[m]["n_kernels"]
        n_k = n_k if np.isfinite(n_k) else len(idx)
        measured.append(models[m]["latency_ms"])
        adapted.append(float(network_total(overhead, fixed.sum(), n_k)))
        unadapted.append(float(network_total(est.meta.get("overhead", {}), raw[idx].sum(), n_k)))
    if len(measured) < 3:
        return {"networks": len(measured)}
    return {
        "networks": len(measured),
        "adapted": accuracy_metrics(np.array(adapted), np.array(measured)),
        "unadapted": accuracy_metrics(np.array(unadapted), np.array(measured)),
    }


def check_adaptable(est: LatencyEstimator, source: str) -> LatencyEstimator:
    """``est`` if it can be adapted to this machine (a cpu estimator), else NasctlError."""
    if est.device.get("simulated"):
        raise NasctlError(f"{source}: a simulated-device estimator needs no adaptation (--quick is for cpu ones)")
    return est


def adapt(
    est: LatencyEstimator,
    source: str,
    time_budget: float = QUICK_BUDGET_S,
    threads: int = 1,
    seed: int = QUICK_SEED,
    target_error: float = 5.0,
    progress: Callable[[float, int, int], None] | None = None,
    keep_csv: str | Path | None = None,
) -> tuple[LatencyEstimator, dict[str, Any]]:
    """Measure the reference networks here and return (the adapted estimator, report)."""
    from nasctl.latency.estimator import machine_info
    from nasctl.latency.measure import measure

    check_adaptable(est, source)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        csv_path = Path(keep_csv) if keep_csv else Path(tmp) / "quick.csv"
        meta = measure(
            csv_path,
            device="cpu",
            time_budget=time_budget,
            threads=threads,
            seed=seed,
            progress=progress,
            target_error=target_error,
        )
        table = read_measurements([csv_path])
    fitted = corrections(est, table)
    report = {
        "source": source,
        "seconds_measuring": meta["seconds"],
        "networks": meta["networks"],
        "rows": meta["rows"],
        "noise": meta.get("noise", {}),
        "expected": expected_error(est, table),
    }
    out = LatencyEstimator()
    out.boosters, out.quantiles = est.boosters, est.quantiles
    out.meta = copy.deepcopy(est.meta)
    out.meta["adapted_from"] = {"source": source, "device": est.device, "overhead": est.meta.get("overhead", {})}
    out.meta["device"] = {
        "device": "cpu",
        "simulated": False,
        "threads": threads,
        "mode": "models",
        **machine_info(),
        "reference_ms": meta["device"].get("reference_ms"),
    }
    out.meta["overhead"] = fitted["overhead"]
    out.meta["adaptation"] = {
        "groups": fitted["groups"],
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "seed": seed,
        **{k: v for k, v in report.items() if k != "source"},
    }
    report["seconds"] = round(time.perf_counter() - start, 1)
    report["groups"] = fitted["groups"]
    return out, report
