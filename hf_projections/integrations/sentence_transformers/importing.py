"""Sentence-transformers -> ours: a ``MultiVectorEncoder`` as a ``ColBERTModel``, a ``SentenceTransformer`` as a
``DenseEmbeddingModel``; every part of the pipeline that cannot map exactly is named (see the package docstring)."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import torch
from sentence_transformers.base.modules import Dense, Normalize, Transformer
from torch import nn

from hf_projections.heads.layer_mix import layer_mix_width
from hf_projections.integrations.sentence_transformers.layer_mix_module import LAYER_MIX_CLASS_REF, LayerMix
from hf_projections.integrations.sentence_transformers.module import (
    PROJECTION_CLASS_REF,
    SENTENCE_FEATURE,
    TOKEN_FEATURE,
    Projection,
)

logger = logging.getLogger(__name__)


def from_sentence_transformers(model_or_path, *, strict: bool = True, trust_remote_code: bool = False,
                               backbone_name: str | None = None):
    """Convert a ``MultiVectorEncoder`` (-> ``ColBERTModel``) or ``SentenceTransformer`` (-> ``DenseEmbeddingModel``).

    Args:
        model_or_path: a loaded ST model, or a folder / Hub id to load (its ``config_sentence_transformers.json``
            ``model_type`` picks the class).
        strict: raise ``ValueError`` when part of the ST pipeline cannot be represented exactly (see the module
            docstring); with ``False`` those parts are dropped with a warning and the model is the closest match.
        trust_remote_code: passed to sentence-transformers when loading from a path. Needed for folders holding
            our ``Projection`` module (sentence-transformers gates every non-ST module class behind it).
        backbone_name: recorded as ``config.backbone_name`` (defaults to the path, when given).

    Returns:
        A ``ColBERTModel`` or ``DenseEmbeddingModel`` on CPU, in eval mode, with the ST model's tokenizer.
    """
    if isinstance(model_or_path, (str, os.PathLike)):
        backbone_name = backbone_name or str(model_or_path)
        st_model = load_sentence_transformers(model_or_path, trust_remote_code=trust_remote_code)
    else:
        st_model = model_or_path
        card = getattr(st_model, "model_card_data", None)
        backbone_name = backbone_name or getattr(card, "base_model", None)
    plan = _read_pipeline(st_model)
    if plan["problems"]:
        message = "cannot convert this sentence-transformers model exactly:\n  - " + "\n  - ".join(plan["problems"])
        if strict:
            raise ValueError(message + "\npass strict=False to convert anyway (scores will differ)")
        logger.warning("%s\nconverting anyway (strict=False): scores will differ from the original", message)
    return _assemble(plan, backbone_name)


def load_sentence_transformers(path, *, trust_remote_code: bool = False, multi_vector: bool | None = None):
    """Load an ST folder as ``MultiVectorEncoder`` or ``SentenceTransformer``.

    ``multi_vector=None`` decides from the saved ``model_type`` (``MultiVectorEncoder``, PyLate's ``ColBERT``), from
    PyLate's legacy keys (``query_prefix``, ...) or a Stanford ``HF_ColBERT`` config.
    """
    from sentence_transformers import MultiVectorEncoder, SentenceTransformer

    model_type = None
    modules_json = None
    legacy = False
    if os.path.isdir(path):
        config_path = Path(path) / "config_sentence_transformers.json"
        if config_path.exists():
            st_config = json.loads(config_path.read_text(encoding="utf-8"))
            model_type = st_config.get("model_type")
            legacy = bool({"query_prefix", "document_prefix", "do_query_expansion"} & set(st_config))
        if (Path(path) / "modules.json").exists():
            modules_json = json.loads((Path(path) / "modules.json").read_text(encoding="utf-8"))
    if modules_json and not trust_remote_code:
        ours = [m["path"] or "." for m in modules_json if m.get("type") in (PROJECTION_CLASS_REF, LAYER_MIX_CLASS_REF)]
        if ours:
            raise ValueError(
                f"{path} holds hf-projections modules ({', '.join(ours)}); sentence-transformers >= 6 "
                "imports module classes outside its own package only with trust_remote_code=True. Pass "
                "trust_remote_code=True (it also lets the backbone run remote code, if its config names any)."
            )
    if multi_vector is None:
        multi_vector = model_type in ("MultiVectorEncoder", "ColBERT") or (
            model_type is None and (legacy or _looks_multi_vector(path))
        )
    cls = MultiVectorEncoder if multi_vector else SentenceTransformer
    return cls(str(path), trust_remote_code=trust_remote_code, device="cpu")


def _looks_multi_vector(path) -> bool:
    config = Path(path) / "config.json"
    return config.exists() and "HF_ColBERT" in (json.loads(config.read_text(encoding="utf-8")).get("architectures") or [])


def _read_pipeline(st_model) -> dict[str, Any]:
    """Walk the ST modules and collect everything our config needs, plus a list of what cannot map."""
    from sentence_transformers import MultiVectorEncoder, SentenceTransformer
    from sentence_transformers.multi_vector_encoder.modules import MultiVectorMask
    from sentence_transformers.sentence_transformer.modules import Pooling

    if isinstance(st_model, MultiVectorEncoder):
        kind, feature = "colbert", TOKEN_FEATURE
    elif isinstance(st_model, SentenceTransformer):
        kind, feature = "dense", SENTENCE_FEATURE
    else:
        raise TypeError(
            f"expected a sentence_transformers MultiVectorEncoder or SentenceTransformer, got {type(st_model).__name__}"
        )
    problems: list[str] = []
    modules = list(st_model)
    if not modules or not isinstance(modules[0], Transformer):
        raise ValueError("the first sentence-transformers module must be a Transformer (the backbone)")
    transformer = modules[0]
    heads, pooling, normalized, mask, layer_mix = [], None, False, None, None
    for position, module in enumerate(modules[1:], start=1):
        name = type(module).__name__
        if isinstance(module, LayerMix) and position == 1 and kind == "colbert":
            layer_mix = module
        elif normalized:
            problems.append(f"{name} after Normalize (our models normalise last)")
        elif isinstance(module, (Dense, Projection)):
            if module.module_input_name != feature or module.module_output_name != feature:
                problems.append(f"{name} reads {module.module_input_name!r} / writes {module.module_output_name!r}; "
                                f"expected {feature!r}")
            heads.append(module)
        elif kind == "dense" and isinstance(module, Pooling) and pooling is None and not heads:
            pooling = module
        elif kind == "colbert" and isinstance(module, MultiVectorMask) and mask is None:
            mask = module
        elif isinstance(module, Normalize):
            if module.module_input_name != feature:
                problems.append(f"Normalize on {module.module_input_name!r}; expected {feature!r}")
            normalized = True
        else:
            problems.append(f"module {name} has no equivalent in hf-projections models")
    if not normalized:
        problems.append("no Normalize module: our models always L2-normalise their embeddings")

    config: dict[str, Any] = {}
    tokenizer = transformer.tokenizer
    if tokenizer is None:
        raise ValueError("the Transformer module has no tokenizer; hf-projections models need one")
    problems += _read_lengths(transformer, tokenizer, config)
    problems += _read_prompts(st_model, tokenizer, config)
    if kind == "colbert":
        problems += _read_mask(mask, st_model)
    else:
        if pooling is None:
            problems.append("no Pooling module before the projection")
            config["pooling"] = "mean"
        else:
            mode = pooling.pooling_mode
            if mode not in ("mean", "cls"):
                problems.append(f"Pooling mode {mode!r}: only 'mean' and 'cls' are supported")
            if not pooling.include_prompt and (config.get("query_marker") or config.get("document_marker")):
                problems.append("Pooling(include_prompt=False): our mean pooling includes the marker token")
            config["pooling"] = mode if mode in ("mean", "cls") else "mean"
    hidden = transformer.get_embedding_dimension()
    layer_mix_state = None
    if layer_mix is not None:
        depth = transformer.model.config.num_hidden_layers
        # block counts -> the negative form (-1: the last layer) that presets and users write
        config.update(projection_layers=[k - depth - 1 for k in layer_mix.layers], layer_mix=layer_mix.mix)
        layer_mix_state = layer_mix.layer_mix.state_dict()
        hidden = layer_mix_width(layer_mix.mix, len(layer_mix.layers), hidden)
    spec, state, dim, head_problems, matryoshka = _read_heads(heads, hidden)
    problems += head_problems
    config.update(projection=spec, dim=dim, matryoshka_dims=matryoshka)
    return {"kind": kind, "backbone": transformer.model, "tokenizer": tokenizer, "config": config,
            "head_state": state, "layer_mix_state": layer_mix_state, "problems": problems}


def _read_lengths(transformer, tokenizer, config: dict) -> list[str]:
    """Lengths and query augmentation from the Transformer module (``query_expansion`` -> ``augment_queries``)."""
    problems = []
    default = transformer.max_seq_length or tokenizer.model_max_length
    config["document_max_length"] = int(transformer.document_length or default)
    expansion = transformer.query_expansion
    config["augment_queries"] = expansion is not None
    if expansion is None:
        config["query_max_length"] = int(transformer.query_length or default)
        return problems
    config["query_max_length"] = int(expansion["length"])
    if expansion["strategy"] != "fixed":
        problems.append(f"query_expansion strategy={expansion['strategy']!r}: only 'fixed' maps to augment_queries")
    if not expansion["attend"]:
        problems.append("query_expansion attend=False: our query augmentation lets the encoder attend to the [MASK] "
                        "tokens (attend=True)")
    if expansion["token"] not in (None, tokenizer.mask_token):
        problems.append(f"query_expansion token={expansion['token']!r}: our augmentation uses the mask token")
    if tokenizer.mask_token_id is None:
        problems.append("query expansion on a tokenizer without a mask token")
        config["augment_queries"] = False
    return problems


def _read_prompts(st_model, tokenizer, config: dict) -> list[str]:
    """Prompts must be one vocabulary token each (our markers); empty/None prompts mean no marker."""
    problems = []
    vocab = tokenizer.get_vocab()
    for role in ("query", "document"):
        prompt = (st_model.prompts or {}).get(role) or ""
        marker = None
        if prompt:
            for candidate in (prompt, prompt.strip()):
                if candidate in vocab and tokenizer.tokenize(prompt) == [candidate]:
                    marker = candidate
                    break
            else:
                problems.append(f"{role} prompt {prompt!r} is not a single vocabulary token (our markers are)")
        config[f"{role}_marker"] = marker
    if st_model.default_prompt_name:
        problems.append(f"default_prompt_name={st_model.default_prompt_name!r}: our models apply no default prompt")
    return problems


def _read_mask(mask, st_model) -> list[str]:
    problems = []
    if mask is None:
        problems.append("no MultiVectorMask: query expansion tokens would not be scored")
        return problems
    skip_ids = getattr(mask, "_skiplist_ids", None)
    if mask.skiplist_words and (skip_ids is None or len(skip_ids) > 0):
        problems.append(f"MultiVectorMask skiplist ({len(mask.skiplist_words)} words, e.g. punctuation) for "
                        f"{mask.skiplist_tasks}: our models score every token")
    if mask.keep_only_token_ids:
        problems.append("MultiVectorMask keep_only_token_ids: our models score every token")
    if st_model.similarity_fn_name != "maxsim":
        problems.append(f"similarity_fn_name={st_model.similarity_fn_name!r}: our models score with plain MaxSim")
    return problems


def _read_heads(heads: list, hidden: int):
    """-> (spec, head state_dict, dim, problems, matryoshka_dims).

    One ``Projection`` keeps its spec and weights. Any chain of identity-activation ``Dense`` layers (with or without
    ST's residual) is one affine map ``x @ A.T + c`` and becomes a ``linear`` head. No head at all is the identity.
    """
    problems: list[str] = []
    ours = [h for h in heads if isinstance(h, Projection)]
    if ours:
        if len(heads) > 1:
            problems.append(f"{len(heads)} projection modules; only a single Projection (or Dense layers alone) maps")
        head = ours[0]
        return (head.head.spec, head.head.state_dict(), head.out_features, problems, head.matryoshka_dims)
    weight = torch.eye(hidden)
    bias = torch.zeros(hidden)
    for dense in heads:
        if not isinstance(dense.activation_function, nn.Identity):
            problems.append(f"Dense with activation {type(dense.activation_function).__name__}: only Identity is a "
                            "linear map (use strict=False to drop the activation)")
        w = dense.linear.weight.detach().float().cpu()
        b = dense.linear.bias.detach().float().cpu() if dense.linear.bias is not None else torch.zeros(w.shape[0])
        if dense.use_residual:
            skip = torch.eye(w.shape[0]) if dense.in_features == dense.out_features else dense.residual.weight.detach().float().cpu()
            w = w + skip
        if w.shape[1] != weight.shape[0]:
            raise ValueError(f"Dense in_features={w.shape[1]} does not match the previous width {weight.shape[0]}")
        bias = w @ bias + b
        weight = w @ weight
    has_bias = bool((bias != 0).any())  # an all-zero bias is no bias: the head gets bias=False
    state = {"linear.weight": weight}
    if has_bias:
        state["linear.bias"] = bias
    return {"type": "linear", "bias": has_bias}, state, weight.shape[0], problems, None


def _assemble(plan: dict[str, Any], backbone_name: str | None):
    """The ``ColBERTModel`` / ``DenseEmbeddingModel`` a pipeline plan describes, in eval mode."""
    from hf_projections.modeling import ColBERTModel, DenseEmbeddingModel

    cls = ColBERTModel if plan["kind"] == "colbert" else DenseEmbeddingModel
    model = cls.from_parts(plan["backbone"], plan["tokenizer"], head_state=plan["head_state"],
                           layer_mix_state=plan["layer_mix_state"], backbone_name=backbone_name, **plan["config"])
    return model.eval()
