"""Results of a search, read back from its study: one type for every strategy.

``collect`` turns the study into ``TrialRecord``s (``SearchResult``); ``write_outputs``
writes the run folder from them: ``trials.csv``, ``pareto.json``, ``pareto.png``,
``winners/`` (arch.json + .onnx of the top Pareto archs) and ``report.md``. With
``measure``, the winners and the baseline are also timed with onnxruntime, interleaved, so
the report compares measured latencies too. What the score is (its name, label, columns)
comes from the strategy's scorer type; nothing here knows how it was computed.
"""

from __future__ import annotations

import csv
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from nasctl.search.base import Column, TrialRecord, get_strategy, scorer_type_of
from nasctl.search.config import SearchConfig
from nasctl.search.study import open_study, trial_counts

_LEAD = ["number", "state", "baseline", "feasible", "trained"]
_TAIL = ["latency_ms", "memory_mb", "params", "peak_activation_bytes", "flops", "duplicate_of", "arch_id", "arch"]
_LAST = ["seconds", "worker", "error"]
# Pareto archs timed with onnxruntime, best score first (the exported winners among them):
# a zero-shot front over a continuous score can hold hundreds, each timed for up to a second
MEASURE_MAX = 24


@dataclass
class SearchResult:
    """A search as its study holds it: every trial, the feasible Pareto set (one record per
    arch, best score first), the baseline trial and the trial counts by state."""

    config: SearchConfig
    records: list[TrialRecord]
    pareto: list[TrialRecord]
    baseline: TrialRecord | None
    counts: dict[str, int]

    @property
    def scorer_type(self) -> type:
        return scorer_type_of(self.config)

    @property
    def objective(self) -> str:
        return self.scorer_type.objective

    @property
    def columns(self) -> tuple[Column, ...]:
        return self.scorer_type.columns

    @property
    def complete(self) -> list[TrialRecord]:
        return [r for r in self.records if r.state == "COMPLETE"]

    @property
    def out(self) -> Path:
        return Path(self.config.out)

    def csv_columns(self) -> list[str]:
        return _LEAD + list(self.scorer_type.metrics) + _TAIL + _LAST

    def summary(self) -> dict[str, Any]:
        """What ``pareto.json`` holds (before measuring: no measured latencies)."""
        cfg = self.config
        return {
            "space": str(cfg.space_file),
            "strategy": cfg.strategy,
            "objectives": cfg.objectives.to_dict(),
            "estimator": cfg.estimator,
            "counts": self.counts,
            "baseline": self.baseline.to_dict() if self.baseline else None,
            "pareto": [r.to_dict() for r in self.pareto],
            "best_vs_baseline": best_vs_baseline(self),
        }


def collect(cfg: SearchConfig, study=None) -> SearchResult:
    study = study or open_study(cfg)
    scorer_type = scorer_type_of(cfg)
    keys, objective = scorer_type.metrics, scorer_type.objective
    trials = study.get_trials(deepcopy=False)
    records = [TrialRecord.from_trial(t, keys) for t in trials]
    try:
        best = study.best_trials  # the feasible Pareto set
    except ValueError:  # no complete trial yet
        best = []
    # one record per arch: a trial that reused a twin's score has the twin's values, so both
    # sit on the front; the scored original (lowest number) stands for them
    seen: set[str] = set()
    distinct = []
    for t in sorted(best, key=lambda t: t.number):
        if t.user_attrs.get(objective) == scorer_type.worst:  # scored worst (e.g. a NaN network): no winner
            continue
        if t.user_attrs.get("trained") and t.user_attrs.get("arch_id") not in seen:
            seen.add(t.user_attrs.get("arch_id"))
            distinct.append(TrialRecord.from_trial(t, keys))
    pareto = sorted(distinct, key=lambda r: -(r.score(objective) or 0))
    base = [r for r in records if r.baseline and r.state == "COMPLETE"]
    return SearchResult(cfg, records, pareto, base[0] if base else None, trial_counts(study))


def write_trials_csv(res: SearchResult, path: Path) -> Path:
    columns = res.csv_columns()
    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=columns, extrasaction="ignore")
        w.writeheader()
        for r in res.records:
            d = r.to_dict()
            w.writerow({k: ("" if d.get(k) is None else d[k]) for k in columns})
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


def plot_pareto(res: SearchResult, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    obj = res.objective
    pct = res.columns[0].fmt == "pct"
    scale = 100 if pct else 1
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    worst = res.scorer_type.worst
    done = [r for r in res.complete if r.trained and (pct or r.score(obj) != worst)]
    # over budget, or (a score with no absolute scale) scored worst: drawn at the plot's floor
    infeasible = [r for r in res.complete if r.feasible is False or (not pct and r.trained and r.score(obj) == worst)]
    floor = scale * worst if pct or not done else min(r.score(obj) for r in done)
    if done:
        ax.scatter(
            [r.latency_ms for r in done], [scale * r.score(obj) for r in done], s=18, c="0.6", label="scored trials"
        )
    if infeasible:
        ax.scatter(
            [r.latency_ms for r in infeasible],
            [floor] * len(infeasible),
            marker="x",
            c="tab:red",
            s=18,
            label="over budget (not scored)" if pct else "over budget, or scored worst (NaN)",
        )
    if res.pareto:
        front = sorted(res.pareto, key=lambda r: r.latency_ms)
        ax.plot(
            [r.latency_ms for r in front],
            [scale * r.score(obj) for r in front],
            "o-",
            c="tab:blue",
            ms=5,
            label="Pareto front",
            drawstyle="steps-post",
        )
    if res.baseline:
        ax.scatter(
            [res.baseline.latency_ms],
            [scale * res.baseline.score(obj)],
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
    ax.set_ylabel(res.scorer_type.label + (" (%)" if pct else ""))
    if done and pct:
        lo = min(scale * r.score(obj) for r in done)
        ax.set_ylim(max(0, lo - 5), 100)
    ax.set_title(f"{Path(res.config.space_file).name}: {len(res.complete)} trials", fontsize=9)
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def write_outputs(cfg: SearchConfig, measure: bool = True, study=None) -> SearchResult:
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
    # a scorer whose archs hold weights (singleshot: inherited) exports them with the arch
    export_weights = getattr(res.scorer_type, "export_winner", None)
    for i, r in enumerate(res.pareto[: cfg.top_k], 1):
        arch = Arch.from_string(r.arch)
        stem = f"rank{i}_{arch.id}"
        arch.save(winners / f"{stem}.json")
        if export_weights is not None:
            r.files = [f"winners/{stem}.json", *(f"winners/{f}" for f in export_weights(cfg, arch, winners / stem))]
        else:
            export_onnx(arch, winners / f"{stem}.onnx")
            r.files = [f"winners/{stem}.json", f"winners/{stem}.onnx"]
    measured: dict[str, float] = {}
    simulated = bool(load_estimator(cfg.estimator).device.get("simulated"))
    measure_s = 0.0
    timed = res.pareto[: max(MEASURE_MAX, cfg.top_k)]
    if measure and not simulated and res.pareto:
        archs = {f"p{r.number}": Arch.from_string(r.arch) for r in timed}
        if res.baseline:
            archs["baseline"] = Arch.from_string(res.baseline.arch)
        t = time.perf_counter()
        measured = measure_latencies(archs)
        for r in timed:
            r.measured_latency_ms = measured[f"p{r.number}"]
        if res.baseline:
            res.baseline.measured_latency_ms = measured["baseline"]
            for r in res.pareto:  # the baseline's own Pareto record, if it is on the front
                if r.number == res.baseline.number:
                    r.measured_latency_ms = measured["baseline"]
        measure_s = time.perf_counter() - t
    summary = res.summary()
    summary["measured_with"] = "onnxruntime CPU, 1 thread, interleaved, 3 passes" if measured else None
    summary["measured_pareto"] = sum(1 for r in res.pareto if r.measured_latency_ms is not None)
    summary["measure_seconds"] = measure_s
    (out / "pareto.json").write_text(json.dumps(summary, indent=2) + "\n")
    plot_pareto(res, out / "pareto.png")
    (out / "report.md").write_text(render_report(res, summary))
    return res


def best_vs_baseline(res: SearchResult, max_drop_points: float = 1.0) -> dict[str, Any] | None:
    """The fastest Pareto arch whose score is within ``max_drop_points`` (percentage points
    for a fractional score) of the baseline's (by measured latency where the baseline and
    every candidate were measured, else estimated). None for a score without an absolute
    scale (a zero-shot score: a point of it means nothing)."""
    if not res.baseline or not res.pareto or res.columns[0].fmt != "pct":
        return None
    obj = res.objective
    scale = 100
    base_score = res.baseline.score(obj)
    ok = [r for r in res.pareto if not r.baseline and scale * (base_score - r.score(obj)) <= max_drop_points]
    if not ok:
        return None
    all_measured = res.baseline.measured_latency_ms is not None and all(r.measured_latency_ms is not None for r in ok)
    key = "measured_latency_ms" if all_measured else "latency_ms"
    best = min(ok, key=lambda r: getattr(r, key))
    lat, base_lat = getattr(best, key), getattr(res.baseline, key)
    return {
        "trial": best.number,
        "arch": best.arch,
        "latency_key": key,
        "latency_ms": lat,
        "baseline_latency_ms": base_lat,
        "latency_change_pct": 100 * (lat / base_lat - 1),
        obj: best.score(obj),
        f"baseline_{obj}": base_score,
        f"{obj}_change_points": scale * (best.score(obj) - base_score),
    }


def render_report(res: SearchResult, summary: dict) -> str:
    cfg = res.config
    c = res.counts
    ob = cfg.objectives
    obj = res.objective
    lead = res.columns[0]
    lines = [
        f"# nasctl search report: {Path(cfg.space_file).name}",
        "",
        f"- strategy: {cfg.strategy}; study `{cfg.name}` in `{summary.get('storage', cfg.storage_url)}`",
        f"- objectives: {', '.join(f'{n} ({d})' for n, d in zip(ob.names, ob.directions, strict=True))}",
        f"- constraints: latency <= {ob.latency_budget_ms or '–'} ms, memory <= {ob.memory_budget_mb or '–'} MB",
        f"- latency estimator: {cfg.estimator}; data: {cfg.data}",
    ]
    describe = getattr(res.scorer_type, "describe", None)
    if describe is not None:
        lines.append(f"- {describe(cfg)}")
    lines += [
        f"- score: {obj} = {res.scorer_type.label}",
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
            f"The fastest Pareto arch within 1 point of the baseline's {obj} (trial {b['trial']}): "
            f"{b['latency_change_pct']:+.1f}% {b['latency_key'].replace('_', ' ')} "
            f"({b['latency_ms']:.3f} vs {b['baseline_latency_ms']:.3f} ms), "
            f"{obj} {lead.render(b[obj])} vs {lead.render(b[f'baseline_{obj}'])} "
            f"({b[f'{obj}_change_points']:+.1f} points).",
            "",
            f"`{b['arch']}`",
            "",
        ]
    cols = [col.label for col in res.columns]
    lines += [
        "## Pareto set (feasible)",
        "",
        "| trial | " + " | ".join(cols) + " | est. latency ms | measured ms | memory MB | params | arch id |",
        "|---" * (len(cols) + 6) + "|",
    ]
    n_measured = summary.get("measured_pareto") or 0
    if summary.get("measured_with") and n_measured < len(res.pareto):
        lines[-2:-2] = [f"Measured: the {n_measured} best-scored of the {len(res.pareto)} Pareto archs.", ""]
    rows = ([res.baseline] if res.baseline else []) + [r for r in res.pareto if not r.baseline]
    for r in rows:
        tag = " (baseline)" if r.baseline else ""
        scores = " | ".join(col.render(r.metrics.get(col.key)) for col in res.columns)
        lines.append(
            f"| {r.number}{tag} | {scores} | {_fmt(r.latency_ms)} | {_fmt(r.measured_latency_ms)} | "
            f"{_fmt(r.memory_mb, 2)} | {r.params:,} | `{r.arch_id}` |"
        )
    section = getattr(get_strategy(cfg.strategy), "report_section", None)
    if section is not None:  # the strategy's own part of the report (hybrid: its screen)
        lines += section(res)
    lines += retrain_section(res.out)
    lines += _finetune_section(res.out)
    failed = [r for r in res.records if r.state == "FAIL" and r.error]
    if failed:
        lines += ["", "## Failed trials", ""]
        for r in failed:
            last = r.error.strip().splitlines()[-1]
            lines.append(f"- trial {r.number}: `{last}` (traceback in the study: user attribute `error`)")
    lines += ["", "Files: `trials.csv`, `pareto.json`, `pareto.png`, `winners/` (arch.json + ONNX).", ""]
    return "\n".join(lines)


def _finetune_section(out: Path) -> list[str]:
    """The report's table of ``search --finetune`` (``finetune.json``), if the run has one."""
    from nasctl.search.retrain import FINETUNE_FILE

    path = out / FINETUNE_FILE
    if not path.is_file():
        return []
    ft = json.loads(path.read_text())
    b = ft["budget"]
    lines = [
        "",
        "## Fine-tuned winners",
        "",
        f"Each retrained stand-alone ({b['loss']} loss, {b['epochs']} epochs at batch {b['batch_size']}, no time cap, "
        f"seed {', '.join(map(str, b['seeds']))}) from the weights it inherits and from scratch; val accuracy.",
        "",
        "| trial | inherited | fine-tuned from inherited | from scratch | est. latency ms | arch id |",
        "|---|---|---|---|---|---|",
    ]
    for w in ft["winners"]:
        lines.append(
            f"| {w['trial']} | {_pct(w['inherited_accuracy'])} | {_pct(w['from_inherited']['accuracy_mean'])} | "
            f"{_pct(w['from_scratch']['accuracy_mean'])} | {_fmt(w['latency_ms'])} | `{w['arch_id']}` |"
        )
    return lines


def retrain_section(out: Path) -> list[str]:
    """The report's table of ``nasctl retrain`` (``retrain.json``), if the run has one."""
    from nasctl.search.retrain import RETRAIN_FILE

    path = out / RETRAIN_FILE
    if not path.is_file():
        return []
    rt = json.loads(path.read_text())
    b = rt["budget"]
    lines = [
        "",
        "## Retrained under one budget",
        "",
        f"The baseline and the best-scored Pareto archs retrained stand-alone under one identical budget "
        f"({b['loss']} loss, {b['epochs']} epochs at batch {b['batch_size']}, no time cap), seeds "
        f"{', '.join(map(str, b['seeds']))}; accuracy mean ± std over the seeds.",
        "",
        "| trial | search score | val acc | test acc | est. latency ms | measured ms | memory MB | params | arch id |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rt["rows"]:
        tag = " (baseline)" if r["baseline"] else ""
        lines.append(
            f"| {r['trial']}{tag} | {_fmt(r['search_score'], 4)} | {_pm(r['accuracy_mean'], r['accuracy_std'])} | "
            f"{_pm(r['test_accuracy_mean'], r['test_accuracy_std'])} | {_fmt(r['latency_ms'])} | "
            f"{_fmt(r['measured_latency_ms'])} | {_fmt(r['memory_mb'], 2)} | {r['params']:,} | `{r['arch_id']}` |"
        )
    f = rt.get("best_within_1_point")
    lines.append("")
    if f:
        lines.append(
            f"Best within 1 point of the baseline, fairly compared: trial {f['trial']}, "
            f"{f['latency_change_pct']:+.1f}% {f['latency_key'].replace('_', ' ')}, "
            f"{f['accuracy_change_points']:+.1f} points val accuracy "
            f"({_pm(f['accuracy_mean'], f['accuracy_std'])} vs "
            f"{_pm(f['baseline_accuracy_mean'], f['baseline_accuracy_std'])})."
        )
    else:
        lines.append("No retrained arch is within 1 point of the baseline's mean val accuracy.")
    return lines


def _pm(mean: float, std: float) -> str:
    return f"{100 * mean:.1f}% ± {100 * std:.1f}"


def _pct(v) -> str:
    return "–" if v is None else f"{100 * v:.1f}%"


def _fmt(v, digits=3) -> str:
    return "–" if v is None else f"{v:.{digits}f}"
