"""``proxy-eval``: does a zero-shot score rank archs of *this* space as training does?

N archs are drawn uniformly from the space (each flat parameter uniformly, a fixed
sampling seed, so a larger N extends the same list). Each is trained with the search's
task-model pipeline (contrastive pretraining, then a linear probe scored on the val
split) under one fixed budget in epochs, once per training seed; every score is computed
for each. Kendall tau and Spearman rho of each score against the accuracy (mean over
seeds), and the precision of its top 10%, say how well it ranks; ``params`` and
``flops`` are the baselines a score must beat, and the tau of one training seed's
accuracies against another's is the ceiling no score can pass.

Everything is cached in the output folder as JSON lines (``trained.jsonl``,
``scores.jsonl``), one line per finished training or score, so a killed run loses at
most the item in flight and a re-run with a larger ``--archs`` adds archs.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from nasctl.errors import NasctlError

TRAIN_FILE = "trained.jsonl"
SCORE_FILE = "scores.jsonl"
RESULT_FILE = "proxy_eval.json"
PLOT_FILE = "proxy_eval.png"
SPLIT_SEED = 0  # the data split is the same for every training seed: only training varies
TOP_FRACTION = 0.10

Progress = Callable[[dict], None]


@dataclass
class EvalConfig:
    """What ``proxy-eval`` trains and scores. ``proxies`` empty: every registered score."""

    space_file: str
    out: str = "runs/proxy-eval"
    archs: int = 20
    seeds: tuple[int, ...] = (0,)
    epochs: int = 3
    batch_size: int = 64
    loss: str = "gamma"
    data: str = "digits"
    sample_seed: int = 0
    proxies: tuple[str, ...] = field(default_factory=tuple)
    proxy_batch: int = 16
    proxy_seed: int = 0
    reference: int = 64  # archs ranked scores rank against (as the search's --reference)
    device: str = "cpu"

    def pretrain_config(self, seed: int):
        from nasctl.contrastive import PretrainConfig

        return PretrainConfig(
            loss=self.loss,
            epochs=self.epochs,
            batch_size=self.batch_size,
            seed=seed,
            time_budget_s=None,
            device=self.device,
        )

    def train_key(self) -> dict[str, Any]:
        """What makes two trainings of one arch and seed the same (the cache key's budget)."""
        return {
            "data": self.data,
            "split_seed": SPLIT_SEED,
            "loss": self.loss,
            "epochs": self.epochs,
            "batch_size": self.batch_size,
        }

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["seeds"], d["proxies"] = list(self.seeds), list(self.proxies)
        return d


def read_jsonl(path: Path) -> list[dict]:
    """The records of a cache file; a line cut short by a killed run is skipped."""
    if not path.is_file():
        return []
    out = []
    for line in path.read_text().splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(rec, dict):
            out.append(rec)
    return out


def append_jsonl(path: Path, record: dict) -> None:
    """One record, written whole in one call (appends from several processes stay whole)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    data = (json.dumps(record, sort_keys=True) + "\n").encode()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)


def sample_archs(space, n: int, seed: int) -> list:
    """The first ``n`` archs of the space's uniform sample stream ``seed``."""
    return space.samples(n, seed=seed)


def trained(cfg: EvalConfig) -> dict[tuple[str, int], dict]:
    """Cached trainings under ``cfg``'s budget: ``{(arch_id, seed): record}``."""
    key = cfg.train_key()
    return {
        (r["arch_id"], int(r["seed"])): r
        for r in read_jsonl(Path(cfg.out) / TRAIN_FILE)
        if r.get("budget") == key and "val_accuracy" in r
    }


def train_archs(cfg: EvalConfig, archs: Iterable, progress: Progress | None = None) -> dict[tuple[str, int], dict]:
    """Train every (arch, seed) not in the cache yet, appending each as it finishes."""
    from nasctl.contrastive import TrainingDiverged, load_data, pretrain_and_evaluate

    done = trained(cfg)
    path = Path(cfg.out) / TRAIN_FILE
    data_cache: dict[tuple[int, int], Any] = {}
    for arch in archs:
        for seed in cfg.seeds:
            if (arch.id, seed) in done:
                continue
            k = (arch.resolution, arch.in_channels)
            if k not in data_cache:
                data_cache[k] = load_data(cfg.data, arch.resolution, arch.in_channels, seed=SPLIT_SEED)
            if progress:
                progress({"event": "train", "arch_id": arch.id, "seed": seed})
            rec: dict[str, Any] = {
                "arch_id": arch.id,
                "arch": arch.to_string(),
                "seed": seed,
                "budget": cfg.train_key(),
            }
            t = time.perf_counter()
            try:
                _, m = pretrain_and_evaluate(arch, data_cache[k], cfg.pretrain_config(seed))
            except TrainingDiverged as exc:  # a diverging arch is a result: it trains badly
                rec.update(val_accuracy=None, test_accuracy=None, diverged=str(exc))
            else:
                val = m.get("linear_probe_val_accuracy")
                if val is None or not math.isfinite(val):
                    raise NasctlError(f"{cfg.data}: the data has no labels; proxy-eval needs labelled data")
                rec.update(val_accuracy=float(val), test_accuracy=float(m["linear_probe_accuracy"]))
            rec["seconds"] = round(time.perf_counter() - t, 2)
            append_jsonl(path, rec)
            done[(arch.id, seed)] = rec
            if progress:
                progress({"event": "trained", **rec})
    return done


# ------------------------------------------------------------------------------ scoring
DEFAULT_VOTES = ("vote:synflow,zico,naswot",)  # declared before any result was seen


def score_key(cfg: EvalConfig) -> dict[str, Any]:
    return {"data": cfg.data, "split_seed": SPLIT_SEED, "batch": cfg.proxy_batch, "seed": cfg.proxy_seed}


def proxy_names(cfg: EvalConfig) -> list[str]:
    from nasctl.zeroshot.proxies import PROXIES

    names = list(cfg.proxies) or list(PROXIES)
    unknown = [n for n in names if n not in PROXIES]
    if unknown:
        raise NasctlError(f"unknown score {unknown[0]!r} (registered: {', '.join(PROXIES)})")
    return names


def scored(cfg: EvalConfig) -> dict[tuple[str, str], dict]:
    """Cached raw scores under ``cfg``'s batch and seed: ``{(arch_id, proxy): record}``."""
    key = score_key(cfg)
    return {(r["arch_id"], r["proxy"]): r for r in read_jsonl(Path(cfg.out) / SCORE_FILE) if r.get("key") == key}


def score_archs(cfg: EvalConfig, archs: list, progress: Progress | None = None) -> dict[tuple[str, str], dict]:
    """Every named proxy's raw parts for every arch not in the cache yet (NaN / inf kept as
    None: that arch ranks lowest on that score)."""
    from nasctl.zeroshot.proxies import Batches, compute_or_nan

    done = scored(cfg)
    path = Path(cfg.out) / SCORE_FILE
    batches = Batches(cfg.data, cfg.proxy_batch, cfg.proxy_seed, split_seed=SPLIT_SEED)
    names = proxy_names(cfg)
    for arch in archs:
        for name in names:
            if (arch.id, name) in done:
                continue
            batch = batches.for_arch(arch)  # loading the data is not the score's time
            t = time.perf_counter()
            raw, error = compute_or_nan(name, arch, batch, cfg.proxy_seed)
            rec = {
                "arch_id": arch.id,
                "proxy": name,
                "key": score_key(cfg),
                "raw": {p: (float(v) if math.isfinite(v) else None) for p, v in raw.items()},
                "seconds": round(time.perf_counter() - t, 4),
                "error": error,
            }
            append_jsonl(path, rec)
            done[(arch.id, name)] = rec
            if progress:
                progress({"event": "scored", "arch_id": arch.id, "proxy": name})
    return done


def raw_parts(records: dict[tuple[str, str], dict], arch_id: str, names: list[str]) -> dict[str, float]:
    """One arch's raw parts of every proxy in ``names`` (a missing or non-finite one: -inf)."""
    from nasctl.zeroshot.proxies import PROXIES

    out: dict[str, float] = {}
    for n in names:
        raw = records[(arch_id, n)]["raw"]
        for p in PROXIES[n].parts:
            v = raw.get(p)
            out[p] = float("-inf") if v is None else float(v)
    return out


# -------------------------------------------------------------------------------- stats
def kendall_ci(
    x: np.ndarray, y: np.ndarray, reps: int = 1000, seed: int = 0, level: float = 0.95
) -> tuple[float, float, float]:
    """Kendall tau-b of ``x`` against ``y`` and its ``level`` bootstrap interval (archs resampled)."""
    from scipy.stats import kendalltau

    tau = float(kendalltau(x, y).statistic)
    rng = np.random.default_rng(seed)
    boots = []
    for _ in range(reps):
        i = rng.integers(0, len(x), len(x))
        t = kendalltau(x[i], y[i]).statistic
        if np.isfinite(t):
            boots.append(t)
    tail = 50 * (1 - level)
    lo, hi = np.percentile(boots, [tail, 100 - tail]) if boots else (float("nan"), float("nan"))
    return tau, float(lo), float(hi)


def top_precision(score: np.ndarray, acc: np.ndarray, fraction: float = TOP_FRACTION) -> float:
    """Of the top ``fraction`` by score, the share also in the top ``fraction`` by accuracy."""
    k = max(1, int(round(fraction * len(score))))
    top_s = set(np.argsort(-score, kind="stable")[:k].tolist())
    top_a = set(np.argsort(-acc, kind="stable")[:k].tolist())
    return len(top_s & top_a) / k


def correlations(values: np.ndarray, acc: np.ndarray) -> dict[str, float]:
    from scipy.stats import spearmanr

    ok = np.isfinite(values)
    finite = np.where(ok, values, (values[ok].min() - 1) if ok.any() else 0.0)  # non-finite ranks lowest
    if np.ptp(finite) == 0 or np.ptp(acc) == 0:  # no ranking to compare
        return {
            "kendall_tau": float("nan"),
            "tau_ci95": [float("nan")] * 2,
            "spearman_rho": float("nan"),
            "top10_precision": float("nan"),
        }
    tau, lo, hi = kendall_ci(finite, acc)
    return {
        "kendall_tau": tau,
        "tau_ci95": [lo, hi],
        "spearman_rho": float(spearmanr(finite, acc).statistic),
        "top10_precision": top_precision(finite, acc),
    }


# ----------------------------------------------------------------------------- the run
def reference_raw(cfg: EvalConfig, names: list[str], progress: Progress | None = None) -> dict[str, list[float]]:
    """Raw parts over the search's reference sample (what ranked scores rank against),
    scored and cached like the evaluated archs."""
    from nasctl.search.scorers.proxy import REFERENCE_SEED
    from nasctl.space import SearchSpace

    space = SearchSpace.load(cfg.space_file)
    ref = space.samples(cfg.reference, seed=REFERENCE_SEED)
    recs = score_archs(cfg, ref, progress)
    rows = [raw_parts(recs, a.id, names) for a in ref]
    return {p: [r[p] for r in rows] for p in rows[0]}


def check(cfg: EvalConfig):
    """Every input checked before any work (NasctlError): the counts, the training
    budget, the scores, the space, and data that loads, fits the space and has labels.
    Returns the space."""
    from nasctl.contrastive import load_data
    from nasctl.space import SearchSpace

    if cfg.archs < 4:
        raise NasctlError(f"--archs must be >= 4 (got {cfg.archs})")
    if not cfg.seeds:
        raise NasctlError("give at least one training seed")
    cfg.pretrain_config(cfg.seeds[0]).validate()
    proxy_names(cfg)
    space = SearchSpace.load(cfg.space_file)
    base = space.baseline()
    if not load_data(cfg.data, base.resolution, base.in_channels, seed=SPLIT_SEED).labelled:
        raise NasctlError(f"{cfg.data}: the data has no labels (y); proxy-eval scores archs by probe accuracy")
    return space


def evaluate_scores(cfg: EvalConfig, progress: Progress | None = None) -> dict[str, Any]:
    """Train and score what is missing, then the statistics of every score (and vote)
    against the mean val accuracy over the seeds. Returns what ``proxy_eval.json`` holds."""
    from nasctl.zeroshot.proxies import PROXIES, resolve, score_value

    space = check(cfg)
    archs = sample_archs(space, cfg.archs, cfg.sample_seed)
    names = proxy_names(cfg)
    trainings = train_archs(cfg, archs, progress)
    recs = score_archs(cfg, archs, progress)
    votes = [v for v in DEFAULT_VOTES if all(n in names for n in resolve(v))]
    ranked = [n for n in names if PROXIES[n].ranked]
    reference = reference_raw(cfg, names, progress) if (votes or ranked) else None

    per_seed = np.array([[_acc(trainings[(a.id, s)]) for s in cfg.seeds] for a in archs], dtype=float)  # archs x seeds
    acc = per_seed.mean(1)
    table: dict[str, Any] = {}
    values: dict[str, list[float]] = {}
    for spec in [*names, *votes]:
        vals = np.array([score_value(spec, raw_parts(recs, a.id, names), reference) for a in archs], dtype=float)
        values[spec] = vals.tolist()
        row = correlations(vals, acc)
        row["non_finite"] = int((~np.isfinite(vals)).sum())
        if spec in PROXIES:
            secs = [recs[(a.id, spec)]["seconds"] for a in archs]
            row["seconds_median"] = float(np.median(secs))
            row["summary"] = PROXIES[spec].summary
        else:
            row["summary"] = "rank vote (mean percentile in the reference sample)"
        table[spec] = row
    ceiling = None
    if len(cfg.seeds) >= 2:
        tau, lo, hi = kendall_ci(per_seed[:, 0], per_seed[:, 1])
        ceiling = {"kendall_tau": tau, "tau_ci95": [lo, hi], "seeds": list(cfg.seeds[:2])}
    return {
        "config": cfg.to_dict(),
        "archs": [
            {
                "arch_id": a.id,
                "arch": a.to_string(),
                "accuracy_per_seed": per_seed[i].tolist(),
                "accuracy": float(acc[i]),
            }
            for i, a in enumerate(archs)
        ],
        "scores": values,
        "table": table,
        "seed_ceiling": ceiling,
        "accuracy": {"mean": float(acc.mean()), "min": float(acc.min()), "max": float(acc.max())},
        "beats_baselines": beats_baselines(table),
    }


def _acc(rec: dict) -> float:
    """A training's val accuracy; a diverged one counts as 0 (it trains worst)."""
    v = rec.get("val_accuracy")
    return 0.0 if v is None else float(v)


def beats_baselines(table: dict[str, Any]) -> dict[str, Any]:
    """Which scores have a higher Kendall tau than both ``params`` and ``flops``, and which
    do so with the lower end of their 95% interval above both baselines' tau."""
    base = [table[b]["kendall_tau"] for b in ("params", "flops") if b in table]
    if not base:
        return {"baseline_tau": None, "higher_tau": [], "interval_above": []}
    top = max(base)
    others = {k: v for k, v in table.items() if k not in ("params", "flops")}
    return {
        "baseline_tau": top,
        "higher_tau": sorted(
            (k for k, v in others.items() if v["kendall_tau"] > top), key=lambda k: -others[k]["kendall_tau"]
        ),
        "interval_above": sorted(k for k, v in others.items() if v["tau_ci95"][0] > top),
    }


def write_results(cfg: EvalConfig, result: dict[str, Any]) -> dict[str, Path]:
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / RESULT_FILE
    path.write_text(json.dumps(finite(result), indent=2, allow_nan=False) + "\n")
    png = plot_scatter(result, out / PLOT_FILE)
    return {"json": path, "png": png}


def finite(obj: Any) -> Any:
    """``obj`` with every NaN / inf float as None (strict JSON)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: finite(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [finite(v) for v in obj]
    return obj


def plot_scatter(result: dict[str, Any], path: Path) -> Path:
    """One panel per score: its value (x) against the mean val accuracy (y), tau in the title."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    acc = np.array([a["accuracy"] for a in result["archs"]]) * 100
    names = list(result["table"])
    cols = 4
    rows = -(-len(names) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 2.7 * rows), squeeze=False)
    for ax, name in zip(axes.flat, names, strict=False):
        v = np.array(result["scores"][name], dtype=float)
        ok = np.isfinite(v)
        ax.scatter(v[ok], acc[ok], s=10, alpha=0.7, color="tab:red" if name in ("params", "flops") else "tab:blue")
        row = result["table"][name]
        lo, hi = row["tau_ci95"]
        ax.set_title(f"{name}: tau {row['kendall_tau']:.2f} [{lo:.2f}, {hi:.2f}]", fontsize=8)
        ax.tick_params(labelsize=7)
        if name in ("params", "flops"):
            ax.set_xscale("log")
    for ax in list(axes.flat)[len(names) :]:
        ax.axis("off")
    for ax in axes[:, 0]:
        ax.set_ylabel("val accuracy (%)", fontsize=8)
    ceiling = result.get("seed_ceiling")
    note = f"; seed-vs-seed tau {ceiling['kendall_tau']:.2f} (the ceiling)" if ceiling else ""
    fig.suptitle(f"zero-shot scores vs trained accuracy, {len(acc)} archs{note}", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
