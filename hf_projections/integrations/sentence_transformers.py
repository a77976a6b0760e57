"""sentence-transformers 6 integration: a ``Projection`` module for our heads and lossless converters.

``Projection`` is a ``sentence_transformers.base.modules.Module`` that runs any hf-projections head on one feature
(``token_embeddings`` in a ``MultiVectorEncoder``, ``sentence_embedding`` in a ``SentenceTransformer``)::

    MultiVectorEncoder(modules=[Transformer(...), Projection(384, 128, "ffn2-x2-res", module_input_name="token_embeddings"),
                                MultiVectorMask(), Normalize(module_input_name="token_embeddings")])
    SentenceTransformer(modules=[Transformer(...), Pooling(384), Projection(384, 128, "ffn2-x2-res"), Normalize()])

Converters, both ways and exact (same scores up to float rounding)::

    st_model = to_sentence_transformers(colbert_model, "my-st-folder")   # MultiVectorEncoder
    MultiVectorEncoder("my-st-folder", trust_remote_code=True)           # reload (see below)
    model = from_sentence_transformers("my-st-folder", trust_remote_code=True)  # ColBERTModel again

How our config maps onto sentence-transformers:

==========================  =====================================================================================
ours                        sentence-transformers
==========================  =====================================================================================
query/document marker       ``prompts={"query": "[unused0]", ...}``; the marker is registered as a special token
                            so the prompt stays one token right after ``[CLS]``, exactly where we insert it
query/document_max_length   ``Transformer(query_length=..., document_length=...)``
augment_queries=True        ``Transformer(query_expansion={"strategy": "fixed", "attend": True,
                            "length": query_max_length})`` (+ ``MultiVectorMask`` scores the [MASK] tokens)
projection head             ``Projection`` (ours), or ST's own ``Dense`` for a plain ``linear`` head
L2 norm + padding zeroed    ``Normalize`` (+ ``MultiVectorMask`` for the scoring mask)
pooling (dense)             ``Pooling(pooling_mode="mean" | "cls")``
==========================  =====================================================================================

What cannot map back into our models (``from_sentence_transformers`` raises a ``ValueError`` naming each, or only
warns with ``strict=False``): a ``MultiVectorMask`` skiplist or ``keep_only_token_ids``, query expansion with
``attend=False`` or ``strategy="min"`` or a non-[MASK] token, ``meanmaxsim`` scoring, prompts that are not one
vocabulary token, pooling modes other than mean/cls (or ``include_prompt=False``), a ``Dense`` with a non-identity
activation, extra modules (token pooling, routers, ...), and a missing ``Normalize``.

Loading a saved folder whose head is not plain ``linear`` needs ``trust_remote_code=True``: since
sentence-transformers 6.0 every module class outside ``sentence_transformers.*`` is gated by that flag, local
folders included. The folder names ``hf_projections.integrations.sentence_transformers.Projection`` in
``modules.json``, so hf-projections must be installed where it is loaded. Plain linear heads are saved as ST's
``Dense`` and load without the flag.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_model as save_safetensors_model
from sentence_transformers.base.modules import Dense, Module, Normalize, Transformer
from torch import nn
from transformers import AddedToken
from transformers.utils import logging as transformers_logging

from hf_projections.heads import build_projection
from hf_projections.heads.linear import LinearProjection
from hf_projections.io import atomic_write, atomic_write_json

logger = logging.getLogger(__name__)

PROJECTION_CLASS_REF = f"{__name__}.Projection"
TOKEN_FEATURE = "token_embeddings"
SENTENCE_FEATURE = "sentence_embedding"


class Projection(Module):
    """A sentence-transformers module running an hf-projections head ``(..., in_features) -> (..., out_features)``.

    Reads ``features[module_input_name]`` and writes ``features[module_output_name]``: `(batch, tokens, in)` ->
    `(batch, tokens, out)` on ``token_embeddings``, `(batch, in)` -> `(batch, out)` on ``sentence_embedding``.
    No normalisation happens here: put a ``Normalize`` after it, as for ST's ``Dense``.

    Args:
        in_features: input width (the backbone's hidden size).
        out_features: output width.
        projection: a preset name or spec dict (see ``hf_projections.list_projections()``); stored resolved.
        module_input_name: feature to read, ``"sentence_embedding"`` (default) or ``"token_embeddings"``.
        module_output_name: feature to write; defaults to ``module_input_name``.
        matryoshka_dims: nested output dims the head was trained for (kept so a round trip loses nothing).
    """

    config_keys: list[str] = [
        "in_features",
        "out_features",
        "projection",
        "module_input_name",
        "module_output_name",
        "matryoshka_dims",
    ]

    def __init__(
        self,
        in_features: int,
        out_features: int,
        projection: str | dict = "ffn2-x2-res",
        module_input_name: str = SENTENCE_FEATURE,
        module_output_name: str | None = None,
        matryoshka_dims: list[int] | None = None,
    ) -> None:
        super().__init__()
        if not isinstance(module_input_name, str) or not module_input_name:
            raise ValueError(f"module_input_name must be a feature name such as {TOKEN_FEATURE!r}, got {module_input_name!r}")
        self.head = build_projection(projection, in_features, out_features)
        self.in_features = in_features
        self.out_features = out_features
        self.projection = self.head.spec
        self.module_input_name = module_input_name
        self.module_output_name = module_output_name or module_input_name
        self.matryoshka_dims = list(matryoshka_dims) if matryoshka_dims is not None else None

    def forward(self, features: dict[str, torch.Tensor], **kwargs) -> dict[str, torch.Tensor]:
        """Project ``features[module_input_name]`` `(..., in_features)` into ``features[module_output_name]``."""
        features[self.module_output_name] = self.head(features[self.module_input_name])
        return features

    def get_embedding_dimension(self) -> int:
        return self.out_features

    def save(self, output_path: str, *args, safe_serialization: bool = True, **kwargs) -> None:
        """Write ``config.json`` and ``model.safetensors`` (atomically; safetensors only)."""
        if not safe_serialization:
            raise ValueError("hf-projections saves safetensors only; safe_serialization=False is not supported")
        atomic_write_json(Path(output_path) / self.config_file_name, self.get_config_dict())
        atomic_write(Path(output_path) / "model.safetensors", lambda temp: save_safetensors_model(self, temp))

    @classmethod
    def load(cls, model_name_or_path: str, subfolder: str = "", token=None, cache_folder=None, revision=None,
             local_files_only: bool = False, **kwargs) -> Projection:
        """Rebuild from ``config.json`` and load ``model.safetensors`` (missing or extra weights raise)."""
        hub_kwargs = {"subfolder": subfolder, "token": token, "cache_folder": cache_folder, "revision": revision,
                      "local_files_only": local_files_only}
        config = cls.load_config(model_name_or_path, **hub_kwargs)
        unknown = sorted(set(config) - set(cls.config_keys))
        if unknown:
            raise ValueError(f"Projection config has unknown keys {unknown}; allowed: {cls.config_keys}")
        module = cls(**config)
        return cls.load_torch_weights(model_name_or_path, model=module, **hub_kwargs)


# --------------------------------------------------------------------------- ours -> sentence-transformers


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
    prompts = {"query": cfg.query_marker or "", "document": cfg.document_marker or ""}
    if multi_vector:
        modules = [transformer, head, MultiVectorMask(), Normalize(module_input_name=TOKEN_FEATURE)]
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
    path = Path(path).resolve()
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=path.parent, prefix=".saving-st-") as staging:
        st_model.save(staging)
        path.mkdir(exist_ok=True)
        for name in sorted(os.listdir(staging)):
            target = path / name
            if target.is_dir() and not target.is_symlink():
                shutil.rmtree(target)  # os.replace cannot move a folder over a non-empty one
            os.replace(os.path.join(staging, name), target)
    return path


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


# --------------------------------------------------------------------------- sentence-transformers -> ours


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
        ours = [m["path"] or "." for m in modules_json if m.get("type") == PROJECTION_CLASS_REF]
        if ours:
            raise ValueError(
                f"{path} holds an hf-projections Projection module ({', '.join(ours)}); sentence-transformers >= 6 "
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
    heads, pooling, normalized, mask = [], None, False, None
    for module in modules[1:]:
        name = type(module).__name__
        if normalized:
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
    spec, state, dim, head_problems, matryoshka = _read_heads(heads, hidden)
    problems += head_problems
    config.update(projection=spec, dim=dim, matryoshka_dims=matryoshka)
    return {"kind": kind, "backbone": transformer.model, "tokenizer": tokenizer, "config": config,
            "head_state": state, "problems": problems}


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
    return assemble_model(plan["kind"], plan["backbone"], plan["tokenizer"], plan["config"], plan["head_state"],
                          backbone_name=backbone_name)


def assemble_model(kind: str, backbone: nn.Module, tokenizer, config: dict[str, Any], head_state: dict,
                   backbone_name: str | None = None):
    """Build a ``ColBERTModel`` (``kind="colbert"``) or ``DenseEmbeddingModel`` (``"dense"``) from loaded parts.

    Args:
        backbone: a loaded encoder (``PreTrainedModel``); its config is nested, its weights copied (pooler optional).
        tokenizer: the tokenizer (markers must be in its vocabulary).
        config: other config fields (``projection``, ``dim``, lengths, markers, ...).
        head_state: state dict for the head built from ``config["projection"]`` (strict).
    """
    from hf_projections.modeling import ColBERTModel, DenseEmbeddingModel

    if kind not in ("colbert", "dense"):
        raise ValueError(f"kind must be 'colbert' or 'dense', got {kind!r}")
    cls = ColBERTModel if kind == "colbert" else DenseEmbeddingModel
    model_config = cls.config_class(backbone_config=backbone.config.to_dict(), backbone_name=backbone_name, **config)
    model = cls(model_config)
    _copy_backbone_weights(backbone, model.backbone)
    model.projection.load_state_dict(head_state, strict=True)
    model.set_tokenizer(tokenizer)
    model.eval()
    return model


def _copy_backbone_weights(source: nn.Module, target: nn.Module) -> None:
    """Copy encoder weights; only pooler layers (unused for token states) may be absent on either side."""
    source_state = source.state_dict()
    missing, unexpected = target.load_state_dict(source_state, strict=False)
    missing = [k for k in missing if not k.startswith("pooler.")]
    unexpected = [k for k in unexpected if not k.startswith("pooler.")]
    if missing or unexpected:
        raise ValueError(f"backbone weights do not match: missing {missing[:5]}, unexpected {unexpected[:5]}")


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
