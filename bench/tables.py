"""Print the README's benchmark tables (markdown) from the JSON files under ``results/``, so
that the figures in the README are copied from what the benches wrote, not retyped.

    python bench/tables.py [NAME ...]     # e.g. latency_accuracy search_quality; default: all
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def _load(name: str) -> dict | None:
    path = RESULTS / f"{name}.json"
    return json.loads(path.read_text()) if path.is_file() else None


def _pct(x: float, digits: int = 1) -> str:
    return f"{100 * x:.{digits}f}%"


def _ms(cell: dict, scale: float = 100, digits: int = 1, unit: str = "%") -> str:
    """mean ± std of a ``mean_std`` cell."""
    return f"{scale * cell['mean']:.{digits}f}{unit} ± {scale * cell['std']:.{digits}f}"


def _head(d: dict) -> str:
    git = d.get("git", {})
    m = d.get("machine", {})
    return (
        f"<!-- {d['benchmark']}: commit {str(git.get('commit'))[:7]}{' (dirty)' if git.get('dirty') else ''}, "
        f"{m.get('cpu')}, {m.get('cores')} cores, {d.get('date')}; command: {d.get('command')} -->"
    )


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def latency_accuracy(d: dict) -> str:
    out = [_head(d)]
    cpu = d.get("cpu")
    if cpu:
        est = cpu["estimator"]
        out.append(
            f"estimator {est['path']} (fitted on {est['device'].get('cpu')}, {est['n_rows']} rows; "
            f"sha256 {est['sha256'][:12]})"
        )
        rows = [
            [
                s.removesuffix(".yaml"),
                f"{m['acc10']:.0f}%",
                f"{m['mape']:.1f}%",
                f"{m['noise_floor']['acc10']:.0f}% / {m['noise_floor']['mape']:.1f}%",
            ]
            for s, m in cpu["spaces"].items()
        ]
        out.append(_table(["space", "within ±10%", "MAPE", "noise floor (within ±10% / MAPE)"], rows))
        zoo = cpu.get("zoo", {})
        if zoo:
            rows = [
                [
                    n,
                    f"{z['estimated_ms']:.2f}",
                    f"{z['measured_ms']:.2f}",
                    f"{z['error_pct']:+.1f}%",
                    f"{(z['remeasured_ms'] - z['measured_ms']) / z['measured_ms'] * 100:+.1f}%",
                ]
                for n, z in zoo.items()
            ]
            out.append(_table(["model", "estimated ms", "measured ms", "error", "re-measured vs measured"], rows))
            zo = cpu["zoo_overall"]
            out.append(
                f"zoo: MAPE {zo['mape']:.1f}%, {zo['acc10']:.0f}% within ±10%; noise floor (re-measurement) "
                f"MAPE {zo['noise_floor']['mape']:.1f}%, {zo['noise_floor']['acc10']:.0f}% within ±10%"
            )
        rows = [
            [k, str(c["n"]), f"{c['mape']:.1f}%", f"{c['acc10']:.0f}%", f"{c['spearman']:.3f}"]
            for k, c in sorted(est["cv"].items(), key=lambda kv: -kv[1]["n"])
        ]
        out.append(_table(["kernel", "rows", "CV MAPE", "within ±10%", "Spearman"], rows))
        o = est["cv_overall"]
        out.append(f"all kernels: CV MAPE {o['mape']:.1f}%, {o['acc10']:.0f}% within ±10%")
    sim = d.get("sim_npu", {})
    mapes = [m["mape"] for spaces in sim.values() for m in spaces.values()]
    acc5 = [m["acc5"] for spaces in sim.values() for m in spaces.values()]
    if mapes:
        out.append(f"sim-npu: {min(acc5):.0f}-{max(acc5):.0f}% within ±5%, MAPE {min(mapes):.2f}-{max(mapes):.2f}%")
    return "\n\n".join(out)


def latency_unseen(d: dict) -> str:
    """The estimator on the zoo: leave-one-family-out, every family in training, the
    shipped estimator unadapted and adapted by measure --quick; raw and at the reference
    speed, each beside its noise floor; then per model, and the per-kernel CV table."""
    keys = (
        ("lofo", "fitted here, leave-one-family-out"),
        ("full", "fitted here, every family in training"),
        ("shipped", "shipped cpu (another machine), unadapted"),
        ("quick", "shipped cpu adapted by measure --quick"),
    )
    rows = []
    for key, label in keys:
        for view in ("at_reference_speed", "raw"):
            if view not in d[key]:
                continue
            o = d[key][view]["overall"]
            rows.append(
                [
                    label,
                    "at reference speed" if view != "raw" else "raw",
                    f"{o['mape']:.1f}%",
                    f"{o['acc10']:.0f}% ({round(o['acc10'] * o['n'] / 100)}/{o['n']})",
                    f"{o['noise_floor_mape']:.1f}%",
                    f"{o['spearman']:.3f}",
                ]
            )
    out = [_head(d), _table(["estimator", "measured", "MAPE", "within ±10%", "noise floor MAPE", "Spearman"], rows)]
    per = []
    for n in sorted(d["measured_ms"]):
        cells = [n, f"{d['measured_ms'][n]:.2f}"]
        for key, _ in keys:
            r = d[key].get("at_reference_speed", d[key]["raw"])
            cells.append(f"{r['per_model'][n]['error_pct']:+.1f}%")
        cells.append(f"{d['noise_floor_pct'][n]:.1f}%")
        per.append(cells)
    out.append(_table(["model", "measured ms (raw)", "LOFO", "full", "shipped", "quick", "noise (raw)"], per))
    cv = d["fit"]["report"].get("cv", {})

    def weight(c: dict) -> list[str]:
        if "median_ms" not in c:
            return []
        return [f"{c['median_ms']:.3f}", f"{100 * c['time_share']:.1f}%", f"{c['mae_ms'] * 1e3:.0f}"]

    weighed = any("median_ms" in c for c in cv.values())
    out.append(
        _table(
            ["kernel", "rows"]
            + (["median ms", "share of time", "CV mean abs error µs"] if weighed else [])
            + ["CV MAPE", "within ±10%", "Spearman"],
            [
                [g, str(c["n"]), *weight(c)]
                + [f"{c['mape']:.1f}%", f"{c['acc10']:.0f}%", f"{c.get('spearman', float('nan')):.3f}"]
                for g, c in sorted(cv.items(), key=lambda kv: -kv[1]["n"])
                if "mape" in c
            ],
        )
    )
    return "\n\n".join(out)


def measure_modes(d: dict) -> str:
    rows = []
    for space, modes in d["spaces"].items():
        cells = [
            f"{_ms(m['acc10'], 1, 0)} within ±10%, MAPE {_ms(m['mape'], 1, 1)}, "
            f"estimate/measured ×{_ms(m['median_ratio'], 1, 2, '')}"
            for m in (modes["isolated"], modes["in-context"])
        ]
        rows.append([space.removesuffix(".yaml"), *cells])
    csvs = "; ".join(
        f"{k}: {v['meta'].get('rows')} rows, {v['meta'].get('networks')} networks" for k, v in d["csv"].items()
    )
    return "\n\n".join([_head(d), _table(["space", "isolated kernels", "in context"], rows), csvs])


def latency_speed(d: dict) -> str:
    a = d["arch_estimates_per_s"]
    o = d["onnx"]
    ph = ", ".join(f"{k} {v:.1f}" for k, v in o["estimate_phases_ms"].items())
    extra = []
    if "whole_command" in d:  # results from before the whole-command timing have none
        extra.append(
            "- whole `nasctl estimate` command: "
            + ", ".join(
                f"{k} median {c['median_s']:.2f} s (min {c['min_s']:.2f})" for k, c in d["whole_command"].items()
            )
        )
    if "targets" in d:
        extra.append(
            "- targets: "
            + "; ".join(f"{t['target']} {t['bound']}: {'pass' if t['pass'] else 'FAIL'}" for t in d["targets"])
        )
    return "\n".join(
        [
            _head(d),
            f"- load average {d['load_average_start']:.1f} at the start, {d['load_average_end']:.1f} at the end",
            "- Arch estimates/s, cold cache: "
            + ", ".join(f"{s.removesuffix('.yaml')} {v['cold']:,.0f}" for s, v in a.items())
            + "; warm: "
            + ", ".join(f"{s.removesuffix('.yaml')} {v['warm']:,.0f}" for s, v in a.items()),
            f"- {o['model']} ({o['file_mb']:.0f} MB, {o['n_kernels']} kernels): estimate "
            f"{o['estimate_ms']['cold_cache']:.1f} ms cold ({ph} ms), {o['estimate_ms']['warm_cache']:.1f} ms warm; "
            f"measure {o['measure_ms']['minimal']:.0f} ms (one measurement), {o['measure_ms']['accuracy']:.0f} ms "
            f"(measurement + re-measurement); speed-up {o['speedup']['minimal_vs_cold']:.0f}x and "
            f"{o['speedup']['accuracy_vs_cold']:.0f}x (cold)",
            *extra,
        ]
    )


def contrastive_sweep(d: dict) -> str:
    c = d["config"]
    rows = [
        [f"{row['shape']:g}", f"{row['momentum']:g}", _ms(row["val_linear_probe"])]
        for row in sorted(d["table"].values(), key=lambda r: -r["val_linear_probe"]["mean"])
    ]
    best = d["best"]
    return "\n\n".join(
        [
            _head(d),
            f"gamma, {c['steps']} steps at batch {c['batch_size']}, tuning seeds {c['seeds']}, "
            f"validation linear probe; best: a = {best['shape']:g}, momentum {best['momentum']:g}",
            _table(["shape a", "momentum", "linear probe (val)"], rows),
        ]
    )


def _ci(p: dict, scale: float = 1, digits: int = 1) -> str:
    lo, hi = p["ci95"]
    return f"{scale * p['mean']:+.{digits}f} [{scale * lo:+.{digits}f}, {scale * hi:+.{digits}f}]"


def contrastive_compare(d: dict) -> str:
    c = d["config"]
    t = d["table"]
    rows = []
    for bs in c["batch_sizes"]:
        for loss in c["loss"]:
            row = t[f"{loss}/{bs}"]
            rows.append(
                [
                    f"{loss}",
                    f"{bs}",
                    f"{row['lr']:g}",
                    f"{row['epochs_done']:.1f}",
                    _ms(row["linear_probe"]),
                    _ms(row["knn"]),
                ]
            )
    r = t["random_init"]
    rows.append(["random init (BN recalibrated)", "", "", "", _ms(r["linear_probe"]), _ms(r["knn"])])
    pairs = [
        [
            name.split("/")[2].replace("gamma-", "gamma − "),
            name.split("/")[1].replace("bs", "").replace("-vs-", " vs "),
            name.split("/")[0],
            _ci(p),
        ]
        for name, p in d["paired_gamma_minus"].items()
    ]
    return "\n\n".join(
        [
            _head(d),
            f"{c['steps']} steps every run, lr {c['base_lr']:g} × batch / 32, seeds {c['seeds']}, mean ± std",
            _table(["loss", "batch", "lr", "epochs", "linear probe (test)", "kNN (test)"], rows),
            "paired by seed (points), mean [95% t-interval]",
            _table(["difference", "batch", "metric", "points"], pairs),
        ]
    )


def contrastive_synthetic(d: dict) -> str:
    c = d["config"]
    order = ("ntxent", "dcl", "sogclr", "gamma")
    rows, pairs = [], []
    for cell in d["cells"].values():
        n, b = f"{cell['noise']:g}", str(cell["batch"])
        rows.append(
            [n, b]
            + [f"{r['mean']:.3f} ({r['reached_0.99']}/{len(r['finals'])})" for r in (cell["losses"][o] for o in order)]
        )
        pairs.append(
            [n, b]
            + [
                f"{_ci(p, 1, 3)}, p = {p['wilcoxon_p']:.2g}"
                for p in (cell["paired_gamma_minus"][o] for o in order[:-1])
            ]
        )
    tuned = [
        f"noise {cell['noise']:g}, batch {cell['batch']}: "
        + "; ".join(
            f"{loss} " + ", ".join(f"{k} {v:g}" for k, v in cell["losses"][loss]["hyperparameters"].items())
            for loss in order
        )
        for cell in d["cells"].values()
    ]
    return "\n\n".join(
        [
            _head(d),
            f"{len(c['seeds'])} reported seeds, {c['steps']} steps; final retrieval accuracy, mean (runs >= 0.99)",
            _table(["noise", "batch", *order], rows),
            "gamma minus each other loss, paired by seed: mean [95% t-interval], Wilcoxon p",
            _table(["noise", "batch", *(f"gamma − {o}" for o in order[:-1])], pairs),
            "tuned (on seeds " + ", ".join(map(str, c["tuning_seeds"])) + "):\n" + "\n".join(f"- {t}" for t in tuned),
        ]
    )


def contrastive_gradient_bias(d: dict) -> str:
    """Per task and batch: the relative gradient bias ||E[g_b] - g|| / ||g|| (embedding space,
    paired estimate) at each checkpoint; at the last checkpoint the variance tr Cov / ||g||^2
    and the parameter-space relative bias."""
    out = [_head(d)]
    for task, t in d["tasks"].items():
        ck = t["checkpoints"]
        last = ck[-1]
        for b in t["batches"]:
            rows = []
            for label in d["rows"]:
                cells = [f"{c['rows'][label][str(b)]['embedding']['paired']['relative_bias']:.3f}" for c in ck]
                r = last["rows"][label][str(b)]
                par = r["parameter"]
                pb = "–" if not par else f"{(par['paired'] if 'paired' in par else par)['relative_bias']:.3f}"
                rows.append([label, *cells, f"{r['embedding']['variance']:.3g}", pb])
            steps = [f"bias @ step {c['step']}" for c in ck]
            out.append(f"{task}, batch {b}")
            out.append(
                _table(["loss", *steps, f"variance @ {last['step']}", f"parameter-space bias @ {last['step']}"], rows)
            )
        z = ", ".join(
            f"step {c['step']}: {c['zhat_abs_log_error']['median']:.2f} / {c['zhat_abs_log_error']['p90']:.2f}"
            for c in ck
        )
        out.append(f"{task}: |log Zhat − log Z| of the trained estimate, median / p90: {z}")
    return "\n\n".join(out)


def search_quality(d: dict) -> str:
    runs = d["runs"]
    seeds = sorted({r["seed"] for r in runs})
    by = {(r["sampler"], r["seed"]): r for r in runs}
    rows = [
        [
            str(s),
            f"{by[('nsga2', s)]['hypervolume']:.3f}",
            f"{by[('random', s)]['hypervolume']:.3f}",
            str(by[("nsga2", s)]["pareto_size"]),
            str(by[("random", s)]["pareto_size"]),
        ]
        for s in seeds
    ]
    t = d["table"]
    rows.append(
        ["mean ± std", _ms(t["nsga2"]["hypervolume"], 1, 3, ""), _ms(t["random"]["hypervolume"], 1, 3, ""), "", ""]
    )
    best = []
    for r in runs:
        b = r["best_vs_baseline"]
        if b:
            best.append(
                f"{r['sampler']} seed {r['seed']}: {b['latency_change_pct']:+.1f}% ({b['latency_key']}), "
                f"{b['accuracy_change_points']:+.1f} points"
            )
    return "\n\n".join(
        [
            _head(d),
            _table(["seed", "NSGA-II HV", "random HV", "NSGA-II front", "random front"], rows),
            f"NSGA-II ahead in {t['nsga2_ahead_in_seeds']} seeds",
            "\n".join(f"- {b}" for b in best),
        ]
    )


def search_scaling(d: dict) -> str:
    t = d["table"]
    return "\n".join(
        [
            _head(d),
            f"1 worker {_ms(t['1_worker_s'], 1, 0, ' s')}, 2 workers {_ms(t['2_workers_s'], 1, 0, ' s')}, "
            f"speed-up {_ms(t['speedup'], 1, 2, 'x')} ({d['config']['repeats']} repeats)",
        ]
    )


def search_acceptance(d: dict) -> str:
    rows = []
    for r in [d["baseline"], *[p for p in d["pareto"] if not p.get("baseline")]]:
        rows.append(
            [
                f"{r['number']}{' (baseline)' if r.get('baseline') else ''}",
                _pct(r["accuracy"]),
                _pct(r["test_accuracy"]),
                f"{r['epochs_done']:.1f}",
                f"{r['latency_ms']:.3f}",
                f"{r.get('measured_latency_ms', float('nan')):.3f}",
                f"{r['params'] / 1000:.0f}k",
            ]
        )
    b = d["best_vs_baseline"]
    line = (
        f"best within 1 point of the baseline: trial {b['trial']}, {b['latency_change_pct']:+.1f}% "
        f"({b['latency_key']}), {b['accuracy_change_points']:+.1f} points"
        if b
        else "no arch within 1 point of the baseline"
    )
    return "\n\n".join(
        [
            _head(d),
            f"killed after {d['killed_after_s']:.0f} s ({d['complete_when_killed']} complete), re-run "
            f"{d['rerun_s']:.0f} s; states {d['states']}",
            _table(["trial", "val acc", "test acc", "epochs", "estimated ms", "measured ms", "params"], rows),
            line,
        ]
    )


def pretrain_overhead(d: dict) -> str:
    rows = [
        [
            k.removesuffix("_seconds").replace("_", " "),
            *(_ms(d["table"][v][k], 1, 2, " s") for v in ("command", "in_process")),
        ]
        for k in d["table"]["in_process"]
    ]
    c = d["table"]["command"]["command_wall_seconds"]
    return "\n\n".join(
        [
            _head(d),
            _table(["part", "fresh process (the command)", "in process, after a first run"], rows),
            f"whole command {_ms(c, 1, 1, ' s')}; largest fixed cost {d['max_fixed_seconds']:.2f} s",
        ]
    )


def eval_speed(d: dict) -> str:
    rows = [[b, *(f"{v:.2f} s" for v in row.values())] for b, row in d["median"].items()]
    head = list(next(iter(d["median"].values())))
    return "\n\n".join([_head(d), _table(["eval batch", *head], rows)])


def proxy_eval(d: dict) -> str:
    out = [_head(d)]
    rows = []

    def tau(kv):
        t = kv[1]["kendall_tau"]
        return -(t if t is not None else -9)

    for name, r in sorted(d["table"].items(), key=tau):
        lo, hi = r["tau_ci95"]
        rows.append(
            [
                f"`{name}`" + (" (baseline)" if name in ("params", "flops") else ""),
                f"{r['kendall_tau']:+.3f}",
                f"[{lo:+.2f}, {hi:+.2f}]",
                f"{r['spearman_rho']:+.3f}",
                f"{100 * r['top10_precision']:.0f}%",
            ]
        )
    out.append(_table(["score", "Kendall tau", "95% interval", "Spearman rho", "top-10% precision"], rows))
    c = d.get("seed_ceiling")
    acc = d["accuracy"]
    cfg = d["config"]["eval_config"]
    text = (
        f"{len(d['archs'])} archs, {cfg['epochs']} epochs at batch {cfg['batch_size']} ({cfg['loss']}), seeds "
        f"{cfg['seeds']}, scores at batch {cfg['proxy_batch']}; val accuracy {100 * acc['min']:.1f}-"
        f"{100 * acc['max']:.1f}% (mean {100 * acc['mean']:.1f}%)."
    )
    if c:
        text += (
            f" Ceiling, seed {c['seeds'][0]} vs seed {c['seeds'][1]}: tau {c['kendall_tau']:.3f} "
            f"[{c['tau_ci95'][0]:.2f}, {c['tau_ci95'][1]:.2f}]."
        )
    out.append(text)
    b = d["beats_baselines"]
    out.append(
        f"Higher tau than both baselines (the better one: {b['baseline_tau']:.3f}): "
        f"{', '.join(b['higher_tau']) or 'none'}; "
        f"whole 95% interval above it: {', '.join(b['interval_above']) or 'none'}."
    )
    return "\n\n".join(out)


def zeroshot_speed(d: dict) -> str:
    out = [_head(d)]
    a = d["config"]
    rows = [
        [f"`{n}`", f"{r['candidates_per_min']:.0f}", f"{1000 * r['mean_s']:.0f}", f"{1000 * r['p90_s']:.0f}"]
        for n, r in sorted(d["rates"].items(), key=lambda kv: -kv[1]["candidates_per_min"])
    ]
    out.append(
        f"{a['archs']} archs of the default space, batch {a['proxy_batch']}, {a['threads']} threads "
        "(a fresh model per arch, as in a search):"
    )
    out.append(_table(["score", "candidates / min", "mean ms", "p90 ms"], rows))
    st = d.get("storage")
    if st:
        out.append(
            f"Storage alone (NSGA-II, {st['parameters']} parameters and 10 attributes per trial, no-op objective): "
            + ", ".join(
                f"{k.replace('_', ' ')} {st[k]['trials_per_min']:.0f} trials/min"
                for k in ("sqlite", "journal", "memory_then_journal")
            )
            + "."
        )
    for key in ("search", "search_measured", "search_naswot"):
        s = d.get(key)
        if s:
            out.append(
                f"- `search --strategy zeroshot --trials {s['trials']}`, proxy {s['proxy']} "
                f"({'with' if s['measure'] else 'without'} "
                f"measuring the winners): {s['total_s']:.0f} s in all (prepare {s['prepare_s']:.1f} s, search "
                f"{s['search_s']:.0f} s = {s['trials_per_min']:.0f} trials/min, outputs {s['outputs_s']:.1f} s); "
                f"{s['duplicates']} duplicate archs not re-scored, {s['pareto']} on the Pareto front."
            )
    return "\n\n".join(out)


def supernet_rank(d: dict) -> str:
    """Kendall tau of each ranking against stand-alone accuracy, and the search cost."""
    names = {
        "distill_recal": "supernet, distilled, BN recalibrated",
        "distill_norecal": "supernet, distilled, shared BN statistics",
        "nodistill_recal": "supernet, no distillation, BN recalibrated",
        "nodistill_norecal": "supernet, no distillation, shared BN statistics",
        "params": "params (baseline)",
        "flops": "FLOPs (baseline)",
        "seed_vs_seed": "stand-alone, seed 0 vs seed 1 (ceiling for one seed)",
        "half_vs_half": "stand-alone, mean of seeds 0-1 vs mean of seeds 2-3",
    }
    rows = []
    for key, label in names.items():
        t = d["tau"].get(key)
        if t:
            lo, hi = t["tau_ci90"]
            rows.append([label, f"{t['kendall_tau']:+.3f}", f"[{lo:+.2f}, {hi:+.2f}]", f"{t['spearman_rho']:+.3f}"])
    out = [_head(d), _table(["ranking", "Kendall tau", "90% interval", "Spearman rho"], rows)]
    c = d["cost"]
    out.append(
        f"Search cost (variant {c['variant']}, latency budget {c['latency_budget_ms']:.3f} ms, the median): "
        f"single-shot {c['singleshot_seconds'] / 60:.1f} min (supernet {c['supernet_train_seconds'] / 60:.1f} min "
        f"+ {c['inherited_score_seconds_per_arch']:.1f} s per subnet scored) picks a subnet of stand-alone accuracy "
        f"{_pct(c['picked_standalone_accuracy'])} (best in budget {_pct(c['best_standalone_accuracy_in_budget'])}); "
        f"a random-sampling multishot search needs {c['multishot_expected_trials']:.1f} stand-alone trainings "
        f"({c['standalone_train_seconds_per_arch']:.0f} s each) to reach it: {c['multishot_seconds'] / 60:.1f} min."
    )
    return "\n\n".join(out)


def seed_table(d: dict) -> str:
    """The seed's table: per target, baseline / V1 / V2 / V3 / refine / memory, with the
    latency cuts (estimated; simulated or measured), the retrained accuracy and its gap."""
    out = [_head(d)]
    if not d.get("complete"):
        out.append("(partial: the bench has not finished every row)")
    b = d["baseline"]
    for target, rows in d["targets"].items():
        base = rows["baseline"]
        head = [
            "row",
            "latency cut (est.)",
            "simulated" if target.startswith("sim") else "measured",
            "val accuracy",
            "gap (points) [90% CI]",
            "params",
            "peak act. KB",
            "search s",
        ]
        table = [
            [
                "baseline",
                f"{base['latency_ms']:.3f} ms",
                f"{base.get('simulated_ms', base.get('measured_ms', float('nan'))):.3f} ms"
                + (f" (noise {base['pass_disagreement_pct']:.1f}%)" if "pass_disagreement_pct" in base else ""),
                f"{100 * b['accuracy_mean']:.1f}% ± {100 * b['accuracy_std']:.1f}",
                "",
                f"{base['params']:,}",
                f"{base['peak_activation_bytes'] / 1024:.0f}",
                "",
            ]
        ]
        for v, row in rows.items():
            if v == "baseline":
                continue
            w = row.get("winner")
            if not w:
                why = row.get("error") or f"no retrained Pareto arch within 1 point ({len(row.get('tried', []))} tried)"
                table.append([v, why, "", "", "", "", "", ""])
                continue
            g = w["gap_points"]
            ci = f" [{g['ci90'][0]:+.1f}, {g['ci90'][1]:+.1f}]" if g.get("ci90") else ""
            other = w.get("simulated_cut_pct", w.get("measured_cut_pct"))
            noise = f" (noise {w['pass_disagreement_pct']:.1f}%)" if "pass_disagreement_pct" in w else ""
            table.append(
                [
                    v,
                    f"{w.get('latency_cut_pct', float('nan')):+.1f}%",
                    "" if other is None else f"{other:+.1f}%{noise}",
                    f"{100 * w['accuracy_mean']:.1f}% ± {100 * w['accuracy_std']:.1f}",
                    f"{g['mean']:+.1f}{ci}",
                    f"{w['params']:,}",
                    f"{w['peak_activation_bytes'] / 1024:.0f}",
                    f"{row['search_seconds']:.0f}" if "search_seconds" in row else "",
                ]
            )
        out.append(f"**{target}**\n\n" + _table(head, table))
    return "\n\n".join(out)


def curate_steps(d: dict) -> str:
    rows = []
    for key, r in d["curate"].items():
        s = r["steps"]
        rows.append(
            [
                key,
                str(s["period"]),
                str(s["phase"]),
                f"{s['p_value']:.3f}",
                f"{r['baseline_ms']:.3f} -> {r['curated_baseline_ms']:.3f}",
            ]
        )
    out = [_head(d), _table(["space/target", "step", "phase", "p", "baseline ms before -> after"], rows)]
    m = d["cpu_measured"]
    out.append(
        f"cpu measured ({m['stage']}, widths {m['widths'][0]}-{m['widths'][-1]}, {m['rounds']} rounds): odd width "
        f"{m['measured_odd_over_next_even_pct']:+.1f}% vs the next even (estimated "
        f"{m['estimated_odd_over_next_even_pct']:+.1f}%), "
        f"noise floor {m['noise_floor_pct']['median_range_over_rounds']:.1f}%"
    )
    return "\n\n".join(out)


def multimodal_gap(d: dict) -> str:
    """Per caption-mention probability p: each variant's test accuracies (mean ± std over
    seeds) on the shared task, each modality-only task and retrieval, and the paired
    difference to plain InfoNCE on the modality-only tasks."""
    out = [_head(d)]
    if not d.get("complete"):
        out.append(f"(partial: {d['runs_done']} of {d['runs_total']} runs; a cell shows how many seeds it has)")
    cells = d["cells"]
    tasks = {**d["tasks"], "i2t_r5": "image->text R@5", "t2i_r5": "text->image R@5"}
    keys = list(tasks)
    ps = sorted({c["p"] for c in cells.values()})
    for p in ps:
        rows = []
        for c in (c for c in cells.values() if c["p"] == p):

            def cell(k: str, c: dict = c) -> str:
                v = c[k]
                return f"{100 * v['mean']:.1f}" + (f" ± {100 * v['std']:.1f}" if v["std"] is not None else "")

            n = "" if c["seeds"] == max(x["seeds"] for x in cells.values()) else f" ({c['seeds']} seeds)"
            rows.append([c["variant"] + n, *(cell(k) for k in keys)])
        out.append(f"**p = {p}** (test split, %)\n\n" + _table(["variant", *tasks.values()], rows))
    return "\n\n".join(out)


TABLES = {
    "latency_accuracy": latency_accuracy,
    "latency_accuracy_sim": latency_accuracy,
    "latency_unseen": latency_unseen,
    "measure_modes": measure_modes,
    "latency_speed": latency_speed,
    "contrastive_gradient_bias": contrastive_gradient_bias,
    "contrastive_sweep": contrastive_sweep,
    "contrastive_compare": contrastive_compare,
    "contrastive_synthetic": contrastive_synthetic,
    "search_quality": search_quality,
    "search_scaling": search_scaling,
    "search_acceptance": search_acceptance,
    "pretrain_overhead": pretrain_overhead,
    "eval_speed": eval_speed,
    "proxy_eval": proxy_eval,
    "proxy_eval_b32": proxy_eval,
    "zeroshot_speed": zeroshot_speed,
    "supernet_rank": supernet_rank,
    "seed_table": seed_table,
    "curate_steps": curate_steps,
    "multimodal_gap": multimodal_gap,
}


def main() -> None:
    names = sys.argv[1:] or list(TABLES)
    for name in names:
        if name not in TABLES:
            sys.exit(f"unknown table {name!r} (known: {', '.join(TABLES)})")
        d = _load(name)
        print(f"## {name}\n")
        print(TABLES[name](d) if d else f"(no results/{name}.json)")
        print()


if __name__ == "__main__":
    main()
