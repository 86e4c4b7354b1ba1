"""Contrastive pretraining of a candidate backbone, and its evaluation by linear probe.

``pretrain(arch, data, config)`` trains the arch with a 2-layer projection head (SimCLR),
AdamW with a warm-up and a cosine schedule, under an epoch count (or an exact number of
optimiser steps, ``steps``, which then replaces it) and an optional time budget: the
schedule follows whichever of steps and time is further along, so a run cut by its
budget still ends annealed. ``pretrain_and_evaluate`` adds the probe; ``write_run``
saves a run folder (no pickle: the weights go to ``.npz``).
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from nasctl.arch import Arch
from nasctl.contrastive.augment import AugmentConfig, two_views
from nasctl.contrastive.data import ImageData
from nasctl.contrastive.losses import LOSSES, PartitionEstimateLoss, make_loss
from nasctl.contrastive.probe import evaluate
from nasctl.errors import NasctlError
from nasctl.nn.builder import Network, build_model

ProgressFn = Callable[[dict], None]


class TrainingDiverged(NasctlError):
    """The loss became NaN or infinite. The message says what, at which step, and what to
    try; the CLI prints it as one line (exit 2), and a search records the trial as failed."""


@dataclass
class PretrainConfig:
    loss: str = "gamma"
    epochs: int = 10
    steps: int | None = None  # exactly this many optimiser steps (replaces epochs): equal-step comparisons
    batch_size: int = 32
    lr: float = 2e-3
    weight_decay: float = 1e-4
    warmup_fraction: float = 0.05
    temperature: float = 0.2
    gamma_shape: float = 1.0  # chosen by bench/contrastive_digits.py sweep (tuning seed 10, validation)
    gamma_momentum: float = 0.9
    time_budget_s: float | None = None
    seed: int = 0
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    device: str = "cpu"  # cpu | auto (CUDA when there is one) | cuda | cuda:N | mps

    def validate(self) -> PretrainConfig:
        resolve_device(self.device)
        if self.loss not in LOSSES:
            raise NasctlError(f"unknown loss {self.loss!r} (expected one of: {', '.join(LOSSES)})")
        checks = [
            ("epochs", self.epochs, self.epochs >= 1, ">= 1"),
            ("steps", self.steps, self.steps is None or self.steps >= 1, ">= 1"),
            ("batch size", self.batch_size, self.batch_size >= 2, ">= 2 (contrastive pairs need negatives)"),
            ("learning rate", self.lr, self.lr > 0, "> 0"),
            ("temperature", self.temperature, self.temperature > 0, "> 0"),
            ("gamma shape", self.gamma_shape, self.gamma_shape > 0, "> 0"),
            ("gamma momentum", self.gamma_momentum, 0 < self.gamma_momentum <= 1, "in (0, 1]"),
            ("time budget", self.time_budget_s, self.time_budget_s is None or self.time_budget_s > 0, "> 0 seconds"),
        ]
        for name, value, ok, rule in checks:
            if not ok:
                raise NasctlError(f"{name} must be {rule} (got {value})")
        return self

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class PretrainResult:
    model: Network
    config: PretrainConfig
    steps: int
    epochs_done: float
    seconds: float
    images_per_s: float
    stopped_by: str  # "epochs" | "steps" | "time_budget"
    loss_per_step: list[float]
    loss_per_epoch: list[float]
    setup_seconds: float = 0.0  # model, loss and optimiser built and moved to the device
    init_seconds: float = 0.0  # gamma / sogclr: the pass that starts Zhat (in ``seconds``, not in the budget)


def resolve_device(name: str) -> torch.device:
    """The torch device for ``name``; ``auto`` is the first CUDA GPU if there is one, else
    the CPU. A device that is not there is a one-line error, not a CUDA traceback."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except (RuntimeError, ValueError):
        raise NasctlError(f"unknown device {name!r} (expected auto, cpu, cuda, cuda:N or mps)") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise NasctlError(f"device {name!r}: no CUDA GPU here (torch {torch.__version__}); train on cpu")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise NasctlError(f"device {name!r}: only {torch.cuda.device_count()} CUDA GPU(s) here")
    elif dev.type == "mps":
        if not torch.backends.mps.is_available():
            raise NasctlError(f"device {name!r}: no Apple GPU (MPS) here; train on cpu")
    elif dev.type != "cpu":
        raise NasctlError(f"unknown device {name!r} (expected auto, cpu, cuda, cuda:N or mps)")
    return dev


def lr_at(progress: float, base_lr: float, warmup_fraction: float) -> float:
    """Linear warm-up, then cosine to 0; ``progress`` in [0, 1]."""
    if progress < warmup_fraction:
        return base_lr * (progress + 1e-3) / warmup_fraction
    p = (progress - warmup_fraction) / max(1e-9, 1 - warmup_fraction)
    return base_lr * 0.5 * (1 + math.cos(math.pi * min(1.0, p)))


def pretrain(
    arch: Arch,
    data: ImageData,
    config: PretrainConfig,
    progress: ProgressFn | None = None,
    initial: dict[str, torch.Tensor] | None = None,
) -> PretrainResult:
    """Pretrain ``arch`` without labels on ``data``'s train split (see module docstring),
    from a seeded initialisation or from the ``initial`` state dict (e.g. weights a
    supernet passed on)."""
    cfg = config.validate()
    if arch.embedding_dim is None:
        raise NasctlError("this arch has no embedding_dim (the space's output.embedding_dim) for a projection head")
    if tuple(data.x.shape[1:]) != (arch.in_channels, arch.resolution, arch.resolution):
        raise NasctlError(
            f"data images are {tuple(data.x.shape[1:])} but the arch takes "
            f"{(arch.in_channels, arch.resolution, arch.resolution)}"
        )
    setup_start = time.perf_counter()
    torch.manual_seed(cfg.seed)
    # random draws (order, augmentations, Gamma) stay on the CPU generator, so a seed gives
    # the same batches and views on every device
    gen = torch.Generator().manual_seed(cfg.seed)
    dev = resolve_device(cfg.device)
    model = build_model(arch, head="embedding", seed=cfg.seed)
    if initial is not None:
        model.load_state_dict(initial, strict=True)
    model = model.to(dev)
    # the loss's own random draws (Gamma) have their own stream, seeded from cfg.seed
    loss_fn = make_loss(cfg.loss, data.n, cfg.temperature, cfg.gamma_shape, cfg.gamma_momentum, cfg.seed).to(dev)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    if cfg.augment.flip is None:  # settle it here, so the run records what was done
        cfg = replace(cfg, augment=replace(cfg.augment, flip=data.allows_flip))
    aug = cfg.augment
    train = torch.from_numpy(data.train)
    bs = min(cfg.batch_size, len(train))
    if bs < 2:
        raise NasctlError(f"the train split has {len(train)} images; contrastive pretraining needs at least 2")
    steps_per_epoch = max(1, len(train) // bs)  # drop the last partial batch
    total = cfg.steps if cfg.steps is not None else cfg.epochs * steps_per_epoch
    n_epochs = -(-total // steps_per_epoch)
    budget = cfg.time_budget_s
    model.train()
    init_start = time.perf_counter()
    setup_seconds = init_start - setup_start
    if isinstance(loss_fn, PartitionEstimateLoss):
        # counted in ``seconds`` (training), but before the time budget's clock starts: a
        # short budget is spent on optimiser steps, never used up before the first one
        loss_fn.init_estimates(initial_log_partitions(model, data, aug, bs, cfg.temperature, cfg.seed, dev))
    start = time.perf_counter()
    init_seconds = start - init_start
    per_step: list[float] = []
    per_epoch: list[float] = []
    step, stopped_by, images = 0, "epochs" if cfg.steps is None else "steps", 0
    for _epoch in range(n_epochs):
        order = train[torch.randperm(len(train), generator=gen)]
        epoch_losses = []
        for b in range(steps_per_epoch):
            if step >= total:
                break
            elapsed = time.perf_counter() - start
            if budget is not None and elapsed >= budget:
                stopped_by = "time_budget"
                break
            done = max(step / total, elapsed / budget if budget else 0.0)
            for group in opt.param_groups:
                group["lr"] = lr_at(done, cfg.lr, cfg.warmup_fraction)
            idx = order[b * bs : (b + 1) * bs]
            v1, v2 = two_views(data.x[idx].to(dev, non_blocking=True), aug, gen)
            z = model(torch.cat([v1, v2]))
            loss, monitor = loss_fn(z[: len(idx)], z[len(idx) :], idx.to(dev))
            if not torch.isfinite(loss) or not math.isfinite(monitor):
                raise TrainingDiverged(
                    f"training diverged: the {cfg.loss} loss became {float(loss.detach())} at step {step} of {total} "
                    f"(lr {cfg.lr:g}, temperature {cfg.temperature:g}, batch {bs}); "
                    "try a lower --lr, a higher --temperature or a larger --batch-size"
                )
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
            images += 2 * len(idx)
            per_step.append(monitor)
            epoch_losses.append(monitor)
            if progress is not None:
                el = time.perf_counter() - start
                progress(
                    {
                        "step": step,
                        "total_steps": total,
                        "fraction": max(step / total, el / budget if budget else 0.0),
                        "loss": monitor,
                        "images_per_s": images / max(el, 1e-9),
                        "elapsed_s": el,
                    }
                )
        if epoch_losses:
            per_epoch.append(float(np.mean(epoch_losses)))
        if stopped_by == "time_budget":
            break
    seconds = time.perf_counter() - start + init_seconds
    if step == 0:
        raise NasctlError(f"the time budget ({budget} s) ended before the first training step")
    return PretrainResult(
        model=model,
        config=cfg,
        steps=step,
        epochs_done=step / steps_per_epoch,
        seconds=seconds,
        images_per_s=images / max(seconds, 1e-9),
        stopped_by=stopped_by,
        loss_per_step=per_step,
        loss_per_epoch=per_epoch,
        setup_seconds=setup_seconds,
        init_seconds=init_seconds,
    )


INIT_STREAM = 0x1A17  # the initial pass's views: torch.Generator().manual_seed(seed * 2**16 + INIT_STREAM)
INIT_NEGATIVES = 2048  # negatives per sample in the initial estimate of Z (at most)


def log_partitions(
    embeddings: torch.Tensor, temperature: float, generator: torch.Generator, max_negatives: int = INIT_NEGATIVES
) -> torch.Tensor:
    """``log Z_i`` for one view per sample (the rows of ``embeddings``): the log of the mean
    of ``exp(s_ij)`` from row i to up to ``max_negatives`` other rows (one random pool per
    chunk of 256 rows, drawn from ``generator``; all other rows when there are fewer). A
    row is never its own negative."""
    views = torch.nn.functional.normalize(embeddings, dim=1)
    n, k = len(views), max_negatives
    log_z = torch.empty(n, dtype=views.dtype)
    with torch.no_grad():
        for c in range(0, n, 256):
            rows = torch.arange(c, min(n, c + 256))
            pool = torch.randperm(n, generator=generator)[: min(n, k + 1)]
            own = pool[None, :] == rows[:, None]
            s = (views[rows] @ views[pool].T / temperature).masked_fill(own, float("-inf"))
            log_z[rows] = torch.logsumexp(s, dim=1) - torch.log((~own).sum(1).to(views.dtype))
    return log_z


def initial_log_partitions(
    model: torch.nn.Module,
    data: ImageData,
    aug: AugmentConfig,
    batch_size: int,
    temperature: float,
    seed: int,
    device: torch.device,
) -> torch.Tensor:
    """``log Z_i`` for every dataset sample, from a no-grad pass over the train split before
    training: the starting point of the per-sample estimates of ``gamma`` and ``sogclr``.

    One augmented view of every train image is embedded, ``2 * batch_size`` images per
    forward as in training (BatchNorm in training mode, as training sees it; its running
    statistics are put back afterwards). ``Z_i`` comes from ``log_partitions``: the mean of
    ``exp(s_ij)`` from sample i's view to the views of up to ``INIT_NEGATIVES`` others.
    The views come from a generator of their own, so the training run's batches and views
    are the same whether or not this pass is made. Samples outside the train split (never
    drawn) get the train mean. It costs one forward pass over the train split (about 3 s
    for digits' 1,259 images on a 2-core CPU)."""
    gen = torch.Generator().manual_seed(seed * 2**16 + INIT_STREAM)
    train = torch.from_numpy(data.train)
    chunk = 2 * batch_size
    buffers = {k: v.clone() for k, v in model.state_dict().items() if "running" in k or "num_batches" in k}
    was_training = model.training
    model.train()
    zs = []
    with torch.no_grad():
        for b in range(0, len(train), chunk):
            idx = train[b : b + chunk]
            if len(idx) < 2:  # BatchNorm in training mode needs 2 images: pair the last one with the first
                idx = torch.cat([idx, train[:1]])
            view, _ = two_views(data.x[idx].to(device), aug, gen)
            zs.append(model(view).float()[: min(len(idx), len(train) - b)].cpu())
        model.load_state_dict(buffers, strict=False)
        model.train(was_training)
        log_z = log_partitions(torch.cat(zs), temperature, gen)
    n = len(log_z)
    out = torch.full((data.n,), float(torch.logsumexp(log_z, 0) - math.log(n)))
    out[train] = log_z
    return out


def import_heavy_modules(plotting: bool = True) -> float:
    """Import the modules a run would otherwise load lazily part-way through, and return the
    seconds it took (0 when they are already loaded): scikit-learn (digits and the probe),
    torch's compiler stack (the optimiser's constructor pulls it in, about 1.3 s), ONNX
    export and, with ``plotting``, matplotlib. A run calls this first, so that its
    ``data_seconds``, ``setup_seconds`` and ``write_seconds`` time the work itself and the
    one-time import cost is reported apart, as ``import_seconds``."""
    t = time.perf_counter()
    import sklearn.datasets  # noqa: F401
    import sklearn.linear_model  # noqa: F401
    import sklearn.preprocessing  # noqa: F401
    import torch._dynamo  # noqa: F401
    import torch.onnx  # noqa: F401

    if plotting:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot  # noqa: F401
    return time.perf_counter() - t


TIMED_PARTS = ("import_seconds", "train_seconds", "eval_seconds", "random_init_eval_seconds")


def close_clock(metrics: dict, started: float) -> dict:
    """Add ``total_seconds`` (since ``started``, a ``time.perf_counter()`` reading) and
    ``fixed_seconds``: the total less imports, training and the probes (data, set-up,
    writing and everything between them)."""
    total = time.perf_counter() - started
    metrics["total_seconds"] = total
    metrics["fixed_seconds"] = total - sum(metrics.get(k, 0.0) for k in TIMED_PARTS)
    return metrics


def pretrain_and_evaluate(
    arch: Arch,
    data: ImageData,
    config: PretrainConfig,
    progress: ProgressFn | None = None,
    random_init_baseline: bool = False,
    initial: dict[str, torch.Tensor] | None = None,
) -> tuple[PretrainResult, dict]:
    """Pretrain, then score the frozen backbone (linear probe + kNN). With
    ``random_init_baseline`` the same probe is also run on the untrained backbone."""
    result = pretrain(arch, data, config, progress, initial)
    t = time.perf_counter()
    metrics = evaluate(result.model, data)  # on the device it trained on
    metrics_out: dict = {
        **metrics,
        "loss": config.loss,
        "train_seconds": result.seconds,
        "eval_seconds": time.perf_counter() - t,
        "steps": result.steps,
        "epochs_done": result.epochs_done,
        "images_per_s": result.images_per_s,
        "stopped_by": result.stopped_by,
        "final_loss": result.loss_per_epoch[-1] if result.loss_per_epoch else None,
    }
    metrics_out["setup_seconds"] = result.setup_seconds
    metrics_out["init_seconds"] = result.init_seconds
    if random_init_baseline and data.labelled:
        t = time.perf_counter()
        init = build_model(arch, head="embedding", seed=config.seed).to(resolve_device(config.device))
        base = evaluate(init, data)
        metrics_out["random_init_linear_probe_accuracy"] = base["linear_probe_accuracy"]
        metrics_out["random_init_knn_accuracy"] = base["knn_accuracy"]
        metrics_out["random_init_eval_seconds"] = time.perf_counter() - t
    return result, metrics_out


# ---------------------------------------------------------------------------- run folders
def save_weights(model: torch.nn.Module, path: str | Path) -> Path:
    """The state dict as a plain ``.npz`` of arrays (no pickle); ``load_weights`` reads it."""
    path = Path(path)
    arrays = {k: v.detach().cpu().numpy() for k, v in model.state_dict().items()}
    np.savez(path, **arrays)
    return path


def load_weights(model: torch.nn.Module, path: str | Path) -> torch.nn.Module:
    try:
        with np.load(path, allow_pickle=False) as f:
            state = {k: torch.from_numpy(f[k]) for k in f.files}
    except Exception as exc:
        raise NasctlError(f"{path}: not a readable weights file ({str(exc).splitlines()[0]})") from None
    missing = set(model.state_dict()) - set(state)
    if missing:
        raise NasctlError(f"{path}: weights do not match this arch ({len(missing)} tensors missing)")
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise NasctlError(f"{path}: weights do not match this arch ({str(exc).splitlines()[1].strip()})") from None
    return model


def plot_loss(loss_per_step: list[float], path: str | Path, title: str = "") -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    steps = np.arange(1, len(loss_per_step) + 1)
    ax.plot(steps, loss_per_step, lw=0.6, alpha=0.4, label="per step")
    w = max(1, len(loss_per_step) // 50)
    if len(loss_per_step) >= w * 2:
        smooth = np.convolve(loss_per_step, np.ones(w) / w, mode="valid")
        ax.plot(steps[w - 1 :], smooth, lw=1.5, label=f"moving mean ({w} steps)")
    ax.set_xlabel("step")
    ax.set_ylabel("contrastive loss (minibatch -s+ + log Z)")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)


def write_run(
    out: str | Path,
    arch: Arch,
    data: ImageData,
    result: PretrainResult,
    metrics: dict,
    started: float | None = None,
) -> dict:
    """Write ``arch.json``, ``model.npz`` (backbone + projection head weights),
    ``backbone.onnx`` (pooled features; input images in [0, 1]), ``metrics.json`` and
    ``loss.png`` to ``out``; return the metrics as written. With ``started`` (the run's
    ``time.perf_counter()`` start), ``total_seconds`` and ``fixed_seconds`` are added
    (``close_clock``)."""
    from nasctl.nn.export import export_onnx

    t = time.perf_counter()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    arch.save(out / "arch.json")
    save_weights(result.model, out / "model.npz")
    backbone = build_model(arch, head="features")
    backbone.load_state_dict({k: v for k, v in result.model.state_dict().items() if not k.startswith("head.")})
    export_onnx(backbone, out / "backbone.onnx")
    plot_loss(result.loss_per_step, out / "loss.png", f"{arch.id} {result.config.loss} bs={result.config.batch_size}")
    full = {
        **metrics,
        "write_seconds": time.perf_counter() - t,  # weights, ONNX export and plot (metrics.json aside)
        "arch": arch.to_string(),
        "arch_id": arch.id,
        "data": data.summary(),
        "config": result.config.to_dict(),
        "loss_per_epoch": result.loss_per_epoch,
        "loss_per_step": result.loss_per_step,
        "files": {
            "arch": "arch.json",
            "weights": "model.npz",
            "onnx": "backbone.onnx",
            "loss_plot": "loss.png",
        },
    }
    if started is not None:
        close_clock(full, started)
    (out / "metrics.json").write_text(json.dumps(full, indent=2) + "\n")
    return full
