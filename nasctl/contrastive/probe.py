"""Evaluation of a frozen backbone: linear probe (logistic regression) and kNN monitor."""

from __future__ import annotations

import warnings

import numpy as np
import torch
from torch import nn

from nasctl.contrastive.data import ImageData

# Inference batch for evaluation. On CPU, batches of 256 at 32x32 make intermediates of
# hundreds of MB: the baseline's whole evaluation takes 1.4x as long as with batches of 64
# (bench/eval_speed.py, medians of 5 on a 2-core Intel Xeon: 6.1 s against 4.2 s), so
# evaluation stays at 64.
EVAL_BATCH = 64


@torch.no_grad()
def extract_features(model: nn.Module, x: torch.Tensor, batch_size: int = EVAL_BATCH) -> np.ndarray:
    """Pooled backbone features (``model.forward_features``) in eval mode."""
    was_training = model.training
    model.eval()
    dev = _device_of(model)
    feats = [model.forward_features(x[i : i + batch_size].to(dev)).cpu() for i in range(0, len(x), batch_size)]
    model.train(was_training)
    return torch.cat(feats).numpy().astype(np.float64)


def _device_of(model: nn.Module) -> torch.device:
    p = next(model.parameters(), None)
    return p.device if p is not None else torch.device("cpu")


@torch.no_grad()
def recalibrate_bn(model: nn.Module, x: torch.Tensor, batch_size: int = EVAL_BATCH) -> None:
    """Recompute BatchNorm running statistics on ``x`` (clean images), as SPOS does before
    scoring a subnet: the statistics of augmented views are not those the probe sees."""
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not bns:
        return
    was_training = model.training
    saved = [m.momentum for m in bns]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # cumulative average over the passes
    model.train()
    dev = _device_of(model)
    for i in range(0, len(x), batch_size):
        model.forward_features(x[i : i + batch_size].to(dev))
    for m, mom in zip(bns, saved, strict=True):
        m.momentum = mom
    model.train(was_training)


def linear_probe(
    f_train: np.ndarray, y_train: np.ndarray, f_eval: list[np.ndarray], y_eval: list[np.ndarray], c: float = 1.0
) -> list[float]:
    """Standardised features -> multinomial logistic regression; accuracy on each eval set."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    scaler = StandardScaler().fit(f_train)
    clf = LogisticRegression(C=c, max_iter=2000)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ConvergenceWarning on degenerate (e.g. collapsed) features
        clf.fit(scaler.transform(f_train), y_train)
    return [float((clf.predict(scaler.transform(f)) == y).mean()) for f, y in zip(f_eval, y_eval, strict=True)]


def knn_accuracy(
    f_train: np.ndarray, y_train: np.ndarray, f_eval: np.ndarray, y_eval: np.ndarray, k: int = 200, t: float = 0.1
) -> float:
    """Weighted kNN monitor: L2-normalised features, cosine top-k, votes ``exp(sim / t)``."""
    a = f_train / np.maximum(np.linalg.norm(f_train, axis=1, keepdims=True), 1e-12)
    b = f_eval / np.maximum(np.linalg.norm(f_eval, axis=1, keepdims=True), 1e-12)
    sim = b @ a.T
    k = min(k, len(a))
    top = np.argpartition(-sim, k - 1, axis=1)[:, :k]
    w = np.exp(np.take_along_axis(sim, top, axis=1) / t)
    n_cls = int(max(y_train.max(), y_eval.max())) + 1
    votes = np.zeros((len(b), n_cls))
    np.add.at(votes, (np.arange(len(b))[:, None], y_train[top]), w)
    return float((votes.argmax(1) == y_eval).mean())


def evaluate(model: nn.Module, data: ImageData, recalibrate: bool = True, bn_images: int = 512) -> dict[str, float]:
    """Linear-probe accuracy on the val and test splits, and kNN accuracy on test.

    The probe is fitted on the train split's features; BN statistics are first recomputed on
    the clean train images (at most ``bn_images`` of them, a fixed subset)."""
    if not data.labelled:
        return {}
    x = data.x
    if recalibrate:
        recalibrate_bn(model, x[torch.from_numpy(data.train[:bn_images])])
    f = {name: extract_features(model, x[torch.from_numpy(idx)]) for name, idx in _splits(data).items()}
    y = {name: data.y[idx] for name, idx in _splits(data).items()}
    val_acc, test_acc = linear_probe(f["train"], y["train"], [f["val"], f["test"]], [y["val"], y["test"]])
    return {
        "linear_probe_accuracy": test_acc,
        "linear_probe_val_accuracy": val_acc,
        "knn_accuracy": knn_accuracy(f["train"], y["train"], f["test"], y["test"]),
        "knn_val_accuracy": knn_accuracy(f["train"], y["train"], f["val"], y["val"]),
    }


def _splits(data: ImageData) -> dict[str, np.ndarray]:
    return {"train": data.train, "val": data.val, "test": data.test}
