"""Training: losses, collator, ``transformers.Trainer`` subclass, training modes, cached-feature fast path,
hard-negative mining and the ``train(...)`` entry point the CLI calls."""

from hf_projections.training.api import train
from hf_projections.training.cache import FeatureCache, build_feature_cache, encode_from_cache
from hf_projections.training.cached_training import CachedPairs, build_cached_pairs, train_from_cache
from hf_projections.training.collator import ProjectionCollator
from hf_projections.training.losses import (
    ContrastiveLoss,
    DistillationLoss,
    MatryoshkaLoss,
    ProjectionLoss,
    build_loss,
    contrastive_loss,
    distillation_loss,
)
from hf_projections.training.mining import mine_hard_negatives
from hf_projections.training.modes import parse_mode, set_trainable
from hf_projections.training.starbucks import StarbucksLoss
from hf_projections.training.trainer import (
    JsonlLogCallback,
    NonFiniteLossError,
    ProjectionTrainer,
    last_complete_checkpoint,
)

__all__ = [
    "CachedPairs",
    "ContrastiveLoss",
    "DistillationLoss",
    "FeatureCache",
    "JsonlLogCallback",
    "MatryoshkaLoss",
    "NonFiniteLossError",
    "ProjectionCollator",
    "ProjectionLoss",
    "ProjectionTrainer",
    "StarbucksLoss",
    "build_cached_pairs",
    "build_feature_cache",
    "build_loss",
    "contrastive_loss",
    "distillation_loss",
    "encode_from_cache",
    "last_complete_checkpoint",
    "mine_hard_negatives",
    "parse_mode",
    "set_trainable",
    "train",
    "train_from_cache",
]
