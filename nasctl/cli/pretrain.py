"""`nasctl pretrain`: contrastive pretraining and a linear probe."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich import box
from rich.table import Table

from nasctl.cli.common import (
    ArchArg,
    BaselineOpt,
    DeviceOpt,
    SpaceOpt,
    app,
    console,
    handle_errors,
    print_json,
    stderr_progress,
)
from nasctl.errors import NasctlError


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
    loss: Annotated[
        str,
        typer.Option(
            help="gamma (decomposable, Gamma-augmented) | sogclr (gamma with u = 1/Zhat, no draws) | "
            "dcl (decoupled: the positive left out of Z) | ntxent (SimCLR)."
        ),
    ] = "gamma",
    epochs: Annotated[int, typer.Option(help="Passes over the train split.")] = 10,
    steps: Annotated[
        Optional[int],
        typer.Option(metavar="N", help="Train exactly N optimiser steps instead (replaces --epochs)."),
    ] = None,
    batch_size: Annotated[int, typer.Option("--batch-size", min=2, help="Images per step (2 views each).")] = 32,
    lr: Annotated[float, typer.Option(help="Peak AdamW learning rate (warm-up, then cosine).")] = 2e-3,
    temperature: Annotated[float, typer.Option(help="Similarity temperature t.")] = 0.2,
    gamma_shape: Annotated[
        float, typer.Option(help="gamma: shape a of the Gamma draws (1 = exact; larger = less noise).")
    ] = 1.0,
    gamma_momentum: Annotated[
        float,
        typer.Option(
            help="gamma and sogclr: moving-average rate of the per-sample partition estimate (weight of the new batch)."
        ),
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
    min_scale: Annotated[
        Optional[float],
        typer.Option(help="Random resized crop: smallest area fraction (default 0.3; 0.6 with --two-tower)."),
    ] = None,
    random_init: Annotated[
        bool, typer.Option("--random-init/--no-random-init", help="Also probe the untrained backbone, for comparison.")
    ] = True,
    subset: Annotated[
        Optional[int], typer.Option(min=10, metavar="N", help="Use at most N images of each split (quick runs).")
    ] = None,
    device: DeviceOpt = "cpu",
    two_tower: Annotated[
        bool,
        typer.Option(
            "--two-tower",
            help="Train an image-text two-tower model (the arch is the image tower) on paired --data: "
            "pairs:digits (default then), pairs:digits:P, a .npz (image, text, vocab) or a folder of images "
            "with same-named .txt captions. --loss, --temperature and the gamma options do not apply.",
            rich_help_panel="Two-tower (image-text)",
        ),
    ] = False,
    separation: Annotated[
        float,
        typer.Option(
            metavar="W",
            help="Deep feature separation: weight of shared/specific orthogonality + intra-modal loss on the "
            "specific parts.",
            rich_help_panel="Two-tower (image-text)",
        ),
    ] = 0.0,
    intra: Annotated[
        float,
        typer.Option(
            metavar="W",
            help="Intra-modal contrastive loss on the shared embeddings alone (the control for --separation).",
            rich_help_panel="Two-tower (image-text)",
        ),
    ] = 0.0,
    bridge: Annotated[
        float,
        typer.Option(
            metavar="W",
            help="Brownian bridge: augmented views pulled toward the image-text path.",
            rich_help_panel="Two-tower (image-text)",
        ),
    ] = 0.0,
    geometry: Annotated[
        float,
        typer.Option(
            metavar="W",
            help="Geometric consistency: image and text similarity structures matched, cross-modal made symmetric.",
            rich_help_panel="Two-tower (image-text)",
        ),
    ] = 0.0,
    text_tower: Annotated[
        str,
        typer.Option(
            help="conv (embedding + 2 residual 1-D convs) | transformer (2 layers).",
            rich_help_panel="Two-tower (image-text)",
        ),
    ] = "conv",
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

    from nasctl.api import pick_arch
    from nasctl.api import pretrain as run_pretrain

    a = pick_arch(arch, space_file, seed, baseline)
    weights = {"separation": separation, "intra": intra, "bridge": bridge, "geometry": geometry}
    if two_tower:
        pretrain_pairs(
            a,
            data="pairs:digits" if data == "digits" else data,
            out=out,
            subset=subset,
            min_scale=min_scale,
            as_json=as_json,
            epochs=epochs,
            steps=steps,
            batch_size=batch_size,
            lr=lr,
            time_budget_s=time_budget,
            seed=seed,
            device=device,
            text_tower=text_tower,
            **weights,
        )
        return
    given = [f"--{k}" for k, v in weights.items() if v]
    if given or text_tower != "conv":
        raise NasctlError(f"{(given or ['--text-tower'])[0]} applies to two-tower models only: add --two-tower")

    def start_line(p: dict) -> str:
        s = p["data"]
        return (
            f"pretraining {a.id} ({loss}, batch {batch_size}, {p['device']}) on {s['name']}: "
            f"{s['train']} train / {s['val']} val / {s['test']} test images, {s['classes']} classes"
        )

    with training_bar("pretraining", start_line, "images_per_s", "img/s", as_json) as progress:
        full = run_pretrain(
            a,
            data=data,
            out=out,
            subset=subset,
            random_init=random_init,
            min_scale=0.3 if min_scale is None else min_scale,
            flip=flip,  # None: as the data allows
            progress=progress,
            loss=loss,
            epochs=epochs,
            steps=steps,
            batch_size=batch_size,
            lr=lr,
            temperature=temperature,
            gamma_shape=gamma_shape,
            gamma_momentum=gamma_momentum,
            time_budget_s=time_budget,
            seed=seed,
            device=device,
        )
    if as_json:
        print_json({k: v for k, v in full.items() if k != "loss_per_step"})
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
    probes = full.get("eval_seconds", 0.0) + full.get("random_init_eval_seconds", 0.0)
    console.print(
        f"time: training {full['train_seconds']:.1f} s, probes {probes:.1f} s, "
        f"the rest {full['fixed_seconds']:.1f} s (data, set-up, writing), "
        f"one-time imports {full['import_seconds']:.1f} s"
    )
    console.print(f"wrote {out}/: arch.json model.npz backbone.onnx metrics.json loss.png")


def pretrain_pairs(
    a, data: str, out: Path, subset: int | None, min_scale: float | None, as_json: bool, **config
) -> None:
    """``pretrain --two-tower``: train, evaluate, write the run folder and print the tables."""

    from nasctl.api import pretrain_two_tower

    def start_line(p: dict) -> str:
        s = p["data"]
        return (
            f"two-tower pretraining of {a.id} on {s['name']} ({p['device']}): {s['train']} train / "
            f"{s['val']} val / {s['test']} test pairs, vocabulary {s['vocab_size']} words"
        )

    with training_bar("training two towers", start_line, "pairs_per_s", "pairs/s", as_json) as progress:
        m = pretrain_two_tower(a, data=data, out=out, subset=subset, min_scale=min_scale, progress=progress, **config)
    if as_json:
        print_json({k: v for k, v in m.items() if k != "loss_per_step"})
        return
    r = m["retrieval"]
    t = Table(box=box.SIMPLE_HEAD, pad_edge=False, title=f"{m['variant']} (test split)")
    for c in ("image->text R@1", "R@5", "text->image R@1", "R@5", "zero-shot"):
        t.add_column(c, justify="right")
    zs = f"{m['zero_shot_accuracy']:.1%}" if "zero_shot_accuracy" in m else "–"
    t.add_row(
        *(f"{r[k]:.1%}" for k in ("image_to_text_r@1", "image_to_text_r@5", "text_to_image_r@1", "text_to_image_r@5")),
        zs,
    )
    console.print(t)
    if m.get("probe"):
        p = Table(box=box.SIMPLE_HEAD, pad_edge=False, title="linear probes (test accuracy)")
        p.add_column("task")
        for v in ("image", "text", "both"):
            p.add_column(f"{v} embedding", justify="right")
        for task, row in m["probe"].items():
            p.add_row(task, *(f"{row[v]:.1%}" for v in ("image", "text", "both")))
        console.print(p)
    console.print(
        f"{m['steps']} steps ({m['epochs_done']:.1f} epochs, stopped by {m['stopped_by'].replace('_', ' ')}) "
        f"in {m['train_seconds']:.0f} s; learnt temperature {m['temperature']:.3f}; "
        f"evaluation {m['eval_seconds']:.1f} s"
    )
    console.print(f"wrote {out}/: arch.json model.npz vocab.json image_tower.onnx metrics.json loss.png")


@contextmanager
def training_bar(
    description: str, start_line: Callable[[dict], str], rate_key: str, rate_unit: str, quiet: bool
) -> Iterator[Callable[[dict], None]]:
    """A progress bar on stderr for a training run; yields the ``progress`` callback the
    library calls: the start event prints ``start_line(event)``, the steps move the bar
    (``rate_key`` read as ``rate_unit``), the write event relabels it. ``quiet`` (--json):
    no output."""
    from rich.progress import BarColumn, TextColumn, TimeElapsedColumn

    with stderr_progress(
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        TextColumn("{task.fields[info]}"),
        TimeElapsedColumn(),
        quiet=quiet,
    ) as bar:
        task = bar.add_task(description, total=1.0, info="")

        def progress(p: dict) -> None:
            if p.get("event") == "start" and not quiet:
                bar.console.print(start_line(p))
            elif p.get("event") == "write":
                bar.update(task, description="exporting")
            elif "fraction" in p:
                bar.update(
                    task,
                    completed=min(1.0, p["fraction"]),
                    info=f"step {p['step']}/{p['total_steps']}  loss {p['loss']:.3f}  {p[rate_key]:.0f} {rate_unit}",
                )

        yield progress
