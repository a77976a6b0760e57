"""Make what the GPU run needs and the GPU machine lacks, in folders git ignores (run here, on the CPU machine).

- ``.gpu/backbone``: the offline all-MiniLM-L6-v2 (config, tokenizer) with its weights in fp16: 46 MB instead of 91,
  since at most 64 MiB travels per command; ``run_on_device.sh stage`` restores them to fp32 there.
- ``.gpu/data``: the evaluation sets (SciFact, ArguAna, SQuAD dev: test qrels, gzipped corpus and queries) and the
  three training sets, 24 MB, from ``$HF_PROJECTIONS_DATA``.
- ``.whl``: wheels of ``ir-measures`` and ``pytrec-eval-terrier`` for the machine's Python 3.12 (it has neither).

    python benchmarks/gpu/prepare.py            # then see benchmarks/gpu/README.md
"""

from __future__ import annotations

import argparse
import gzip
import shutil
import subprocess
import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from hf_projections.data import resolve_data_dir  # noqa: E402
from hf_projections.training import default_backbone  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
EVAL_SETS = ("scifact", "arguana", "squad-dev")
TRAIN_SETS = ("squad", "nq-qed", "arguana-genq")
WHEELS = ("ir-measures==0.4.3", "pytrec-eval-terrier==0.5.11")
PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_24_x86_64", "manylinux_2_17_x86_64",
             "manylinux2014_x86_64")


def fp16_backbone(target: Path, source: str | None = None) -> None:
    """The backbone with fp16 weights (transport only: the device restores fp32 before training)."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    source = source or default_backbone()
    model = AutoModel.from_pretrained(source, dtype=torch.float32).half()
    shutil.rmtree(target, ignore_errors=True)
    model.save_pretrained(target)
    AutoTokenizer.from_pretrained(source).save_pretrained(target)


def copy_data(target: Path) -> None:
    """Evaluation sets (test qrels only, text files gzipped) and training sets, as the package's loaders read them."""
    for name in EVAL_SETS + TRAIN_SETS:
        source = resolve_data_dir(name)
        if source is None:
            raise SystemExit(f"data set {name!r} not found: point HF_PROJECTIONS_DATA at ../shared/data")
        folder = target / name
        shutil.rmtree(folder, ignore_errors=True)
        (folder / "qrels").mkdir(parents=True) if name in EVAL_SETS else folder.mkdir(parents=True)
        for path in source.iterdir():
            if path.suffix == ".jsonl":
                with path.open("rb") as raw, gzip.open(folder / f"{path.name}.gz", "wb", compresslevel=9) as packed:
                    shutil.copyfileobj(raw, packed)
            elif path.is_file():
                shutil.copy2(path, folder / path.name)
        if name in EVAL_SETS:
            shutil.copy2(source / "qrels" / "test.tsv", folder / "qrels" / "test.tsv")


def download_wheels(target: Path) -> None:
    target.mkdir(exist_ok=True)
    platforms = [arg for platform in PLATFORMS for arg in ("--platform", platform)]
    subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--python-version",
                    "3.12", "--implementation", "cp", *platforms, "-d", str(target), *WHEELS], check=True)


def size_mib(path: Path) -> float:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) / 2**20


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backbone", default=None)
    parser.add_argument("--skip-wheels", action="store_true")
    args = parser.parse_args(argv)
    fp16_backbone(REPO / ".gpu" / "backbone", args.backbone)
    copy_data(REPO / ".gpu" / "data")
    if not args.skip_wheels:
        download_wheels(REPO / ".whl")
    for part in (".gpu/backbone", ".gpu/data", ".whl"):
        if (REPO / part).exists():
            print(f"{part}: {size_mib(REPO / part):.1f} MiB")


if __name__ == "__main__":
    main()
