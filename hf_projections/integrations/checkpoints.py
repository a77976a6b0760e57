"""Import existing ColBERT checkpoints into ``ColBERTModel`` and upgrade their linear head.

Supported layouts (local folders, or Hub ids fetched with ``snapshot_download``):

- ``"pylate"``: a sentence-transformers-style folder (``modules.json``; transformer files at the root or in
  ``0_Transformer/``; ``1_Dense/config.json`` + ``1_Dense/model.safetensors`` with ``linear.weight`` and maybe
  ``residual.weight``; ``config_sentence_transformers.json`` with ``query_prefix``/``document_prefix``,
  ``query_length``/``document_length``, ``do_query_expansion``, ``attend_to_expansion_tokens``,
  ``skiplist_words``). Loaded through sentence-transformers' ``MultiVectorEncoder``, which reads these legacy
  fields, then converted.
- ``"sentence-transformers"``: a ``MultiVectorEncoder`` save (sentence-transformers >= 6).
- ``"stanford"``: a Stanford-NLP ColBERT folder: a Hugging Face BERT (``config.json``, often with
  ``architectures: ["HF_ColBERT"]``) whose ``model.safetensors`` holds the encoder (``bert.*``) and the projection
  as ``linear.weight`` at the root, plus an optional ``artifact.metadata`` (``query_maxlen``, ``doc_maxlen``,
  ``query_token_id``, ``doc_token_id``, ``attend_to_mask_tokens``, ``mask_punctuation``).
- ``"hf-projections"``: a folder saved by ``ColBERTModel.save_pretrained``.

A chain of linear projection layers (PyLate's optional residual included) is one linear map, so every import yields
a ``linear`` head holding that map; :func:`upgrade_projection` then swaps it for a residual head that computes the
same map at step 0 (``init_from_linear``), ready for fine-tuning.

Real ColBERT checkpoints usually differ from our models in two scoring details: their encoder does not attend
to the [MASK] query-augmentation tokens (``attend_to_mask_tokens=False``), and they drop punctuation from document
scoring (a skiplist). Our models attend to the [MASK] tokens and score every token, so an import is exact only
without those; by default (``strict=False``) the import warns and proceeds, ``strict=True`` raises.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import torch
from safetensors import safe_open
from transformers import AutoModel, AutoTokenizer

from hf_projections.integrations.sentence_transformers import from_sentence_transformers, load_sentence_transformers
from hf_projections.modeling import ColBERTModel

logger = logging.getLogger(__name__)

LAYOUTS = ("hf-projections", "sentence-transformers", "pylate", "stanford")
STANFORD_METADATA = "artifact.metadata"


def detect_checkpoint_layout(path: str | os.PathLike) -> str:
    """Which of :data:`LAYOUTS` the local folder ``path`` holds; ``ValueError`` if none."""
    folder = Path(path)
    if not folder.is_dir():
        raise ValueError(f"checkpoint folder {str(path)!r} does not exist")
    config = _read_json(folder / "config.json")
    if config.get("model_type") == "hf_projections_colbert":
        return "hf-projections"
    modules = folder / "modules.json"
    if modules.exists():
        st_config = _read_json(folder / "config_sentence_transformers.json")
        model_type = st_config.get("model_type")
        types = [entry.get("type", "") for entry in json.loads(modules.read_text(encoding="utf-8"))]
        legacy_keys = {"query_prefix", "document_prefix", "do_query_expansion", "attend_to_expansion_tokens"}
        if model_type == "ColBERT" or any(t.startswith("pylate.") for t in types) or legacy_keys & set(st_config):
            return "pylate"
        if model_type == "MultiVectorEncoder":
            return "sentence-transformers"
        if model_type == "SentenceTransformer":
            raise ValueError(
                f"{path} is a single-vector SentenceTransformer, not a ColBERT checkpoint; use "
                "hf_projections.integrations.sentence_transformers.from_sentence_transformers for a DenseEmbeddingModel"
            )
        return "sentence-transformers"
    if config and ("HF_ColBERT" in (config.get("architectures") or []) or _has_root_linear(folder)):
        return "stanford"
    raise ValueError(
        f"{path} is not a recognised ColBERT checkpoint: expected a PyLate / sentence-transformers folder "
        "(modules.json), a Stanford ColBERT folder (config.json + model.safetensors with a root 'linear.weight'), "
        "or an hf-projections save (config.json with model_type 'hf_projections_colbert')"
    )


def load_colbert_checkpoint(path: str | os.PathLike, *, layout: str | None = None, strict: bool = False,
                            trust_remote_code: bool = False):
    """Import an existing ColBERT checkpoint as a ``ColBERTModel`` with a ``linear`` head.

    Args:
        path: local folder, or a Hub id (downloaded with ``huggingface_hub.snapshot_download``).
        layout: one of :data:`LAYOUTS`; detected when ``None``.
        strict: raise ``ValueError`` when the checkpoint scores differently than our model can (skiplist,
            non-attended [MASK] tokens, ...); by default those are logged as a warning and dropped.
        trust_remote_code: passed to sentence-transformers for folders whose ``modules.json`` names classes
            outside ``sentence_transformers`` (e.g. our own ``Projection``).

    Returns:
        A ``ColBERTModel`` in eval mode on CPU (``config.backbone_name`` = ``path``).
    """
    folder = _local_folder(path)
    layout = layout or detect_checkpoint_layout(folder)
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {', '.join(LAYOUTS)}, got {layout!r}")
    if layout == "hf-projections":
        return ColBERTModel.from_pretrained(folder)
    if layout == "stanford":
        return _load_stanford(folder, strict=strict, backbone_name=str(path))
    st_model = load_sentence_transformers(folder, trust_remote_code=trust_remote_code, multi_vector=True)
    return from_sentence_transformers(st_model, strict=strict, backbone_name=str(path))


def upgrade_projection(model, projection: str | dict = "ffn2-x2-res"):
    """``model.upgrade_projection(projection)``: swap a ``linear`` head for a residual head computing the same map
    at step 0 (see ``ProjectionPreTrainedModel.upgrade_projection``); returns ``model``."""
    return model.upgrade_projection(projection)


def _load_stanford(folder: Path, *, strict: bool, backbone_name: str):
    metadata = _read_json(folder / STANFORD_METADATA)
    weight = _read_root_linear(folder)
    backbone = AutoModel.from_pretrained(folder)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    hidden = backbone.config.hidden_size
    if weight.shape[1] != hidden:
        raise ValueError(f"linear.weight has shape {tuple(weight.shape)}; its input width must be the hidden size {hidden}")

    problems = []
    if not metadata.get("attend_to_mask_tokens", False):
        problems.append("attend_to_mask_tokens=False: our query augmentation lets the encoder attend to [MASK] tokens")
    if metadata.get("mask_punctuation", True):
        problems.append("mask_punctuation=True: our models also score punctuation tokens in documents")
    if metadata.get("similarity", "cosine") != "cosine":
        problems.append(f"similarity={metadata['similarity']!r}: our models score with dot products (cosine)")
    if problems:
        message = f"{folder} (Stanford ColBERT) cannot be imported exactly:\n  - " + "\n  - ".join(problems)
        if strict:
            raise ValueError(message + "\npass strict=False to import anyway (scores will differ slightly)")
        logger.warning("%s\nimporting anyway (strict=False)", message)

    config = {
        "projection": {"type": "linear", "bias": False},
        "dim": int(weight.shape[0]),
        "query_max_length": int(metadata.get("query_maxlen") or 32),
        "document_max_length": int(metadata.get("doc_maxlen") or 180),
        "query_marker": metadata.get("query_token_id") or "[unused0]",
        "document_marker": metadata.get("doc_token_id") or "[unused1]",
        "augment_queries": True,
    }
    return ColBERTModel.from_parts(backbone, tokenizer, head_state={"linear.weight": weight}, backbone_name=backbone_name,
                                  **config).eval()


def _safetensors_files(folder: Path) -> list[Path]:
    index = folder / "model.safetensors.index.json"
    if index.exists():
        shards = sorted(set(json.loads(index.read_text(encoding="utf-8"))["weight_map"].values()))
        return [folder / shard for shard in shards]
    single = folder / "model.safetensors"
    if single.exists():
        return [single]
    if (folder / "pytorch_model.bin").exists():
        raise ValueError(
            f"{folder} holds only pytorch_model.bin; hf-projections never unpickles weights. Convert it to "
            "model.safetensors first (e.g. with transformers: load it once in a trusted environment and save_pretrained)"
        )
    return []


def _has_root_linear(folder: Path) -> bool:
    for path in _safetensors_files(folder):
        with safe_open(str(path), framework="pt") as handle:
            if "linear.weight" in handle.keys():
                return True
    return False


def _read_root_linear(folder: Path) -> torch.Tensor:
    for path in _safetensors_files(folder):
        with safe_open(str(path), framework="pt") as handle:
            if "linear.weight" in handle.keys():
                return handle.get_tensor("linear.weight").float()
    raise ValueError(f"{folder}: no 'linear.weight' at the root of the safetensors state dict")


# --------------------------------------------------------------------------- helpers


def _read_json(path: Path) -> dict:
    if not path.exists():
        return {}
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise ValueError(f"{path} is not valid JSON: {error}") from error


def _local_folder(path: str | os.PathLike) -> Path:
    if os.path.isdir(path):
        return Path(path)
    text = str(path)
    if isinstance(path, os.PathLike) or os.path.isabs(text) or text.startswith((".", "~")) or text.count("/") != 1:
        raise ValueError(f"checkpoint folder {text!r} does not exist (and it is not an 'org/name' Hub id)")
    from huggingface_hub import snapshot_download

    return Path(snapshot_download(str(path), allow_patterns=["*.json", "*.safetensors", "*.txt", "*.model",
                                                             "*.metadata", "*/*.json", "*/*.safetensors"]))
