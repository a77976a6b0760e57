"""Benchmark scripts of hf-projections (run them as ``python benchmarks/<name>.py``; see RESULTS.md)."""
