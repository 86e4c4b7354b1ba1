"""Gradient bias of small-batch contrastive losses, measured directly against the full-data gradient.

Claim under test: the decomposable Gamma-augmented loss (``gamma``) removes the gradient
bias that small-batch contrastive learning suffers from (NT-Xent, DCL), because its
M-step is linear in the minibatch partition estimate. Here that bias is measured, not
inferred from accuracy.

Set-up, for two tasks:

* ``digits``: the default space's baseline arch (search_spaces/mobilenetv2_32.yaml) with
  its 64-d projection head, scikit-learn's digits (train split, N = 1,259 images), trained
  with the ``gamma`` loss by the same recipe as ``nasctl.contrastive.pretrain`` (AdamW,
  warm-up then cosine via ``lr_at``, batch 32, 300 steps, temperature 0.2, ``two_views``
  augmentations, Zhat started by ``initial_log_partitions``; the loop is ``pretrain``'s,
  written out to keep checkpoints, and gives the same weights). Measured at batches 32, 64.
* ``synthetic``: the instance-discrimination task with rare hard negatives of
  bench/contrastive_synthetic.py (n = 64 points in R^16, 16 near-duplicate pairs, heavy
  nuisance noise on the views), a linear 16 -> 6 encoder without bias, trained with
  ``gamma`` at batch 4, Adam with cosine decay over 2000 steps, temperature 0.1, with the
  settings bench/contrastive_synthetic.py tuned for gamma at noise 1, batch 4 (lr 0.02,
  shape a = 16, momentum 0.02; ``--synthetic-lr``, ``--synthetic-shape``,
  ``--synthetic-momentum``).
  Zhat is started, as ``initial_log_partitions`` does for images, by a no-grad pass: one
  noisy view per point, log Z from it to the other points' views. Measured at batches 4, 8.

The digits run uses ``PretrainConfig``'s Gamma defaults (shape a = 1, the exact identity,
and momentum 0.9) unless ``--shape`` / ``--momentum`` say otherwise. K checkpoints (``--checkpoints``, evenly spaced,
step 0 and the last step included) keep the parameters (BatchNorm's running statistics
too) and the loss's per-sample estimates ``log Zhat``.

At each checkpoint the views are FIXED (one pair of views per train sample, drawn once
from a generator of the checkpoint's own) and the network is in eval mode: BatchNorm
uses its running statistics, so each view's embedding does not depend on which batch it
is in, and the bias measured is the loss's alone (not BatchNorm's). With the 2N x d matrix
E of the fixed views' embeddings (float64 for every loss computation):

* full-data objective of each loss: ``ntxent``: NT-Xent over all 2N views (the positive in
  the denominator); ``dcl``, ``sogclr``, ``gamma``: the decoupled loss they share,
  ``mean_i(-s_i+ + log Z_i)``, Z_i the mean of exp(s_ij) over all 2N - 2 negatives of view
  i (both views of every other sample). g is its gradient.
* minibatch gradients g_b (M of them, ``--m``): B samples drawn uniformly without
  replacement, both views of each, the loss computed by the library's loss module itself
  (``make_loss``); for ``sogclr`` and ``gamma`` the checkpoint's ``log Zhat`` is loaded with
  ``init_estimates`` before every minibatch, so the estimate does not move while measuring.
  Every loss sees the same sequence of batches.
* reference rows. ``sogclr (exact Zhat)``, ``gamma (exact Zhat)``: the module with ``log Zhat``
  set to the exact full-data value for the fixed views. The module keeps one estimate per
  sample, shared by its two views, so "exact" is the value its update rule targets, the
  log of the mean of the two views' Z_i; where the two views' Z_i differ, u = 1 / Zhat is
  not 1 / Z_i for either view, and a small bias remains. ``sogclr (exact per-view Z)``,
  ``gamma (exact per-view Z)``: the same M-step from the library's own functions
  (``m_step_loss_log``, ``sample_log_u``) with each view's own exact log Z_i: the estimator
  with the staleness and the per-sample sharing both removed, unbiased by construction.
  Against the trained rows the exact rows isolate the staleness of the running estimate,
  recorded too as the median and 90th percentile over samples of |log Zhat - log Z|.
  (Part of that error is the train/eval gap: Zhat was accumulated from training-mode
  embeddings of fresh random views, the measurement uses eval-mode embeddings of fixed
  views; at step 0, BatchNorm's running statistics are still at their initial values and
  the eval-mode embeddings of digits are nearly collapsed, see ``mean_negative_cosine``.)
* paired estimate of the bias: every row's g_b is paired with a control c_b on the same
  batch whose expectation is g exactly, and the bias is estimated from d_b = g_b - c_b,
  whose mean is E[g_b] - g and whose variance is far smaller than g_b's (the positives'
  terms cancel; log Zbatch_i and Zbatch_i / Z_i agree to first order). Control for the
  decoupled rows: the M-step with each view's exact Z_i (the ``sogclr (exact per-view Z)``
  row itself). Control for ``ntxent``: ``mean_i(-s_i+ + (exp(s_i+) + (2N - 2) Zbatch_i) / W_i)``
  with W_i = exp(s_i+) + (2N - 2) Z_i the exact full-data NT-Xent sum: linear in Zbatch_i,
  so its expected gradient is that of ``mean_i(-s_i+ + log W_i)``, full NT-Xent. The same
  statistics from d_b are stored under ``paired``; this is what resolves biases of a few
  percent of ||g|| that the direct estimate at M = 2000 cannot.
* closed form: for fixed estimates, the M-step of ``sogclr`` and ``gamma`` is linear in the
  minibatch estimate Zbatch_i, so E[g_b] is the gradient of ``mean_i(-s_i+ + Z_i / Zhat_i)``
  (gamma's draws have mean 1 / Zhat_i: the same). Its distance to g is
  ``closed_form_relative_bias``; the measured value should agree with it (a check of the
  measurement and of the module).

Statistics (mean = the average of the M g_b; tr Cov = the trace of their covariance):

* bias cosine: cos(mean, g). Even an unbiased estimator shows less than 1 at finite M;
  its expected value for an unbiased estimator with this variance, the noise floor
  (``noise_floor_cosine``), is about 1 / sqrt(1 + tr Cov / (M ||g||^2)).
* corrected relative bias: sqrt(max(0, ||mean - g||^2 - tr Cov / M)) / ||g||, the norm of
  E[g_b] - g relative to ||g||, with the finite-M noise in ||mean - g||^2 (whose
  expectation is ||bias||^2 + tr Cov / M) taken out. ``noise_ratio`` = ||mean - g||^2 /
  (tr Cov / M) is about 1 for an unbiased estimator and grows with the bias;
  ``noise_relative`` = sqrt(tr Cov / M) / ||g||, the scale of the finite-M noise.
* variance: tr Cov / ||g||^2, reported apart from the bias.

Two spaces: (a) embedding space, gradients with respect to the whole 2N x d matrix E
(zero outside the batch's rows): exact and cheap, M = 2000. (b) Parameter space: in eval
mode every minibatch gradient is J^T g_b (J the Jacobian of the embeddings in the
parameters), so the full gradient is J^T g and E[J^T g_b] = J^T E[g_b], each one
vector-Jacobian product (one backward pass over the fixed views). Digits: E[g_b] is the
measured mean (and the paired mean, J^T of the mean of d_b) for ``ntxent`` and ``dcl``, the
closed form for ``sogclr`` and ``gamma`` (their parameter-space bias is then exact, marked *
in the table); tr Cov comes from ``--m-param`` minibatch backward passes (the batch's views
forwarded alone), as the mean squared distance to E[J^T g_b] (and to E[J^T d_b]); the
per-view rows stay in embedding space. The linear synthetic encoder (J^T G = G^T V, V the
views) does everything with all M minibatches.

What to expect (the sanity check, printed at the end): with exact Z, ``gamma`` and
``sogclr`` are unbiased: the per-view rows' noise_ratio is about 1 (their M-step gradient
is linear in Zbatch_i, an unbiased estimate of Z_i when batches are uniform without
replacement over the other samples); the per-sample exact rows carry only the small
bias of the shared estimate, equal to its closed form. ``dcl``'s and ``ntxent``'s bias is
above 0 at the small batch (the log of a minibatch mean): the paired noise_ratio is
clearly above 1 (how large the bias is relative to ||g|| depends on the task and the
checkpoint). With the trained, stale Zhat, ``gamma`` and ``sogclr`` carry the bias of the
stale weights 1 / Zhat (the closed form says how much); ``gamma``'s Gamma draws add
variance, not bias, to ``sogclr``'s.

Cost: the default run took 17 minutes on one thread of a shared 2-core CPU: digits'
training 2 minutes, each digits checkpoint 3.3 (0.8 of embedding-space minibatches, 1.7 of
backward passes for the 12 vector-Jacobian products, 1 of parameter-space minibatches),
the synthetic task 1.7 in all. ``--m-param`` defaults to 8 (the parameter-space variance
is the least precise number here); each 8 more add about 4 minutes.

Output: a table per task, ``results/contrastive_gradient_bias.json`` (everything, per task,
checkpoint, loss and batch, with the training runs' configs) and
``results/contrastive_gradient_bias.png`` (corrected relative bias against checkpoint step).
Finished (task, checkpoint) results are kept in ``results/contrastive_gradient_bias.partial.json``
and the training runs' checkpoints in ``bench/cache/`` (``.npz``), so an interrupted run
resumes; ``--fresh`` starts over.

    python bench/contrastive_gradient_bias.py [--tasks digits synthetic] [--checkpoints 4] [--m 2000]
        [--m-param 8] [--digits-steps 300] [--digits-batches 32 64] [--synthetic-steps 2000]
        [--synthetic-batches 4 8] [--seed 0] [--shape 1] [--momentum 0.9] [--threads 1] [--fresh]
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
import contrastive_synthetic as syn  # noqa: E402
from common import RESULTS, Partial, save  # noqa: E402

from nasctl.contrastive.augment import AugmentConfig, two_views  # noqa: E402
from nasctl.contrastive.data import load_data  # noqa: E402
from nasctl.contrastive.losses import (  # noqa: E402
    PartitionEstimateLoss,
    m_step_loss_log,
    make_loss,
    nt_xent,
    positive_and_log_partition,
    sample_log_u,
    similarities,
)
from nasctl.contrastive.pretrain import (  # noqa: E402
    INIT_STREAM,
    PretrainConfig,
    initial_log_partitions,
    log_partitions,
    lr_at,
)
from nasctl.nn.builder import build_model  # noqa: E402
from nasctl.space import SearchSpace  # noqa: E402

NAME = "contrastive_gradient_bias"
ROOT = Path(__file__).resolve().parents[1]
SPACE = ROOT / "search_spaces" / "mobilenetv2_32.yaml"
CACHE = ROOT / "bench" / "cache" / NAME
# (row label, loss, where log Zhat comes from): None, the checkpoint's trained estimate, or exact
ROWS = (
    ("ntxent", "ntxent", None),
    ("dcl", "dcl", None),
    ("sogclr", "sogclr", "trained"),
    ("gamma", "gamma", "trained"),
    ("sogclr (exact Zhat)", "sogclr", "exact"),
    ("gamma (exact Zhat)", "gamma", "exact"),
    ("sogclr (exact per-view Z)", "sogclr", "view"),
    ("gamma (exact per-view Z)", "gamma", "view"),
)
ROW_SOURCE = {label: source for label, _, source in ROWS}
EMBEDDING_ONLY = ("sogclr (exact per-view Z)", "gamma (exact per-view Z)")  # digits: no parameter space
COLOURS = {
    "ntxent": "tab:red",
    "dcl": "tab:orange",
    "sogclr": "tab:green",
    "gamma": "tab:blue",
    "sogclr (exact Zhat)": "tab:olive",
    "gamma (exact Zhat)": "tab:cyan",
    "sogclr (exact per-view Z)": "tab:gray",
    "gamma (exact per-view Z)": "tab:purple",
}
# images per forward pass: small enough that the activations' memory is reused rather than
# mapped afresh every pass (larger chunks spent as much time in the kernel as in the network)
CHUNK = 64
VIEW_STREAM, BATCH_STREAM, PARAM_STREAM = 0x71E, 0xBA7, 0x9A4
SYNTHETIC = dict(
    n=64, coarse=6, fine=2, pairs=16, nuisance=8, delta=0.1, view_noise=0.03, nuisance_noise=1.0, data_seed=0
)


# ------------------------------------------------------------------------------ tasks
class DigitsTask:
    """The default space's baseline on digits, trained as ``pretrain`` trains it."""

    name = "digits"
    linear = False

    def __init__(self, a: argparse.Namespace) -> None:
        cfg = PretrainConfig()
        self.arch = SearchSpace.load(SPACE).baseline()
        self.data = load_data("digits", self.arch.resolution, self.arch.in_channels, seed=0)
        self.aug = replace(AugmentConfig(), flip=self.data.allows_flip)
        self.ids = torch.from_numpy(self.data.train)  # dataset index of each train sample
        self.N, self.n_samples = len(self.ids), self.data.n
        self.temperature, self.batches = cfg.temperature, list(a.digits_batches)
        self.config = {
            "arch": self.arch.to_string(),
            "data": self.data.summary(),
            "loss": "gamma",
            "steps": a.digits_steps,
            "batch_size": cfg.batch_size,
            "lr": cfg.lr,
            "weight_decay": cfg.weight_decay,
            "warmup_fraction": cfg.warmup_fraction,
            "temperature": cfg.temperature,
            "gamma_shape": a.shape,
            "gamma_momentum": a.momentum,
            "seed": a.seed,
            "augment": self.aug.to_dict(),
            "optimiser": "AdamW, linear warm-up then cosine to 0 (lr_at), as pretrain",
            "zhat_start": "initial_log_partitions",
        }
        self.model = build_model(self.arch, head="embedding", seed=a.seed)

    def train(self, checkpoint_steps: list[int]) -> dict:
        c = self.config
        torch.manual_seed(c["seed"])
        gen = torch.Generator().manual_seed(c["seed"])
        model = build_model(self.arch, head="embedding", seed=c["seed"])
        loss_fn = make_loss("gamma", self.n_samples, c["temperature"], c["gamma_shape"], c["gamma_momentum"], c["seed"])
        opt = torch.optim.AdamW(model.parameters(), lr=c["lr"], weight_decay=c["weight_decay"])
        train, bs, total = self.ids, min(c["batch_size"], self.N), c["steps"]
        steps_per_epoch = max(1, len(train) // bs)
        model.train()
        loss_fn.init_estimates(
            initial_log_partitions(model, self.data, self.aug, bs, c["temperature"], c["seed"], torch.device("cpu"))
        )
        snaps, monitor, step = [], [], 0
        while step < total:
            order = train[torch.randperm(len(train), generator=gen)]
            for b in range(steps_per_epoch):
                if step >= total:
                    break
                if step in checkpoint_steps:
                    snaps.append(_snapshot(model, loss_fn, step))
                for group in opt.param_groups:
                    group["lr"] = lr_at(step / total, c["lr"], c["warmup_fraction"])
                idx = order[b * bs : (b + 1) * bs]
                v1, v2 = two_views(self.data.x[idx], self.aug, gen)
                z = model(torch.cat([v1, v2]))
                loss, mon = loss_fn(z[: len(idx)], z[len(idx) :], idx)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                step += 1
                monitor.append(mon)
        snaps.append(_snapshot(model, loss_fn, step))
        return {"snaps": snaps, "monitor": monitor}

    def load(self, state: dict[str, np.ndarray]) -> None:
        self.model.load_state_dict({k: torch.from_numpy(v) for k, v in state.items()})
        self.model.eval()

    def fixed_views(self, gen: torch.Generator) -> torch.Tensor:
        v1, v2 = two_views(self.data.x[self.ids], self.aug, gen)
        return torch.cat([v1, v2])

    def embed(self, views: torch.Tensor, chunk: int = CHUNK) -> torch.Tensor:
        with torch.no_grad():
            return torch.cat([self.model(views[c : c + chunk]) for c in range(0, len(views), chunk)]).double()

    def params(self) -> list[torch.Tensor]:
        return [p for p in self.model.parameters() if p.requires_grad]

    def vjp(self, views: torch.Tensor, grads: list[torch.Tensor], chunk: int = CHUNK) -> list[torch.Tensor]:
        """J^T G for each 2N x d embedding gradient G: one backward pass per G (a forward per chunk)."""
        params = self.params()
        out = [torch.zeros(sum(p.numel() for p in params), dtype=torch.float64) for _ in grads]
        for c in range(0, len(views), chunk):
            z = self.model(views[c : c + chunk])
            for i, g in enumerate(grads):
                gs = torch.autograd.grad(
                    z, params, grad_outputs=g[c : c + chunk].to(z), retain_graph=i < len(grads) - 1
                )
                out[i] += torch.cat([x.reshape(-1) for x in gs]).double()
        return out

    def batch_param_grads(self, views: torch.Tensor, rows: torch.Tensor, losses_of) -> list[torch.Tensor]:
        """Parameter gradients of the losses ``losses_of(z)`` of one minibatch, its views forwarded
        alone (eval mode)."""
        z = torch.cat([self.model(views[rows[c : c + CHUNK]]) for c in range(0, len(rows), CHUNK)]).double()
        losses = losses_of(z)
        out = []
        for i, loss in enumerate(losses):
            gs = torch.autograd.grad(loss, self.params(), retain_graph=i < len(losses) - 1)
            out.append(torch.cat([x.reshape(-1) for x in gs]).double())
        return out


class SyntheticTask:
    """The linear encoder on the synthetic rare-hard-negative points."""

    name = "synthetic"
    linear = True

    def __init__(self, a: argparse.Namespace) -> None:
        self.ns = SimpleNamespace(**SYNTHETIC)
        self.x = syn.make_points(self.ns)
        self.scale = syn.noise_scale(self.ns)
        self.N = self.n_samples = self.x.shape[0]
        self.ids = torch.arange(self.N)
        self.temperature, self.batches = 0.1, list(a.synthetic_batches)
        self.config = {
            **SYNTHETIC,
            "dim": self.x.shape[1],
            "out_dim": 6,
            "loss": "gamma",
            "steps": a.synthetic_steps,
            "batch_size": 4,
            "lr": a.synthetic_lr,
            "temperature": 0.1,
            "gamma_shape": a.synthetic_shape,
            "gamma_momentum": a.synthetic_momentum,
            "seed": a.seed,
            "optimiser": "Adam, cosine decay to 0",
            "zhat_start": "no-grad pass: one view per point, log Z over the other points' views",
        }
        self.weight = torch.zeros(6, self.x.shape[1])

    def _views(self, idx: torch.Tensor, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        xb = self.x[idx]
        return xb + self.scale * torch.randn(xb.shape, generator=gen), xb + self.scale * torch.randn(
            xb.shape, generator=gen
        )

    def train(self, checkpoint_steps: list[int]) -> dict:
        c = self.config
        torch.manual_seed(1000 + c["seed"])  # initialisation, as contrastive_synthetic
        enc = torch.nn.Linear(c["dim"], c["out_dim"], bias=False)
        gen = torch.Generator().manual_seed(c["seed"])
        loss_fn = make_loss("gamma", self.N, c["temperature"], c["gamma_shape"], c["gamma_momentum"], c["seed"])
        with torch.no_grad():  # Zhat's start: one view per point, from a generator of its own
            init_gen = torch.Generator().manual_seed(c["seed"] * 2**16 + INIT_STREAM)
            v = enc(self.x + self.scale * torch.randn(self.x.shape, generator=init_gen))
            loss_fn.init_estimates(log_partitions(v, c["temperature"], init_gen))
        steps = c["steps"]
        opt = torch.optim.Adam(enc.parameters(), c["lr"])
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1 + math.cos(math.pi * s / steps)))
        snaps, monitor = [], []
        for step in range(steps):
            if step in checkpoint_steps:
                snaps.append(_snapshot(enc, loss_fn, step))
            idx = torch.randperm(self.N, generator=gen)[: c["batch_size"]]
            v1, v2 = self._views(idx, gen)
            loss, mon = loss_fn(enc(v1), enc(v2), idx)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            monitor.append(mon)
        snaps.append(_snapshot(enc, loss_fn, steps))
        return {"snaps": snaps, "monitor": monitor}

    def load(self, state: dict[str, np.ndarray]) -> None:
        self.weight = torch.from_numpy(state["weight"]).double()

    def fixed_views(self, gen: torch.Generator) -> torch.Tensor:
        v1, v2 = self._views(self.ids, gen)
        return torch.cat([v1, v2]).double()

    def embed(self, views: torch.Tensor) -> torch.Tensor:
        return views @ self.weight.T

    def vjp(self, views: torch.Tensor, grads: list[torch.Tensor]) -> list[torch.Tensor]:
        return [(g.T @ views).reshape(-1) for g in grads]  # z = V W^T, so dL/dW = G^T V


def _snapshot(model: torch.nn.Module, loss_fn: PartitionEstimateLoss, step: int) -> dict:
    return {
        "step": step,
        "state": {k: v.detach().cpu().numpy().copy() for k, v in model.state_dict().items()},
        "log_z_hat": loss_fn.log_z_hat.detach().cpu().numpy().copy(),
    }


def checkpoint_steps(total: int, k: int) -> list[int]:
    return sorted({int(round(s)) for s in np.linspace(0, total, max(2, k))})


def trained(task, a: argparse.Namespace) -> dict:
    """The training run's checkpoints: from bench/cache/ (.npz, no pickle), or trained now."""
    c = task.config
    steps = checkpoint_steps(c["steps"], a.checkpoints)
    path = CACHE / (
        f"{task.name}_steps{c['steps']}_k{len(steps)}_seed{c['seed']}_a{c['gamma_shape']:g}_m{c['gamma_momentum']:g}"
        f"_lr{c['lr']:g}.npz"
    )
    if path.is_file() and not a.fresh:
        with np.load(path, allow_pickle=False) as f:
            snaps = []
            for i, s in enumerate(f["steps"]):
                pre = f"c{i}__state__"
                state = {k[len(pre) :]: f[k] for k in f.files if k.startswith(pre)}
                snaps.append({"step": int(s), "state": state, "log_z_hat": f[f"c{i}__log_z_hat"]})
            print(f"{task.name}: training run's {len(snaps)} checkpoints from {path.relative_to(ROOT)}")
            return {"snaps": snaps, "monitor": f["monitor"].tolist(), "seconds": float(f["seconds"])}
    t = time.perf_counter()
    run = task.train(steps)
    run["seconds"] = time.perf_counter() - t
    arrays = {"steps": np.array([s["step"] for s in run["snaps"]]), "monitor": np.array(run["monitor"])}
    arrays["seconds"] = np.array(run["seconds"])
    for i, s in enumerate(run["snaps"]):
        arrays[f"c{i}__log_z_hat"] = s["log_z_hat"]
        arrays.update({f"c{i}__state__{k}": v for k, v in s["state"].items()})
    CACHE.mkdir(parents=True, exist_ok=True)
    np.savez(path, **arrays)
    print(
        f"{task.name}: trained {c['steps']} steps in {run['seconds']:.0f} s (checkpoints in {path.relative_to(ROOT)})"
    )
    return run


# ------------------------------------------------------------------------ measurement
def full_gradients(e: torch.Tensor, n: int, t: float) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """The full-data gradients w.r.t. the 2N x d embeddings (``ntxent`` and ``decoupled``),
    and the exact per-view log Z_i of the fixed views."""
    leaf = e.detach().clone().requires_grad_()
    (g_nt,) = torch.autograd.grad(nt_xent(leaf[:n], leaf[n:], t), leaf)
    s_pos, log_z = positive_and_log_partition(similarities(leaf[:n], leaf[n:], t))
    (g_dec,) = torch.autograd.grad((-s_pos + log_z).mean(), leaf)
    return {"ntxent": g_nt, "decoupled": g_dec}, log_z.detach()


def stats(mean: torch.Tensor, g: torch.Tensor, tr_cov: float, m: int) -> dict[str, float]:
    g2 = float((g * g).sum())
    d2 = float(((mean - g) ** 2).sum())
    noise = tr_cov / m
    return {
        "bias_cosine": float(F.cosine_similarity(mean.reshape(1, -1), g.reshape(1, -1))[0]),
        "relative_bias": math.sqrt(max(0.0, d2 - noise) / g2),
        "relative_bias_raw": math.sqrt(d2 / g2),
        "noise_ratio": d2 / noise if noise > 0 else float("inf"),
        "variance": tr_cov / g2,
        "noise_floor_cosine": 1 / math.sqrt(1 + noise / g2),
        "noise_relative": math.sqrt(noise / g2),  # sqrt(tr Cov / M) / ||g||: the finite-M noise in mean - g
        "grad_norm": math.sqrt(g2),
    }


def expected_gradient(e: torch.Tensor, n: int, t: float, log_z_hat_view: torch.Tensor) -> torch.Tensor:
    """E[g_b] of ``sogclr`` and ``gamma`` for given (fixed) estimates, in closed form: their M-step
    is linear in Zbatch_i, so its expectation over uniform batches is the gradient of
    ``mean_i(-s_i+ + Z_i / Zhat_i)`` (``gamma``'s draws have mean 1 / Zhat_i: the same)."""
    leaf = e.detach().clone().requires_grad_()
    s_pos, log_z = positive_and_log_partition(similarities(leaf[:n], leaf[n:], t))
    (g,) = torch.autograd.grad((-s_pos + torch.exp(log_z - log_z_hat_view)).mean(), leaf)
    return g


def trace_cov(sum_sq: float, mean: torch.Tensor, m: int) -> float:
    """tr Cov of M vectors from the sum of their squared norms and their mean."""
    return max(0.0, (sum_sq - m * float((mean * mean).sum())) / (m - 1))


def paired_stats(mean_d: torch.Tensor, g: torch.Tensor, tr_cov_d: float, m: int) -> dict:
    """The bias from the paired differences d_b = g_b - c_b (c_b an unbiased control on the same
    batch): E[d_b] = E[g_b] - g, estimated with the variance of d_b instead of g_b's."""
    g2 = float((g * g).sum())
    d2 = float((mean_d * mean_d).sum())
    noise = tr_cov_d / m
    return {
        "bias_cosine": float(F.cosine_similarity((g + mean_d).reshape(1, -1), g.reshape(1, -1))[0]),
        "relative_bias": math.sqrt(max(0.0, d2 - noise) / g2),
        "relative_bias_raw": math.sqrt(d2 / g2),
        "noise_ratio": d2 / noise if noise > 0 else None,
        "noise_relative": math.sqrt(noise / g2),
        "variance": tr_cov_d / g2,
    }


def closed_form_stats(expected: torch.Tensor, g: torch.Tensor, tr_cov: float) -> dict:
    """``stats`` for a known E[g_b] (no finite-M noise): cosine and relative bias exact."""
    g2 = float((g * g).sum())
    return {
        "closed_form": True,
        "bias_cosine": float(F.cosine_similarity(expected.reshape(1, -1), g.reshape(1, -1))[0]),
        "relative_bias": float((expected - g).norm()) / math.sqrt(g2),
        "variance": tr_cov / g2,
        "grad_norm": math.sqrt(g2),
    }


def measure_checkpoint(task, snap: dict, k: int, a: argparse.Namespace) -> dict:
    t0 = time.perf_counter()
    task.load(snap["state"])
    n, temp, ids = task.N, task.temperature, task.ids
    views = task.fixed_views(torch.Generator().manual_seed(a.seed * 2**16 + VIEW_STREAM + 97 * k))
    e = task.embed(views)
    en = F.normalize(e, dim=1)
    full, log_z_view = full_gradients(e, n, temp)
    exact = torch.logaddexp(log_z_view[:n], log_z_view[n:]) - math.log(2)  # per sample: log of the two views' mean
    trained_lzh = torch.from_numpy(snap["log_z_hat"]).double()
    stale = (trained_lzh[ids] - exact).abs().numpy()
    view_gap = (log_z_view[:n] - log_z_view[n:]).abs()
    exact_all = trained_lzh.clone()
    exact_all[ids] = exact
    zhat = {"trained": trained_lzh, "exact": exact_all}  # per dataset sample, as the module keeps them
    # E[g_b] of sogclr / gamma in closed form, per source of the estimates (per view: = g exactly)
    expected = {src: expected_gradient(e, n, temp, torch.cat([z[ids], z[ids]])) for src, z in zhat.items()}
    out: dict = {
        "step": snap["step"],
        "zhat_abs_log_error": {"median": float(np.median(stale)), "p90": float(np.quantile(stale, 0.9))},
        # mean cosine between views of different samples: near 1 means nearly collapsed embeddings
        "mean_negative_cosine": float(
            ((en @ en.T).sum() - (en * en).sum() - 2 * (en[:n] * en[n:]).sum()) / (4 * n * (n - 1))
        ),
        "view_log_z_abs_difference": {"median": float(view_gap.median()), "p90": float(torch.quantile(view_gap, 0.9))},
        "rows": {},
    }
    # Control variates, unbiased by construction (E = g exactly), evaluated on the same batches:
    # the difference d_b = g_b - c_b has mean E[g_b] - g, the bias, with far less variance than
    # g_b (the positives' terms cancel; log Zbatch and Zbatch / Z agree to first order).
    # Decoupled rows: the M-step with each view's exact Z_i (the "sogclr (exact per-view Z)" row).
    # ntxent: the M-step of log W_i, W_i = exp(s_i+) + (2N - 2) Z_i the full-data NT-Xent sum,
    # ``(exp(s_i+) + (2N - 2) Zbatch_i) / W_i``, linear in Zbatch_i with W_i exact.
    with torch.no_grad():
        s_pos_full, _ = positive_and_log_partition(similarities(e[:n], e[n:], temp))
    log_w = torch.logaddexp(s_pos_full, math.log(2 * n - 2) + log_z_view)

    def control(z: torch.Tensor, p: torch.Tensor, kind: str) -> torch.Tensor:
        b, rows = len(p), torch.cat([p, p + n])
        s_pos, log_z_batch = positive_and_log_partition(similarities(z[:b], z[b:], temp))
        if kind == "ntxent":
            return (-s_pos + torch.exp(torch.logaddexp(s_pos, math.log(2 * n - 2) + log_z_batch) - log_w[rows])).mean()
        return m_step_loss_log(s_pos, log_z_batch, -log_z_view[rows])

    means, covs, pcovs, loss_fns = {}, {}, {}, {}
    dmeans, dcovs, pdcovs = {}, {}, {}  # the paired differences d_b
    for bsz in task.batches:
        gen = torch.Generator().manual_seed(a.seed * 2**16 + BATCH_STREAM + 97 * k + bsz)  # same for every loss
        batches = [torch.randperm(n, generator=gen)[:bsz] for _ in range(a.m)]
        controls = {}
        for kind in ("ntxent", "decoupled"):
            controls[kind] = []
            for p in batches:
                zb = e[torch.cat([p, p + n])].clone().requires_grad_()
                controls[kind].append(torch.autograd.grad(control(zb, p, kind), zb)[0])
        shape, momentum = task.config["gamma_shape"], task.config["gamma_momentum"]
        for label, loss_name, source in ROWS:
            fn = make_loss(loss_name, task.n_samples, temp, shape, momentum, seed=a.seed + 17).double()
            rng = np.random.default_rng([a.seed, 17, bsz])
            kind = "ntxent" if loss_name == "ntxent" else "decoupled"

            def loss_of(
                z: torch.Tensor, p: torch.Tensor, fn=fn, name=loss_name, source=source, rng=rng, shape=shape
            ) -> torch.Tensor:
                b = len(p)
                if source == "view":  # the library's M-step, one exact log Z_i per view (not the module)
                    s_pos, log_z_batch = positive_and_log_partition(similarities(z[:b], z[b:], temp))
                    lz = log_z_view[torch.cat([p, p + n])]
                    log_u = -lz if name == "sogclr" else sample_log_u(lz, shape, rng)
                    return m_step_loss_log(s_pos, log_z_batch, log_u)
                if source is not None:
                    fn.init_estimates(zhat[source])  # the state does not move while measuring
                return fn(z[:b], z[b:], ids[p])[0]

            loss_fns[(label, bsz)] = (loss_of, kind)
            total, total_d = torch.zeros_like(e), torch.zeros_like(e)
            sq = sq_d = psq = psq_d = 0.0
            ptotal = ptotal_d = 0.0
            for p, c in zip(batches, controls[kind], strict=True):
                rows = torch.cat([p, p + n])
                zb = e[rows].clone().requires_grad_()  # the batch's rows of E: g_b is zero elsewhere
                (gb,) = torch.autograd.grad(loss_of(zb, p), zb)
                d = gb - c
                total.index_add_(0, rows, gb)
                total_d.index_add_(0, rows, d)
                sq += float((gb * gb).sum())
                sq_d += float((d * d).sum())
                if task.linear:  # parameter space directly: dL/dW = g_b^T V_b
                    pg, pd = (gb.T @ views[rows]).reshape(-1), (d.T @ views[rows]).reshape(-1)
                    ptotal, ptotal_d = ptotal + pg, ptotal_d + pd
                    psq += float((pg * pg).sum())
                    psq_d += float((pd * pd).sum())
            key = (label, bsz)
            means[key], dmeans[key] = total / a.m, total_d / a.m
            covs[key] = trace_cov(sq, means[key], a.m)
            dcovs[key] = trace_cov(sq_d, dmeans[key], a.m)
            if task.linear:
                pcovs[key] = trace_cov(psq, ptotal / a.m, a.m)
                pdcovs[key] = trace_cov(psq_d, ptotal_d / a.m, a.m)
        del controls
    t_emb = time.perf_counter() - t0
    # Parameter space: J^T of the full gradients and of the expected minibatch gradients. For
    # sogclr and gamma, E[g_b] is known in closed form (and checked against the measured mean in
    # embedding space): digits takes J^T of it, one backward pass instead of one per row; ntxent
    # and dcl (and every row of the linear synthetic encoder, where it is free) take J^T of the
    # measured mean and of the paired differences' mean.
    measured = [x for x in means if task.linear or ROW_SOURCE[x[0]] is None]
    cotangents = [full["ntxent"], full["decoupled"], expected["trained"], expected["exact"]]
    vecs = task.vjp(views, cotangents + [means[x] for x in measured] + [dmeans[x] for x in measured])
    pfull = {"ntxent": vecs[0], "decoupled": vecs[1]}
    pexpected = {"trained": vecs[2], "exact": vecs[3], "view": vecs[1]}  # per view: E[g_b] = g exactly
    pmean = dict(zip(measured, vecs[4 : 4 + len(measured)], strict=True))
    pdmean = dict(zip(measured, vecs[4 + len(measured) :], strict=True))
    t_vjp = time.perf_counter() - t0 - t_emb
    if not task.linear:  # tr Cov from --m-param minibatch backward passes, around E[g_b] (and E[d_b])
        for key in [x for x in means if x[0] not in EMBEDDING_ONLY]:
            centre = pmean[key] if key in pmean else pexpected[ROW_SOURCE[key[0]]]
            f, kind = loss_fns[key]
            gen = torch.Generator().manual_seed(a.seed * 2**16 + PARAM_STREAM + 97 * k + key[1])
            dev = dev_d = 0.0
            for _ in range(a.m_param):
                p = torch.randperm(n, generator=gen)[: key[1]]

                def losses(z: torch.Tensor, p=p, f=f, kind=kind, paired=key in pdmean) -> list[torch.Tensor]:
                    loss = f(z, p)
                    return [loss, loss - control(z, p, kind)] if paired else [loss]

                pgs = task.batch_param_grads(views, torch.cat([p, p + n]), losses)
                dev += float(((pgs[0] - centre) ** 2).sum())
                if key in pdmean:
                    dev_d += float(((pgs[1] - pdmean[key]) ** 2).sum())
            pcovs[key] = dev / a.m_param
            if key in pdmean:
                pdcovs[key] = dev_d / a.m_param
    for label, loss_name, source in ROWS:
        obj = "ntxent" if loss_name == "ntxent" else "decoupled"
        out["rows"][label] = {}
        for bsz in task.batches:
            key = (label, bsz)
            emb = stats(means[key], full[obj], covs[key], a.m)
            emb["paired"] = paired_stats(dmeans[key], full[obj], dcovs[key], a.m)
            if key in pmean:
                par = stats(pmean[key], pfull[obj], pcovs[key], a.m)
                par["paired"] = paired_stats(pdmean[key], pfull[obj], pdcovs[key], a.m)
                par["variance_batches"] = a.m if task.linear else a.m_param
            elif key in pcovs:  # digits' sogclr and gamma rows: E[g_b] in closed form (M infinite)
                par = closed_form_stats(pexpected[source], pfull[obj], pcovs[key])
                par["variance_batches"] = a.m_param
            else:  # digits' per-view rows: embedding space only
                par = None
            if source is not None:  # the bias E[g_b] - g in closed form, to check the measured one against
                for st, g, ex in ((emb, full[obj], expected), (par, pfull[obj], pexpected)):
                    if st is not None:
                        cf = 0.0 if source == "view" else float((ex[source] - g).norm() / g.norm())
                        st["closed_form_relative_bias"] = cf
            out["rows"][label][str(bsz)] = {"embedding": emb, "parameter": par}
    out["seconds"] = time.perf_counter() - t0
    out["seconds_parts"] = {
        "embedding_space": t_emb,
        "parameter_vjps": t_vjp,
        "parameter_batches": out["seconds"] - t_emb - t_vjp,
    }
    return out


# ------------------------------------------------------------------------------- output
def print_table(name: str, ckpts: list[dict], batches: list[int]) -> None:
    print(
        f"\n{name}, per checkpoint step. Embedding space: cos = bias cosine cos(mean g_b, g); bias = corrected "
        "relative bias, direct; pair = the same from the paired differences with an unbiased control; var = "
        "tr Cov / ||g||^2. Parameter space: pcos = bias cosine; pbias = corrected relative bias, paired "
        "(* = closed form E[g_b], no finite-M noise)"
    )
    head = f"{'loss':26s} {'B':>3s} |" + "|".join(
        f" step {c['step']:>5d}:   cos    bias    pair     var    pcos    pbias " for c in ckpts
    )
    print(head)
    print("-" * len(head))
    for label, _, _ in ROWS:
        for b in batches:
            cells = []
            for c in ckpts:
                r = c["rows"][label][str(b)]
                e, p = r["embedding"], r["parameter"]
                if p:
                    star = "*" if p.get("closed_form") else " "
                    pb = p["paired"]["relative_bias"] if "paired" in p else p["relative_bias"]
                    par = f"{p['bias_cosine']:.4f}{star} {pb:.4f}{star}"
                else:
                    par = f"{'-':>7s} {'-':>7s}"
                cells.append(
                    f"{e['bias_cosine']:13.4f} {e['relative_bias']:7.4f} {e['paired']['relative_bias']:7.4f} "
                    f"{e['variance']:7.2f} {par}"
                )
            print(f"{label:26s} {b:>3d} |" + " |".join(cells))
    print(
        "noise floor of the embedding-space cosine (an unbiased estimator at this M), smallest batch: "
        + ", ".join(
            f"step {c['step']}: gamma {c['rows']['gamma'][str(batches[0])]['embedding']['noise_floor_cosine']:.4f}"
            for c in ckpts
        )
    )
    print(
        "mean cosine between views of different samples (eval mode): "
        + ", ".join(f"step {c['step']}: {c['mean_negative_cosine']:.3f}" for c in ckpts)
    )
    print(
        "|log Zhat - log Z| (trained estimate against the fixed views' exact value), median / p90: "
        + ", ".join(
            f"step {c['step']}: {c['zhat_abs_log_error']['median']:.3f} / {c['zhat_abs_log_error']['p90']:.3f}"
            for c in ckpts
        )
    )


SANITY_RULE = (
    "at the smallest batch, embedding space: the per-view exact-Z rows of gamma and sogclr unbiased "
    "(direct noise_ratio < 1.5, and gamma's paired noise_ratio < 1.5); the per-sample exact-Zhat rows' paired "
    "bias equal to their closed form (within 25% + half the paired relative noise + 0.005); dcl and ntxent "
    "biased (paired noise_ratio > 1.5) at every checkpoint after step 0"
)


def sanity(name: str, ckpts: list[dict], batches: list[int]) -> dict:
    """The expected pattern (``SANITY_RULE``), checked and printed per checkpoint."""
    small = str(batches[0])
    per_view = ("gamma (exact per-view Z)", "sogclr (exact per-view Z)")
    per_sample = ("gamma (exact Zhat)", "sogclr (exact Zhat)")
    print(
        f"\n{name} sanity, B={small}: corrected relative bias, direct / paired [closed form] "
        "(direct / paired noise ratio, about 1 if unbiased)"
    )
    checks = []
    for c in ckpts:
        r = {label: c["rows"][label][small]["embedding"] for label, _, _ in ROWS}
        unbiased = (
            all(r[x]["noise_ratio"] < 1.5 for x in per_view) and (r[per_view[0]]["paired"]["noise_ratio"] or 0.0) < 1.5
        )
        closed = all(
            abs(r[x]["paired"]["relative_bias"] - r[x]["closed_form_relative_bias"])
            < 0.25 * r[x]["closed_form_relative_bias"] + 0.5 * r[x]["paired"]["noise_relative"] + 0.005
            for x in per_sample
        )
        biased = c["step"] == 0 or all((r[x]["paired"]["noise_ratio"] or 0.0) > 1.5 for x in ("dcl", "ntxent"))
        checks.append(
            {"step": c["step"], "per_view_unbiased": unbiased, "closed_form_matches": closed, "biased": biased}
        )
        cells = []
        for x in r:
            pr = r[x]["paired"]["noise_ratio"]
            cf = f" [{r[x]['closed_form_relative_bias']:.4f}]" if "closed_form_relative_bias" in r[x] else ""
            ratios = f"{r[x]['noise_ratio']:.2f} / " + (f"{pr:.2f}" if pr is not None else "-")
            cells.append(f"{x} {r[x]['relative_bias']:.4f} / {r[x]['paired']['relative_bias']:.4f}{cf} ({ratios})")
        print(f"  step {c['step']:>5d}:\n    " + "\n    ".join(cells))
        print(
            f"    per-view exact unbiased: {unbiased}; per-sample exact matches closed form: {closed}; "
            f"dcl/ntxent biased: {biased}"
        )
    ok = all(x["per_view_unbiased"] and x["closed_form_matches"] and x["biased"] for x in checks)
    print(f"  {name}: {'as expected' if ok else 'NOT as expected'} ({SANITY_RULE})")
    return {"as_expected": ok, "rule": SANITY_RULE, "checkpoints": checks}


def plot(results: dict, path: Path) -> None:
    """Per task: corrected relative bias (embedding space) against checkpoint step, estimated
    directly (top) and from the paired differences (bottom, zoomed on the rows other than the
    trained-Zhat sogclr and gamma)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    tasks = list(results)
    fig, axes = plt.subplots(2, len(tasks), figsize=(6.4 * len(tasks), 8.4), dpi=120, squeeze=False)
    for col, name in enumerate(tasks):
        r = results[name]
        ckpts, batches = r["checkpoints"], r["batches"]
        steps = [c["step"] for c in ckpts]
        zoom_top = 0.0
        for label, _, source in ROWS:
            for b, ls in zip(batches, ("-", "--"), strict=False):
                y = [c["rows"][label][str(b)]["embedding"]["relative_bias"] for c in ckpts]
                yp = [c["rows"][label][str(b)]["embedding"]["paired"]["relative_bias"] for c in ckpts]
                if source != "trained":
                    zoom_top = max(zoom_top, *yp)
                axes[0, col].plot(steps, y, ls=ls, marker="o", ms=3, color=COLOURS[label])
                axes[1, col].plot(steps, yp, ls=ls, marker="o", ms=3, color=COLOURS[label])
        for row, ax in enumerate(axes[:, col]):
            ax.set_xlabel("training step of the checkpoint")
            ax.set_ylabel("corrected relative bias, embedding space")
            ax.grid(alpha=0.3)
            if row == 0:
                ax.set_ylim(bottom=0)
                ax.set_title(f"{name}: ||E g_b - g|| / ||g||, solid B={batches[0]}, dashed B={batches[-1]}", fontsize=9)
            else:
                ax.set_ylim(0, 1.15 * zoom_top + 1e-3)
                ax.set_title(
                    f"{name}: the same, paired with an unbiased control (zoom: trained-Zhat rows off the top)",
                    fontsize=9,
                )
    handles = [Line2D([], [], color=COLOURS[label], marker="o", ms=3, label=label) for label, _, _ in ROWS]
    fig.legend(handles=handles, loc="lower center", ncol=4, fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    fig.savefig(path)
    plt.close(fig)
    print(f"saved {path}")


def main() -> None:
    cfg = PretrainConfig()
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tasks", nargs="+", choices=("digits", "synthetic"), default=["digits", "synthetic"])
    ap.add_argument("--checkpoints", type=int, default=4)
    ap.add_argument("--m", type=int, default=2000, help="minibatch gradients per loss and batch (embedding space)")
    ap.add_argument("--m-param", type=int, default=8, help="digits: minibatch backward passes for parameter variance")
    ap.add_argument("--digits-steps", type=int, default=300)
    ap.add_argument("--digits-batches", type=int, nargs="+", default=[32, 64])
    ap.add_argument("--synthetic-steps", type=int, default=2000)
    # the synthetic run's gamma settings: those contrastive_synthetic.py tuned for gamma at noise 1, batch 4
    ap.add_argument("--synthetic-lr", type=float, default=0.02)
    ap.add_argument("--synthetic-shape", type=float, default=16.0)
    ap.add_argument("--synthetic-momentum", type=float, default=0.02)
    ap.add_argument("--synthetic-batches", type=int, nargs="+", default=[4, 8])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--shape", type=float, default=cfg.gamma_shape)
    ap.add_argument("--momentum", type=float, default=cfg.gamma_momentum)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--fresh", action="store_true")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    t0 = time.perf_counter()
    done = Partial(NAME, a.fresh)
    results: dict = {}
    for name in a.tasks:
        task = DigitsTask(a) if name == "digits" else SyntheticTask(a)
        run = trained(task, a)
        tag = (
            f"{name}/steps{task.config['steps']}/seed{a.seed}/a{task.config['gamma_shape']:g}"
            f"/m{task.config['gamma_momentum']:g}/lr{task.config['lr']:g}/k{len(run['snaps'])}"
            f"/M{a.m}/Mp{a.m_param}/B{'-'.join(map(str, task.batches))}"
        )
        ckpts = []
        for k, snap in enumerate(run["snaps"]):
            key = f"{tag}/ckpt{k}"
            if key not in done:
                done.put(key, measure_checkpoint(task, snap, k, a))
                print(f"{name}: checkpoint {k} (step {snap['step']}) measured in {done[key]['seconds']:.0f} s")
            ckpts.append(done[key])
        mon = run["monitor"]
        every = max(1, len(mon) // 50)
        results[name] = {
            "training": {
                **task.config,
                "seconds": run["seconds"],
                "monitor_every": every,
                "monitor": [round(float(np.mean(mon[i : i + every])), 4) for i in range(0, len(mon), every)],
            },
            "batches": task.batches,
            "checkpoints": ckpts,
        }
        print_table(name, ckpts, task.batches)
    for name in results:
        results[name]["sanity"] = sanity(name, results[name]["checkpoints"], results[name]["batches"])
    RESULTS.mkdir(parents=True, exist_ok=True)
    plot(results, RESULTS / f"{NAME}.png")
    total = time.perf_counter() - t0
    save(NAME, {"tasks": results, "rows": [r[0] for r in ROWS], "total_seconds": total}, config=vars(a))
    print(f"total {total:.0f} s")


if __name__ == "__main__":
    main()
