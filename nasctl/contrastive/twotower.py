"""Two-tower (image-text) contrastive models: the model, its training and its evaluation.

* ``TwoTower``: the image tower is any searchable ``Arch`` (its backbone, pooled), the
  text tower a small token model (an embedding, then two residual 1-D convolutions or a
  2-layer transformer encoder, mean-pooled over the words). Each tower ends in a 2-layer
  projection head to the shared embedding; with deep feature separation, a second head
  gives the modality-specific part. The temperature is learnt (log-parametrised, clamped
  to >= 0.01).
* ``train_two_tower``: symmetric InfoNCE between an augmented image view and its caption,
  plus the regularisers chosen in ``TwoTowerConfig`` (each with its weight):

  - ``separation``: orthogonality of shared and specific parts + an intra-modal NT-Xent
    on two views of the specific parts (image augmentations; word drop / swap for text);
  - ``intra``: the same intra-modal NT-Xent on the *shared* embeddings, with no separate
    part: the control that tells separation's gain from the added loss's;
  - ``bridge``: the second view of each modality pulled toward a Brownian-bridge point
    between the item's image and text embeddings;
  - ``geometry``: the image and text batches' similarity structures matched, the
    cross-modal similarity made symmetric.
* ``evaluate_two_tower``: retrieval R@1 / R@5 both ways on the test split (a hit is any
  item whose caption is identical to the query's: generated captions repeat), zero-shot
  classification by caption prompts (val and test), and linear probes of the image
  embedding, the text embedding and both, on the label and on each modality-only
  attribute. The downstream embedding is the shared part, or [shared, specific] with
  separation; retrieval and zero-shot use the shared part.
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
import torch.nn.functional as F
from torch import Tensor, nn

from nasctl.arch import Arch
from nasctl.contrastive.augment import AugmentConfig, augment, two_views
from nasctl.contrastive.losses import nt_xent
from nasctl.contrastive.multimodal import bridge_loss, geometry_loss, orthogonality, symmetric_infonce
from nasctl.contrastive.paired import PAD, PairedData, augment_tokens
from nasctl.contrastive.pretrain import TrainingDiverged, lr_at, resolve_device
from nasctl.contrastive.probe import EVAL_BATCH, linear_probe, recalibrate_bn
from nasctl.errors import NasctlError
from nasctl.nn.builder import Network
from nasctl.nn.lower import lower

ProgressFn = Callable[[dict], None]
TEXT_TOWERS = ("conv", "transformer")
REGULARISERS = ("separation", "intra", "bridge", "geometry")
MIN_TEMPERATURE = 0.01


# ------------------------------------------------------------------------------ the model
class TextTower(nn.Module):
    """Token ids (B x L, ``PAD`` = 0 after the words) -> B x ``width`` features: an
    embedding, then two residual 1-D convolutions (kernel 3) or a 2-layer transformer
    encoder (4 heads, learnt positions), then the mean over the words."""

    def __init__(self, vocab_size: int, width: int = 64, kind: str = "conv", max_len: int = 32):
        super().__init__()
        if kind not in TEXT_TOWERS:
            raise NasctlError(f"unknown text tower {kind!r} (expected one of: {', '.join(TEXT_TOWERS)})")
        self.kind, self.width, self.max_len = kind, width, max_len
        self.embed = nn.Embedding(vocab_size, width, padding_idx=PAD)
        if kind == "conv":
            self.convs = nn.ModuleList(nn.Conv1d(width, width, 3, padding=1) for _ in range(2))
            self.norms = nn.ModuleList(nn.LayerNorm(width) for _ in range(2))
        else:
            self.pos = nn.Parameter(torch.zeros(max_len, width))
            nn.init.normal_(self.pos, std=0.02)
            layer = nn.TransformerEncoderLayer(width, 4, 2 * width, dropout=0.0, batch_first=True, norm_first=True)
            self.encoder = nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)

    def forward(self, tokens: Tensor) -> Tensor:
        tokens = tokens[:, : self.max_len]
        mask = (tokens != PAD).unsqueeze(-1).to(self.embed.weight.dtype)  # B x L x 1
        h = self.embed(tokens)
        if self.kind == "conv":
            for conv, norm in zip(self.convs, self.norms, strict=True):
                # padding reads as zeros (never the norm's learnt bias): extra PAD columns
                # leave every word's features unchanged
                h = h + F.gelu(conv((norm(h) * mask).transpose(1, 2)).transpose(1, 2)) * mask
        else:
            h = self.encoder(h + self.pos[: h.shape[1]], src_key_padding_mask=tokens == PAD)
        return (h * mask).sum(1) / mask.sum(1).clamp(min=1.0)


def _projection(cin: int, dim: int) -> nn.Module:
    return nn.Sequential(nn.Linear(cin, cin), nn.ReLU(), nn.Linear(cin, dim))


class TwoTower(nn.Module):
    """Image tower (``arch``'s backbone) and text tower, each with a projection head to a
    ``dim``-wide shared embedding, and with ``separate`` a second head for the specific part."""

    def __init__(
        self,
        arch: Arch,
        vocab_size: int,
        dim: int = 64,
        separate: bool = False,
        text_tower: str = "conv",
        text_width: int = 64,
        max_len: int = 32,
        init_temperature: float = 0.07,
    ):
        super().__init__()
        self.arch, self.dim, self.separate = arch, dim, separate
        self.image = Network(arch, head="features")
        feat = lower(arch, "features")[-1].cout
        self.text = TextTower(vocab_size, text_width, text_tower, max_len)
        self.image_shared = _projection(feat, dim)
        self.text_shared = _projection(text_width, dim)
        if separate:
            self.image_specific = _projection(feat, dim)
            self.text_specific = _projection(text_width, dim)
        self.log_inv_temperature = nn.Parameter(torch.tensor(math.log(1.0 / init_temperature)))

    @property
    def temperature(self) -> Tensor:
        """The learnt temperature, clamped to >= ``MIN_TEMPERATURE``."""
        return torch.exp(-self.log_inv_temperature.clamp(max=math.log(1.0 / MIN_TEMPERATURE)))

    def encode_image(self, x: Tensor) -> tuple[Tensor, Tensor | None]:
        """(shared, specific or None), not normalised."""
        f = self.image.forward_features(x)
        return self.image_shared(f), (self.image_specific(f) if self.separate else None)

    def encode_text(self, tokens: Tensor) -> tuple[Tensor, Tensor | None]:
        f = self.text(tokens)
        return self.text_shared(f), (self.text_specific(f) if self.separate else None)


# ------------------------------------------------------------------------------ training
def pair_augment() -> AugmentConfig:
    """Image augmentations of two-tower training: milder than single-image contrastive
    learning's (a crop of >= 60% area, 10 degree rotation, light jitter and noise). With
    the single-image defaults (30% crops, strong jitter and noise), InfoNCE against
    captions stalled at log(batch) for over 150 steps on digits pairs (ours: measured)."""
    return AugmentConfig(
        min_scale=0.6, rotation_deg=10.0, shear_deg=5.0, jitter_p=0.5, brightness=0.2, contrast=0.2, noise_std=0.02
    )


@dataclass
class TwoTowerConfig:
    epochs: int = 10
    steps: int | None = None  # exactly this many optimiser steps (replaces epochs)
    batch_size: int = 64
    lr: float = 2e-3
    weight_decay: float = 1e-4
    warmup_fraction: float = 0.05
    init_temperature: float = 0.07
    separation: float = 0.0  # weight of orthogonality + intra-modal NT-Xent on the specific parts
    intra: float = 0.0  # weight of the intra-modal NT-Xent on the shared embeddings
    bridge: float = 0.0
    geometry: float = 0.0
    bridge_sigma2: float = 1.0
    intra_temperature: float = 0.2
    text_tower: str = "conv"
    text_width: int = 64
    embedding_dim: int | None = None  # None: the arch's output.embedding_dim, else 64
    token_drop: float = 0.15  # text views: each word dropped with this probability
    token_swap: float = 0.2  # and one adjacent pair swapped with this probability
    time_budget_s: float | None = None
    seed: int = 0
    augment: AugmentConfig = field(default_factory=pair_augment)
    device: str = "cpu"

    def validate(self) -> TwoTowerConfig:
        resolve_device(self.device)
        if self.text_tower not in TEXT_TOWERS:
            raise NasctlError(f"unknown text tower {self.text_tower!r} (expected one of: {', '.join(TEXT_TOWERS)})")
        checks = [
            ("epochs", self.epochs, self.epochs >= 1, ">= 1"),
            ("steps", self.steps, self.steps is None or self.steps >= 1, ">= 1"),
            ("batch size", self.batch_size, self.batch_size >= 2, ">= 2 (contrastive pairs need negatives)"),
            ("learning rate", self.lr, self.lr > 0, "> 0"),
            ("initial temperature", self.init_temperature, self.init_temperature >= MIN_TEMPERATURE, ">= 0.01"),
            ("bridge sigma^2", self.bridge_sigma2, self.bridge_sigma2 > 0, "> 0"),
            ("time budget", self.time_budget_s, self.time_budget_s is None or self.time_budget_s > 0, "> 0 seconds"),
            ("text width", self.text_width, self.text_width >= 4 and self.text_width % 4 == 0, "a multiple of 4"),
        ]
        checks += [(f"--{r} weight", getattr(self, r), getattr(self, r) >= 0, ">= 0") for r in REGULARISERS]
        for name, value, ok, rule in checks:
            if not ok or (isinstance(value, float) and not math.isfinite(value)):
                raise NasctlError(f"{name} must be {rule} (got {value})")
        return self

    @property
    def regularisers(self) -> dict[str, float]:
        """The regularisers in use, with their weights."""
        return {r: getattr(self, r) for r in REGULARISERS if getattr(self, r) > 0}

    @property
    def variant(self) -> str:
        """``infonce`` or ``infonce+bridge+geometry``, ...: what was trained, for tables."""
        return "+".join(["infonce", *self.regularisers])

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class TwoTowerResult:
    model: TwoTower
    config: TwoTowerConfig
    steps: int
    epochs_done: float
    seconds: float
    stopped_by: str
    loss_per_step: list[float]
    parts_per_step: dict[str, list[float]]  # each loss term's unweighted value per step
    temperature: float


def two_tower_loss(
    model: TwoTower, x: Tensor, tokens: Tensor, cfg: TwoTowerConfig, gen: torch.Generator
) -> tuple[Tensor, dict[str, float]]:
    """The training loss of one batch (images ``x`` and their ``tokens``) and its terms,
    unweighted, for the record. A second view of each modality is made only when a
    regulariser reads it."""
    n, dev = len(x), x.device
    second = cfg.separation > 0 or cfg.intra > 0 or cfg.bridge > 0
    if second:
        x1, x2 = two_views(x, cfg.augment, gen)
        t2 = augment_tokens(tokens.cpu(), gen, cfg.token_drop, cfg.token_swap).to(dev)
        sv, pv = model.encode_image(torch.cat([x1, x2]))
        sw, pw = model.encode_text(torch.cat([tokens, t2]))
    else:
        sv, pv = model.encode_image(augment(x, cfg.augment, gen))
        sw, pw = model.encode_text(tokens)
    parts: dict[str, Tensor] = {"infonce": symmetric_infonce(sv[:n], sw[:n], model.temperature)}
    loss = parts["infonce"]
    if cfg.separation > 0:
        assert pv is not None and pw is not None
        parts["orthogonality"] = 0.5 * (orthogonality(sv, pv) + orthogonality(sw, pw))
        t = cfg.intra_temperature
        parts["specific_intra"] = 0.5 * (nt_xent(pv[:n], pv[n:], t) + nt_xent(pw[:n], pw[n:], t))
        loss = loss + cfg.separation * (parts["orthogonality"] + parts["specific_intra"])
    if cfg.intra > 0:
        t = cfg.intra_temperature
        parts["intra"] = 0.5 * (nt_xent(sv[:n], sv[n:], t) + nt_xent(sw[:n], sw[n:], t))
        loss = loss + cfg.intra * parts["intra"]
    if cfg.bridge > 0:
        tt = torch.rand(n, generator=gen).to(dev)
        v, w = sv[:n], sw[:n]
        parts["bridge"] = 0.5 * (
            bridge_loss(sv[n:], v, w, tt, cfg.bridge_sigma2) + bridge_loss(sw[n:], v, w, tt, cfg.bridge_sigma2)
        )
        loss = loss + cfg.bridge * parts["bridge"]
    if cfg.geometry > 0:
        parts["geometry"] = geometry_loss(sv[:n], sw[:n])
        loss = loss + cfg.geometry * parts["geometry"]
    return loss, {k: float(v.detach()) for k, v in parts.items()}


def build_two_tower(arch: Arch, data: PairedData, cfg: TwoTowerConfig) -> TwoTower:
    torch.manual_seed(cfg.seed)
    return TwoTower(
        arch,
        len(data.vocab),
        dim=cfg.embedding_dim or arch.embedding_dim or 64,
        separate=cfg.separation > 0,
        text_tower=cfg.text_tower,
        text_width=cfg.text_width,
        max_len=max(32, int(data.tokens.shape[1])),
        init_temperature=cfg.init_temperature,
    )


def train_two_tower(
    arch: Arch, data: PairedData, config: TwoTowerConfig, progress: ProgressFn | None = None
) -> TwoTowerResult:
    """Train a two-tower model on ``data``'s train split (no labels are read). AdamW, a
    warm-up then a cosine schedule over the steps (or the time budget, whichever is
    further along)."""
    cfg = config.validate()
    if tuple(data.x.shape[1:]) != (arch.in_channels, arch.resolution, arch.resolution):
        raise NasctlError(
            f"data images are {tuple(data.x.shape[1:])} but the arch takes "
            f"{(arch.in_channels, arch.resolution, arch.resolution)}"
        )
    if cfg.augment.flip is None:
        cfg = replace(cfg, augment=replace(cfg.augment, flip=data.allows_flip))
    gen = torch.Generator().manual_seed(cfg.seed)
    dev = resolve_device(cfg.device)
    model = build_two_tower(arch, data, cfg).to(dev)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    train = torch.from_numpy(data.train)
    bs = min(cfg.batch_size, len(train))
    if bs < 2:
        raise NasctlError(f"the train split has {len(train)} pairs; contrastive training needs at least 2")
    steps_per_epoch = max(1, len(train) // bs)
    total = cfg.steps if cfg.steps is not None else cfg.epochs * steps_per_epoch
    budget = cfg.time_budget_s
    model.train()
    start = time.perf_counter()
    step, stopped_by = 0, "epochs" if cfg.steps is None else "steps"
    per_step: list[float] = []
    parts_per_step: dict[str, list[float]] = {}
    while step < total and stopped_by != "time_budget":
        order = train[torch.randperm(len(train), generator=gen)]
        for b in range(steps_per_epoch):
            if step >= total:
                break
            elapsed = time.perf_counter() - start
            if budget is not None and elapsed >= budget:
                stopped_by = "time_budget"
                break
            for group in opt.param_groups:
                group["lr"] = lr_at(max(step / total, elapsed / budget if budget else 0.0), cfg.lr, cfg.warmup_fraction)
            idx = order[b * bs : (b + 1) * bs]
            loss, parts = two_tower_loss(model, data.x[idx].to(dev), data.tokens[idx].to(dev), cfg, gen)
            if not torch.isfinite(loss):
                raise TrainingDiverged(
                    f"training diverged: the two-tower loss became {float(loss.detach())} at step {step} of {total} "
                    f"(lr {cfg.lr:g}, {cfg.variant}); try a lower --lr or smaller regulariser weights"
                )
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
            per_step.append(float(loss.detach()))
            for k, v in parts.items():
                parts_per_step.setdefault(k, []).append(v)
            if progress is not None:
                el = time.perf_counter() - start
                progress(
                    {
                        "step": step,
                        "total_steps": total,
                        "fraction": max(step / total, el / budget if budget else 0.0),
                        "loss": per_step[-1],
                        "pairs_per_s": step * bs / max(el, 1e-9),
                        "images_per_s": step * bs / max(el, 1e-9),  # one image per pair: as search's live view reads
                        "elapsed_s": el,
                    }
                )
    if step == 0:
        raise NasctlError(f"the time budget ({budget} s) ended before the first training step")
    return TwoTowerResult(
        model=model,
        config=cfg,
        steps=step,
        epochs_done=step / steps_per_epoch,
        seconds=time.perf_counter() - start,
        stopped_by=stopped_by,
        loss_per_step=per_step,
        parts_per_step=parts_per_step,
        temperature=float(model.temperature.detach()),
    )


# ------------------------------------------------------------------------------ evaluation
@torch.no_grad()
def embed_pairs(model: TwoTower, data: PairedData, idx: np.ndarray) -> dict[str, np.ndarray]:
    """Normalised embeddings of items ``idx`` (eval mode, clean inputs): ``image`` and
    ``text`` (the shared parts) and, for probes, ``image_full`` / ``text_full`` ([shared,
    specific] with separation, else the shared part)."""
    was = model.training
    model.eval()
    dev = next(model.parameters()).device
    out: dict[str, list[Tensor]] = {"image": [], "text": [], "image_full": [], "text_full": []}
    ii = torch.from_numpy(idx)
    for b in range(0, len(ii), EVAL_BATCH):
        j = ii[b : b + EVAL_BATCH]
        for name, (s, p) in (
            ("image", model.encode_image(data.x[j].to(dev))),
            ("text", model.encode_text(data.tokens[j].to(dev))),
        ):
            s = F.normalize(s, dim=1)
            out[name].append(s.cpu())
            out[f"{name}_full"].append((torch.cat([s, F.normalize(p, dim=1)], 1) if p is not None else s).cpu())
    model.train(was)
    return {k: torch.cat(v).numpy().astype(np.float64) for k, v in out.items()}


def retrieval(image: np.ndarray, text: np.ndarray, captions: list[str], ks: tuple[int, ...] = (1, 5)) -> dict:
    """Recall@k both ways over one split: a query's hit is any of the top k whose caption
    is identical to the query's own (generated captions repeat, so the item's own is not
    the only right answer)."""
    codes = np.unique(np.asarray(captions), return_inverse=True)[1]
    sim = image @ text.T
    out = {}
    for name, s in (("image_to_text", sim), ("text_to_image", sim.T)):
        order = np.argsort(-s, axis=1, kind="stable")
        same = codes[order] == codes[:, None]
        for k in ks:
            out[f"{name}_r@{k}"] = float(same[:, :k].any(1).mean())
    return out


@torch.no_grad()
def class_prompts(model: TwoTower, data: PairedData) -> np.ndarray | None:
    """One normalised text embedding per class: the mean of its prompts' shared embeddings
    (prompt ensembling), or None when the data has no prompts."""
    pt = data.prompt_tokens()
    if pt is None or data.y is None:
        return None
    tokens, cls = pt
    was = model.training
    model.eval()
    dev = next(model.parameters()).device
    emb = torch.cat(
        [
            F.normalize(model.encode_text(tokens[b : b + 256].to(dev))[0], dim=1).cpu()
            for b in range(0, len(tokens), 256)
        ]
    )
    model.train(was)
    cls_t = torch.as_tensor(np.asarray(cls), dtype=torch.long)
    k = len(data.classes)
    means = torch.zeros(k, emb.shape[1]).index_add_(0, cls_t, emb)
    return F.normalize(means, dim=1).numpy().astype(np.float64)


def zero_shot_accuracy(image: np.ndarray, prompts: np.ndarray, y: np.ndarray) -> float:
    """Each image gets the class whose prompt embedding is the most similar."""
    return float(((image @ prompts.T).argmax(1) == y).mean())


def evaluate_two_tower(model: TwoTower, data: PairedData, probes: bool = True) -> dict:
    """Retrieval on test, zero-shot classification on val and test, and (``probes``) the
    linear probes of the image, text and joint embeddings on the label and on each
    modality-only attribute (fitted on train, scored on test). BatchNorm statistics are
    first recomputed on clean train images."""
    recalibrate_bn(model.image, data.x[torch.from_numpy(data.train[:512])])
    emb = {s: embed_pairs(model, data, getattr(data, s)) for s in ("train", "val", "test")}
    test_captions = [data.captions[i] for i in data.test]
    out: dict = {"retrieval": retrieval(emb["test"]["image"], emb["test"]["text"], test_captions)}
    prompts = class_prompts(model, data)
    if prompts is not None:
        assert data.y is not None
        out["zero_shot_val_accuracy"] = zero_shot_accuracy(emb["val"]["image"], prompts, data.y[data.val])
        out["zero_shot_accuracy"] = zero_shot_accuracy(emb["test"]["image"], prompts, data.y[data.test])
    if probes:
        tasks = {"label": data.y} if data.y is not None else {}
        tasks.update(data.attributes)
        views = {
            "image": lambda e: e["image_full"],
            "text": lambda e: e["text_full"],
            "both": lambda e: np.concatenate([e["image_full"], e["text_full"]], 1),
        }
        out["probe"] = {
            task: {
                view: linear_probe(f(emb["train"]), y[data.train], [f(emb["test"])], [y[data.test]])[0]
                for view, f in views.items()
            }
            for task, y in tasks.items()
        }
    out["temperature"] = float(model.temperature.detach())
    return out


def train_and_evaluate(
    arch: Arch, data: PairedData, config: TwoTowerConfig, progress: ProgressFn | None = None, probes: bool = True
) -> tuple[TwoTowerResult, dict]:
    result = train_two_tower(arch, data, config, progress)
    t = time.perf_counter()
    metrics = evaluate_two_tower(result.model, data, probes)
    metrics.update(
        variant=result.config.variant,
        regularisers=result.config.regularisers,
        steps=result.steps,
        epochs_done=result.epochs_done,
        stopped_by=result.stopped_by,
        train_seconds=result.seconds,
        eval_seconds=time.perf_counter() - t,
        final_loss=float(np.mean(result.loss_per_step[-10:])),
        final_parts={k: float(np.mean(v[-10:])) for k, v in result.parts_per_step.items()},
    )
    return result, metrics


# ------------------------------------------------------------------------------ run folders
class _ImageEmbedding(nn.Module):
    """Images -> normalised shared embedding (what retrieval and zero-shot compare)."""

    def __init__(self, model: TwoTower):
        super().__init__()
        self.image, self.head = model.image, model.image_shared

    def forward(self, x: Tensor) -> Tensor:
        return F.normalize(self.head(self.image.forward_features(x)), dim=1)


def write_two_tower_run(out: str | Path, arch: Arch, data: PairedData, result: TwoTowerResult, metrics: dict) -> dict:
    """Write ``arch.json``, ``model.npz`` (both towers, plain arrays), ``vocab.json``,
    ``image_tower.onnx`` (images in [0, 1] -> normalised shared embedding),
    ``metrics.json`` and ``loss.png``; return the metrics as written."""
    from nasctl.contrastive.pretrain import plot_loss, save_weights
    from nasctl.nn.export import export_module

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    arch.save(out / "arch.json")
    save_weights(result.model, out / "model.npz")
    (out / "vocab.json").write_text(json.dumps(data.vocab) + "\n")
    shape = (1, arch.in_channels, arch.resolution, arch.resolution)
    export_module(
        _ImageEmbedding(result.model).cpu(), shape, out / "image_tower.onnx", doc=f"nasctl two-tower {arch.id}"
    )
    result.model.to(resolve_device(result.config.device))
    plot_loss(result.loss_per_step, out / "loss.png", f"{arch.id} two-tower {result.config.variant}")
    full = {
        **metrics,
        "arch": arch.to_string(),
        "arch_id": arch.id,
        "data": data.summary(),
        "config": result.config.to_dict(),
        "loss_per_step": result.loss_per_step,
        "files": {
            "arch": "arch.json",
            "weights": "model.npz",
            "vocab": "vocab.json",
            "onnx": "image_tower.onnx",
            "loss_plot": "loss.png",
        },
    }
    (out / "metrics.json").write_text(json.dumps(full, indent=2) + "\n")
    return full
