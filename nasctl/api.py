"""nasctl's Python API: what the command line does, as functions.

>>> import nasctl
>>> space = nasctl.SearchSpace.load("mobilenetv2_32")          # a shipped space, or a YAML path
>>> est = nasctl.estimate(space.baseline(), estimator="cpu")    # no hardware in the loop
>>> est.latency_ms, est.params, est.peak_activation_bytes       # doctest: +SKIP

``estimate`` takes an ``Arch``, an arch string, an ``arch.json``, an ONNX file or an
``onnx.ModelProto``; ``pretrain`` trains an arch contrastively and probes it; ``search``
runs a whole search and returns its ``SearchResult``.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nasctl.arch import Arch
from nasctl.errors import NasctlError

if TYPE_CHECKING:
    from nasctl.latency.api import Estimate
    from nasctl.search.results import SearchResult
    from nasctl.space import SearchSpace


def as_arch(arch: Arch | str | Path) -> Arch:
    """An ``Arch`` from an Arch, an arch string (``stem_.. | ibn_..``) or an arch.json path."""
    if isinstance(arch, Arch):
        return arch
    text = str(arch)
    return Arch.from_string(text) if "|" in text else Arch.load(text)


def pick_arch(
    arch: Arch | str | Path | None = None,
    space: SearchSpace | str | Path | None = None,
    seed: int = 0,
    baseline: bool = False,
) -> Arch:
    """One arch: given directly (``arch``), or taken from ``space`` (its baseline, or a sample
    drawn with ``seed``). Exactly one of ``arch`` and ``space``."""
    from nasctl.space import SearchSpace

    if (arch is None) == (space is None):
        raise NasctlError("give either ARCH (an arch.json or arch string) or --space SPACE.yaml")
    if arch is not None:
        if baseline:
            raise NasctlError("--baseline goes with --space, not with ARCH")
        return as_arch(arch)
    sp = space if isinstance(space, SearchSpace) else SearchSpace.load(space)
    return sp.baseline() if baseline else sp.sample(seed)


def estimate(
    model: Arch | str | Path | Any,
    estimator: str | Path = "cpu",
    *,
    head: str = "classifier",
    measure: bool = False,
    threads: int = 1,
) -> Estimate:
    """Latency (sum of per-kernel predictions), parameters and peak activation memory of a
    model, with no hardware in the loop.

    ``model``: an ``Arch``, an arch string, an ``arch.json``, an ``.onnx`` file or an
    ``onnx.ModelProto``. ``estimator``: a shipped one (``cpu``, ``sim-npu-p16``,
    ``sim-npu-p32``) or an estimator file; when it was measured on another CPU model or
    onnxruntime version than this machine's, the first of ``warnings`` says so. With
    ``measure``, the model is also timed with onnxruntime on this CPU (``threads``
    intra-op threads): ``measured_ms`` and ``error_pct`` are then set, and the fixed
    reference network is timed around it; where the estimator records the reference's
    time when its rows were measured, ``at_reference_speed_ms`` is the measurement
    rescaled to that speed (a shared machine's speed drifts by tens of percent)."""
    from nasctl.latency.api import estimate_arch, estimate_onnx, estimator_path, load_estimator
    from nasctl.latency.estimator import machine_mismatch

    est = load_estimator(estimator)
    is_arch = isinstance(model, Arch) or (isinstance(model, str | Path) and _is_arch_text(str(model)))
    arch = as_arch(model) if is_arch else None
    result = estimate_arch(arch, est, head) if arch is not None else estimate_onnx(model, est)
    result.estimator = {"path": str(estimator_path(estimator)), "device": est.device}
    adaptation = est.meta.get("adaptation")
    if adaptation:  # adapted to a machine by `nasctl measure --quick`: what error it expects
        expected = adaptation.get("expected", {})
        result.estimator["adapted"] = {
            "from": est.meta.get("adapted_from", {}).get("source"),
            "networks": expected.get("networks"),
            "expected_mape": expected.get("adapted", {}).get("mape"),
            "unadapted_mape": expected.get("unadapted", {}).get("mape"),
        }
    other = machine_mismatch(est.device)
    if other:
        result.warnings.insert(0, other)
    if measure:
        if est.device.get("simulated"):
            raise NasctlError("--measure times on this CPU; the estimator is for the simulated sim-npu")
        from nasctl.latency.measure import reference_time

        before = reference_time(threads)
        result.set_measured(*_time_model(model if arch is None else arch, head, threads))
        result.reference_now_ms = (before + reference_time(threads)) / 2
        result.reference_estimator_ms = est.device.get("reference_ms")
    return result


def _is_arch_text(text: str) -> bool:
    return "|" in text or text.endswith(".json")


def _time_model(model: Any, head: str, threads: int) -> tuple[float, float]:
    """Median and std (ms) of onnxruntime runs of an Arch (exported first), a file or a ModelProto."""
    from nasctl.latency.measure import time_onnx

    with tempfile.TemporaryDirectory(prefix="nasctl-estimate-") as tmp:
        if isinstance(model, Arch):
            from nasctl.nn.builder import build_model
            from nasctl.nn.export import export_onnx

            path = str(export_onnx(build_model(model, head=head), Path(tmp) / "m.onnx"))
        elif isinstance(model, str | Path):
            path = str(model)
        else:
            import onnx

            path = str(Path(tmp) / "m.onnx")
            onnx.save(model, path)
        med, std, _ = time_onnx(path, threads)
    return med, std


def pretrain(
    arch: Arch | str | Path,
    *,
    data: str = "digits",
    out: str | Path | None = None,
    subset: int | None = None,
    random_init: bool = True,
    min_scale: float = 0.3,
    flip: bool | None = None,
    progress=None,
    **config: Any,
) -> dict[str, Any]:
    """Pretrain ``arch`` contrastively (no labels) on ``data`` (``digits``, a ``.npz`` or an
    image folder), then score the frozen backbone by a linear probe and kNN. ``config``:
    the ``PretrainConfig`` fields (``loss``, ``epochs``, ``batch_size``, ``lr``,
    ``temperature``, ``time_budget_s``, ``seed``, ``device``, ...). ``subset``: at most that
    many images of each split. With ``out``, the run folder is written (arch.json,
    model.npz, backbone.onnx, metrics.json, loss.png). ``progress`` receives dicts: one
    ``{"event": "start", "data": ..., "device": ...}``, then the training steps, then
    ``{"event": "write"}`` before the run folder is written. Returns the metrics."""
    from nasctl.contrastive import AugmentConfig, PretrainConfig, load_data, pretrain_and_evaluate, write_run
    from nasctl.contrastive.pretrain import close_clock, import_heavy_modules

    started = time.perf_counter()
    import_seconds = import_heavy_modules(plotting=out is not None)
    a = as_arch(arch)
    seed = config.get("seed", 0)
    unknown = sorted(set(config) - set(PretrainConfig.__dataclass_fields__) - {"augment"})
    if unknown:
        raise NasctlError(f"unknown pretraining option {unknown[0]!r}")
    cfg = PretrainConfig(augment=AugmentConfig(min_scale=min_scale, flip=flip), **config).validate()
    t = time.perf_counter()
    dataset = load_data(data, a.resolution, a.in_channels, seed=seed)
    if subset is not None:
        dataset = dataset.subset(subset, subset, seed=seed)
    data_seconds = time.perf_counter() - t
    if progress:
        from nasctl.contrastive.pretrain import resolve_device

        progress({"event": "start", "arch": a.id, "data": dataset.summary(), "device": str(resolve_device(cfg.device))})
    result, metrics = pretrain_and_evaluate(a, dataset, cfg, progress, random_init_baseline=random_init)
    metrics["data_seconds"] = data_seconds
    metrics["import_seconds"] = import_seconds
    if out is None:
        return close_clock(metrics, started)
    if progress:
        progress({"event": "write", "out": str(out)})
    return write_run(out, a, dataset, result, metrics, started)


def pretrain_two_tower(
    arch: Arch | str | Path,
    *,
    data: str = "pairs:digits",
    out: str | Path | None = None,
    subset: int | None = None,
    min_scale: float | None = None,
    probes: bool = True,
    data_seed: int | None = None,
    progress=None,
    **config: Any,
) -> dict[str, Any]:
    """Train a two-tower (image-text) model whose image tower is ``arch`` on paired
    ``data`` (``pairs:digits``, ``pairs:digits:P`` with P the probability that a caption
    names the digit, a ``.npz`` with ``image`` / ``text`` / ``vocab``, or a folder of
    images with same-named ``.txt`` captions), then evaluate it: retrieval R@1 / R@5 both
    ways, zero-shot classification by caption prompts and (``probes``) linear probes of
    each embedding on the label and on each modality-only attribute. ``config``: the
    ``TwoTowerConfig`` fields (``separation``, ``intra``, ``bridge``, ``geometry`` weights,
    ``epochs`` or ``steps``, ``batch_size``, ``lr``, ``text_tower``, ``seed``, ``device``,
    ...). With ``out``, the run folder is written (arch.json, model.npz, vocab.json,
    image_tower.onnx, metrics.json, loss.png). ``data_seed``: the seed of the split (and of
    the generated captions and marks of ``pairs:digits``); default the training seed.
    Returns the metrics."""
    from dataclasses import replace

    from nasctl.contrastive.paired import load_paired
    from nasctl.contrastive.pretrain import resolve_device
    from nasctl.contrastive.twotower import TwoTowerConfig, train_and_evaluate, write_two_tower_run

    started = time.perf_counter()
    a = as_arch(arch)
    unknown = sorted(set(config) - set(TwoTowerConfig.__dataclass_fields__) - {"augment"})
    if unknown:
        raise NasctlError(f"unknown two-tower option {unknown[0]!r}")
    cfg = TwoTowerConfig(**config)
    if min_scale is not None:  # else the two-tower default crop
        cfg = replace(cfg, augment=replace(cfg.augment, min_scale=min_scale))
    cfg.validate()
    dataset = load_paired(data, a.resolution, a.in_channels, seed=cfg.seed if data_seed is None else data_seed)
    if subset is not None:
        dataset = dataset.subset(subset, subset, seed=cfg.seed)
    if progress:
        progress({"event": "start", "arch": a.id, "data": dataset.summary(), "device": str(resolve_device(cfg.device))})
    result, metrics = train_and_evaluate(a, dataset, cfg, progress, probes=probes)
    metrics["total_seconds"] = time.perf_counter() - started
    if out is None:
        return metrics
    if progress:
        progress({"event": "write", "out": str(out)})
    return write_two_tower_run(out, a, dataset, result, metrics)


def search(
    space: SearchSpace | str | Path,
    strategy: str = "multishot",
    *,
    measure: bool = True,
    progress=None,
    **options: Any,
) -> SearchResult:
    """Run a search (or resume it: the same ``out`` and options) and write its run folder.

    ``options`` are ``nasctl search``'s options by their Python names (see
    ``nasctl.search.make_config``): ``out``, ``trials``, ``time_budget_s``, ``estimator``,
    ``objectives``, ``latency_budget_ms``, ``memory_budget_mb``, ``data``, ``epochs``,
    ``trial_seconds``, ``seed``, ``storage``, ``workers``, ... ``progress`` receives the
    search's events (dicts). Returns the ``SearchResult`` (every trial as a
    ``TrialRecord``, the Pareto set, the baseline)."""
    from nasctl.search import make_config, prepare, run_search, write_outputs
    from nasctl.space import SearchSpace

    space_file = space.source if isinstance(space, SearchSpace) else str(space)
    cfg = make_config(space_file, strategy=strategy, **options)
    prepare(cfg)
    run_search(cfg, progress, prepared=True)
    if cfg.finetune:
        from nasctl.search.retrain import finetune_if_asked

        finetune_if_asked(cfg, progress)
    if cfg.retrain:
        from nasctl.search.retrain import retrain_run

        retrain_run(cfg, top=cfg.retrain, measure=measure, progress=progress)
    return write_outputs(cfg, measure=measure)


def train_supernet(space: SearchSpace | str | Path, out: str | Path, *, progress=None, **options: Any) -> dict:
    """Train (or resume) the weight-sharing supernet of ``space`` into the checkpoint
    ``out`` (what ``nasctl supernet train`` does); ``options`` are
    ``nasctl.singleshot.train.SupernetConfig``'s fields (``epochs``, ``batch_size``,
    ``distill``, ``subnets``, ``device``, ...). Returns the checkpoint's record. Search it
    with ``search(space, strategy="singleshot", supernet=out)``."""
    from nasctl.singleshot.train import SupernetConfig
    from nasctl.singleshot.train import train_supernet as train
    from nasctl.space import SearchSpace

    sp = space if isinstance(space, SearchSpace) else SearchSpace.load(space)
    return train(sp, SupernetConfig(**options), out, progress)


def proxy_eval(space: SearchSpace | str | Path, *, progress=None, **options: Any) -> dict:
    """Train archs drawn uniformly from ``space``, compute every zero-shot score for each,
    and return how well each score ranks them (what ``nasctl proxy-eval`` prints and saves
    as ``proxy_eval.json`` / ``proxy_eval.png`` in ``out``). ``options`` are
    ``nasctl.zeroshot.evaluate.EvalConfig``'s fields: ``out``, ``archs``, ``seeds``,
    ``epochs``, ``batch_size``, ``proxies``, ``proxy_batch``, ... Cached in ``out``: a
    re-run adds only what is missing."""
    from nasctl.space import SearchSpace
    from nasctl.zeroshot.evaluate import EvalConfig, evaluate_scores, write_results

    space_file = space.source if isinstance(space, SearchSpace) else str(space)
    if "seeds" in options:
        options["seeds"] = tuple(options["seeds"])
    if "proxies" in options:
        options["proxies"] = tuple(options["proxies"])
    cfg = EvalConfig(space_file=space_file, **options)
    result = evaluate_scores(cfg, progress)
    write_results(cfg, result)
    return result
