"""The runtimes `deploykit bench` measures, which artifact each reads, and why one cannot run here.

    from deploykit.runtimes import load_runtime
    loaded = load_runtime(load_artifact("runs/sst2/quantize"), "ort", threads=2)
    loaded.prepare(2); loaded.predict(dict(tokenizer(["a fine film"], return_tensors="np")))  # logits (1, 2)

`RUNTIMES` (at the end) is the one table of runtimes: what each reads, where it runs, how reports and V2
clients name it, and its loader; READS, TARGETS, LABELS and AUTO are its columns.

`openvino` (the `openvino` extra) compiles the same ONNX graph for the CPU with the latency hint; it is
measured on ONNX folders only when `bench.runtimes` names it. OpenVINO IR folders (format `openvino`: the
bench's OpenVINO + NNCF peer row, deploykit/quant/ov_peer.py) run on it alone.

A runtime that this machine cannot run (no CUDA GPU, no `tensorrt` package) is not an error: the
benchmark keeps a skipped row whose note says what is missing.
"""

from __future__ import annotations

import importlib.util
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from deploykit.errors import UserError
from deploykit.evaluate import Predictor, ort_predictor, ort_session, torch_predictor


class Unavailable(Exception):
    """This machine cannot run the runtime after all (found out while loading); the row is skipped."""


@dataclass
class Loaded:
    """A runtime holding one model: `prepare(threads)` before each block of calls, then `predict(batch)`.

    One loaded torch model serves several targets, so the thread count is the caller's, per block; an
    ORT session has its threads fixed when it is created, and its `prepare` does nothing.
    """

    predict: Predictor
    prepare: Callable[[int | None], None]
    device: str
    load_seconds: float = 0.0
    notes: list[str] = field(default_factory=list)  # how it runs, where that is not what was asked (the bench says)


def plan(fmt: str, target: str, requested: list[str] | None) -> tuple[list[str], str | None]:
    """Runtimes to measure for an artifact of format `fmt` on `target`.

    Args:
        fmt: the artifact format (pytorch, onnx, tensorrt).
        target: cpu, edge or gpu.
        requested: `bench.runtimes`, or None for every runtime that reads `fmt`.

    Returns:
        (runtimes, None) when some apply; otherwise ([one runtime], why) for a single skipped row.
    """
    # an IR folder has one runtime whatever bench.runtimes asks for the ONNX rows
    readers = [r for r in (requested if requested and fmt != "openvino" else AUTO.get(fmt, [])) if fmt in READS[r]]
    here = [r for r in readers if target in TARGETS[r]]
    if here:
        return here, None
    if readers:
        where = " or ".join(TARGETS[readers[0]])
        return readers[:1], f"{readers[0]} runs on target {where}, not {target}"
    shown = requested[0] if requested else "-"
    return [shown], f"none of the runtimes {requested} reads a {fmt} artifact"


def unavailable(runtime: str, target: str) -> str | None:
    """Why `runtime` cannot run on this machine for `target`, or None when it can."""
    import torch

    if target == "gpu" or runtime in ("ort-cuda", "tensorrt"):
        if not torch.cuda.is_available():
            return "no CUDA GPU on this machine (torch.cuda.is_available() is False)"
    if runtime == "ort-cuda":
        import onnxruntime as ort

        if "CUDAExecutionProvider" not in ort.get_available_providers():
            return (f"onnxruntime here has no CUDAExecutionProvider ({', '.join(ort.get_available_providers())}); "
                    "install onnxruntime-gpu instead of onnxruntime")
    if runtime == "tensorrt":
        try:
            import tensorrt  # noqa: F401
        except ImportError:
            return "the tensorrt package is not installed (pip install 'deploykit[tensorrt]' on a GPU machine)"
    if runtime == "openvino" and importlib.util.find_spec("openvino") is None:
        return "the openvino package is not installed (pip install 'deploykit[openvino]')"
    return None


def ir_path(artifact) -> Path:
    """The OpenVINO IR graph (model.xml; its weights in model.bin beside it) of an `openvino` artifact.

    Raises:
        UserError: manifest.json's `ir_file` is not a file name, or the file is not XML.
    """
    name = artifact.manifest.get("ir_file", "model.xml")
    if not isinstance(name, str) or not name.strip():
        raise UserError(f"{artifact.path}/manifest.json: ir_file must name the IR's .xml file (e.g. \"model.xml\"), "
                        f"not {name!r}")
    path = artifact.path / name
    # OpenVINO hands a file its IR reader does not claim to every other frontend, whose C++ parsers print their own
    # errors (a dozen TensorFlow lines for random bytes) before its one exception
    if path.is_file():
        with path.open("rb") as f:
            head = f.read(64).lstrip(b"\xef\xbb\xbf \t\r\n")
        if not head.startswith(b"<"):
            what = f"it starts with {head[:16]!r}" if head else "it is empty"
            raise UserError(f"{path}: not an OpenVINO IR: its .xml file is not XML ({what})")
    return path


def openvino_reason(err: Exception) -> str:
    """The line of an OpenVINO error that says what is wrong: its messages open with lines naming the C++ source
    ("Exception from src/inference/src/cpp/core.cpp:84:", "Check '...' failed at ...") and end with the cause."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    causes = [line for line in lines if not line.startswith(("Exception from ", "Check '", "FrontEnd API failed"))]
    return (causes or lines or [type(err).__name__])[-1][:300]


def engine_path(artifact) -> Path:
    """The serialized TensorRT engine of a tensorrt artifact (written by `deploykit export --format tensorrt`)."""
    from deploykit.tensorrt import ENGINE_FILE

    return artifact.path / artifact.manifest.get("engine_file", ENGINE_FILE)


def load_runtime(artifact, runtime: str, threads: int | None, device: str = "cpu", spinning: bool = True) -> Loaded:
    """Load `artifact` into `runtime` with `threads` intra-op threads (None: the runtime's default).

    `spinning`: whether an ORT CPU session's idle intra-op threads spin before they sleep (ONNX Runtime's default,
    what a deployed session does: ~30 ms of one core after each call on a 2-core machine, and 1.2-1.4x faster at
    batch 1 with 2 threads on the SST-2 final graph than with spinning off, bench/README.md "Run 39"). False for a
    process that shares its cores with other work; other runtimes ignore it.
    """
    if artifact.format not in READS[runtime]:
        raise UserError(f"{artifact.path}: runtime {runtime} reads {' or '.join(READS[runtime])} artifacts, "
                        f"not {artifact.format}")
    start = time.perf_counter()
    loaded = RUNTIMES[runtime].load(artifact, threads, device, spinning)
    loaded.load_seconds = time.perf_counter() - start
    return loaded


def _nothing(threads: int | None) -> None:
    return None


def _load_ort(artifact, threads: int | None, device: str, spinning: bool) -> Loaded:
    from deploykit.ort_threads import ThreadChoice
    from deploykit.quant.fit import saturation_fault

    session = ort_session(artifact.onnx_path, threads, spinning=spinning)
    choice = ThreadChoice.for_graph(artifact.onnx_path, session, threads, spinning)
    notes = [ONE_OR_MANY] if choice else []
    # deploykit.load refuses such a graph; a bench row (the standard recipe's peer, made with Optimum's avx512_vnni
    # preset on any CPU) is measured as this CPU runs it, and says so
    if fault := saturation_fault(artifact.onnx_path):
        notes.append(fault)
    return Loaded(ort_predictor(session, choice=choice), _nothing, "cpu", notes=notes)


# what a bench row of a multi-threaded ORT session says of how it ran (deploykit/ort_threads.py)
ONE_OR_MANY = "each call on one thread or on all, whichever ran calls of its size faster lately"


def _load_tensorrt(artifact, threads: int | None, device: str, spinning: bool) -> Loaded:
    from deploykit.tensorrt import EngineRunner

    if not engine_path(artifact).is_file():
        raise UserError(f"{engine_path(artifact)}: TensorRT engine not found "
                        "(build one with `deploykit export --format tensorrt`)")
    return Loaded(EngineRunner(engine_path(artifact)), _nothing, "cuda")


def _load_torch(artifact, bf16: bool, threads: int | None, device: str) -> Loaded:
    import torch

    from deploykit.models import task_of
    from deploykit.saved import load_saved

    # the folder's own head: a sequence classifier, or a token classifier (logits per token)
    model = load_saved(artifact.path, task_of(artifact))
    # bf16 as deployed: the weights themselves in bf16 (autocast would re-cast fp32 weights every call)
    model = model.to(device=device, dtype=torch.bfloat16 if bf16 else torch.float32).eval()
    predict = torch_predictor(model) if device == "cpu" else _torch_device_predictor(model, device)

    def prepare(block_threads: int | None) -> None:
        # torch's intra-op pool is process-wide: set it for the target whose block runs next
        if block_threads or threads:
            torch.set_num_threads(block_threads or threads)

    return Loaded(predict, prepare, device)


def _torch_device_predictor(model, device: str) -> Predictor:
    import inspect

    import torch

    accepted = set(inspect.signature(model.forward).parameters)

    def run(batch: dict[str, np.ndarray]) -> np.ndarray:
        inputs = {k: torch.from_numpy(np.asarray(v)).to(device) for k, v in batch.items() if k in accepted}
        with torch.inference_mode():
            # .cpu() waits for the GPU, so a timed call includes the whole forward pass
            return model(**inputs).logits.float().cpu().numpy()

    return run


def _load_ort_cuda(onnx_path: Path) -> Loaded:
    session = ort_session(onnx_path, providers=["CUDAExecutionProvider", "CPUExecutionProvider"])
    if session.get_providers()[0] != "CUDAExecutionProvider":
        # ORT silently falls back to the CPU when the CUDA libraries do not load; that is not a GPU figure
        raise Unavailable(f"ONNX Runtime fell back to {session.get_providers()[0]}; "
                          "check the CUDA/cuDNN libraries onnxruntime-gpu needs")
    return Loaded(ort_predictor(session), _nothing, "cuda")


def _load_openvino(onnx_path: Path, threads: int | None) -> Loaded:
    """The ONNX graph (or OpenVINO IR) compiled by OpenVINO for the CPU with the latency hint, its thread count fixed
    when it is compiled (as an ORT session's is), inputs fed as ONNX Runtime's are (`evaluate.graph_feed`), one
    static-shape model per sequence bucket where padding cannot change the logits (deploykit/ov_runtime.py).

    Raises:
        Unavailable: openvino is not installed, or cannot compile this graph (the message names the cause).
    """
    why = unavailable("openvino", "cpu")
    if why:
        raise Unavailable(why)
    from deploykit.ov_runtime import Unreadable, openvino_predictor

    try:
        predict = openvino_predictor(onnx_path, threads)
    except Unreadable as err:  # a missing or broken file (an IR without its model.bin): the user's to fix
        raise UserError(f"{onnx_path}: OpenVINO cannot read it: {openvino_reason(err)}") from None
    except RuntimeError as err:  # an operator or shape OpenVINO's CPU plugin does not take
        raise Unavailable(f"OpenVINO could not compile {onnx_path.name}: {openvino_reason(err)}") from None
    from deploykit.quant.fit import saturation_fault

    # its CPU plugin saturates 8-bit weights without VNNI as ONNX Runtime does (bench/README.md, thirty-third session)
    fault = saturation_fault(onnx_path, "openvino")
    return Loaded(predict, _nothing, "cpu", notes=[fault] if fault else [])


@dataclass(frozen=True)
class Runtime:
    """One runtime: what it reads, where it runs, how reports and V2 clients name it, and how it loads.

    Attributes:
        reads: artifact formats it runs, its own first (a folder of another format is read as that one).
        targets: bench targets it runs on (cpu, edge, gpu).
        auto_for: formats for which `bench.runtimes: null` (and deploykit.load's auto, by order) pick it.
        label: its name in report tables; marker: its matplotlib marker in report plots.
        platform: its KServe V2 / Triton platform name (served model metadata).
        load: (artifact, threads, device, spinning) -> Loaded.
        concurrent: whether two threads may call one loaded model at once (`deploykit serve --workers`). ONNX
            Runtime's `Run` and a torch module in inference are safe; OpenVINO's shared infer request per shape and
            TensorRT's one execution context are not; ONNX Runtime CUDA is left out (it never ran here).
    """

    reads: tuple[str, ...]
    targets: tuple[str, ...]
    auto_for: tuple[str, ...]
    label: str
    marker: str
    platform: str
    load: Callable[..., Loaded]
    concurrent: bool = False


# the one runtime table: adding a runtime is one entry here, a loader above and its availability in unavailable()
RUNTIMES = {
    "torch": Runtime(("pytorch",), ("cpu", "edge", "gpu"), ("pytorch",), "PyTorch FP32", "o", "pytorch_torch",
                     lambda art, threads, device, spinning: _load_torch(art, False, threads, device), concurrent=True),
    "torch-bf16": Runtime(("pytorch",), ("cpu", "edge", "gpu"), ("pytorch",), "PyTorch bf16", "s", "pytorch_torch",
                          lambda art, threads, device, spinning: _load_torch(art, True, threads, device), concurrent=True),
    "ort": Runtime(("onnx",), ("cpu", "edge"), ("onnx",), "ONNX Runtime CPU", "^", "onnxruntime_onnx", _load_ort,
                   concurrent=True),
    "ort-cuda": Runtime(("onnx",), ("gpu",), ("onnx",), "ONNX Runtime CUDA", "v", "onnxruntime_onnx",
                        lambda art, threads, device, spinning: _load_ort_cuda(art.onnx_path)),
    "openvino": Runtime(("onnx", "openvino"), ("cpu", "edge"), ("openvino",), "OpenVINO CPU", "P", "openvino",
                        lambda art, threads, device, spinning: _load_openvino(
                            ir_path(art) if art.format == "openvino" else art.onnx_path, threads)),
    "tensorrt": Runtime(("tensorrt",), ("gpu",), ("tensorrt",), "TensorRT", "D", "tensorrt_plan", _load_tensorrt),
}
# views of the table for the callers that need one column
READS = {name: rt.reads for name, rt in RUNTIMES.items()}
TARGETS = {name: rt.targets for name, rt in RUNTIMES.items()}
LABELS = {name: rt.label for name, rt in RUNTIMES.items()}
AUTO = {fmt: [name for name, rt in RUNTIMES.items() if fmt in rt.auto_for]
        for fmt in dict.fromkeys(f for rt in RUNTIMES.values() for f in rt.auto_for)}
