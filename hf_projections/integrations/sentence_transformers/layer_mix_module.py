"""``LayerMix``: a sentence-transformers 6 module giving the head a mix of several backbone layers' token states.

It sits between the ``Transformer`` (which must return every layer's states: its backbone config has
``output_hidden_states=True``, so ``features["all_layer_embeddings"]`` is filled) and the ``Projection``, and writes
``token_embeddings``, exactly what a ``ColBERTModel`` with ``projection_layers`` feeds its head.
"""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import save_model as save_safetensors_model
from sentence_transformers.base.modules import Module

from hf_projections.atomic import atomic_write, atomic_write_json
from hf_projections.heads.layer_mix import LAYER_MIXES, build_layer_mix

LAYER_MIX_CLASS_REF = "hf_projections.integrations.sentence_transformers.LayerMix"
ALL_LAYERS_FEATURE = "all_layer_embeddings"
TOKEN_FEATURE = "token_embeddings"


class LayerMix(Module):
    """Mix the token states after ``layers`` backbone blocks into ``token_embeddings``.

    Reads ``features["all_layer_embeddings"]`` (the embeddings output, then one `(batch, tokens, hidden)` tensor per
    block) and ``features["token_embeddings"]`` (the last layer, final norms included: used for the top block count,
    as our models do); writes `(batch, tokens, hidden)` (``scalar``) or `(batch, tokens, len(layers) * hidden)`
    (``concat``) to ``token_embeddings``.

    Args:
        layers: block counts ``0..L`` (``L``: the backbone's depth), as ``config.resolved_projection_layers()``.
        mix: ``scalar`` (softmax-weighted sum, ``len(layers) + 1`` weights) or ``concat`` (side by side, no weights).
    """

    config_keys: list[str] = ["layers", "mix"]

    def __init__(self, layers: list[int], mix: str = "scalar") -> None:
        super().__init__()
        if not isinstance(layers, (list, tuple)) or not layers or any(
            isinstance(k, bool) or not isinstance(k, int) or k < 0 for k in layers
        ):
            raise ValueError(f"layers must be a non-empty list of block counts (ints >= 0), got {layers!r}")
        if mix not in LAYER_MIXES:
            raise ValueError(f"mix must be one of {', '.join(LAYER_MIXES)}, got {mix!r}")
        self.layers = [int(k) for k in layers]
        self.mix = mix
        self.layer_mix = build_layer_mix(mix, len(self.layers))

    def forward(self, features: dict[str, torch.Tensor], **kwargs) -> dict[str, torch.Tensor]:
        """``features[token_embeddings]`` <- the mix of the states after ``layers`` blocks."""
        all_layers = features.get(ALL_LAYERS_FEATURE)
        if all_layers is None:
            raise ValueError(
                f"LayerMix needs features[{ALL_LAYERS_FEATURE!r}]: set output_hidden_states=True in the Transformer "
                "module's backbone config (to_sentence_transformers does)"
            )
        depth = len(all_layers) - 1
        if max(self.layers) > depth:
            raise ValueError(f"LayerMix reads block counts {self.layers}, but the backbone has {depth} blocks")
        states = [features[TOKEN_FEATURE] if k == depth else all_layers[k] for k in self.layers]
        features[TOKEN_FEATURE] = self.layer_mix(states)
        return features

    def save(self, output_path: str, *args, safe_serialization: bool = True, **kwargs) -> None:
        """Write ``config.json`` and ``model.safetensors`` (atomically; safetensors only)."""
        if not safe_serialization:
            raise ValueError("hf-projections saves safetensors only; safe_serialization=False is not supported")
        atomic_write_json(Path(output_path) / self.config_file_name, self.get_config_dict())
        atomic_write(Path(output_path) / "model.safetensors", lambda temp: save_safetensors_model(self, temp))

    @classmethod
    def load(cls, model_name_or_path: str, subfolder: str = "", token=None, cache_folder=None, revision=None,
             local_files_only: bool = False, **kwargs) -> LayerMix:
        """Rebuild from ``config.json`` and load ``model.safetensors`` (missing or extra weights raise)."""
        hub_kwargs = {"subfolder": subfolder, "token": token, "cache_folder": cache_folder, "revision": revision,
                      "local_files_only": local_files_only}
        config = cls.load_config(model_name_or_path, **hub_kwargs)
        unknown = sorted(set(config) - set(cls.config_keys))
        if unknown:
            raise ValueError(f"LayerMix config has unknown keys {unknown}; allowed: {cls.config_keys}")
        module = cls(**config)
        return cls.load_torch_weights(model_name_or_path, model=module, **hub_kwargs)
