"""Batch-1 p50/p90 (ms, one thread) of one ONNX graph: ONNX Runtime, then OpenVINO compiled static per bucket of B
tokens (deploykit/ov_runtime.py's scheme; B = 1: every exact length), on the first n `sst2/test.tsv` sentences; best
of 3 rounds after a warm round that compiles every shape. SHARE=1 passes share_inputs/share_outputs to `infer`.
Prints the CPU flags first; compare ratios within one run.

    DEPLOYKIT_DATA_DIR=../shared/data python bench/ov_buckets.py runs/run18-padded 300 16 8 4 1
"""
import os, sys, time
from pathlib import Path
import numpy as np
import openvino as ov
import onnxruntime as ort
from transformers import AutoTokenizer

folder = Path(sys.argv[1]); n = int(sys.argv[2]); buckets = [int(b) for b in sys.argv[3:]]
tok = AutoTokenizer.from_pretrained(folder)
from deploykit.hardware import cpu_flags  # noqa: E402
print("CPU flags:", " ".join(f for f in sorted(cpu_flags()) if f.startswith(("avx", "amx"))))
data = Path(os.environ.get("DEPLOYKIT_DATA_DIR", "../shared/data")) / "sst2" / "test.tsv"
texts = [line.split("\t")[0] for line in data.read_text().splitlines()[1:]][:n]
encs = [tok(t, return_tensors="np", truncation=True, max_length=128) for t in texts]
onnx_path = folder / "model.onnx"
so = ort.SessionOptions(); so.intra_op_num_threads = 1
s = ort.InferenceSession(str(onnx_path), so, providers=["CPUExecutionProvider"])
names = [i.name for i in s.get_inputs()]
def feed(enc, pad_to=None):
    out = {}
    for nm in names:
        a = enc[nm].astype(np.int64) if nm in enc else np.zeros_like(enc["input_ids"], dtype=np.int64)
        if pad_to:
            L = a.shape[1]; tgt = -(-L // pad_to) * pad_to
            a = np.pad(a, ((0, 0), (0, tgt - L)))
        out[nm] = a
    return out
def timeit(run, pad_to=None, rounds=3):
    fs = [feed(e, pad_to) for e in encs]
    for f in fs: run(f)  # warm: every shape compiled
    best = None
    for _ in range(rounds):
        ts = []
        for f in fs:
            t = time.perf_counter(); run(f); ts.append((time.perf_counter() - t) * 1e3)
        r = (np.percentile(ts, 50), np.percentile(ts, 90))
        best = r if best is None or r[0] < best[0] else best
    return best
core = ov.Core()
cfg = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": "f32", "INFERENCE_NUM_THREADS": 1}
SHARE = bool(int(os.environ.get("SHARE", "0")))
def static(b):
    cache = {}
    def run(f):
        L = f["input_ids"].shape[1]
        if L not in cache:
            m = core.read_model(str(onnx_path)); m.reshape({p.get_any_name(): [1, L] for p in m.inputs})
            c = core.compile_model(m, "CPU", cfg); r = c.create_infer_request(); cache[L] = (r, c.outputs[0])
        r, o = cache[L]
        return np.array(r.infer(f, share_inputs=SHARE, share_outputs=SHARE)[o], dtype=np.float32)
    return run
ort_r = timeit(lambda f: s.run(None, f))
print(f"ort            p50 {ort_r[0]:.3f} p90 {ort_r[1]:.3f}")
for b in buckets:
    r = timeit(static(b), pad_to=b)
    print(f"ov static/{b:<3d}  p50 {r[0]:.3f} p90 {r[1]:.3f}  ratio {r[0]/ort_r[0]:.2f}x")
ort_r2 = timeit(lambda f: s.run(None, f))
print(f"ort again      p50 {ort_r2[0]:.3f} p90 {ort_r2[1]:.3f}")
