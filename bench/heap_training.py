"""What keeping freed memory in the heap saves a CPU training step (`deploykit/train/heap.py`): the default
recipe's teacher (6 layers) and student (3 layers), glibc's default malloc settings against `kept_heap`, in
alternating blocks in one process.

    python bench/heap_training.py [--blocks 4] [--steps 10] [--seq 24] [--batch 32] [--bf16]
    ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 MKL_ENABLE_INSTRUCTIONS=AVX2 python bench/heap_training.py

Each block times `--steps` whole steps (forward + backward, clipping at max norm 1.0, fused AdamW, zero_grad with
gradients set to None, as the Trainer does; `--bf16`: the forward under bf16 autocast, as `bf16: auto` trains on a
CPU with AMX) after 2 warm-up steps, on random word pieces, and counts the minor page
faults and the system CPU time the process took. Ratios are taken within a round (default block, then kept-heap
block), so drift of the machine between rounds cancels; the table gives medians over rounds.
"""

from __future__ import annotations

import argparse
import contextlib
import resource
import statistics
import time

import torch
from optimizer_step import print_machine, step_models  # bench/ is the script's folder, so on sys.path

from deploykit.train.heap import kept_heap


def random_batch(model, batch: int, seq: int) -> dict:
    """A seeded batch of random word pieces (ids from 1000 up: no special tokens) with binary labels."""
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(1000, model.config.vocab_size, (batch, seq), generator=gen)
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids),
            "labels": torch.randint(0, 2, (batch,), generator=gen)}


def time_block(model, opt, params, batch, steps: int, bf16: bool = False) -> dict[str, float]:
    """Per step: wall ms, minor page faults and system CPU ms over `steps` steps after 2 warm-up steps."""
    def step():
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = model(**batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)

    for _ in range(2):
        step()
    r0, t0 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    for _ in range(steps):
        step()
    t1, r1 = time.perf_counter(), resource.getrusage(resource.RUSAGE_SELF)
    return {"ms": (t1 - t0) * 1000 / steps, "faults": (r1.ru_minflt - r0.ru_minflt) / steps,
            "sys_ms": (r1.ru_stime - r0.ru_stime) * 1000 / steps}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--blocks", type=int, default=4, help="rounds of one default and one kept-heap block")
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--seq", type=int, default=24, help="word pieces per row (SST-2 batches: ~20 after padding)")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--bf16", action="store_true", help="forward under bf16 autocast (the trainer's bf16 on)")
    args = ap.parse_args()
    print_machine()
    print(f"batch {args.batch} x {args.seq} word pieces{', bf16 autocast' if args.bf16 else ''}; {args.blocks} "
          f"rounds of {args.steps} steps a block; medians over rounds\n")
    print("| model | malloc | ms/step | page faults/step | system CPU ms/step | step time vs default "
          "(per round: min-max) |")
    print("| --- | --- | --- | --- | --- | --- |")
    for layers, model in step_models():
        params = list(model.parameters())
        opt = torch.optim.AdamW(params, lr=1e-4, weight_decay=0.01, fused=True)
        batch = random_batch(model, args.batch, args.seq)
        runs = {"glibc default": [], "kept heap": []}
        for _ in range(args.blocks):
            for name, ctx in (("glibc default", contextlib.nullcontext), ("kept heap", kept_heap)):
                with ctx():
                    runs[name].append(time_block(model, opt, params, batch, args.steps, args.bf16))
        ratios = [k["ms"] / d["ms"] for d, k in zip(runs["glibc default"], runs["kept heap"])]
        for name, blocks in runs.items():
            med = {key: statistics.median(b[key] for b in blocks) for key in ("ms", "faults", "sys_ms")}
            vs = "1" if name == "glibc default" else (f"{statistics.median(ratios):.3f} "
                                                      f"({min(ratios):.3f}-{max(ratios):.3f})")
            print(f"| {layers} layers | {name} | {med['ms']:.1f} | {med['faults']:,.0f} | {med['sys_ms']:.1f} | "
                  f"{vs} |")


if __name__ == "__main__":
    main()
