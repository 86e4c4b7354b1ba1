"""``nasctl measure``: time kernels on a device and write a measurements CSV.

``--device cpu`` (onnxruntime, CPU execution provider, full graph optimisations, pinned
thread count). Two modes, both writing the same columns:

* ``models`` (default): kernels timed *in context*. A network (a shipped-space sample, a
  random zoo-like CNN, or a variant of a standard network: ``STREAM_SHARES``) is
  exported to ONNX and run with onnxruntime's profiler. Each profiled node maps back to
  the IR kernel it belongs to through its node or tensor name (fused nodes are named
  after the last tensor they absorbed; NCHWc layout reorders are charged to the next
  kernel). A kernel's latency is its median over the runs. The whole network's
  wall-clock median, without the profiler, in runs alternating with the profiled ones,
  is recorded too, as an ``op=model`` row, so that the estimator can learn the
  per-model overhead. Every row also counts the onnxruntime nodes it was profiled as
  (``n_nodes``): the profiler costs something per node, which the fit takes off.

A shared machine is noisy. Repeats adapt until each median is known to 2%; a fixed
reference network timed before and after every network tracks the machine's speed: the
rows are rescaled to the run's median speed at the end, a network during which the speed
changed is measured again, and the reference's spread is the machine's noise figure
(``NoiseMonitor``).
* ``kernels``: each kernel alone in a one-layer network, timed by wall clock.

``--device sim-npu`` gives every kernel the latency of the documented simulator
(``nasctl.latency.simulator``). It is deterministic and labelled simulated everywhere.
"""

from __future__ import annotations

import csv
import json
import statistics
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from nasctl import __version__
from nasctl.errors import NasctlError
from nasctl.latency.estimator import MODEL_OP, machine_info
from nasctl.latency.features import FEATURES, kernel_row
from nasctl.latency.kernels import Kernel, kernels_from_arch, kernels_from_onnx
from nasctl.latency.simulator import SimNPU
from nasctl.nn.export import export_module
from nasctl.resources import search_spaces_dir

CSV_COLUMNS = (
    "op",
    *FEATURES,
    "latency_ms",
    "latency_std_ms",
    "latency_p10_ms",
    "latency_p90_ms",
    "latency_raw_ms",
    "n_repeats",
    "reference_ms",
    "source",
    "model_id",
    "onnx_op",
    "kernel_sum_ms",
    "n_kernels",
    "n_nodes",
)
FAIL_FAST = 20  # stop early when the first this many networks all fail to export
DEFAULT_SPACES = ("mobilenetv2_32.yaml", "mobilenetv2_32_uncurated.yaml", "mobilenetv2_224.yaml")


# ---------------------------------------------------------------------------------------
# onnxruntime timing
# ---------------------------------------------------------------------------------------
def _session(path: Path, threads: int, profile: bool = False, prefix: str = ""):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.log_severity_level = 3
    if profile:
        so.enable_profiling = True
        so.profile_file_prefix = prefix
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def _input_for(sess) -> dict[str, np.ndarray]:
    inp = sess.get_inputs()[0]
    shape = [d if isinstance(d, int) and d > 0 else 1 for d in inp.shape]
    return {inp.name: np.random.default_rng(0).standard_normal(shape).astype(np.float32)}


# Adaptive repeats: runs are taken in chunks until the 95% confidence interval of the
# median (from order statistics, so robust to outliers) is within TARGET_CI of it, or a
# run / time cap is hit. A measure run's budget buys more distinct networks with a short
# cap: on a 2-core VM, 1% within 2 s left 165 networks in 600 s, most at the cap.
TARGET_CI = 0.02
NETWORK_MAX_S = 0.8
CHUNK = 10


def median_ci(times: np.ndarray) -> float:
    """Half-width of the distribution-free 95% confidence interval of the median (order
    statistics n/2 -+ 0.98 sqrt(n)), relative to the median."""
    x = np.sort(np.asarray(times, dtype=float))
    n = len(x)
    if n < 5:
        return float("inf")
    half = 0.98 * np.sqrt(n)
    lo, hi = int(np.floor(n / 2 - half)), int(np.ceil(n / 2 + half)) - 1
    lo, hi = max(lo, 0), min(hi, n - 1)
    med = float(np.median(x))
    return float((x[hi] - x[lo]) / 2 / med) if med > 0 else float("inf")


def timed_runs(
    sess,
    feed,
    target_ci: float = TARGET_CI,
    min_runs: int = 10,
    max_runs: int = 300,
    max_s: float = 1.0,
) -> np.ndarray:
    """Per-run wall-clock times (ms) of ``sess.run``, as many as the median's confidence
    interval needs (``target_ci``, relative half-width), between ``min_runs`` and
    ``max_runs`` and stopping after ``max_s`` seconds."""
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < max_runs:
        for _ in range(min(CHUNK, max_runs - len(times))):
            t = time.perf_counter()
            sess.run(None, feed)
            times.append((time.perf_counter() - t) * 1e3)
        if len(times) >= min_runs and (median_ci(np.array(times)) <= target_ci or time.perf_counter() - start >= max_s):
            break
    return np.array(times)


def spread(times: np.ndarray) -> tuple[float, float]:
    """(p10, p90) of the run times."""
    return float(np.quantile(times, 0.1)), float(np.quantile(times, 0.9))


def time_onnx_runs(
    path: str | Path, threads: int = 1, warmup: int = 5, target_ci: float = TARGET_CI, max_s: float = 1.0
) -> np.ndarray:
    """Per-run wall-clock times (ms) of a whole ONNX model, adaptive repeats."""
    sess = _session(Path(path), threads)
    feed = _input_for(sess)
    for _ in range(warmup):
        sess.run(None, feed)
    return timed_runs(sess, feed, target_ci, max_s=max_s)


def time_onnx(
    path: str | Path, threads: int = 1, warmup: int = 5, target_ci: float = TARGET_CI, max_s: float = 1.0
) -> tuple[float, float, int]:
    """Wall-clock latency of a whole ONNX model: (median_ms, std_ms, runs). Runs repeat
    until the median's 95% confidence interval is within ``target_ci`` (relative) or
    ``max_s`` seconds have passed (at least 10 runs)."""
    times = time_onnx_runs(path, threads, warmup, target_ci, max_s)
    return float(np.median(times)), float(np.std(times)), len(times)


def node_name_candidates(event_name: str) -> tuple[str, ...]:
    """The ONNX node or tensor names a profiled node may be named after, most likely first.
    onnxruntime names a node it rewrote after what it came from: ``X_nchwc`` (NCHWc
    layout: X is the output tensor), ``X_bn_nchwc`` (a batch norm standing alone, run as
    an NCHWc conv), ``fused X`` (a Gemm + activation fused: X is the Gemm node) and
    ``X/QuickGeluFusion/`` (x * sigmoid(x) fused: X is the Mul node)."""
    base = event_name.removesuffix("_kernel_time").removeprefix("fused ")
    stem = base.removesuffix("_nchwc")
    cands = [base, stem, base.removesuffix("_output_0_nchwc"), stem.removesuffix("_bn")]
    if base.endswith("/"):
        cands.append(base[:-1].rpartition("/")[0])
    return tuple(dict.fromkeys(cands))


def profile_kernels(
    path: str | Path,
    kernels: list[Kernel],
    threads: int = 1,
    warmup: int = 5,
    target_ci: float = TARGET_CI,
    max_s: float = NETWORK_MAX_S,
    tmpdir: str | None = None,
    max_runs: int = 300,
) -> tuple[np.ndarray, np.ndarray, int, float, np.ndarray, np.ndarray, np.ndarray]:
    """Per-kernel median/std latency (ms) from onnxruntime's profiler, the number of
    profiled runs, the share of node time that had to be charged to a neighbouring
    kernel, the per-kernel (p10, p90) as a (kernels, 2) array, the number of onnxruntime
    nodes (after its graph optimisations) charged to each kernel, and the wall-clock
    times (ms) of the same model run *without* the profiler. Profiled and plain runs
    alternate in chunks, so that both see the same machine; they repeat until the median
    of each is known within ``target_ci`` (relative), or ``max_s`` seconds have passed."""
    prefix = str(Path(tmpdir or tempfile.gettempdir()) / "nasctl_prof")
    prof_sess = _session(Path(path), threads, profile=True, prefix=prefix)
    plain_sess = _session(Path(path), threads)
    feed = _input_for(plain_sess)
    for _ in range(warmup):
        prof_sess.run(None, feed)
        plain_sess.run(None, feed)
    prof_times: list[float] = []
    plain_times: list[float] = []
    start = time.perf_counter()
    while len(prof_times) < max_runs:
        for sess, times in ((prof_sess, prof_times), (plain_sess, plain_times)):
            for _ in range(CHUNK):
                t = time.perf_counter()
                sess.run(None, feed)
                times.append((time.perf_counter() - t) * 1e3)
        converged = max(median_ci(np.array(prof_times)), median_ci(np.array(plain_times))) <= target_ci
        if converged or time.perf_counter() - start >= max_s:
            break
    runs = len(prof_times)
    prof = Path(prof_sess.end_profiling())
    events = json.loads(prof.read_text())
    prof.unlink(missing_ok=True)
    nodes = [e for e in events if e.get("cat") == "Node" and e.get("name", "").endswith("_kernel_time")]
    total_runs = warmup + runs
    per_run = len(nodes) // total_runs
    if per_run == 0:
        raise NasctlError(f"{path}: onnxruntime's profiler reported no node times")
    lookup: dict[str, int] = {}
    for i, k in enumerate(kernels):
        for n in k.nodes:
            lookup[n] = i
        for t in k.tensors:
            lookup.setdefault(t, i)
            lookup.setdefault(t + "_nchwc", i)

    def owner(name: str) -> int | None:
        for cand in node_name_candidates(name):
            if cand in lookup:
                return lookup[cand]
        return None

    sample = nodes[-per_run:]
    owners = [owner(e["name"]) for e in sample]
    # unmatched nodes (layout reorders, ...) go to the next matched kernel, else the previous
    resolved: list[int] = []
    for j, o in enumerate(owners):
        if o is None:
            nxt = next((x for x in owners[j + 1 :] if x is not None), None)
            prv = next((x for x in reversed(owners[:j]) if x is not None), 0)
            o = nxt if nxt is not None else prv
        resolved.append(o)
    unmatched_us = sum(e["dur"] for e, o in zip(sample, owners, strict=True) if o is None)
    total_us = sum(e["dur"] for e in sample) or 1
    times = np.zeros((runs, len(kernels)))
    for r in range(runs):
        chunk = nodes[(warmup + r) * per_run : (warmup + 1 + r) * per_run]
        for e, o in zip(chunk, resolved, strict=True):
            times[r, o] += e["dur"] / 1e3
    bands = np.quantile(times, [0.1, 0.9], axis=0).T
    counts = np.bincount(resolved, minlength=len(kernels))
    median, std = np.median(times, axis=0), np.std(times, axis=0)
    return median, std, runs, unmatched_us / total_us, bands, counts, np.array(plain_times)


# ---------------------------------------------------------------------------------------
# network sources
# ---------------------------------------------------------------------------------------
def _spaces(space_files: list[Path] | None):
    from nasctl.space import SearchSpace

    root = search_spaces_dir()
    files = space_files or [root / f for f in DEFAULT_SPACES if (root / f).is_file()]
    return [SearchSpace.load(f) for f in files]


# The mix of measured networks (models mode): samples of the search spaces, random
# zoo-like CNNs, and variants (other widths and resolutions) of the standard networks of
# ``nasctl.zoo``, so that kernels appear in the proportions and contexts real networks
# have them (channel shuffles, fire modules, grouped bottlenecks, SE, inception branches).
STREAM_SHARES = {"space": 0.35, "random": 0.35, "zoo": 0.30}
# On the simulator, half the networks are space samples with every stage's width redrawn
# at any integer from 0.5x to 2x its own ("widths"): a simulated chip's latency steps
# every P channels, and a fit can only place those steps where rows have counts on both
# sides of every multiple of P (the zoo and random nets keep to multiples of 8). These
# need no ONNX export on the simulator, so they are also the cheapest rows.
SIM_STREAM_SHARES = {"space": 0.08, "widths": 0.88, "random": 0.02, "zoo": 0.02}


def jittered_widths(arch, rng: np.random.Generator):
    """``arch`` with each run of equal-width blocks (a stage) set to a random integer width
    in [0.5, 2] x its own (the next block's input follows)."""
    from nasctl.curate import with_stage

    start = 0
    blocks = arch.blocks
    while start < len(blocks):
        stop = start + 1
        while stop < len(blocks) and blocks[stop].out_channels == blocks[start].out_channels:
            stop += 1
        c = blocks[start].out_channels
        arch = with_stage(arch, slice(start, stop), int(rng.integers(max(1, c // 2), 2 * c + 1)))
        blocks = arch.blocks
        start = stop
    return arch


def network_stream(
    rng: np.random.Generator, spaces, mode: str, shares: dict[str, float] | None = None, build: bool = True
) -> Iterator[tuple]:
    """Yield (name, torch module, input shape, kernels-or-None) forever. Zoo variants are
    named ``zoo:FAMILY:MODEL:wWIDTH:rRES`` (``randnet.family_from_network_name``). With
    ``build=False`` space samples come without a module (None): the simulator reads their
    kernels alone."""
    from nasctl.latency.randnet import random_cnn, single_kernel_net, zoo_variant
    from nasctl.nn.builder import build_model
    from nasctl.nn.export import randomize_batchnorm

    shares = dict(shares or STREAM_SHARES)
    if not spaces:
        shares.update({k: 0.0 for k in ("space", "widths") if k in shares})
    kinds = list(shares)
    p = np.array([shares[k] for k in kinds], dtype=float)
    p /= p.sum()
    i = 0
    while True:
        i += 1
        if mode == "kernels":
            net, shape = single_kernel_net(rng)
            yield f"k{i}", randomize_batchnorm(net, i), shape, None
            continue
        kind = kinds[int(rng.choice(len(kinds), p=p))]
        if kind in ("space", "widths"):
            space = spaces[int(rng.integers(len(spaces)))]
            arch = space.sample(rng)
            if rng.random() < 0.3:  # other resolutions than the space's own
                arch = arch.model_copy(update={"resolution": int(rng.choice([32, 64, 96, 128, 160, 192, 224]))})
            if kind == "widths":
                arch = jittered_widths(arch, rng)
            head = "classifier" if arch.num_classes else "embedding"
            yield (
                arch.id,
                randomize_batchnorm(build_model(arch, head, seed=i), i) if build else None,
                (1, arch.in_channels, arch.resolution, arch.resolution),
                kernels_from_arch(arch, head),
            )
        elif kind == "zoo":
            name, net, shape, _family = zoo_variant(rng)
            yield name, randomize_batchnorm(net, i), shape, None
        else:
            net, shape = random_cnn(rng)
            yield f"r{i}", randomize_batchnorm(net, i), shape, None


# ---------------------------------------------------------------------------------------
# machine noise
# ---------------------------------------------------------------------------------------
UNSTEADY = 0.10  # reference bursts before and after a network this far apart: speed changed
BURST_RUNS = 15


def reference_net():
    """The fixed reference network (about 1.5 ms on one core): stem, two IBNs, head."""
    from torch import nn

    from nasctl.nn.blocks import IBN, ConvBNAct
    from nasctl.nn.export import randomize_batchnorm

    net = nn.Sequential(
        ConvBNAct(3, 32, 3, 2, act="relu"),
        IBN(32, 32, 3, 4, 1, "relu"),
        IBN(32, 64, 3, 4, 2, "relu"),
        ConvBNAct(64, 128, 1, act="relu"),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(128, 10),
    )
    return randomize_batchnorm(net, 0), (1, 3, 128, 128)


class NoiseMonitor:
    """Times the fixed reference network in short bursts (median of ``BURST_RUNS`` runs),
    one before and one after every measured network.

    A shared or virtual machine changes speed over seconds to minutes (other tenants,
    clock changes), by tens of percent, and every network measured meanwhile runs slower
    or faster alike: on a 2-core VM, the reference's and a MobileNetV2's alternating burst
    medians over 90 s correlated at 0.89, and dividing by the reference cut the spread of
    the MobileNetV2's log latency from 0.126 to 0.060. So each network's times are rescaled
    to the run's median speed (``rescale``), and a network whose two bursts differ by
    more than ``UNSTEADY`` (the speed changed during its measurement) is measured again.
    The bursts' spread is the machine's noise figure."""

    def __init__(self, tmpdir: str | Path, threads: int) -> None:
        net, shape = reference_net()
        path = Path(tmpdir) / "reference.onnx"
        export_module(net, shape, path)
        self.sess = _session(path, threads)
        self.feed = _input_for(self.sess)
        for _ in range(10):
            self.sess.run(None, self.feed)
        self.bursts: list[float] = []
        self.pairs: list[tuple[float, float]] = []

    def burst(self) -> float:
        times = []
        for _ in range(BURST_RUNS):
            t = time.perf_counter()
            self.sess.run(None, self.feed)
            times.append((time.perf_counter() - t) * 1e3)
        self.bursts.append(float(np.median(times)))
        return self.bursts[-1]

    def around(self, before: float, after: float) -> tuple[float, bool]:
        """(reference ms for the network between the two bursts, whether the speed
        changed during it)."""
        self.pairs.append((before, after))
        return (before + after) / 2, max(before, after) / min(before, after) - 1 > UNSTEADY

    def speed(self) -> float:
        """The run's median reference time: the speed measurements are rescaled to."""
        return float(np.median(self.bursts)) if self.bursts else float("nan")

    def figure(self) -> dict[str, Any]:
        """The noise figures, in percent: ``noise_pct``, half the p10-p90 range of the
        bursts over the run relative to their median (how much one measurement on this
        machine varies with when it was taken), and ``short_term_pct``, the median
        relative difference of the two bursts around a network (what remains after the
        rescaling)."""
        b = np.array(self.bursts)
        if len(b) < 3:
            return {"bursts": int(len(b))}
        med, p10, p90 = (float(v) for v in np.quantile(b, [0.5, 0.1, 0.9]))
        pairs = np.array(self.pairs).reshape(-1, 2)
        short = np.abs(pairs[:, 0] - pairs[:, 1]) / pairs.mean(axis=1) if len(pairs) else np.zeros(1)
        return {
            "reference_ms": med,
            "reference_p10_ms": p10,
            "reference_p90_ms": p90,
            "noise_pct": 100 * (p90 - p10) / (2 * med),
            "short_term_pct": 100 * float(np.median(short)),
            "bursts": int(len(b)),
        }


def reference_time(threads: int = 1, bursts: int = 3) -> float:
    """This machine's speed now: the median of ``bursts`` bursts of the reference network
    (ms), comparable with an estimator's ``device.reference_ms``."""
    with tempfile.TemporaryDirectory(prefix="nasctl-reference-") as tmp:
        mon = NoiseMonitor(tmp, threads)
        return float(np.median([mon.burst() for _ in range(bursts)]))


_SCALED = ("latency_ms", "latency_std_ms", "latency_p10_ms", "latency_p90_ms", "kernel_sum_ms")


def rescale(path: Path, speed: float) -> tuple[float, float]:
    """Rewrite the CSV at ``path`` with every row's times rescaled to the reference speed
    ``speed`` (ms): ``latency_ms *= speed / reference_ms``; the measured value stays in
    ``latency_raw_ms``. Returns the (p10, p90) of the factors applied."""
    with path.open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    factors = []
    for r in rows:
        if not r.get("reference_ms"):
            continue
        f = speed / float(r["reference_ms"])
        factors.append(f)
        r["latency_raw_ms"] = r["latency_ms"]
        for c in _SCALED:
            if r.get(c):
                r[c] = repr(float(r[c]) * f)
    tmp = path.with_suffix(".csv.tmp")
    with tmp.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=CSV_COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    tmp.replace(path)
    if not factors:
        return 1.0, 1.0
    lo, hi = np.quantile(factors, [0.1, 0.9])
    return float(lo), float(hi)


# ---------------------------------------------------------------------------------------
# the measure loop
# ---------------------------------------------------------------------------------------
def _row(
    k: Kernel,
    latency: float,
    std: float,
    runs: int,
    source: str,
    model_id: str,
    band: tuple[float, float] | None = None,
    reference: float | str = "",
    nodes: int | str = "",
) -> dict[str, Any]:
    r = kernel_row(k)
    r.update(
        latency_ms=latency,
        latency_std_ms=std,
        latency_p10_ms=band[0] if band else latency,
        latency_p90_ms=band[1] if band else latency,
        latency_raw_ms=latency,
        n_repeats=runs,
        reference_ms=reference,
        source=source,
        model_id=model_id,
        onnx_op=k.onnx_op,
        kernel_sum_ms="",
        n_kernels="",
        n_nodes=nodes,
    )
    return r


def measure(
    out_csv: str | Path,
    device: str = "cpu",
    time_budget: float = 600.0,
    mode: str = "models",
    threads: int = 1,
    seed: int = 0,
    max_networks: int | None = None,
    parallelism: int = 16,
    space_files: list[Path] | None = None,
    progress: Callable[[float, int, int], None] | None = None,
    target_error: float = 5.0,
) -> dict[str, Any]:
    """Measure until ``time_budget`` seconds (or ``max_networks`` networks tried) and write
    ``out_csv`` plus a ``.meta.json`` sidecar with the device metadata. Returns the sidecar
    content. A network that fails to export to ONNX is skipped and counted
    (``failed_networks``, with up to 5 distinct ``failure_reasons``) and a warning says so;
    when every network tried fails (or the first ``FAIL_FAST`` all do), it raises NasctlError.

    On a CPU, each network is timed with adaptive repeats (until the median is known to
    2%, within 0.8 s) between two bursts of a fixed reference network
    (``NoiseMonitor``). When the two bursts differ (the speed changed meanwhile), the
    network is measured once more and the steadier of the two kept. At the end, every
    row is rescaled to the run's median speed (``latency_raw_ms`` keeps the measured
    value, ``reference_ms`` the bursts' mean) and has the p10/p90 of its runs. The sidecar's
    ``noise`` block holds the machine noise figure; a warning names it when it exceeds
    ``target_error`` percent (``noise.too_noisy``)."""

    if device not in ("cpu", "sim-npu"):
        raise NasctlError(f"unknown device {device!r} (expected cpu or sim-npu)")
    if mode not in ("models", "kernels"):
        raise NasctlError(f"unknown mode {mode!r} (expected models or kernels)")
    if time_budget <= 0:
        raise NasctlError("--time-budget must be positive")
    out_csv = Path(out_csv)
    out_csv.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    sim = SimNPU(parallelism=parallelism) if device == "sim-npu" else None
    if sim is not None:
        info: dict[str, Any] = sim.describe()
    else:
        info = {
            "device": "cpu",
            "simulated": False,
            "threads": threads,
            "mode": mode,
            **machine_info(),
        }
    spaces = _spaces(space_files)
    start = time.perf_counter()
    n_net = n_rows = n_failed = 0
    reasons: list[str] = []
    unmatched: list[float] = []
    monitor: NoiseMonitor | None = None
    n_redo = n_busy = 0
    with out_csv.open("w", newline="") as fh, tempfile.TemporaryDirectory() as tmp:
        writer = csv.DictWriter(fh, fieldnames=CSV_COLUMNS)
        writer.writeheader()
        stream = network_stream(rng, spaces, mode, SIM_STREAM_SHARES if sim else None, build=sim is None)
        for name, net, shape, kernels in stream:
            elapsed = time.perf_counter() - start
            tried = n_net + n_failed
            if elapsed >= time_budget or (max_networks is not None and tried >= max_networks):
                break
            if n_net == 0 and n_failed >= FAIL_FAST:
                break
            path = Path(tmp) / "net.onnx"
            if sim is not None and kernels is not None:
                ks = kernels  # the simulator needs no ONNX file for a space sample
            else:
                try:
                    export_module(net, shape, path)
                    ks = kernels_from_onnx(path)
                except NasctlError:
                    raise
                except Exception as exc:  # a net the exporter cannot take: skip it, counted
                    n_failed += 1
                    first_line = str(exc).strip().partition("\n")[0][:200]
                    reason = f"{type(exc).__name__}: {first_line}"
                    if reason not in reasons and len(reasons) < 5:
                        reasons.append(reason)
                    continue
                if kernels is not None and [k.key() for k in kernels] != [k.key() for k in ks]:
                    raise RuntimeError(f"kernel IR paths disagree on {name}")  # a bug, not bad input
            rows: list[dict[str, Any]] = []
            prof = None
            if sim is not None:
                lat = [sim.latency_ms(k) for k in ks]
                rows = [_row(k, t, 0.0, 1, "simulated", name) for k, t in zip(ks, lat, strict=True)]
                wall, wall_std, runs, wall_band = float(np.sum(lat)), 0.0, 1, None
            else:
                if monitor is None:
                    monitor = NoiseMonitor(tmp, threads)
                    for _ in range(3):
                        monitor.burst()
                best = None
                for attempt in range(2):  # the speed changed meanwhile: measure the network once more
                    n_redo += attempt == 1
                    before = monitor.burst()
                    if mode == "kernels":
                        times = time_onnx_runs(path, threads)
                        prof = None
                    else:
                        prof = profile_kernels(path, ks, threads, tmpdir=tmp)
                        times = prof[-1]
                    after = monitor.burst()
                    ref, unsteady = monitor.around(before, after)
                    change = abs(after / before - 1)
                    if best is None or change < best[0]:
                        best = (change, ref, unsteady, times, prof)
                    if not unsteady:
                        break
                _, ref, unsteady, times, prof = best
                n_busy += unsteady
                ref = round(ref, 5)
                wall, wall_std, runs = float(np.median(times)), float(np.std(times)), len(times)
                wall_band = spread(times)
                if prof is None:
                    main = max(ks, key=lambda k: k.macs + k.bytes)
                    rows = [_row(main, wall, wall_std, runs, "isolated", name, wall_band, ref)]
                else:
                    med, std, kruns, un, bands, counts, _ = prof
                    unmatched.append(un)
                    rows = [
                        _row(k, float(m), float(sd), kruns, "in-context", name, tuple(b), ref, int(c))
                        for k, m, sd, b, c in zip(ks, med, std, bands, counts, strict=True)
                        if m > 0
                    ]
            if mode == "models":
                rows.append(
                    {
                        "op": MODEL_OP,
                        **{f: 0 for f in FEATURES},
                        "latency_ms": wall,
                        "latency_std_ms": wall_std,
                        "latency_p10_ms": wall_band[0] if wall_band else wall,
                        "latency_p90_ms": wall_band[1] if wall_band else wall,
                        "latency_raw_ms": wall,
                        "n_repeats": runs,
                        "reference_ms": ref if sim is None else "",
                        "source": "simulated" if sim is not None else "wall-clock",
                        "model_id": name,
                        "onnx_op": "",
                        "kernel_sum_ms": float(sum(r["latency_ms"] for r in rows)),
                        "n_kernels": len(ks),
                        "n_nodes": sum(r["n_nodes"] for r in rows) if prof is not None else "",
                    }
                )
            writer.writerows(rows)
            fh.flush()
            n_net += 1
            n_rows += len(rows)
            if progress:
                progress(time.perf_counter() - start, n_net, n_rows)
    if n_failed and n_net == 0:
        out_csv.unlink(missing_ok=True)
        raise NasctlError(f"all {n_failed} networks tried failed to export to ONNX (first: {reasons[0]})")
    if n_failed:
        warnings.warn(
            f"{n_failed} of {n_failed + n_net} networks failed to export to ONNX and were skipped "
            f"(first: {reasons[0]})",
            RuntimeWarning,
            stacklevel=2,
        )
    noise: dict[str, Any] = {}
    if monitor is not None:
        lo, hi = rescale(out_csv, monitor.speed())
        info["reference_ms"] = monitor.speed()  # the speed the rows are at: estimators carry it
        noise = monitor.figure() | {
            "rescaled_to_reference_ms": monitor.speed(),
            "rescale_p10": lo,
            "rescale_p90": hi,
            "target_error_pct": target_error,
            "remeasured_networks": n_redo,
            "unsteady_networks": n_busy,
        }
        noise["too_noisy"] = bool(max(noise.get("noise_pct", 0.0), noise.get("short_term_pct", 0.0)) > target_error)
        if noise["too_noisy"]:
            warnings.warn(noise_warning(noise), RuntimeWarning, stacklevel=2)
    meta = {
        "device": info,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "nasctl_version": __version__,
        "networks": n_net,
        "failed_networks": n_failed,
        "failure_reasons": reasons,
        "rows": n_rows,
        "seconds": round(time.perf_counter() - start, 1),
        "seed": seed,
        "unmatched_node_time_share": float(np.mean(unmatched)) if unmatched else 0.0,
        "noise": noise,
    }
    out_csv.with_suffix(".meta.json").write_text(json.dumps(meta, indent=2) + "\n")
    return meta


def noise_warning(noise: dict[str, Any]) -> str:
    """One line: the machine's noise figures against the target error."""
    return (
        f"this machine is noisy: a fixed reference network's latency varied by +-{noise['noise_pct']:.1f}% "
        f"over the run (p10 {noise['reference_p10_ms']:.3f} ms, p90 {noise['reference_p90_ms']:.3f} ms, "
        f"{noise['bursts']} bursts) and by {noise['short_term_pct']:.1f}% across one network's measurement, "
        f"against a {noise['target_error_pct']:g}% target error. The rows were rescaled to the run's median "
        "speed; a single measurement here (yours too) still varies that much with the moment it is taken: "
        "measure with no other jobs running, or compare estimates with measurements taken alongside the "
        "reference (nasctl estimate --measure)"
    )


def summarize(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")
