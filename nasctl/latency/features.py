"""Kernel -> feature vector (one fixed column list for every kernel type).

nn-Meter's per-kernel features (HW, CIN, COUT, KS, stride, FLOPs, params) plus what a
runtime or accelerator also cares about: groups, fused activation and residual, bytes
moved, and channel counts padded to common SIMD / array widths (8, 16, 32), which let
the trees see alignment steps directly.
"""

from __future__ import annotations

import numpy as np

from nasctl.latency.kernels import BYTES_PER_ELEMENT as BYTES
from nasctl.latency.kernels import KERNEL_OPS, Kernel

ACT_CODES = {
    "": 0,
    "relu": 1,
    "relu6": 2,
    "hswish": 3,
    "sigmoid": 4,
    "hsigmoid": 5,
    "silu": 6,
    "tanh": 7,
    "lrelu": 8,
    "clip": 9,
    "elu": 10,
    "softplus": 11,
    "gelu": 12,
    "exp": 13,
    "log": 14,
    "sqrt": 15,
    "reciprocal": 16,
    "neg": 17,
    "abs": 18,
    "erf": 19,
    "pow": 20,
}
FEATURES = (
    "batch",
    "cin",
    "cout",
    "hw",
    "out_hw",
    "kernel",
    "stride",
    "groups",
    "act",
    "residual",
    "n_inputs",
    "hidden",
    "macs",
    "params",
    "bytes",
    "in_elements",
    "out_elements",
    "cin_pad8",
    "cout_pad8",
    "cin_pad16",
    "cout_pad16",
    "cin_pad32",
    "cout_pad32",
)
# Computed from the CSV's columns (and the op) when fitting and predicting, not stored in
# the CSV, so that measurements taken by older versions stay usable:
# * how far channel counts are off the 8-wide SIMD blocking onnxruntime's NCHWc path uses;
# * the op within its group (max / average pool, concat / split / shuffle / transpose /
#   pad, add / mul / act share one regressor each);
# * what explains memory-bound kernels: activation bytes moved (inputs and output, weights
#   apart), arithmetic intensity (MACs per byte), the reduction depth per output
#   (MACs per output element) and the channels per group.
DERIVED = (
    "cin_mod8",
    "cout_mod8",
    "aligned8",
    "op_code",
    "act_bytes",
    "intensity",
    "macs_per_out",
    "cin_per_group",
    "cout_per_group",
)
# Codes for the op feature: positions in ``KERNEL_OPS``, which only ever grows at its end
# (fitted estimators hold these codes).
OP_CODES = {op: i for i, op in enumerate(KERNEL_OPS)}
MODEL_FEATURES = FEATURES + DERIVED
# The network a kernel runs in, as one more column where the rows say which network they
# were timed in: the total size of its weights (MiB, rounded to 1/8 of a power of two).
# A CPU keeps a small network's whole working set in its caches from one run to the next,
# and the same kernel then runs faster than inside a large network that evicts it.
# Estimators fitted without it (older files, CSVs without network ids) keep
# ``MODEL_FEATURES``.
CONTEXT = ("net_weight_mib",)
CONTEXT_FEATURES = MODEL_FEATURES + CONTEXT
# Columns of a measurement CSV besides the features.
KERNEL_COLUMNS = ("op",) + FEATURES
# Which regressor serves which kernel type.
OP_GROUP = {
    "conv": "conv",
    "dwconv": "dwconv",
    "gconv": "gconv",
    "fc": "fc",
    "maxpool": "pool",
    "avgpool": "pool",
    "gap": "gap",
    "se": "se",
    "add": "eltwise",
    "mul": "eltwise",
    "act": "eltwise",
    "concat": "datamove",
    "split": "datamove",
    "shuffle": "datamove",
    "transpose": "datamove",
    "pad": "datamove",
    "reshape": "reshape",
    "matmul": "matmul",
    "norm": "norm",
    "softmax": "norm",
    "reduce": "norm",
}


def _pad(c: int, n: int) -> int:
    return -(-c // n) * n


def kernel_row(k: Kernel) -> dict[str, float | int | str]:
    return {
        "op": k.op,
        "batch": k.batch,
        "cin": k.cin,
        "cout": k.cout,
        "hw": k.hw,
        "out_hw": k.out_hw,
        "kernel": k.kernel,
        "stride": k.stride,
        "groups": k.groups,
        "act": ACT_CODES.get(k.act, 0),
        "residual": int(k.residual),
        "n_inputs": k.n_inputs,
        "hidden": k.hidden,
        "macs": k.macs,
        "params": k.params,
        "bytes": k.bytes,
        "in_elements": k.in_elements,
        "out_elements": k.out_elements,
        "cin_pad8": _pad(k.cin, 8),
        "cout_pad8": _pad(k.cout, 8),
        "cin_pad16": _pad(k.cin, 16),
        "cout_pad16": _pad(k.cout, 16),
        "cin_pad32": _pad(k.cin, 32),
        "cout_pad32": _pad(k.cout, 32),
    }


def with_derived(X: np.ndarray, ops: list[str] | np.ndarray) -> np.ndarray:
    """Base feature matrix (columns ``FEATURES``) and each row's op -> model matrix
    (``MODEL_FEATURES``)."""
    col = {f: X[:, j] for j, f in enumerate(FEATURES)}
    cin, cout, groups = col["cin"], col["cout"], np.maximum(col["groups"], 1)
    act_bytes = BYTES * (col["in_elements"] * np.maximum(col["n_inputs"], 1) + col["out_elements"])
    extra = np.stack(
        [
            cin % 8,
            cout % 8,
            ((cin % 8 == 0) & (cout % 8 == 0)).astype(float),
            np.array([OP_CODES.get(str(o), -1) for o in ops], dtype=float).reshape(len(X)),
            act_bytes,
            col["macs"] / np.maximum(col["bytes"], 1.0),
            col["macs"] / np.maximum(col["out_elements"], 1.0),
            cin / groups,
            cout / groups,
        ],
        axis=1,
    ).reshape(len(X), len(DERIVED))
    return np.hstack([X, extra])


def feature_matrix(kernels: list[Kernel]) -> np.ndarray:
    """Model feature matrix (``MODEL_FEATURES``) of a kernel list."""
    rows = [kernel_row(k) for k in kernels]
    base = np.array([[r[f] for f in FEATURES] for r in rows], dtype=np.float64).reshape(len(rows), len(FEATURES))
    return with_derived(base, [k.op for k in kernels])


def per_network(ids: list[str], values: np.ndarray) -> dict[str, float]:
    """``values`` (one per kernel row) summed per network id."""
    out: dict[str, float] = {}
    for m, v in zip(ids, values, strict=True):
        out[m] = out.get(m, 0.0) + float(v)
    return out


def net_weight_mib(params: float) -> float:
    """A network's weights (``params`` elements in all) in MiB, rounded to 1/8 of a power
    of two, so that networks of about the same size share cached predictions."""
    mib = max(float(params) * BYTES / 2**20, 1 / 64)
    return float(2 ** (round(np.log2(mib) * 8) / 8))


def kernels_weight_mib(kernels: list[Kernel]) -> float:
    """``net_weight_mib`` of the network made of ``kernels``."""
    return net_weight_mib(sum(k.params for k in kernels))


def network_weights(X: np.ndarray, networks: list[str]) -> np.ndarray:
    """Per kernel row of the base feature matrix ``X`` (columns ``FEATURES``),
    ``net_weight_mib`` of the network it belongs to (``networks``: each row's)."""
    totals = per_network(networks, X[:, FEATURES.index("params")])
    by_net = {n: net_weight_mib(t) for n, t in totals.items()}
    return np.array([by_net[n] for n in networks], dtype=float)


def with_context(model_X: np.ndarray, nets: np.ndarray) -> np.ndarray:
    """``model_X`` (columns ``MODEL_FEATURES``) with the network column -> ``CONTEXT_FEATURES``."""
    return np.hstack([model_X, np.asarray(nets, dtype=float).reshape(len(model_X), 1)])
