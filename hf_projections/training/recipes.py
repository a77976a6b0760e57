"""The measured best training recipe for each training mode: the defaults of ``train()``, ``hf-projections train``
and sweeps, kept in this one place so that a recipe chosen on validation data changes everywhere at once.

Every value was chosen on training queries held out of the training pairs, never on test queries;
``Recipe.evidence`` says where the comparison is committed.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from hf_projections.training.modes import parse_mode


@dataclass(frozen=True)
class Recipe:
    """Defaults for the fields a user leaves unset (``None``) in the training arguments or sweep settings.

    Attributes:
        projection: head preset for a fresh model.
        head_lr: the head's learning rate.
        backbone_lr: learning rate of the backbone layers that train (``None`` in ``head`` mode: none train).
        temperature: contrastive temperature on MaxSim sums (ColBERT) or cosine scores (dense).
        markers: prepend ColBERT's ``[unused0]`` / ``[unused1]`` query / document markers.
        augment_queries: pad queries with attended ``[MASK]`` tokens (ColBERT's query augmentation).
        projection_layers: the backbone layers a fresh ColBERT head reads (``None``: the last one only).
        layer_mix: how ``projection_layers`` combine (``scalar`` or ``concat``).
        evidence: where the choice was measured.
    """

    projection: str
    head_lr: float
    backbone_lr: float | None
    temperature: float
    markers: bool
    augment_queries: bool
    projection_layers: tuple[int, ...] | None
    layer_mix: str
    evidence: str


# Head mode (frozen backbone): 500 GenQ validation queries held out of 8k arguana-genq pairs, 2 seeds. Temperature
# 0.25 beat ColBERT's 1.0 by 13-17 points for every head; plain queries (no markers, no [MASK] padding) beat
# ColBERT's tokens by 3.5 points for linear; linear beat ffn2-x2-res by 2.25 (and by 0.75-1.1 with zero branch init
# or 3x the steps); lr 1e-3 vs 3e-4 / 3e-3 and 1,500 steps did not help linear. The head reads a softmax-weighted
# (scalar) mix of the last three layers: on the same 500 held-out queries (2 seeds) it gave linear 73.27 against
# 71.13 for the last layer alone (ffn2-x2-res 72.98 vs 70.79); a mix of the last two layers gave nothing.
HEAD = Recipe(
    projection="linear",
    head_lr=1e-3,
    backbone_lr=None,
    temperature=0.25,
    markers=False,
    augment_queries=False,
    projection_layers=(-1, -2, -3),
    layer_mix="scalar",
    evidence="benchmarks/results/choices/choices.md; layer mix: benchmarks/results/choices-layer-mix/choices.md",
)

# Top-K modes (the last K backbone layers train with the head): the head recipe, with the backbone learning rate
# chosen for top-2 on the same 500 held-out GenQ queries (seed 0): 1e-4 gave linear 71.55, 3e-5 gave 71.03 (head
# mode: 71.82), and linear led ffn2-x2-res under both rates. Top-2 did not beat head mode at this budget.
# The head reads the last layer: a layer mix trains from the feature cache in head mode only.
TOP_K = Recipe(
    projection="linear",
    head_lr=1e-3,
    backbone_lr=1e-4,
    temperature=0.25,
    markers=False,
    augment_queries=False,
    projection_layers=None,
    layer_mix="scalar",
    evidence="benchmarks/results/choices-top2/choices.md",
)

# Full mode (every backbone weight trains): the top-K recipe. A full-mode run costs ~36 minutes on the 2-core
# reference machine, so it was not searched separately.
FULL = replace(TOP_K, evidence=TOP_K.evidence + " (the top-K recipe; full mode not searched)")

# Single-vector models score with cosine in [-1, 1], which needs a sharper temperature than MaxSim sums:
# sentence-transformers' default scale 20 (temperature 0.05), not searched here.
DENSE_TEMPERATURE = 0.05

RECIPES = {"head": HEAD, "top": TOP_K, "full": FULL}


def recipe_for(mode: str = "head", model_type: str = "colbert") -> Recipe:
    """The recipe of a training mode (``head``, ``top-K``, ``full``) for a ``colbert`` or ``dense`` model."""
    recipe = RECIPES[parse_mode(mode).kind]
    if model_type == "dense":
        recipe = replace(recipe, temperature=DENSE_TEMPERATURE, projection_layers=None,
                         evidence=recipe.evidence + "; dense temperature: sentence-transformers' default; dense models "
                         "read the last layer")
    return recipe
