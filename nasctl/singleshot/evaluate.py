"""Scoring a subnet by the weights it inherits from a trained supernet."""

from __future__ import annotations

import time
from typing import Any

from nasctl.arch import Arch

BN_IMAGES = 512  # clean train images the BatchNorm statistics are recomputed on (8 batches of 64)


def inherited_accuracy(supernet, arch: Arch, data, recalibrate: bool = True) -> dict[str, Any]:
    """Linear-probe accuracy (val and test splits) of ``arch``'s stand-alone subnet with
    the inherited weights. ``recalibrate``: first recompute its BatchNorm statistics on
    ``BN_IMAGES`` clean train images (SPOS / OFA), else keep the statistics the supernet
    accumulated over all the subnets it trained."""
    from nasctl.contrastive.probe import evaluate

    t = time.perf_counter()
    net = supernet.subnet(arch, head="features")
    m = evaluate(net, data, recalibrate=recalibrate, bn_images=BN_IMAGES)
    return {
        "accuracy": float(m["linear_probe_val_accuracy"]),
        "test_accuracy": float(m["linear_probe_accuracy"]),
        "knn_val_accuracy": float(m["knn_val_accuracy"]),
        "score_seconds": time.perf_counter() - t,
    }
