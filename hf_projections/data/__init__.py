"""Data: BEIR-format retrieval sets (local folders or the Hub) and training pairs."""

from hf_projections.data.beir import BeirDataset, load_beir, load_beir_folder, load_beir_hub
from hf_projections.data.beir_files import DATA_ENV_VAR, BeirFormatError, resolve_data_dir
from hf_projections.data.pairs import (
    holdout_split,
    load_training_mix,
    load_training_pairs,
    pairs_to_beir,
    read_training_mix,
    read_training_pairs,
)

__all__ = [
    "DATA_ENV_VAR",
    "BeirDataset",
    "BeirFormatError",
    "holdout_split",
    "load_beir",
    "load_beir_folder",
    "load_beir_hub",
    "load_training_mix",
    "load_training_pairs",
    "read_training_mix",
    "read_training_pairs",
    "pairs_to_beir",
    "resolve_data_dir",
]
