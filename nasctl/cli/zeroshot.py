"""`nasctl proxy-eval`: how well each zero-shot score ranks archs of a space."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich import box
from rich.table import Table

from nasctl.cli.common import DeviceOpt, app, console, handle_errors, print_json, stderr_progress


@app.command("proxy-eval")
@handle_errors
def proxy_eval(
    space_file: Annotated[
        Path, typer.Argument(metavar="SPACE.yaml", help="Search-space YAML file, or a shipped space by name.")
    ],
    archs: Annotated[
        int, typer.Option(min=4, help="Archs drawn uniformly from the space (a larger N extends the list).")
    ] = 20,
    out: Annotated[Path, typer.Option(help="Folder: the caches, proxy_eval.json and proxy_eval.png.")] = Path(
        "runs/proxy-eval"
    ),
    seeds: Annotated[
        str, typer.Option(help="Training seeds, comma-separated; with two, their accuracies' tau is the ceiling.")
    ] = "0",
    epochs: Annotated[int, typer.Option(min=1, help="Training budget per arch, in epochs (no time cap).")] = 3,
    batch_size: Annotated[int, typer.Option("--batch-size", min=2, help="Training batch size.")] = 64,
    loss: Annotated[str, typer.Option(help="Pretraining loss: gamma | sogclr | dcl | ntxent.")] = "gamma",
    data: Annotated[str, typer.Option(help="digits (embedded), a .npz file (x, y) or an image folder.")] = "digits",
    proxies: Annotated[
        Optional[str], typer.Option("--proxies", help="Scores to compute, comma-separated (default: every one).")
    ] = None,
    proxy_batch: Annotated[int, typer.Option("--proxy-batch", min=4, help="Images each score reads.")] = 16,
    sample_seed: Annotated[int, typer.Option("--sample-seed", help="Seed of the uniform arch sample.")] = 0,
    reference: Annotated[
        int, typer.Option(min=8, help="Archs the ranked scores (aznas, votes) rank against, as in the search.")
    ] = 64,
    device: DeviceOpt = "cpu",
    as_json: Annotated[bool, typer.Option("--json", help="Print proxy_eval.json instead of the table.")] = False,
) -> None:
    """Train N archs of a space and see which zero-shot score ranks them as training does.

    Each arch is pretrained contrastively for a fixed number of epochs and scored by a
    linear probe on the val split (once per seed); every score is computed at
    initialisation. The table gives Kendall tau (with its 95% bootstrap interval),
    Spearman rho and top-10% precision of each score against the mean accuracy, beside
    the `params` and `flops` baselines. Trainings and scores are cached in --out: a
    re-run (e.g. with a larger --archs) adds only what is missing.

    Example: `nasctl proxy-eval mobilenetv2_32 --archs 60 --seeds 0,1 --out runs/pe`
    """
    from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn

    from nasctl.errors import NasctlError
    from nasctl.space import SearchSpace
    from nasctl.zeroshot.evaluate import EvalConfig, check, evaluate_scores, write_results

    try:
        seed_list = tuple(int(s) for s in seeds.split(",") if s.strip())
    except ValueError:
        raise NasctlError(f"--seeds: expected comma-separated integers (got {seeds!r})") from None
    space = SearchSpace.load(space_file)
    cfg = EvalConfig(
        space_file=str(space.source),
        out=str(out),
        archs=archs,
        seeds=seed_list,
        epochs=epochs,
        batch_size=batch_size,
        loss=loss,
        data=data,
        sample_seed=sample_seed,
        proxies=tuple(p.strip() for p in proxies.split(",") if p.strip()) if proxies else (),
        proxy_batch=proxy_batch,
        reference=reference,
        device=device,
    )
    check(cfg)  # every bad input fails here, before the progress bar
    with stderr_progress(
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        quiet=as_json,
        transient=False,
    ) as bar:
        n_train = archs * len(seed_list)
        t_train = bar.add_task("training", total=n_train)
        t_score = bar.add_task("scoring", total=None)

        def progress(e: dict) -> None:
            if e["event"] == "trained":
                bar.update(t_train, advance=1, description=f"training (seed {e['seed']}, {e['arch_id']})")
            elif e["event"] == "scored":
                bar.update(t_score, advance=1, description=f"scoring ({e['proxy']})")

        from nasctl.zeroshot.evaluate import trained

        bar.update(t_train, completed=sum(1 for (_, s) in trained(cfg) if s in seed_list))
        result = evaluate_scores(cfg, progress)
    paths = write_results(cfg, result)
    if as_json:
        from nasctl.zeroshot.evaluate import finite

        print_json(finite(result))
        return
    _render(result)
    console.print(f"wrote {paths['json']} and {paths['png']}")


def _render(result: dict) -> None:
    t = Table(box=box.SIMPLE_HEAD, pad_edge=False, title="zero-shot scores vs trained accuracy", title_justify="left")
    for col in ("score", "Kendall tau", "95% CI", "Spearman rho", "top-10% prec.", "s / arch"):
        t.add_column(col, justify="right" if col != "score" else "left", no_wrap=True)
    rows = sorted(result["table"].items(), key=lambda kv: -kv[1]["kendall_tau"])
    for name, r in rows:
        lo, hi = r["tau_ci95"]
        secs = r.get("seconds_median")
        t.add_row(
            name + (" (baseline)" if name in ("params", "flops") else ""),
            f"{r['kendall_tau']:.3f}",
            f"[{lo:.2f}, {hi:.2f}]",
            f"{r['spearman_rho']:.3f}",
            f"{100 * r['top10_precision']:.0f}%",
            "–" if secs is None else f"{secs:.3f}",
        )
    console.print(t)
    acc = result["accuracy"]
    console.print(
        f"{len(result['archs'])} archs, val accuracy {100 * acc['min']:.1f}–{100 * acc['max']:.1f}% "
        f"(mean {100 * acc['mean']:.1f}%)"
    )
    c = result.get("seed_ceiling")
    if c:
        console.print(
            f"ceiling: seed {c['seeds'][0]} vs seed {c['seeds'][1]} accuracies, Kendall tau {c['kendall_tau']:.3f} "
            f"[{c['tau_ci95'][0]:.2f}, {c['tau_ci95'][1]:.2f}]"
        )
    b = result["beats_baselines"]
    if b["baseline_tau"] is not None:
        higher = ", ".join(b["higher_tau"]) or "none"
        above = ", ".join(b["interval_above"]) or "none"
        console.print(
            f"higher tau than params and flops (best {b['baseline_tau']:.3f}): {higher}; "
            f"with the whole 95% interval above: {above}"
        )


@app.command("proxies")
@handle_errors
def list_proxies(as_json: Annotated[bool, typer.Option("--json", help="Print the list as JSON.")] = False) -> None:
    """List the zero-shot scores (`search --strategy zeroshot --proxy NAME`, `vote:A,B,C`).

    Scores marked "labels" read the data's labels when it has them (cross-entropy of a
    seeded linear classifier on the pooled features) and the NT-Xent loss of two
    augmented views when it has none.
    """
    from nasctl.zeroshot.proxies import PROXIES

    rows = [
        {
            "name": p.name,
            "summary": p.summary,
            "labels": p.uses_labels,
            "reads": "the arch" if not p.needs_model else ("labels or two views" if p.uses_labels else p.reads),
            "forward_only": p.forward_only,
            "batchnorm": p.bn if p.needs_model else None,
            "ranked": p.ranked,
            "parts": list(p.parts),
        }
        for p in PROXIES.values()
    ]
    if as_json:
        print_json(rows)
        return
    t = Table(box=box.SIMPLE_HEAD, pad_edge=False)
    for col in ("score", "reads", "pass", "BatchNorm", "what it computes"):
        t.add_column(col)
    for r in rows:
        t.add_row(
            r["name"],
            r["reads"],
            "–" if r["batchnorm"] is None else ("forward" if r["forward_only"] else "forward + backward"),
            r["batchnorm"] or "–",
            r["summary"] + (" (ranked against the reference sample)" if r["ranked"] else ""),
        )
    console.print(t)
