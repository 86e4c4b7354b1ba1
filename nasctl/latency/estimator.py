"""LatencyEstimator: LightGBM regressors per kernel type, fitted on measurement CSVs.

* ``fit(table)``: one LightGBM model per kernel group (conv, dwconv, gconv, fc, pool, gap,
  se, eltwise, datamove, reshape) on log(latency_ms); k-fold cross-validation report per
  group; optional 10% / 90% quantile models for an uncertainty band; a roofline fallback
  (peak MAC rate, bandwidth and per-kernel overhead, read off the data) for kernel types
  without a model, never 0 ms; and, where the CSV holds whole-model rows, the per-model
  overhead ``total = a * sum(kernels) + b + c * n_kernels``, after the profiler's cost
  per onnxruntime node beyond a kernel's first is taken off the kernel times (where the
  CSV counts nodes). Where every row names its network, the network's weight size is
  one more feature (``net_weight_mib``: a small network stays in the CPU's caches).
* ``predict(kernels)`` / ``predict_many([kernels, ...])``: batch prediction, each kernel
  list one network.
* ``save(path)`` / ``load(path)``: JSON holding LightGBM *text* models, the schema version,
  feature names, training ranges, the CV report and the device metadata. No pickle.
  ``save`` gzips when the path ends in ``.gz`` (the shipped format, ``.xz`` for lzma), and
  leaves out the per-tree training statistics that prediction does not read (split gains,
  node counts, weights and internal values), about half the text; ``load`` reads plain,
  gzipped and xz files alike.
"""

from __future__ import annotations

import csv
import functools
import gzip
import json
import lzma
import math
import platform
import re
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from nasctl import __version__
from nasctl.errors import NasctlError
from nasctl.latency.features import (
    CONTEXT_FEATURES,
    FEATURES,
    MODEL_FEATURES,
    OP_GROUP,
    feature_matrix,
    kernel_row,
    kernels_weight_mib,
    network_weights,
    per_network,
    with_context,
    with_derived,
)
from nasctl.latency.kernels import Kernel

SCHEMA = "nasctl.estimator/1"
MIN_ROWS = 12
MODEL_OP = "model"  # whole-model rows in a measurement CSV


# ---------------------------------------------------------------------------------------
# Measurement tables
# ---------------------------------------------------------------------------------------
@dataclass
class MeasurementTable:
    """Rows of a measurement CSV: kernel rows (features + latency) and whole-model rows."""

    ops: list[str]
    X: np.ndarray
    y: np.ndarray  # latency_ms
    model_rows: list[dict[str, Any]] = field(default_factory=list)
    device: dict[str, Any] = field(default_factory=dict)
    model_ids: list[str] = field(default_factory=list)  # per kernel row: the network it was timed in
    # per kernel row: the onnxruntime nodes charged to it when profiled (NaN: not recorded)
    nodes: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.ops)

    def node_counts(self) -> np.ndarray:
        """Per kernel row, the profiled onnxruntime nodes it holds; NaN where unknown."""
        if self.nodes is None or len(self.nodes) != len(self.ops):
            return np.full(len(self.ops), np.nan)
        return np.asarray(self.nodes, dtype=float)

    def networks(self) -> list[str] | None:
        """The network of each kernel row, where every row records one (else None)."""
        ok = len(self.model_ids) == len(self.ops) and all(self.model_ids)
        return list(self.model_ids) if ok else None

    def subset(self, keep_ids: set[str]) -> MeasurementTable:
        """The rows (kernel and whole-model) of the networks named in ``keep_ids``."""
        idx = [i for i, m in enumerate(self.model_ids) if m in keep_ids]
        return MeasurementTable(
            [self.ops[i] for i in idx],
            self.X[idx],
            self.y[idx],
            [r for r in self.model_rows if r["model_id"] in keep_ids],
            self.device,
            [self.model_ids[i] for i in idx],
            self.node_counts()[idx],
        )


def read_measurements(paths: list[str | Path]) -> MeasurementTable:
    """Read and validate measurement CSVs (and their ``.json`` device sidecars)."""
    if not paths:
        raise NasctlError("give at least one measurements CSV")
    ops: list[str] = []
    ids: list[str] = []
    rows: list[list[float]] = []
    ys: list[float] = []
    nodes: list[float] = []
    model_rows: list[dict[str, float]] = []
    device: dict[str, Any] = {}
    for path in map(Path, paths):
        if not path.is_file():
            raise NasctlError(f"{path}: no such measurements file")
        with path.open(newline="") as fh:
            reader = csv.DictReader(fh)
            header = reader.fieldnames or []
            if not header:
                raise NasctlError(f"{path}: empty CSV (no header)")
            missing = [c for c in ("op", *FEATURES, "latency_ms") if c not in header]
            if missing:
                raise NasctlError(f"{path}: missing column{'s' if len(missing) > 1 else ''}: {', '.join(missing)}")
            n_before = len(ops) + len(model_rows)
            for line, row in enumerate(reader, start=2):
                try:
                    lat = float(row["latency_ms"])
                except (TypeError, ValueError):
                    raise NasctlError(f"{path}:{line}: latency_ms is not a number ({row['latency_ms']!r})") from None
                if not math.isfinite(lat):
                    raise NasctlError(f"{path}:{line}: latency_ms is NaN or infinite")
                if lat <= 0:
                    raise NasctlError(f"{path}:{line}: latency_ms must be positive (got {lat})")
                if row["op"] == MODEL_OP:
                    try:
                        model_rows.append(
                            {
                                "latency_ms": lat,
                                "kernel_sum_ms": float(row.get("kernel_sum_ms") or "nan"),
                                "n_kernels": float(row.get("n_kernels") or "nan"),
                                "n_nodes": float(row.get("n_nodes") or "nan"),
                                "model_id": f"{path}:{row.get('model_id') or ''}",
                            }
                        )
                    except ValueError:
                        raise NasctlError(f"{path}:{line}: bad kernel_sum_ms / n_kernels / n_nodes") from None
                    continue
                values = []
                for f in FEATURES:
                    try:
                        v = float(row[f])
                    except (TypeError, ValueError):
                        raise NasctlError(f"{path}:{line}: {f} is not a number ({row[f]!r})") from None
                    if not math.isfinite(v):
                        raise NasctlError(f"{path}:{line}: {f} is NaN or infinite")
                    values.append(v)
                try:
                    nodes.append(float(row.get("n_nodes") or "nan"))
                except ValueError:
                    raise NasctlError(f"{path}:{line}: n_nodes is not a number ({row['n_nodes']!r})") from None
                ops.append(row["op"])
                ids.append(f"{path}:{row.get('model_id') or ''}" if row.get("model_id") else "")
                rows.append(values)
                ys.append(lat)
            if len(ops) + len(model_rows) == n_before:
                raise NasctlError(f"{path}: no measurement rows")
        sidecar = path.with_suffix(".meta.json")
        if sidecar.is_file() and not device:
            try:
                device = json.loads(sidecar.read_text()).get("device", {})
            except (json.JSONDecodeError, AttributeError):
                device = {}
    X = np.array(rows, dtype=np.float64).reshape(len(rows), len(FEATURES))
    return MeasurementTable(ops, X, np.array(ys), model_rows, device, ids, np.array(nodes, dtype=float))


# onnxruntime's profiler adds a cost to every node it times, within the node's own time.
# Most CNN kernels are one node each, and for them the per-network overhead's cost per
# kernel takes it off. But an exported channel shuffle carries its shape arithmetic
# (Shape, Gather, Unsqueeze, Concat nodes), and an SE block or a hard-swish is several
# nodes: such a network's profiled node times sum to well above its unprofiled wall time.
# A cost per kernel cannot tell the two kinds apart; one per node beyond a kernel's first
# can.
MIN_NODE_FIT = 20  # networks with node counts needed to fit the cost
NODE_FLOOR = 0.1  # a kernel keeps at least this share of its profiled time


def _extra_nodes(table: MeasurementTable) -> np.ndarray:
    """Per kernel row, its profiled nodes beyond the first (0 where unknown)."""
    return np.maximum(np.nan_to_num(table.node_counts(), nan=1.0) - 1.0, 0.0)


def profiler_node_cost(table: MeasurementTable) -> dict[str, float]:
    """The profiler's cost per onnxruntime node beyond a kernel's first (ms), read off the
    whole-model rows: ``wall = a * (profiled kernel sum) + b + c * n_kernels + d *
    extra_nodes`` in relative error, cost ``-d / a`` (at least 0). ``{"per_extra_node_ms":
    0}`` when fewer than ``MIN_NODE_FIT`` networks have node counts (CSVs measured before
    they were recorded)."""
    counts = table.node_counts()
    if not np.isfinite(counts).any() or len(table.model_ids) != len(counts):
        return {"per_extra_node_ms": 0.0, "n": 0}
    known = {m for m, c in zip(table.model_ids, counts, strict=True) if math.isfinite(c)}
    extra = per_network(table.model_ids, _extra_nodes(table))
    rows = [
        r
        for r in table.model_rows
        if r["model_id"] in known and all(math.isfinite(r[k]) for k in ("kernel_sum_ms", "n_kernels"))
    ]
    if len(rows) < MIN_NODE_FIT:
        return {"per_extra_node_ms": 0.0, "n": len(rows)}
    A = np.array([[r["kernel_sum_ms"], 1.0, r["n_kernels"], extra[r["model_id"]]] for r in rows])
    y = np.array([r["latency_ms"] for r in rows])
    coef, *_ = np.linalg.lstsq(A / y[:, None], np.ones(len(y)), rcond=None)
    cost = float(max(0.0, -coef[3] / coef[0])) if coef[0] > 0 else 0.0
    return {"per_extra_node_ms": cost, "n": len(rows)}


def without_profiler_cost(table: MeasurementTable, per_extra_node_ms: float) -> MeasurementTable:
    """``table`` with ``per_extra_node_ms`` taken off every kernel row per profiled node it
    holds beyond its first (keeping at least ``NODE_FLOOR`` of its time), and each
    whole-model row's kernel sum lowered by what its kernel rows lost. Rows without node
    counts are left as they are."""
    if per_extra_node_ms <= 0:
        return table
    y = np.maximum(table.y - per_extra_node_ms * _extra_nodes(table), NODE_FLOOR * table.y)
    lost = per_network(table.model_ids, table.y - y)
    rows = [r | {"kernel_sum_ms": r["kernel_sum_ms"] - lost.get(r["model_id"], 0.0)} for r in table.model_rows]
    return MeasurementTable(table.ops, table.X, y, rows, table.device, table.model_ids, table.nodes)


# ---------------------------------------------------------------------------------------
# Metrics
# ---------------------------------------------------------------------------------------
def accuracy_metrics(pred: np.ndarray, true: np.ndarray) -> dict[str, float]:
    """RMSPE, MAPE, +-5/10/15% accuracy, Spearman rho (field-standard metrics)."""
    pred, true = np.asarray(pred, float), np.asarray(true, float)
    rel = (pred - true) / true
    out = {
        "n": int(len(true)),
        "rmspe": float(np.sqrt(np.mean(rel**2)) * 100),
        "mape": float(np.mean(np.abs(rel)) * 100),
        "acc5": float(np.mean(np.abs(rel) <= 0.05) * 100),
        "acc10": float(np.mean(np.abs(rel) <= 0.10) * 100),
        "acc15": float(np.mean(np.abs(rel) <= 0.15) * 100),
    }
    if len(true) > 2 and np.ptp(true) > 0 and np.ptp(pred) > 0:
        from scipy.stats import spearmanr

        out["spearman"] = float(spearmanr(pred, true).statistic)
    else:
        out["spearman"] = float("nan")
    return out


# ---------------------------------------------------------------------------------------
# The estimator
# ---------------------------------------------------------------------------------------
def _lgb_params(objective: str = "regression", alpha: float | None = None, seed: int = 0) -> dict:
    p = {
        "objective": objective,
        "learning_rate": 0.08,
        "num_leaves": 31,
        "min_data_in_leaf": 3,
        "feature_fraction": 0.9,
        "bagging_fraction": 0.9,
        "bagging_freq": 1,
        "lambda_l2": 1.0,
        "max_bin": 511,
        "verbose": -1,
        "num_threads": 1,
        "seed": seed,
        "deterministic": True,
        "force_row_wise": True,
    }
    if alpha is not None:
        p["alpha"] = alpha
    return p


N_ROUNDS = 350
# What the per-group analytic baseline reads (columns of ``MODEL_FEATURES``): the trees
# learn log(latency / baseline), so that a kernel larger than any in training is scaled
# by the baseline instead of held at the largest leaf.
# Every group has one but ``datamove`` (concat / split / shuffle / transpose / pad), whose
# cost follows memory layout more than these terms: its network-fold CV got worse with a
# baseline while the other groups' improved (``bench/estimator_baseline.py``).
BASELINE_TERMS = ("macs", "act_bytes", "params")
NO_BASELINE = frozenset({"datamove"})


def fit_baseline(X: np.ndarray, y: np.ndarray) -> dict[str, float]:
    """Non-negative ``const + sum(coef * term)`` (``BASELINE_TERMS``) fitted to
    ``exp(y)`` in relative error: the analytic part of a group's latency."""
    from scipy.optimize import nnls

    col = {f: j for j, f in enumerate(MODEL_FEATURES)}
    A = np.column_stack([np.ones(len(X))] + [X[:, col[t]] for t in BASELINE_TERMS])
    t = np.exp(y)
    scale = np.maximum(A.max(axis=0), 1e-12)
    coef, _ = nnls((A / scale) / t[:, None], np.ones(len(t)), maxiter=2000)
    coef = coef / scale
    if coef[0] <= 0:  # keep the baseline positive for a row whose terms are all 0
        coef[0] = float(np.quantile(t, 0.05)) * 1e-3
    return {"const": float(coef[0])} | {f: float(c) for f, c in zip(BASELINE_TERMS, coef[1:], strict=True)}


def baseline_log(base: dict[str, float] | None, X: np.ndarray) -> np.ndarray:
    """log of the baseline for model-feature rows ``X``; 0 (no baseline) for ``None``."""
    if not base:
        return np.zeros(len(X))
    col = {f: j for j, f in enumerate(MODEL_FEATURES)}
    v = base["const"] + sum(base[t] * X[:, col[t]] for t in BASELINE_TERMS)
    return np.log(np.maximum(v, 1e-9))


_GZIP_MAGIC, _XZ_MAGIC = b"\x1f\x8b", b"\xfd7zXZ\x00"
# per-tree lines of LightGBM's model text that only training, SHAP values and feature
# importances read: LightGBM fills them with zeros when they are absent
_TRAINING_STATS = ("split_gain", "internal_value", "internal_weight", "internal_count", "leaf_weight", "leaf_count")


def _prediction_only(model: str) -> str:
    """LightGBM model text without the per-tree training statistics, the feature importances
    computed from them, and the ``tree_sizes`` index of the trees' byte lengths (LightGBM
    then reads the trees one by one). Saving a loaded estimator again gives the same text."""
    head, sep, rest = model.partition("\nTree=")
    trees, end, tail = rest.partition("end of trees")
    head = "\n".join(ln for ln in head.split("\n") if not ln.startswith("tree_sizes="))
    trees = "\n".join(ln for ln in trees.split("\n") if ln.partition("=")[0] not in _TRAINING_STATS)
    tail = re.sub(r"(?m)^feature_importances:\n(?:.+\n)*", "feature_importances:\n", tail)
    return head + sep + trees + end + tail


def corrected(corrections: dict[str, dict[str, float]], group: str, ms: np.ndarray) -> np.ndarray:
    """Per-kernel-type correction fitted by ``nasctl measure --quick``:
    ``log ms' = shift + slope * log ms``, the group's or else the all-kernel (``*``) one;
    identity without either."""
    c = corrections.get(group) or corrections.get("*")
    if not c:
        return ms
    return np.exp(c["shift"] + c["slope"] * np.log(np.maximum(ms, 1e-9)))


def network_total(overhead: dict[str, float], kernel_sum: np.ndarray, n_kernels: np.ndarray) -> np.ndarray:
    """Whole-network latency from the kernels' sum: ``scale * sum + intercept + per_kernel *
    n_kernels`` (the fitted per-network overhead), never below half the sum."""
    o = overhead
    total = o.get("scale", 1.0) * kernel_sum + o.get("intercept_ms", 0.0) + o.get("per_kernel_ms", 0.0) * n_kernels
    return np.maximum(total, 0.5 * kernel_sum)


class LatencyEstimator:
    """Kernel list in, latency_ms out."""

    CACHE_SIZE = 200_000

    def __init__(self) -> None:
        self.boosters: dict[str, Any] = {}
        self.quantiles: dict[str, dict[str, Any]] = {}
        self.meta: dict[str, Any] = {}
        self._cache: dict[tuple, float] = {}  # (quantile, kernel key) -> ms: search repeats kernels a lot
        self.context = False  # whether the network's weight size is a feature (``net_weight_mib``)

    # ---- fitting ---------------------------------------------------------------------
    def fit(
        self,
        table: MeasurementTable,
        folds: int = 5,
        quantiles: bool = False,
        seed: int = 0,
        progress=None,
        no_baseline: frozenset[str] = NO_BASELINE,
        node_cost: bool = True,
        context: bool = True,
    ) -> LatencyEstimator:
        """One LightGBM regressor per kernel group on log(latency / the group's analytic
        baseline); the groups in ``no_baseline`` learn log latency itself. Where the CSV
        records profiled node counts, the profiler's cost per node beyond a kernel's first
        is taken off the kernel times first (``profiler_node_cost``; ``node_cost=False``
        leaves it on), so that the kernels learn what they cost unprofiled. Where every row
        names its network (and ``context``), the network's weight size is a feature too
        (``net_weight_mib``)."""
        from nasctl.latency._lgb import lightgbm as lgb

        if len(table) == 0:
            raise NasctlError("no kernel measurements to fit")
        node_cost = profiler_node_cost(table) if node_cost else {"per_extra_node_ms": 0.0, "n": 0}
        table = without_profiler_cost(table, node_cost["per_extra_node_ms"])
        groups = np.array([OP_GROUP.get(op, "unknown") for op in table.ops])
        self.boosters, self.quantiles = {}, {}
        report: dict[str, Any] = {}
        ranges: dict[str, Any] = {}
        baselines: dict[str, dict[str, float]] = {}
        names = list(MODEL_FEATURES)
        model_X = with_derived(table.X, table.ops)
        networks = table.networks()
        self.context = context and networks is not None
        if self.context:
            names = list(CONTEXT_FEATURES)
            model_X = with_context(model_X, network_weights(table.X, networks))
        for gname in sorted(set(groups) - {"unknown"}):
            idx = np.flatnonzero(groups == gname)
            if len(idx) < MIN_ROWS:
                continue
            X, y = model_X[idx], np.log(table.y[idx])
            if progress:
                progress(f"fitting {gname} ({len(idx)} rows)")
            if folds >= 2 and len(idx) >= 2 * folds:
                nets = [table.model_ids[i] for i in idx] if len(table.model_ids) == len(table) else None
                report[gname] = self._cross_validate(X, y, folds, seed, nets, gname not in no_baseline)
            else:
                report[gname] = {"n": len(idx)}
            # how much the group weighs: a kernel type of microsecond kernels can have a
            # large relative error and matter little to a network's total
            report[gname] |= {
                "median_ms": float(np.median(table.y[idx])),
                "time_share": float(table.y[idx].sum() / table.y.sum()),
            }
            if gname not in no_baseline:
                baselines[gname] = fit_baseline(X, y)
            ds = lgb.Dataset(X, y - baseline_log(baselines.get(gname), X), feature_name=names, free_raw_data=False)
            self.boosters[gname] = lgb.train(_lgb_params(seed=seed), ds, num_boost_round=N_ROUNDS)
            if quantiles:
                self.quantiles[gname] = {
                    q: lgb.train(_lgb_params("quantile", alpha, seed), ds, num_boost_round=N_ROUNDS // 3)
                    for q, alpha in (("q10", 0.1), ("q90", 0.9))
                }
            ranges[gname] = {f: [float(X[:, j].min()), float(X[:, j].max())] for j, f in enumerate(names)}
        if not self.boosters:
            raise NasctlError(f"too few measurements to fit any kernel model (need >= {MIN_ROWS} rows of a type)")
        self.meta = {
            "schema": SCHEMA,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "nasctl_version": __version__,
            "lightgbm_version": lgb.__version__,
            "device": table.device,
            "features": names,
            "target": "log(latency_ms)",
            "n_rows": int(len(table)),
            "rows_per_group": {g: int((groups == g).sum()) for g in sorted(set(groups))},
            "cv": report,
            "cv_overall": self._overall(report),
            "ranges": ranges,
            "roofline": self._fit_roofline(table),
            "overhead": self._fit_overhead(table) | {"profiler": node_cost},
            "baselines": baselines,
        }
        return self

    @staticmethod
    def _cross_validate(
        X: np.ndarray, y: np.ndarray, folds: int, seed: int, networks: list[str] | None = None, baseline: bool = False
    ) -> dict[str, float]:
        """k-fold CV on log latency. Where the rows name the network they were timed in
        (and there are at least ``folds`` networks, each fold leaving at least
        ``MIN_ROWS // 2`` rows to train on), folds split by network: kernels of one network
        are never both in training and scored (a kernel repeats across the blocks of a
        network, so random row folds would be optimistic)."""
        from nasctl.latency._lgb import lightgbm as lgb

        rng = np.random.default_rng(seed)
        named = networks is not None and all(networks) and len(set(networks)) >= folds
        assign = None
        if named:
            uniq = sorted(set(networks))
            fold_of = dict(zip(uniq, rng.permutation(len(uniq)) % folds, strict=True))
            by_net = np.array([fold_of[n] for n in networks])
            # a fold whose training part is tiny (one network holds most rows): rows, not networks
            if min(int((by_net != f).sum()) for f in range(folds)) >= MIN_ROWS // 2:
                assign = by_net
        if assign is None:
            assign = rng.permutation(len(y)) % folds
        pred = np.empty_like(y)
        for f in range(folds):
            test = np.flatnonzero(assign == f)
            train = np.flatnonzero(assign != f)
            base = fit_baseline(X[train], y[train]) if baseline else None
            b = lgb.train(
                _lgb_params(seed=seed),
                lgb.Dataset(X[train], y[train] - baseline_log(base, X[train])),
                num_boost_round=N_ROUNDS,
            )
            pred[test] = b.predict(X[test], num_threads=1) + baseline_log(base, X[test])
        return accuracy_metrics(np.exp(pred), np.exp(y)) | {"mae_ms": float(np.mean(np.abs(np.exp(pred) - np.exp(y))))}

    @staticmethod
    def _overall(report: dict[str, Any]) -> dict[str, float]:
        keys = ("rmspe", "mape", "acc5", "acc10", "acc15")
        rows = [r for r in report.values() if "mape" in r]
        n = sum(r["n"] for r in rows)
        if not n:
            return {}
        return {k: float(sum(r[k] * r["n"] for r in rows) / n) for k in keys} | {"n": n}

    @staticmethod
    def _fit_roofline(table: MeasurementTable) -> dict[str, float]:
        col = {f: j for j, f in enumerate(FEATURES)}
        ops = np.array(table.ops)
        lat = table.y
        macs, nbytes = table.X[:, col["macs"]], table.X[:, col["bytes"]]
        compute = np.isin(ops, ["conv", "gconv", "fc"]) & (macs > 0)
        memory = np.isin(ops, ["add", "mul", "act", "concat", "split", "shuffle", "transpose", "pad"]) & (nbytes > 0)
        small = lat <= np.quantile(lat, 0.2) if len(lat) else lat
        return {
            "macs_per_ms": float(np.quantile(macs[compute] / lat[compute], 0.9)) if compute.any() else 1e9,
            "bytes_per_ms": float(np.quantile(nbytes[memory] / lat[memory], 0.9)) if memory.any() else 1e9,
            "overhead_ms": float(np.quantile(lat[small], 0.5)) if len(lat) else 0.005,
        }

    @staticmethod
    def _fit_overhead(table: MeasurementTable) -> dict[str, float]:
        """Per-network runtime overhead: ``wall = a * sum(kernel times) + b + c * n_kernels``,
        fitted on the CSV's networks with their *measured* kernel sums (profiled node times
        miss the session's own cost and include the profiler's per-node cost). Fitting on
        out-of-fold *predicted* sums was tried and is worse: a few random networks with
        badly predicted kernels drag the least-squares fit (scale 0.65, MAPE 36%)."""
        rows = [r for r in table.model_rows if math.isfinite(r["kernel_sum_ms"]) and math.isfinite(r["n_kernels"])]
        if len(rows) < 5:
            return {"scale": 1.0, "intercept_ms": 0.0, "per_kernel_ms": 0.0, "n": len(rows)}
        A = np.array([[r["kernel_sum_ms"], 1.0, r["n_kernels"]] for r in rows])
        y = np.array([r["latency_ms"] for r in rows])
        w = 1.0 / y  # relative error matters
        coef, *_ = np.linalg.lstsq(A * w[:, None], y * w, rcond=None)
        return {
            "scale": float(coef[0]),
            "intercept_ms": float(coef[1]),
            "per_kernel_ms": float(coef[2]),
            "n": len(rows),
            "fit": accuracy_metrics(A @ coef, y),
        }

    # ---- prediction ------------------------------------------------------------------
    def roofline_ms(self, k: Kernel) -> float:
        r = self.meta.get("roofline", {"macs_per_ms": 1e9, "bytes_per_ms": 1e9, "overhead_ms": 0.005})
        return max(k.macs / r["macs_per_ms"], k.bytes / r["bytes_per_ms"]) + r["overhead_ms"]

    def predict_kernels(
        self, kernels: list[Kernel], quantile: str | None = None, nets: np.ndarray | None = None
    ) -> np.ndarray:
        """Per-kernel latency_ms (``quantile``: 'q10' / 'q90' for the band, where fitted).
        ``nets``: each kernel's ``net_weight_mib`` (by default, ``kernels`` are one network).
        Predictions are memoised by kernel identity: only unseen kernels reach LightGBM."""
        out = np.empty(len(kernels))
        if not kernels:
            return out
        if not self.context:
            nets = np.zeros(len(kernels))
        elif nets is None:
            nets = np.full(len(kernels), kernels_weight_mib(kernels))
        nets = np.asarray(nets, dtype=float)
        keys = [(quantile, k.key(), k.batch, k.onnx_op, float(n)) for k, n in zip(kernels, nets, strict=True)]
        cache = self._cache
        miss: dict[tuple, int] = {}
        for i, key in enumerate(keys):
            hit = cache.get(key)
            if hit is None:
                miss.setdefault(key, i)
            else:
                out[i] = hit
        if miss:
            todo = list(miss.values())
            fresh = [kernels[i] for i in todo]
            X = feature_matrix(fresh)
            if self.context:
                X = with_context(X, nets[todo])
            groups = np.array([OP_GROUP.get(k.op, "unknown") for k in fresh])
            pred = np.empty(len(fresh))
            for g in set(groups):
                idx = np.flatnonzero(groups == g)
                booster = self.boosters.get(g)
                if quantile and g in self.quantiles:
                    booster = self.quantiles[g][quantile]
                if booster is None:
                    pred[idx] = [self.roofline_ms(fresh[i]) for i in idx]
                else:
                    pred[idx] = np.exp(booster.predict(X[idx], num_threads=1) + self._baseline(g, X[idx]))
                pred[idx] = self._adapted(g, pred[idx])
            if len(cache) + len(todo) > self.CACHE_SIZE:
                cache.clear()
            for key, value in zip(miss, pred, strict=True):
                cache[key] = float(value)
            for i, key in enumerate(keys):
                if key in miss:
                    out[i] = cache[key]
        return out

    def _baseline(self, group: str, X: np.ndarray) -> np.ndarray:
        return baseline_log(self.meta.get("baselines", {}).get(group), X)

    def _adapted(self, group: str, ms: np.ndarray) -> np.ndarray:
        """The ``measure --quick`` correction, where the estimator was adapted."""
        return corrected(self.meta.get("adaptation", {}).get("groups", {}), group, ms)

    def predict_rows(
        self, ops: list[str], X: np.ndarray, adapted: bool = True, networks: list[str] | None = None
    ) -> np.ndarray:
        """Per-row latency_ms of a measurement table's kernel rows (``ops``, base features
        ``X``, ``networks`` the network of each row; by default, one network), no cache;
        ``adapted=False`` leaves out a ``measure --quick`` correction."""
        model_X = with_derived(X, ops)
        if self.context:
            nets = network_weights(X, networks or [""] * len(ops))
            model_X = with_context(model_X, nets)
        groups = np.array([OP_GROUP.get(op, "unknown") for op in ops])
        col = {f: j for j, f in enumerate(FEATURES)}
        r = self.meta.get("roofline", {"macs_per_ms": 1e9, "bytes_per_ms": 1e9, "overhead_ms": 0.005})
        out = np.empty(len(ops))
        for g in set(groups):
            idx = np.flatnonzero(groups == g)
            booster = self.boosters.get(g)
            if booster is None:
                out[idx] = (
                    np.maximum(X[idx, col["macs"]] / r["macs_per_ms"], X[idx, col["bytes"]] / r["bytes_per_ms"])
                    + r["overhead_ms"]
                )
            else:
                out[idx] = np.exp(booster.predict(model_X[idx], num_threads=1) + self._baseline(g, model_X[idx]))
            if adapted:
                out[idx] = self._adapted(g, out[idx])
        return out

    def _total(self, kernel_sum: np.ndarray, n_kernels: np.ndarray) -> np.ndarray:
        return network_total(self.meta.get("overhead", {}), kernel_sum, n_kernels)

    def predict(self, kernels: list[Kernel]) -> float:
        return float(self.predict_many([kernels])[0])

    def predict_many(self, models: list[list[Kernel]]) -> np.ndarray:
        """Whole-model latency_ms for many kernel lists at once (one LightGBM call per group)."""
        flat = [k for ks in models for k in ks]
        nets = None
        if self.context:
            nets = np.concatenate([np.full(len(ks), kernels_weight_mib(ks)) for ks in models] or [np.zeros(0)])
        per = self.predict_kernels(flat, nets=nets)
        bounds = np.cumsum([0] + [len(ks) for ks in models])
        sums = np.add.reduceat(per, bounds[:-1]) if flat else np.zeros(len(models))
        sums = np.where(np.diff(bounds) == 0, 0.0, sums)
        return self._total(sums, np.diff(bounds).astype(float))

    def warnings(self, kernels: list[Kernel]) -> list[str]:
        """One line per cause of doubt in the estimate of ``kernels`` (the ``warning`` of
        each of ``warning_rows``): kernel types without a latency model and ONNX ops the
        kernel IR does not recognise (both given the roofline estimate), and features
        outside the training ranges, each with its kernel count and share of the time."""
        return [row["warning"] for row in self.warning_rows(kernels)]

    def warning_rows(self, kernels: list[Kernel]) -> list[dict[str, Any]]:
        """The causes of doubt in the estimate of ``kernels``, one row each: ``warning``
        (one line saying it all), ``cause`` (the same without the figures, for a table),
        ``kernels`` (how many kernels it concerns) and ``share`` (their part of the summed
        kernel estimates, 0 to 1). In this order, where present: kernel types with no
        latency model (roofline estimate), ONNX ops the kernel IR does not recognise
        (roofline estimate), features outside a model's training range (HW, channels,
        kernel size, batch)."""
        if not kernels:
            return []
        ms = self.predict_kernels(kernels)
        total = float(ms.sum())
        no_model: dict[str, list[int]] = {}
        unknown: dict[str, list[int]] = {}
        outside: dict[str, list[tuple[int, float]]] = {}  # "group.feature" -> (kernel, value)
        all_ranges = self.meta.get("ranges", {})
        for i, k in enumerate(kernels):
            g = OP_GROUP.get(k.op, "unknown")
            if g not in self.boosters:
                if k.op == "unknown":
                    unknown.setdefault(k.onnx_op or "?", []).append(i)
                else:
                    no_model.setdefault(k.op, []).append(i)
                continue
            ranges = all_ranges.get(g, {})
            feats = kernel_row(k)
            for f in ("hw", "cin", "cout", "kernel", "batch"):
                lo, hi = ranges.get(f, (-math.inf, math.inf))
                if not lo <= feats[f] <= hi:
                    outside.setdefault(f"{g}.{f}", []).append((i, float(feats[f])))

        def count(n: int) -> str:
            return f"{n} kernel{'' if n == 1 else 's'}"

        def row(idx: set[int], cause: str, text: str) -> dict[str, Any]:
            """The row for the kernels ``idx``; ``{pct}`` in ``text``: their share of the time."""
            share = float(ms[sorted(idx)].sum()) / total if total > 0 else 0.0
            pct = "<1%" if 0 < share < 0.005 else f"{share:.0%}"
            return {"warning": text.replace("{pct}", pct), "cause": cause, "kernels": len(idx), "share": share}

        rows = []
        if no_model:
            idx = {i for v in no_model.values() for i in v}
            types = ("types " if len(no_model) > 1 else "type ") + ", ".join(sorted(no_model))
            cause = f"roofline estimate (no latency model) for kernels of {types}"
            text = (
                f"roofline estimate (no latency model) for {count(len(idx))} of {types}: {{pct}} of the estimated time"
            )
            rows.append(row(idx, cause, text))
        if unknown:
            idx = {i for v in unknown.values() for i in v}
            what = f"ONNX ops the kernel IR does not recognise ({', '.join(sorted(unknown))})"
            text = f"roofline estimate for {count(len(idx))} of {what}: {{pct}} of the estimated time"
            rows.append(row(idx, f"roofline estimate for {what}", text))
        if outside:
            idx = {i for hits in outside.values() for i, _ in hits}
            parts = []
            for key in sorted(outside):
                hits = outside[key]
                group, _, feature = key.partition(".")
                lo, hi = all_ranges[group][feature]
                vmin, vmax = min(v for _, v in hits), max(v for _, v in hits)
                values = f"{vmin:g}" if vmin == vmax else f"{vmin:g}..{vmax:g}"
                parts.append(f"{key} ({count(len({i for i, _ in hits}))}: {values}, trained {lo:g}..{hi:g})")
            cause = "features outside the training range: " + ", ".join(parts)
            text = f"features outside the training range in {count(len(idx))}, {{pct}} of the estimated time: "
            rows.append(row(idx, cause, text + ", ".join(parts)))
        return rows

    # ---- persistence -----------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        def text(b) -> str:
            return _prediction_only(b.model_to_string())

        return {
            **self.meta,
            "models": {g: text(b) for g, b in self.boosters.items()},
            "quantile_models": {g: {q: text(b) for q, b in qs.items()} for g, qs in self.quantiles.items()},
        }

    def save(self, path: str | Path) -> Path:
        """Write JSON; gzipped if ``path`` ends in ``.gz``, xz if in ``.xz`` (same bytes for the same estimator)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        raw = json.dumps(self.to_dict()).encode()
        if path.suffix == ".gz":
            raw = gzip.compress(raw, compresslevel=9, mtime=0)
        elif path.suffix == ".xz":
            raw = lzma.compress(raw, preset=9)
        path.write_bytes(raw)
        return path

    @classmethod
    def load(cls, path: str | Path) -> LatencyEstimator:
        from nasctl.latency._lgb import lightgbm as lgb

        path = Path(path)
        if not path.is_file():
            raise NasctlError(f"{path}: no such estimator file")
        raw = path.read_bytes()
        try:
            if raw.startswith(_GZIP_MAGIC):
                raw = gzip.decompress(raw)
            elif raw.startswith(_XZ_MAGIC):
                raw = lzma.decompress(raw)
        except (OSError, EOFError, zlib.error, lzma.LZMAError) as exc:
            raise NasctlError(f"{path}: corrupt compressed estimator file ({exc})") from None
        try:
            data = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise NasctlError(f"{path}: not an estimator file (not JSON)") from None
        if not isinstance(data, dict) or "schema" not in data:
            raise NasctlError(f"{path}: not an estimator file (no schema field)")
        schema = data["schema"]
        if not str(schema).startswith("nasctl.estimator/"):
            raise NasctlError(f"{path}: not an estimator file (schema {schema!r})")
        if schema != SCHEMA:
            raise NasctlError(f"{path}: estimator schema {schema!r} is not supported by this nasctl (reads {SCHEMA})")
        if data.get("features") not in (list(MODEL_FEATURES), list(CONTEXT_FEATURES)):
            raise NasctlError(f"{path}: estimator feature list differs from this nasctl's; refit it")
        est = cls()
        est.context = data["features"] == list(CONTEXT_FEATURES)
        try:
            est.boosters = {g: lgb.Booster(model_str=s) for g, s in data.pop("models").items()}
            est.quantiles = {
                g: {q: lgb.Booster(model_str=s) for q, s in qs.items()}
                for g, qs in data.pop("quantile_models", {}).items()
            }
        except (lgb.basic.LightGBMError, KeyError, AttributeError) as exc:
            raise NasctlError(f"{path}: corrupt estimator models ({str(exc).splitlines()[0]})") from None
        base = data.get("baselines", {})
        keys = {"const", *BASELINE_TERMS}
        if not isinstance(base, dict) or not all(
            isinstance(b, dict) and set(b) == keys and all(isinstance(v, int | float) for v in b.values())
            for b in base.values()
        ):
            raise NasctlError(f"{path}: corrupt estimator baselines (each needs numeric {', '.join(sorted(keys))})")
        est.meta = data
        return est

    @property
    def device(self) -> dict[str, Any]:
        return self.meta.get("device", {})


@functools.lru_cache(maxsize=1)
def _cpuinfo() -> dict[str, str]:
    """The first processor's fields of /proc/cpuinfo (empty where there is none)."""
    out: dict[str, str] = {}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if not line.strip():
                break
            key, _, value = line.partition(":")
            out[key.strip()] = value.strip()
    except OSError:
        pass
    return out


def machine_info() -> dict[str, Any]:
    """CPU model (name, and vendor / family / model / stepping where the name is generic, as
    on virtual machines), clock (MHz as reported), cores, platform and onnxruntime: recorded
    with every measurement, and compared with an estimator's by ``machine_mismatch``."""
    import os

    info = _cpuinfo()
    cpu = info.get("model name") or platform.processor() or ""
    ident = "/".join(info.get(k, "?") for k in ("vendor_id", "cpu family", "model", "stepping")) if info else None
    mhz = info.get("cpu MHz")
    try:
        import onnxruntime

        runtime = f"onnxruntime {onnxruntime.__version__}"
    except ImportError:  # pragma: no cover - a dependency
        runtime = None
    return {
        "cpu": cpu,
        "cpu_id": ident,
        "cpu_mhz": round(float(mhz)) if mhz else None,
        "cores": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "runtime": runtime,
    }


def _names_a_model(cpu: str) -> bool:
    """Whether a CPU name carries a model number (``AMD EPYC 7763``), unlike the generic
    names virtual machines report (``AMD EPYC``, ``Intel(R) Xeon(R) Processor``)."""
    return any(ch.isdigit() for ch in cpu)


def machine_mismatch(device: dict[str, Any], here: dict[str, Any] | None = None) -> str | None:
    """One line saying how this machine differs from the one an estimator was measured on
    (CPU model, or CPU family / model / stepping where both recorded it, or onnxruntime
    version), or None when it matches or the estimator is for a simulated device. Latency
    on another CPU can be off by tens of percent: fit an estimator here instead."""
    if not device or device.get("simulated"):
        return None
    here = here or machine_info()
    diffs = []
    if device.get("cpu") and here.get("cpu") and device["cpu"] != here["cpu"]:
        diffs.append(f"CPU {device['cpu']!r}, this one {here['cpu']!r}")
    elif device.get("cpu_id") and here.get("cpu_id") and device["cpu_id"] != here["cpu_id"]:
        diffs.append(f"CPU id {device['cpu_id']}, this one {here['cpu_id']}")
    elif device.get("cpu") and not device.get("cpu_id") and here.get("cpu_id") and not _names_a_model(device["cpu"]):
        # a virtual machine's name without a model number (``AMD EPYC``) is shared by CPUs
        # that run the same kernels at very different speeds, and without the estimator's
        # vendor / family / model / stepping nothing says they are the same
        diffs.append(f"CPU recorded only as {device['cpu']!r}, a name many models share; this one is {here['cpu_id']}")
    theirs, ours = device.get("runtime"), here.get("runtime")
    if theirs and ours and theirs != ours:
        diffs.append(f"{theirs}, this one {ours}")
    if not diffs:
        return None
    return (
        "this estimator was measured on another machine ("
        + "; ".join(diffs)
        + "): its latencies can be off by tens of percent here; adapt it in 90 s (nasctl measure --quick) "
        "or fit one on this machine (nasctl measure, then nasctl fit-estimator)"
    )
