"""Training: one arguments object with the measured recipe as defaults, losses, the collator, the cached-feature
fast path, the one training loop, the ``transformers.Trainer`` subclass, hard-negative mining and ``train(data, args)``.

Modules, each with one job: ``arguments`` / ``recipes`` (settings and their defaults), ``modes`` (what trains),
``losses`` / ``nested_losses`` (contrastive, distillation; Matryoshka, Starbucks), ``collator`` (tokenised batches),
``cache_keys`` / ``feature_cache`` / ``cache`` / ``cached_encoding`` (backbone features on disk), ``loop`` (the
optimisation loop), ``cached_training`` and ``starbucks`` (what runs in it), ``trainer`` (the Trainer path),
``mining`` (hard negatives) and ``api`` (``train``).
"""

from hf_projections.training.api import build_model, load_pairs, train
from hf_projections.training.arguments import ProjectionTrainingArguments, default_backbone
from hf_projections.training.cache import build_feature_cache
from hf_projections.training.cached_encoding import encode_from_cache
from hf_projections.training.cached_training import CachedPairs, build_cached_pairs, train_from_cache
from hf_projections.training.collator import ProjectionCollator
from hf_projections.training.feature_cache import FeatureCache
from hf_projections.training.loop import NonFiniteLossError, run_training_loop
from hf_projections.training.losses import (
    ContrastiveLoss,
    DistillationLoss,
    ProjectionLoss,
    contrastive_loss,
    distillation_loss,
)
from hf_projections.training.mining import mine_hard_negatives
from hf_projections.training.modes import parse_mode, set_trainable
from hf_projections.training.nested_losses import MatryoshkaLoss, StarbucksLoss, build_loss, default_loss
from hf_projections.training.recipes import RECIPES, Recipe, recipe_for
from hf_projections.training.trainer import JsonlLogCallback, ProjectionTrainer, last_complete_checkpoint

__all__ = [
    "RECIPES",
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
    "ProjectionTrainingArguments",
    "Recipe",
    "StarbucksLoss",
    "build_cached_pairs",
    "build_feature_cache",
    "build_loss",
    "build_model",
    "contrastive_loss",
    "default_backbone",
    "default_loss",
    "distillation_loss",
    "encode_from_cache",
    "last_complete_checkpoint",
    "load_pairs",
    "mine_hard_negatives",
    "parse_mode",
    "recipe_for",
    "run_training_loop",
    "set_trainable",
    "train",
    "train_from_cache",
]
