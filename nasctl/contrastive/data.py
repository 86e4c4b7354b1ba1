"""Datasets for contrastive pretraining and the linear probe.

Three sources, one shape: ``ImageData`` holds float32 images N x C x H x W in [0, 1] at the
arch's resolution and channel count, optional integer labels, and a deterministic
stratified train/val/test split.

* ``digits``: scikit-learn's ``load_digits`` (1,797 real 8x8 handwritten digits), embedded
  and the default; no download.
* ``FILE.npz``: ``x`` (N x H x W or N x H x W x C, uint8 0-255 or float 0-1) and, optionally,
  ``y`` (N integer labels).
* ``DIR/``: an image folder, one subfolder per class (``DIR/cat/001.png``).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from nasctl.errors import NasctlError

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm"}
SPLIT_FRACTIONS = (0.7, 0.15, 0.15)  # train, val, test


@dataclass
class ImageData:
    """Images (N x C x H x W float32 in [0, 1]), labels (N, or None) and a split."""

    name: str
    x: torch.Tensor
    y: np.ndarray | None
    classes: list[str]
    train: np.ndarray = field(repr=False)
    val: np.ndarray = field(repr=False)
    test: np.ndarray = field(repr=False)
    allows_flip: bool = True

    @property
    def n(self) -> int:
        return int(self.x.shape[0])

    @property
    def labelled(self) -> bool:
        return self.y is not None

    def subset(self, max_train: int | None = None, max_eval: int | None = None, seed: int = 0) -> ImageData:
        """A smaller copy (first ``max_*`` of each split after a seeded shuffle), for quick runs."""
        train, val, test = subset_splits((self.train, self.val, self.test), max_train, max_eval, seed)
        return replace(self, train=train, val=val, test=test)

    def summary(self) -> dict:
        return {
            "name": self.name,
            "images": self.n,
            "shape": list(self.x.shape[1:]),
            "classes": len(self.classes),
            "train": len(self.train),
            "val": len(self.val),
            "test": len(self.test),
        }


def subset_splits(
    splits: tuple[np.ndarray, np.ndarray, np.ndarray], max_train: int | None, max_eval: int | None, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(train, val, test) index arrays cut to at most ``max_train`` / ``max_eval`` / ``max_eval``
    (a seeded shuffle, then sorted); None keeps a split whole."""
    rng = np.random.default_rng(seed)

    def cut(idx: np.ndarray, k: int | None) -> np.ndarray:
        return idx if k is None or k >= len(idx) else np.sort(rng.permutation(idx)[:k])

    train, val, test = splits
    return cut(train, max_train), cut(val, max_eval), cut(test, max_eval)


def split_indices(
    n: int, y: np.ndarray | None, seed: int = 0, fractions: tuple[float, float, float] = SPLIT_FRACTIONS
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Deterministic train/val/test indices; stratified by class when there are labels."""
    rng = np.random.default_rng(seed)
    groups = [np.arange(n)] if y is None else [np.flatnonzero(y == c) for c in np.unique(y)]
    parts: list[list[np.ndarray]] = [[], [], []]
    for idx in groups:
        idx = rng.permutation(idx)
        n_val = int(round(len(idx) * fractions[1]))
        n_test = int(round(len(idx) * fractions[2]))
        n_train = len(idx) - n_val - n_test
        parts[0].append(idx[:n_train])
        parts[1].append(idx[n_train : n_train + n_val])
        parts[2].append(idx[n_train + n_val :])
    return tuple(np.sort(np.concatenate(p)).astype(np.int64) for p in parts)  # type: ignore[return-value]


def _to_tensor(x: np.ndarray, source: str) -> torch.Tensor:
    """N x H x W [x C] uint8/float -> N x C x H x W float32 in [0, 1]."""
    if x.ndim == 3:
        x = x[..., None]
    if x.ndim != 4 or x.shape[-1] not in (1, 3, 4):
        raise NasctlError(
            f"{source}: images must be N x H x W or N x H x W x C with C in 1, 3, 4 (got shape {tuple(x.shape)})"
        )
    if x.shape[0] == 0:
        raise NasctlError(f"{source}: no images")
    if np.issubdtype(x.dtype, np.integer):
        x = x.astype(np.float32) / 255.0
    elif np.issubdtype(x.dtype, np.floating):
        x = x.astype(np.float32)
        if not np.isfinite(x).all():
            raise NasctlError(f"{source}: images contain NaN or infinite values")
        hi = float(x.max())
        if hi > 1.0 + 1e-6:  # floats on a 0-255 scale
            x = x / 255.0 if hi <= 255.0 else x / hi
    else:
        raise NasctlError(f"{source}: images must be integers or floats (got {x.dtype})")
    t = torch.from_numpy(np.ascontiguousarray(x[..., :3] if x.shape[-1] == 4 else x)).permute(0, 3, 1, 2)
    return t.contiguous()


def fit_images(x: torch.Tensor, resolution: int, channels: int) -> torch.Tensor:
    """Resize to ``resolution`` (bilinear, antialiased when shrinking) and match ``channels``
    (grey replicated to RGB, RGB averaged to grey)."""
    if x.shape[1] != channels:
        if x.shape[1] == 1:
            x = x.expand(-1, channels, -1, -1)
        elif channels == 1:
            x = x.mean(dim=1, keepdim=True)
        else:
            raise NasctlError(f"cannot map {x.shape[1]}-channel images to the arch's {channels} channels")
    if x.shape[-2:] != (resolution, resolution):
        shrink = min(x.shape[-2:]) > resolution
        x = F.interpolate(x, size=(resolution, resolution), mode="bilinear", align_corners=False, antialias=shrink)
    return x.clamp(0.0, 1.0).contiguous()


def _labels(y: np.ndarray, n: int, source: str) -> tuple[np.ndarray, list[str]]:
    y = np.asarray(y).reshape(-1)
    if len(y) != n:
        raise NasctlError(f"{source}: y has {len(y)} labels for {n} images")
    if y.dtype.kind == "f" and not np.isfinite(y).all():
        raise NasctlError(f"{source}: y contains NaN or infinite values")
    names, codes = np.unique(y, return_inverse=True)
    if len(names) < 2:
        raise NasctlError(f"{source}: y needs at least 2 classes (got {len(names)})")
    return codes.astype(np.int64), [str(c) for c in names]


def _load_digits() -> tuple[np.ndarray, np.ndarray, list[str]]:
    from sklearn.datasets import load_digits

    d = load_digits()
    x = (d.images / 16.0).astype(np.float32)  # 8x8, 0..16 -> 0..1
    return x, d.target.astype(np.int64), [str(c) for c in d.target_names]


def _load_npz(path: Path) -> tuple[np.ndarray, np.ndarray | None]:
    import zipfile

    if not zipfile.is_zipfile(path):
        raise NasctlError(f"{path}: not a readable .npz file (not a zip archive)")
    try:
        with np.load(path, allow_pickle=False) as f:
            if "x" not in f.files:
                raise NasctlError(f"{path}: no array named 'x' (found: {', '.join(f.files) or 'none'})")
            return f["x"], (f["y"] if "y" in f.files else None)
    except NasctlError:
        raise
    except Exception as exc:
        raise NasctlError(f"{path}: not a readable .npz file ({str(exc).splitlines()[0] or 'parse error'})") from None


def _load_folder(path: Path, resolution: int, channels: int) -> tuple[torch.Tensor, np.ndarray, list[str]]:
    from PIL import Image, UnidentifiedImageError

    classes = sorted(
        d.name
        for d in path.iterdir()
        if d.is_dir() and any(f.suffix.lower() in IMAGE_SUFFIXES for f in d.iterdir() if f.is_file())
    )
    if not classes:
        raise NasctlError(f"{path}: no classes (expected one subfolder of images per class)")
    if len(classes) < 2:
        raise NasctlError(f"{path}: only one class folder ({classes[0]}); a probe needs at least 2")
    images, labels = [], []
    mode = "L" if channels == 1 else "RGB"
    for ci, c in enumerate(classes):
        for f in sorted((path / c).iterdir()):
            if not f.is_file() or f.suffix.lower() not in IMAGE_SUFFIXES:
                continue
            try:
                with Image.open(f) as im:
                    im = im.convert(mode).resize((resolution, resolution), Image.Resampling.BILINEAR)
                    images.append(np.asarray(im, dtype=np.uint8))
            except (UnidentifiedImageError, OSError) as exc:
                raise NasctlError(f"{f}: unreadable image ({str(exc).splitlines()[0]})") from None
            labels.append(ci)
    return _to_tensor(np.stack(images), str(path)), np.array(labels, dtype=np.int64), classes


def load_data(source: str | Path, resolution: int, channels: int = 3, seed: int = 0) -> ImageData:
    """``digits``, a ``.npz`` file or an image folder, fitted to the arch's input."""
    source_s = str(source)
    if source_s == "digits":
        x_np, y, classes = _load_digits()
        x = fit_images(_to_tensor(x_np, "digits"), resolution, channels)
        tr, va, te = split_indices(len(y), y, seed)
        return ImageData("digits", x, y, classes, tr, va, te, allows_flip=False)
    path = Path(source)
    if not path.exists():
        raise NasctlError(f"{path}: no such file or folder (use 'digits', a .npz file or an image folder)")
    if path.is_dir():
        x, y, classes = _load_folder(path, resolution, channels)
        x = fit_images(x, resolution, channels)
    elif path.suffix.lower() == ".npz":
        x_np, y_raw = _load_npz(path)
        x = fit_images(_to_tensor(x_np, str(path)), resolution, channels)
        y, classes = _labels(y_raw, x.shape[0], str(path)) if y_raw is not None else (None, [])
    else:
        raise NasctlError(f"{path}: unsupported data file (use 'digits', a .npz file or an image folder)")
    if x.shape[0] < 10:
        raise NasctlError(f"{path}: {x.shape[0]} images are too few to split into train/val/test")
    tr, va, te = split_indices(x.shape[0], y, seed)
    return ImageData(path.name, x, y, classes, tr, va, te, allows_flip=True)
