"""Numerics that hold at every setting the CLI accepts: the losses in log space (finite at
tiny temperatures, equal to the linear formulas where those are finite), and a diverging
run that ends with one clear line."""

import json
import math

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from nasctl.cli import app
from nasctl.contrastive.losses import (
    GammaLoss,
    NTXentLoss,
    m_step_loss,
    m_step_loss_log,
    positive_and_log_partition,
    positive_and_partition,
    sample_log_u,
    sample_u,
    similarities,
)
from tests.conftest import DEFAULT_SPACE

runner = CliRunner()


def _near_collapse(n=8, d=16, seed=0):
    """Embeddings that are nearly all the same direction: every negative has cos close to 1,
    the worst case for exp(s / t)."""
    g = torch.Generator().manual_seed(seed)
    base = torch.randn(1, d, generator=g)
    z1 = (base + 1e-3 * torch.randn(n, d, generator=g)).requires_grad_()
    z2 = (base + 1e-3 * torch.randn(n, d, generator=g)).requires_grad_()
    return z1, z2


@pytest.mark.parametrize("t", [0.01, 0.005, 0.001])
def test_losses_and_gradients_are_finite_at_tiny_temperatures(t):
    z1, z2 = _near_collapse()
    idx = torch.arange(8)
    gamma = GammaLoss(n_samples=8, temperature=t, shape=8.0, momentum=0.9, generator=torch.Generator())
    for loss_fn in (NTXentLoss(t), gamma):
        for _ in range(2):  # the second step uses the stored (log) Zhat
            value, monitor = loss_fn(z1, z2, idx)
            (g1, g2) = torch.autograd.grad(value, (z1, z2))
            assert torch.isfinite(value) and math.isfinite(monitor), (loss_fn.name, t)
            assert torch.isfinite(g1).all() and torch.isfinite(g2).all(), (loss_fn.name, t)
    assert torch.isfinite(gamma.log_z_hat).all()


def test_log_partition_matches_the_direct_formula():
    g = torch.Generator().manual_seed(1)
    z1, z2 = torch.randn(5, 7, generator=g), torch.randn(5, 7, generator=g)
    s = similarities(z1, z2, 0.3)
    s_pos, log_zb = positive_and_log_partition(s)
    for i in range(10):
        others = [j for j in range(10) if j != i and j != (i + 5) % 10]  # not itself, not its positive
        assert float(s_pos[i]) == pytest.approx(float(s[i, (i + 5) % 10]))
        assert float(log_zb[i]) == pytest.approx(
            math.log(np.mean([math.exp(float(s[i, j])) for j in others])), rel=1e-5
        )
    assert torch.allclose(positive_and_partition(s)[1], torch.exp(log_zb))


def test_log_space_m_step_has_the_linear_value_and_gradient():
    g = torch.Generator().manual_seed(2)
    z = torch.randn(12, 6, generator=g, requires_grad=True)
    z_hat = torch.rand(12, generator=g) + 0.5
    s = similarities(z[:6], z[6:], 0.4)
    u = sample_u(z_hat, 4.0, np.random.default_rng(0))
    log_u = sample_log_u(torch.log(z_hat), 4.0, np.random.default_rng(0))  # same draws
    assert torch.allclose(log_u, torch.log(u), atol=1e-6)
    lin = m_step_loss(*positive_and_partition(s), u)
    log = m_step_loss_log(*positive_and_log_partition(s), log_u)
    (g_lin,) = torch.autograd.grad(lin, z, retain_graph=True)
    (g_log,) = torch.autograd.grad(log, z)
    assert float(log.detach()) == pytest.approx(float(lin.detach()), rel=1e-5)
    assert torch.allclose(g_log, g_lin, rtol=1e-4, atol=1e-6)


def test_gamma_loss_at_tiny_temperature_trains_from_the_cli(tmp_path):
    """The CLI accepts any temperature > 0: t = 0.01 trains to a finite loss."""
    args = ["pretrain", "--space", str(DEFAULT_SPACE), "--baseline", "--loss", "gamma", "--temperature", "0.01"]
    r = runner.invoke(app, [*args, "--epochs", "1", "--subset", "120", "--no-random-init", "--out", str(tmp_path)])
    assert r.exit_code == 0, r.output
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert math.isfinite(metrics["final_loss"]) and all(math.isfinite(v) for v in metrics["loss_per_step"])


def test_a_diverging_run_ends_with_one_clear_line(tmp_path):
    args = ["pretrain", "--space", str(DEFAULT_SPACE), "--baseline", "--lr", "1e9", "--epochs", "3"]
    r = runner.invoke(app, [*args, "--subset", "100", "--no-random-init", "--json", "--out", str(tmp_path)])
    assert r.exit_code == 2, r.output
    lines = r.output.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in r.output, r.output
    assert lines[0].startswith("error: training diverged:") and "at step" in lines[0] and "try a lower --lr" in lines[0]
