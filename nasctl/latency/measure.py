"""``nasctl measure``: time kernels on a device and write a measurements CSV.

``--device cpu`` (onnxruntime, CPU execution provider, full graph optimisations, pinned
thread count). Two modes, both writing the same columns:

* ``models`` (default): kernels timed *in context*. A random network (a shipped-space
  sample or a random zoo-like CNN) is exported to ONNX and run with onnxruntime's
  profiler. Each profiled node maps back to the IR kernel it belongs to through its
  node or tensor name (fused nodes are named after the last tensor they absorbed; NCHWc
  layout reorders are charged to the next kernel). A kernel's latency is its median over
  the runs. The whole network's wall-clock median is recorded too, as an ``op=model``
  row, so that the estimator can learn the per-model overhead.
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
    "n_repeats",
    "source",
    "model_id",
    "onnx_op",
    "kernel_sum_ms",
    "n_kernels",
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


def _repeats(sess, feed, target_s: float, lo: int, hi: int) -> int:
    t = time.perf_counter()
    sess.run(None, feed)
    one = max(time.perf_counter() - t, 1e-5)
    return int(np.clip(target_s / one, lo, hi))


def time_onnx(
    path: str | Path, threads: int = 1, warmup: int = 5, target_s: float = 0.2, min_runs: int = 10, max_runs: int = 300
) -> tuple[float, float, int]:
    """Wall-clock latency of a whole ONNX model: (median_ms, std_ms, runs)."""
    sess = _session(Path(path), threads)
    feed = _input_for(sess)
    for _ in range(warmup):
        sess.run(None, feed)
    runs = _repeats(sess, feed, target_s, min_runs, max_runs)
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        sess.run(None, feed)
        times.append((time.perf_counter() - t) * 1e3)
    return float(np.median(times)), float(np.std(times)), runs


def profile_kernels(
    path: str | Path,
    kernels: list[Kernel],
    threads: int = 1,
    warmup: int = 5,
    target_s: float = 0.2,
    min_runs: int = 10,
    max_runs: int = 300,
    tmpdir: str | None = None,
) -> tuple[np.ndarray, np.ndarray, int, float]:
    """Per-kernel median/std latency (ms) from onnxruntime's profiler, the number of runs
    and the share of node time that had to be charged to a neighbouring kernel."""
    prefix = str(Path(tmpdir or tempfile.gettempdir()) / "nasctl_prof")
    sess = _session(Path(path), threads, profile=True, prefix=prefix)
    feed = _input_for(sess)
    for _ in range(warmup):
        sess.run(None, feed)
    runs = _repeats(sess, feed, target_s, min_runs, max_runs)
    for _ in range(runs):
        sess.run(None, feed)
    prof = Path(sess.end_profiling())
    events = json.loads(prof.read_text())
    prof.unlink(missing_ok=True)
    nodes = [e for e in events if e.get("cat") == "Node" and e.get("name", "").endswith("_kernel_time")]
    total_runs = warmup + 1 + runs
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
        base = name[: -len("_kernel_time")]
        for cand in (base, base.removesuffix("_nchwc"), base.removesuffix("_output_0_nchwc")):
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
        chunk = nodes[(warmup + 1 + r) * per_run : (warmup + 2 + r) * per_run]
        for e, o in zip(chunk, resolved, strict=True):
            times[r, o] += e["dur"] / 1e3
    return np.median(times, axis=0), np.std(times, axis=0), runs, unmatched_us / total_us


# ---------------------------------------------------------------------------------------
# network sources
# ---------------------------------------------------------------------------------------
def _spaces(space_files: list[Path] | None):
    from nasctl.space import SearchSpace

    root = search_spaces_dir()
    files = space_files or [root / f for f in DEFAULT_SPACES if (root / f).is_file()]
    return [SearchSpace.load(f) for f in files]


def network_stream(rng: np.random.Generator, spaces, mode: str, zoo_share: float = 0.5) -> Iterator[tuple]:
    """Yield (name, torch module, input shape, kernels-or-None) forever."""
    from nasctl.latency.randnet import random_cnn, single_kernel_net
    from nasctl.nn.builder import build_model
    from nasctl.nn.export import randomize_batchnorm

    i = 0
    while True:
        i += 1
        if mode == "kernels":
            net, shape = single_kernel_net(rng)
            yield f"k{i}", randomize_batchnorm(net, i), shape, None
        elif spaces and rng.random() >= zoo_share:
            space = spaces[int(rng.integers(len(spaces)))]
            arch = space.sample(rng)
            if rng.random() < 0.3:  # other resolutions than the space's own
                arch = arch.model_copy(update={"resolution": int(rng.choice([32, 64, 96, 128, 160, 192, 224]))})
            head = "classifier" if arch.num_classes else "embedding"
            yield (
                arch.id,
                randomize_batchnorm(build_model(arch, head, seed=i), i),
                (1, arch.in_channels, arch.resolution, arch.resolution),
                kernels_from_arch(arch, head),
            )
        else:
            net, shape = random_cnn(rng)
            yield f"r{i}", randomize_batchnorm(net, i), shape, None


# ---------------------------------------------------------------------------------------
# the measure loop
# ---------------------------------------------------------------------------------------
def _row(k: Kernel, latency: float, std: float, runs: int, source: str, model_id: str) -> dict[str, Any]:
    r = kernel_row(k)
    r.update(
        latency_ms=latency,
        latency_std_ms=std,
        n_repeats=runs,
        source=source,
        model_id=model_id,
        onnx_op=k.onnx_op,
        kernel_sum_ms="",
        n_kernels="",
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
) -> dict[str, Any]:
    """Measure until ``time_budget`` seconds (or ``max_networks`` networks tried) and write
    ``out_csv`` plus a ``.meta.json`` sidecar with the device metadata. Returns the sidecar
    content. A network that fails to export to ONNX is skipped and counted
    (``failed_networks``, with up to 5 distinct ``failure_reasons``) and a warning says so;
    when every network tried fails (or the first ``FAIL_FAST`` all do), it raises NasctlError."""

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
    with out_csv.open("w", newline="") as fh, tempfile.TemporaryDirectory() as tmp:
        writer = csv.DictWriter(fh, fieldnames=CSV_COLUMNS)
        writer.writeheader()
        for name, net, shape, kernels in network_stream(rng, spaces, mode):
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
            if sim is not None:
                lat = [sim.latency_ms(k) for k in ks]
                rows = [_row(k, t, 0.0, 1, "simulated", name) for k, t in zip(ks, lat, strict=True)]
                wall, wall_std, runs = float(np.sum(lat)), 0.0, 1
            elif mode == "kernels":
                wall, wall_std, runs = time_onnx(path, threads)
                main = max(ks, key=lambda k: k.macs + k.bytes)
                rows = [_row(main, wall, wall_std, runs, "isolated", name)]
            else:
                med, std, runs, un = profile_kernels(path, ks, threads, tmpdir=tmp)
                unmatched.append(un)
                rows = [
                    _row(k, float(m), float(s), runs, "in-context", name)
                    for k, m, s in zip(ks, med, std, strict=True)
                    if m > 0
                ]
                wall, wall_std, runs = time_onnx(path, threads)
            if mode == "models":
                rows.append(
                    {
                        "op": MODEL_OP,
                        **{f: 0 for f in FEATURES},
                        "latency_ms": wall,
                        "latency_std_ms": wall_std,
                        "n_repeats": runs,
                        "source": "simulated" if sim is not None else "wall-clock",
                        "model_id": name,
                        "onnx_op": "",
                        "kernel_sum_ms": float(sum(r["latency_ms"] for r in rows)),
                        "n_kernels": len(ks),
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
    }
    out_csv.with_suffix(".meta.json").write_text(json.dumps(meta, indent=2) + "\n")
    return meta


def summarize(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")
