"""`nasctl search` and `nasctl report`: options and rendering only."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich import box
from rich.console import Console
from rich.table import Table

from nasctl.cli.common import DeviceOpt, app, console, handle_errors, human, print_json, stderr_progress

TT = "Two-tower (image-text)"  # the --help panel of the two-tower options


@app.command()
@handle_errors
def search(
    space_file: Annotated[
        Path,
        typer.Argument(
            metavar="SPACE.yaml", help="Search-space YAML file, or a shipped space by name (e.g. mobilenetv2_32)."
        ),
    ],
    strategy: Annotated[
        str,
        typer.Option(
            help="A registered strategy; multishot: NSGA-II, each candidate trained briefly; "
            "singleshot: one weight-sharing supernet trained once, its subnets scored by inherited weights; "
            "zeroshot: NSGA-II over a training-free score (--proxy), thousands of trials; "
            "hybrid: --screen N candidates scored zero-shot, the best of them trained as multishot trials."
        ),
    ] = "multishot",
    out: Annotated[Path, typer.Option(help="Run folder (study, trials.csv, pareto.*, winners/, report.md).")] = Path(
        "runs/search"
    ),
    trials: Annotated[
        Optional[int],
        typer.Option(
            help="Complete trials the study must reach (a resumed run runs the rest). "
            "Default: 20 (multishot), 200 (singleshot), 2000 (zeroshot); none with --time-budget alone."
        ),
    ] = None,
    time_budget: Annotated[
        Optional[float], typer.Option("--time-budget", metavar="SECONDS", help="Stop starting trials after SECONDS.")
    ] = None,
    estimator: Annotated[
        str, typer.Option(help="Latency estimator: cpu, sim-npu-p16, sim-npu-p32 or an estimator file.")
    ] = "cpu",
    objectives: Annotated[
        Optional[str],
        typer.Option(
            help="Comma-separated: the strategy's score (up; multishot: accuracy) and some of latency_ms, "
            "memory_mb, peak_activation_bytes, params (down). Default: the score and latency_ms."
        ),
    ] = None,
    latency_budget: Annotated[
        Optional[float], typer.Option("--latency-budget", metavar="MS", help="Constraint: estimated latency <= MS.")
    ] = None,
    memory_budget: Annotated[
        Optional[float],
        typer.Option("--memory-budget", metavar="MB", help="Constraint: float32 weights + peak activations <= MB."),
    ] = None,
    data: Annotated[str, typer.Option(help="digits (embedded), a .npz file (x, y) or an image folder.")] = "digits",
    loss: Annotated[str, typer.Option(help="Per-trial pretraining loss: gamma | sogclr | dcl | ntxent.")] = "gamma",
    epochs: Annotated[int, typer.Option(min=1, help="Per-trial training: at most this many epochs...")] = 3,
    trial_seconds: Annotated[
        Optional[float], typer.Option("--trial-seconds", help="...and at most this many seconds.")
    ] = 30.0,
    batch_size: Annotated[int, typer.Option("--batch-size", min=2, help="Per-trial batch size.")] = 32,
    device: DeviceOpt = "cpu",
    population: Annotated[
        Optional[int], typer.Option(min=2, help="NSGA-II population size (default 8; not with --sampler random).")
    ] = None,
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
    proxy: Annotated[
        Optional[str],
        typer.Option(
            help="zeroshot: the score, one of naswot, swap, meco, synflow, grad_norm, snip, zico, aznas, params, "
            "flops, or a rank vote vote:A,B,C (default: flops, the best on the default space: see nasctl proxy-eval)."
        ),
    ] = None,
    proxy_batch: Annotated[int, typer.Option("--proxy-batch", min=4, help="zeroshot: images each score reads.")] = 16,
    reference: Annotated[
        int, typer.Option(min=8, help="zeroshot: archs a ranked score (vote, aznas) ranks against, scored first.")
    ] = 64,
    supernet: Annotated[
        Optional[Path],
        typer.Option(
            metavar="CKPT",
            help="singleshot: a supernet trained by `nasctl supernet train` (default: the run trains its own, "
            "--supernet-epochs, into its folder).",
        ),
    ] = None,
    supernet_epochs: Annotated[
        int, typer.Option("--supernet-epochs", min=1, help="singleshot: epochs of the run's own supernet.")
    ] = 40,
    finetune: Annotated[
        int,
        typer.Option(
            min=0,
            metavar="K",
            help="singleshot: retrain the K best-scored winners stand-alone (from their inherited weights and "
            "from scratch, --epochs each) and report the three accuracies.",
        ),
    ] = 0,
    retrain: Annotated[
        int,
        typer.Option(
            min=0,
            metavar="K",
            help="After the search, retrain the baseline and the K best-scored Pareto archs under one budget "
            "(--epochs, 3 seeds, no time cap): what `nasctl retrain` does.",
        ),
    ] = 0,
    screen: Annotated[
        Optional[int],
        typer.Option(
            min=1,
            metavar="N",
            help="hybrid: candidates screened zero-shot (--proxy) before the best are trained (default 500).",
        ),
    ] = None,
    two_tower: Annotated[
        bool,
        typer.Option(
            "--two-tower",
            help="Search the image tower of an image-text two-tower model on paired --data (default then "
            "pairs:digits); accuracy = zero-shot classification by caption prompts on the val split. multishot only.",
            rich_help_panel=TT,
        ),
    ] = False,
    separation: Annotated[
        float,
        typer.Option(
            metavar="W", help="--two-tower: deep feature separation weight.", rich_help_panel="Two-tower (image-text)"
        ),
    ] = 0.0,
    bridge: Annotated[
        float,
        typer.Option(
            metavar="W", help="--two-tower: Brownian bridge weight.", rich_help_panel="Two-tower (image-text)"
        ),
    ] = 0.0,
    geometry: Annotated[
        float,
        typer.Option(
            metavar="W", help="--two-tower: geometric consistency weight.", rich_help_panel="Two-tower (image-text)"
        ),
    ] = 0.0,
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
    * `nasctl search SPACE.yaml --strategy zeroshot --trials 2000 --proxy vote:naswot,synflow,zico`
    * `nasctl search SPACE.yaml --strategy singleshot --supernet supernet.npz --trials 200 --finetune 2`
    * `nasctl search SPACE.yaml --strategy hybrid --screen 1000 --trials 12` (zero-shot screening, then training)
    * `nasctl search SPACE.yaml --two-tower --data pairs:digits:0.5 --bridge 0.1` (an image-text model's image tower)
    """
    from nasctl.search import make_config, prepare, run_search, write_outputs

    weights = {k: v for k, v in {"separation": separation, "bridge": bridge, "geometry": geometry}.items() if v}
    if weights and not two_tower:
        from nasctl.errors import NasctlError

        raise NasctlError("--separation, --bridge and --geometry apply to --two-tower searches only")

    cfg = make_config(
        space_file,
        strategy=strategy,
        out=out,
        trials=trials,
        time_budget_s=time_budget,
        estimator=estimator,
        objectives=objectives,
        latency_budget_ms=latency_budget,
        memory_budget_mb=memory_budget,
        data=data,
        loss=loss,
        epochs=epochs,
        trial_seconds=trial_seconds,
        batch_size=batch_size,
        train_device=device,
        population=population,
        sampler=sampler,
        seed=seed,
        storage=storage,
        study_name=study_name,
        workers=workers,
        top=top,
        proxy=proxy,
        proxy_batch=proxy_batch,
        reference_size=reference,
        supernet=supernet,
        supernet_epochs=supernet_epochs,
        finetune=finetune,
        retrain=retrain,
        screen=screen,
        two_tower=(
            {k: v for k, v in {"separation": separation, "bridge": bridge, "geometry": geometry}.items() if v} or True
        )
        if two_tower
        else None,
    )
    prepare(cfg)  # every bad input fails here, before the live view starts
    if not as_json:  # stdout then holds JSON only
        _warn_other_machine(cfg.estimator)
    interrupted = False
    with _SearchView(cfg, disabled=as_json) as view:
        try:
            run_search(cfg, view.update, prepared=True)
        except KeyboardInterrupt:
            interrupted = True
    err = Console(stderr=True)
    if finetune and not interrupted:
        from nasctl.search.retrain import finetune_if_asked

        if not as_json:
            err.print(f"fine-tuning the {finetune} best-scored winners (from inherited weights and from scratch)")
        with _training_spinner(as_json) as progress:
            finetune_if_asked(cfg, progress)
    if retrain and not interrupted:
        from nasctl.search.retrain import retrain_run

        if not as_json:
            err.print(f"retraining the baseline and the {retrain} best-scored Pareto archs (3 seeds each)")
        with _training_spinner(as_json) as progress:
            retrain_run(cfg, top=retrain, measure=do_measure, progress=progress)
    if not as_json:
        err.print("writing outputs" + (" and measuring the winners" if do_measure else ""))
    res = write_outputs(cfg, measure=do_measure)
    if as_json:
        print_json(json.loads((Path(cfg.out) / "pareto.json").read_text()))
    else:
        _render_search(res)
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
        self.result = None  # the last SearchResult read back from the study
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
            self.status = f"trial {event['trial']}: {event.get('verb', 'training')} {event['arch'][:60]}..."
        elif kind == "supernet":
            self.status = (
                f"training the supernet: step {event['step']}/{event['total_steps']}, loss {event['loss']:.3f}, "
                f"{event['elapsed_s']:.0f} s"
            )
        elif kind == "screen":
            self.status = f"screening zero-shot: {event['done'] + 1}/{event['total']} {event['arch'][:50]}..."
        elif kind == "reference":
            self.status = f"scoring the reference sample: {event['done']}/{event['total']}"
        elif kind == "tick":
            self.counts = event["counts"]
        elif kind == "step":
            self.status = (
                f"trial {event['trial']}: {min(1.0, event['fraction']):.0%} of its budget, loss {event['loss']:.3f}, "
                f"{event['images_per_s']:.0f} img/s"
            )
        elif kind == "wait":
            self.status = f"waiting for {event['running']} trial(s) running elsewhere (or stale)"
        elif kind == "done":
            self.counts = event["counts"]
            self._refresh_front(event.get("study"))
        self.live.update(self._render())

    def _refresh_front(self, study=None) -> None:
        from nasctl.search import collect

        try:
            res = collect(self.cfg, study)
        except Exception:  # the view never stops a search
            return
        self.result = res
        self.best = max((r.score(res.objective) for r in res.complete if r.trained), default=None)

    def _render(self):
        from rich.console import Group
        from rich.text import Text

        c = self.counts
        res = self.result
        lead = res.columns[0] if res else None
        best = f", best {lead.label} {lead.render(self.best)}" if lead and self.best is not None else ""
        head = Text(
            f"search {self.cfg.name}: {c.get('complete', 0)}/{self.cfg.trials or '∞'} complete, "
            f"{c.get('fail', 0)} failed{best}  |  {self.status}"
        )
        if not res or not res.pareto:
            return head
        t = Table(box=box.SIMPLE_HEAD, pad_edge=False, title="current Pareto front", title_justify="left")
        for col in ("trial", lead.label, "latency ms", "memory MB", "params", "arch id"):
            t.add_column(col, justify="right", no_wrap=True)
        for r in res.pareto[:8]:
            t.add_row(
                str(r.number),
                lead.render(r.metrics.get(lead.key)),
                f"{r.latency_ms:.3f}",
                f"{r.memory_mb:.2f}",
                human(r.params),
                r.arch_id,
            )
        return Group(head, t)


def _render_search(res) -> None:
    from nasctl.search.results import best_vs_baseline

    t = Table(
        box=box.SIMPLE_HEAD, pad_edge=False, collapse_padding=True, title="Pareto set (feasible)", title_justify="left"
    )
    cols = ["trial", *(c.label for c in res.columns), "est. ms", "meas. ms", "mem MB", "params", "arch id"]
    for col in cols:
        # headers keep their width in an 80-column terminal; the arch id is what gets cut
        t.add_column(col, justify="right", no_wrap=True, min_width=None if col == "arch id" else len(col))
    rows = ([res.baseline] if res.baseline else []) + [r for r in res.pareto if not r.baseline]
    for r in rows:
        t.add_row(
            f"{r.number}{' base' if r.baseline else ''}",
            *(c.render(r.metrics.get(c.key)) for c in res.columns),
            f"{r.latency_ms:.3f}",
            f"{r.measured_latency_ms:.3f}" if r.measured_latency_ms is not None else "–",
            f"{r.memory_mb:.2f}",
            human(r.params),
            r.arch_id,
        )
    console.print(t)
    b = best_vs_baseline(res)
    if b:
        obj = res.objective
        console.print(
            f"best within 1 point of the baseline: trial {b['trial']}, {b['latency_change_pct']:+.1f}% "
            f"{b['latency_key'].replace('_', ' ')}, {b[f'{obj}_change_points']:+.1f} points {obj}"
        )
    c = res.counts
    console.print(
        f"{c.get('complete', 0)} complete, {c.get('fail', 0)} failed trials. "
        f"wrote {res.out}/: trials.csv pareto.json pareto.png report.md winners/"
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
    res = write_outputs(cfg, measure=do_measure)
    if as_json:
        print_json(json.loads((run_dir / "pareto.json").read_text()))
        return
    _render_search(res)


@app.command("retrain")
@handle_errors
def retrain_cmd(
    run_dir: Annotated[Path, typer.Argument(metavar="RUN_DIR", help="A run folder written by `nasctl search`.")],
    top: Annotated[int, typer.Option(min=1, help="Best-scored Pareto archs retrained beside the baseline.")] = 3,
    epochs: Annotated[
        Optional[int], typer.Option(min=1, help="Epochs per training (default: the search's --epochs).")
    ] = None,
    seeds: Annotated[int, typer.Option(min=1, help="Training seeds per arch (0..N-1).")] = 3,
    do_measure: Annotated[
        bool, typer.Option("--measure/--no-measure", help="Time the retrained archs with onnxruntime.")
    ] = True,
    as_json: Annotated[bool, typer.Option("--json", help="Print retrain.json instead of a table.")] = False,
) -> None:
    """Retrain a search's winners and its baseline under one identical budget, over seeds.

    A search trains each trial under a wall-clock budget, in which a big arch trains the
    fewest epochs; its accuracies rank, they do not compare fairly. This retrains the
    baseline and the best-scored Pareto archs with the same loss, batch and epochs (no
    time cap), once per seed, and reports accuracy mean ± std, latency, memory and the
    fastest arch within 1 point of the baseline. Runs are cached in RUN_DIR/retrain.jsonl
    (a killed retrain resumes); the result goes to retrain.json and report.md.

    Example: `nasctl retrain runs/x --top 3 --epochs 10 --seeds 3`
    """
    from nasctl.search import load_config
    from nasctl.search.results import retrain_section
    from nasctl.search.retrain import retrain_run

    cfg = load_config(run_dir)
    with _training_spinner(as_json) as progress:
        out = retrain_run(cfg, top=top, epochs=epochs, seeds=seeds, measure=do_measure, progress=progress)
    _splice_report(run_dir / "report.md", retrain_section(run_dir))
    if as_json:
        print_json(out)
        return
    b = out["budget"]
    t = Table(
        box=box.SIMPLE_HEAD,
        pad_edge=False,
        title=f"retrained: {b['loss']}, {b['epochs']} epochs at batch {b['batch_size']}, seeds {b['seeds']}",
        title_justify="left",
    )
    for col in ("trial", "val acc", "test acc", "est. ms", "meas. ms", "mem MB", "params", "arch id"):
        t.add_column(col, justify="right", no_wrap=True)
    for r in out["rows"]:
        t.add_row(
            f"{r['trial']}{' base' if r['baseline'] else ''}",
            f"{100 * r['accuracy_mean']:.1f}% ± {100 * r['accuracy_std']:.1f}",
            f"{100 * r['test_accuracy_mean']:.1f}% ± {100 * r['test_accuracy_std']:.1f}",
            f"{r['latency_ms']:.3f}",
            "–" if r["measured_latency_ms"] is None else f"{r['measured_latency_ms']:.3f}",
            f"{r['memory_mb']:.2f}",
            human(r["params"]),
            r["arch_id"],
        )
    console.print(t)
    f = out["best_within_1_point"]
    if f:
        console.print(
            f"best within 1 point of the baseline: trial {f['trial']}, {f['latency_change_pct']:+.1f}% "
            f"{f['latency_key'].replace('_', ' ')}, {f['accuracy_change_points']:+.1f} points val accuracy"
        )
    else:
        console.print("no retrained arch is within 1 point of the baseline's mean val accuracy")
    console.print(f"wrote {run_dir}/retrain.json and its section of {run_dir}/report.md")


def _splice_report(path: Path, section: list[str]) -> None:
    """Put ``section`` (a blank line, its title, its body) in the report in place of its
    old one, before the fine-tuned / failed trials sections and the files line."""
    if not path.is_file() or not section:
        return
    lines = path.read_text().splitlines()
    later = ("## ", "Files:")
    if section[1] in lines:  # drop the old one: from its leading blank line to the next section's
        start = lines.index(section[1])
        end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith(later)), len(lines))
        del lines[start - 1 : end - 1]
    heads = ("## Fine-tuned winners", "## Failed trials")
    at = next((i - 1 for i, x in enumerate(lines) if x in heads or x.startswith("Files:")), len(lines))
    path.write_text("\n".join(lines[:at] + section + lines[at:]) + "\n")


def _warn_other_machine(estimator: str) -> None:
    """The estimate's other-machine warning, once, before a search spends its budget."""
    from nasctl.latency.api import load_estimator
    from nasctl.latency.estimator import machine_mismatch

    other = machine_mismatch(load_estimator(estimator).device)
    if other:
        Console(stderr=True).print(f"[yellow]warning:[/] {other}", highlight=False)


@contextmanager
def _training_spinner(disabled: bool) -> Iterator[Callable[[dict], None]]:
    """A spinner on stderr naming the winner being retrained (trial, seed) or fine-tuned;
    yields the ``progress`` callback ``retrain_run`` and ``finetune_if_asked`` call."""
    from rich.progress import SpinnerColumn, TextColumn, TimeElapsedColumn

    with stderr_progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(), quiet=disabled) as bar:
        task = bar.add_task("starting", total=None)

        def progress(p: dict) -> None:
            what = "fine-tuning" if p.get("event") == "finetune" else "retraining"
            seed = f", seed {p['seed']}" if "seed" in p else ""
            bar.update(task, description=f"{what} trial {p['trial']}{seed}: {p['arch'][:50]}...")

        yield progress
