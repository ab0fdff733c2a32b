"""TensorRT engines for `deploykit export --format tensorrt` (`deploykit.runtimes` runs them).

    deploykit export --from runs/sst2/finetune --format tensorrt --out runs/sst2/trt
    deploykit export --from runs/sst2/quantize-trt --format tensorrt --set export.tensorrt.int8=true

Built with the TensorRT 10 Python API: the ONNX parser fills a network, one optimization profile
covers the batch and sequence ranges of `export.tensorrt`, FP16 is on by default, and INT8 comes
from the Q/DQ nodes of a statically quantized model (`deploykit quantize --mode static --set
quantize.preset=tensorrt`: symmetric int8, the only kind TensorRT reads). The ONNX that TensorRT
parses is the plain export: ONNX Runtime's fused operators (Attention, SkipLayerNormalization) are
contrib ops TensorRT does not know, and it fuses the same patterns itself. `tensorrt` is imported
only here and only when needed; without it, or without a CUDA device, the command says so in one line.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import TYPE_CHECKING

from deploykit.artifact import Artifact, staging, write_manifest
from deploykit.config import Recipe, TensorRTConfig
from deploykit.console import log
from deploykit.errors import UserError

if TYPE_CHECKING:
    import numpy as np

ENGINE_FILE = "model.engine"


def require_tensorrt() -> None:
    """UserError in one line unless both the `tensorrt` package and a CUDA device are present."""
    import torch

    if not torch.cuda.is_available():
        raise UserError("export --format tensorrt needs an NVIDIA GPU with CUDA; this machine has no CUDA device "
                        "(use --format onnx for CPU)")
    if importlib.util.find_spec("tensorrt") is None:
        raise UserError("export --format tensorrt needs the tensorrt package (pip install 'deploykit[tensorrt]', "
                        "TensorRT 10)")


def _check_onnx_for_tensorrt(onnx_path: Path, int8: bool) -> None:
    """TensorRT parses standard ONNX only; INT8 needs symmetric int8 Q/DQ nodes."""
    from deploykit.onnx.ops import load_onnx

    graph = load_onnx(onnx_path, load_weights=False).graph
    contrib = sorted({n.op_type for n in graph.node if n.domain not in ("", "ai.onnx")})
    if contrib:
        raise UserError(f"{onnx_path}: holds ONNX Runtime-only operators ({', '.join(contrib[:4])}) TensorRT cannot "
                        "parse; build from the PyTorch model or an export with export.optimize=false")
    qlinear = [n for n in graph.node if n.op_type == "QuantizeLinear"]
    if int8 and not qlinear:
        raise UserError(f"{onnx_path}: export.tensorrt.int8 needs a Q/DQ model; run `deploykit quantize --mode static "
                        "--set quantize.preset=tensorrt` first")
    inits = {i.name: i for i in graph.initializer}
    unsigned = [n.name for n in qlinear if len(n.input) > 2 and n.input[2] in inits
                and inits[n.input[2]].data_type != 3]  # 3: INT8
    if int8 and unsigned:
        raise UserError(f"{onnx_path}: Q/DQ nodes use uint8 zero points; TensorRT takes symmetric int8 only "
                        "(quantize with --set quantize.preset=tensorrt)")


def build_engine(onnx_path: Path, engine_path: Path, cfg: TensorRTConfig, input_names: list[str]) -> dict:
    """Parse `onnx_path`, build a serialized engine for the shape ranges of `cfg`, write it.

    Returns:
        What the manifest records: precision flags, the profile and the engine size.
    """
    import tensorrt as trt

    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)  # TensorRT 10 networks are explicit-batch by default
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise UserError(f"{onnx_path}: TensorRT's ONNX parser failed ({errors[:300]})")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(cfg.workspace_gb * (1 << 30)))
    if cfg.fp16:
        config.set_flag(trt.BuilderFlag.FP16)
    if cfg.int8:
        # explicit quantization: scales come from the Q/DQ nodes, no calibrator
        config.set_flag(trt.BuilderFlag.INT8)
    profile = builder.create_optimization_profile()
    shapes = {"min": (cfg.min_batch, cfg.min_seq), "opt": (cfg.opt_batch, cfg.opt_seq),
              "max": (cfg.max_batch, cfg.max_seq)}
    for name in input_names:
        profile.set_shape(name, shapes["min"], shapes["opt"], shapes["max"])
    config.add_optimization_profile(profile)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise RuntimeError(f"TensorRT could not build an engine from {onnx_path} (see the TensorRT log above)")
    engine_path.write_bytes(bytes(serialized))
    return {"fp16": cfg.fp16, "int8": cfg.int8, "profile": {k: list(v) for k, v in shapes.items()},
            "engine_bytes": engine_path.stat().st_size, "tensorrt": trt.__version__}


def run_tensorrt(recipe: Recipe, parent: Artifact, out_dir: Path) -> Artifact:
    """`deploykit export --format tensorrt`: engine + the ONNX it came from + config and tokenizer."""
    from deploykit.onnx.export import copy_onnx_folder, export_onnx
    from deploykit.onnx.ops import graph_inputs

    cfg = recipe.export
    require_tensorrt()
    if parent.format not in ("pytorch", "onnx"):
        raise UserError(f"{parent.path}: build a TensorRT engine from a PyTorch or ONNX artifact, not {parent.format}")
    if cfg.tensorrt.int8 and parent.format != "onnx":
        raise UserError("export.tensorrt.int8 needs a Q/DQ ONNX artifact: --from the output of "
                        "`deploykit quantize --mode static --set quantize.preset=tensorrt`")
    with staging(out_dir) as tmp:
        report = None
        if parent.format == "pytorch":
            report = export_onnx(parent.path, None, tmp, opset=cfg.opset, optimize=False, atol=cfg.atol,
                                 trim_last_layer=cfg.trim_last_layer)
            # no remove_padding: its NonZero gives data-dependent shapes that an engine's optimization
            # profiles do not cover (TensorRT has its own padding-free kernels), and it was never run here
        else:
            copy_onnx_folder(parent, tmp)
        onnx_path = tmp / (parent.onnx_path.name if parent.format == "onnx" else "model.onnx")
        _check_onnx_for_tensorrt(onnx_path, cfg.tensorrt.int8)
        built = build_engine(onnx_path, tmp / ENGINE_FILE, cfg.tensorrt, graph_inputs(onnx_path))
        manifest = write_manifest(tmp, stage="export", format="tensorrt", parent=parent,
                                  config=recipe.model_dump(include={"export"}), metrics={"engine": built},
                                  engine_file=ENGINE_FILE, onnx_file=onnx_path.name, export=report)
    log(f"export: TensorRT engine {out_dir}/{ENGINE_FILE} ({built['engine_bytes'] / 1e6:.1f} MB)")
    return Artifact(Path(out_dir).resolve(), manifest)


class EngineRunner:
    """A deserialized engine as a Predictor: numpy feed in, logits (numpy, float32) out.

    TensorRT 10's tensor API: inputs are copied to CUDA tensors that torch allocates (no cuda-python
    needed), their shapes set on the execution context, outputs allocated for the shapes it infers,
    and the engine enqueued on a torch CUDA stream; the call returns once the stream is done, so a
    timed call includes the copies both ways.
    """

    def __init__(self, engine_file: Path):
        import tensorrt as trt
        import torch

        self._trt = trt
        self._logger = trt.Logger(trt.Logger.WARNING)
        self._runtime = trt.Runtime(self._logger)
        self.engine = self._runtime.deserialize_cuda_engine(Path(engine_file).read_bytes())
        if self.engine is None:
            raise UserError(f"{engine_file}: TensorRT cannot deserialize this engine (built by another TensorRT "
                            "version or for another GPU? rebuild it here with `deploykit export --format tensorrt`)")
        self.context = self.engine.create_execution_context()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        self.inputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        self.outputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
        self._dtypes = {n: _torch_dtype(trt, self.engine.get_tensor_dtype(n)) for n in names}
        self.stream = torch.cuda.Stream()

    def __call__(self, batch: dict) -> np.ndarray:
        import numpy as np
        import torch

        ids = np.asarray(batch["input_ids"])
        held = []  # keeps the device buffers alive until the stream is done
        with torch.cuda.stream(self.stream):
            for name in self.inputs:
                host = np.asarray(batch[name]) if name in batch else np.zeros_like(ids)
                tensor = torch.from_numpy(np.ascontiguousarray(host)).to("cuda", self._dtypes[name],
                                                                          non_blocking=False)
                held.append(tensor)
                self.context.set_input_shape(name, tuple(tensor.shape))
                self.context.set_tensor_address(name, tensor.data_ptr())
            outputs = {}
            for name in self.outputs:
                shape = tuple(self.context.get_tensor_shape(name))
                outputs[name] = torch.empty(shape, dtype=self._dtypes[name], device="cuda")
                self.context.set_tensor_address(name, outputs[name].data_ptr())
            if not self.context.execute_async_v3(self.stream.cuda_stream):
                raise RuntimeError("TensorRT could not run the engine (see the TensorRT log above)")
        self.stream.synchronize()
        return outputs[self.outputs[0]].float().cpu().numpy()


def _torch_dtype(trt, dtype):
    import torch

    table = {trt.float32: torch.float32, trt.float16: torch.float16, trt.int32: torch.int32,
             trt.int8: torch.int8, trt.bool: torch.bool}
    if hasattr(trt, "int64"):
        table[trt.int64] = torch.int64
    if hasattr(trt, "bfloat16"):
        table[trt.bfloat16] = torch.bfloat16
    if dtype not in table:
        raise UserError(f"TensorRT engine tensor type {dtype} is not supported by deploykit's runner")
    return table[dtype]
