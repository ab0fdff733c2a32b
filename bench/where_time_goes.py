"""Where a batch-1 call of a text classifier artifact spends its time: tokenizer, model, the rest, and the model's
time by ONNX operator type (ONNX Runtime's own profiler). Issue 19 item 6 asks where the time goes.

    DEPLOYKIT_DATA_DIR=../shared/data python bench/where_time_goes.py runs/sst2-minilm/quantize --threads 1 2

Every figure is a median over the same test sentences, one at a time, in one process; the CPU's flags are printed
beside them. ORT's profiler times each node without the session's own overhead (input binding, output copy),
so the node times sum to less than the model's call.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from collections import defaultdict
from pathlib import Path


def _median_ms(call, items, repeats: int = 3) -> float:
    """The median over `items` of the fastest of `repeats` calls, in ms (the fastest absorbs a stray interrupt)."""
    out = []
    for item in items:
        best = float("inf")
        for _ in range(repeats):
            start = time.perf_counter()
            call(item)
            best = min(best, time.perf_counter() - start)
        out.append(best * 1000)
    return statistics.median(out)


def _op_profile(onnx_path: Path, feeds: list[dict], threads: int) -> tuple[dict[str, float], int]:
    """Median per-call microseconds by operator type over `feeds`, and the graph's node count."""
    import onnxruntime as ort

    from deploykit.evaluate import graph_feed

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.enable_profiling = True
    with tempfile.TemporaryDirectory() as tmp:
        opts.profile_file_prefix = str(Path(tmp) / "prof")
        sess = ort.InferenceSession(str(onnx_path), opts, providers=["CPUExecutionProvider"])
        names = [i.name for i in sess.get_inputs()]
        for feed in feeds:
            sess.run(None, graph_feed(feed, names))
        events = json.loads(Path(sess.end_profiling()).read_text())
    per_type: dict[str, float] = defaultdict(float)
    nodes = set()
    for e in events:
        if e.get("cat") == "Node" and e.get("name", "").endswith("_kernel_time"):
            per_type[e["args"]["op_name"]] += e["dur"]
            nodes.add(e["name"])
    return {k: v / len(feeds) for k, v in per_type.items()}, len(nodes)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("artifact", type=Path, help="an ONNX artifact folder deploykit wrote (text classifier)")
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--texts", type=int, default=200, help="test sentences, one call each")
    ap.add_argument("--data", default="sst2")
    args = ap.parse_args()

    import deploykit
    from deploykit.artifact import load_artifact
    from deploykit.config import DataConfig
    from deploykit.data import load_task
    from deploykit.hardware import describe

    task = load_task(DataConfig(name=args.data, text_column="sentence", label_column="label"))
    texts = (task.test or task.validation).texts[: args.texts]
    machine = describe()
    print(f"# {args.artifact} · {len(texts)} {args.data} sentences at batch 1 · {machine.get('cpu')} · "
          f"{machine.get('cores')} cores · flags: {machine.get('isa')}")
    print("| threads | end to end ms | tokenizer ms | model ms | rest ms | ORT nodes | node time ms |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    profiles = {}
    for threads in args.threads:
        clf = deploykit.load(args.artifact, threads=threads)
        tok = clf.tokenizer

        def encode(text: str) -> dict:
            enc = tok([text], truncation=True, max_length=clf.max_length, return_tensors="np")
            return {k: v.astype("int64") for k, v in enc.items()}

        feeds = [encode(t) for t in texts]
        for t in texts[:20]:  # warm-up
            clf.logits([t])
        e2e = _median_ms(lambda t: clf.logits([t]), texts)
        tokenizer = _median_ms(encode, texts)
        model = _median_ms(clf._predict, feeds)
        ops, count = _op_profile(load_artifact(args.artifact).onnx_path, feeds, threads)
        profiles[threads] = ops
        print(f"| {threads} | {e2e:.3f} | {tokenizer:.3f} | {model:.3f} | {e2e - tokenizer - model:.3f} | {count} | "
              f"{sum(ops.values()) / 1000:.3f} |")
    for threads, ops in profiles.items():
        total = sum(ops.values())
        print(f"\n{threads} thread(s): node time by operator type (per call, share of all node time)")
        print("| op type | µs | share |")
        print("| --- | --- | --- |")
        for op, us in sorted(ops.items(), key=lambda kv: -kv[1])[:12]:
            print(f"| {op} | {us:.1f} | {100 * us / total:.1f}% |")


if __name__ == "__main__":
    main()
