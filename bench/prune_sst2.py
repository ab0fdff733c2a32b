"""Prune the fine-tuned SST-2 MiniLM (ffn + width + vocab, KD recovery); compare it with its parent.

    DEPLOYKIT_DATA_DIR=../shared/data python bench/prune_sst2.py [--teacher runs/teacher-sst2] \
        [--train-rows 3000] [--set prune.width=0.25] [--out runs/bench-prune]

Recovery fine-tunes on a seeded subset of sst2/train.tsv (`--train-rows`; the full file costs about
30 min per epoch on the 2-core CPU) while distilling from the unpruned model. Prints one Markdown
table: accuracy on sst2/test.tsv, parameters, MACs at 128 tokens, size on disk and ONNX Runtime
batch-1 latency (FP32, plain TorchScript export, 2 threads), all measured in this one run.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from deploykit.artifact import load_artifact
from deploykit.config import build_recipe
from deploykit.pipeline import run_stage

SENTENCE = "the film is a charming , often funny and quietly affecting journey through a family 's history ."
# bf16 off: on this shared 2-core AMD machine bf16 training steps measured ~3x slower than fp32 under load
RECOVERY = {"epochs": 1, "learning_rate": 1e-4, "batch_size": 32, "eval_batch_size": 128, "warmup_ratio": 0.06,
            "early_stopping_patience": None, "logging_steps": 25, "bf16": "off"}


def export_onnx(folder: Path, onnx_path: Path) -> None:
    """Plain TorchScript export with eager attention (the path STACK.md measured with 6e-8 parity)."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    model = AutoModelForSequenceClassification.from_pretrained(folder, attn_implementation="eager").eval()
    enc = AutoTokenizer.from_pretrained(folder)([SENTENCE], return_tensors="pt")
    names = ["input_ids", "attention_mask", "token_type_ids"]
    args = tuple(enc[n] for n in names)
    axes = {n: {0: "batch", 1: "seq"} for n in names}
    torch.onnx.export(model, args, str(onnx_path), input_names=names, output_names=["logits"],
                      dynamic_axes={**axes, "logits": {0: "batch"}}, opset_version=17, dynamo=False)
    session = _session(onnx_path)
    with torch.inference_mode():
        ref = model(**enc).logits.numpy()
    got = session.run(None, {n: enc[n].numpy() for n in names})[0]
    if np.abs(got - ref).max() > 1e-4:
        raise SystemExit(f"{onnx_path}: ONNX logits differ from PyTorch by {np.abs(got - ref).max():.2e}")


def _session(onnx_path: Path):
    from deploykit.evaluate import ort_session

    # spinning off: idle ORT threads would otherwise steal the cores of the other model's block
    return ort_session(onnx_path, threads=2, spinning=False)


def latencies(folders: dict[str, Path], work: Path, blocks: int = 5, calls: int = 40) -> dict[str, float]:
    """Median batch-1 latency (ms) per model, interleaved in blocks of `calls` so drift hits both alike."""
    from transformers import AutoTokenizer

    sessions, feeds = {}, {}
    for name, folder in folders.items():
        onnx_path = work / f"{name}.onnx"
        export_onnx(folder, onnx_path)
        sessions[name] = _session(onnx_path)
        enc = AutoTokenizer.from_pretrained(folder)([SENTENCE], return_tensors="np")
        feeds[name] = {k: enc[k].astype(np.int64) for k in ("input_ids", "attention_mask", "token_type_ids")}
    times: dict[str, list[float]] = {n: [] for n in folders}
    for _ in range(blocks):
        for name, session in sessions.items():
            for i in range(calls + 5):
                t = time.perf_counter()
                session.run(None, feeds[name])
                if i >= 5:  # the first calls of a block warm the caches back up
                    times[name].append((time.perf_counter() - t) * 1e3)
    return {n: statistics.median(v) for n, v in times.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--teacher", default="runs/teacher-sst2")
    ap.add_argument("--out", default="runs/bench-prune")
    ap.add_argument("--train-rows", type=int, default=3000)
    ap.add_argument("--eval-rows", type=int, default=300, help="validation rows (sst2/dev.tsv) for checkpoints")
    ap.add_argument("--set", action="append", default=[], dest="sets", help="e.g. prune.width=0.3333")
    ap.add_argument("--pruned", help="measure this existing prune-stage output of --teacher instead of pruning "
                                     "(e.g. runs/sst2-minilm/prune with --teacher runs/sst2-minilm/distill)")
    args = ap.parse_args()
    if not os.environ.get("DEPLOYKIT_DATA_DIR"):
        raise SystemExit("set DEPLOYKIT_DATA_DIR to the folder holding sst2/ (e.g. ../shared/data)")
    teacher = Path(args.teacher)
    recipe = build_recipe({
        "model": {"source": str(teacher)},
        "data": {"name": "sst2", "max_length": 64, "label_names": ["negative", "positive"],
                 "max_train_samples": args.train_rows,
                 "max_eval_samples": args.eval_rows},
        "prune": {"ffn": 0.5, "width": 0.25, "vocab": True, "importance": "taylor", "importance_batches": 4,
                  "steps": 1, "recovery": RECOVERY, "distill_from_parent": True, "macs_seq_len": 128},
    }, args.sets, origin="bench/prune_sst2.py")
    if args.pruned:
        art = load_artifact(args.pruned)
        if Path(art.manifest["parent"]["path"]).resolve() != teacher.resolve():
            raise SystemExit(f"{args.pruned} was pruned from {art.manifest['parent']['path']}, not from {teacher}")
        # describe the stage as it ran, not as this script's defaults would have run it
        recipe = build_recipe({k: v for k, v in art.manifest["config"].items() if v is not None},
                              origin=f"{args.pruned}/manifest.json")
        seconds = art.metrics["seconds"]
        args.train_rows = recipe.data.max_train_samples or "all"
    else:
        start = time.time()
        art = run_stage("prune", recipe, teacher, Path(args.out))
        seconds = time.time() - start

    from deploykit.data import load_task
    from deploykit.evaluate import evaluate_artifact

    test = load_task(recipe.data).test
    acc = {"unpruned": evaluate_artifact(load_artifact(teacher), test, recipe.data.max_length)["accuracy"],
           "pruned": art.metrics["test"]["accuracy"]}
    with tempfile.TemporaryDirectory() as tmp:
        lat = latencies({"unpruned": teacher, "pruned": art.path}, Path(tmp))
    m, p = art.metrics, recipe.prune
    before, after = m["before"], m["after"]
    size = {n: (f / "model.safetensors").stat().st_size / 2**20 for n, f in (("unpruned", teacher), ("pruned", art.path))}
    shape = lambda s: f"{s['layers']}L / hidden {s['hidden']} / {s['heads']} heads / FFN {s['ffn']} / vocab {s['vocab']}"
    rows = [
        ("shape", shape(before["shape"]), shape(after["shape"])),
        ("accuracy, sst2/test.tsv (872)", f"{acc['unpruned']:.2f}", f"{acc['pruned']:.2f}"),
        ("parameters", f"{before['parameters'] / 1e6:.2f} M", f"{after['parameters'] / 1e6:.2f} M"),
        (f"MACs at {before['macs_seq_len']} tokens", f"{before['macs'] / 1e9:.3f} G", f"{after['macs'] / 1e9:.3f} G"),
        ("model.safetensors", f"{size['unpruned']:.1f} MiB", f"{size['pruned']:.1f} MiB"),
        ("ORT FP32 batch-1 latency (median)", f"{lat['unpruned']:.2f} ms", f"{lat['pruned']:.2f} ms"),
    ]
    rows_used = (f"the training rows of >= {p.recovery_min_words} words" if p.recovery_min_words
                 else f"{args.train_rows} train rows")
    print(f"\nprune: ffn={p.ffn} width={p.width} vocab={p.vocab} importance={p.importance} steps={p.steps}; "
          f"recovery {p.recovery.epochs} epochs on {rows_used}, KD from the unpruned model; "
          f"stage took {seconds:.0f}s; accuracy change {acc['pruned'] - acc['unpruned']:+.2f} pt; "
          f"MACs x{m['macs_ratio']:.3f}, latency x{lat['pruned'] / lat['unpruned']:.2f}\n")
    print("| | unpruned | pruned |\n|---|---|---|")
    for name, a, b in rows:
        print(f"| {name} | {a} | {b} |")


if __name__ == "__main__":
    main()
