"""Training a supernet once: the sandwich rule with in-place distillation, checkpoints,
resume, and data-parallel training over processes (``torchrun``).

Each optimiser step (BigNAS):

1. the largest subnet learns from NT-Xent on two augmented views of the batch; its
   embeddings, detached, are the teacher's;
2. the smallest subnet (IBN and fused-IBN in turn, each other step) and ``subnets - 2``
   subnets drawn uniformly regress the teacher's embeddings of the same views (cosine,
   in-place distillation), or, with ``distill=False``, learn from NT-Xent themselves;
3. the gradients of all of them are summed and one AdamW step is taken (a warm-up, then
   a cosine schedule).

The first ``largest_first`` fraction of the steps trains the largest subnet alone (as
Once-for-All trains the full network first); then every branch's middle channels are
ordered by importance (``Supernet.sort_channels``) and the sandwich begins. NT-Xent is
the only loss: the Gamma and SogCLR losses keep a running estimate per training sample
of one network's partition function, which many subnets of different quality cannot
share.

Randomness is a pure function of (seed, step): the epoch's order, the subnets drawn and
the augmentations, so a resumed run takes the same steps as an uninterrupted one and every
process of a distributed run draws the same subnets. Launched with ``torchrun
--nproc_per_node N``, each process trains on its own part of each global batch (``N x
batch_size`` images); after the sandwich's backward passes the gradients are averaged
over processes in one all-reduce, and so are the BatchNorm running statistics, so every
process holds the same supernet (the ``DistributedDataParallel`` wrapper would all-reduce
once per subnet and needs ``find_unused_parameters`` for branches a subnet skips; one
explicit all-reduce per step does the same work once). Backend: NCCL on CUDA, gloo on CPU.

The checkpoint is one ``.npz`` file (no pickle): the supernet's tensors, the optimiser's
moments and a JSON record (config, the space as YAML, step, loss history), written
atomically every ``checkpoint_every`` steps and at the end. A killed run restarted with
the same command resumes from its last checkpoint.
"""

from __future__ import annotations

import json
import os
import platform
import time
import zipfile
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from nasctl.contrastive.augment import AugmentConfig, two_views
from nasctl.contrastive.losses import nt_xent
from nasctl.contrastive.pretrain import TrainingDiverged, lr_at, resolve_device
from nasctl.errors import NasctlError
from nasctl.nn.supernet import Supernet

CHECKPOINT_SCHEMA = "nasctl.supernet/1"
META_KEY = "__meta__"
OPT_PREFIX = "__opt__."
SPLIT_SEED = 0  # the data split the supernet trains on (its train split) and the search probes (val)

Progress = Callable[[dict], None]


@dataclass
class SupernetConfig:
    """How a supernet is trained. ``batch_size`` is per process."""

    data: str = "digits"
    resolution: int | None = None  # None: the space's largest
    epochs: int = 40
    batch_size: int = 64
    lr: float = 2e-3
    weight_decay: float = 1e-4
    warmup_fraction: float = 0.05
    temperature: float = 0.2
    subnets: int = 4  # per step: the largest, the smallest and subnets - 2 drawn uniformly
    distill: bool = True
    largest_first: float = 0.1  # fraction of steps that train the largest subnet alone
    seed: int = 0
    device: str = "cpu"
    checkpoint_every: int = 50  # steps

    def validate(self) -> SupernetConfig:
        resolve_device(self.device)
        checks = [
            ("epochs", self.epochs, self.epochs >= 1, ">= 1"),
            ("batch size", self.batch_size, self.batch_size >= 2, ">= 2 (contrastive pairs need negatives)"),
            ("learning rate", self.lr, self.lr > 0, "> 0"),
            ("temperature", self.temperature, self.temperature > 0, "> 0"),
            ("subnets per step", self.subnets, self.subnets >= 2, ">= 2 (the largest and the smallest)"),
            ("largest-first fraction", self.largest_first, 0 <= self.largest_first < 1, "in [0, 1)"),
            ("checkpoint interval", self.checkpoint_every, self.checkpoint_every >= 1, ">= 1 step"),
        ]
        for name, value, ok, rule in checks:
            if not ok:
                raise NasctlError(f"{name} must be {rule} (got {value})")
        return self

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SupernetConfig:
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})

    def identity(self) -> dict[str, Any]:
        """What a resumed run must share with the checkpoint (the device may change)."""
        d = self.to_dict()
        d.pop("device")
        d.pop("checkpoint_every")
        return d


# ------------------------------------------------------------------------- distributed
def world() -> tuple[int, int]:
    """(rank, world size): from ``torchrun``'s environment, else (0, 1)."""
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))


def init_distributed(device: torch.device) -> None:
    import torch.distributed as dist

    if world()[1] > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")


def all_reduce_mean(tensors: list[torch.Tensor]) -> None:
    """Average ``tensors`` over the processes in place, in one all-reduce."""
    import torch.distributed as dist

    size = world()[1]
    if size == 1 or not tensors:
        return
    flat = torch.cat([t.reshape(-1).float() for t in tensors])
    dist.all_reduce(flat)
    flat /= size
    offset = 0
    for t in tensors:
        n = t.numel()
        t.copy_(flat[offset : offset + n].view_as(t).to(t.dtype))
        offset += n


def _device(cfg: SupernetConfig) -> torch.device:
    dev = resolve_device(cfg.device)
    if dev.type == "cuda" and world()[1] > 1:
        dev = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
        torch.cuda.set_device(dev)
    return dev


# ------------------------------------------------------------------------- checkpoints
def save_checkpoint(path: Path, net: Supernet, opt: torch.optim.Optimizer, meta: dict[str, Any]) -> Path:
    """Write the checkpoint atomically (a ``.tmp`` file renamed over the old one)."""
    arrays = {k: v.detach().cpu().numpy() for k, v in net.state_dict().items()}
    for i, p in enumerate(net.parameters()):
        st = opt.state.get(p)
        if st:
            arrays[f"{OPT_PREFIX}{i}.exp_avg"] = st["exp_avg"].detach().cpu().numpy()
            arrays[f"{OPT_PREFIX}{i}.exp_avg_sq"] = st["exp_avg_sq"].detach().cpu().numpy()
            arrays[f"{OPT_PREFIX}{i}.step"] = np.asarray(float(st["step"]))
    arrays[META_KEY] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        np.savez(f, **arrays)
    os.replace(tmp, path)
    return path


def read_checkpoint(path: str | Path, tensors: bool = True) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """(meta, arrays) of a checkpoint; a missing, unreadable or foreign file is a one-line
    error. ``tensors=False`` reads the JSON record alone (the arrays come back empty)."""
    path = Path(path)
    if not path.is_file():
        raise NasctlError(f"{path}: no such supernet checkpoint")
    if not zipfile.is_zipfile(path):  # numpy would call any other file "pickled data"
        raise NasctlError(f"{path}: not a readable supernet checkpoint (not an .npz archive)")
    try:
        with np.load(path, allow_pickle=False) as f:
            if META_KEY not in f.files:
                raise NasctlError(f"{path}: not a nasctl supernet checkpoint (no {META_KEY} record)")
            record = f[META_KEY]
            arrays = {k: f[k] for k in f.files if k != META_KEY} if tensors else {}
    except NasctlError:
        raise
    except Exception as exc:
        raise NasctlError(f"{path}: not a readable supernet checkpoint ({str(exc).splitlines()[0]})") from None
    try:
        meta = json.loads(record.tobytes().decode())
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise NasctlError(f"{path}: its supernet record is not valid JSON") from None
    if meta.get("schema") != CHECKPOINT_SCHEMA:
        raise NasctlError(
            f"{path}: unsupported supernet checkpoint schema {meta.get('schema')!r} "
            f"(this nasctl reads {CHECKPOINT_SCHEMA})"
        )
    return meta, arrays


def load_supernet(path: str | Path, device: str = "cpu") -> tuple[Supernet, dict[str, Any]]:
    """The trained supernet of a checkpoint (on ``device``) and its record."""
    from nasctl.space import SearchSpace

    meta, arrays = read_checkpoint(path)
    space = SearchSpace.loads(meta["space_yaml"], source=meta.get("space_file", str(path)))
    net = Supernet(space, meta["config"]["resolution"])
    _load_state(net, arrays, path)
    return net.to(resolve_device(device)), meta


def _load_state(net: Supernet, arrays: dict[str, np.ndarray], path: str | Path) -> None:
    state = {k: torch.from_numpy(np.array(v)) for k, v in arrays.items() if not k.startswith(OPT_PREFIX)}
    try:
        net.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise NasctlError(
            f"{path}: the checkpoint's tensors do not fit this space's supernet ({str(exc).splitlines()[0]})"
        ) from None


def _load_optimizer(opt: torch.optim.Optimizer, net: Supernet, arrays: dict[str, np.ndarray]) -> None:
    for i, p in enumerate(net.parameters()):
        key = f"{OPT_PREFIX}{i}"
        if f"{key}.exp_avg" in arrays:
            opt.state[p] = {
                "step": torch.tensor(float(arrays[f"{key}.step"])),
                "exp_avg": torch.from_numpy(np.array(arrays[f"{key}.exp_avg"])).to(p.device),
                "exp_avg_sq": torch.from_numpy(np.array(arrays[f"{key}.exp_avg_sq"])).to(p.device),
            }


# ----------------------------------------------------------------------------- training
def _stream(seed: int, *parts: int) -> int:
    return int(np.random.SeedSequence([seed, *parts]).generate_state(1)[0])


def sandwich(net: Supernet, cfg: SupernetConfig, step: int, sort_step: int) -> list:
    """The subnets of one step (a pure function of the seed and the step): the largest
    alone before ``sort_step``, then the largest, the smallest and random ones."""
    if step < sort_step:
        return [net.largest()]
    kinds = sorted({k for st in net.space.spec.stages for k in st.kind})
    rng = np.random.default_rng([cfg.seed, 0x5A, step])
    small = net.smallest(kinds[step % len(kinds)])
    return [net.largest(), small] + [net.sample(rng) for _ in range(cfg.subnets - 2)]


def train_supernet(
    space,
    cfg: SupernetConfig,
    out: str | Path,
    progress: Progress | None = None,
    stop_after: int | None = None,
) -> dict[str, Any]:
    """Train (or resume) the supernet of ``space`` under ``cfg``, checkpointing to ``out``.
    ``stop_after``: stop after this many steps of this call, without a checkpoint (as a
    kill would). Returns the checkpoint's record."""
    return train(space, cfg, out, progress, stop_after)[1]


def train(
    space,
    cfg: SupernetConfig,
    out: str | Path,
    progress: Progress | None = None,
    stop_after: int | None = None,
) -> tuple[Supernet, dict[str, Any]]:
    """``train_supernet``, returning this process's supernet too."""
    from nasctl.contrastive import load_data

    cfg.validate()
    out = Path(out)
    dev = _device(cfg)
    init_distributed(dev)
    rank, size = world()
    cfg.resolution = cfg.resolution or max(space.spec.input.resolution)
    torch.manual_seed(cfg.seed)
    net = Supernet(space, cfg.resolution)  # seeded init: the same on every process
    data = load_data(cfg.data, cfg.resolution, space.spec.input.channels, seed=SPLIT_SEED)
    train_idx = torch.from_numpy(data.train)
    per_step = cfg.batch_size * size
    if len(train_idx) < per_step:
        raise NasctlError(
            f"the train split has {len(train_idx)} images; a step needs {per_step} "
            f"({size} process(es) x batch {cfg.batch_size})"
        )
    steps_per_epoch = len(train_idx) // per_step
    total = cfg.epochs * steps_per_epoch
    sort_step = int(round(cfg.largest_first * total))
    meta: dict[str, Any] = {
        "schema": CHECKPOINT_SCHEMA,
        "config": cfg.to_dict(),
        "space_yaml": space.to_yaml(),
        "space_file": space.source,
        "space_name": space.name,
        "step": 0,
        "total_steps": total,
        "steps_per_epoch": steps_per_epoch,
        "sort_step": sort_step,
        "sorted": False,
        "world_size": size,
        "seconds": 0.0,
        "loss_per_step": [],
        "finished": False,
    }
    arrays = None
    if out.exists():
        old, arrays = read_checkpoint(out)
        if (
            SupernetConfig.from_dict(old["config"]).identity() != cfg.identity()
            or old["space_yaml"] != meta["space_yaml"]
        ):
            raise NasctlError(f"{out}: holds a supernet of another space or config; give another --out or delete it")
        if old.get("world_size", 1) != size:
            raise NasctlError(
                f"{out}: was trained on {old.get('world_size', 1)} process(es), not {size}; resume with as many"
            )
        meta = old
        _load_state(net, arrays, out)
    net.to(dev).train()
    opt = torch.optim.AdamW(net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    if arrays is not None:
        _load_optimizer(opt, net, arrays)
    aug = AugmentConfig(flip=data.allows_flip)
    x_all = data.x
    start_step, start = meta["step"], time.perf_counter()
    seconds0 = meta["seconds"]
    done_here = 0
    step = start_step
    while step < total and (stop_after is None or done_here < stop_after):
        if step == sort_step and not meta["sorted"] and sort_step > 0:
            net.sort_channels()
            opt = torch.optim.AdamW(net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
            meta["sorted"] = True
        epoch, b = divmod(step, steps_per_epoch)
        order = train_idx[
            torch.randperm(len(train_idx), generator=torch.Generator().manual_seed(_stream(cfg.seed, 1, epoch)))
        ]
        idx = order[b * per_step + rank * cfg.batch_size : b * per_step + (rank + 1) * cfg.batch_size]
        gen = torch.Generator().manual_seed(_stream(cfg.seed, 2, step, rank))
        v1, v2 = two_views(x_all[idx], aug, gen)
        views = torch.cat([v1, v2]).to(dev, non_blocking=True)
        n = len(idx)
        for group in opt.param_groups:
            group["lr"] = lr_at(step / total, cfg.lr, cfg.warmup_fraction)
        opt.zero_grad(set_to_none=True)  # a branch no subnet used this step is not updated
        losses = []
        teacher = None
        for i, arch in enumerate(sandwich(net, cfg, step, sort_step)):
            z = net(views, arch)
            if i == 0 or not cfg.distill:
                loss = nt_xent(z[:n], z[n:], cfg.temperature)
            else:
                loss = (1 - F.cosine_similarity(z, teacher, dim=1)).mean()
            if not torch.isfinite(loss):
                raise TrainingDiverged(
                    f"supernet training diverged: the loss of subnet {i} became {float(loss.detach())} at step {step} "
                    f"of {total} (lr {cfg.lr:g}); try a lower --lr"
                )
            loss.backward()
            if i == 0:
                teacher = z.detach()
            losses.append(float(loss.detach()))
        if size > 1:
            all_reduce_mean([p.grad for p in net.parameters() if p.grad is not None])
            all_reduce_mean([b for name, b in net.named_buffers() if "running" in name])
        opt.step()
        step += 1
        done_here += 1
        meta["step"] = step
        meta["loss_per_step"].append(losses[0])
        meta["seconds"] = seconds0 + time.perf_counter() - start
        if rank == 0 and (step % cfg.checkpoint_every == 0 or step == total):
            meta["finished"] = step == total
            meta["machine"] = {"python": platform.python_version(), "torch": torch.__version__, "device": str(dev)}
            save_checkpoint(out, net, opt, meta)
        if progress is not None and rank == 0:
            progress(
                {
                    "step": step,
                    "total_steps": total,
                    "loss": losses[0],
                    "distill_loss": float(np.mean(losses[1:])) if len(losses) > 1 else None,
                    "elapsed_s": meta["seconds"],
                }
            )
    return net, meta
