"""Benchmark: which zero-shot score ranks archs of the default space as training does?

``nasctl proxy-eval`` on the default space: 60 archs drawn uniformly, each pretrained
contrastively for 3 epochs at batch 64 (a search trial's budget, no time cap) with two
training seeds and scored by a linear probe on the val split; every score computed at
initialisation (batch ``--proxy-batch``). Kendall tau (95% bootstrap interval), Spearman
rho and top-10% precision of each score, the ``params`` / ``flops`` baselines, and the
seed-vs-seed tau of the accuracies (the ceiling; two seeds, a stated exception to the
three-seed rule). Trainings and scores are cached under ``bench/cache/proxy_eval`` (about
an hour of CPU per seed), so the bench resumes across sessions.

    python bench/proxy_eval.py [--archs 60] [--seeds 0,1] [--proxy-batch 16] [--threads 2] [--name proxy_eval]
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS, save  # noqa: E402

from nasctl.zeroshot.evaluate import EvalConfig, evaluate_scores, finite, write_results  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
CACHE = ROOT / "bench" / "cache" / "proxy_eval"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--space", default=str(ROOT / "search_spaces" / "mobilenetv2_32.yaml"))
    ap.add_argument("--archs", type=int, default=60)
    ap.add_argument("--seeds", default="0,1")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--proxy-batch", type=int, default=16)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--name", default="proxy_eval", help="results/NAME.json (and .png)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    cfg = EvalConfig(
        space_file=args.space,
        out=str(CACHE),
        archs=args.archs,
        seeds=tuple(int(s) for s in args.seeds.split(",")),
        epochs=args.epochs,
        batch_size=args.batch_size,
        proxy_batch=args.proxy_batch,
    )

    def progress(e: dict) -> None:
        if e["event"] == "trained":
            print(f"trained {e['arch_id']} seed {e['seed']}: val {e['val_accuracy']}, {e['seconds']} s", flush=True)

    result = evaluate_scores(cfg, progress)
    paths = write_results(cfg, result)
    shutil.copy(paths["png"], RESULTS / f"{args.name}.png")
    config = {**vars(args), "eval_config": cfg.to_dict(), "cache": str(CACHE.relative_to(ROOT))}
    save(args.name, {k: v for k, v in finite(result).items() if k != "config"}, config)
    for name, r in sorted(result["table"].items(), key=lambda kv: -(kv[1]["kendall_tau"] or -9)):
        lo, hi = r["tau_ci95"]
        print(
            f"{name:28s} tau {r['kendall_tau']:+.3f} [{lo:+.2f}, {hi:+.2f}]  rho {r['spearman_rho']:+.3f}  "
            f"top10 {100 * r['top10_precision']:.0f}%"
        )
    c = result["seed_ceiling"]
    if c:
        print(f"seed-vs-seed tau {c['kendall_tau']:.3f} [{c['tau_ci95'][0]:.2f}, {c['tau_ci95'][1]:.2f}]")
    print("beats params and flops:", result["beats_baselines"])


if __name__ == "__main__":
    main()
