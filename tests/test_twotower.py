"""Two-tower (image-text) models: each regulariser against a direct computation, deep feature
separation at work, one-line errors for bad paired data, and tiny pretrain and search runs
of the command line."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from nasctl.cli import app
from nasctl.contrastive.multimodal import BRIDGE_EPS, bridge_loss, geometry_loss, orthogonality, symmetric_infonce
from nasctl.contrastive.paired import digits_pairs, load_paired
from nasctl.contrastive.twotower import (
    TextTower,
    TwoTowerConfig,
    build_two_tower,
    pair_augment,
    retrieval,
    two_tower_loss,
)
from nasctl.search.config import load_config
from nasctl.search.scorers.twotower import TwoTowerAccuracy
from nasctl.space import SearchSpace
from tests.conftest import DEFAULT_SPACE as SPACE

runner = CliRunner()


def _unit(a: np.ndarray) -> np.ndarray:
    return a / np.linalg.norm(a, axis=1, keepdims=True)


@pytest.fixture(scope="module")
def batch():
    """A hand-made batch of 5 items (not normalised), float64."""
    g = np.random.default_rng(7)
    return {k: g.normal(size=(5, 4)) for k in ("v", "w", "a", "s", "p")}


def _t(a: np.ndarray) -> torch.Tensor:
    return torch.tensor(a, dtype=torch.float64)


# ---------------------------------------------------------------------------- the losses
def test_symmetric_infonce_is_the_mean_of_both_cross_entropies(batch):
    v, w, t = _unit(batch["v"]), _unit(batch["w"]), 0.3
    direct = 0.0
    for i in range(5):  # image i against every text, and text i against every image
        i2t = math.exp(v[i] @ w[i] / t) / sum(math.exp(v[i] @ w[j] / t) for j in range(5))
        t2i = math.exp(w[i] @ v[i] / t) / sum(math.exp(w[i] @ v[j] / t) for j in range(5))
        direct += -(math.log(i2t) + math.log(t2i)) / 2
    assert float(symmetric_infonce(_t(batch["v"]), _t(batch["w"]), t)) == pytest.approx(direct / 5, rel=1e-9)


def test_orthogonality_is_the_mean_squared_cosine(batch):
    s, p = _unit(batch["s"]), _unit(batch["p"])
    direct = np.mean([(s[i] @ p[i]) ** 2 for i in range(5)])
    assert float(orthogonality(_t(batch["s"]), _t(batch["p"]))) == pytest.approx(direct, rel=1e-9)
    assert float(orthogonality(_t(batch["s"]), _t(batch["s"]))) == pytest.approx(1.0)


def test_bridge_is_the_distance_to_the_bridge_point_over_its_variance(batch):
    v, w, a = _unit(batch["v"]), _unit(batch["w"]), _unit(batch["a"])
    t, sigma2 = np.array([0.0, 0.2, 0.5, 0.7, 1.0]), 0.8
    direct = 0.0
    for i in range(5):
        m = (1 - t[i]) * v[i] + t[i] * w[i]
        m = m / np.linalg.norm(m)
        direct += np.sum((a[i] - m) ** 2) / (2 * t[i] * (1 - t[i]) * sigma2 + BRIDGE_EPS)
    got = bridge_loss(_t(batch["a"]), _t(batch["v"]), _t(batch["w"]), _t(t), sigma2)
    assert float(got) == pytest.approx(direct / 5, rel=1e-9)


def test_geometry_is_the_two_frobenius_terms(batch):
    v, w = _unit(batch["v"]), _unit(batch["w"])
    s_vv, s_ww, s_vw = v @ v.T, w @ w.T, v @ w.T
    direct = sum((s_vv[i, j] - s_ww[i, j]) ** 2 + (s_vw[i, j] - s_vw[j, i]) ** 2 for i in range(5) for j in range(5))
    assert float(geometry_loss(_t(batch["v"]), _t(batch["w"]))) == pytest.approx(direct / 25, rel=1e-9)
    assert float(geometry_loss(_t(batch["v"]), _t(batch["v"]))) == pytest.approx(0.0, abs=1e-12)


def test_retrieval_counts_any_identical_caption_as_a_hit():
    image = np.eye(3)
    text = np.array([[0.0, 1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])  # image 0 nearest text 1, 1 nearest 0
    # items 0 and 1 share a caption: their swapped nearest texts are still hits
    r = retrieval(image, text, ["a b", "a b", "c"], ks=(1,))
    assert r["image_to_text_r@1"] == 1.0 and r["text_to_image_r@1"] == 1.0
    r = retrieval(image, text, ["a b", "a c", "c"], ks=(1, 2))
    assert r["image_to_text_r@1"] == pytest.approx(1 / 3) and r["image_to_text_r@2"] == 1.0


# ---------------------------------------------------------------------------- the text tower
@pytest.mark.parametrize("kind", ["conv", "transformer"])
def test_text_tower_ignores_padding(kind):
    """Extra PAD columns change nothing, also with the norms' learnt biases non-zero."""
    torch.manual_seed(0)
    tower = TextTower(20, width=16, kind=kind).eval()
    with torch.no_grad():
        for m in tower.modules():
            if isinstance(m, torch.nn.LayerNorm):
                m.bias.normal_()
    tokens = torch.tensor([[5, 6, 7], [3, 4, 0]])  # row 0 fills the width: no PAD beside its last word
    padded = torch.cat([tokens, torch.zeros(2, 3, dtype=torch.long)], 1)
    with torch.no_grad():
        assert torch.allclose(tower(tokens), tower(padded), atol=1e-5)
        assert not torch.allclose(tower(tokens)[0], tower(torch.tensor([[7, 6, 5]]))[0], atol=1e-3)  # order


# ---------------------------------------------------------------------------- separation at work
def test_separation_drives_shared_and_specific_apart():
    """The specific heads start as copies of the shared ones (cosine 1); 25 steps of
    separation training bring the mean squared cosine near 0, in both towers."""
    space = SearchSpace.load(SPACE)
    arch = space.resolve({**space.baseline_params(), "resolution": 24})
    data = load_paired("pairs:digits", arch.resolution, arch.in_channels, seed=0).subset(256, 64)
    cfg = TwoTowerConfig(separation=1.0, batch_size=32, seed=0).validate()
    model = build_two_tower(arch, data, cfg)
    model.image_specific.load_state_dict(model.image_shared.state_dict())
    model.text_specific.load_state_dict(model.text_shared.state_dict())
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3)
    gen = torch.Generator().manual_seed(0)
    idx = torch.from_numpy(data.train)

    def cos2() -> tuple[float, float]:
        model.eval()
        with torch.no_grad():
            out = [
                float(orthogonality(*enc))
                for enc in (model.encode_image(data.x[idx]), model.encode_text(data.tokens[idx]))
            ]
        model.train()
        return out[0], out[1]

    assert min(cos2()) > 0.99
    for _ in range(25):
        b = idx[torch.randperm(len(idx), generator=gen)[:32]]
        loss, parts = two_tower_loss(model, data.x[b], data.tokens[b], cfg, gen)
        assert set(parts) == {"infonce", "orthogonality", "specific_intra"}
        opt.zero_grad()
        loss.backward()
        opt.step()
    image_cos2, text_cos2 = cos2()
    assert image_cos2 < 0.1 and text_cos2 < 0.1


# ---------------------------------------------------------------------------- command line
@pytest.fixture(scope="module")
def small_pairs(tmp_path_factory):
    """150 digits pairs (p = 0.8) as a user's .npz: image, text, vocab, y and two attributes."""
    d = digits_pairs(0.8, seed=1)
    pairs = load_paired("pairs:digits:0.8", 8, 1, seed=1)
    idx = np.random.default_rng(0).permutation(len(d["y"]))[:150]
    path = tmp_path_factory.mktemp("pairs") / "pairs150.npz"
    np.savez(
        path,
        image=(d["image"][idx] * 255).astype(np.uint8),
        text=pairs.tokens.numpy()[idx],
        vocab=np.array(pairs.vocab, dtype=str),
        y=d["y"][idx],
        attr_image_mark=d["attributes"]["image_mark"][idx],
        attr_text_colour=d["attributes"]["text_colour"][idx],
    )
    return path


def test_two_tower_pretrain_cli_writes_a_run(tmp_path, small_pairs):
    out = tmp_path / "tt"
    args = ["pretrain", "--space", str(SPACE), "--baseline", "--two-tower", "--data", str(small_pairs)]
    args += ["--steps", "3", "--batch-size", "16", "--separation", "1", "--bridge", "0.1", "--geometry", "1"]
    r = runner.invoke(app, [*args, "--out", str(out)])  # the tables (--json is read by the search test)
    assert r.exit_code == 0, r.output
    assert "image->text R@1" in r.output and "linear probes" in r.output and "text_colour" in r.output
    m = json.loads((out / "metrics.json").read_text())
    assert m["variant"] == "infonce+separation+bridge+geometry" and m["steps"] == 3
    assert set(m["final_parts"]) == {"infonce", "orthogonality", "specific_intra", "bridge", "geometry"}
    assert set(m["retrieval"]) == {f"{d}_r@{k}" for d in ("image_to_text", "text_to_image") for k in (1, 5)}
    assert 0.0 <= m["zero_shot_accuracy"] <= 1.0
    assert set(m["probe"]) == {"label", "image_mark", "text_colour"}
    assert all(set(v) == {"image", "text", "both"} for v in m["probe"].values())
    for f in ("arch.json", "model.npz", "vocab.json", "image_tower.onnx", "metrics.json", "loss.png"):
        assert (out / f).is_file(), f
    import onnxruntime as ort

    sess = ort.InferenceSession(str(out / "image_tower.onnx"), providers=["CPUExecutionProvider"])
    emb = sess.run(None, {"input": np.random.default_rng(0).random((2, 3, 32, 32), dtype=np.float32)})[0]
    assert emb.shape == (2, 64) and np.allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)


def _bad_npz(tmp_path, **override):
    d = {
        "image": np.zeros((20, 8, 8), np.uint8),
        "text": np.full((20, 3), 2, np.int64),
        "vocab": np.array(["<pad>", "<unk>", "seven"]),
    }
    d.update(override)
    path = tmp_path / "bad.npz"
    np.savez(path, **d)
    return path


@pytest.mark.parametrize(
    "case, message",
    [
        ("lengths", "length|rows|pairs"),
        ("empty", "empty|no words"),
        ("format", "unsupported|unknown|format"),
        ("weights", "--two-tower"),
    ],
)
def test_bad_paired_data_is_one_line_exit_2(tmp_path, case, message):
    base = ["pretrain", "--space", str(SPACE), "--baseline", "--steps", "1", "--out", str(tmp_path / "o")]
    if case == "lengths":
        args = ["--two-tower", "--data", str(_bad_npz(tmp_path, text=np.full((19, 3), 2, np.int64)))]
    elif case == "empty":
        text = np.full((20, 3), 2, np.int64)
        text[4] = 0
        args = ["--two-tower", "--data", str(_bad_npz(tmp_path, text=text))]
    elif case == "format":
        (tmp_path / "pairs.csv").write_text("image,text\n")
        args = ["--two-tower", "--data", str(tmp_path / "pairs.csv")]
    else:
        args = ["--bridge", "0.1"]
    r = runner.invoke(app, [*base, *args])
    assert r.exit_code == 2, r.output
    lines = [ln for ln in r.output.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and "Traceback" not in r.output, r.output
    import re

    assert re.search(message, lines[0], re.IGNORECASE), lines[0]


def test_two_tower_search_scores_zero_shot(tmp_path, small_pairs):
    out = tmp_path / "search"
    args = ["search", str(SPACE), "--two-tower", "--data", str(small_pairs), "--trials", "2", "--epochs", "1"]
    args += ["--batch-size", "16", "--trial-seconds", "4", "--bridge", "0.1", "--out", str(out), "--json"]
    r = runner.invoke(app, args)
    assert r.exit_code == 0, r.output
    cfg = json.loads((out / "search.json").read_text())
    assert cfg["two_tower"] == {"bridge": 0.1} and cfg["data"] == str(small_pairs)
    trial = TwoTowerAccuracy.two_tower_config(load_config(out))  # what each trial trained with
    assert trial.bridge == 0.1 and trial.epochs == 1 and trial.batch_size == 16 and trial.augment == pair_augment()
    rows = (out / "trials.csv").read_text().splitlines()
    assert "image_to_text_r1" in rows[0] and len(rows) == 3
    assert "zero-shot accuracy (caption prompts)" in (out / "report.md").read_text()
    pareto = json.loads(r.output)
    assert 0.0 <= pareto["baseline"]["accuracy"] <= 1.0 and "image_to_text_r1" in pareto["baseline"]
    r = runner.invoke(app, [*args[:-3], "--out", str(tmp_path / "z"), "--strategy", "zeroshot"])
    assert r.exit_code == 2 and "multishot" in r.output
