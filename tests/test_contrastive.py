"""Contrastive task models: losses (NT-Xent formula, the Gamma loss's unbiasedness), data,
augmentations, probe, and the `nasctl pretrain` command end to end."""

import contextlib
import json
import math

import numpy as np
import onnxruntime as ort
import pytest
import torch
from typer.testing import CliRunner

from nasctl.cli import app
from nasctl.contrastive import (
    AugmentConfig,
    GammaLoss,
    PretrainConfig,
    load_data,
    load_weights,
    nt_xent,
    pretrain,
    pretrain_and_evaluate,
)
from nasctl.contrastive.augment import augment, two_views
from nasctl.contrastive.data import split_indices
from nasctl.contrastive.losses import m_step_loss, positive_and_partition, sample_u, similarities
from nasctl.contrastive.pretrain import resolve_device
from nasctl.contrastive.probe import knn_accuracy, linear_probe
from nasctl.errors import NasctlError
from nasctl.nn.builder import build_model
from nasctl.space import SearchSpace
from tests.conftest import DEFAULT_SPACE

runner = CliRunner()


# ---------------------------------------------------------------------------- losses
def test_nt_xent_matches_direct_formula():
    g = torch.Generator().manual_seed(0)
    z1, z2 = torch.randn(5, 8, generator=g), torch.randn(5, 8, generator=g)
    t = 0.3
    z = torch.nn.functional.normalize(torch.cat([z1, z2]), dim=1).tolist()
    n2 = len(z)

    def sim(i, j):
        return sum(a * b for a, b in zip(z[i], z[j], strict=True)) / t

    total = 0.0
    for i in range(n2):
        j = (i + 5) % n2
        denom = sum(math.exp(sim(i, k)) for k in range(n2) if k != i)
        total += -math.log(math.exp(sim(i, j)) / denom)
    assert float(nt_xent(z1, z2, t)) == pytest.approx(total / n2, rel=1e-5)


def test_positive_and_partition_matches_a_loop_over_anchors():
    """From the definition (losses.py's docstrings), not from the code: views [z1; z2], so
    view i's positive is the other view of its sample, (i + N) mod 2N; ``s_i+ = s[i, pos]``;
    ``Zbatch_i`` is the MEAN of ``exp(s_ij)`` over its 2N - 2 negatives, every view j other
    than i itself and its positive (linear scale, not its log)."""
    from nasctl.contrastive.losses import positive_and_partition as parts  # imported as it is now

    n, t = 4, 0.5
    g = torch.Generator().manual_seed(7)
    views = torch.randn(2 * n, 6, generator=g, dtype=torch.float64).tolist()
    norm = [math.sqrt(sum(a * a for a in v)) for v in views]

    def cos(i, j):
        return sum(a * b for a, b in zip(views[i], views[j], strict=True)) / (norm[i] * norm[j])

    s = [[cos(i, j) / t for j in range(2 * n)] for i in range(2 * n)]  # self-similarity 1/t = 2: the largest
    want_pos, want_z = [], []
    for i in range(2 * n):
        pos = (i + n) % (2 * n)
        negatives = [math.exp(s[i][j]) for j in range(2 * n) if j not in (i, pos)]
        assert len(negatives) == 2 * n - 2
        want_pos.append(s[i][pos])
        want_z.append(sum(negatives) / len(negatives))
    s_pos, z_batch = parts(torch.tensor(s, dtype=torch.float32))
    assert s_pos.tolist() == pytest.approx(want_pos, rel=1e-6)
    assert z_batch.tolist() == pytest.approx(want_z, rel=1e-5)


def _full_loss(s_pos, z_full):
    return (-s_pos + torch.log(z_full)).mean()


def test_gamma_m_step_gradient_is_unbiased_with_exact_partition():
    """With Zhat exact, the mean over many u draws of the M-step gradient equals the
    gradient of the full-data loss; a wrong Zhat does not."""
    g = torch.Generator().manual_seed(1)
    z = torch.randn(12, 6, generator=g, requires_grad=True)
    t = 0.5

    def parts():
        return positive_and_partition(similarities(z[:6], z[6:], t))

    s_pos, z_full = parts()
    (full_grad,) = torch.autograd.grad(_full_loss(s_pos, z_full), z)
    (pos_grad,) = torch.autograd.grad(-parts()[0].mean(), z)
    target = full_grad - pos_grad  # the partition term, the only part u acts on
    z_exact = z_full.detach()

    def partition_grad(z_hat, draws=600):
        acc = torch.zeros_like(z)
        for _ in range(draws):
            sp, zb = parts()
            u = sample_u(z_hat, shape=4.0, generator=g)
            (gr,) = torch.autograd.grad(m_step_loss(sp, zb, u), z)
            acc += gr
        return acc / draws - pos_grad

    rel = float((partition_grad(z_exact) - target).norm() / target.norm())
    assert rel < 0.05, rel
    wrong = partition_grad(2 * z_exact, draws=100)
    assert float((wrong - target).norm() / target.norm()) > 0.3


def test_gamma_gradient_unbiased_over_minibatches_where_plugin_log_is_biased():
    """Negatives drawn as small random minibatches from a pool: the Gamma M-step gradient
    averages to the full-data gradient; the plug-in log-of-minibatch-mean (NT-Xent style)
    does not. This is the gradient bias the decomposable loss removes."""
    g = torch.Generator().manual_seed(2)
    n, m, b, t = 4, 64, 4, 0.1
    anchors = torch.nn.functional.normalize(torch.randn(n, 8, generator=g), dim=1).requires_grad_(True)
    pos = torch.nn.functional.normalize(anchors.detach() + 0.3 * torch.randn(n, 8, generator=g), dim=1)
    pool = torch.nn.functional.normalize(torch.randn(m, 8, generator=g), dim=1)

    def sims(neg_idx):
        a = torch.nn.functional.normalize(anchors, dim=1)
        return (a * pos).sum(1) / t, torch.exp(a @ pool[neg_idx].T / t).mean(1)

    s_pos, z_full = sims(torch.arange(m))
    (full_grad,) = torch.autograd.grad(_full_loss(s_pos, z_full), anchors)
    z_exact = z_full.detach()
    gamma_acc, plugin_acc, draws = torch.zeros_like(anchors), torch.zeros_like(anchors), 3000
    for _ in range(draws):
        idx = torch.randperm(m, generator=g)[:b]
        sp, zb = sims(idx)
        (gg,) = torch.autograd.grad(m_step_loss(sp, zb, sample_u(z_exact, 8.0, g)), anchors)
        sp, zb = sims(idx)
        (gp,) = torch.autograd.grad(_full_loss(sp, zb), anchors)
        gamma_acc += gg
        plugin_acc += gp
    gamma_err = float((gamma_acc / draws - full_grad).norm() / full_grad.norm())
    plugin_err = float((plugin_acc / draws - full_grad).norm() / full_grad.norm())
    assert gamma_err < 0.1, gamma_err
    assert plugin_err > 2 * gamma_err, (plugin_err, gamma_err)


def test_gamma_loss_tracks_partition_per_sample():
    loss = GammaLoss(n_samples=10, temperature=0.5, shape=2.0, momentum=0.25, generator=torch.Generator())
    g = torch.Generator().manual_seed(3)
    z1, z2 = torch.randn(4, 5, generator=g), torch.randn(4, 5, generator=g)
    idx = torch.tensor([1, 3, 5, 7])
    _, first = positive_and_partition(similarities(z1, z2, 0.5))
    value, monitor = loss(z1, z2, idx)
    assert torch.isfinite(value) and math.isfinite(monitor)
    first_per_sample = 0.5 * (first[:4] + first[4:])  # one estimate per sample, both views
    assert torch.allclose(loss.z_hat[idx], first_per_sample)
    assert not loss.seen[0] and bool(loss.seen[idx].all())
    z1b, z2b = torch.randn(4, 5, generator=g), torch.randn(4, 5, generator=g)
    _, second = positive_and_partition(similarities(z1b, z2b, 0.5))
    loss(z1b, z2b, idx)
    assert torch.allclose(loss.z_hat[idx], 0.75 * first_per_sample + 0.25 * 0.5 * (second[:4] + second[4:]))


def test_gamma_weights_come_from_the_estimate_before_the_batch():
    """With a huge shape, u = 1 / Zhat exactly: a seen sample's u uses its stored estimate,
    so the M-step value is -s+ + Zbatch / Zhat_before."""
    loss = GammaLoss(n_samples=4, temperature=0.5, shape=1e9, momentum=0.5)
    g = torch.Generator().manual_seed(4)
    z1, z2 = torch.randn(4, 5, generator=g), torch.randn(4, 5, generator=g)
    idx = torch.arange(4)
    loss.log_z_hat[idx] = torch.log(torch.tensor([1.0, 2.0, 3.0, 4.0]))  # Zhat is stored as its log
    loss.seen[idx] = True
    value, _ = loss(z1, z2, idx)
    s_pos, zb = positive_and_partition(similarities(z1, z2, 0.5))
    before = torch.tensor([1.0, 2.0, 3.0, 4.0]).repeat(2)
    assert float(value) == pytest.approx(float((-s_pos + zb / before).mean()), rel=1e-4)


def test_gamma_draws_have_the_right_mean():
    z_hat = torch.tensor([0.5, 2.0, 8.0]).repeat(4000)
    u = sample_u(z_hat, shape=1.0, generator=torch.Generator().manual_seed(0)).view(4000, 3)
    assert torch.allclose(u.mean(0), torch.tensor([2.0, 0.5, 0.125]), rtol=0.06)


# ---------------------------------------------------------------------------- data
def test_digits_loads_at_arch_resolution_with_stratified_split():
    d = load_data("digits", resolution=24, channels=3, seed=0)
    assert d.x.shape == (1797, 3, 24, 24) and d.x.dtype == torch.float32
    assert 0.0 <= float(d.x.min()) and float(d.x.max()) <= 1.0
    assert not d.allows_flip and len(d.classes) == 10
    parts = [set(d.train), set(d.val), set(d.test)]
    assert not (parts[0] & parts[1]) and not (parts[0] & parts[2]) and not (parts[1] & parts[2])
    assert sum(map(len, parts)) == 1797
    for split in (d.val, d.test):  # every class in every split, in proportion
        counts = np.bincount(d.y[split], minlength=10)
        assert counts.min() >= 20
    again = load_data("digits", resolution=24, channels=3, seed=0)
    assert np.array_equal(again.test, d.test)
    assert not np.array_equal(split_indices(1797, d.y, seed=1)[2], d.test)


def test_npz_formats(tmp_path):
    rng = np.random.default_rng(0)
    grey = tmp_path / "grey.npz"
    np.savez(grey, x=rng.integers(0, 256, (40, 12, 12), dtype=np.uint8), y=np.repeat(["a", "b"], 20))
    d = load_data(grey, resolution=16, channels=3)
    assert d.x.shape == (40, 3, 16, 16) and d.classes == ["a", "b"] and d.allows_flip
    rgb = tmp_path / "rgb.npz"
    np.savez(rgb, x=rng.random((30, 20, 20, 3)).astype(np.float32))
    d = load_data(rgb, resolution=8, channels=1)
    assert d.x.shape == (30, 1, 8, 8) and d.y is None and not d.labelled


def _png(path, value, size=(10, 10), mode="L"):
    from PIL import Image

    Image.new(mode, size, value).save(path)


def test_image_folder(tmp_path):
    for c, v in (("cats", 30), ("dogs", 200)):
        (tmp_path / c).mkdir()
        for i in range(6):
            _png(tmp_path / c / f"{i}.png", v + i, mode="RGB")
    (tmp_path / "notes.txt").write_text("ignored")
    d = load_data(tmp_path, resolution=16, channels=3)
    assert d.x.shape == (12, 3, 16, 16) and d.classes == ["cats", "dogs"]
    assert np.array_equal(np.bincount(d.y), [6, 6])
    assert float(d.x[d.y == 1].mean()) > float(d.x[d.y == 0].mean())


@pytest.mark.parametrize(
    "case, message",
    [
        ("missing", "no such file or folder"),
        ("no_x", "no array named 'x'"),
        ("bad_shape", "images must be N x H x W"),
        ("label_count", "labels for"),
        ("nan", "NaN"),
        ("not_npz", "not a readable .npz"),
        ("empty_dir", "no classes"),
        ("bad_image", "unreadable image"),
        ("txt", "unsupported data file"),
    ],
)
def test_bad_data_is_one_clear_error(tmp_path, case, message):
    p = tmp_path / "data.npz"
    if case == "missing":
        p = tmp_path / "nope.npz"
    elif case == "no_x":
        np.savez(p, images=np.zeros((20, 8, 8)))
    elif case == "bad_shape":
        np.savez(p, x=np.zeros((20, 8)))
    elif case == "label_count":
        np.savez(p, x=np.zeros((20, 8, 8)), y=np.zeros(19))
    elif case == "nan":
        np.savez(p, x=np.full((20, 8, 8), np.nan))
    elif case == "not_npz":
        p.write_bytes(b"not a zip")
    elif case == "empty_dir":
        p = tmp_path / "imgs"
        p.mkdir()
    elif case == "bad_image":
        p = tmp_path / "imgs"
        for c in ("a", "b"):
            (p / c).mkdir(parents=True)
            _png(p / c / "ok.png", 10)
        (p / "b" / "broken.png").write_bytes(b"garbage")
    elif case == "txt":
        p = tmp_path / "data.txt"
        p.write_text("1,2,3")
    with pytest.raises(NasctlError, match=message):
        load_data(p, resolution=8, channels=1)
    r = runner.invoke(app, ["pretrain", "--space", str(DEFAULT_SPACE), "--baseline", "--data", str(p)])
    assert r.exit_code == 2, r.output
    assert "Traceback" not in r.output and message.split()[0] in r.output


# ---------------------------------------------------------------------------- augment
def _identity_cfg(**kw):
    base = dict(min_scale=1.0, max_aspect=1.0, rotation_deg=0.0, shear_deg=0.0, flip=False, jitter_p=0.0)
    return AugmentConfig(**{**base, "grayscale_p": 0.0, "noise_std": 0.0, **kw})


def test_augment_identity_and_flip_geometry():
    x = torch.rand(6, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    same = augment(x, _identity_cfg(), torch.Generator().manual_seed(1))
    assert torch.allclose(same, x, atol=1e-5)
    flipped = augment(x, _identity_cfg(flip=True), torch.Generator().manual_seed(1))
    is_flip = [torch.allclose(f, xi.flip(-1), atol=1e-5) for f, xi in zip(flipped, x, strict=True)]
    is_same = [torch.allclose(f, xi, atol=1e-5) for f, xi in zip(flipped, x, strict=True)]
    assert all(a or b for a, b in zip(is_flip, is_same, strict=True)) and any(is_flip)


def test_views_are_seeded_random_and_in_range():
    x = torch.rand(8, 1, 24, 24, generator=torch.Generator().manual_seed(0))
    a1, a2 = two_views(x, AugmentConfig(), torch.Generator().manual_seed(5))
    b1, _ = two_views(x, AugmentConfig(), torch.Generator().manual_seed(5))
    assert torch.equal(a1, b1) and not torch.allclose(a1, a2)
    assert a1.shape == x.shape and float(a1.min()) >= 0 and float(a1.max()) <= 1


# ---------------------------------------------------------------------------- probe
def test_probe_and_knn_on_separable_and_random_features():
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(4), 50)
    centers = rng.normal(size=(4, 16)) * 5
    f = centers[y] + rng.normal(size=(200, 16))
    tr, te = np.arange(0, 200, 2), np.arange(1, 200, 2)
    assert linear_probe(f[tr], y[tr], [f[te]], [y[te]])[0] > 0.95
    assert knn_accuracy(f[tr], y[tr], f[te], y[te], k=20) > 0.95
    noise = rng.normal(size=(200, 16))
    assert knn_accuracy(noise[tr], y[tr], noise[te], y[te], k=20) < 0.5


# ---------------------------------------------------------------------------- end to end
def test_pretrain_command_end_to_end(tmp_path):
    """1 epoch on a small digits subset: every output written, the ONNX backbone gives the
    saved weights' features, metrics hold the probe accuracies."""
    out = tmp_path / "run"
    args = ["pretrain", "--space", str(DEFAULT_SPACE), "--baseline", "--epochs", "1", "--subset", "160"]
    r = runner.invoke(app, [*args, "--batch-size", "32", "--out", str(out), "--json"])
    assert r.exit_code == 0, r.output
    m = json.loads(r.output)
    for key in ("linear_probe_accuracy", "knn_accuracy", "random_init_linear_probe_accuracy", "train_seconds"):
        assert 0 <= m[key] and (key == "train_seconds" or m[key] <= 1), key
    assert m["steps"] == 5 and m["loss"] == "gamma" and len(m["loss_per_epoch"]) == 1
    # the time breakdown: every part timed, and the fixed cost is the total less the parts
    parts = ("import_seconds", "data_seconds", "setup_seconds", "eval_seconds", "random_init_eval_seconds")
    assert all(m[k] >= 0 for k in (*parts, "write_seconds", "train_seconds"))
    timed = m["import_seconds"] + m["train_seconds"] + m["eval_seconds"] + m["random_init_eval_seconds"]
    assert m["fixed_seconds"] == pytest.approx(m["total_seconds"] - timed)
    untimed = m["fixed_seconds"] - m["data_seconds"] - m["setup_seconds"] - m["write_seconds"]
    assert 0 <= untimed < 0.5 * m["total_seconds"], m  # data, set-up and writing are most of it
    for f in ("arch.json", "model.npz", "backbone.onnx", "metrics.json", "loss.png"):
        assert (out / f).is_file(), f
    assert len(json.loads((out / "metrics.json").read_text())["loss_per_step"]) == 5
    arch = SearchSpace.load(DEFAULT_SPACE).baseline()
    model = load_weights(build_model(arch, head="embedding"), out / "model.npz").eval()
    x = load_data("digits", arch.resolution, arch.in_channels).x[:4]
    sess = ort.InferenceSession(str(out / "backbone.onnx"), providers=["CPUExecutionProvider"])
    onnx_feats = sess.run(None, {"input": x.numpy()})[0]
    with torch.no_grad():
        torch_feats = model.forward_features(x).numpy()
    assert onnx_feats.shape == (4, arch.feature_channels)
    assert np.allclose(onnx_feats, torch_feats, atol=1e-4)


def test_steps_replace_epochs_and_cross_epoch_boundaries():
    """``steps`` trains exactly that many optimiser steps, over as many epochs as it takes
    (160 train images at batch 32: 5 steps an epoch, so 7 steps end in the second epoch)."""
    arch = SearchSpace.load(DEFAULT_SPACE).sample(36)
    data = load_data("digits", arch.resolution, arch.in_channels).subset(160, 40)
    r = pretrain(arch, data, PretrainConfig(epochs=1, steps=7, batch_size=32))
    assert r.steps == 7 and len(r.loss_per_step) == 7 and len(r.loss_per_epoch) == 2
    assert r.stopped_by == "steps" and r.epochs_done == pytest.approx(1.4)
    assert pretrain(arch, data, PretrainConfig(epochs=1, batch_size=32)).steps == 5
    with pytest.raises(NasctlError, match="steps must be >= 1"):
        PretrainConfig(steps=0).validate()


@pytest.mark.slow
def test_pretraining_beats_the_random_init_backbone():
    """Contrastive pretraining learns features: the linear probe on the pretrained backbone
    beats the same probe on the untrained one (same arch and seed, BN recalibrated) by a clear
    margin. A small arch of the default space (sample 36, 24x24, 4.1 M MACs), 480 training
    digits, 12 epochs at batch 32 (180 steps, about 25 s here). Checked by hand on seeds 0-4:
    probe 0.877-0.933 against random init 0.401-0.480, margins 0.416-0.498; the bounds below
    sit well inside that."""
    arch = SearchSpace.load(DEFAULT_SPACE).sample(36)
    data = load_data("digits", arch.resolution, arch.in_channels).subset(480)
    cfg = PretrainConfig(epochs=12, batch_size=32, seed=0)
    _, m = pretrain_and_evaluate(arch, data, cfg, random_init_baseline=True)
    assert m["steps"] == 180
    pretrained, random_init = m["linear_probe_accuracy"], m["random_init_linear_probe_accuracy"]
    assert pretrained - random_init > 0.25, m
    assert pretrained > 0.75, m


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--loss", "infonce"], "unknown loss"),
        (["--gamma-momentum", "1.5"], "gamma momentum"),
        (["--temperature", "0"], "temperature"),
        (["--steps", "0"], "steps must be >= 1"),
        (["--epochs", "0"], "epochs must be >= 1"),
        (["--train-device", "tpu"], "unknown device"),
        pytest.param(
            ["--train-device", "cuda"],
            "no CUDA GPU here",
            marks=pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a CUDA GPU"),
        ),
    ],
)
def test_pretrain_bad_options_exit_2(extra, message):
    r = runner.invoke(app, ["pretrain", "--space", str(DEFAULT_SPACE), "--baseline", *extra])
    assert r.exit_code == 2 and message in r.output and "Traceback" not in r.output
    assert len(r.output.strip().splitlines()) == 1, r.output


def test_auto_device_is_cuda_when_there_is_one(monkeypatch):
    """Behaviour, with the GPU's presence faked both ways: ``auto`` follows it, ``cpu`` is
    the CPU either way, a CUDA device that is not there and an unknown name are one-line
    NasctlErrors (not CUDA tracebacks)."""

    def one_line_error(name, fragment):
        with pytest.raises(NasctlError) as info:
            resolve_device(name)
        text = str(info.value)
        assert fragment in text and "\n" not in text and name in text, text

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert resolve_device("auto") == torch.device("cuda")
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("cuda:0") == torch.device("cuda", 0)
    one_line_error("cuda:1", "only 1 CUDA GPU")

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    assert resolve_device("auto") == torch.device("cpu")
    assert resolve_device("cpu") == torch.device("cpu")
    for name in ("cuda", "cuda:0"):
        one_line_error(name, "no CUDA GPU here")
    for name in ("tpu", "gpu", "CPU", "meta", "xla", "cuda:x"):
        one_line_error(name, "unknown device")


@contextlib.contextmanager
def _no_tf32():
    """Full float32 on CUDA: TF32 off for cuDNN convolutions and cuBLAS matmuls, the flags
    restored after. (Not monkeypatch: the matmul flag lives behind ``__getattr__``/
    ``__setattr__``, which pytest's undo cannot restore.)"""
    cudnn, matmul = torch.backends.cudnn, torch.backends.cuda.matmul
    saved = (cudnn.allow_tf32, matmul.allow_tf32)
    cudnn.allow_tf32 = matmul.allow_tf32 = False
    try:
        yield
    finally:
        cudnn.allow_tf32, matmul.allow_tf32 = saved


def test_no_tf32_sets_and_restores_the_flags():
    """The helper the CUDA comparison relies on (the flags are settable without a GPU)."""
    cudnn, matmul = torch.backends.cudnn, torch.backends.cuda.matmul
    saved = (cudnn.allow_tf32, matmul.allow_tf32)
    try:
        for before in ((True, True), (True, False), (False, True)):
            cudnn.allow_tf32, matmul.allow_tf32 = before
            with _no_tf32():
                assert (cudnn.allow_tf32, matmul.allow_tf32) == (False, False)
            assert (cudnn.allow_tf32, matmul.allow_tf32) == before
            with pytest.raises(ZeroDivisionError), _no_tf32():
                1 / 0  # noqa: B018
            assert (cudnn.allow_tf32, matmul.allow_tf32) == before
    finally:
        cudnn.allow_tf32, matmul.allow_tf32 = saved


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (run on a GPU machine)")
def test_pretrain_on_cuda_matches_cpu():
    """Same seed, same batches and views (drawn on the CPU generator) on both devices: the
    first loss agrees to float32 tolerance and the run stays close; the probe runs on the GPU.

    What "equal" means here. The first loss is the monitor ``mean(-s_i+ + log Zbatch_i)`` of
    an untrained network whose embeddings are nearly collapsed: a difference of two terms of
    size about 1/t = 5 that comes out near 0.017. The bound below (about 1.2e-4 absolute) is
    2e-5 of those terms: float32 arithmetic in another order meets it; TF32 does not. TF32
    rounds conv and matmul inputs to a 10-bit mantissa (about 5e-4 relative), and cuDNN uses
    it for float32 convolutions by default on Ampere and later: on an H200 the first losses
    differed by 2.6e-4 (0.017190 cpu, 0.017451 cuda). So TF32 is turned off for this test
    (restored after it), making the GPU compute in full float32 like the CPU, and the first
    loss is compared tightly. Later steps are compared loosely: once the weights have moved,
    the runs part by the chaotic growth of round-off, whatever the precision."""
    arch = SearchSpace.load(DEFAULT_SPACE).baseline()
    data = load_data("digits", arch.resolution, arch.in_channels).subset(160, 160)
    runs = {}
    with _no_tf32():
        for dev in ("cpu", "cuda"):
            cfg = PretrainConfig(epochs=1, batch_size=32, seed=3, device=dev)
            result, metrics = pretrain_and_evaluate(arch, data, cfg)
            assert next(result.model.parameters()).device.type == dev
            runs[dev] = (result.loss_per_step, metrics)
    (cpu_loss, cpu_m), (gpu_loss, gpu_m) = runs["cpu"], runs["cuda"]
    assert len(cpu_loss) == len(gpu_loss) == 5
    assert abs(cpu_loss[0] - gpu_loss[0]) < 1e-3 * abs(cpu_loss[0]) + 1e-4, (cpu_loss, gpu_loss)
    assert np.allclose(cpu_loss, gpu_loss, rtol=0.05, atol=0.05), (cpu_loss, gpu_loss)
    assert abs(cpu_m["linear_probe_accuracy"] - gpu_m["linear_probe_accuracy"]) < 0.15
