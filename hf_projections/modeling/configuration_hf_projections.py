"""Configuration classes for hf-projections models.

This file is also copied into saved checkpoints (for ``trust_remote_code=True`` loading where the package
is not installed), so it imports only transformers and flat-copyable modules (``heads``, ``checks``).
"""

from __future__ import annotations

from typing import Any

from transformers import AutoConfig, PretrainedConfig

try:  # installed package
    from hf_projections.checks import positive_int
    from hf_projections.heads.layer_mix import LAYER_MIXES, layer_mix_width
    from hf_projections.heads.registry import resolve_spec
except ImportError:  # self-contained checkpoint folder (trust_remote_code)
    from .checks import positive_int
    from .layer_mix import LAYER_MIXES, layer_mix_width
    from .registry import resolve_spec

POOLING_MODES = ("mean", "cls")


def _check_projection_layers(layers: Any, num_layers: int | None, model_type: str) -> list[int] | None:
    """``layers`` as a list of distinct ints in ``[-(num_layers + 1), num_layers]``, or None."""
    if layers is None:
        return None
    if model_type != "hf_projections_colbert":
        raise ValueError("projection_layers (layer-mix input) is for ColBERT models; single-vector models read one layer")
    if (not isinstance(layers, (list, tuple)) or not layers
            or any(isinstance(x, bool) or not isinstance(x, int) for x in layers)):
        raise ValueError(f"projection_layers must be a non-empty list of ints (e.g. [-1, -2, -3]), got {layers!r}")
    layers = list(layers)
    if num_layers is not None:
        bad = [x for x in layers if not -(num_layers + 1) <= x <= num_layers]
        if bad:
            raise ValueError(f"projection_layers {bad} are outside the backbone's layers: allowed -{num_layers + 1}.."
                             f"{num_layers} (0 = the embedding output, {num_layers} or -1 = the last layer)")
        resolved = [x if x >= 0 else num_layers + 1 + x for x in layers]
        if len(set(resolved)) != len(resolved):
            raise ValueError(f"projection_layers {layers} name a layer twice")
    return layers


def _check_matryoshka_dims(dims: Any, dim: int) -> list[int]:
    """Non-empty list/tuple of positive ints, each <= ``dim`` -> sorted list without repeats."""
    if not isinstance(dims, (list, tuple)) or not dims:
        raise ValueError(
            f"matryoshka_dims must be a non-empty list of positive ints (each <= dim) or None, got {dims!r}"
        )
    for index, value in enumerate(dims):
        positive_int(f"matryoshka_dims[{index}]", value)
    if max(dims) > dim:
        raise ValueError(f"matryoshka_dims must be <= dim={dim}, got {list(dims)}")
    return sorted(set(dims))


class ProjectionConfig(PretrainedConfig):
    r"""Configuration of a late-interaction (ColBERT) model: a backbone encoder plus a projection head.

    Args:
        backbone_config (`dict` or `PretrainedConfig`, *optional*):
            The encoder's config (any ``AutoModel`` encoder). Nested so a saved model is self-describing.
        backbone_name (`str`, *optional*):
            Where the backbone weights came from (informational; used in model cards).
        projection (`str` or `dict`, defaults to ``"ffn2-x2-res"``):
            A preset name or a ``{"type": ..., **args}`` spec (see ``hf_projections.heads.list_projections``).
            Stored resolved, with every default filled in.
        dim (`int`, defaults to 128):
            Output dimension of each token (multi-vector) or text (single-vector) embedding.
        pooling (`str`, defaults to ``"mean"``):
            Pooling of the single-vector model: one of ``"mean"``, ``"cls"``. Unused by ColBERT.
        query_max_length / document_max_length (`int`, defaults to 32 / 180):
            Token budgets, markers and special tokens included (so, once a tokenizer is attached, at least its
            special tokens + the marker + 1).
        query_marker / document_marker (`str` or `None`, defaults to ``"[unused0]"`` / ``"[unused1]"``):
            Vocabulary tokens inserted after the first special token, as ColBERT does; ``None`` disables.
        augment_queries (`bool`, defaults to `True`):
            Pad queries to ``query_max_length`` with attended ``[MASK]`` tokens (ColBERT query augmentation).
        matryoshka_dims (`list[int]`, *optional*):
            Nested output dims the head was trained for (a non-empty list of positive ints, each <= ``dim``);
            stored sorted with repeats dropped. ``truncate_dim`` at encode time must be one of them or ``dim``.
        projection_layers (`list[int]`, *optional*):
            Layer-mix input (ColBERT models): the head reads these backbone layers instead of the last one, e.g.
            ``[-1, -2, -3]``; ``0`` is the embedding output, ``num_layers`` (or ``-1``) the last layer. None: the last.
        layer_mix (`str`, defaults to ``"scalar"``):
            How ``projection_layers`` combine: ``scalar`` (softmax-weighted sum, ELMo) or ``concat`` (side by side).
    """

    model_type = "hf_projections_colbert"

    def __init__(
        self,
        backbone_config: dict | PretrainedConfig | None = None,
        backbone_name: str | None = None,
        projection: str | dict = "ffn2-x2-res",
        dim: int = 128,
        pooling: str = "mean",
        query_max_length: int = 32,
        document_max_length: int = 180,
        query_marker: str | None = "[unused0]",
        document_marker: str | None = "[unused1]",
        augment_queries: bool = True,
        matryoshka_dims: list[int] | None = None,
        projection_layers: list[int] | None = None,
        layer_mix: str = "scalar",
        **kwargs,
    ):
        if isinstance(backbone_config, dict):
            backbone_config = dict(backbone_config)
            if "model_type" not in backbone_config:
                raise ValueError("backbone_config needs a 'model_type' entry (e.g. 'bert') to rebuild the encoder")
            backbone_config = AutoConfig.for_model(backbone_config.pop("model_type"), **backbone_config)
        elif backbone_config is not None and not isinstance(backbone_config, PretrainedConfig):
            raise TypeError(
                f"backbone_config must be a dict, a PretrainedConfig or None, got {type(backbone_config).__name__}"
            )
        if pooling not in POOLING_MODES:
            raise ValueError(f"pooling must be one of {', '.join(POOLING_MODES)}, got {pooling!r}")
        positive_int("dim", dim)
        positive_int("query_max_length", query_max_length)
        positive_int("document_max_length", document_max_length)
        if not isinstance(augment_queries, bool):
            raise TypeError(f"augment_queries must be a bool, got {augment_queries!r}")
        for name, marker in (("query_marker", query_marker), ("document_marker", document_marker)):
            if marker is not None and (not isinstance(marker, str) or not marker):
                raise ValueError(f"{name} must be a non-empty vocabulary token or None, got {marker!r}")
        if kwargs.get("starbucks_pairs") is not None and self.model_type != DenseProjectionConfig.model_type:
            raise ValueError("starbucks_pairs is for single-vector models (DenseEmbeddingModel); ColBERT models do not support it")
        if matryoshka_dims is not None:
            matryoshka_dims = _check_matryoshka_dims(matryoshka_dims, dim)
        try:
            projection = resolve_spec(projection)
        except ValueError as error:  # spec errors name the spec field (ffn.depth); say that it is the projection
            if "projection" in str(error):
                raise
            raise type(error)(f"projection: {error}") from error

        self.backbone_config = backbone_config
        self.backbone_name = backbone_name
        self.projection = projection
        self.dim = dim
        self.pooling = pooling
        self.query_max_length = query_max_length
        self.document_max_length = document_max_length
        self.query_marker = query_marker
        self.document_marker = document_marker
        self.augment_queries = augment_queries
        self.matryoshka_dims = matryoshka_dims
        if layer_mix not in LAYER_MIXES:
            raise ValueError(f"layer_mix must be one of {', '.join(LAYER_MIXES)}, got {layer_mix!r}")
        self.layer_mix = layer_mix
        self.projection_layers = _check_projection_layers(projection_layers, self.num_layers, self.model_type)
        super().__init__(**kwargs)

    def resolved_projection_layers(self) -> list[int] | None:
        """``projection_layers`` as block counts ``0..num_layers`` (``-1`` -> ``num_layers``), or None."""
        if self.projection_layers is None:
            return None
        total = self.num_layers
        return [layer if layer >= 0 else total + 1 + layer for layer in self.projection_layers]

    @property
    def projection_input_size(self) -> int:
        """Width of what the head reads: ``hidden_size``, or the layer mix's width for ``projection_layers``."""
        if self.projection_layers is None:
            return self.hidden_size
        return layer_mix_width(self.layer_mix, len(self.projection_layers), self.hidden_size)

    @property
    def hidden_size(self) -> int:
        """Width of the backbone's token states, i.e. the projection head's input dimension."""
        if self.backbone_config is None:
            raise ValueError("this config has no backbone_config; build models with from_backbone(...)")
        text_config = self.backbone_config.get_text_config()
        for name in ("hidden_size", "d_model", "dim"):
            if isinstance(getattr(text_config, name, None), int):
                return getattr(text_config, name)
        raise ValueError(f"cannot read the hidden size of backbone config {type(text_config).__name__}")

    @property
    def num_layers(self) -> int | None:
        """Number of transformer layers of the backbone (None when its config does not say)."""
        if self.backbone_config is None:
            return None
        text_config = self.backbone_config.get_text_config()
        for name in ("num_hidden_layers", "n_layers", "num_layers"):
            if isinstance(getattr(text_config, name, None), int):
                return getattr(text_config, name)
        return None


class DenseProjectionConfig(ProjectionConfig):
    """Configuration of a single-vector model: backbone, pooling (``mean``/``cls``), projection head.

    Same fields as :class:`ProjectionConfig`; markers and query augmentation default to off. One more:

    Args:
        starbucks_pairs (`list[tuple[int, int]]`, *optional*):
            Starbucks 2D Matryoshka (Zhuang et al. 2024): the ``(layer, dim)`` sub-models trained together, from
            small to large, e.g. ``[(2, 32), (4, 64), (6, 128)]``: the pooled output of backbone layer ``layer``
            through the head, cut to its first ``dim`` features. Layers and dims never decrease along the list;
            the full model ``(num_layers, dim)`` is appended when missing. Stored as ``[[layer, dim], ...]``.
    """

    model_type = "hf_projections_dense"

    def __init__(self, query_marker=None, document_marker=None, augment_queries=False, starbucks_pairs=None, **kwargs):
        super().__init__(
            query_marker=query_marker, document_marker=document_marker, augment_queries=augment_queries, **kwargs
        )
        self.starbucks_pairs = check_starbucks_pairs(starbucks_pairs, self.dim, self.num_layers)


def check_starbucks_pairs(pairs, dim: int, num_layers: int | None) -> list[list[int]] | None:
    """Validate Starbucks ``(layer, dim)`` pairs and return them as ``[[layer, dim], ...]`` ending with the full
    model ``[num_layers, dim]`` (when ``num_layers`` is known); None stays None."""
    if pairs is None:
        return None
    if isinstance(pairs, (str, bytes)) or not hasattr(pairs, "__len__") or not len(pairs):
        raise ValueError(f"starbucks_pairs must be a non-empty list of (layer, dim) pairs, got {pairs!r}")
    checked: list[list[int]] = []
    for index, pair in enumerate(pairs):
        if (
            isinstance(pair, (str, bytes)) or not hasattr(pair, "__len__") or len(pair) != 2
            or any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in pair)
        ):
            raise ValueError(f"starbucks_pairs[{index}] must be a (layer, dim) pair of positive ints, got {pair!r}")
        layer, pair_dim = pair
        if num_layers is not None and layer > num_layers:
            raise ValueError(f"starbucks_pairs[{index}] = {list(pair)}: layer {layer} > the backbone's {num_layers} layers")
        if pair_dim > dim:
            raise ValueError(f"starbucks_pairs[{index}] = {list(pair)}: dim {pair_dim} > the model's dim {dim}")
        if checked and (layer < checked[-1][0] or pair_dim < checked[-1][1] or [layer, pair_dim] == checked[-1]):
            raise ValueError(
                "starbucks_pairs must go from small to large (layer and dim never decrease, no repeats), got "
                f"{[list(p) for p in pairs]}"
            )
        checked.append([layer, pair_dim])
    if num_layers is not None and checked[-1] != [num_layers, dim]:
        checked.append([num_layers, dim])
    return checked
