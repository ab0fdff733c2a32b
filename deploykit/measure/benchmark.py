"""Measure artifacts side by side in one process: batch-1 latency, throughput, memory, size, accuracy.

    from deploykit.measure.bench_plan import Settings, Subject
    from deploykit.measure.benchmark import measure
    rows = measure([Subject("finetune", load_artifact("runs/sst2/finetune"))], task.test,
                   Settings.from_config(BenchConfig(quick=True)), max_length=64)

`deploykit bench ARTIFACT...` (deploykit/stages/bench.py) calls this and writes the reports; which rows
exist (artifact x runtime x target) is deploykit/measure/bench_plan.py's.
What keeps the figures comparable:
- every artifact sees the same texts: real sentences of the evaluation split at their natural token
  lengths (batch 1 is never padded; a larger batch is padded to its longest sentence);
- each runtime is warmed up after loading, and again (BLOCK_WARMUP calls) at the start of each block;
- runtimes are interleaved in blocks of BLOCK calls, round after round: a slow minute on a shared
  machine hits all of them alike, and no timed call directly follows another runtime's call;
- targets are measured one after the other, since torch's thread count is process-wide;
- ONNX Runtime sessions spin, as deployed (ORT's default; with spinning off the SST-2 final graph ran 1.2-1.4x
  slower at batch 1 on 2 threads, bench/README.md "Run 39"), and every block opens with a pause of
  SWITCH_PAUSE_S: idle ORT threads spin ~30 ms after a call (torch's OpenMP threads for a while too) and would
  otherwise slow the next row's first calls (STACK.md, "Measuring several runtimes in one process").
"""

from __future__ import annotations

import functools
import os
import random
import sys
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from deploykit.artifact import Artifact
from deploykit.console import progress
from deploykit.data import Split, encode
from deploykit.errors import UserError
from deploykit.evaluate import EVAL_BATCH, eval_batch_size, metrics, predict
from deploykit.hardware import cores
from deploykit.lineage import trained_stride
from deploykit.measure.bench_plan import (
    BLOCK,
    BLOCK_WARMUP,
    SWITCH_PAUSE_S,
    THROUGHPUT_BATCHES,
    Row,
    Settings,
    Subject,
    bf16_device,
    plan_rows,
)
from deploykit.measure.footprint import parameter_count, peak_memory, rss_mb, size_mb
from deploykit.runtimes import LABELS, Unavailable, load_runtime

# ---------------------------------------------------------------- inputs

def sample_order(n_texts: int, count: int, seed: int = 0) -> list[int]:
    """`count` indices into the split: a seeded shuffle, cycled when the split is shorter."""
    order = list(range(n_texts))
    random.Random(seed).shuffle(order)
    return [order[i % n_texts] for i in range(count)]


class Inputs:
    """Tokenized inputs per artifact (a pruned vocabulary means its own tokenizer), same texts for all."""

    def __init__(self, split: Split, settings: Settings, max_length: int):
        self.split, self.max_length = split, max_length
        self.latency_idx = sample_order(len(split), settings.latency_samples)
        self.batch_idx = {b: [sample_order(len(split), b * THROUGHPUT_BATCHES, seed=b)[i * b:(i + 1) * b]
                              for i in range(THROUGHPUT_BATCHES)] for b in settings.batch_sizes}
        self._cache: dict[Path, tuple[Any, list[dict], dict[int, list[dict]]]] = {}

    def tokenizer(self, artifact: Artifact):
        return self._encoded(artifact)[0]

    def singles(self, artifact: Artifact) -> list[dict]:
        return self._encoded(artifact)[1]

    def batches(self, artifact: Artifact, batch: int) -> list[dict]:
        return self._encoded(artifact)[2][batch]

    def _encoded(self, artifact: Artifact):
        if artifact.path not in self._cache:
            from transformers import AutoTokenizer

            try:
                tok = AutoTokenizer.from_pretrained(artifact.path)
            except (OSError, ValueError):
                raise UserError(f"{artifact.path}: no tokenizer files next to the model; "
                                "save the tokenizer into the artifact folder") from None

            def enc(idx: list[int]) -> dict:
                return dict(encode(self.split.take(idx), tok, self.max_length, padding=True, return_tensors="np"))

            singles = [enc([i]) for i in self.latency_idx]
            batches = {b: [enc(idx) for idx in groups] for b, groups in self.batch_idx.items()}
            self._cache[artifact.path] = (tok, singles, batches)
        return self._cache[artifact.path]


# ---------------------------------------------------------------- measuring steps

def _load(row: Row, inputs: Inputs, settings: Settings, pool: dict) -> None:
    """Load (or reuse) the row's runtime, warm it up, and note the process RSS it added."""
    art = row.subject.artifact
    # a torch model serves every CPU target (threads are set per block); an ORT session fixes its threads
    key = (art.path, row.runtime, "cuda" if row.target == "gpu" else "cpu",
           None if row.runtime.startswith("torch") else row.threads)
    if key not in pool:
        before = rss_mb()
        try:
            loaded = load_runtime(art, row.runtime, row.threads, device=key[2])
        except Unavailable as err:
            row.skip = str(err)
            return
        loaded.prepare(row.threads)
        for feed in inputs.singles(art)[: max(settings.warmup, 1)]:
            loaded.predict(feed)
        for b in settings.batch_sizes:
            loaded.predict(inputs.batches(art, b)[0])
        pool[key] = (loaded, round(rss_mb() - before, 1))
    row.loaded, growth = pool[key]
    if row.loaded.notes:  # how the runtime chose to run it (batch 1 on one thread): beside the row's figures
        row.note = "; ".join(filter(None, [row.note, *row.loaded.notes]))
    row.memory = {"model_rss_mb": growth, "peak_rss_mb": None,
                  "memory_method": "in-process: RSS growth while loading and running the largest batch"
                  + (" (host memory only; the weights live on the GPU)" if row.loaded.device != "cpu" else "")}


def _timed(run: Callable, calls: list, out: list[float]) -> None:
    """Milliseconds of each `run(call)` appended to `out`, after a pause and BLOCK_WARMUP untimed calls."""
    time.sleep(SWITCH_PAUSE_S)
    for call in calls[:BLOCK_WARMUP]:
        run(call)
    for call in calls:
        start = time.perf_counter()
        run(call)
        out.append((time.perf_counter() - start) * 1000)


def _latency_block(row: Row, feeds: list[dict]) -> None:
    row.loaded.prepare(row.threads)
    block: list[float] = []
    _timed(row.loaded.predict, feeds, block)
    row.latencies_ms += block
    row.block_p50_ms.append(float(np.median(block)))


def _throughput_block(row: Row, batches: list[dict], batch: int, seconds: float) -> None:
    run = row.loaded.predict
    row.loaded.prepare(row.threads)
    time.sleep(SWITCH_PAUSE_S)
    run(batches[0])
    done, i = 0, 0
    start = time.perf_counter()
    while True:
        feed = batches[i % len(batches)]
        run(feed)
        done += len(feed["input_ids"])
        i += 1
        elapsed = time.perf_counter() - start
        if elapsed >= seconds:
            break
    total = row.work.setdefault(batch, [0.0, 0.0])
    total[0] += done
    total[1] += elapsed
    row.block_rates.setdefault(batch, []).append(done / elapsed)


# runtimes whose rows also get the end-to-end latency of the predictor a user deploys (text in, label out)
E2E_RUNTIMES = ("torch", "ort")


def _e2e_block(row: Row, inputs: Inputs, pool: dict, predictor=None) -> None:
    """Batch-1 latency of `deploykit.load(artifact)(text)`: tokenizer, model and post-processing, beside the
    model-only latency of the same row on the same texts; `predictor`: the kind's (default: a text classifier)."""
    from deploykit.predictor import ClassifierPredictor

    if row.loaded is None:
        return
    art = row.subject.artifact
    key = (art.path, row.runtime, row.threads)
    if key not in pool:
        pool[key] = (predictor or ClassifierPredictor)(art, runtime=row.runtime, threads=row.threads,
                                                       max_length=inputs.max_length)
    clf = pool[key]
    row.loaded.prepare(row.threads)  # torch's thread count is process-wide: the row's own
    texts = [inputs.split.texts[i] for i in inputs.latency_idx]
    pairs = [inputs.split.pairs[i] for i in inputs.latency_idx] if inputs.split.pairs else None
    calls = [(t, p) if pairs else t for t, p in zip(texts, pairs or texts)]
    _timed(clf, calls, row.e2e_ms)


def _quality(row: Row, inputs: Inputs, split: Split, cache: dict, score=None) -> None:
    """The row's quality on `split`: accuracy and macro-F1 of its texts, or the kind's `score`."""
    art = row.subject.artifact
    key = (art.path, row.runtime, row.loaded.device)
    if key not in cache:
        row.loaded.prepare(row.threads)
        batch = eval_batch_size(art.onnx_path if art.format == "onnx" else None)
        tokenizer = inputs.tokenizer(art)
        if score is not None:
            cache[key] = {**score(row.loaded.predict, tokenizer, art, inputs.max_length, batch, len(split)),
                          "eval_batch": batch}
        else:
            # a model trained on windows (its manifest records window_stride) is scored on pooled windows
            stride = trained_stride(art, inputs.max_length, tokenizer)
            logits = predict(row.loaded.predict, split, tokenizer, inputs.max_length, batch_size=batch, stride=stride)
            m = metrics(logits, split.labels)
            cache[key] = {"accuracy": m["accuracy"], "macro_f1": m["macro_f1"], "eval_n": m["n"], "eval_batch": batch}
    row.quality = dict(cache[key])


def measure(subjects: list[Subject], split: Split, settings: Settings, max_length: int, score=None,
            predictor=None) -> dict[str, Any]:
    """Measure every artifact x runtime x target on `split`.

    `score` and `predictor` come from the task's kind (deploykit/kinds/base.py `bench_texts`, `predictor`): how a
    row's quality is scored on the first `eval_samples` texts, and what the end-to-end latency calls; None: a
    text classifier's accuracy and `deploykit.predictor.ClassifierPredictor`.

    Returns:
        {"rows": one report row (dict) per artifact x runtime x target, "method": how they were measured}.
    """
    rows = plan_rows(subjects, settings)
    inputs = Inputs(split, settings, max_length)
    eval_split = split.head(settings.eval_samples)
    pool: dict = {}
    quality: dict = {}

    def live(target: str, turn: int) -> list[Row]:
        # one target after the other: torch's thread count is process-wide, so it changes once per
        # target, not every block; odd rounds run in reverse so no row always follows the same one
        ready = [r for r in rows if r.loaded is not None and r.target == target]
        return ready[::-1] if turn % 2 else ready

    steps: list[Callable[[], None]] = [lambda r=r: _load(r, inputs, settings, pool) for r in rows if not r.skip]
    for target in settings.targets:
        steps += _timing_steps(functools.partial(live, target), inputs, settings)
    predictors: dict = {}
    steps += [lambda r=r: _e2e_block(r, inputs, predictors, predictor) for r in rows
              if not r.skip and r.runtime in E2E_RUNTIMES and r.target != "gpu"]
    steps.append(lambda: [_quality(r, inputs, eval_split, quality, score) for r in rows if r.loaded is not None])
    if settings.memory == "subprocess":
        steps += [lambda r=r: _memory_step(r, inputs, max_length) for r in rows if not r.skip]
    threads_before = _torch_threads()
    load_before = _load_average()
    try:
        for step in progress(steps, total=len(steps), description="bench: measuring"):
            step()
    finally:
        # every torch block sets the process-wide thread count of its target; give the caller its own back
        if threads_before:
            import torch

            torch.set_num_threads(threads_before)
    method = {**_method(settings, inputs, eval_split, rows), "load_average": [load_before, _load_average()]}
    return {"rows": [row_dict(r, settings) for r in rows], "method": method}


def _load_average() -> float | None:
    """The 1-minute load average: above the core count, other processes competed for the cores."""
    return round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None


def _timing_steps(live: Callable[[int], list[Row]], inputs: Inputs, settings: Settings) -> list[Callable]:
    """Latency blocks, then throughput blocks per batch size, each step running every row of `live`."""
    steps: list[Callable[[], None]] = []
    block = min(BLOCK, settings.latency_samples)
    for start in range(0, settings.latency_samples, block):
        steps.append(lambda s=start: [_latency_block(r, inputs.singles(r.subject.artifact)[s:s + block])
                                      for r in live(s // block)])
    seconds = settings.min_time_s / settings.throughput_rounds
    for b in settings.batch_sizes:
        for turn in range(settings.throughput_rounds):
            steps.append(lambda b=b, t=turn: [_throughput_block(r, inputs.batches(r.subject.artifact, b), b, seconds)
                                              for r in live(t) if b in r.batch_sizes])
    return steps


def _torch_threads() -> int | None:
    if "torch" not in sys.modules:
        return None
    import torch

    return torch.get_num_threads()


def _method(settings: Settings, inputs: Inputs, eval_split: Split, rows: list[Row]) -> dict[str, Any]:
    measured = [r for r in rows if r.loaded is not None]
    lengths = [f["input_ids"].shape[1] for f in inputs.singles(measured[0].subject.artifact)] if measured else []
    return {
        "targets": settings.targets, "cores": cores(), "batch_sizes": settings.batch_sizes,
        "latency_samples": settings.latency_samples, "warmup": settings.warmup, "min_time_s": settings.min_time_s,
        "texts": len(set(inputs.latency_idx)), "eval_n": len(eval_split), "eval_batch": EVAL_BATCH,
        "tokens": (f"median {int(np.median(lengths))}, {min(lengths)} to {max(lengths)}" if lengths else "n/a"),
        "block": min(BLOCK, settings.latency_samples), "block_warmup": BLOCK_WARMUP,
        "throughput_rounds": settings.throughput_rounds, "ort_spinning": True,
        "switch_pause_ms": round(SWITCH_PAUSE_S * 1000),
        "memory": ("a fresh subprocess per row loads the model and runs its largest batch twice; peak RSS "
                   "is that whole process (Python, runtime libraries, model, activations), model RSS the part "
                   "above the process after imports and tokenization" if settings.memory == "subprocess" else
                   "--quick: no subprocess, so no peak RSS; model RSS is the growth of the benchmark process "
                   "while loading each model and running its largest batch (a lower bound)"),
    }


# ---------------------------------------------------------------- memory

def _memory_step(row: Row, inputs: Inputs, max_length: int) -> None:
    if row.loaded is None:
        return
    largest = inputs.split.take(inputs.batch_idx[max(row.batch_sizes)][0])
    row.memory = peak_memory(row.subject.artifact, row.runtime, row.threads, row.loaded.device, largest, max_length)


# ---------------------------------------------------------------- rows

def _percentiles(values: list[float]) -> dict[str, float] | None:
    if not values:
        return None
    p50, p90, p99 = np.percentile(values, [50, 90, 99])
    return {"p50": round(float(p50), 3), "p90": round(float(p90), 3), "p99": round(float(p99), 3),
            "mean": round(float(np.mean(values)), 3), "n": len(values)}


def row_dict(row: Row, settings: Settings) -> dict[str, Any]:
    """The report row: keys are the same for measured and skipped rows (None where not measured)."""
    from deploykit.hardware import bf16_supported

    art = row.subject.artifact
    ok = row.loaded is not None
    return {
        "name": row.subject.name, "artifact": str(art.path), "stage": art.stage, "format": art.format,
        "baseline": row.subject.baseline, "runtime": row.runtime, "runtime_label": LABELS[row.runtime],
        "target": row.target, "device": row.loaded.device if ok else None, "threads": row.threads,
        "status": "ok" if ok else "skipped", "note": row.skip or row.note,
        "bf16_native": bf16_supported(bf16_device(row.target)) if row.runtime == "torch-bf16" else None,
        "latency_ms": _percentiles(row.latencies_ms),
        "e2e_latency_ms": _percentiles(row.e2e_ms),
        "throughput": {str(b): round(s / t, 1) for b, (s, t) in sorted(row.work.items())} if ok else None,
        # each block's figure, in the order the blocks ran (every row of a target runs its k-th block in the same
        # round): how far the machine's speed moved during the bench (deploykit/measure/headline.py `spread`)
        "throughput_blocks": {str(b): [round(r, 1) for r in v] for b, v in sorted(row.block_rates.items())} if ok
        else None,
        "latency_block_p50_ms": [round(v, 4) for v in row.block_p50_ms] if ok else None,
        "peak_rss_mb": row.memory.get("peak_rss_mb"), "model_rss_mb": row.memory.get("model_rss_mb"),
        "memory_method": row.memory.get("memory_method"),
        "size_mb": size_mb(art),
        "parameters": parameter_count(art),
        "accuracy": row.quality.get("accuracy"), "macro_f1": row.quality.get("macro_f1"),
        "eval_n": row.quality.get("eval_n"), "eval_batch": row.quality.get("eval_batch"),
        **row.quality,  # a kind's own figures (entity F1, precision, recall)
    }

