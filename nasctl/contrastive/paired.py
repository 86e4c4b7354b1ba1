"""Paired image-text data for two-tower (CLIP-style) contrastive models.

``PairedData`` holds images (N x C x H x W float32 in [0, 1], fitted to the arch's
resolution and channels), one tokenised caption per image (N x L int64, words left-aligned,
``PAD`` after), the vocabulary, an optional shared label, modality-only attributes and a
deterministic train/val/test split (stratified by the label when there is one).

Sources (``load_paired``):

* ``pairs:digits`` / ``pairs:digits:P``: scikit-learn's 1,797 real 8x8 digits with generated
  captions and a controlled information gap (see ``digits_pairs``); embedded, no download.
* ``FILE.npz`` / ``pairs:FILE.npz``: arrays ``image``, ``text`` (token ids, 0 = padding) and
  ``vocab``; optional ``y``, ``attr_image_<name>`` and ``attr_text_<name>``.
* ``DIR`` / ``pairs:DIR``: images with same-named ``.txt`` captions (``DIR/a.png`` +
  ``DIR/a.txt``), or one subfolder per class (``DIR/cat/a.png`` + ``DIR/cat/a.txt``).
"""

from __future__ import annotations

import string
import zipfile
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from nasctl.contrastive.data import (
    IMAGE_SUFFIXES,
    _labels,
    _load_digits,
    _to_tensor,
    fit_images,
    split_indices,
    subset_splits,
)
from nasctl.errors import NasctlError

__all__ = [
    "COLOUR_WORDS",
    "DIGIT_WORDS",
    "LABEL_TEMPLATES",
    "MARKS",
    "PAD",
    "PLAIN_TEMPLATES",
    "UNK",
    "PairedData",
    "augment_tokens",
    "build_vocab",
    "digits_pairs",
    "draw_marks",
    "encode_captions",
    "load_paired",
    "tokenize",
]

PAD, UNK = 0, 1  # token ids: vocab[PAD] == "<pad>", vocab[UNK] == "<unk>"
PAD_WORD, UNK_WORD = "<pad>", "<unk>"
MIN_PAIRS = 10
SOURCES_HINT = "use 'pairs:digits[:P]', a .npz file with image/text/vocab, or a folder of images with .txt captions"

# ---------------------------------------------------------------------------- the digits grammar
MARKS = ("none", "horizontal", "vertical", "cross")  # image-only attribute ``image_mark``
MARK_LEVEL = 0.7  # marked pixels become max(pixel, MARK_LEVEL): strokes survive, the bar shows
COLOURS = ("red", "green", "blue", "black")  # text-only attribute ``text_colour``
COLOUR_WORDS = (("red", "crimson"), ("green", "emerald"), ("blue", "azure"), ("black", "dark"))
DIGIT_WORDS = tuple((w, str(i)) for i, w in enumerate("zero one two three four five six seven eight nine".split()))
LABEL_TEMPLATES = (  # captions that name the label
    "a {colour} {digit}",
    "{digit} in {colour} ink",
    "the digit {digit} in {colour}",
    "{colour} number {digit}",
)
PLAIN_TEMPLATES = ("a {colour} digit", "something in {colour} ink", "{colour} handwriting")  # label unnamed
SWAP_P = 0.3  # word-order noise: probability of swapping one adjacent pair of words


@dataclass
class PairedData:
    """Image-caption pairs with a shared label, modality-only attributes and a split.

    ``tokens`` rows are left-aligned word ids with ``PAD`` after and at least one word each;
    ``captions[i]`` is the same caption as text (words joined by single spaces).
    ``attributes[name]`` are int64 codes (N,) into ``attribute_classes[name]``, and
    ``attribute_modality[name]`` says which tower alone can see them ("image" or "text").
    ``prompts[c]`` are caption prompts for zero-shot classification of class ``c`` (None when
    none are known).
    """

    name: str
    x: torch.Tensor = field(repr=False)
    tokens: torch.Tensor = field(repr=False)
    captions: list[str] = field(repr=False)
    vocab: list[str] = field(repr=False)
    y: np.ndarray | None = field(repr=False)
    classes: list[str]
    attributes: dict[str, np.ndarray] = field(repr=False)
    attribute_modality: dict[str, str]
    attribute_classes: dict[str, list[str]]
    prompts: list[list[str]] | None = field(repr=False)
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

    @property
    def max_len(self) -> int:
        """Token columns L (the longest caption, or the grammar's longest for digits)."""
        return int(self.tokens.shape[1])

    def subset(self, max_train: int | None = None, max_eval: int | None = None, seed: int = 0) -> PairedData:
        """A smaller copy (first ``max_*`` of each split after a seeded shuffle), for quick runs."""
        train, val, test = subset_splits((self.train, self.val, self.test), max_train, max_eval, seed)
        return replace(self, train=train, val=val, test=test)

    def prompt_tokens(self) -> tuple[torch.Tensor, np.ndarray] | None:
        """All prompts of all classes encoded with this vocabulary (K x L, truncated to L) and
        the class of each row (K,) int64; None when there are no prompts."""
        if self.prompts is None:
            return None
        texts = [p for ps in self.prompts for p in ps]
        owner = np.repeat(np.arange(len(self.prompts), dtype=np.int64), [len(ps) for ps in self.prompts])
        return encode_captions(texts, self.vocab, self.max_len), owner

    def summary(self) -> dict:
        return {
            "name": self.name,
            "items": self.n,
            "shape": list(self.x.shape[1:]),
            "classes": len(self.classes),
            "vocab_size": len(self.vocab),
            "max_caption_length": self.max_len,
            "train": len(self.train),
            "val": len(self.val),
            "test": len(self.test),
            "attributes": sorted(self.attributes),
        }


# ---------------------------------------------------------------------------- text
def tokenize(caption: str) -> list[str]:
    """Lower-case words: split on whitespace, strip punctuation from each word's ends
    (``"Cat,"`` -> ``"cat"``; inner punctuation stays: ``"don't"``, ``"3.5"``). A token made
    only of punctuation (``"-"``, ``"&"``) is kept as it is."""
    return [raw.strip(string.punctuation) or raw for raw in caption.lower().split()]


def build_vocab(captions: list[str], min_count: int = 1) -> list[str]:
    """``<pad>``, ``<unk>``, then the words seen at least ``min_count`` times, by descending
    count, ties alphabetical (deterministic)."""
    counts = Counter(w for c in captions for w in tokenize(c))
    counts.pop(PAD_WORD, None)
    counts.pop(UNK_WORD, None)
    words = sorted((w for w, k in counts.items() if k >= min_count), key=lambda w: (-counts[w], w))
    return [PAD_WORD, UNK_WORD, *words]


def encode_captions(captions: list[str], vocab: list[str], max_len: int | None = None) -> torch.Tensor:
    """N x L int64 word ids (unknown words -> ``UNK``), left-aligned, ``PAD`` after; L is
    ``max_len`` (longer captions are truncated) or else the longest caption (at least 1)."""
    index: dict[str, int] = {}
    for i, w in enumerate(vocab):
        index.setdefault(w, i)
    rows = [[index.get(w, UNK) for w in tokenize(c)] for c in captions]
    if max_len is not None and max_len < 1:
        raise ValueError(f"max_len must be >= 1 (got {max_len})")
    length = max_len if max_len is not None else max([1, *(len(r) for r in rows)])
    out = np.full((len(rows), length), PAD, dtype=np.int64)
    for i, r in enumerate(rows):
        r = r[:length]
        out[i, : len(r)] = r
    return torch.from_numpy(out)


def pack_left(tokens: np.ndarray) -> np.ndarray:
    """Move each row's words to the front (order kept), ``PAD`` after; drop all-PAD columns
    at the end (at least one column stays)."""
    order = np.argsort(tokens == PAD, axis=1, kind="stable")
    packed = np.take_along_axis(tokens, order, axis=1)
    width = max(1, int((packed != PAD).sum(axis=1).max(initial=0)))
    return np.ascontiguousarray(packed[:, :width])


def augment_tokens(
    tokens: torch.Tensor, gen: torch.Generator, drop_p: float = 0.15, swap_p: float = 0.2
) -> torch.Tensor:
    """A random text view of each row of ``tokens`` (N x L word ids, ``PAD`` = 0).

    Each word is dropped with probability ``drop_p`` (a row with words always keeps at least
    one: a random one when all were dropped); the kept words are re-packed to the front in
    their order; then with probability ``swap_p`` one random adjacent pair of the kept words is
    swapped. Same shape; rows without words stay empty. Every draw comes from ``gen`` (a CPU
    generator, a fixed number of draws per call), so a seed fixes the view.
    """
    if not (0.0 <= drop_p < 1.0 and 0.0 <= swap_p <= 1.0):
        raise ValueError(f"drop_p must be in [0, 1) and swap_p in [0, 1] (got {drop_p}, {swap_p})")
    n, length = tokens.shape
    dev = tokens.device
    u_drop = torch.rand(n, length, generator=gen).to(dev)
    u_pick = torch.rand(n, length, generator=gen).to(dev)
    u_swap = torch.rand(n, generator=gen).to(dev)
    u_pos = torch.rand(n, generator=gen).to(dev)
    if n == 0 or length == 0:
        return tokens.clone()
    valid = tokens != PAD
    keep = valid & (u_drop >= drop_p)
    rescue = valid.any(dim=1) & ~keep.any(dim=1)
    pick = torch.where(valid, u_pick, -1.0).argmax(dim=1)
    keep[rescue, pick[rescue]] = True
    order = torch.sort((~keep).to(torch.int64), dim=1, stable=True).indices
    count = keep.sum(dim=1)
    pos = torch.arange(length, device=dev).expand(n, length)
    packed = torch.where(pos < count[:, None], torch.gather(tokens, 1, order), PAD)
    swap = (u_swap < swap_p) & (count >= 2)
    rows = swap.nonzero().squeeze(1)
    j = (u_pos[rows] * (count[rows] - 1)).long()  # first of the pair, in [0, count - 2]
    idx = pos.clone()
    idx[rows, j] = j + 1
    idx[rows, j + 1] = j
    return torch.gather(packed, 1, idx)


# ---------------------------------------------------------------------------- digits pairs
def draw_marks(images: np.ndarray, marks: np.ndarray) -> np.ndarray:
    """A copy of ``images`` (N x H x W in [0, 1]) with a two-pixel bar through the centre:
    mark 1 horizontal (the two middle rows), 2 vertical (the two middle columns), 3 both, 0
    none. Bar pixels become max(pixel, ``MARK_LEVEL``), so strokes under it stay bright."""
    out = images.astype(np.float32, copy=True)
    h, w = out.shape[1:3]
    rows, cols = slice(h // 2 - 1, h // 2 + 1), slice(w // 2 - 1, w // 2 + 1)
    horizontal = (marks == 1) | (marks == 3)
    vertical = (marks == 2) | (marks == 3)
    out[horizontal, rows, :] = np.maximum(out[horizontal, rows, :], MARK_LEVEL)
    out[vertical, :, cols] = np.maximum(out[vertical, :, cols], MARK_LEVEL)
    return out


def _swap_adjacent(words: list[str], at: float) -> list[str]:
    """``words`` with the pair starting at ``floor(at * (len - 1))`` swapped (``at`` in [0, 1))."""
    if len(words) < 2:
        return words
    j = int(at * (len(words) - 1))
    return [*words[:j], words[j + 1], words[j], *words[j + 2 :]]


def digits_prompts() -> list[list[str]]:
    """Per digit class: every label template x both digit words x every colour word (so the
    prompts are colour-neutral on average)."""
    colours = [w for pair in COLOUR_WORDS for w in pair]
    return [
        [t.format(colour=c, digit=d) for t in LABEL_TEMPLATES for d in DIGIT_WORDS[k] for c in colours]
        for k in range(len(DIGIT_WORDS))
    ]


def digits_vocab() -> list[str]:
    """The vocabulary of the whole digits grammar (every sentence it can make, in word
    counts), the same for every p and seed, so digit words exist even when p = 0."""
    colours = [w for pair in COLOUR_WORDS for w in pair]
    plain = [t.format(colour=c) for t in PLAIN_TEMPLATES for c in colours]
    return build_vocab([p for ps in digits_prompts() for p in ps] + plain)


def digits_pairs(p: float = 0.5, seed: int = 0) -> dict:
    """The raw digits pairs: 1,797 real 8x8 digits, each with a caption, and a controlled
    information gap between the two modalities.

    * ``image_mark`` (image only): a centre bar, none/horizontal/vertical/cross, uniform and
      independent of the label; captions never mention it.
    * ``text_colour`` (text only): red/green/blue/black, uniform and independent; the caption
      always says it (or its synonym: crimson, emerald, azure, dark); the image never shows it.
    * the label (shared): named in the caption with probability ``p``, as its word or numeral
      ("seven" / "7") in one of ``LABEL_TEMPLATES``; otherwise one of ``PLAIN_TEMPLATES``.
      Then, with probability 0.3, one random adjacent pair of words is swapped.

    Draws come from ``np.random.default_rng(seed)`` in a fixed order that does not depend on
    ``p``, so two values of p share marks, colours and templates, and the items that name
    their label at a smaller p also name it at a larger one.

    Returns a dict: ``image`` (N x 8 x 8 float32 in [0, 1], marked), ``y`` (N,) int64,
    ``classes``, ``captions``, ``mentioned`` (N,) bool, ``attributes``,
    ``attribute_modality``, ``attribute_classes`` and ``prompts``.
    """
    try:
        ok = 0.0 <= float(p) <= 1.0  # NaN fails too
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise NasctlError(f"pairs:digits: p must be a number in [0, 1] (got {p!r})")
    images, y, classes = _load_digits()
    n = len(y)
    rng = np.random.default_rng(seed)
    mark = rng.integers(0, len(MARKS), n)
    colour = rng.integers(0, len(COLOURS), n)
    colour_syn = rng.integers(0, 2, n)
    mentioned = rng.random(n) < p
    label_tpl = rng.integers(0, len(LABEL_TEMPLATES), n)
    plain_tpl = rng.integers(0, len(PLAIN_TEMPLATES), n)
    digit_syn = rng.integers(0, 2, n)
    swap = rng.random(n) < SWAP_P
    swap_at = rng.random(n)
    captions = []
    for i in range(n):
        c = COLOUR_WORDS[colour[i]][colour_syn[i]]
        if mentioned[i]:
            text = LABEL_TEMPLATES[label_tpl[i]].format(colour=c, digit=DIGIT_WORDS[y[i]][digit_syn[i]])
        else:
            text = PLAIN_TEMPLATES[plain_tpl[i]].format(colour=c)
        words = text.split()
        captions.append(" ".join(_swap_adjacent(words, swap_at[i]) if swap[i] else words))
    return {
        "image": draw_marks(images, mark),
        "y": y,
        "classes": classes,
        "captions": captions,
        "mentioned": mentioned,
        "attributes": {"image_mark": mark.astype(np.int64), "text_colour": colour.astype(np.int64)},
        "attribute_modality": {"image_mark": "image", "text_colour": "text"},
        "attribute_classes": {"image_mark": list(MARKS), "text_colour": list(COLOURS)},
        "prompts": digits_prompts(),
    }


def _parse_p(source: str) -> float:
    """``pairs:digits`` -> 0.5, ``pairs:digits:P`` -> P (a number in [0, 1])."""
    rest = source[len("pairs:digits") :]
    if not rest:
        return 0.5
    try:
        p = float(rest[1:])
    except ValueError:
        raise NasctlError(f"{source}: p must be a number in [0, 1] (got {rest[1:]!r})") from None
    if not 0.0 <= p <= 1.0:
        raise NasctlError(f"{source}: p must be a number in [0, 1] (got {rest[1:]})")
    return p


def _digits_data(source: str, resolution: int, channels: int, seed: int) -> PairedData:
    p = _parse_p(source)
    raw = digits_pairs(p, seed)
    vocab = digits_vocab()
    longest = max(len(t.split()) for t in LABEL_TEMPLATES + PLAIN_TEMPLATES)
    tr, va, te = split_indices(len(raw["y"]), raw["y"], seed)
    return PairedData(
        name=f"digits-pairs-p{p:g}",
        x=fit_images(_to_tensor(raw["image"], source), resolution, channels),
        tokens=encode_captions(raw["captions"], vocab, longest),
        captions=raw["captions"],
        vocab=vocab,
        y=raw["y"],
        classes=raw["classes"],
        attributes=raw["attributes"],
        attribute_modality=raw["attribute_modality"],
        attribute_classes=raw["attribute_classes"],
        prompts=raw["prompts"],
        train=tr,
        val=va,
        test=te,
        allows_flip=False,
    )


# ---------------------------------------------------------------------------- user data
def _attribute(values: np.ndarray, key: str, n: int, source: str) -> tuple[np.ndarray, list[str]]:
    """(N,) integer or string codes -> int64 codes 0..K-1 and the K class names."""
    values = np.asarray(values)
    if values.ndim != 1 or len(values) != n:
        raise NasctlError(f"{source}: {key} has shape {tuple(values.shape)}, expected ({n},) like image")
    if values.dtype.kind not in "biuU":
        raise NasctlError(f"{source}: {key} must hold integers or strings (got {values.dtype})")
    names, codes = np.unique(values, return_inverse=True)
    if len(names) < 2:
        raise NasctlError(f"{source}: {key} needs at least 2 classes (got {len(names)})")
    return codes.astype(np.int64), [str(c) for c in names]


def _class_prompts(classes: list[str], vocab: list[str]) -> list[list[str]] | None:
    """[[class name]] per class when every class name is made of vocabulary words, else None."""
    known = set(vocab[2:])
    words = [tokenize(c) for c in classes]
    if not classes or not all(w and set(w) <= known for w in words):
        return None
    return [[" ".join(w)] for w in words]


def _read_npz(path: Path) -> dict[str, np.ndarray]:
    """Every array of ``path`` (no pickles), or one clear error."""
    if not zipfile.is_zipfile(path):
        raise NasctlError(f"{path}: not a readable .npz file (not a zip archive)")
    out: dict[str, np.ndarray] = {}
    try:
        with np.load(path, allow_pickle=False) as f:
            for key in f.files:
                try:
                    out[key] = f[key]
                except ValueError as exc:
                    hint = "; save words as a unicode array, np.array(words, dtype=str)" if key == "vocab" else ""
                    reason = str(exc).splitlines()[0] if str(exc) else "parse error"
                    raise NasctlError(f"{path}: cannot read array '{key}' ({reason}){hint}") from None
    except NasctlError:
        raise
    except Exception as exc:
        raise NasctlError(f"{path}: not a readable .npz file ({str(exc).splitlines()[0] or 'parse error'})") from None
    return out


def _npz_vocab(vocab: np.ndarray, path: Path) -> list[str]:
    if vocab.ndim != 1 or vocab.dtype.kind not in "US":
        raise NasctlError(f"{path}: vocab must be a 1-D array of strings (got {vocab.dtype}, shape {vocab.shape})")
    words = [w.decode("utf-8", "replace") if isinstance(w, bytes) else str(w) for w in vocab.tolist()]
    if len(words) < 2:
        raise NasctlError(f"{path}: vocab has {len(words)} entries; it needs padding (index 0) and at least one word")
    return words


def _npz_tokens(text: np.ndarray, n_vocab: int, path: Path) -> np.ndarray:
    """Validated, left-packed N x L int64 ids into the file's vocab."""
    if text.ndim != 2 or text.dtype.kind not in "iu":
        raise NasctlError(f"{path}: text must be an N x L array of integer token ids (got {text.dtype}, {text.shape})")
    if text.size and text.min() < 0:
        row = int(np.argwhere(text < 0)[0, 0])
        raise NasctlError(f"{path}: text row {row} has a negative token id ({int(text[row].min())})")
    if text.size and text.max() >= n_vocab:
        row = int(np.argwhere(text >= n_vocab)[0, 0])
        bad = int(text[row].max())
        raise NasctlError(
            f"{path}: text row {row} has token id {bad}, out of range for a vocab of {n_vocab} (ids 0..{n_vocab - 1})"
        )
    empty = np.flatnonzero((text != PAD).sum(axis=1) == 0) if text.shape[1] else np.arange(len(text))
    if len(empty):
        raise NasctlError(f"{path}: text row {int(empty[0])} is an empty caption (no tokens); every item needs one")
    return pack_left(text.astype(np.int64))


def _load_npz_pairs(path: Path, resolution: int, channels: int, seed: int) -> PairedData:
    arrays = _read_npz(path)
    missing = [k for k in ("image", "text", "vocab") if k not in arrays]
    if missing:
        found = ", ".join(sorted(arrays)) or "none"
        raise NasctlError(f"{path}: no array named {', '.join(map(repr, missing))} (found: {found})")
    x = _to_tensor(arrays["image"], str(path))
    n = int(x.shape[0])
    if len(arrays["text"]) != n:
        raise NasctlError(f"{path}: image has {n} items but text has {len(arrays['text'])} rows")
    words = _npz_vocab(arrays["vocab"], path)
    ids = _npz_tokens(arrays["text"], len(words), path)
    # Our convention: vocab[0] == "<pad>", vocab[1] == "<unk>"; insert "<unk>" when the file has none.
    if words[1] == UNK_WORD:
        vocab = [PAD_WORD, *words[1:]]
    else:
        vocab = [PAD_WORD, UNK_WORD, *words[1:]]
        ids = np.where(ids != PAD, ids + 1, PAD)
    captions = [" ".join(vocab[i] for i in row if i != PAD) for row in ids.tolist()]
    y, classes = _labels(arrays["y"], n, str(path)) if "y" in arrays else (None, [])
    attributes, modality, attr_classes = {}, {}, {}
    for key in sorted(arrays):
        for kind in ("image", "text"):
            prefix = f"attr_{kind}_"
            if key.startswith(prefix) and len(key) > len(prefix):
                name = f"{kind}_{key[len(prefix) :]}"
                attributes[name], attr_classes[name] = _attribute(arrays[key], key, n, str(path))
                modality[name] = kind
    return _finish(
        path, x, ids, captions, vocab, y, classes, (attributes, modality, attr_classes), resolution, channels, seed
    )


def _read_caption(image: Path) -> str:
    """The caption of ``image`` (its same-named ``.txt``) as normalised words, or one clear error."""
    txt = image.with_suffix(".txt")
    if not txt.is_file():
        raise NasctlError(f"{image}: no caption file (expected {txt.name} beside it)")
    try:
        words = tokenize(txt.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise NasctlError(f"{txt}: unreadable caption file ({str(exc).splitlines()[0]})") from None
    if not words:
        raise NasctlError(f"{txt}: empty caption (no words); every image needs one")
    return " ".join(words)


def _read_image(f: Path, resolution: int, mode: str) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(f) as im:
            return np.asarray(im.convert(mode).resize((resolution, resolution), Image.Resampling.BILINEAR))
    except (UnidentifiedImageError, OSError) as exc:
        raise NasctlError(f"{f}: unreadable image ({str(exc).splitlines()[0]})") from None


def _images_in(folder: Path) -> list[Path]:
    return sorted(f for f in folder.iterdir() if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES)


def _load_folder_pairs(path: Path, resolution: int, channels: int, seed: int) -> PairedData:
    flat = _images_in(path)
    class_dirs = sorted(d for d in path.iterdir() if d.is_dir() and _images_in(d))
    if flat and class_dirs:
        raise NasctlError(
            f"{path}: has both images and class subfolders ({class_dirs[0].name}/); use one layout or the other"
        )
    if not flat and not class_dirs:
        raise NasctlError(f"{path}: no images (expected DIR/NAME.png with DIR/NAME.txt, or one subfolder per class)")
    if class_dirs and len(class_dirs) < 2:
        raise NasctlError(f"{path}: only one class folder ({class_dirs[0].name}); labels need at least 2")
    groups = [flat] if flat else [_images_in(d) for d in class_dirs]
    files = [f for g in groups for f in g]
    captions = [_read_caption(f) for f in files]  # every caption checked before any image is decoded
    mode = "L" if channels == 1 else "RGB"
    x = _to_tensor(np.stack([_read_image(f, resolution, mode) for f in files]), str(path))
    y = None if flat else np.repeat(np.arange(len(groups)), [len(g) for g in groups])
    classes = [d.name for d in class_dirs]
    vocab = build_vocab(captions)
    ids = encode_captions(captions, vocab).numpy()
    return _finish(path, x, ids, captions, vocab, y, classes, ({}, {}, {}), resolution, channels, seed)


def _finish(
    path: Path,
    x: torch.Tensor,
    ids: np.ndarray,
    captions: list[str],
    vocab: list[str],
    y: np.ndarray | None,
    classes: list[str],
    attrs: tuple[dict, dict, dict],
    resolution: int,
    channels: int,
    seed: int,
) -> PairedData:
    """Check the size, fit the images, split, and assemble."""
    n = int(x.shape[0])
    if n < MIN_PAIRS:
        raise NasctlError(f"{path}: {n} pairs are too few to split into train/val/test (need at least {MIN_PAIRS})")
    y = None if y is None else np.asarray(y, dtype=np.int64)
    tr, va, te = split_indices(n, y, seed)
    return PairedData(
        name=path.name,
        x=fit_images(x, resolution, channels),
        tokens=torch.from_numpy(np.ascontiguousarray(ids, dtype=np.int64)),
        captions=captions,
        vocab=vocab,
        y=y,
        classes=classes,
        attributes=attrs[0],
        attribute_modality=attrs[1],
        attribute_classes=attrs[2],
        prompts=_class_prompts(classes, vocab) if y is not None else None,
        train=tr,
        val=va,
        test=te,
        allows_flip=True,
    )


def load_paired(source: str | Path, resolution: int, channels: int = 3, seed: int = 0) -> PairedData:
    """Image-text pairs from ``pairs:digits[:P]``, a ``.npz`` file or a folder of images with
    ``.txt`` captions (each optionally written ``pairs:PATH``), images fitted to the arch's
    input; the split is ``split_indices(n, y, seed)``. Bad input raises one-line ``NasctlError``."""
    source_s = str(source)
    if source_s == "pairs:digits" or source_s.startswith("pairs:digits:"):
        return _digits_data(source_s, resolution, channels, seed)
    path = Path(source_s[len("pairs:") :] if source_s.startswith("pairs:") else source_s)
    if not path.exists():
        raise NasctlError(f"{path}: no such file or folder ({SOURCES_HINT})")
    if path.is_dir():
        return _load_folder_pairs(path, resolution, channels, seed)
    if path.suffix.lower() == ".npz":
        return _load_npz_pairs(path, resolution, channels, seed)
    raise NasctlError(f"{path}: unsupported paired-data source ({SOURCES_HINT})")
