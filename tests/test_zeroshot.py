"""Zero-shot scores, the zeroshot strategy and proxy-eval."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from nasctl.space import SearchSpace


@pytest.fixture
def space(tiny_space_dict) -> SearchSpace:
    d = dict(tiny_space_dict)
    d["output"] = {"classes": 4, "embedding_dim": 16}
    return SearchSpace.from_dict(d)


@pytest.fixture
def space_file(tmp_path, space):
    path = tmp_path / "tiny.yaml"
    space.save(path)
    return path


@pytest.fixture(scope="module")
def batch16():
    from nasctl.contrastive import load_data
    from nasctl.zeroshot.proxies import make_batch

    return make_batch(load_data("digits", 16, 3, seed=0), 16, 0)


def small_and_big(space):
    """The space's smallest arch and its largest (at one resolution)."""
    small = space.resolve({**space.smallest_params(0), "resolution": 16})
    big_params = {k: v[-1] for k, v in space.parameters().items()}
    big_params["resolution"] = 16
    return small, space.resolve(big_params)


def test_every_score_is_deterministic_for_a_seed_and_tells_archs_apart(space, batch16):
    from nasctl.zeroshot.proxies import PROXIES, compute

    small, big = small_and_big(space)
    assert small.id != big.id
    for name in PROXIES:
        a1 = compute(name, small, batch16, 0)
        a2 = compute(name, small, batch16, 0)
        b = compute(name, big, batch16, 0)
        assert a1 == a2, name  # bit for bit
        assert set(a1) == set(PROXIES[name].parts), name
        assert all(math.isfinite(v) for v in a1.values()), (name, a1)
        assert a1 != b, name  # a 1-block and a 3-block net differ on every score


def test_scores_change_with_the_init_seed_only_where_they_read_weights(space, batch16):
    from nasctl.zeroshot.proxies import compute

    _, big = small_and_big(space)
    assert compute("grad_norm", big, batch16, 0) != compute("grad_norm", big, batch16, 1)
    assert compute("params", big, batch16, 0) == compute("params", big, batch16, 1)


def test_naswot_matches_the_definition_on_a_hand_made_code():
    """K = sum c c^T + (1-c)(1-c)^T: the Hamming form the code uses must agree."""
    import torch

    from nasctl.zeroshot import proxies

    layers = [torch.rand(6, n, generator=torch.Generator().manual_seed(n)) > 0.5 for n in (40, 25)]

    class Net(torch.nn.Module):
        def __init__(self, layers):
            super().__init__()
            self.layers = layers
            self.acts = torch.nn.ModuleList(torch.nn.ReLU() for _ in layers)

        def forward_features(self, x):
            return [act(c.float() * 2 - 1) for act, c in zip(self.acts, self.layers, strict=True)]

    k = sum(c.double() @ c.double().T + (1 - c.double()) @ (1 - c.double()).T for c in layers)
    batch = proxies.ProxyBatch(torch.zeros(6, 1, 1, 1), None, (None, None), 2)
    assert proxies.naswot(Net(layers), batch, 0) == pytest.approx(float(torch.linalg.slogdet(k)[1]), abs=1e-9)
    # SWAP: each neuron's pattern over the samples, distinct over the whole network
    patterns = {tuple(col.tolist()) for c in layers for col in c.T}
    assert proxies.swap(Net(layers), batch, 0) == len(patterns)
    codes = torch.tensor([[1, 0, 1, 1], [1, 1, 0, 0], [0, 0, 1, 1]], dtype=torch.bool)
    # by hand: patterns (1,1,0), (0,1,0), (1,0,1), (1,0,1) -> 3 distinct
    assert proxies.swap(Net([codes]), proxies.ProxyBatch(torch.zeros(3, 1, 1, 1), None, (None, None), 2), 0) == 3


def test_a_nan_network_gets_the_worst_score_and_a_warning(space, monkeypatch):
    import torch

    import nasctl.nn.builder as builder
    from nasctl.search.scorers.proxy import ProxyScore

    real = builder.build_model

    def poisoned(arch, head="classifier", seed=None):
        m = real(arch, head, seed)
        with torch.no_grad():
            m.stem[0].weight.fill_(float("nan"))
        return m

    monkeypatch.setattr(builder, "build_model", poisoned)
    _, big = small_and_big(space)
    for proxy in ("grad_norm", "zico", "synflow", "meco", "aznas", "vote:naswot,snip"):
        s = ProxyScore(proxy, reference_size=8)
        s._space = space
        if proxy in ("aznas", "vote:naswot,snip"):  # a clean reference sample to rank against
            monkeypatch.setattr(builder, "build_model", real)
            s.reference()
            monkeypatch.setattr(builder, "build_model", poisoned)
        out = s(big)
        if proxy in ("grad_norm", "zico", "synflow", "vote:naswot,snip"):
            assert out["score"] == ProxyScore.worst, proxy
        if out["score"] == ProxyScore.worst:
            assert "non-finite" in out["proxy_warning"], proxy
        else:
            assert math.isfinite(out["score"]) and out["proxy_warning"] is None, proxy


def test_a_ranked_score_ranks_against_a_fixed_reference(space, tmp_path):
    from nasctl.search.scorers.proxy import REFERENCE_FILE, ProxyScore

    s1 = ProxyScore("vote:naswot,params", reference_size=8, out=tmp_path)
    s1._space = space
    arch = space.sample(3)
    v1 = s1(arch)["score"]
    saved = json.loads((tmp_path / REFERENCE_FILE).read_text())
    assert len(saved["raw"]["naswot"]) == 8
    # a second scorer (a resumed run) reads the same reference and gives the same value
    s2 = ProxyScore("vote:naswot,params", reference_size=8, out=tmp_path)
    s2._space = space
    assert s2(arch)["score"] == v1
    assert 0 < v1 < 1
    # and a run elsewhere draws the same reference sample: the value is the arch's alone
    s3 = ProxyScore("vote:naswot,params", reference_size=8, out=tmp_path / "elsewhere")
    s3._space = space
    assert s3(arch)["score"] == v1
    for other in space.samples(3, seed=9):  # scoring other archs first changes nothing
        s3(other)
    assert s3(arch)["score"] == v1


def test_proxy_specs_are_checked():
    from nasctl.zeroshot.proxies import resolve

    assert resolve("vote:naswot,zico") == ["naswot", "zico"]
    for bad in ("nope", "vote:naswot", "vote:naswot,naswot", "vote:naswot,nope"):
        with pytest.raises(ValueError):
            resolve(bad)


def test_rank_statistics():
    from nasctl.zeroshot.evaluate import beats_baselines, correlations, top_precision

    acc = np.arange(20, dtype=float)
    assert top_precision(acc, acc) == 1.0
    assert top_precision(-acc, acc) == 0.0
    c = correlations(acc * 3 + 1, acc)
    assert c["kendall_tau"] == pytest.approx(1.0) and c["spearman_rho"] == pytest.approx(1.0)
    r = correlations(-acc, acc)
    assert r["kendall_tau"] == pytest.approx(-1.0)
    noisy = acc + np.random.default_rng(0).normal(0, 6, 20)
    n = correlations(noisy, acc)
    assert n["tau_ci95"][0] < n["kendall_tau"] < n["tau_ci95"][1]
    table = {
        "params": {"kendall_tau": 0.3, "tau_ci95": [0.1, 0.5]},
        "flops": {"kendall_tau": 0.35, "tau_ci95": [0.1, 0.5]},
        "a": {"kendall_tau": 0.5, "tau_ci95": [0.3, 0.7]},
        "b": {"kendall_tau": 0.7, "tau_ci95": [0.4, 0.9]},
        "c": {"kendall_tau": 0.2, "tau_ci95": [0.0, 0.4]},
    }
    assert beats_baselines(table) == {"baseline_tau": 0.35, "higher_tau": ["b", "a"], "interval_above": ["b"]}


def test_zeroshot_search_end_to_end_resumes_and_reuses_scores(space_file, tmp_path, monkeypatch):
    """The CLI: a tiny zero-shot search through the shared core (journal storage,
    batched writes), its outputs, then a resumed run that adds trials. Archs at
    resolution 24 are given NaN weights: they must be scored worst, with a warning, and
    stay off the Pareto set."""
    import torch
    from typer.testing import CliRunner

    import nasctl.nn.builder as builder
    from nasctl.cli import app

    real = builder.build_model

    def poisoned(arch, head="classifier", seed=None):
        m = real(arch, head, seed)
        if arch.resolution == 24:
            with torch.no_grad():
                m.stem[0].weight.fill_(float("nan"))
        return m

    monkeypatch.setattr(builder, "build_model", poisoned)

    out = tmp_path / "run"
    args = ["search", str(space_file), "--strategy", "zeroshot", "--out", str(out), "--no-measure"]
    args += ["--proxy", "vote:naswot,params", "--reference", "8", "--proxy-batch", "8", "--estimator", "sim-npu-p16"]
    r = CliRunner().invoke(app, [*args, "--trials", "30"])
    assert r.exit_code == 0, r.output
    for f in ("study.log", "reference.json", "trials.csv", "pareto.json", "report.md", "pareto.png"):
        assert (out / f).is_file(), f
    first = json.loads((out / "pareto.json").read_text())
    assert first["counts"]["complete"] == 30
    assert first["strategy"] == "zeroshot" and first["best_vs_baseline"] is None
    with open(out / "study.log", "ab") as f:  # a write cut short by a kill
        f.write(b'{"op_code": 5, "worker_id": "x", "trial_id": 3')
    r = CliRunner().invoke(app, [*args, "--trials", "45", "--json"])
    assert r.exit_code == 0, r.output
    import csv

    rows = list(csv.DictReader((out / "trials.csv").open()))
    assert len(rows) == 45 and rows[0]["baseline"] == "True"
    scored = [r for r in rows if r["trained"] == "True"]
    broken = [r for r in scored if "in_r24" in r["arch"]]
    assert broken and len(broken) < len(scored)
    for r in broken:
        assert float(r["score"]) == -1e9 and "non-finite" in r["proxy_warning"]
    assert all(0 < float(r["score"]) < 1 for r in scored if r not in broken)
    pareto = json.loads((out / "pareto.json").read_text())["pareto"]
    assert pareto and all("in_r24" not in p["arch"] for p in pareto)
    twins = [r for r in rows if r["duplicate_of"]]
    by_number = {r["number"]: r for r in rows}
    for t in twins:  # the tiny space repeats archs: a twin reuses its original's score
        assert t["score"] == by_number[t["duplicate_of"]]["score"]
        assert t["proxy_seconds"] == by_number[t["duplicate_of"]]["proxy_seconds"]  # not scored again
        assert t["arch_id"] == by_number[t["duplicate_of"]]["arch_id"]
    assert twins, "45 trials over a 96-arch space should repeat an arch"


def test_zeroshot_bad_options_are_one_line_errors(space_file, tmp_path):
    from typer.testing import CliRunner

    from nasctl.cli import app

    base = ["search", str(space_file), "--out", str(tmp_path / "x"), "--trials", "2"]
    for extra, words in (
        (["--strategy", "zeroshot", "--proxy", "nope"], "unknown score 'nope'"),
        (["--strategy", "zeroshot", "--proxy", "vote:naswot"], "at least two"),
        (["--proxy", "naswot"], "zeroshot"),
    ):
        r = CliRunner().invoke(app, [*base, *extra])
        assert r.exit_code == 2, (extra, r.output)
        assert words in r.output and "Traceback" not in r.output


def test_proxy_eval_end_to_end_caches_and_extends(space_file, tmp_path):
    from sklearn.datasets import load_digits
    from typer.testing import CliRunner

    from nasctl.cli import app
    from nasctl.zeroshot.evaluate import SCORE_FILE, TRAIN_FILE

    digits = load_digits()  # 300 real digits keep the trainings and probes short
    data = tmp_path / "digits300.npz"
    np.savez(data, x=digits.images[:300].astype(np.float32) / 16, y=digits.target[:300])
    out = tmp_path / "pe"
    args = ["proxy-eval", str(space_file), "--out", str(out), "--epochs", "1", "--seeds", "0,1", "--data", str(data)]
    args += ["--proxy-batch", "8", "--reference", "8", "--loss", "ntxent"]
    args += ["--proxies", "naswot,synflow,zico,aznas,params,flops"]  # a ranked score, and the vote's members
    r = CliRunner().invoke(app, [*args, "--archs", "4", "--json"])
    assert r.exit_code == 0, r.output
    res = json.loads(r.stdout)
    assert set(res["table"]) == {"naswot", "synflow", "zico", "aznas", "params", "flops", "vote:synflow,zico,naswot"}
    assert res["seed_ceiling"] is not None and len(res["archs"]) == 4
    assert (out / "proxy_eval.png").stat().st_size > 0
    trained = (out / TRAIN_FILE).read_text().splitlines()
    assert len(trained) == 8
    n_scores = len((out / SCORE_FILE).read_text().splitlines())
    r = CliRunner().invoke(app, [*args, "--archs", "5", "--json"])
    assert r.exit_code == 0, r.output
    assert len((out / TRAIN_FILE).read_text().splitlines()) == 10  # one new arch, two seeds
    assert len((out / SCORE_FILE).read_text().splitlines()) == n_scores + 6  # its six scores
    assert json.loads(r.stdout)["archs"][:4] == res["archs"]  # the first four kept, not retrained


def test_loss_scores_use_the_contrastive_loss_on_unlabelled_data(space, batch16):
    """Without labels, grad_norm / snip / zico read NT-Xent of the two views: finite,
    deterministic, and not the labelled value."""
    from dataclasses import replace

    from nasctl.zeroshot.proxies import PROXIES, compute

    unlabelled = replace(batch16, y=None)
    _, big = small_and_big(space)
    for name in ("grad_norm", "snip", "zico"):
        assert PROXIES[name].uses_labels
        v = compute(name, big, unlabelled, 0)[name]
        assert math.isfinite(v) and v == compute(name, big, unlabelled, 0)[name]
        assert v != compute(name, big, batch16, 0)[name]


def test_a_large_front_is_measured_only_for_its_best_scored_archs(space_file, tmp_path, monkeypatch):
    """A continuous score (flops) puts many archs on the front: only the first
    MEASURE_MAX by score are timed (and the baseline); the rest show none, and the
    report says so."""
    import nasctl.search.results as results
    from nasctl.api import search

    timed: list[str] = []

    def fake_measure(archs, rounds=3, threads=1):
        timed.extend(archs)
        return dict.fromkeys(archs, 1.0)

    monkeypatch.setattr(results, "measure_latencies", fake_measure)
    monkeypatch.setattr(results, "MEASURE_MAX", 3)
    res = search(str(space_file), strategy="zeroshot", proxy="flops", trials=40, out=str(tmp_path / "r"), top=2)
    assert len(res.pareto) > 3
    assert len(timed) == 4 and "baseline" in timed
    assert [r.measured_latency_ms is not None for r in res.pareto] == [True] * 3 + [False] * (len(res.pareto) - 3)
    summary = json.loads((tmp_path / "r" / "pareto.json").read_text())
    assert summary["measured_pareto"] == 3
    assert f"the 3 best-scored of the {len(res.pareto)} Pareto archs" in (tmp_path / "r" / "report.md").read_text()


def test_a_run_folder_from_before_the_zeroshot_settings_still_resumes(space_file, tmp_path):
    from nasctl.search import make_config

    cfg = make_config(space_file, out=tmp_path / "old", trials=2)
    saved = cfg.to_dict()
    for key in ("proxy", "proxy_batch", "reference_size"):
        saved.pop(key)
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "search.json").write_text(json.dumps(saved))
    cfg.check_resumable()  # no "other settings (proxy_batch)" error
    with pytest.raises(Exception, match="other settings"):
        make_config(space_file, out=tmp_path / "old", trials=2, proxy_batch=8).check_resumable()
