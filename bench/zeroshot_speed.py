"""Benchmark: how fast is zero-shot search on this machine?

1. Each score's rate: ``--archs`` archs drawn uniformly from the default space, each
   scored as a search trial scores it (a freshly built model, initialised with the
   seed, then the score) at ``--proxy-batch`` images; candidates per minute = 60 / the
   mean seconds per arch. All cores (``--threads``).
2. Storage alone: trials with the default space's parameters and a no-op objective
   (NSGA-II, 10 user attributes each) written to SQLite, to a journal file, and to
   memory then a journal file in batches (what a zero-shot run does), trials per minute.
3. The user's command, timed whole: ``nasctl search SPACE --strategy zeroshot --trials
   2000`` through the API in this process, into a fresh folder: the search (storage
   included) and writing the outputs, then the same with the winners' onnxruntime
   measurement, with the default proxy and with ``naswot`` (a forward pass per trial).

    python bench/zeroshot_speed.py [--archs 40] [--trials 2000] [--proxy-batch 16]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import save  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def score_rates(space, archs: int, batch: int, seed: int) -> dict:
    from nasctl.contrastive import load_data
    from nasctl.zeroshot.proxies import PROXIES, compute, make_batch

    sample = space.samples(archs, seed=seed)
    batches = {}
    for a in sample:
        if a.resolution not in batches:
            batches[a.resolution] = make_batch(load_data("digits", a.resolution, a.in_channels), batch, 0)
    compute("naswot", sample[0], batches[sample[0].resolution], 0)  # imports, first-use set-up
    out = {}
    for name in PROXIES:
        secs = []
        for a in sample:
            t = time.perf_counter()
            compute(name, a, batches[a.resolution], 0)
            secs.append(time.perf_counter() - t)
        out[name] = {
            "mean_s": float(np.mean(secs)),
            "median_s": float(np.median(secs)),
            "p90_s": float(np.quantile(secs, 0.9)),
            "candidates_per_min": 60.0 / float(np.mean(secs)),
        }
        print(
            f"{name:10s} {out[name]['candidates_per_min']:8.0f} candidates/min (mean {1000 * np.mean(secs):.0f} ms)",
            flush=True,
        )
    return out


def storage_rates(space, trials: int) -> dict:
    import optuna
    from optuna.storages import JournalStorage, RDBStorage
    from optuna.storages.journal import JournalFileBackend

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    params = space.parameters()

    def objective(t):
        for k, v in params.items():
            t.suggest_categorical(k, v)
        for i in range(10):
            t.set_user_attr(f"a{i}", i)
        return [float(len(t.params)), 1.0]

    out = {"parameters": len(params)}
    with tempfile.TemporaryDirectory() as tmp:
        kinds = {
            "sqlite": (lambda: RDBStorage(f"sqlite:///{tmp}/s.db"), trials // 4),
            "journal": (lambda: JournalStorage(JournalFileBackend(f"{tmp}/j.log")), trials),
            "memory_then_journal": (None, trials),
        }
        for kind, (make, n) in kinds.items():
            t = time.perf_counter()
            sampler = optuna.samplers.NSGAIISampler(population_size=50, seed=0)
            study = optuna.create_study(
                storage=make() if make else None, directions=["maximize", "minimize"], sampler=sampler
            )
            study.optimize(objective, n_trials=n)
            if make is None:  # the batched path: the same trials appended to a journal
                store = optuna.create_study(
                    storage=JournalStorage(JournalFileBackend(f"{tmp}/b.log")), directions=["maximize", "minimize"]
                )
                trials_done = study.get_trials(deepcopy=False)
                for i in range(0, n, 200):
                    store.add_trials(trials_done[i : i + 200])
            dt = time.perf_counter() - t
            out[kind] = {"trials": n, "seconds": dt, "trials_per_min": 60 * n / dt}
            print(f"storage {kind:20s} {out[kind]['trials_per_min']:8.0f} trials/min ({n} trials)", flush=True)
    return out


def timed_search(space_file: str, trials: int, batch: int, measure: bool, proxy: str | None) -> dict:
    from nasctl.search import make_config, prepare, run_search, write_outputs
    from nasctl.search.scorers.proxy import DEFAULT_PROXY

    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        cfg = make_config(space_file, strategy="zeroshot", out=tmp, trials=trials, proxy_batch=batch, proxy=proxy)
        prepare(cfg)
        t1 = time.perf_counter()
        counts = run_search(cfg, None, prepared=True)
        t2 = time.perf_counter()
        res = write_outputs(cfg, measure=measure)
        t3 = time.perf_counter()
        dup = sum(1 for r in res.records if r.duplicate_of is not None)
    total = t3 - t0
    r = {
        "trials": trials,
        "proxy": cfg.proxy or f"{DEFAULT_PROXY} (the default)",
        "measure": measure,
        "counts": counts,
        "prepare_s": t1 - t0,
        "search_s": t2 - t1,
        "outputs_s": t3 - t2,
        "total_s": total,
        "trials_per_min": 60 * trials / (t2 - t1),
        "duplicates": dup,
        "pareto": len(res.pareto),
        "under_5_min": total < 300,
    }
    print(
        f"search {trials} trials ({r['proxy']}, measure={measure}): prepare {r['prepare_s']:.1f} s, "
        f"search {r['search_s']:.1f} s "
        f"({r['trials_per_min']:.0f} trials/min), outputs {r['outputs_s']:.1f} s, total {total:.1f} s",
        flush=True,
    )
    return r


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--space", default=str(ROOT / "search_spaces" / "mobilenetv2_32.yaml"))
    ap.add_argument("--archs", type=int, default=40)
    ap.add_argument("--trials", type=int, default=2000)
    ap.add_argument("--proxy-batch", type=int, default=16)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--storage-trials", type=int, default=1000)
    ap.add_argument("--skip-search", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    from nasctl.space import SearchSpace

    space = SearchSpace.load(args.space)
    results = {"rates": score_rates(space, args.archs, args.proxy_batch, args.seed)}
    results["storage"] = storage_rates(space, args.storage_trials)
    if not args.skip_search:
        results["search"] = timed_search(args.space, args.trials, args.proxy_batch, False, None)
        results["search_measured"] = timed_search(args.space, args.trials, args.proxy_batch, True, None)
        results["search_naswot"] = timed_search(args.space, args.trials, args.proxy_batch, True, "naswot")
    save("zeroshot_speed", results, vars(args))


if __name__ == "__main__":
    main()
