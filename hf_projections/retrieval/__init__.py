"""Encoding storage and exact top-k search (MaxSim for multi-vector models, dot product for dense)."""

from hf_projections.retrieval.search import dense_topk, maxsim_topk, naive_maxsim
from hf_projections.retrieval.store import EncodedCorpus, corpus_fingerprint, encode_corpus, model_fingerprint

__all__ = [
    "EncodedCorpus",
    "corpus_fingerprint",
    "dense_topk",
    "encode_corpus",
    "maxsim_topk",
    "model_fingerprint",
    "naive_maxsim",
]
