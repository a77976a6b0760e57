"""``Projection``: a sentence-transformers 6 module that runs any hf-projections head on one feature."""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import save_model as save_safetensors_model
from sentence_transformers.base.modules import Module

from hf_projections.heads import build_projection
from hf_projections.atomic import atomic_write, atomic_write_json

# The class path saved folders name in modules.json (kept stable: the package re-exports the class).
PROJECTION_CLASS_REF = "hf_projections.integrations.sentence_transformers.Projection"
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
