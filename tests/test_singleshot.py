"""The weight-sharing supernet, its training (resume, two processes) and the singleshot search."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

from nasctl.space import SearchSpace


@pytest.fixture
def space(tiny_space_dict) -> SearchSpace:
    """Both kinds, elastic kernel, expansion 1 beside 3 (the fused-IBN's single conv and
    the IBN without expand), two widths, two depth multipliers, a stride-1 first stage."""
    d = dict(tiny_space_dict)
    d["stages"] = [
        {"depth": [1], "channels": 8, "stride": 1, "kind": ["ibn", "fused_ibn"], "kernel": [3], "expansion": [1]},
        {
            "depth": [1, 2],
            "channels": [16, 24],
            "stride": 2,
            "kind": ["ibn", "fused_ibn"],
            "kernel": [3, 5],
            "expansion": [1, 3],
        },
    ]
    d["output"] = {"classes": 4, "embedding_dim": 16}
    return SearchSpace.from_dict(d)


@pytest.fixture
def space_file(tmp_path, space):
    path = tmp_path / "tiny.yaml"
    space.save(path)
    return path


def _scramble(net) -> None:
    """Random weights and BatchNorm statistics everywhere (an untrained supernet's BN is
    the identity, which would hide a mis-sliced statistic)."""
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, t in net.state_dict().items():
            if t.dtype.is_floating_point:
                v = (
                    torch.rand(t.shape, generator=g) + 0.5
                    if "running_var" in name
                    else torch.randn(t.shape, generator=g)
                )
                t.copy_(v * (1 if "running" in name else 0.3))


def test_subnet_equals_the_supernet_path_and_has_the_builders_shapes(space):
    from nasctl.nn.builder import build_model
    from nasctl.nn.supernet import Supernet

    net = Supernet(space, resolution=16)
    _scramble(net)
    net.eval()
    rng = np.random.default_rng(0)
    archs = [net.largest(), net.smallest(), net.largest("ibn"), net.smallest("fused_ibn")]
    archs += [net.sample(rng) for _ in range(30)]
    assert len({a.id for a in archs}) > 25
    x = torch.randn(3, 3, 16, 16)
    for arch in archs:
        sub = net.subnet(arch).eval()
        ref = build_model(arch, head="embedding")
        assert {k: v.shape for k, v in sub.state_dict().items()} == {k: v.shape for k, v in ref.state_dict().items()}
        with torch.no_grad():
            torch.testing.assert_close(sub(x), net(x, arch), rtol=1e-5, atol=1e-5, msg=arch.to_string())
    # training mode too: BatchNorm on batch statistics, sliced alike
    arch = archs[5]
    sub = net.subnet(arch).train()
    net.train()
    with torch.no_grad():
        torch.testing.assert_close(sub(x), net(x, arch), rtol=1e-5, atol=1e-5)


def test_batchnorm_statistics_and_kernels_are_sliced_not_copied(space):
    """A narrow subnet in training mode updates the first entries of the running
    statistics only; a 3x3 kernel is the centre of the 5x5 one."""
    from nasctl.nn.supernet import Supernet

    net = Supernet(space, resolution=16).train()
    small = net.smallest()
    bn = net.positions[1][0]["ibn"].project.bn
    before = bn.running_mean.clone()
    net(torch.randn(4, 3, 16, 16), small)
    c = small.blocks[-1].out_channels
    assert c < len(before)
    assert (bn.running_mean[:c] != before[:c]).all()
    assert (bn.running_mean[c:] == before[c:]).all()
    layer = net.positions[1][0]["fused_ibn"].expand
    assert torch.equal(layer.weight(8, 8, 3), layer.conv.weight[:8, :8, 1:4, 1:4])


def test_sorting_channels_keeps_the_largest_subnets_and_orders_by_importance(space):
    from nasctl.nn.supernet import Supernet

    net = Supernet(space, resolution=16)
    _scramble(net)
    net.eval()
    x = torch.randn(2, 3, 16, 16)
    archs = [net.largest("ibn"), net.largest("fused_ibn")]
    with torch.no_grad():
        before = [net(x, a) for a in archs]
        net.sort_channels()
        for a, y in zip(archs, before, strict=True):
            torch.testing.assert_close(net(x, a), y, rtol=1e-5, atol=1e-5)
    proj = net.positions[1][1]["fused_ibn"].project.conv.weight.abs().sum(dim=(0, 2, 3))
    assert (proj[:-1] >= proj[1:]).all()
    # an IBN branch whose expansions are all above 1 sorts its middle channels too
    from nasctl.nn.supernet import DynamicIBN

    ibn = DynamicIBN(8, 8, 5, [2, 3], 1, "relu6")
    _scramble(ibn)
    ibn.eval()
    x = torch.randn(2, 8, 6, 6)
    with torch.no_grad():
        y = ibn(x, 5, 3, 8)
        ibn.sort_channels()
        torch.testing.assert_close(ibn(x, 5, 3, 8), y, rtol=1e-5, atol=1e-5)
    proj = ibn.project.conv.weight.abs().sum(dim=(0, 2, 3))
    assert (proj[:-1] >= proj[1:]).all()


def _train(space, out, stop_after=None, **kw):
    from nasctl.singleshot.train import SupernetConfig, train

    cfg = SupernetConfig(epochs=1, batch_size=64, resolution=16, checkpoint_every=5, **kw)
    return train(space, cfg, out, stop_after=stop_after)


def test_a_killed_training_resumes_from_its_last_checkpoint_and_ends_as_an_uninterrupted_one(space, tmp_path):
    from nasctl.singleshot.train import load_supernet, read_checkpoint

    torch.set_num_threads(1)
    whole, meta = _train(space, tmp_path / "whole.npz")
    assert meta["finished"] and meta["step"] == meta["total_steps"] == 19 and meta["sorted"]
    _, killed = _train(space, tmp_path / "cut.npz", stop_after=7)  # no checkpoint after step 5
    assert killed["step"] == 7
    saved, _ = read_checkpoint(tmp_path / "cut.npz")
    assert saved["step"] == 5 and not saved["finished"]  # what the kill lost: steps 6 and 7
    resumed, meta2 = _train(space, tmp_path / "cut.npz")
    assert meta2["finished"] and meta2["loss_per_step"] == pytest.approx(meta["loss_per_step"], rel=1e-4)
    for (k, a), b in zip(whole.state_dict().items(), resumed.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5, msg=k)
    loaded, _ = load_supernet(tmp_path / "cut.npz")
    for a, b in zip(loaded.state_dict().values(), resumed.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    from nasctl.errors import NasctlError

    with pytest.raises(NasctlError, match="another space or config"):
        _train(space, tmp_path / "cut.npz", distill=False)


def test_two_processes_train_data_parallel_and_keep_equal_weights(space_file, tmp_path):
    """torchrun with 2 CPU processes (gloo): every process ends with the same weights and
    BatchNorm statistics, which moved from the initialisation."""
    script = tmp_path / "ddp.py"
    script.write_text(
        textwrap.dedent(
            f"""
            import os, numpy as np, torch
            torch.set_num_threads(1)
            from nasctl.space import SearchSpace
            from nasctl.singleshot.train import SupernetConfig, train
            space = SearchSpace.load({str(space_file)!r})
            cfg = SupernetConfig(epochs=1, batch_size=32, resolution=16, checkpoint_every=100)
            net, meta = train(space, cfg, {str(tmp_path / "ddp.npz")!r})
            rank = os.environ["RANK"]
            np.savez({str(tmp_path)!r} + f"/rank{{rank}}.npz", **{{k: v.numpy() for k, v in net.state_dict().items()}})
            """
        )
    )
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(script)]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    a, b = np.load(tmp_path / "rank0.npz"), np.load(tmp_path / "rank1.npz")
    assert a.files == b.files
    for k in a.files:
        np.testing.assert_allclose(a[k], b[k], rtol=1e-6, atol=1e-7, err_msg=k)
    from nasctl.nn.supernet import Supernet
    from nasctl.singleshot.train import read_checkpoint

    torch.manual_seed(0)
    init = Supernet(SearchSpace.load(space_file), 16).state_dict()
    assert not np.allclose(init["stem.conv.weight"].numpy(), a["stem.conv.weight"])
    assert not np.allclose(init["stem.bn.running_mean"].numpy(), a["stem.bn.running_mean"])
    meta, _ = read_checkpoint(tmp_path / "ddp.npz")
    assert meta["world_size"] == 2 and meta["total_steps"] == 1259 // 64 and meta["finished"]


def test_singleshot_search_end_to_end(space_file, tmp_path, monkeypatch):
    """The CLI: train a supernet, search its subnets with it, fine-tune the best one (with
    a progress callback); winners carry their inherited weights (npz + ONNX). Bad
    checkpoints are one line, exit 2."""
    import onnxruntime as ort
    from typer.testing import CliRunner

    import nasctl.search.retrain as retrain_module
    from nasctl.cli import app

    callbacks, real_finetune = [], retrain_module.finetune_if_asked

    def spy(cfg, progress=None):
        callbacks.append(progress)
        return real_finetune(cfg, progress)

    monkeypatch.setattr(retrain_module, "finetune_if_asked", spy)

    torch.set_num_threads(1)
    ckpt = tmp_path / "sn.npz"
    run = CliRunner()
    r = run.invoke(
        app, ["supernet", "train", str(space_file), "--out", str(ckpt), "--epochs", "1", "--resolution", "16"]
    )
    assert r.exit_code == 0, r.output
    assert "trained supernet of tiny at 16x16, step 19/19" in " ".join(r.output.split())
    out = tmp_path / "run"
    args = ["search", str(space_file), "--strategy", "singleshot", "--supernet", str(ckpt), "--out", str(out)]
    args += ["--trials", "8", "--no-measure", "--estimator", "sim-npu-p16", "--top", "2"]
    r = run.invoke(app, [*args, "--finetune", "1", "--epochs", "1", "--batch-size", "64"])
    assert r.exit_code == 0, r.output
    summary = json.loads((out / "pareto.json").read_text())
    assert summary["counts"]["complete"] == 8 and summary["strategy"] == "singleshot"
    rows = [json.loads(json.dumps(r)) for r in summary["pareto"]]
    assert all("in_r16" in r["arch"] for r in rows)  # searched at the supernet's resolution
    assert all(0.3 < r["accuracy"] <= 1 for r in rows)  # a trained backbone probes well above chance (0.1)
    files = rows[0]["files"]
    assert [f.rsplit(".", 1)[1] for f in files] == ["json", "npz", "onnx"]
    sess = ort.InferenceSession(str(out / files[2]))
    y = sess.run(None, {"input": np.zeros((2, 3, 16, 16), np.float32)})[0]
    assert y.shape[0] == 2 and np.isfinite(y).all()
    assert len(callbacks) == 1 and callable(callbacks[0])  # the spinner names each winner
    ft = json.loads((out / "finetune.json").read_text())
    (w,) = ft["winners"]
    assert w["inherited_accuracy"] == max(r["accuracy"] for r in rows if r["trained"])
    assert 0 < w["from_inherited"]["accuracy_mean"] <= 1 and 0 < w["from_scratch"]["accuracy_mean"] <= 1
    assert "## Fine-tuned winners" in (out / "report.md").read_text()
    # bad input
    other = SearchSpace.load(space_file).to_dict()
    other["stem"]["channels"] = 16
    other_file = tmp_path / "other.yaml"
    SearchSpace.from_dict(other).save(other_file)
    r = run.invoke(
        app,
        ["search", str(other_file), "--strategy", "singleshot", "--supernet", str(ckpt), "--out", str(tmp_path / "o")],
    )
    assert r.exit_code == 2 and "a supernet of another space" in r.output and "Traceback" not in r.output
    r = run.invoke(app, ["search", str(space_file), "--finetune", "1", "--out", str(tmp_path / "m")])
    assert r.exit_code == 2 and "belong to --strategy singleshot" in r.output
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"not a zip")
    r = run.invoke(app, [*args[:5], str(bad), "--out", str(tmp_path / "b")])
    assert r.exit_code == 2 and "not a readable supernet checkpoint (not an .npz archive)" in r.output


def test_a_singleshot_search_trains_its_own_supernet_through_the_api(space, tmp_path):
    import nasctl

    torch.set_num_threads(1)
    space_file = space.with_resolution(16).save(tmp_path / "tiny16.yaml")
    res = nasctl.search(
        str(space_file),
        strategy="singleshot",
        supernet_epochs=1,
        trials=4,
        out=str(tmp_path / "r"),
        estimator="sim-npu-p16",
        measure=False,
    )
    assert (tmp_path / "r" / "supernet.npz").is_file()
    assert len(res.complete) == 4 and all("in_r16" in r.arch for r in res.complete)
    assert "inherited weights from the supernet" in (tmp_path / "r" / "report.md").read_text()
