"""Results of a search, read back from its study: one type for every strategy.

``collect`` turns the study into plain rows; ``write_outputs`` writes the run folder:
``trials.csv``, ``pareto.json``, ``pareto.png``, ``winners/`` (arch.json + .onnx of the
top Pareto archs) and ``report.md``. With ``measure``, the winners and the baseline are
also timed with onnxruntime, interleaved, so the report compares measured latencies too.
"""

from __future__ import annotations

import csv
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from nasctl.search.multishot import SearchConfig, open_study, trial_counts

CSV_COLUMNS = [
    "number",
    "state",
    "baseline",
    "feasible",
    "trained",
    "accuracy",
    "test_accuracy",
    "latency_ms",
    "memory_mb",
    "params",
    "peak_activation_bytes",
    "flops",
    "train_seconds",
    "duplicate_of",
    "arch_id",
    "arch",
    "seconds",
]


@dataclass
class SearchResults:
    config: SearchConfig
    rows: list[dict[str, Any]]
    pareto: list[dict[str, Any]]
    baseline: dict[str, Any] | None
    counts: dict[str, int]

    @property
    def complete(self) -> list[dict[str, Any]]:
        return [r for r in self.rows if r["state"] == "COMPLETE"]


def _row(t) -> dict[str, Any]:
    a = t.user_attrs
    seconds = (
        (t.datetime_complete - t.datetime_start).total_seconds() if t.datetime_complete and t.datetime_start else None
    )
    return {
        "number": t.number,
        "state": t.state.name,
        "baseline": bool(a.get("baseline", False)),
        "feasible": a.get("feasible"),
        "trained": a.get("trained"),
        "accuracy": a.get("accuracy"),
        "test_accuracy": a.get("test_accuracy"),
        "latency_ms": a.get("latency_ms"),
        "memory_mb": a.get("memory_mb"),
        "params": a.get("params"),
        "peak_activation_bytes": a.get("peak_activation_bytes"),
        "flops": a.get("flops"),
        "train_seconds": a.get("train_seconds"),
        "duplicate_of": a.get("duplicate_of"),
        "arch_id": a.get("arch_id"),
        "arch": a.get("arch"),
        "seconds": seconds,
    }


def collect(cfg: SearchConfig, study=None) -> SearchResults:
    study = study or open_study(cfg)
    trials = study.get_trials(deepcopy=False)
    rows = [_row(t) for t in trials]
    try:
        best = study.best_trials  # the feasible Pareto set
    except Exception:  # no complete trial yet
        best = []
    # one row per arch: a trial that reused a twin's training has the twin's values, so both
    # sit on the front; the trained original (lowest number) stands for them
    seen: set[str] = set()
    distinct = []
    for t in sorted(best, key=lambda t: t.number):
        if t.user_attrs.get("trained") and t.user_attrs.get("arch_id") not in seen:
            seen.add(t.user_attrs.get("arch_id"))
            distinct.append(_row(t))
    pareto = sorted(distinct, key=lambda r: -(r["accuracy"] or 0))
    base = [r for r in rows if r["baseline"] and r["state"] == "COMPLETE"]
    return SearchResults(cfg, rows, pareto, base[0] if base else None, trial_counts(study))


def write_trials_csv(res: SearchResults, path: Path) -> Path:
    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=CSV_COLUMNS)
        w.writeheader()
        for r in res.rows:
            w.writerow({k: ("" if r.get(k) is None else r[k]) for k in CSV_COLUMNS})
    return path


def measure_latencies(archs: dict[str, Any], rounds: int = 3, threads: int = 1) -> dict[str, float]:
    """Export each arch (classifier head) to a temporary folder and time all of them
    interleaved, ``rounds`` passes; the median of the per-pass medians, in ms.

    The timing runs in a fresh process: measured inside a process that has just trained
    for minutes, the same models came out up to 1.7x slower than in a fresh one."""
    import multiprocessing as mp
    import tempfile
    from concurrent.futures import ProcessPoolExecutor

    from nasctl.nn.export import export_onnx

    with tempfile.TemporaryDirectory(prefix="nasctl-measure-") as tmp:
        paths = {key: str(export_onnx(arch, Path(tmp) / f"{key}.onnx")) for key, arch in archs.items()}
        with ProcessPoolExecutor(max_workers=1, mp_context=mp.get_context("spawn")) as pool:
            return pool.submit(_time_interleaved, paths, rounds, threads).result()


def _time_interleaved(paths: dict[str, str], rounds: int, threads: int) -> dict[str, float]:
    from nasctl.latency.measure import time_onnx

    samples: dict[str, list[float]] = {k: [] for k in paths}
    for _ in range(rounds):
        for key, p in paths.items():
            samples[key].append(time_onnx(p, threads)[0])
    return {k: float(np.median(v)) for k, v in samples.items()}


def plot_pareto(res: SearchResults, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    done = [r for r in res.complete if r["trained"]]
    infeasible = [r for r in res.complete if r["feasible"] is False]
    if done:
        ax.scatter(
            [r["latency_ms"] for r in done], [100 * r["accuracy"] for r in done], s=18, c="0.6", label="trained trials"
        )
    if infeasible:
        ax.scatter(
            [r["latency_ms"] for r in infeasible],
            [0 * r["latency_ms"] for r in infeasible],
            marker="x",
            c="tab:red",
            s=18,
            label="over budget (not trained)",
        )
    if res.pareto:
        front = sorted(res.pareto, key=lambda r: r["latency_ms"])
        ax.plot(
            [r["latency_ms"] for r in front],
            [100 * r["accuracy"] for r in front],
            "o-",
            c="tab:blue",
            ms=5,
            label="Pareto front",
            drawstyle="steps-post",
        )
    if res.baseline:
        ax.scatter(
            [res.baseline["latency_ms"]],
            [100 * res.baseline["accuracy"]],
            marker="*",
            s=160,
            c="tab:orange",
            edgecolors="k",
            zorder=5,
            label="baseline",
        )
    ob = res.config.objectives
    if ob.latency_budget_ms:
        ax.axvline(ob.latency_budget_ms, ls="--", c="tab:red", lw=1, label="latency budget")
    ax.set_xlabel(f"estimated latency (ms, {res.config.estimator})")
    ax.set_ylabel("linear-probe accuracy, val (%)")
    if done:
        lo = min(100 * r["accuracy"] for r in done)
        ax.set_ylim(max(0, lo - 5), 100)
    ax.set_title(f"{Path(res.config.space_file).name}: {len(res.complete)} trials", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def write_outputs(cfg: SearchConfig, measure: bool = True, study=None) -> SearchResults:
    """Write every output of the run folder from the study (also what `nasctl report` does)."""
    from nasctl.arch import Arch
    from nasctl.latency.api import load_estimator
    from nasctl.nn.export import export_onnx

    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    res = collect(cfg, study)
    write_trials_csv(res, out / "trials.csv")
    winners = out / "winners"
    winners.mkdir(exist_ok=True)
    for old in winners.glob("*"):
        if old.is_file():
            old.unlink()
    top = res.pareto[: cfg.top_k]
    for i, r in enumerate(top, 1):
        arch = Arch.from_string(r["arch"])
        arch.save(winners / f"rank{i}_{arch.id}.json")
        export_onnx(arch, winners / f"rank{i}_{arch.id}.onnx")
        r["files"] = [f"winners/rank{i}_{arch.id}.json", f"winners/rank{i}_{arch.id}.onnx"]
    measured: dict[str, float] = {}
    simulated = bool(load_estimator(cfg.estimator).device.get("simulated"))
    if measure and not simulated and res.pareto:
        archs = {f"p{r['number']}": Arch.from_string(r["arch"]) for r in res.pareto}
        if res.baseline:
            archs["baseline"] = Arch.from_string(res.baseline["arch"])
        t = time.perf_counter()
        measured = measure_latencies(archs)
        for r in res.pareto:
            r["measured_latency_ms"] = measured[f"p{r['number']}"]
        if res.baseline:
            res.baseline["measured_latency_ms"] = measured["baseline"]
        measure_s = time.perf_counter() - t
    else:
        measure_s = 0.0
    summary = {
        "space": str(cfg.space_file),
        "strategy": cfg.strategy,
        "objectives": cfg.objectives.to_dict(),
        "estimator": cfg.estimator,
        "counts": res.counts,
        "baseline": res.baseline,
        "pareto": res.pareto,
        "best_vs_baseline": best_vs_baseline(res),
        "measured_with": "onnxruntime CPU, 1 thread, interleaved, 3 passes" if measured else None,
        "measure_seconds": measure_s,
    }
    (out / "pareto.json").write_text(json.dumps(summary, indent=2) + "\n")
    plot_pareto(res, out / "pareto.png")
    (out / "report.md").write_text(render_report(res, summary))
    return res


def best_vs_baseline(res: SearchResults, max_drop_points: float = 1.0) -> dict[str, Any] | None:
    """The fastest Pareto arch whose accuracy is within ``max_drop_points`` of the baseline's
    (by measured latency where measured, else estimated)."""
    if not res.baseline or not res.pareto:
        return None
    key = "measured_latency_ms" if "measured_latency_ms" in res.baseline else "latency_ms"
    ok = [
        r
        for r in res.pareto
        if not r["baseline"] and 100 * (res.baseline["accuracy"] - r["accuracy"]) <= max_drop_points
    ]
    if not ok:
        return None
    best = min(ok, key=lambda r: r[key])
    return {
        "trial": best["number"],
        "arch": best["arch"],
        "latency_key": key,
        "latency_ms": best[key],
        "baseline_latency_ms": res.baseline[key],
        "latency_change_pct": 100 * (best[key] / res.baseline[key] - 1),
        "accuracy": best["accuracy"],
        "baseline_accuracy": res.baseline["accuracy"],
        "accuracy_change_points": 100 * (best["accuracy"] - res.baseline["accuracy"]),
    }


def _fmt(v, pct=False, digits=3) -> str:
    if v is None:
        return "–"
    return f"{100 * v:.1f}%" if pct else f"{v:.{digits}f}"


def render_report(res: SearchResults, summary: dict) -> str:
    cfg = res.config
    c = res.counts
    ob = cfg.objectives
    lines = [
        f"# nasctl search report: {Path(cfg.space_file).name}",
        "",
        f"- strategy: {cfg.strategy}; study `{cfg.name}` in `{summary.get('storage', cfg.storage_url)}`",
        f"- objectives: {', '.join(f'{n} ({d})' for n, d in zip(ob.names, ob.directions, strict=True))}",
        f"- constraints: latency <= {ob.latency_budget_ms or '–'} ms, memory <= {ob.memory_budget_mb or '–'} MB",
        f"- latency estimator: {cfg.estimator}; data: {cfg.data}",
        f"- per-trial training: {cfg.budget.pretrain.loss} loss, batch {cfg.budget.pretrain.batch_size}, "
        f"<= {cfg.budget.pretrain.epochs} epochs, <= {cfg.budget.pretrain.time_budget_s or '–'} s; "
        "accuracy = linear probe on the validation split",
        f"- trials: {c.get('complete', 0)} complete, {c.get('fail', 0)} failed, {c.get('running', 0)} running "
        f"(target {cfg.trials or '–'})",
        "",
        "![Pareto front](pareto.png)",
        "",
    ]
    b = summary["best_vs_baseline"]
    if b:
        lines += [
            "## Best vs baseline",
            "",
            f"The fastest Pareto arch within 1 point of the baseline's accuracy (trial {b['trial']}): "
            f"{b['latency_change_pct']:+.1f}% {b['latency_key'].replace('_', ' ')} "
            f"({b['latency_ms']:.3f} vs {b['baseline_latency_ms']:.3f} ms), "
            f"accuracy {100 * b['accuracy']:.1f}% vs {100 * b['baseline_accuracy']:.1f}% "
            f"({b['accuracy_change_points']:+.1f} points).",
            "",
            f"`{b['arch']}`",
            "",
        ]
    lines += [
        "## Pareto set (feasible)",
        "",
        "| trial | val acc | test acc | est. latency ms | measured ms | memory MB | params | arch id |",
        "|---|---|---|---|---|---|---|---|",
    ]
    rows = ([res.baseline] if res.baseline else []) + [r for r in res.pareto if not r["baseline"]]
    for r in rows:
        tag = " (baseline)" if r["baseline"] else ""
        lines.append(
            f"| {r['number']}{tag} | {_fmt(r['accuracy'], True)} | {_fmt(r['test_accuracy'], True)} | "
            f"{_fmt(r['latency_ms'])} | {_fmt(r.get('measured_latency_ms'))} | {_fmt(r['memory_mb'], digits=2)} | "
            f"{r['params']:,} | `{r['arch_id']}` |"
        )
    lines += ["", "Files: `trials.csv`, `pareto.json`, `pareto.png`, `winners/` (arch.json + ONNX).", ""]
    return "\n".join(lines)
