"""The four contrastive losses as separate parts: DCL and SogCLR against direct computations
on a hand-made batch, Gamma's estimates started by a pass over the data, and runs of
different losses with one seed drawing the same batches and views."""

import importlib
import math

import numpy as np
import pytest
import torch

from nasctl.contrastive import LOSSES, PretrainConfig, load_data, pretrain
from nasctl.contrastive.augment import AugmentConfig
from nasctl.contrastive.data import ImageData
from nasctl.contrastive.losses import DCLLoss, GammaLoss, SogCLRLoss, make_loss
from nasctl.contrastive.pretrain import initial_log_partitions
from nasctl.space import SearchSpace
from tests.conftest import DEFAULT_SPACE

T = 0.5
# the module (the package exports a function of the same name)
pretrain_module = importlib.import_module("nasctl.contrastive.pretrain")


def _batch(seed=0, n=3, d=4):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=g, requires_grad=True), torch.randn(n, d, generator=g, requires_grad=True)


def _direct_terms(z1, z2, t):
    """Per anchor of the 2N views, written out with Python loops: ``s_i+`` and the mean of
    ``exp(s_ij)`` over the 2N - 2 negatives (not itself, not its positive)."""
    views = [v / v.norm() for v in list(z1) + list(z2)]
    n2 = len(views)
    s_pos, z_batch = [], []
    for i in range(n2):
        pos = (i + n2 // 2) % n2
        s_pos.append(views[i] @ views[pos] / t)
        negs = [torch.exp(views[i] @ views[j] / t) for j in range(n2) if j not in (i, pos)]
        z_batch.append(sum(negs) / len(negs))
    return torch.stack(s_pos), torch.stack(z_batch)


def test_dcl_matches_a_direct_computation():
    z1, z2 = _batch()
    value, monitor = DCLLoss(T)(z1, z2)
    s_pos, z_batch = _direct_terms(z1, z2, T)
    direct = (-s_pos + torch.log(z_batch)).mean()
    assert float(value.detach()) == pytest.approx(float(direct.detach()), rel=1e-5) and monitor == pytest.approx(
        float(direct.detach()), rel=1e-5
    )
    g_loss = torch.autograd.grad(value, (z1, z2))
    g_direct = torch.autograd.grad(direct, (z1, z2))
    for a, b in zip(g_loss, g_direct, strict=True):
        assert torch.allclose(a, b, atol=1e-5)


def test_sogclr_matches_a_direct_computation_and_moves_its_estimate():
    """``u_i = 1 / Zhat_i`` from the estimate held before the batch: value and gradient are
    those of ``mean(-s_i+ + Zbatch_i / Zhat_i)``, and the estimate then moves by the momentum."""
    z1, z2 = _batch(1)
    loss = SogCLRLoss(n_samples=5, temperature=T, momentum=0.25)
    z_hat = torch.tensor([0.5, 1.0, 2.0, 3.0, 4.0])
    loss.init_estimates(torch.log(z_hat))
    idx = torch.tensor([4, 0, 2])
    value, _ = loss(z1, z2, idx)
    s_pos, z_batch = _direct_terms(z1, z2, T)
    direct = (-s_pos + z_batch / z_hat[idx].repeat(2)).mean()
    assert float(value.detach()) == pytest.approx(float(direct.detach()), rel=1e-5)
    for a, b in zip(torch.autograd.grad(value, (z1, z2)), torch.autograd.grad(direct, (z1, z2)), strict=True):
        assert torch.allclose(a, b, atol=1e-5)
    per_sample = 0.5 * (z_batch[:3] + z_batch[3:]).detach()
    assert torch.allclose(loss.z_hat[idx], 0.75 * z_hat[idx] + 0.25 * per_sample, rtol=1e-5)
    assert torch.allclose(loss.z_hat[[1, 3]], z_hat[[1, 3]])  # samples not in the batch keep theirs


def test_gamma_draws_average_to_sogclr():
    """gamma's weights are Gamma draws with mean ``1 / Zhat``: averaged over many draws its
    M-step value is sogclr's (the same estimates, the same batch)."""
    z1, z2 = _batch(2)
    idx = torch.arange(3)
    log_z = torch.log(torch.tensor([0.7, 1.3, 2.1]))
    sog = SogCLRLoss(3, T, momentum=0.5)
    sog.init_estimates(log_z)
    target = float(sog(z1, z2, idx)[0].detach())
    gam, values = GammaLoss(3, T, shape=2.0, momentum=0.5, generator=0), []
    with torch.no_grad():
        for _ in range(4000):
            gam.init_estimates(log_z)  # the same estimates before every draw
            values.append(float(gam(z1, z2, idx)[0]))
    assert abs(np.mean(values) - target) < 4 * np.std(values) / math.sqrt(len(values))  # within 4 standard errors
    assert np.std(values) > 0.05  # they are draws, not the mean


def test_started_estimates_are_used_from_the_first_batch():
    """After ``init_estimates`` the first batch's weights come from those estimates, not from
    the batch's own mean (which would make u depend on the batch)."""
    z1, z2 = _batch(3)
    loss = SogCLRLoss(3, T)
    z_hat = torch.tensor([5.0, 0.2, 1.0])
    loss.init_estimates(torch.log(z_hat))
    value, _ = loss(z1, z2, torch.arange(3))
    s_pos, z_batch = _direct_terms(z1, z2, T)
    assert float(value.detach()) == pytest.approx(float((-s_pos + z_batch / z_hat.repeat(2)).mean().detach()), rel=1e-5)


def test_initial_pass_is_the_mean_over_all_other_samples():
    """With identity views, no BatchNorm and fewer samples than ``INIT_NEGATIVES``, the
    initial estimate is exactly ``log mean_{j != i} exp(s_ij)`` over every other train sample;
    samples outside the train split get the train mean; BatchNorm's running statistics of a
    model that has them are left as they were."""
    g = torch.Generator().manual_seed(0)
    x = torch.rand(30, 1, 4, 4, generator=g)
    data = ImageData("t", x, None, [], train=np.arange(20), val=np.arange(20, 25), test=np.arange(25, 30))
    ident = AugmentConfig(
        min_scale=1.0, max_aspect=1.0, rotation_deg=0.0, shear_deg=0.0, flip=False, jitter_p=0.0, noise_std=0.0
    )
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 5))
    log_z = initial_log_partitions(model, data, ident, 4, T, seed=0, device=torch.device("cpu"))
    with torch.no_grad():
        z = torch.nn.functional.normalize(model(x[:20]), dim=1)
        s = z @ z.T / T
    direct = [math.log(np.mean([math.exp(float(s[i, j])) for j in range(20) if j != i])) for i in range(20)]
    assert np.allclose(log_z[:20].numpy(), direct, atol=1e-5)
    assert torch.allclose(log_z[20:], torch.logsumexp(log_z[:20], 0) - math.log(20))
    bn_model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 5), torch.nn.BatchNorm1d(5))
    before = {k: v.clone() for k, v in bn_model.state_dict().items()}
    initial_log_partitions(bn_model, data, ident, 4, T, seed=0, device=torch.device("cpu"))
    assert all(torch.equal(before[k], v) for k, v in bn_model.state_dict().items())


def test_make_loss_knows_the_four_losses():
    assert set(LOSSES) == {"gamma", "sogclr", "dcl", "ntxent"}
    for name in LOSSES:
        assert make_loss(name, 10).name == name
    with pytest.raises(ValueError, match="unknown loss"):
        make_loss("simclr", 10)


def test_runs_of_different_losses_with_one_seed_draw_the_same_batches_and_views(monkeypatch):
    """The training generator gives the batches and views; the Gamma draws and the initial
    pass of gamma / sogclr take from streams of their own, so every loss sees the same."""
    arch = SearchSpace.load(DEFAULT_SPACE).sample(36)
    data = load_data("digits", arch.resolution, arch.in_channels).subset(96, 16)
    real = pretrain_module.two_views
    seen: dict[str, list] = {}

    def recording(x, cfg, gen):
        v1, v2 = real(x, cfg, gen)
        calls.append((gen, torch.cat([x, v1, v2])))
        return v1, v2

    monkeypatch.setattr(pretrain_module, "two_views", recording)
    for loss in LOSSES:
        calls: list = []
        pretrain(arch, data, PretrainConfig(loss=loss, steps=4, batch_size=16, seed=3))
        train_gen = calls[-1][0]  # the last call is a training step
        seen[loss] = [t for gen, t in calls if gen is train_gen]
        assert len(seen[loss]) == 4, loss
    for loss in LOSSES[1:]:
        assert all(torch.equal(a, b) for a, b in zip(seen[LOSSES[0]], seen[loss], strict=True)), loss


def test_cli_defaults_are_the_library_defaults():
    """``nasctl pretrain``'s loss options default to ``PretrainConfig``'s (the values the
    defaults sweep chose), so the command and the Python API train the same way."""
    import inspect

    from nasctl.cli.pretrain import pretrain as pretrain_command

    params = inspect.signature(pretrain_command).parameters
    defaults = PretrainConfig()
    for name in ("loss", "lr", "temperature", "gamma_shape", "gamma_momentum", "batch_size", "epochs"):
        assert params[name].default == getattr(defaults, name), name


def test_the_initial_pass_does_not_use_up_the_time_budget(monkeypatch):
    """gamma's pass over the data comes before the budget's clock: a budget shorter than the
    pass still trains (a search's short per-trial budgets on a loaded machine), and the
    pass's time is counted in the training seconds."""
    import time

    real = pretrain_module.initial_log_partitions

    def slow(*args, **kwargs):
        time.sleep(0.5)
        return real(*args, **kwargs)

    monkeypatch.setattr(pretrain_module, "initial_log_partitions", slow)
    arch = SearchSpace.load(DEFAULT_SPACE).sample(36)
    data = load_data("digits", arch.resolution, arch.in_channels).subset(64, 16)
    r = pretrain(arch, data, PretrainConfig(loss="gamma", epochs=50, batch_size=16, time_budget_s=0.3))
    assert r.steps >= 1 and r.stopped_by == "time_budget"
    assert r.init_seconds >= 0.5 and r.seconds >= r.init_seconds
