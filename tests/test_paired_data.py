"""Paired image-text data (nasctl.contrastive.paired): the digits pairs' controlled information
gap, .npz and folder round trips, one-line errors for bad input, and the text augmentation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from nasctl.contrastive.data import _load_digits
from nasctl.contrastive.paired import (
    COLOUR_WORDS,
    DIGIT_WORDS,
    MARKS,
    PAD,
    PLAIN_TEMPLATES,
    UNK,
    augment_tokens,
    build_vocab,
    digits_pairs,
    encode_captions,
    load_paired,
    tokenize,
)
from nasctl.errors import NasctlError

ALL_DIGIT_WORDS = {w for pair in DIGIT_WORDS for w in pair}


@pytest.fixture(scope="module")
def raw() -> dict:
    return digits_pairs(0.5, seed=0)


@pytest.fixture(scope="module")
def pairs():
    return load_paired("pairs:digits", resolution=16, channels=3, seed=0)


def _left_aligned(tokens: torch.Tensor) -> bool:
    """Every row: words first, then only PAD, and at least one word."""
    words = tokens != PAD
    count = words.sum(dim=1)
    pos = torch.arange(tokens.shape[1]).expand_as(tokens)
    return bool((words == (pos < count[:, None])).all()) and bool((count >= 1).all())


def _decode(row: torch.Tensor, vocab: list[str]) -> str:
    return " ".join(vocab[i] for i in row.tolist() if i != PAD)


# ---------------------------------------------------------------------------- text helpers
def test_tokenize_build_vocab_and_encode():
    assert tokenize("  A Cat, sleeping - 'quietly'!\n3.5 don't ") == [
        "a",
        "cat",
        "sleeping",
        "-",
        "quietly",
        "3.5",
        "don't",
    ]
    vocab = build_vocab(["b a c", "a b", "a d", "<pad> <unk>"])
    assert vocab[:2] == ["<pad>", "<unk>"]
    assert vocab[2:] == ["a", "b", "c", "d", "pad", "unk"]  # a: 3, b: 2, then ties alphabetical
    assert build_vocab(["b a c", "a b", "a d"], min_count=2) == ["<pad>", "<unk>", "a", "b"]
    t = encode_captions(["a b", "zebra a c d", "B"], vocab)
    assert t.dtype == torch.int64 and t.tolist() == [[2, 3, 0, 0], [UNK, 2, 4, 5], [3, 0, 0, 0]]
    assert encode_captions(["a b c d"], vocab, max_len=2).tolist() == [[2, 3]]
    assert encode_captions(["a"], vocab, max_len=3).tolist() == [[2, 0, 0]]


# ---------------------------------------------------------------------------- digits pairs
def test_digits_pairs_shapes_split_and_captions(pairs):
    d = pairs
    assert d.name == "digits-pairs-p0.5" and not d.allows_flip and d.labelled
    assert d.x.shape == (1797, 3, 16, 16) and d.x.dtype == torch.float32
    assert 0.0 <= float(d.x.min()) and float(d.x.max()) <= 1.0
    assert d.tokens.shape == (1797, 5) and d.tokens.dtype == torch.int64 and _left_aligned(d.tokens)
    assert d.vocab[:2] == ["<pad>", "<unk>"] and not (d.tokens == UNK).any()
    assert all(_decode(row, d.vocab) == c for row, c in zip(d.tokens, d.captions, strict=True))
    parts = [set(d.train), set(d.val), set(d.test)]
    assert sum(map(len, parts)) == 1797 and len(set.union(*parts)) == 1797
    assert np.bincount(d.y[d.test], minlength=10).min() >= 20  # stratified
    assert d.attribute_modality == {"image_mark": "image", "text_colour": "text"}
    assert d.attribute_classes["image_mark"] == list(MARKS)
    s = d.summary()
    assert s["items"] == 1797 and s["vocab_size"] == len(d.vocab) and s["max_caption_length"] == 5
    assert s["attributes"] == ["image_mark", "text_colour"] and s["classes"] == 10
    small = d.subset(max_train=100, max_eval=30, seed=1)
    assert (len(small.train), len(small.val), len(small.test)) == (100, 30, 30)
    assert set(small.train) <= parts[0] and set(small.test) <= parts[2] and small.x is d.x
    assert len(d.train) == 1259  # the original is untouched


@pytest.mark.parametrize("p", [0.0, 0.5, 1.0])
def test_label_is_mentioned_with_probability_p(p):
    r = digits_pairs(p, seed=0)
    said = [set(c.split()) & ALL_DIGIT_WORDS for c in r["captions"]]
    mentioned = np.array([bool(s) for s in said])
    assert np.array_equal(mentioned, r["mentioned"])
    if p in (0.0, 1.0):
        assert mentioned.all() == (p == 1.0) and mentioned.any() == (p == 1.0)
    else:
        assert abs(mentioned.mean() - p) < 0.05
    for s, label in zip(said, r["y"], strict=True):  # a mention is always the true label, once
        assert not s or (len(s) == 1 and s <= set(DIGIT_WORDS[label]))
    assert load_paired(f"pairs:digits:{p}", 8, 1).name == f"digits-pairs-p{p:g}"


def test_colour_always_said_and_attributes_balanced_and_independent(raw):
    colour, mark, y = raw["attributes"]["text_colour"], raw["attributes"]["image_mark"], raw["y"]
    for c, k in zip(raw["captions"], colour, strict=True):
        words = c.split()
        assert sum(w in COLOUR_WORDS[k] for w in words) == 1
        assert not set(words) & {w for pair in COLOUR_WORDS for w in pair} - set(COLOUR_WORDS[k])
        assert not set(words) & set(MARKS[1:])  # the caption never tells the mark
    for codes in (colour, mark):
        share = np.bincount(codes, minlength=4) / len(codes)
        assert share.min() > 0.2 and share.max() < 0.3
        table = np.zeros((10, 4), dtype=int)  # independent of the label: every pair occurs
        np.add.at(table, (y, codes), 1)
        assert table.min() >= 20
    # word-order noise: about 30% of captions have one adjacent pair out of the templates' order
    grammar = {p for ps in raw["prompts"] for p in ps}
    grammar |= {t.format(colour=w) for t in PLAIN_TEMPLATES for pair in COLOUR_WORDS for w in pair}
    assert 0.25 < np.mean([c not in grammar for c in raw["captions"]]) < 0.35


def test_same_p_and_seed_give_identical_data_and_other_seed_differs(raw):
    again = digits_pairs(0.5, seed=0)
    assert again["captions"] == raw["captions"] and np.array_equal(again["image"], raw["image"])
    for k in raw["attributes"]:
        assert np.array_equal(again["attributes"][k], raw["attributes"][k])
    other = digits_pairs(0.5, seed=1)
    assert sum(a != b for a, b in zip(other["captions"], raw["captions"], strict=True)) > 1000
    assert not np.array_equal(other["attributes"]["image_mark"], raw["attributes"]["image_mark"])
    lower = digits_pairs(0.2, seed=0)  # p only decides mentions; marks and colours are shared
    assert np.array_equal(lower["image"], raw["image"])
    assert np.array_equal(lower["attributes"]["text_colour"], raw["attributes"]["text_colour"])
    assert (lower["mentioned"] <= raw["mentioned"]).all()
    a = load_paired("pairs:digits:0.5", 8, 1, seed=3)
    b = load_paired("pairs:digits:0.5", 8, 1, seed=3)
    assert np.array_equal(a.test, b.test) and torch.equal(a.tokens, b.tokens) and torch.equal(a.x, b.x)


def test_mark_is_visible_in_the_centre(raw, pairs):
    img, mark = raw["image"], raw["attributes"]["image_mark"]
    centre_rows = img[:, 3:5, :].mean(axis=(1, 2))
    centre_cols = img[:, :, 3:5].mean(axis=(1, 2))
    none, horizontal, vertical, cross = (mark == k for k in range(4))
    assert centre_rows[horizontal].mean() > centre_rows[none].mean() + 0.2
    assert centre_cols[vertical].mean() > centre_cols[none].mean() + 0.2
    assert centre_rows[cross].min() >= 0.7 and centre_cols[cross].min() >= 0.7
    original = _load_digits()[0]  # a bar drawn over the digit, not a shift: the rest is untouched
    assert np.array_equal(img[none], original[none])
    outside = np.ones((8, 8), dtype=bool)
    outside[3:5, :] = False
    assert np.array_equal(img[horizontal][:, outside], original[horizontal][:, outside])
    # still there after fitting to the arch's resolution: rows 6..9 of 16
    x = pairs.x[:, 0].numpy()
    assert x[horizontal, 6:10, :].mean() > x[none, 6:10, :].mean() + 0.2


def test_prompts_cover_every_class_in_vocab_words(pairs):
    assert len(pairs.prompts) == 10
    vocab = set(pairs.vocab)
    colours = [w for pair in COLOUR_WORDS for w in pair]
    for c, prompts in enumerate(pairs.prompts):
        assert len(prompts) == len(set(prompts)) > 0
        for prompt in prompts:
            words = tokenize(prompt)
            assert set(words) <= vocab and set(words) & ALL_DIGIT_WORDS <= set(DIGIT_WORDS[c])
        counts = [sum(w in p.split() for p in prompts) for w in colours]
        assert len(set(counts)) == 1 and counts[0] > 0  # every colour word, equally often
    tokens, owner = pairs.prompt_tokens()
    assert tokens.shape == (sum(map(len, pairs.prompts)), 5) and _left_aligned(tokens)
    assert not (tokens == UNK).any() and np.array_equal(np.bincount(owner), [len(p) for p in pairs.prompts])
    # the vocabulary is the grammar's: digit words exist even when no caption says one
    zero = load_paired("pairs:digits:0", 8, 1)
    assert zero.vocab == pairs.vocab and not (zero.prompt_tokens()[0] == UNK).any()


# ---------------------------------------------------------------------------- user data
def _npz(path, n=30, **overrides):
    rng = np.random.default_rng(0)
    arrays = {
        "image": rng.integers(0, 256, (n, 12, 12), dtype=np.uint8),
        "text": np.zeros((n, 6), dtype=np.int32),
        "vocab": np.array(["", "cat", "dog", "runs", "sleeps"]),
        "y": np.where(np.arange(n) < n // 2, "cat", "dog"),
    }
    arrays["text"][:, 1] = np.where(arrays["y"] == "cat", 1, 2)  # gap before the first word
    arrays["text"][:, 3] = rng.integers(3, 5, n)
    arrays.update(overrides)
    np.savez(path, **{k: v for k, v in arrays.items() if v is not None})
    return path


def test_npz_round_trip(tmp_path):
    marks = np.random.default_rng(1).integers(0, 3, 30)
    p = _npz(tmp_path / "pairs.npz", attr_image_x=marks, attr_text_z=np.tile(["up", "down"], 15))
    d = load_paired(p, resolution=16, channels=3)
    assert d.name == "pairs.npz" and d.allows_flip and d.x.shape == (30, 3, 16, 16)
    assert d.vocab == ["<pad>", "<unk>", "cat", "dog", "runs", "sleeps"]  # <unk> inserted, ids shifted
    assert d.tokens.shape == (30, 2) and _left_aligned(d.tokens)
    assert d.captions[0] in ("cat runs", "cat sleeps") and d.captions[-1].startswith("dog ")
    assert all(_decode(row, d.vocab) == c for row, c in zip(d.tokens, d.captions, strict=True))
    assert d.classes == ["cat", "dog"] and np.array_equal(np.bincount(d.y), [15, 15])
    assert d.attribute_modality == {"image_x": "image", "text_z": "text"}
    assert d.attribute_classes["text_z"] == ["down", "up"] and d.attributes["text_z"][0] == 1
    assert np.array_equal(d.attributes["image_x"], marks)
    assert d.prompts == [["cat"], ["dog"]]
    tokens, owner = d.prompt_tokens()
    assert tokens.tolist() == [[2, 0], [3, 0]] and owner.tolist() == [0, 1]
    # a vocab that already has <unk> at 1 keeps its ids; no labels, no prompts
    q = _npz(tmp_path / "q.npz", vocab=np.array(["[PAD]", "<unk>", "dog", "runs", "sleeps"]), y=None)
    e = load_paired(f"pairs:{q}", resolution=8, channels=1)
    assert e.vocab[:3] == ["<pad>", "<unk>", "dog"] and e.tokens[:, 0].tolist() == [1] * 15 + [2] * 15
    assert e.y is None and not e.labelled and e.prompts is None and e.prompt_tokens() is None


def _png(path, value, size=(10, 10)):
    from PIL import Image

    Image.new("RGB", size, value).save(path)


def test_folder_round_trips(tmp_path):
    flat = tmp_path / "flat"
    flat.mkdir()
    for i in range(12):
        _png(flat / f"{i:02d}.png", (20 * i, 0, 0))
        (flat / f"{i:02d}.txt").write_text(f"A  RED square, number {i}!\n")
    d = load_paired(flat, resolution=8, channels=3)
    assert d.x.shape == (12, 3, 8, 8) and d.y is None and d.prompts is None
    assert d.captions[3] == "a red square number 3" and d.tokens.shape == (12, 5) and _left_aligned(d.tokens)
    assert d.vocab[:6] == ["<pad>", "<unk>", "a", "number", "red", "square"]
    assert float(d.x[11, 0].mean()) > float(d.x[0, 0].mean())  # images in file order

    classes = tmp_path / "classes"
    for c, v in (("cat", 30), ("dog", 200)):
        (classes / c).mkdir(parents=True)
        for i in range(6):
            _png(classes / c / f"{i}.png", (v, v, v))
            (classes / c / f"{i}.txt").write_text(f"a {c}" + " sleeping" * (i % 3))
    e = load_paired(f"pairs:{classes}", resolution=8, channels=1, seed=2)
    assert e.classes == ["cat", "dog"] and np.array_equal(np.bincount(e.y), [6, 6])
    assert float(e.x[e.y == 1].mean()) > float(e.x[e.y == 0].mean())
    assert e.captions[2] == "a cat sleeping sleeping" and e.tokens.shape == (12, 4)
    assert e.prompts == [["cat"], ["dog"]] and e.name == "classes"


@pytest.mark.parametrize(
    "case, message",
    [
        ("missing", "no such file or folder"),
        ("unknown_format", r"unsupported paired-data source \(use 'pairs:digits"),
        ("not_zip", "not a zip archive"),
        ("no_text", r"no array named 'text' \(found: image, vocab, y\)"),
        ("object_vocab", "cannot read array 'vocab'.*unicode"),
        ("text_rows", "image has 30 items but text has 29 rows"),
        ("y_count", "y has 29 labels for 30 images"),
        ("attr_count", r"attr_text_z has shape \(29,\)"),
        ("empty_row", "text row 4 is an empty caption"),
        ("id_range", "text row 2 has token id 5, out of range for a vocab of 5"),
        ("negative_id", "text row 7 has a negative token id"),
        ("few", "9 pairs are too few"),
        ("bad_p", r"p must be a number in \[0, 1\] \(got 1.5\)"),
        ("p_text", "p must be a number"),
        ("no_caption", "b.png: no caption file"),
        ("empty_txt", "b.txt: empty caption"),
        ("no_images", "no images"),
        ("one_class", "only one class folder"),
        ("mixed", "both images and class subfolders"),
    ],
)
def test_bad_input_is_one_clear_error(tmp_path, case, message):
    p = tmp_path / "pairs.npz"
    folder = tmp_path / "imgs"
    folder.mkdir()
    for i in range(12):
        _png(folder / f"{i}.png", (i, i, i))
        (folder / f"{i}.txt").write_text("a picture")
    text = np.ones((30, 3), dtype=np.int64)
    if case == "missing":
        p = tmp_path / "nope.npz"
    elif case == "unknown_format":
        p = tmp_path / "pairs.csv"
        p.write_text("1,2")
    elif case == "not_zip":
        p.write_bytes(b"not a zip")
    elif case == "no_text":
        _npz(p, text=None)
    elif case == "object_vocab":
        _npz(p, vocab=np.array(["", "a", None], dtype=object))
    elif case == "text_rows":
        _npz(p, text=text[:29])
    elif case == "y_count":
        _npz(p, y=np.zeros(29))
    elif case == "attr_count":
        _npz(p, attr_text_z=np.arange(29) % 2)
    elif case == "empty_row":
        text[4] = 0
        _npz(p, text=text)
    elif case == "id_range":
        text[2, 1] = 5
        _npz(p, text=text)
    elif case == "negative_id":
        text[7, 2] = -1
        _npz(p, text=text)
    elif case == "few":
        _npz(p, n=9, y=None)
    elif case == "bad_p":
        p = "pairs:digits:1.5"
    elif case == "p_text":
        p = "pairs:digits:half"
    elif case == "no_caption":
        _png(folder / "b.png", (1, 2, 3))
        p = folder
    elif case == "empty_txt":
        _png(folder / "b.png", (1, 2, 3))
        (folder / "b.txt").write_text(" \n\t ")
        p = folder
    elif case == "no_images":
        p = tmp_path / "empty"
        p.mkdir()
    elif case == "one_class":
        p = tmp_path / "one"
        (p / "cat").mkdir(parents=True)
        _png(p / "cat" / "a.png", 1)
        (p / "cat" / "a.txt").write_text("a cat")
    elif case == "mixed":
        (folder / "cat").mkdir()
        _png(folder / "cat" / "a.png", 1)
        p = folder
    with pytest.raises(NasctlError, match=message) as info:
        load_paired(p, resolution=8, channels=1)
    msg = str(info.value)
    assert "\n" not in msg
    assert msg.startswith("pairs:digits:") if case in ("bad_p", "p_text") else str(p) in msg


@pytest.mark.parametrize("p", [-0.1, 1.01, float("nan"), "half"])
def test_digits_pairs_rejects_bad_p(p):
    with pytest.raises(NasctlError, match=r"pairs:digits: p must be a number in \[0, 1\]"):
        digits_pairs(p)


# ---------------------------------------------------------------------------- text views
def test_augment_tokens_gives_valid_deterministic_views(pairs):
    tokens = pairs.tokens[:256]
    views = [augment_tokens(tokens, torch.Generator().manual_seed(s)) for s in (0, 0, 1)]
    v = views[0]
    assert v.shape == tokens.shape and v.dtype == torch.int64 and _left_aligned(v)
    assert torch.equal(views[0], views[1]) and not torch.equal(views[0], views[2])
    changed = (v != tokens).any(dim=1).float().mean()
    assert 0.2 < changed < 0.9
    for a, b in zip(v.tolist(), tokens.tolist(), strict=True):  # words only from the row
        words, orig = [w for w in a if w != PAD], [w for w in b if w != PAD]
        assert all(words.count(w) <= orig.count(w) for w in words)
    # dropping everything still keeps one word; no drop and no swap is the identity
    heavy = augment_tokens(tokens, torch.Generator().manual_seed(0), drop_p=0.99, swap_p=0.0)
    assert ((heavy != PAD).sum(dim=1) == 1).float().mean() > 0.9 and _left_aligned(heavy)
    assert torch.equal(augment_tokens(tokens, torch.Generator().manual_seed(0), 0.0, 0.0), tokens)
    swapped = augment_tokens(tokens, torch.Generator().manual_seed(0), 0.0, 1.0)
    assert torch.equal(swapped.sort(dim=1).values, tokens.sort(dim=1).values)
    assert ((swapped != tokens).sum(dim=1) == 2).all()  # every row (>= 2 words) swaps one pair
    # unpacked input (a gap before the words) is packed too
    gap = torch.tensor([[0, 5, 0, 6, 7], [0, 0, 0, 0, 3]])
    out = augment_tokens(gap, torch.Generator().manual_seed(0), 0.0, 0.0)
    assert out.tolist() == [[5, 6, 7, 0, 0], [3, 0, 0, 0, 0]]
