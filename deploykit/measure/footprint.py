"""A model's footprint: size on disk, parameter count, and peak resident memory in a fresh process.

    from deploykit.measure.footprint import parameter_count, peak_memory, size_mb
    size_mb(art), parameter_count(art)   # (22.4, 22762754) for an INT8 ONNX MiniLM
    peak_memory(load_artifact("runs/sst2/quantize"), "ort", threads=2, device="cpu", batch=split.head(32),
                max_length=64)   # {'peak_rss_mb': 316.3, 'model_rss_mb': 24.5, 'memory_method': ...}

Why memory is measured in a subprocess: in the benchmark process every runtime is loaded at once and the allocator keeps
freed memory, so neither RSS deltas nor the process peak can be pinned on one model. The child is
`python -m deploykit.measure.footprint`, its spec as JSON on stdin (no file a killed run could leave behind); it
prints one JSON line.
"""

from __future__ import annotations

import json
import math
import resource
import subprocess
import sys
from pathlib import Path
from typing import Any

from deploykit.artifact import Artifact
from deploykit.data import Split, encode
from deploykit.runtimes import load_runtime


def rss_mb() -> float:
    import psutil

    return psutil.Process().memory_info().rss / 2**20


def peak_memory(artifact: Artifact, runtime: str, threads: int, device: str, batch: Split,
                max_length: int) -> dict[str, Any]:
    """Peak RSS of a fresh Python process that loads `artifact` into `runtime` and runs `batch` twice.

    Returns:
        peak_rss_mb (the whole process: interpreter, runtime libraries, model, activations) and
        model_rss_mb (the part above the process after its imports and tokenization).
    """
    spec = {"path": str(artifact.path), "manifest": artifact.manifest, "runtime": runtime, "threads": threads,
            "device": device, "texts": batch.texts, "pairs": batch.pairs, "max_length": max_length}
    out = run_child("deploykit.measure.footprint", spec, f"{artifact.path} ({runtime})")
    return {"peak_rss_mb": out["peak_rss_mb"], "model_rss_mb": round(out["peak_rss_mb"] - out["base_rss_mb"], 1),
            "memory_method": f"subprocess: peak RSS of a fresh process running batch {len(batch)}"
            + (f"; GPU: {out['gpu_peak_mb']} MB allocated at peak" if "gpu_peak_mb" in out else "")}


def run_child(module: str, spec: dict[str, Any], what: str, purpose: str = "memory measurement") -> dict[str, Any]:
    """Run `python -m <module>` in a fresh process, `spec` as JSON on its stdin, and return the JSON of its last
    stdout line. Errors: RuntimeError "<purpose> of <what> failed: ..." with the signal that killed the child
    (a crash in a native library: SIGSEGV, SIGABRT) or its last stderr line.

    Memory children of other model kinds (deploykit.llm.bench) and the llama.cpp crash probe reuse this.
    """
    proc = subprocess.run([sys.executable, "-m", module], input=json.dumps(spec, default=str), capture_output=True,
                          text=True, timeout=900)
    if proc.returncode < 0:
        raise RuntimeError(f"{purpose} of {what} failed: the process was killed by {_signal_name(-proc.returncode)}")
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise RuntimeError(f"{purpose} of {what} failed: {last}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _signal_name(number: int) -> str:
    import signal

    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def _memory_child(spec: dict[str, Any]) -> None:
    # import the runtime's libraries and tokenize first: what they take is baseline, not model
    if spec["runtime"].startswith("torch"):
        import torch
        from transformers import AutoConfig
        from transformers.models.auto.modeling_auto import MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING

        MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING[type(AutoConfig.from_pretrained(spec["path"]))]  # its module
        torch.set_num_threads(spec["threads"])
        torch.ones(64, 64) @ torch.ones(64, 64)  # starts the thread pool
        if spec["device"] != "cpu":
            torch.zeros(1, device=spec["device"])  # the CUDA context (hundreds of MB of RSS) is baseline too
    else:
        import onnxruntime  # noqa: F401
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(spec["path"])
    feed = dict(encode(Split(spec["texts"], spec["pairs"], [0] * len(spec["texts"])), tokenizer,
                       spec["max_length"], padding=True, return_tensors="np"))
    base = rss_mb()
    loaded = load_runtime(Artifact(Path(spec["path"]), spec["manifest"]), spec["runtime"], spec["threads"],
                          device=spec["device"])
    loaded.prepare(spec["threads"])
    loaded.predict(feed)
    loaded.predict(feed)
    out = {"peak_rss_mb": round(peak_rss_mb(), 1), "base_rss_mb": round(base, 1)}
    if spec["device"] != "cpu" and spec["runtime"].startswith("torch"):
        import torch

        out["gpu_peak_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    print(json.dumps(out))


def peak_rss_mb() -> float:
    """This process's peak RSS. Linux: VmHWM, because ru_maxrss carries over the RSS of the forking
    parent across exec (a child of a 500 MB benchmark would report at least 500 MB)."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            return next(int(ln.split()[1]) for ln in fh if ln.startswith("VmHWM:")) / 2**10
    except (OSError, StopIteration):
        # ru_maxrss: kilobytes on Linux, bytes on macOS
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / (2**20 if sys.platform == "darwin" else 2**10)


def model_files(artifact: Artifact) -> list[Path]:
    """The files that hold the model itself (weights, graph, engine); tokenizer and configs excluded."""
    if artifact.format == "onnx":
        from deploykit.onnx import ops as onnx_ops

        return onnx_ops.model_files(artifact.onnx_path)
    if artifact.format == "tensorrt":
        from deploykit.runtimes import engine_path

        return [engine_path(artifact)]
    if artifact.format == "openvino":
        from deploykit.runtimes import ir_path

        return [ir_path(artifact), ir_path(artifact).with_suffix(".bin")]
    return sorted(artifact.path.glob("*.safetensors")) or sorted(artifact.path.glob("pytorch_model*.bin"))


def size_mb(artifact: Artifact) -> float:
    return round(sum(p.stat().st_size for p in model_files(artifact) if p.is_file()) / 2**20, 2)


def parameter_count(artifact: Artifact) -> int | None:
    """Weights in the artifact: tensors in safetensors files; elements of all ONNX initializers
    (so an INT8 graph counts its scales and zero points); TensorRT: its manifest's figure, if any."""
    if artifact.format == "onnx":
        import onnx

        graph = onnx.load(str(artifact.onnx_path), load_external_data=False)
        return int(sum(math.prod(t.dims) for t in graph.graph.initializer))
    if artifact.format in ("tensorrt", "openvino"):
        return artifact.metrics.get("parameters")
    files = model_files(artifact)
    if files and files[0].suffix == ".safetensors":
        from safetensors import safe_open

        total = 0
        for f in files:
            with safe_open(str(f), "np") as fh:
                total += sum(math.prod(fh.get_slice(k).get_shape()) for k in fh.keys())
        return total
    return None


if __name__ == "__main__":
    _memory_child(json.load(sys.stdin))
