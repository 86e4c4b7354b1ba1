"""`nasctl curate`, `nasctl refine`: what a hardware expert does by hand, as commands."""

from __future__ import annotations

from contextlib import nullcontext
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich import box
from rich.table import Table

from nasctl.cli.common import app, console, handle_errors, print_json
from nasctl.errors import NasctlError

EstimatorOpt = Annotated[
    str,
    typer.Option("--estimator", "-e", help="Latency estimator: a file, or shipped: cpu, sim-npu-p16, sim-npu-p32."),
]


@app.command()
@handle_errors
def curate(
    space_file: Annotated[
        Path, typer.Argument(metavar="SPACE.yaml", help="The space to curate (a file, or a shipped space by name).")
    ],
    estimator: EstimatorOpt = "cpu",
    out: Annotated[Path, typer.Option("--out", "-o", help="The curated space's YAML.")] = Path("curated.yaml"),
    plot: Annotated[
        Optional[Path], typer.Option(help="PNG of latency against channels per stage (default: beside --out).")
    ] = None,
    max_period: Annotated[int, typer.Option(min=2, help="Largest step (in channels) looked for.")] = 64,
    alpha: Annotated[
        float, typer.Option(min=0.0, max=1.0, help="Significance a step must reach (permutation test).")
    ] = 0.01,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of tables.")] = False,
) -> None:
    """Curate a space for a target automatically: sweep each stage's channels (0.5x to 2x
    its base width, every count, IBN and fused-IBN) with the target's latency estimator,
    find where the latency steps, and keep only the channel counts at the right edge of
    each plateau (the most channels for the same latency). The curated space gets each
    stage's `widths` list and the detected step as its `parallelism`. No hardware is
    touched: the estimator stands for the target.

    Examples:

    * `nasctl curate mobilenetv2_224 --estimator sim-npu-p16 --out curated.yaml`
    * `nasctl curate my_space.yaml --estimator my-npu.json.gz --out my_space_curated.yaml --json`
    """
    from nasctl.curate import curate as run_curate
    from nasctl.curate import plot as plot_curves
    from nasctl.latency.api import load_estimator
    from nasctl.space import SearchSpace

    if out.suffix not in (".yaml", ".yml"):
        raise NasctlError(f"{out}: --out is the curated space: give a .yaml path")
    space = SearchSpace.load(space_file)
    est = load_estimator(estimator)
    with console.status("sweeping stage widths with the estimator", spinner="dots") if not as_json else nullcontext():
        result = run_curate(space, est, max_period=max_period, alpha=alpha)
    png = plot or out.with_suffix(".png")
    plot_curves(result, png)
    written = None
    if result.steps.found:
        s = result.steps
        header = (
            f"# Curated by `nasctl curate {space_file} --estimator {estimator}`: latency steps every "
            f"{s.period} channels\n# (right edges at c = {s.phase} mod {s.period}; a step adds "
            f"{s.step_pct:.2f}% of the latency, other counts {s.slope_pct:.3f}% each).\n"
        )
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(header + result.curated.to_yaml())
        written = str(out)
    data = {**result.to_dict(), "estimator": est.device.get("device"), "out": written, "plot": str(png)}
    if as_json:
        print_json(data)
        return
    s = result.steps
    if s.found:
        console.print(
            f"[bold]{space.name}[/bold] on {est.device.get('device', '?')}: latency steps every "
            f"[bold]{s.period}[/bold] channels (right edges at c = {s.phase} mod {s.period}, permutation p = "
            f"{s.p_value:.3f}); a step adds {s.step_pct:.2f}% of the network's latency, a channel elsewhere "
            f"{s.slope_pct:.3f}%."
        )
    else:
        console.print(
            f"[bold]{space.name}[/bold] on {est.device.get('device', '?')}: no latency step found (permutation p = "
            f"{s.p_value:.2f}): the estimated latency grows smoothly with channels; nothing written."
        )
    t = Table(box=box.SIMPLE_HEAD)
    for col in ("stage", "base", "swept", "kept widths", "baseline ch", "curated ch"):
        t.add_column(col, justify="left" if col in ("stage", "kept widths") else "right")
    for sr in result.stages:
        t.add_row(
            sr.name,
            str(sr.base),
            f"{sr.lo}-{sr.hi}",
            ", ".join(map(str, sr.widths)) or "-",
            str(sr.baseline_channels),
            str(sr.curated_channels),
        )
    console.print(t)
    console.print(
        f"baseline: {result.baseline_ms:.3f} ms before, {result.curated_baseline_ms:.3f} ms curated (estimated)"
    )
    if written:
        console.print(f"wrote {written} (parallelism {result.curated.spec.parallelism}) and {png}")
    else:
        console.print(f"wrote {png}")


@app.command()
@handle_errors
def refine(
    arch: Annotated[
        str,
        typer.Argument(metavar="ARCH", help="An arch.json file or arch string; or `baseline` for --space's baseline."),
    ],
    estimator: EstimatorOpt = "cpu",
    space_file: Annotated[
        Optional[Path],
        typer.Option(
            "--space", help="The arch's space: offers its depth multiplier as a shrink move (and `baseline`)."
        ),
    ] = None,
    latency_budget: Annotated[
        Optional[float], typer.Option(min=0.0, metavar="MS", help="Shrink until the estimate is within MS.")
    ] = None,
    memory_budget: Annotated[
        Optional[float],
        typer.Option(min=0.0, metavar="MB", help="Shrink until weights (float32) + peak activations fit MB."),
    ] = None,
    allow_shrink: Annotated[
        bool,
        typer.Option(help="Also take capacity-removing moves that cut more latency than params, budget or not."),
    ] = False,
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for arch.json, model.onnx and refine.json.")] = Path(
        "refined"
    ),
    evaluate: Annotated[
        bool, typer.Option(help="Retrain the start and the refined arch (same budget, --seeds) and compare.")
    ] = False,
    data: Annotated[str, typer.Option(help="With --evaluate: digits, a .npz file or an image folder.")] = "digits",
    epochs: Annotated[int, typer.Option(min=1, help="With --evaluate: epochs per training.")] = 5,
    seeds: Annotated[int, typer.Option(min=1, help="With --evaluate: training seeds (0..N-1).")] = 3,
    as_json: Annotated[bool, typer.Option("--json", help="Print refine.json instead of tables.")] = False,
) -> None:
    """Refine an architecture as a hardware expert would: from ARCH, apply greedily the
    moves that the latency estimator says pay off, each kept only when the constraints
    hold. Fuse an IBN into a fused-IBN when that is faster; widen a stage up to the right
    edge of the target's latency step when that is not slower; move a step of channels
    between stages when that is faster without losing params. Moves that only remove
    capacity (drop a block, narrow a stage, lower the depth multiplier) are used only to
    meet a missed --latency-budget / --memory-budget, or with --allow-shrink.

    Prints the steps with latency, memory and params after each; writes the refined
    arch.json, model.onnx (random weights, for deployment tools) and refine.json.
    `--evaluate` retrains the start and the result under one budget and reports both.

    Examples:

    * `nasctl refine baseline --space mobilenetv2_32 --estimator sim-npu-p16`
    * `nasctl refine runs/x/winners/rank1_ID.json --estimator cpu --memory-budget 1.5 --evaluate`
    """
    import json

    from nasctl.api import as_arch
    from nasctl.latency.api import load_estimator
    from nasctl.nn.export import export_onnx
    from nasctl.refine import refine as run_refine
    from nasctl.space import SearchSpace

    space = SearchSpace.load(space_file) if space_file else None
    if arch == "baseline":
        if space is None:
            raise NasctlError("ARCH `baseline` needs --space")
        start = space.baseline()
    else:
        start = as_arch(arch)
    est = load_estimator(estimator)
    with console.status("refining", spinner="dots") if not as_json else nullcontext():
        result = run_refine(
            start,
            est,
            space=space,
            latency_budget_ms=latency_budget,
            memory_budget_mb=memory_budget,
            allow_shrink=allow_shrink,
        )
    report = {**result.to_dict(), "estimator": est.device.get("device")}
    final = result.final.arch
    out.mkdir(parents=True, exist_ok=True)
    final.save(out / "arch.json")
    head = "classifier" if final.num_classes else "embedding"
    export_onnx(final, out / "model.onnx", head=head)
    if evaluate:
        report["evaluation"] = _evaluate(start, final, data, epochs, seeds, as_json)
    (out / "refine.json").write_text(json.dumps(report, indent=2) + "\n")
    if as_json:
        print_json(report)
        return
    s = result.step
    console.print(
        f"latency step on {est.device.get('device', '?')}: "
        + (f"every {s.period} channels (right edges at c = {s.phase} mod {s.period})" if s.found else "none found")
    )
    t = Table(box=box.SIMPLE_HEAD)
    for col in ("#", "move", "what", "latency ms", "memory MB", "params"):
        t.add_column(col, justify="left" if col in ("move", "what") else "right")
    for i, st in enumerate(result.steps):
        t.add_row(
            str(i),
            st.move,
            st.detail,
            f"{st.cost.latency_ms:.3f}",
            f"{st.cost.memory_mb:.2f}",
            f"{st.cost.params:,}",
        )
    console.print(t)
    console.print(
        f"latency cut {report['latency_cut_pct']:.1f}%, params {report['params_change_pct']:+.1f}%, "
        f"memory {report['memory_change_pct']:+.1f}% (estimated)"
    )
    if evaluate:
        ev = report["evaluation"]
        for key in ("start", "refined"):
            r = ev[key]
            console.print(
                f"{key}: val accuracy {100 * r['accuracy_mean']:.1f}% ± {100 * r['accuracy_std']:.1f} "
                f"({ev['epochs']} epochs, {len(r['runs'])} seeds)"
            )
    console.print(f"wrote {out}/arch.json, {out}/model.onnx and {out}/refine.json")


def _evaluate(start, final, data: str, epochs: int, seeds: int, quiet: bool) -> dict:
    """Retrain ``start`` and ``final`` under one budget (the retrain protocol)."""
    from nasctl.contrastive.data import load_data
    from nasctl.contrastive.pretrain import PretrainConfig
    from nasctl.search.retrain import retrain

    if (start.resolution, start.in_channels) != (final.resolution, final.in_channels):
        raise NasctlError("the refined arch changed the input; cannot compare on one dataset")
    images = load_data(data, start.resolution, start.in_channels)
    cfg = PretrainConfig(epochs=epochs).validate()
    out = {"data": data, "epochs": epochs, "loss": cfg.loss, "batch_size": cfg.batch_size}
    for key, arch in (("start", start), ("refined", final)):
        with console.status(f"retraining the {key} arch", spinner="dots") if not quiet else nullcontext():
            out[key] = retrain(arch, images, cfg, tuple(range(seeds)))
    out["accuracy_change_points"] = 100 * (out["refined"]["accuracy_mean"] - out["start"]["accuracy_mean"])
    return out
