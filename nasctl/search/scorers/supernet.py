"""The inherited-accuracy scorer: a subnet of a trained supernet, with the weights it
inherits (BatchNorm statistics recomputed on clean train images), scored by a linear
probe on the validation split. No arch is trained: a trial takes seconds."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from nasctl.errors import NasctlError
from nasctl.search.base import Column, Progress

if TYPE_CHECKING:
    from nasctl.arch import Arch
    from nasctl.search.config import SearchConfig

SUPERNET_FILE = "supernet.npz"  # where a run trains its own supernet when --supernet is not given


def supernet_path(cfg: SearchConfig) -> Path:
    """The checkpoint a singleshot run scores with: ``--supernet``, else its own in the run folder."""
    return Path(cfg.supernet) if cfg.supernet else Path(cfg.out) / SUPERNET_FILE


class InheritedAccuracy:
    """Score = linear-probe accuracy on the validation split of the subnet with the
    weights it inherits from the supernet (``nasctl.singleshot.evaluate``)."""

    objective = "accuracy"
    label = "inherited linear-probe accuracy, val"
    worst = 0.0
    columns = (Column("accuracy", "val acc (inh.)", "pct"), Column("test_accuracy", "test acc (inh.)", "pct"))
    metrics = ("accuracy", "test_accuracy", "knn_val_accuracy", "score_seconds")
    recoverable = ()
    verb = "scoring"

    def __init__(self, path: str | Path, data: str, device: str = "cpu"):
        self.path, self.data_source, self.device = Path(path), data, device
        self._net = None
        self._data = None

    @staticmethod
    def describe(cfg: SearchConfig) -> str:
        return (
            f"inherited weights from the supernet {supernet_path(cfg)}, BatchNorm recalibrated on 512 clean train "
            "images; accuracy = linear probe on the validation split"
        )

    @classmethod
    def from_config(cls, cfg: SearchConfig) -> InheritedAccuracy:
        return cls(supernet_path(cfg), cfg.data, cfg.budget.pretrain.device)

    def load(self):
        """The supernet and the data split it trained on (loaded once)."""
        if self._net is None:
            from nasctl.contrastive import load_data
            from nasctl.singleshot.train import SPLIT_SEED, load_supernet

            net, meta = load_supernet(self.path, self.device)
            if not meta.get("finished"):
                raise NasctlError(
                    f"{self.path}: the supernet is trained to step {meta['step']} of {meta['total_steps']}; "
                    "finish it (nasctl supernet train, same command) before searching with it"
                )
            data = load_data(self.data_source, net.resolution, net.space.spec.input.channels, seed=SPLIT_SEED)
            if not data.labelled:
                raise NasctlError(f"{self.data_source}: the data has no labels (y); the accuracy objective needs them")
            self._net, self._data = net.eval(), data
        return self._net, self._data

    def __call__(self, arch: Arch, progress: Progress | None = None) -> dict[str, Any]:
        from nasctl.singleshot.evaluate import inherited_accuracy

        net, data = self.load()
        return inherited_accuracy(net, arch, data, recalibrate=True)

    @staticmethod
    def export_winner(cfg: SearchConfig, arch: Arch, stem: Path) -> list[str]:
        """Write a winner with its inherited weights (BatchNorm recalibrated): ``STEM.npz``
        (backbone + projection head, as ``nasctl pretrain`` writes them) and ``STEM.onnx``
        (the backbone's pooled features, with those weights). Returns the file names."""
        import torch

        from nasctl.contrastive.pretrain import save_weights
        from nasctl.contrastive.probe import recalibrate_bn
        from nasctl.nn.builder import build_model
        from nasctl.nn.export import export_onnx
        from nasctl.singleshot.evaluate import BN_IMAGES

        net, data = shared_scorer(cfg).load()
        model = net.subnet(arch, "embedding")
        recalibrate_bn(model, data.x[torch.from_numpy(data.train[:BN_IMAGES])])
        model = model.cpu().eval()
        save_weights(model, stem.with_suffix(".npz"))
        backbone = build_model(arch, head="features")
        backbone.load_state_dict({k: v for k, v in model.state_dict().items() if not k.startswith("head.")})
        export_onnx(backbone, stem.with_suffix(".onnx"))
        return [stem.with_suffix(".npz").name, stem.with_suffix(".onnx").name]


_SCORERS: dict[str, InheritedAccuracy] = {}


def shared_scorer(cfg: SearchConfig) -> InheritedAccuracy:
    """One loaded scorer per checkpoint in this process (exporting several winners loads
    the supernet once)."""
    key = str(supernet_path(cfg).resolve())
    if key not in _SCORERS:
        _SCORERS[key] = InheritedAccuracy.from_config(cfg)
    return _SCORERS[key]
