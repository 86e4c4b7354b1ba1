"""Contrastive task models: data, augmentations, losses (NT-Xent, DCL, SogCLR and the
decomposable Gamma loss), pretraining and linear-probe evaluation; and two-tower
image-text models (``paired``: paired data; ``multimodal``: symmetric InfoNCE and the
modality-structure regularisers; ``twotower``: the model, its training and evaluation)."""

from nasctl.contrastive.augment import AugmentConfig
from nasctl.contrastive.data import ImageData, load_data
from nasctl.contrastive.losses import LOSSES, DCLLoss, GammaLoss, NTXentLoss, SogCLRLoss, nt_xent
from nasctl.contrastive.pretrain import (
    PretrainConfig,
    PretrainResult,
    TrainingDiverged,
    load_weights,
    pretrain,
    pretrain_and_evaluate,
    write_run,
)
from nasctl.contrastive.probe import evaluate, knn_accuracy, linear_probe

__all__ = [
    "LOSSES",
    "AugmentConfig",
    "DCLLoss",
    "GammaLoss",
    "ImageData",
    "NTXentLoss",
    "PretrainConfig",
    "PretrainResult",
    "SogCLRLoss",
    "TrainingDiverged",
    "evaluate",
    "knn_accuracy",
    "linear_probe",
    "load_data",
    "load_weights",
    "nt_xent",
    "pretrain",
    "pretrain_and_evaluate",
    "write_run",
]
