"""Sweeps: a grid of projection heads x seeds trained and evaluated under one identical budget."""

from hf_projections.sweep.runner import fill_sweep_cache, load_sweep_run, run_sweep
from hf_projections.sweep.settings import PRESETS, SweepSettings

__all__ = ["PRESETS", "SweepSettings", "fill_sweep_cache", "load_sweep_run", "run_sweep"]
