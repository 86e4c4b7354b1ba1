"""`nasctl space`, `nasctl arch`, `nasctl export`: spaces and archs."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich import box
from rich.table import Table

from nasctl.api import pick_arch
from nasctl.cli.common import (
    ArchArg,
    BaselineOpt,
    SeedOpt,
    SpaceOpt,
    app,
    console,
    handle_errors,
    human,
    print_json,
)
from nasctl.errors import NasctlError


@app.command()
@handle_errors
def space(
    space_file: Annotated[
        Path,
        typer.Argument(
            metavar="SPACE.yaml", help="Search-space YAML file, or a shipped space by name (e.g. mobilenetv2_32)."
        ),
    ],
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
        for i, arch in enumerate(sp.samples(sample, seed)):
            written.append(str(arch.save(out / f"arch_{i:03d}_{arch.id}.json")))
    report["written"] = written
    if as_json:
        print_json(report)
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
    console.print(f"baseline {b['id']}: params {human(b['params'])}, FLOPs {human(b['flops'])}")
    console.print(
        f"{s['n']} samples (seed {r['seed']}): params {human(s['params']['min'])}-{human(s['params']['max'])} "
        f"(median {human(s['params']['median'])}), FLOPs {human(s['flops']['min'])}-{human(s['flops']['max'])} "
        f"(median {human(s['flops']['median'])}); channels off P: {s['channels_off_parallelism'] or 'none'}"
    )
    if r["samples"]:
        t = Table(title="Sampled archs", title_justify="left")
        for col in ("id", "resolution", "params", "FLOPs", "blocks", "fused"):
            t.add_column(col, justify="left" if col == "id" else "right")
        for a in r["samples"]:
            t.add_row(
                a["id"],
                str(a["resolution"]),
                human(a["params"]),
                human(a["flops"]),
                str(a["blocks"]),
                str(a["fused_blocks"]),
            )
        console.print(t)
        for a in r["samples"]:
            console.print(f"{a['id']}: {a['arch']}", soft_wrap=True, highlight=False)
    for path in r["written"]:
        console.print(f"wrote {path}")


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

    a = pick_arch(arch, space_file, seed, baseline)
    if out is not None:
        a.save(out)
    layers = arch_layers(a)
    if as_json:
        d = a.to_dict()
        d.update(arch_summary(a))
        d["layers"] = [vars(la) for la in layers]
        print_json(d)
        return
    s = arch_summary(a)
    console.print(
        f"[bold]{a.id}[/]  params {human(s['params'])}  FLOPs {human(s['flops'])}  "
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
            human(la.params),
            human(la.macs),
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

    a = pick_arch(arch, space_file, seed, baseline)
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
        print_json(result)
        return
    console.print(f"wrote {path} ({human(result['onnx_bytes'])}B, opset {opset}, head {head})")
    console.print(f"arch {a.id}: params {human(result['params'])}, FLOPs {human(result['flops'])}")
    if verify:
        console.print(f"onnxruntime matches torch: max |diff| {result['max_abs_diff_vs_torch']:.2e}")
