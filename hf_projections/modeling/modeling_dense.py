"""``DenseEmbeddingModel``: a single-vector model, with Starbucks 2D Matryoshka sub-models.

Backbone -> pooling (``mean`` or ``cls``) -> projection head -> L2-normalise. A model trained with
``config.starbucks_pairs`` also encodes at each trained ``(layer, dim)`` pair: the pooled state after ``layer``
backbone blocks through the shared head, cut to its first ``dim`` features. Also copied into saved checkpoints
for ``trust_remote_code`` loading.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from transformers.utils import ModelOutput

try:  # installed package
    from hf_projections.modeling.configuration_hf_projections import DenseProjectionConfig
    from hf_projections.modeling.modeling_hf_projections import ProjectionPreTrainedModel
except ImportError:  # self-contained checkpoint folder (trust_remote_code)
    from .configuration_hf_projections import DenseProjectionConfig
    from .modeling_hf_projections import ProjectionPreTrainedModel


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
        hidden = self.hidden_states_at(input_ids, attention_mask, token_type_ids, layers=layer, **kwargs)
        return DenseOutput(embeddings=self.project_pooled(self.pool(hidden, mask), dim), last_hidden_state=hidden)

    def _forward_all_pairs(self, input_ids, attention_mask, token_type_ids, mask, **kwargs) -> DenseOutput:
        if not self.config.starbucks_pairs:
            raise ValueError("all_pairs=True needs config.starbucks_pairs (e.g. starbucks_pairs=[(2, 32), (4, 64)])")
        layers = sorted({int(layer) for layer, _ in self.config.starbucks_pairs})
        states = dict(zip(layers, self.hidden_states_at(input_ids, attention_mask, token_type_ids, layers=layers, **kwargs)))
        projected = {layer: self.projection(self.pool(hidden, mask)) for layer, hidden in states.items()}  # one head pass per layer
        pair_embeddings = [F.normalize(projected[layer][..., :dim], p=2, dim=-1) for layer, dim in self.config.starbucks_pairs]
        return DenseOutput(embeddings=pair_embeddings[-1], last_hidden_state=states[layers[-1]],
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
