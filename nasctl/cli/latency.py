"""`nasctl measure`, `nasctl fit-estimator`, `nasctl estimate`: latency."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich import box
from rich.console import Console
from rich.table import Table

from nasctl.cli.common import app, console, handle_errors, human, print_json, short_name, stderr_progress
from nasctl.errors import NasctlError


@app.command()
@handle_errors
def measure(
    out: Annotated[
        Path,
        typer.Option(
            help="CSV to write (device metadata goes to a .meta.json beside it); with --quick, the adapted "
            "estimator file (.json or .json.gz)."
        ),
    ],
    device: Annotated[
        str, typer.Option(help="cpu (onnxruntime) | sim-npu (the documented simulator, not hardware).")
    ] = "cpu",
    time_budget: Annotated[
        float, typer.Option("--time-budget", help="Stop after SECONDS (--quick: at most 70).", metavar="SECONDS")
    ] = 600.0,
    mode: Annotated[
        str, typer.Option(help="models: kernels timed inside random networks (profiler); kernels: alone.")
    ] = "models",
    threads: Annotated[int, typer.Option(min=1, help="onnxruntime intra-op threads (pinned).")] = 1,
    parallelism: Annotated[int, typer.Option(min=1, help="sim-npu: the array's parallelism factor P.")] = 16,
    space_files: Annotated[
        Optional[list[Path]],
        typer.Option("--space", help="Spaces to sample networks from (repeatable; default: the shipped ones)."),
    ] = None,
    seed: Annotated[
        Optional[int], typer.Option(help="Random seed (default: 0; with --quick, its fixed reference set).")
    ] = None,
    target_error: Annotated[
        float,
        typer.Option(
            "--target-error",
            metavar="PCT",
            help="Warn when the machine's noise figure (a reference network's spread) exceeds PCT percent.",
        ),
    ] = 5.0,
    quick: Annotated[
        bool,
        typer.Option(
            "--quick",
            help="Adapt an existing estimator (--estimator) to this machine in about 90 s instead of measuring "
            "for a new one; --out is the adapted estimator.",
        ),
    ] = False,
    estimator: Annotated[
        str, typer.Option(help="With --quick: the estimator to adapt (file, or shipped: cpu).")
    ] = "cpu",
    as_json: Annotated[bool, typer.Option("--json", help="Print the run's metadata as JSON.")] = False,
) -> None:
    """Time kernels on a device and write a measurements CSV for `nasctl fit-estimator`.

    The CSV has the kernel features, `latency_ms` and its spread. The device, the runtime
    version, the thread count and the CPU model go in the `.meta.json` beside it, with
    the machine's noise figure (a fixed reference network timed between the networks).

    `--quick` adapts an estimator fitted on another machine instead: it measures a fixed
    set of reference networks for about 70 s, fits a correction per kernel type, and
    says what error to expect (leave-one-network-out), against the unadapted estimator.

    Examples: `nasctl measure --device cpu --time-budget 600 --out estimators/cpu.csv`,
    `nasctl measure --quick --estimator cpu --out cpu-here.json.gz`
    """
    from rich.progress import BarColumn, TextColumn, TimeRemainingColumn

    from nasctl.latency.measure import measure as run_measure

    to_adapt = None
    if quick:  # every bad input fails here, before the progress bar starts
        if device != "cpu" or mode != "models":
            raise NasctlError("--quick adapts a cpu estimator (--device cpu, --mode models)")
        if out.suffix not in (".json", ".gz", ".xz"):
            raise NasctlError(f"{out}: --quick writes an estimator: give --out a .json or .json.gz path")
        from nasctl.latency.adapt import QUICK_BUDGET_S, check_adaptable
        from nasctl.latency.api import estimator_path
        from nasctl.latency.estimator import LatencyEstimator

        to_adapt = check_adaptable(LatencyEstimator.load(estimator_path(estimator)), estimator)
        time_budget = min(time_budget, QUICK_BUDGET_S)

    with stderr_progress(
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        TimeRemainingColumn(),
        quiet=as_json,
        transient=as_json,
    ) as bar:
        task = bar.add_task(f"measuring on {device}", total=time_budget)

        def progress(elapsed: float, nets: int, rows: int) -> None:
            bar.update(
                task,
                completed=min(elapsed, time_budget),
                description=f"measuring on {device}: {nets} networks, {rows} rows",
            )

        with warnings.catch_warnings():  # failed exports and noise are reported below, in one line each
            warnings.simplefilter("ignore", RuntimeWarning)
            if to_adapt is not None:
                return _quick(out, to_adapt, estimator, time_budget, threads, seed, target_error, progress, as_json)
            meta = run_measure(
                out,
                device=device,
                time_budget=time_budget,
                mode=mode,
                threads=threads,
                parallelism=parallelism,
                space_files=space_files,
                progress=progress,
                seed=0 if seed is None else seed,
                target_error=target_error,
            )
    if not as_json:  # with --json, the noise block is in the JSON
        _noise_line(meta.get("noise", {}))
    if meta.get("failed_networks"):
        reasons = "; ".join(meta.get("failure_reasons", []))
        Console(stderr=True).print(
            f"[yellow]warning:[/] {meta['failed_networks']} networks failed to export to ONNX and were skipped "
            f"({reasons})",
            highlight=False,
        )
    if as_json:
        print_json(meta)
        return
    label = " (SIMULATED)" if meta["device"].get("simulated") else ""
    console.print(
        f"wrote {out}: {meta['rows']} rows from {meta['networks']} networks in {meta['seconds']} s "
        f"on {meta['device'].get('cpu', meta['device']['device'])}{label}"
    )


def _noise_line(noise: dict) -> None:
    """The noise warning on stderr when the machine was too noisy for the target."""
    if noise.get("too_noisy"):
        from nasctl.latency.measure import noise_warning

        Console(stderr=True).print(f"[yellow]warning:[/] {noise_warning(noise)}", highlight=False)


def _quick(
    out: Path, est, source: str, budget: float, threads: int, seed, target: float, progress, as_json: bool
) -> None:
    from nasctl.latency.adapt import QUICK_SEED, adapt

    adapted, report = adapt(est, source, budget, threads, QUICK_SEED if seed is None else seed, target, progress)
    adapted.save(out)
    report["out"] = str(out)
    if as_json:
        print_json(report)
        return
    _noise_line(report["noise"])
    exp = report["expected"]
    t = Table(box=box.SIMPLE_HEAD, title=f"Expected error here ({exp['networks']} reference networks, each left out)")
    for col in ("estimator", "MAPE %", "within 10 %", "Spearman"):
        t.add_column(col, justify="left" if col == "estimator" else "right")
    for key, label in (("unadapted", f"{source} as fitted"), ("adapted", "adapted (--quick)")):
        if key in exp:
            m = exp[key]
            t.add_row(label, f"{m['mape']:.1f}", f"{m['acc10']:.0f}", f"{m['spearman']:.3f}")
    console.print(t)
    noise = report["noise"].get("noise_pct")
    floor = f"; noise figure +-{noise:.1f}%" if noise is not None else ""
    console.print(
        f"wrote {out}: {source} adapted to this machine from {report['networks']} networks "
        f"({report['seconds']} s{floor})"
    )


# ---------------------------------------------------------------------------- fit-estimator
@app.command("fit-estimator")
@handle_errors
def fit_estimator(
    csv_files: Annotated[
        list[Path], typer.Argument(metavar="MEASUREMENTS.csv...", help="Measurement CSVs from `nasctl measure`.")
    ],
    out: Annotated[Path, typer.Option(help="Estimator file to write (JSON with LightGBM text models).")],
    folds: Annotated[int, typer.Option(min=2, help="Cross-validation folds.")] = 5,
    quantiles: Annotated[
        bool, typer.Option("--quantiles", help="Also fit 10%/90% quantile models (uncertainty band).")
    ] = False,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
    as_json: Annotated[bool, typer.Option("--json", help="Print the cross-validation report as JSON.")] = False,
) -> None:
    """Fit LightGBM latency regressors per kernel type, report k-fold cross-validation
    (MAPE, +-5/10/15% accuracy, Spearman; RMSPE too with --json) beside each type's median
    time and share of all kernel time, and save the estimator.

    Example: `nasctl fit-estimator estimators/cpu.csv --out estimators/cpu.json.gz` (`.gz`: compressed)
    """
    from nasctl.latency.estimator import LatencyEstimator, read_measurements

    table = read_measurements(csv_files)
    with console.status("fitting") as status:
        est = LatencyEstimator().fit(
            table, folds=folds, quantiles=quantiles, seed=seed, progress=None if as_json else status.update
        )
    est.save(out)
    report = {
        "out": str(out),
        "device": est.device,
        "cv": est.meta["cv"],
        "cv_overall": est.meta["cv_overall"],
        "overhead": est.meta["overhead"],
        "rows_per_group": est.meta["rows_per_group"],
    }
    if as_json:
        print_json(report)
        return
    t = Table(title=f"{folds}-fold cross-validation per kernel type", title_justify="left", box=box.SIMPLE_HEAD)
    cols = ("kernel", "rows", "median ms", "time %", "MAPE %", "+-5 %", "+-10 %", "+-15 %", "Spearman")
    for col in cols:
        t.add_column(col, justify="left" if col == "kernel" else "right")
    rows = list(est.meta["cv"].items()) + [("all", est.meta["cv_overall"])]
    for g, m in rows:
        if "mape" not in m:
            continue
        t.add_row(
            g,
            str(m["n"]),
            f"{m['median_ms']:.3f}" if "median_ms" in m else "",
            f"{100 * m['time_share']:.1f}" if "time_share" in m else "",
            f"{m['mape']:.1f}",
            f"{m['acc5']:.0f}",
            f"{m['acc10']:.0f}",
            f"{m['acc15']:.0f}",
            f"{m.get('spearman', float('nan')):.3f}",
        )
    console.print(t)
    o = est.meta["overhead"]
    if o.get("n", 0) >= 5:
        line = (
            f"whole network = {o['scale']:.3f} x kernel sum + {o['intercept_ms']:.3f} ms "
            f"+ {o['per_kernel_ms'] * 1e3:.1f} us per kernel ({o['n']} networks)"
        )
        cost = o.get("profiler", {}).get("per_extra_node_ms", 0.0)
        if cost:
            line += f"; profiler cost taken off kernel times: {cost * 1e3:.1f} us per node beyond a kernel's first"
        console.print(line)
    dev = est.device
    label = " (SIMULATED)" if dev.get("simulated") else ""
    console.print(f"wrote {out} (device: {dev.get('device', '?')}{label})")


# ---------------------------------------------------------------------------- estimate
@app.command()
@handle_errors
def estimate(
    model: Annotated[
        str, typer.Argument(metavar="MODEL.onnx|ARCH.json", help="An ONNX model, an arch.json or an arch string.")
    ],
    estimator: Annotated[
        str, typer.Option(help="Estimator file, or a shipped one: cpu, sim-npu-p16, sim-npu-p32.")
    ] = "cpu",
    do_measure: Annotated[
        bool, typer.Option("--measure", help="Also time the model with onnxruntime and print the error.")
    ] = False,
    threads: Annotated[int, typer.Option(min=1, help="onnxruntime threads for --measure.")] = 1,
    top: Annotated[int, typer.Option(help="Kernels shown in the table (0: all).")] = 15,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print JSON: latency_ms, params, peak_activation_bytes, kernels, warnings.")
    ] = False,
) -> None:
    """Estimate a model's latency (sum of per-kernel predictions), parameters and peak
    activation memory, with no hardware in the loop.

    Examples: `nasctl estimate model.onnx`, `nasctl estimate model.onnx --estimator sim-npu-p32 --json`
    """
    from nasctl.api import estimate as run_estimate

    result = run_estimate(model, estimator, measure=do_measure, threads=threads)
    out = result.to_dict()
    if as_json:
        print_json(out)
        return
    dev = result.estimator["device"]
    label = " SIMULATED" if dev.get("simulated") else ""
    t = Table(
        box=box.SIMPLE_HEAD,
        pad_edge=False,
        title_justify="left",
        title=f"Kernels (top {top} by latency)" if top else "Kernels",
    )
    for col in ("kernel", "op", "in", "out", "k/s/g", "act", "ms"):
        t.add_column(col, justify="right" if col == "ms" else "left", no_wrap=col != "kernel", overflow="fold")
    rows = sorted(out["kernels"], key=lambda k: -k["latency_ms"])[: top or None]
    for k in rows:
        t.add_row(
            short_name(k["name"]),
            k["op"],
            "x".join(map(str, k["in_shape"])),
            "x".join(map(str, k["out_shape"])),
            f"{k['kernel']}/{k['stride']}/{k['groups']}",
            k["act"] + ("+res" if k["residual"] else ""),
            f"{k['latency_ms']:.3f}",
        )
    console.print(t)
    band = f" [{out['latency_band_ms'][0]:.3f}, {out['latency_band_ms'][1]:.3f}]" if "latency_band_ms" in out else ""
    console.print(
        f"latency: [bold]{out['latency_ms']:.3f} ms[/]{band} ({dev.get('device', '?')}{label}, "
        f"{len(out['kernels'])} kernels)  params: {human(out['params'])}  "
        f"peak activations: {human(out['peak_activation_bytes'])}B  FLOPs: {human(out['flops'])}"
    )
    adapted = result.estimator.get("adapted")
    if adapted and adapted.get("expected_mape") is not None:
        console.print(
            f"estimator: {adapted['from']} adapted to this machine by measure --quick; expected error "
            f"{adapted['expected_mape']:.1f}% MAPE on its {adapted['networks']} reference networks "
            f"(unadapted: {adapted['unadapted_mape']:.1f}%)"
        )
    if do_measure:
        console.print(
            f"measured: {out['measured_ms']:.3f} ms (std {out['measured_std_ms']:.3f}); error {out['error_pct']:+.1f}%"
        )
        if "measured_at_reference_speed_ms" in out:
            console.print(
                f"at the estimator's reference speed: {out['measured_at_reference_speed_ms']:.3f} ms; error "
                f"{out['error_at_reference_speed_pct']:+.1f}% (the reference network runs "
                f"{out['reference_estimator_ms'] / out['reference_now_ms']:.2f}x as fast now as when the "
                "estimator was measured)"
            )
    if out["warnings"]:
        # one row per cause; a warning the estimator did not count (another machine's) has no figures
        counted = {r["warning"]: r for r in result.warning_rows}
        wt = Table(box=box.SIMPLE_HEAD, pad_edge=False, title="[yellow]Warnings[/]", title_justify="left")
        wt.add_column("warning", overflow="fold", ratio=1)
        wt.add_column("kernels", justify="right", no_wrap=True)
        wt.add_column("share of estimate", justify="right", no_wrap=True)
        for w in out["warnings"]:
            r = counted.get(w)
            if r is None:
                wt.add_row(w, "", "")
            else:
                share = "<1%" if 0 < r["share"] < 0.005 else f"{r['share']:.0%}"
                wt.add_row(r["cause"], str(r["kernels"]), share)
        console.print(wt, highlight=False)
