"""Ours -> sentence-transformers: a ``ColBERTModel`` as a ``MultiVectorEncoder``, a ``DenseEmbeddingModel`` as a
``SentenceTransformer`` (same scores up to float rounding)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from sentence_transformers.base.modules import Dense, Normalize, Transformer
from torch import nn
from transformers import AddedToken
from transformers.utils import logging as transformers_logging

from hf_projections.heads.linear import LinearProjection
from hf_projections.integrations.sentence_transformers.layer_mix_module import LayerMix
from hf_projections.integrations.sentence_transformers.module import SENTENCE_FEATURE, TOKEN_FEATURE, Projection
from hf_projections.atomic import staged_directory


def to_sentence_transformers(model, path: str | os.PathLike | None = None, *, use_native_dense: bool = True,
                             device: str | None = None):
    """Convert a ``ColBERTModel`` to a ``MultiVectorEncoder`` or a ``DenseEmbeddingModel`` to a ``SentenceTransformer``.

    The result encodes and scores exactly like ``model`` (see the module docstring for the mapping). With ``path``
    the ST folder is also saved there (staged in a temporary sibling folder, then moved in entry by entry).

    Args:
        model: a ``ColBERTModel`` or ``DenseEmbeddingModel`` with a tokenizer.
        path: where to save the sentence-transformers folder (optional).
        use_native_dense: save a plain ``linear`` head as ST's ``Dense`` (loads without ``trust_remote_code``).
        device: device of the returned ST model (default: the device of ``model``).

    Returns:
        The ``MultiVectorEncoder`` / ``SentenceTransformer``.
    """
    from sentence_transformers import MultiVectorEncoder, SentenceTransformer
    from sentence_transformers.multi_vector_encoder.modules import MultiVectorMask
    from sentence_transformers.sentence_transformer.modules import Pooling

    multi_vector = _model_kind(model) == "colbert"
    if model.tokenizer is None:
        raise ValueError("model has no tokenizer: load it with from_pretrained/from_backbone or call set_tokenizer")
    cfg = model.config
    device = device or str(model.device)
    feature = TOKEN_FEATURE if multi_vector else SENTENCE_FEATURE
    with tempfile.TemporaryDirectory(prefix="hf-projections-st-") as backbone_dir:
        model.backbone.save_pretrained(backbone_dir)
        model.tokenizer.save_pretrained(backbone_dir)
        expansion = None
        if cfg.augment_queries:
            # Ours: pad to query_max_length with [MASK] tokens that the encoder attends to and MaxSim scores.
            expansion = {"strategy": "fixed", "attend": True, "length": cfg.query_max_length}
        with _quiet_transformers():
            transformer = Transformer(
                backbone_dir,
                query_length=cfg.query_max_length,
                document_length=cfg.document_max_length,
                query_expansion=expansion,
            )
    _register_markers(transformer.tokenizer, [cfg.query_marker, cfg.document_marker])

    head = _head_module(model, feature, use_native_dense)
    layer_mix = _layer_mix_module(model)
    if layer_mix is not None:
        # ST's Transformer fills features["all_layer_embeddings"] only when the backbone config asks for them; the
        # flag is saved in the folder's config.json, so a reload does the same.
        transformer.model.config.output_hidden_states = True
    prompts = {"query": cfg.query_marker or "", "document": cfg.document_marker or ""}
    if multi_vector:
        modules = [transformer, *([layer_mix] if layer_mix is not None else []), head, MultiVectorMask(),
                   Normalize(module_input_name=TOKEN_FEATURE)]
        st_model = MultiVectorEncoder(modules=modules, prompts=prompts, similarity_fn_name="maxsim", device=device)
    else:
        pooling = Pooling(cfg.hidden_size, pooling_mode=cfg.pooling, include_prompt=True)
        modules = [transformer, pooling, head, Normalize()]
        st_model = SentenceTransformer(modules=modules, prompts=prompts, similarity_fn_name="cosine", device=device)
    _tag_card(st_model, model)
    if path is not None:
        save_sentence_transformers(st_model, path)
    return st_model


def _tag_card(st_model, model) -> None:
    """Tags and base model for the README that sentence-transformers writes on save."""
    from hf_projections.integrations.model_card import hub_base_model, preset_name

    card = st_model.model_card_data
    card.add_tags(["hf-projections", f"projection-{preset_name(model.config.projection) or model.config.projection['type']}"])
    base_model = hub_base_model(model.config.backbone_name)
    if base_model:
        card.base_model = base_model


def save_sentence_transformers(st_model, path: str | os.PathLike) -> Path:
    """``st_model.save`` into a temporary sibling folder, then move each top-level entry into ``path``."""
    with staged_directory(path) as staging:
        st_model.save(staging)
    return Path(path).resolve()


def _head_module(model, feature: str, use_native_dense: bool) -> nn.Module:
    head = model.projection
    cfg = model.config
    if use_native_dense and isinstance(head, LinearProjection) and not cfg.matryoshka_dims:
        linear = head.linear
        dense = Dense(
            in_features=linear.in_features,
            out_features=linear.out_features,
            bias=linear.bias is not None,
            activation_function=nn.Identity(),
            module_input_name=feature,
        )
        dense.linear.load_state_dict(linear.state_dict())
        return dense
    module = Projection(
        head.d_in, head.d_out, head.spec, module_input_name=feature, matryoshka_dims=cfg.matryoshka_dims
    )
    module.head.load_state_dict(head.state_dict())
    return module


def _layer_mix_module(model) -> LayerMix | None:
    """ST's ``LayerMix`` holding the model's layer mix (weights copied), or None for a last-layer head."""
    layers = model.config.resolved_projection_layers() if hasattr(model.config, "resolved_projection_layers") else None
    if not layers:
        return None
    module = LayerMix(layers, model.config.layer_mix)
    module.layer_mix.load_state_dict(model.layer_mix.state_dict())
    return module


def _register_markers(tokenizer, markers: list[str | None]) -> None:
    """Make each marker tokenize as one piece when prepended as text (e.g. BERT splits ``[unused0]`` otherwise).

    The marker is already a vocabulary token, so this adds no embedding rows; ``normalized=False`` keeps a
    lowercasing tokenizer from missing it.
    """
    pieces = []
    for marker in dict.fromkeys(m for m in markers if m):
        if tokenizer.tokenize(marker) != [marker]:
            pieces.append(AddedToken(marker, normalized=False, special=True))
    if pieces:
        tokenizer.add_special_tokens({"extra_special_tokens": pieces}, replace_extra_special_tokens=False)


def _model_kind(model) -> str:
    from hf_projections.modeling import ColBERTModel, DenseEmbeddingModel

    if isinstance(model, ColBERTModel):
        return "colbert"
    if isinstance(model, DenseEmbeddingModel):
        return "dense"
    raise TypeError(f"expected a ColBERTModel or DenseEmbeddingModel, got {type(model).__name__}")


class _quiet_transformers:
    """Silence transformers' "newly initialized pooler" notice while ST reloads a pooler-free backbone."""

    def __enter__(self):
        self._level = transformers_logging.get_verbosity()
        transformers_logging.set_verbosity_error()

    def __exit__(self, *exc):
        transformers_logging.set_verbosity(self._level)
        return False
