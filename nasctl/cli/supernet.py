"""`nasctl supernet train` and `nasctl supernet show`: options and rendering only."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from nasctl.cli.common import DeviceOpt, app, console, handle_errors, print_json, stderr_progress

supernet_app = typer.Typer(
    help="Weight-sharing supernets for single-shot search: train one once, then "
    "`nasctl search SPACE --strategy singleshot --supernet CKPT`.",
    no_args_is_help=True,
    rich_markup_mode="markdown",
)
app.add_typer(supernet_app, name="supernet")


@supernet_app.command("train")
@handle_errors
def train(
    space_file: Annotated[
        Path, typer.Argument(metavar="SPACE.yaml", help="Search-space YAML file, or a shipped space by name.")
    ],
    out: Annotated[Path, typer.Option(metavar="CKPT", help="The checkpoint file (.npz) to write, or resume.")] = Path(
        "runs/supernet.npz"
    ),
    data: Annotated[str, typer.Option(help="digits (embedded), a .npz file (x[, y]) or an image folder.")] = "digits",
    resolution: Annotated[
        Optional[int], typer.Option(help="Input resolution, fixed per supernet (default: the space's largest).")
    ] = None,
    epochs: Annotated[int, typer.Option(min=1, help="Epochs over the train split.")] = 40,
    batch_size: Annotated[int, typer.Option("--batch-size", min=2, help="Batch size (per process).")] = 64,
    lr: Annotated[float, typer.Option(help="AdamW learning rate (warm-up, then cosine).")] = 2e-3,
    subnets: Annotated[
        int, typer.Option(min=2, help="Subnets per step: the largest, the smallest and N-2 drawn uniformly.")
    ] = 4,
    distill: Annotated[
        bool,
        typer.Option(
            "--distill/--no-distill",
            help="The smaller subnets regress the largest's embeddings (in-place distillation), or learn NT-Xent.",
        ),
    ] = True,
    largest_first: Annotated[
        float,
        typer.Option(
            "--largest-first", help="Fraction of steps training the largest subnet alone, before channels are sorted."
        ),
    ] = 0.1,
    checkpoint_every: Annotated[
        int, typer.Option("--checkpoint-every", min=1, help="Steps between checkpoints (a kill loses at most these).")
    ] = 50,
    seed: Annotated[int, typer.Option(help="Seed for the initialisation, the data order, subnets and views.")] = 0,
    device: DeviceOpt = "cpu",
    as_json: Annotated[bool, typer.Option("--json", help="Print the checkpoint's record as JSON.")] = False,
) -> None:
    """Train a weight-sharing supernet of a space once (NT-Xent, sandwich rule, in-place distillation).

    Every arch of the space at one resolution is a subnet: per block position an IBN and a
    fused-IBN branch, kernels cropped from the largest, widths and expansions sliced, the
    first d blocks of a stage. Each step trains the largest, the smallest and random
    subnets. Re-running the same command resumes from the checkpoint. For several
    processes (or GPUs): `torchrun --nproc_per_node N -m nasctl supernet train ...`.

    Examples:

    * `nasctl supernet train search_spaces/mobilenetv2_32.yaml --epochs 40 --out runs/sn.npz`
    * `nasctl search search_spaces/mobilenetv2_32.yaml --strategy singleshot --supernet runs/sn.npz`
    """
    from rich.progress import BarColumn, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    from nasctl.api import train_supernet
    from nasctl.singleshot.train import world
    from nasctl.space import SearchSpace

    space = SearchSpace.load(space_file)  # a bad space fails before the progress bar starts
    quiet = as_json or world()[0] != 0
    with stderr_progress(
        TextColumn("supernet"),
        BarColumn(),
        TextColumn("{task.fields[info]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        quiet=quiet,
    ) as bar:
        task = bar.add_task("supernet", total=None, info="")

        def progress(p: dict) -> None:
            bar.update(
                task,
                total=p["total_steps"],
                completed=p["step"],
                info=f"step {p['step']}/{p['total_steps']}  loss {p['loss']:.3f}"
                + (f"  distill {p['distill_loss']:.3f}" if p.get("distill_loss") is not None else ""),
            )

        meta = train_supernet(
            space,
            out,
            progress=progress,
            data=data,
            resolution=resolution,
            epochs=epochs,
            batch_size=batch_size,
            lr=lr,
            subnets=subnets,
            distill=distill,
            largest_first=largest_first,
            checkpoint_every=checkpoint_every,
            seed=seed,
            device=device,
        )
    if world()[0] != 0:
        return
    _render(meta, out, as_json)


@supernet_app.command("show")
@handle_errors
def show(
    checkpoint: Annotated[
        Path, typer.Argument(metavar="CKPT", help="A checkpoint written by `nasctl supernet train`.")
    ],
    as_json: Annotated[bool, typer.Option("--json", help="Print the record as JSON.")] = False,
) -> None:
    """What a supernet checkpoint holds: its space, config and training progress."""
    from nasctl.singleshot.train import read_checkpoint

    meta, _ = read_checkpoint(checkpoint, tensors=False)
    _render(meta, checkpoint, as_json)


def _render(meta: dict, path: Path, as_json: bool) -> None:
    record = {k: v for k, v in meta.items() if k not in ("space_yaml", "loss_per_step")}
    losses = meta.get("loss_per_step") or []
    record["final_loss"] = sum(losses[-20:]) / len(losses[-20:]) if losses else None
    if as_json:
        print_json(record)
        return
    c = meta["config"]
    state = "trained" if meta.get("finished") else "partly trained"
    console.print(
        f"{path}: {state} supernet of {meta.get('space_name')} at {c['resolution']}x{c['resolution']}, "
        f"step {meta['step']}/{meta['total_steps']} ({c['epochs']} epochs, batch {c['batch_size']} x "
        f"{meta.get('world_size', 1)} process(es), {c['subnets']} subnets/step, "
        f"{'distilled' if c['distill'] else 'no distillation'}), {meta['seconds']:.0f} s"
        + (f", final loss {record['final_loss']:.3f}" if record["final_loss"] is not None else "")
    )
