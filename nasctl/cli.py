"""The ``nasctl`` command line: parse, call the library, render. No logic lives here."""

from __future__ import annotations

import functools
import json
import sys
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich import box
from rich.console import Console
from rich.table import Table

from nasctl import __version__
from nasctl.errors import NasctlError

app = typer.Typer(
    name="nasctl",
    help=(
        "Hardware-aware neural-architecture search: curated IBN / fused-IBN search spaces, "
        "latency and memory estimation, contrastive task models.\n\n"
        "Start with `nasctl space search_spaces/mobilenetv2_32.yaml`."
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="markdown",
)
console = Console()


def _fail(message: str, code: int = 2) -> None:
    """One line on stderr, no traceback."""
    sys.stderr.write(f"error: {message}\n")
    raise typer.Exit(code)


def handle_errors(fn):
    """Bad input -> one line + exit 2; Ctrl-C -> exit 130."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except NasctlError as exc:
            _fail(str(exc))
        except KeyboardInterrupt:
            sys.stderr.write("interrupted\n")
            raise typer.Exit(130) from None

    return wrapper


def _print_json(obj: Any) -> None:
    sys.stdout.write(json.dumps(obj, indent=2) + "\n")


def _human(n: float) -> str:
    for unit, div in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(n) >= div:
            return f"{n / div:.2f}{unit}"
    return f"{n:.0f}"


def _short_name(name: str) -> str:
    """'/blocks/blocks.3/expand/expand.0/Conv' -> 'blocks.3/expand.0' (display only)."""
    parts = [p for p in name.strip("/").split("/") if p]
    if len(parts) > 1 and parts[-1][:1].isupper():
        parts = parts[:-1]
    kept = [p for i, p in enumerate(parts) if not (i + 1 < len(parts) and parts[i + 1].startswith(p + "."))]
    return "/".join(kept) or name


def _version(value: bool) -> None:
    if value:
        typer.echo(f"nasctl {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        Optional[bool], typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = None,
) -> None:
    pass


# ---------------------------------------------------------------------------- space
@app.command()
@handle_errors
def space(
    space_file: Annotated[Path, typer.Argument(metavar="SPACE.yaml", help="Search-space YAML file.")],
    sample: Annotated[
        int, typer.Option("--sample", "-n", min=0, help="Sample N archs (listed, or written with --out).")
    ] = 5,
    seed: Annotated[int, typer.Option(help="Random seed for sampling.")] = 0,
    out: Annotated[
        Optional[Path],
        typer.Option(help="With --sample: a folder for N arch JSON files. With --baseline: the arch.json to write."),
    ] = None,
    baseline: Annotated[bool, typer.Option("--baseline", help="Write the space's all-IBN baseline to --out.")] = False,
    stats_samples: Annotated[int, typer.Option(min=1, help="Archs sampled for the params/FLOPs ranges.")] = 200,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of tables.")] = False,
) -> None:
    """Validate a search space; show its choices, size, baseline and the params/FLOPs
    range of sampled archs. Write sampled or baseline archs as JSON with `--out`.

    Examples:

    * `nasctl space search_spaces/mobilenetv2_32.yaml`
    * `nasctl space search_spaces/mobilenetv2_32.yaml --sample 8 --seed 1 --out archs/`
    * `nasctl space search_spaces/mobilenetv2_32.yaml --baseline --out baseline.json`
    """
    from nasctl.describe import space_report
    from nasctl.space import SearchSpace

    sp = SearchSpace.load(space_file)
    written: list[str] = []
    if baseline:
        if out is None:
            raise NasctlError("--baseline needs --out PATH (the arch.json to write)")
        written.append(str(sp.baseline().save(out)))
    report = space_report(sp, samples=sample, stats_samples=stats_samples, seed=seed)
    if out is not None and not baseline:
        out.mkdir(parents=True, exist_ok=True)
        import numpy as np

        rng = np.random.default_rng(seed)
        for i in range(sample):
            arch = sp.sample(rng)
            written.append(str(arch.save(out / f"arch_{i:03d}_{arch.id}.json")))
    report["written"] = written
    if as_json:
        _print_json(report)
        return
    _render_space(report)


def _render_space(r: dict) -> None:
    curated = (
        f"curated: channels aligned to P={r['parallelism']}"
        if r["align_channels"]
        else (f"[yellow]uncurated[/]: channels not aligned (P={r['parallelism']})")
    )
    console.print(f"[bold]{r['name']}[/] ({r['source']}) - {r['description']}")
    console.print(
        f"{curated}; input {r['input_channels']}ch at {r['resolution']}; "
        f"depth multiplier {r['depth_multiplier']}; activation {r['activation']}"
    )
    t = Table(title="Stages", title_justify="left")
    for col in ("stage", "depth", "base ch", "channels", "stride", "kind", "kernel", "expansion"):
        t.add_column(col)
    for st in r["stages"]:
        t.add_row(
            st["name"],
            str(st["depth"]),
            str(st["channels"]),
            str(st["resolved_channels"]),
            str(st["stride"]),
            "/".join(k.replace("_ibn", "") for k in st["kind"]),
            str(st["kernel"]),
            str(st["expansion"]),
        )
    console.print(t)
    s, b = r["stats"], r["baseline"]
    console.print(
        f"size: [bold]{r['size']:.3e}[/] choice combinations "
        f"({r['num_parameters']} flat parameters); head {r['head_channels']}ch; output {r['output']}"
    )
    console.print(f"baseline {b['id']}: params {_human(b['params'])}, FLOPs {_human(b['flops'])}")
    console.print(
        f"{s['n']} samples (seed {r['seed']}): params {_human(s['params']['min'])}-{_human(s['params']['max'])} "
        f"(median {_human(s['params']['median'])}), FLOPs {_human(s['flops']['min'])}-{_human(s['flops']['max'])} "
        f"(median {_human(s['flops']['median'])}); channels off P: {s['channels_off_parallelism'] or 'none'}"
    )
    if r["samples"]:
        t = Table(title="Sampled archs", title_justify="left")
        for col in ("id", "resolution", "params", "FLOPs", "blocks", "fused"):
            t.add_column(col, justify="left" if col == "id" else "right")
        for a in r["samples"]:
            t.add_row(
                a["id"],
                str(a["resolution"]),
                _human(a["params"]),
                _human(a["flops"]),
                str(a["blocks"]),
                str(a["fused_blocks"]),
            )
        console.print(t)
        for a in r["samples"]:
            console.print(f"{a['id']}: {a['arch']}", soft_wrap=True, highlight=False)
    for path in r["written"]:
        console.print(f"wrote {path}")


# ---------------------------------------------------------------------------- arch helpers
def _load_arch(arch: Optional[str], space_file: Optional[Path], seed: int, baseline: bool):
    from nasctl.arch import Arch
    from nasctl.space import SearchSpace

    if (arch is None) == (space_file is None):
        raise NasctlError("give either ARCH (an arch.json or arch string) or --space SPACE.yaml")
    if arch is not None:
        if baseline:
            raise NasctlError("--baseline goes with --space, not with ARCH")
        return Arch.from_string(arch) if "|" in arch else Arch.load(arch)
    sp = SearchSpace.load(space_file)
    return sp.baseline() if baseline else sp.sample(seed)


ArchArg = Annotated[Optional[str], typer.Argument(metavar="[ARCH]", help="An arch.json file or an arch string.")]
SpaceOpt = Annotated[
    Optional[Path], typer.Option("--space", help="Take the arch from this space (seeded sample or --baseline).")
]
SeedOpt = Annotated[int, typer.Option(help="Sampling seed with --space.")]
BaselineOpt = Annotated[
    bool, typer.Option("--baseline", help="With --space: the space's baseline instead of a sample.")
]
DeviceOpt = Annotated[
    str,
    typer.Option(
        "--train-device",
        help="Where to train (not the latency target): cpu, auto (a CUDA GPU when there is one), cuda, cuda:N, mps.",
    ),
]


@app.command()
@handle_errors
def arch(
    arch: ArchArg = None,
    space_file: SpaceOpt = None,
    seed: SeedOpt = 0,
    baseline: BaselineOpt = False,
    out: Annotated[Optional[Path], typer.Option(help="Also write the arch as JSON here.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """Show one arch layer by layer (shapes, params, MACs); decode an arch string or file.

    Examples: `nasctl arch arch.json`, `nasctl arch --space search_spaces/mobilenetv2_32.yaml --baseline`
    """
    from nasctl.describe import arch_summary
    from nasctl.nn.profile import arch_layers

    a = _load_arch(arch, space_file, seed, baseline)
    if out is not None:
        a.save(out)
    layers = arch_layers(a)
    if as_json:
        d = a.to_dict()
        d.update(arch_summary(a))
        d["layers"] = [vars(la) for la in layers]
        _print_json(d)
        return
    s = arch_summary(a)
    console.print(
        f"[bold]{a.id}[/]  params {_human(s['params'])}  FLOPs {_human(s['flops'])}  "
        f"{s['blocks']} blocks ({s['fused_blocks']} fused)"
    )
    console.print(a.to_string(), soft_wrap=True)
    t = Table(box=box.SIMPLE_HEAD, pad_edge=False)
    for col in ("layer", "op", "channels", "hw", "params", "MACs"):
        t.add_column(col, justify="left" if col in ("layer", "op") else "right", no_wrap=True)
    for la in layers:
        name = la.name.replace("blocks.", "b").replace("depthwise", "dw")
        op = (
            la.op
            if la.op == "linear"
            else (
                f"conv{la.kernel}x{la.kernel}/{la.stride}"
                + (" dw" if la.groups > 1 and la.groups == la.in_channels else "")
            )
        )
        t.add_row(
            name,
            op,
            f"{la.in_channels}->{la.out_channels}",
            f"{la.in_hw}->{la.out_hw}",
            _human(la.params),
            _human(la.macs),
        )
    console.print(t)
    if out is not None:
        console.print(f"wrote {out}")


# ---------------------------------------------------------------------------- export
@app.command()
@handle_errors
def export(
    arch: ArchArg = None,
    out: Annotated[Path, typer.Option(help="The .onnx file to write.")] = Path("model.onnx"),
    space_file: SpaceOpt = None,
    seed: SeedOpt = 0,
    baseline: BaselineOpt = False,
    head: Annotated[
        str, typer.Option(help="classifier | embedding | features (pooled backbone features).")
    ] = "classifier",
    opset: Annotated[int, typer.Option(min=17, help="ONNX opset (>= 17).")] = 17,
    verify: Annotated[bool, typer.Option(help="Run the file with onnxruntime and compare with torch.")] = True,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of text.")] = False,
) -> None:
    """Export an arch to ONNX (checked with `onnx.checker`), and verify that onnxruntime
    gives torch's output.

    Examples: `nasctl export --space search_spaces/mobilenetv2_32.yaml --seed 0 --out m.onnx`,
    `nasctl export arch.json --out m.onnx`
    """
    from nasctl.describe import arch_summary
    from nasctl.nn.builder import build_model
    from nasctl.nn.export import export_onnx, verify_onnx

    a = _load_arch(arch, space_file, seed, baseline)
    model = build_model(a, head=head, seed=seed)
    path = export_onnx(model, out, opset=opset)
    result = arch_summary(a, head)
    result.update(onnx=str(path), opset=opset, head=head, onnx_bytes=path.stat().st_size)
    if verify:
        diff = verify_onnx(path, model)
        result["max_abs_diff_vs_torch"] = diff
        if diff > 1e-3:
            raise NasctlError(f"{path}: onnxruntime output differs from torch by {diff:.3g} (> 1e-3)")
    if as_json:
        _print_json(result)
        return
    console.print(f"wrote {path} ({_human(result['onnx_bytes'])}B, opset {opset}, head {head})")
    console.print(f"arch {a.id}: params {_human(result['params'])}, FLOPs {_human(result['flops'])}")
    if verify:
        console.print(f"onnxruntime matches torch: max |diff| {result['max_abs_diff_vs_torch']:.2e}")


# ---------------------------------------------------------------------------- measure
@app.command()
@handle_errors
def measure(
    out: Annotated[Path, typer.Option(help="CSV to write (device metadata goes to a .meta.json beside it).")],
    device: Annotated[
        str, typer.Option(help="cpu (onnxruntime) | sim-npu (the documented simulator, not hardware).")
    ] = "cpu",
    time_budget: Annotated[float, typer.Option("--time-budget", help="Stop after SECONDS.", metavar="SECONDS")] = 600.0,
    mode: Annotated[
        str, typer.Option(help="models: kernels timed inside random networks (profiler); kernels: alone.")
    ] = "models",
    threads: Annotated[int, typer.Option(min=1, help="onnxruntime intra-op threads (pinned).")] = 1,
    parallelism: Annotated[int, typer.Option(min=1, help="sim-npu: the array's parallelism factor P.")] = 16,
    space_files: Annotated[
        Optional[list[Path]],
        typer.Option("--space", help="Spaces to sample networks from (repeatable; default: the shipped ones)."),
    ] = None,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
    as_json: Annotated[bool, typer.Option("--json", help="Print the run's metadata as JSON.")] = False,
) -> None:
    """Time kernels on a device and write a measurements CSV for `nasctl fit-estimator`.

    The CSV has the kernel features, `latency_ms` and its spread. The device, the runtime
    version, the thread count and the CPU model go in the `.meta.json` beside it.

    Example: `nasctl measure --device cpu --time-budget 600 --out estimators/cpu.csv`
    """
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    from nasctl.latency.measure import measure as run_measure

    with Progress(
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        TimeRemainingColumn(),
        console=Console(stderr=True),
        transient=as_json,
        disable=as_json,
    ) as bar:
        task = bar.add_task(f"measuring on {device}", total=time_budget)

        def progress(elapsed: float, nets: int, rows: int) -> None:
            bar.update(
                task,
                completed=min(elapsed, time_budget),
                description=f"measuring on {device}: {nets} networks, {rows} rows",
            )

        meta = run_measure(
            out,
            device=device,
            time_budget=time_budget,
            mode=mode,
            threads=threads,
            seed=seed,
            parallelism=parallelism,
            space_files=space_files,
            progress=progress,
        )
    if as_json:
        _print_json(meta)
        return
    label = " (SIMULATED)" if meta["device"].get("simulated") else ""
    console.print(
        f"wrote {out}: {meta['rows']} rows from {meta['networks']} networks in {meta['seconds']} s "
        f"on {meta['device'].get('cpu', meta['device']['device'])}{label}"
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
    (RMSPE, MAPE, +-5/10/15% accuracy, Spearman), and save the estimator.

    Example: `nasctl fit-estimator estimators/cpu.csv --out estimators/cpu.json`
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
        _print_json(report)
        return
    t = Table(title=f"{folds}-fold cross-validation per kernel type", title_justify="left", box=box.SIMPLE_HEAD)
    for col in ("kernel", "rows", "RMSPE %", "MAPE %", "+-5 %", "+-10 %", "+-15 %", "Spearman"):
        t.add_column(col, justify="left" if col == "kernel" else "right")
    rows = list(est.meta["cv"].items()) + [("all", est.meta["cv_overall"])]
    for g, m in rows:
        if "mape" not in m:
            continue
        t.add_row(
            g,
            str(m["n"]),
            f"{m['rmspe']:.1f}",
            f"{m['mape']:.1f}",
            f"{m['acc5']:.0f}",
            f"{m['acc10']:.0f}",
            f"{m['acc15']:.0f}",
            f"{m.get('spearman', float('nan')):.3f}",
        )
    console.print(t)
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
    import tempfile

    from nasctl.latency.api import estimate_arch, estimate_onnx, estimator_path, load_estimator

    est = load_estimator(estimator)
    is_arch = "|" in model or model.endswith(".json")
    if is_arch:
        from nasctl.arch import Arch

        a = Arch.from_string(model) if "|" in model else Arch.load(model)
        result = estimate_arch(a, est)
    else:
        result = estimate_onnx(model, est)
    out = result.to_dict()
    out["estimator"] = {"path": str(estimator_path(estimator)), "device": est.device}
    if do_measure:
        from nasctl.latency.measure import time_onnx

        with tempfile.TemporaryDirectory() as tmp:
            path = model
            if is_arch:
                from nasctl.nn.export import export_onnx

                path = str(export_onnx(a, Path(tmp) / "m.onnx"))
            if est.device.get("simulated"):
                raise NasctlError("--measure times on this CPU; the estimator is for the simulated sim-npu")
            med, std, runs = time_onnx(path, threads)
        out["measured_ms"] = med
        out["measured_std_ms"] = std
        out["error_pct"] = (out["latency_ms"] - med) / med * 100
    if as_json:
        _print_json(out)
        return
    dev = est.device
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
            _short_name(k["name"]),
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
        f"{len(out['kernels'])} kernels)  params: {_human(out['params'])}  "
        f"peak activations: {_human(out['peak_activation_bytes'])}B  FLOPs: {_human(out['flops'])}"
    )
    if do_measure:
        console.print(
            f"measured: {out['measured_ms']:.3f} ms (std {out['measured_std_ms']:.3f}); error {out['error_pct']:+.1f}%"
        )
    for w in out["warnings"]:
        console.print(f"[yellow]warning:[/] {w}", highlight=False)


# ---------------------------------------------------------------------------- pretrain
@app.command()
@handle_errors
def pretrain(
    arch: ArchArg = None,
    out: Annotated[
        Path, typer.Option(help="Run folder: arch.json, model.npz, backbone.onnx, metrics.json, loss.png.")
    ] = Path("runs/pretrain"),
    space_file: SpaceOpt = None,
    seed: Annotated[
        int, typer.Option(help="Seed for the weights, batches, augmentations and split (and --space sampling).")
    ] = 0,
    baseline: BaselineOpt = False,
    data: Annotated[
        str, typer.Option(help="digits (embedded, scikit-learn's load_digits), a .npz file (x, y) or an image folder.")
    ] = "digits",
    loss: Annotated[str, typer.Option(help="gamma (decomposable, Gamma-augmented) | ntxent (SimCLR).")] = "gamma",
    epochs: Annotated[int, typer.Option(min=1, help="Passes over the train split.")] = 10,
    batch_size: Annotated[int, typer.Option("--batch-size", min=2, help="Images per step (2 views each).")] = 32,
    lr: Annotated[float, typer.Option(help="Peak AdamW learning rate (warm-up, then cosine).")] = 2e-3,
    temperature: Annotated[float, typer.Option(help="Similarity temperature t.")] = 0.2,
    gamma_shape: Annotated[
        float, typer.Option(help="gamma: shape a of the Gamma draws (1 = exact; larger = less noise).")
    ] = 8.0,
    gamma_momentum: Annotated[
        float, typer.Option(help="gamma: moving-average rate of the per-sample partition estimate.")
    ] = 0.9,
    time_budget: Annotated[
        Optional[float],
        typer.Option(
            "--time-budget", metavar="SECONDS", help="Stop training after SECONDS (the schedule anneals by then)."
        ),
    ] = None,
    flip: Annotated[
        Optional[bool], typer.Option("--flip/--no-flip", help="Horizontal flips (default: on, off for digits).")
    ] = None,
    min_scale: Annotated[float, typer.Option(help="Random resized crop: smallest area fraction.")] = 0.3,
    random_init: Annotated[
        bool, typer.Option("--random-init/--no-random-init", help="Also probe the untrained backbone, for comparison.")
    ] = True,
    subset: Annotated[
        Optional[int], typer.Option(min=10, metavar="N", help="Use at most N images of each split (quick runs).")
    ] = None,
    device: DeviceOpt = "cpu",
    as_json: Annotated[bool, typer.Option("--json", help="Print metrics.json (without the per-step curve).")] = False,
) -> None:
    """Pretrain an arch contrastively (no labels), then score its frozen backbone by a
    linear probe and kNN on the test split.

    Writes `arch.json`, `model.npz` (weights as plain arrays, no pickle), `backbone.onnx`
    (pooled features; input images in [0, 1]), `metrics.json` (at least
    `linear_probe_accuracy` and `knn_accuracy`, the loss curve and the time) and `loss.png`.

    Examples:

    * `nasctl pretrain --space search_spaces/mobilenetv2_32.yaml --baseline --time-budget 180 --out runs/p`
    * `nasctl pretrain arch.json --data my.npz --loss ntxent --batch-size 256 --epochs 20 --out runs/p`
    """

    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from nasctl.contrastive import AugmentConfig, PretrainConfig, load_data, pretrain_and_evaluate, write_run
    from nasctl.contrastive.pretrain import resolve_device

    a = _load_arch(arch, space_file, seed, baseline)
    dataset = load_data(data, a.resolution, a.in_channels, seed=seed)
    if subset is not None:
        dataset = dataset.subset(subset, subset, seed=seed)
    aug = AugmentConfig(min_scale=min_scale, flip=flip)  # flip None: as the data allows
    cfg = PretrainConfig(
        loss=loss,
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        temperature=temperature,
        gamma_shape=gamma_shape,
        gamma_momentum=gamma_momentum,
        time_budget_s=time_budget,
        seed=seed,
        augment=aug,
        device=device,
    ).validate()
    err = Console(stderr=True)
    if not as_json:
        s = dataset.summary()
        err.print(
            f"pretraining {a.id} ({loss}, batch {cfg.batch_size}, {resolve_device(cfg.device)}) on {s['name']}: "
            f"{s['train']} train / {s['val']} val / {s['test']} test images, {s['classes']} classes"
        )
    with Progress(
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        TextColumn("{task.fields[info]}"),
        TimeElapsedColumn(),
        console=err,
        transient=True,
        disable=as_json,
    ) as bar:
        task = bar.add_task("pretraining", total=1.0, info="")

        def progress(p: dict) -> None:
            bar.update(
                task,
                completed=min(1.0, p["fraction"]),
                info=f"step {p['step']}/{p['total_steps']}  loss {p['loss']:.3f}  {p['images_per_s']:.0f} img/s",
            )

        result, metrics = pretrain_and_evaluate(a, dataset, cfg, progress, random_init_baseline=random_init)
        bar.update(task, description="exporting")
        full = write_run(out, a, dataset, result, metrics)
    if as_json:
        _print_json({k: v for k, v in full.items() if k != "loss_per_step"})
        return
    t = Table(box=box.SIMPLE_HEAD, pad_edge=False)
    t.add_column("backbone")
    t.add_column("linear probe (test)", justify="right")
    t.add_column("kNN (test)", justify="right")
    if "linear_probe_accuracy" in full:
        t.add_row(f"pretrained ({loss})", f"{full['linear_probe_accuracy']:.1%}", f"{full['knn_accuracy']:.1%}")
        if "random_init_linear_probe_accuracy" in full:
            t.add_row(
                "random init",
                f"{full['random_init_linear_probe_accuracy']:.1%}",
                f"{full['random_init_knn_accuracy']:.1%}",
            )
        console.print(t)
    else:
        console.print("[yellow]warning:[/] the data has no labels: no probe accuracy")
    console.print(
        f"{full['steps']} steps ({full['epochs_done']:.1f} epochs, stopped by {full['stopped_by'].replace('_', ' ')}) "
        f"in {full['train_seconds']:.0f} s, {full['images_per_s']:.0f} img/s; final loss {full['final_loss']:.3f}"
    )
    console.print(f"wrote {out}/: arch.json model.npz backbone.onnx metrics.json loss.png")


# ---------------------------------------------------------------------------- search
@app.command()
@handle_errors
def search(
    space_file: Annotated[Path, typer.Argument(metavar="SPACE.yaml", help="Search-space YAML file.")],
    strategy: Annotated[str, typer.Option(help="multishot (NSGA-II; each candidate trained briefly).")] = "multishot",
    out: Annotated[Path, typer.Option(help="Run folder (study, trials.csv, pareto.*, winners/, report.md).")] = Path(
        "runs/search"
    ),
    trials: Annotated[
        Optional[int], typer.Option(help="Complete trials the study must reach (a resumed run runs the rest).")
    ] = 20,
    time_budget: Annotated[
        Optional[float], typer.Option("--time-budget", metavar="SECONDS", help="Stop starting trials after SECONDS.")
    ] = None,
    estimator: Annotated[
        str, typer.Option(help="Latency estimator: cpu, sim-npu-p16, sim-npu-p32 or an estimator file.")
    ] = "cpu",
    objectives: Annotated[
        str,
        typer.Option(
            help="Comma-separated: accuracy (up) and some of latency_ms, memory_mb, peak_activation_bytes, "
            "params (down)."
        ),
    ] = "accuracy,latency_ms",
    latency_budget: Annotated[
        Optional[float], typer.Option("--latency-budget", metavar="MS", help="Constraint: estimated latency <= MS.")
    ] = None,
    memory_budget: Annotated[
        Optional[float],
        typer.Option("--memory-budget", metavar="MB", help="Constraint: float32 weights + peak activations <= MB."),
    ] = None,
    data: Annotated[str, typer.Option(help="digits (embedded), a .npz file (x, y) or an image folder.")] = "digits",
    loss: Annotated[str, typer.Option(help="Per-trial pretraining loss: gamma | ntxent.")] = "gamma",
    epochs: Annotated[int, typer.Option(min=1, help="Per-trial training: at most this many epochs...")] = 3,
    trial_seconds: Annotated[
        Optional[float], typer.Option("--trial-seconds", help="...and at most this many seconds.")
    ] = 30.0,
    batch_size: Annotated[int, typer.Option("--batch-size", min=2, help="Per-trial batch size.")] = 32,
    device: DeviceOpt = "cpu",
    population: Annotated[int, typer.Option(min=2, help="NSGA-II population size.")] = 8,
    sampler: Annotated[str, typer.Option(help="nsga2 (evolutionary) | random (a baseline to compare with).")] = "nsga2",
    seed: Annotated[int, typer.Option(help="Seed for the sampler, the training and the data split.")] = 0,
    storage: Annotated[
        Optional[str],
        typer.Option(help="Optuna storage URL (default: sqlite in --out). postgresql://... for many workers/machines."),
    ] = None,
    study_name: Annotated[Optional[str], typer.Option(help="Study name (default: SPACE-STRATEGY).")] = None,
    workers: Annotated[int, typer.Option(min=1, help="Parallel worker processes sharing the storage.")] = 1,
    top: Annotated[int, typer.Option(min=1, help="Pareto archs exported to winners/.")] = 3,
    do_measure: Annotated[
        bool, typer.Option("--measure/--no-measure", help="Time the winners and the baseline with onnxruntime.")
    ] = True,
    as_json: Annotated[bool, typer.Option("--json", help="Print pareto.json instead of tables.")] = False,
) -> None:
    """Search a space for archs that trade accuracy against latency (and memory) on a target.

    Each trial: NSGA-II proposes an arch -> the estimator gives its latency and memory (no
    hardware needed) -> over-budget archs are recorded as infeasible and not trained ->
    the rest are pretrained contrastively and scored by a linear probe. The space's
    baseline is the first trial. Re-running the same command resumes the study.

    Examples:

    * `nasctl search search_spaces/mobilenetv2_32.yaml --trials 12 --out runs/x`
    * `nasctl search SPACE.yaml --estimator sim-npu-p16 --latency-budget 0.5 --objectives accuracy,latency_ms,memory_mb`
    * `nasctl search SPACE.yaml --storage postgresql://user:pw@host/db --workers 2` (run on several machines)
    """
    from nasctl.contrastive import PretrainConfig
    from nasctl.search import Objectives, SearchConfig, TrialBudget, run_search, write_outputs
    from nasctl.search.multishot import prepare

    cfg = SearchConfig(
        space_file=str(space_file),
        out=str(out),
        strategy=strategy,
        objectives=Objectives(
            tuple(o.strip() for o in objectives.split(",") if o.strip()), latency_budget, memory_budget
        ),
        budget=TrialBudget(
            PretrainConfig(
                loss=loss,
                epochs=epochs,
                batch_size=batch_size,
                time_budget_s=trial_seconds,
                seed=seed,
                device=device,
            )
        ),
        estimator=estimator,
        data=data,
        trials=trials,
        time_budget_s=time_budget,
        seed=seed,
        storage=storage,
        study_name=study_name,
        workers=workers,
        population_size=population,
        top_k=top,
        sampler=sampler,
    )
    prepare(cfg)  # every bad input fails here, before the live view starts
    interrupted = False
    with _SearchView(cfg, disabled=as_json) as view:
        try:
            run_search(cfg, view.update, prepared=True)
        except KeyboardInterrupt:
            interrupted = True
    err = Console(stderr=True)
    if not as_json:
        err.print("writing outputs" + (" and measuring the winners" if do_measure else ""))
    res = write_outputs(cfg, measure=do_measure)
    if as_json:
        _print_json(json.loads((Path(cfg.out) / "pareto.json").read_text()))
    else:
        _render_search(res, Path(cfg.out))
    if interrupted:
        err.print(
            f"interrupted: {res.counts.get('complete', 0)} of {cfg.trials} trials complete; "
            "run the same command to resume"
        )
        raise typer.Exit(130)


class _SearchView:
    """The live view: trial counts, the trial in training, best so far, the current front."""

    def __init__(self, cfg, disabled: bool = False):
        self.cfg, self.disabled = cfg, disabled
        self.status = "starting"
        self.best: float | None = None
        self.rows: list = []
        self.counts: dict = {}

    def __enter__(self):
        from rich.live import Live

        self.live = Live(self._render(), console=Console(stderr=True), refresh_per_second=4, transient=False)
        if not self.disabled:
            self.live.__enter__()
        return self

    def __exit__(self, *exc):
        if not self.disabled:
            self.live.__exit__(*exc)
        return False

    def update(self, event: dict) -> None:
        if self.disabled:
            return
        kind = event.get("event")
        if kind == "train":
            self.status = f"trial {event['trial']}: training {event['arch'][:60]}..."
        elif kind == "step":
            self.status = (
                f"trial {event['trial']}: {min(1.0, event['fraction']):.0%} of its budget, loss {event['loss']:.3f}, "
                f"{event['images_per_s']:.0f} img/s"
            )
        elif kind == "wait":
            self.status = f"waiting for {event['running']} trial(s) running elsewhere (or stale)"
        elif kind == "done":
            self.counts = event["counts"]
            self._refresh_front()
        self.live.update(self._render())

    def _refresh_front(self) -> None:
        from nasctl.search import collect

        try:
            res = collect(self.cfg)
        except Exception:  # the view never stops a search
            return
        self.rows = res.pareto
        self.best = max((r["accuracy"] for r in res.complete if r["trained"]), default=None)

    def _render(self):
        from rich.console import Group
        from rich.text import Text

        c = self.counts
        best = f", best val acc {self.best:.1%}" if self.best is not None else ""
        head = Text(
            f"search {self.cfg.name}: {c.get('complete', 0)}/{self.cfg.trials or '∞'} complete, "
            f"{c.get('fail', 0)} failed{best}  |  {self.status}"
        )
        if not self.rows:
            return head
        t = Table(box=box.SIMPLE_HEAD, pad_edge=False, title="current Pareto front", title_justify="left")
        for col in ("trial", "val acc", "latency ms", "memory MB", "params", "arch id"):
            t.add_column(col, justify="right", no_wrap=True)
        for r in self.rows[:8]:
            t.add_row(
                str(r["number"]),
                f"{r['accuracy']:.1%}",
                f"{r['latency_ms']:.3f}",
                f"{r['memory_mb']:.2f}",
                _human(r["params"]),
                r["arch_id"],
            )
        return Group(head, t)


def _render_search(res, out: Path) -> None:
    t = Table(
        box=box.SIMPLE_HEAD, pad_edge=False, collapse_padding=True, title="Pareto set (feasible)", title_justify="left"
    )
    for col in ("trial", "val acc", "test acc", "est. ms", "meas. ms", "mem MB", "params", "arch id"):
        # headers keep their width in an 80-column terminal; the arch id is what gets cut
        t.add_column(col, justify="right", no_wrap=True, min_width=None if col == "arch id" else len(col))
    rows = ([res.baseline] if res.baseline else []) + [r for r in res.pareto if not r["baseline"]]
    for r in rows:
        t.add_row(
            f"{r['number']}{' base' if r['baseline'] else ''}",
            f"{r['accuracy']:.1%}",
            f"{r['test_accuracy']:.1%}" if r["test_accuracy"] is not None else "–",
            f"{r['latency_ms']:.3f}",
            f"{r['measured_latency_ms']:.3f}" if r.get("measured_latency_ms") is not None else "–",
            f"{r['memory_mb']:.2f}",
            _human(r["params"]),
            r["arch_id"],
        )
    console.print(t)
    summary = json.loads((out / "pareto.json").read_text())
    b = summary.get("best_vs_baseline")
    if b:
        console.print(
            f"best within 1 point of the baseline: trial {b['trial']}, {b['latency_change_pct']:+.1f}% "
            f"{b['latency_key'].replace('_', ' ')}, {b['accuracy_change_points']:+.1f} points accuracy"
        )
    c = res.counts
    console.print(
        f"{c.get('complete', 0)} complete, {c.get('fail', 0)} failed trials. "
        f"wrote {out}/: trials.csv pareto.json pareto.png report.md winners/"
    )


# ---------------------------------------------------------------------------- report
@app.command()
@handle_errors
def report(
    run_dir: Annotated[Path, typer.Argument(metavar="DIR", help="A run folder written by `nasctl search`.")],
    do_measure: Annotated[
        bool, typer.Option("--measure/--no-measure", help="Time the winners and the baseline with onnxruntime.")
    ] = True,
    as_json: Annotated[bool, typer.Option("--json", help="Print pareto.json instead of tables.")] = False,
) -> None:
    """Re-render a search's outputs (trials.csv, pareto.json/png, winners/, report.md) from its study.

    Example: `nasctl report runs/x` (works while the search is still running, too)
    """
    from nasctl.search import load_config, write_outputs

    cfg = load_config(run_dir)
    cfg.out = str(run_dir)
    res = write_outputs(cfg, measure=do_measure)
    if as_json:
        _print_json(json.loads((run_dir / "pareto.json").read_text()))
        return
    _render_search(res, run_dir)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
