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
projection_layers (ColBERT) ``LayerMix`` (ours) after the ``Transformer``, whose backbone config then has
                            ``output_hidden_states=True`` (it reads ``all_layer_embeddings``)
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

from hf_projections.integrations.sentence_transformers.exporting import save_sentence_transformers, to_sentence_transformers
from hf_projections.integrations.sentence_transformers.importing import from_sentence_transformers, load_sentence_transformers
from hf_projections.integrations.sentence_transformers.layer_mix_module import LAYER_MIX_CLASS_REF, LayerMix
from hf_projections.integrations.sentence_transformers.module import PROJECTION_CLASS_REF, Projection

# Saved folders name the module classes by this package's path (PROJECTION_CLASS_REF, LAYER_MIX_CLASS_REF).
Projection.__module__ = __name__
LayerMix.__module__ = __name__

__all__ = [
    "LAYER_MIX_CLASS_REF",
    "LayerMix",
    "PROJECTION_CLASS_REF",
    "Projection",
    "from_sentence_transformers",
    "load_sentence_transformers",
    "save_sentence_transformers",
    "to_sentence_transformers",
]
