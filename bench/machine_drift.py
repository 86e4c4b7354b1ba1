"""Benchmark: does the machine's speed drift move every network alike?

``nasctl measure`` rescales each network's times by a fixed reference network timed
around it (``NoiseMonitor``). That is right only if the machine's slow and fast spells
slow the reference and other networks alike. Here the reference and a zoo network
(MobileNetV2 at 224 by default) are timed in alternating bursts for ``--seconds``; the
correlation of their log burst medians, and the spread of the network's log burst
medians before and after dividing by the reference's, say how much the rescaling
removes.

    python bench/machine_drift.py [--model mobilenet_v2] [--resolution 224] [--seconds 60]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import save  # noqa: E402

from nasctl import zoo  # noqa: E402
from nasctl.latency.measure import NoiseMonitor, _input_for, _session  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="mobilenet_v2")
    ap.add_argument("--resolution", type=int, default=224)
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--model-runs", type=int, default=5, help="runs per network burst")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        mon = NoiseMonitor(tmp, args.threads)
        path = zoo.export(args.model, Path(tmp) / "net.onnx", resolution=args.resolution)
        sess = _session(path, args.threads)
        feed = _input_for(sess)
        for _ in range(5):
            sess.run(None, feed)
        ref, net = [], []
        end = time.perf_counter() + args.seconds
        while time.perf_counter() < end:
            ref.append(mon.burst())
            times = []
            for _ in range(args.model_runs):
                t = time.perf_counter()
                sess.run(None, feed)
                times.append((time.perf_counter() - t) * 1e3)
            net.append(float(np.median(times)))
    r, n = np.log(np.array(ref)), np.log(np.array(net))
    r, n = r - np.median(r), n - np.median(n)
    results = {
        "bursts": len(ref),
        "reference_ms": {
            "median": float(np.median(ref)),
            "p10": float(np.quantile(ref, 0.1)),
            "p90": float(np.quantile(ref, 0.9)),
        },
        "network_ms": {
            "median": float(np.median(net)),
            "p10": float(np.quantile(net, 0.1)),
            "p90": float(np.quantile(net, 0.9)),
        },
        "correlation_of_log_bursts": float(np.corrcoef(r, n)[0, 1]),
        "std_log_network": float(n.std()),
        "std_log_network_rescaled": float((n - r).std()),
    }
    save("machine_drift", results, vars(args))
    print(
        f"{results['bursts']} burst pairs over {args.seconds:g} s: reference p10-p90 "
        f"{results['reference_ms']['p10']:.2f}-{results['reference_ms']['p90']:.2f} ms, {args.model} "
        f"{results['network_ms']['p10']:.2f}-{results['network_ms']['p90']:.2f} ms; correlation "
        f"{results['correlation_of_log_bursts']:.2f}; std of log {args.model} {results['std_log_network']:.3f}, "
        f"rescaled by the reference {results['std_log_network_rescaled']:.3f}"
    )


if __name__ == "__main__":
    main()
