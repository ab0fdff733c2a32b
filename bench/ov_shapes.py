"""Batch-1 p50/p90 (ms, one thread) of one ONNX graph in ONNX Runtime and in OpenVINO: dynamic as read, with bounded
dynamic dims, with inputs padded to length buckets, and compiled static per 16-token bucket (deploykit/ov_runtime.py's
scheme), on the first n `sst2/test.tsv` sentences. Prints the CPU flags first.

    DEPLOYKIT_DATA_DIR=../shared/data python bench/ov_shapes.py runs/sst2-minilm/quantize 300
"""
import os
import sys
import time
from pathlib import Path
import numpy as np
import openvino as ov
import onnxruntime as ort
from transformers import AutoTokenizer

folder = Path(sys.argv[1]); n = int(sys.argv[2]) if len(sys.argv) > 2 else 300
tok = AutoTokenizer.from_pretrained(folder)
data = Path(os.environ.get("DEPLOYKIT_DATA_DIR", "../shared/data")) / "sst2" / "test.tsv"
texts = [line.split("\t")[0] for line in data.read_text().splitlines()[1:]][:n]
from deploykit.hardware import cpu_flags  # noqa: E402
print("CPU flags:", " ".join(sorted(cpu_flags())))
encs = [tok(t, return_tensors="np", truncation=True, max_length=64) for t in texts]
onnx_path = folder / "model.onnx"

def feed(enc, names, pad_to=None):
    out = {}
    for nm in names:
        a = enc[nm].astype(np.int64) if nm in enc else np.zeros_like(enc["input_ids"], dtype=np.int64)
        if pad_to:
            L = a.shape[1]; tgt = -(-L // pad_to) * pad_to
            a = np.pad(a, ((0, 0), (0, tgt - L)), constant_values=(tok.pad_token_id if nm == "input_ids" else 0))
        out[nm] = a
    return out

def timeit(run, names, pad_to=None):
    for e in encs[:20]: run(feed(e, names, pad_to))
    ts = []
    for e in encs:
        f = feed(e, names, pad_to); t = time.perf_counter(); run(f); ts.append((time.perf_counter() - t) * 1e3)
    return np.percentile(ts, 50), np.percentile(ts, 90)

res = {}
so = ort.SessionOptions(); so.intra_op_num_threads = 1
s = ort.InferenceSession(str(onnx_path), so, providers=["CPUExecutionProvider"])
names = [i.name for i in s.get_inputs()]
res["ort"] = timeit(lambda f: s.run(None, f), names)
core = ov.Core()
cfg = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": "f32", "INFERENCE_NUM_THREADS": 1}
def compiled(model):
    c = core.compile_model(model, "CPU", cfg); r = c.create_infer_request(); o = c.outputs[0]
    return lambda f: r.infer(f)[o]
res["ov"] = timeit(compiled(core.read_model(str(onnx_path))), names)
m = core.read_model(str(onnx_path))
m.reshape({p.get_any_name(): ov.PartialShape([ov.Dimension(1, 32), ov.Dimension(1, 128)]) for p in m.inputs})
res["ov bounded"] = timeit(compiled(m), names)
for b in (16, 64):
    res[f"ov pad {b}"] = timeit(compiled(core.read_model(str(onnx_path))), names, pad_to=b)
    res[f"ort pad {b}"] = timeit(lambda f: s.run(None, f), names, pad_to=b)
for k, (p50, p90) in res.items():
    print(f"{k:14s} p50 {p50:6.3f} ms  p90 {p90:6.3f} ms")

# static shapes: one compiled model per bucket of 16 (batch 1)
buckets = {}
def static_run(f):
    L = f["input_ids"].shape[1]
    if L not in buckets:
        mm = core.read_model(str(onnx_path)); mm.reshape({p.get_any_name(): [1, L] for p in mm.inputs})
        buckets[L] = compiled(mm)
    return buckets[L](f)
print("ov static/16  p50 %.3f ms p90 %.3f ms" % timeit(static_run, names, pad_to=16))
