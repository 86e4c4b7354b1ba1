"""The four contrastive losses on a synthetic task where small-batch gradient bias matters.

Our analog of the seed paper's synthetic experiment ("with heavy injected noise the
decomposable loss reached the optimum in 10 of 10 runs, the conventional loss in none"),
run at three noise levels and two batch sizes, every loss tuned the same way on tuning
seeds kept apart from the seeds that are reported, the reported runs paired by seed.

Task (instance discrimination with rare hard negatives, every number a CLI default):

* Latent structure, known: ``n = 64`` points in R^16. Dims 0-5 ("coarse"): N(0, I/6).
  Dims 6-7 ("fine"): 0, except for 16 near-duplicate *pairs* (32 of the 64 points): the two
  points of a pair share their coarse part and sit at ``+-delta * u_pair`` (``delta = 0.1``,
  u_pair a random unit vector of R^2). Dims 8-15 ("nuisance"): 0.
* Views (the injected noise): ``x + noise``, noise N(0, 0.03^2) on the 8 signal dims and
  N(0, sigma^2) on the 8 nuisance dims, fresh for every view; sigma, the noise level, is
  0.5, 1 or 2 (the signal part of a point has norm ~1).
* Encoder: linear R^16 -> R^6, no bias, L2-normalised output. Its output dimension (6) is
  smaller than the signal's (8), so it must choose which directions to keep: keeping the
  coarse dims alone confuses every pair (metric 0.75); separating the pairs needs some of
  the fine dims. For an anchor in a pair, its partner is the negative that dominates
  ``Z_i`` at ``t = 0.1``, but it is 1 of the 63 other points: a batch of 4 samples misses it
  ~95% of the time, the regime where the log of a minibatch mean is most biased.
* Training: batches of B samples (B = 4 or 8; 2B views) drawn uniformly without
  replacement within a step, Adam with cosine decay to 0 over 2000 steps, temperature 0.1.
  For each seed, every loss starts from the same initialisation and sees the same batches
  and views (the Gamma draws have their own stream); only the loss differs. For ``sogclr``
  and ``gamma`` the per-sample estimates ``Zhat`` start, as in ``nasctl pretrain``, from a
  no-grad pass: one view of every point, ``Z_i`` its mean ``exp(s_ij)`` over the other 63.
* Metric (optimum 1.0): instance retrieval accuracy on held-out noise: for each of the 64
  points, 16 fresh views are embedded, and a query counts as correct when the nearest
  clean point (cosine) is its own. The projection on the 8 signal dims scores 1.0, on the
  6 coarse dims 0.75.

Tuning, the same procedure for every loss, per (noise level, batch), on tuning seeds
(default 100 and 101; reported seeds 0-9), by the mean final metric: stage 1, the
learning rate from {0.02, 0.04, 0.08} at the loss's middle settings (sogclr and gamma:
momentum 0.1, gamma shape 4); stage 2, at that learning rate, the loss's own
hyper-parameters: sogclr the momentum of ``Zhat`` in {0.02, 0.1, 0.5, 0.9}, gamma the
momentum in that set times the shape a in {1, 4, 16}. gamma has the largest grid (14
settings against 3 for ntxent and dcl): the tuning favours it, not its baselines.

Output: per (noise, batch) and loss, the reported seeds' final metric (mean and 95%
t-interval, runs reaching 0.99 and 0.98), gamma minus each other loss paired by seed
(mean, 95% t-interval, Wilcoxon signed-rank p); ``results/contrastive_synthetic.json`` and
``results/contrastive_synthetic.png``. Every run is cached in
``results/contrastive_synthetic.partial.json``, so an interrupted bench resumes.

    python bench/contrastive_synthetic.py [--noise 0.5 1 2] [--batches 4 8] [--seeds 0..9]
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS, Partial, save  # noqa: E402

from nasctl.contrastive.losses import LOSSES, PartitionEstimateLoss, make_loss  # noqa: E402
from nasctl.contrastive.pretrain import log_partitions  # noqa: E402

ORDER = ("ntxent", "dcl", "sogclr", "gamma")
assert set(ORDER) == set(LOSSES)
COLOURS = {"ntxent": "tab:red", "dcl": "tab:orange", "sogclr": "tab:green", "gamma": "tab:blue"}
LRS = (0.02, 0.04, 0.08)
MOMENTA = (0.02, 0.1, 0.5, 0.9)
SHAPES = (1.0, 4.0, 16.0)
MIDDLE = {"momentum": 0.1, "shape": 4.0}


def make_points(a: argparse.Namespace) -> torch.Tensor:
    """The n latent points (rows), fixed by ``--data-seed``."""
    g = torch.Generator().manual_seed(a.data_seed)
    n, c, f, p = a.n, a.coarse, a.fine, a.pairs
    coarse = torch.randn(n - p, c, generator=g) / math.sqrt(c)
    coarse = torch.cat([coarse, coarse[:p]])  # the last p points copy the first p's coarse part
    fine = torch.zeros(n, f)
    u = F.normalize(torch.randn(p, f, generator=g), dim=1) * a.delta
    fine[:p], fine[n - p :] = u, -u
    return torch.cat([coarse, fine, torch.zeros(n, a.nuisance)], dim=1)


def noise_scale(a: argparse.Namespace, nuisance_noise: float | None = None) -> torch.Tensor:
    """Per-dimension std of the view noise (``nuisance_noise`` overrides ``a.nuisance_noise``)."""
    sigma = a.nuisance_noise if nuisance_noise is None else nuisance_noise
    return torch.cat([torch.full((a.coarse + a.fine,), a.view_noise), torch.full((a.nuisance,), sigma)])


def retrieval(encode, x: torch.Tensor, scale: torch.Tensor, queries: int, seed: int = 12345) -> float:
    """Fraction of fresh views whose nearest clean point (cosine) is their own point."""
    g = torch.Generator().manual_seed(seed)  # the same held-out views for every run
    with torch.no_grad():
        gallery = F.normalize(encode(x), dim=1)
        xq = x.repeat(queries, 1)
        xq = xq + scale * torch.randn(xq.shape, generator=g)
        nearest = (F.normalize(encode(xq), dim=1) @ gallery.T).argmax(dim=1)
        return float((nearest == torch.arange(len(x)).repeat(queries)).float().mean())


def initial_log_partitions(enc, x: torch.Tensor, scale: torch.Tensor, t: float, seed: int) -> torch.Tensor:
    """``log Z_i`` from one noisy view of every point: the mean ``exp(s_ij)`` over the others
    (the library's ``log_partitions``, as ``nasctl pretrain`` starts its estimates)."""
    g = torch.Generator().manual_seed(3000 + seed)
    with torch.no_grad():
        return log_partitions(enc(x + scale * torch.randn(x.shape, generator=g)), t, g)


def train(
    loss_name: str, hp: dict, seed: int, x: torch.Tensor, a: argparse.Namespace, noise: float, batch: int, evals: int
) -> list[float]:
    """One run; returns the metric at ``evals`` evenly spaced steps and at the end."""
    n, dim = x.shape
    scale = noise_scale(a, noise)
    torch.manual_seed(1000 + seed)  # initialisation
    enc = torch.nn.Linear(dim, a.out_dim, bias=False)
    g = torch.Generator().manual_seed(seed)  # batches and views: identical for every loss
    loss_fn = make_loss(loss_name, n, a.temperature, hp.get("shape", 1.0), hp.get("momentum", 0.5), seed=2000 + seed)
    if isinstance(loss_fn, PartitionEstimateLoss):
        loss_fn.init_estimates(initial_log_partitions(enc, x, scale, a.temperature, seed))
    opt = torch.optim.Adam(enc.parameters(), hp["lr"])
    steps = a.steps
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1 + math.cos(math.pi * s / steps)))
    every = max(1, steps // evals) if evals else steps + 1
    curve = []
    for step in range(steps):
        if step % every == 0:
            curve.append(retrieval(enc, x, scale, a.queries))
        idx = torch.randperm(n, generator=g)[:batch]
        xb = x[idx]
        v1 = xb + scale * torch.randn(xb.shape, generator=g)
        v2 = xb + scale * torch.randn(xb.shape, generator=g)
        loss, _ = loss_fn(enc(v1), enc(v2), idx)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
    curve.append(retrieval(enc, x, scale, a.queries))
    return curve


def hp_key(loss: str, hp: dict) -> str:
    return f"{loss}/" + ",".join(f"{k}={hp[k]:g}" for k in sorted(hp))


def stage_grids(loss: str, lr: float | None) -> list[dict]:
    """Stage 1 (``lr`` None): the learning rates at the loss's middle settings; stage 2: its
    own hyper-parameters at ``lr``."""
    own = {"ntxent": {}, "dcl": {}, "sogclr": {"momentum": MIDDLE["momentum"]}, "gamma": dict(MIDDLE)}[loss]
    if lr is None:
        return [{"lr": r, **own} for r in LRS]
    if loss == "sogclr":
        return [{"lr": lr, "momentum": m} for m in MOMENTA]
    if loss == "gamma":
        return [{"lr": lr, "momentum": m, "shape": s} for m in MOMENTA for s in SHAPES]
    return []


def tune(loss: str, x, a, noise: float, batch: int, done: Partial) -> tuple[dict, dict]:
    """The best hyper-parameters of ``loss`` on the tuning seeds, and every setting's mean."""
    scores: dict[str, float] = {}

    def score(hp: dict) -> float:
        finals = []
        for s in a.tuning_seeds:
            key = f"tune/steps{a.steps}/noise{noise:g}/b{batch}/{hp_key(loss, hp)}/seed{s}"
            if key not in done:
                done.put(key, train(loss, hp, s, x, a, noise, batch, evals=0)[-1])
            finals.append(done[key])
        scores[hp_key(loss, hp)] = float(np.mean(finals))
        return scores[hp_key(loss, hp)]

    best = max(stage_grids(loss, None), key=score)
    for hp in stage_grids(loss, best["lr"]):
        if score(hp) > scores[hp_key(loss, best)]:
            best = hp
    return best, scores


def t_interval(values: list[float]) -> list[float]:
    from scipy import stats

    v = np.asarray(values, dtype=float)
    if len(v) < 2 or float(v.std()) == 0.0:
        return [float(v.mean()), float(v.mean())]
    half = stats.t.ppf(0.975, len(v) - 1) * v.std(ddof=1) / math.sqrt(len(v))
    return [float(v.mean() - half), float(v.mean() + half)]


def wilcoxon_p(d: list[float]) -> float | None:
    from scipy import stats

    if all(abs(v) < 1e-12 for v in d):
        return 1.0
    return float(stats.wilcoxon(d, zero_method="zsplit").pvalue)


def plot(cells: dict, a: argparse.Namespace, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(
        len(a.batches), len(a.noise), figsize=(3.3 * len(a.noise), 3 * len(a.batches)), squeeze=False, sharey=True
    )
    for r, batch in enumerate(a.batches):
        for c, noise in enumerate(a.noise):
            ax = axes[r][c]
            cell = cells[f"noise{noise:g}/b{batch}"]
            for i, loss in enumerate(ORDER):
                row = cell["losses"][loss]
                finals = row["finals"]
                ax.scatter(
                    np.full(len(finals), i) + np.linspace(-0.15, 0.15, len(finals)),
                    finals,
                    s=9,
                    color=COLOURS[loss],
                    alpha=0.6,
                )
                lo, hi = row["ci95"]
                ax.errorbar(
                    [i + 0.3],
                    [row["mean"]],
                    yerr=[[row["mean"] - lo], [hi - row["mean"]]],
                    fmt="o",
                    color="k",
                    ms=3,
                    capsize=2,
                )
            ax.axhline(0.99, color="k", ls="--", lw=0.6)
            ax.set_xticks(range(len(ORDER)), ORDER, fontsize=8)
            ax.set_title(f"noise {noise:g}, batch {batch}", fontsize=9)
            ax.grid(alpha=0.3)
            if c == 0:
                ax.set_ylabel("final retrieval accuracy")
    fig.suptitle(f"synthetic task, {len(a.seeds)} seeds per loss (dots), mean and 95% t-interval (black)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    print(f"saved {path}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--noise", type=float, nargs="+", default=[0.5, 1.0, 2.0], help="Nuisance noise levels.")
    ap.add_argument("--batches", type=int, nargs="+", default=[4, 8])
    ap.add_argument("--seeds", type=int, nargs="+", default=list(range(10)), help="Reported seeds.")
    ap.add_argument("--tuning-seeds", type=int, nargs="+", default=[100, 101])
    ap.add_argument("--steps", type=int, default=2000)
    ap.add_argument("--temperature", type=float, default=0.1)
    ap.add_argument("--n", type=int, default=64)
    ap.add_argument("--pairs", type=int, default=16)
    ap.add_argument("--coarse", type=int, default=6)
    ap.add_argument("--fine", type=int, default=2)
    ap.add_argument("--nuisance", type=int, default=8)
    ap.add_argument("--delta", type=float, default=0.1)
    ap.add_argument("--view-noise", type=float, default=0.03)
    ap.add_argument("--nuisance-noise", type=float, default=1.0, help="(for importers; the bench uses --noise)")
    ap.add_argument("--out-dim", type=int, default=6)
    ap.add_argument("--queries", type=int, default=16)
    ap.add_argument("--evals", type=int, default=20, help="Evaluations along each reported run's curve.")
    ap.add_argument("--data-seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--fresh", action="store_true", help="Ignore runs saved by an interrupted bench.")
    a = ap.parse_args()
    if set(a.seeds) & set(a.tuning_seeds):
        sys.exit("error: the tuning seeds must be kept apart from the reported seeds")
    torch.set_num_threads(a.threads)
    t0 = time.perf_counter()
    x = make_points(a)
    sig = a.coarse + a.fine
    oracle = {
        f"noise{noise:g}": {
            "signal_projection": retrieval(lambda z: z[:, :sig], x, noise_scale(a, noise), a.queries),
            "coarse_projection": retrieval(lambda z: z[:, : a.coarse], x, noise_scale(a, noise), a.queries),
        }
        for noise in a.noise
    }
    done = Partial("contrastive_synthetic", a.fresh)
    cells: dict = {}
    for batch in a.batches:
        for noise in a.noise:
            name = f"noise{noise:g}/b{batch}"
            cell: dict = {"noise": noise, "batch": batch, "losses": {}, "paired_gamma_minus": {}}
            for loss in ORDER:
                hp, scores = tune(loss, x, a, noise, batch, done)
                curves = []
                for s in a.seeds:
                    key = f"report/steps{a.steps}/{name}/{hp_key(loss, hp)}/seed{s}"
                    if key not in done:
                        done.put(key, train(loss, hp, s, x, a, noise, batch, a.evals))
                    curves.append(done[key])
                finals = [c[-1] for c in curves]
                cell["losses"][loss] = {
                    "hyperparameters": hp,
                    "tuning_scores": scores,
                    "finals": finals,
                    "mean": float(np.mean(finals)),
                    "ci95": t_interval(finals),
                    "reached_0.99": sum(f >= 0.99 for f in finals),
                    "reached_0.98": sum(f >= 0.98 for f in finals),
                    "curves": [[round(v, 4) for v in c] for c in curves],
                }
                print(
                    f"{name:14s} {loss:7s} {hp_key(loss, hp):40s} mean {np.mean(finals):.3f} "
                    f"[{cell['losses'][loss]['ci95'][0]:.3f}, {cell['losses'][loss]['ci95'][1]:.3f}] "
                    f">=0.99 {cell['losses'][loss]['reached_0.99']}/{len(finals)}  ({time.perf_counter() - t0:.0f} s)",
                    flush=True,
                )
            gam = cell["losses"]["gamma"]["finals"]
            for other in ORDER[:-1]:
                d = [g - o for g, o in zip(gam, cell["losses"][other]["finals"], strict=True)]
                cell["paired_gamma_minus"][other] = {
                    "differences": d,
                    "mean": float(np.mean(d)),
                    "ci95": t_interval(d),
                    "wilcoxon_p": wilcoxon_p(d),
                    "gamma_better": sum(v > 0 for v in d),
                    "gamma_worse": sum(v < 0 for v in d),
                }
            cells[name] = cell
    print("\nfinal retrieval accuracy, mean [95% t-interval] over the reported seeds; gamma minus other, paired:")
    for name, cell in cells.items():
        row = "  ".join(f"{loss} {cell['losses'][loss]['mean']:.3f}" for loss in ORDER)
        pairs = "  ".join(
            f"-{o}: {p['mean']:+.3f} [{p['ci95'][0]:+.3f}, {p['ci95'][1]:+.3f}] p={p['wilcoxon_p']:.2f}"
            for o, p in cell["paired_gamma_minus"].items()
        )
        print(f"{name:14s} {row}\n{'':14s} {pairs}")
    RESULTS.mkdir(parents=True, exist_ok=True)
    plot(cells, a, RESULTS / "contrastive_synthetic.png")
    eval_every = max(1, a.steps // a.evals)
    save(
        "contrastive_synthetic",
        {
            "fixed_encoders": oracle,
            "grids": {"lr": LRS, "momentum": MOMENTA, "shape": SHAPES, "stage1_middle": MIDDLE},
            "curve_steps": list(range(0, a.steps, eval_every)) + [a.steps],
            "cells": cells,
            "total_seconds": time.perf_counter() - t0,
        },
        config=vars(a),
    )


if __name__ == "__main__":
    main()
