"""Where a decode step of deploykit's causal-LM ONNX graph spends its time, beside llama.cpp's step on the same
prompt length (issue 23 item 6: the decoder target's profile).

    python bench/decode_profile.py runs/sst2-smollm2/quantize [--gguf runs/.../llama.cpp/q4_k_m.gguf]

One prompt of `--prompt-tokens` word pieces, then `--steps` decode steps of one token each (always the same
token, no stop: every step counts), batch 1, `--threads` threads for both runtimes. ONNX Runtime runs with its
profiler on; the table sums its per-node kernel times over the decode steps by operator type (the prefill is
left out). With `--gguf` and llama-cpp-python installed, llama.cpp evaluates the same token ids step by step
(`Llama.eval`), timed the same way. Prints the machine's CPU flags first.
"""

from __future__ import annotations

import argparse
import collections
import json
import tempfile
import time
from pathlib import Path

import numpy as np

from deploykit.hardware import describe


def ort_steps(folder: Path, ids: list[int], steps: int, threads: int) -> tuple[float, list[float], dict]:
    """(prefill ms, per-step ms, {op type: [kernel us, nodes]} over the decode steps) of deploykit's graph."""
    from deploykit.llm.generate import OrtGenerator, position_ids

    gen = OrtGenerator(folder, threads=threads, profile_prefix=Path(tempfile.mkdtemp()) / "decode")
    step = gen.stepper()
    prompt = np.asarray([ids], dtype=np.int64)
    mask = np.ones_like(prompt)
    t0 = time.perf_counter()
    step(prompt, mask, position_ids(mask))
    prefill = (time.perf_counter() - t0) * 1000
    times = []
    for k in range(steps):
        mask = np.ones((1, len(ids) + k + 1), dtype=np.int64)
        t0 = time.perf_counter()
        step(np.asarray([[ids[-1]]], dtype=np.int64), mask, np.asarray([[len(ids) + k]], dtype=np.int64))
        times.append((time.perf_counter() - t0) * 1000)
    events = json.loads(Path(gen.session.end_profiling()).read_text())
    runs = sorted(e["ts"] for e in events if e.get("cat") == "Session" and e.get("name") == "model_run")
    by_op: dict[str, list[float]] = collections.defaultdict(lambda: [0.0, 0])
    for e in events:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time") and e["ts"] >= runs[1]:
            by_op[e["args"]["op_name"]][0] += e["dur"]
            by_op[e["args"]["op_name"]][1] += 1
    return prefill, times, dict(by_op)


def llama_cpp_steps(gguf: Path, ids: list[int], steps: int, threads: int) -> tuple[float, list[float]]:
    """(prefill ms, per-step ms) of llama.cpp on the same token ids."""
    from llama_cpp import Llama

    llm = Llama(model_path=str(gguf), n_ctx=len(ids) + steps + 8, n_threads=threads, n_threads_batch=threads,
                n_batch=len(ids), verbose=False)
    t0 = time.perf_counter()
    llm.eval(ids)
    prefill = (time.perf_counter() - t0) * 1000
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        llm.eval([ids[-1]])
        times.append((time.perf_counter() - t0) * 1000)
    return prefill, times


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folder", type=Path, help="deploykit's causal-LM ONNX folder (model.onnx with past inputs)")
    ap.add_argument("--gguf", type=Path, help="the same model as GGUF for llama.cpp (e.g. the bench's q4_k_m.gguf)")
    ap.add_argument("--prompt-tokens", type=int, default=70, help="SST-2 prompts: median 71 tokens")
    ap.add_argument("--steps", type=int, default=32)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    machine = describe()
    print(f"CPU: {machine['cpu']}, {machine['cores']} cores; ISA: {' '.join(machine['isa'])}")
    ids = [int(i) for i in np.random.default_rng(0).integers(100, 20000, args.prompt_tokens)]
    prefill, times, by_op = ort_steps(args.folder, ids, args.steps, args.threads)
    rows = [("deploykit ONNX (ONNX Runtime)", prefill, times)]
    if args.gguf:
        rows.append((f"{args.gguf.name} (llama.cpp)", *llama_cpp_steps(args.gguf, ids, args.steps, args.threads)))
    print(f"\nprompt {args.prompt_tokens} tokens, {args.steps} decode steps, batch 1, {args.threads} threads\n")
    print("| runtime | prefill ms | decode step p50 ms | decode tok/s |")
    print("| --- | --- | --- | --- |")
    for name, pre, step_ms in rows:
        p50 = float(np.median(step_ms))
        print(f"| {name} | {pre:.1f} | {p50:.2f} | {1000 / p50:.1f} |")
    total = sum(us for us, _ in by_op.values())
    print(f"\nONNX Runtime kernel time per decode step by operator type ({total / 1000 / args.steps:.2f} ms of "
          f"{np.mean(times):.2f} ms a step in kernels; {sum(n for _, n in by_op.values()) // args.steps} nodes)\n")
    print("| operator | ms / step | share | nodes / step |")
    print("| --- | --- | --- | --- |")
    for op, (us, n) in sorted(by_op.items(), key=lambda kv: -kv[1][0])[:15]:
        print(f"| {op} | {us / 1000 / args.steps:.3f} | {us / total:.1%} | {n // args.steps} |")


if __name__ == "__main__":
    main()
