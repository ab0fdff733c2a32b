"""What `deploykit generate` does before it generates: its options checked together, then the model opened the way
`deploykit.load` opens it (a folder) or llama.cpp's (a .gguf file).

    gen = open_generator(Path("runs/x/quantize"), runtime="auto", threads=None, system=None, raw=False)
"""

from __future__ import annotations

from pathlib import Path

from deploykit.errors import UserError


def open_generator(model: Path, runtime: str, threads: int | None, system: str | None, raw: bool):
    """The generator for `deploykit generate MODEL`, after the options are checked (before any model loads).

    Args:
        model: a causal-LM folder (PyTorch, ONNX, INT8 ONNX) or a .gguf file.
        runtime: auto, ort or torch.
        threads: intra-op threads, or None.
        system: the --system turn, or None.
        raw: --raw, prompts fed as they are.

    Returns:
        The generator (`.generate`, `.tokenizer`).

    Raises:
        UserError: --system with --raw; a model that is missing or is not a causal LM.
    """
    from deploykit.llm.generate import load_generator

    if raw and system is not None:  # it was ignored: a blank or invalid --system passed, exit 0
        raise UserError("--system with --raw: a system turn is a part of the chat template, which --raw skips; drop "
                        "one of them (with --raw, write the system text into the prompt itself)")
    if not Path(model).exists():  # load_artifact's advice names a bare .onnx file, which generate cannot take
        raise UserError(f"{model}: not found; give a causal LM folder (PyTorch or ONNX) or a .gguf file")
    if Path(model).suffix == ".gguf":
        return load_generator(model, runtime=runtime, threads=threads)
    # a folder opens as `deploykit.load` opens it: a GGUF export's file, an INT8 graph checked for this CPU
    from deploykit.artifact import load_artifact
    from deploykit.predictor import is_causal_lm, load

    if not is_causal_lm(load_artifact(model)):
        raise UserError(f"{model}: holds a classifier, not a causal LM; use `deploykit predict` for it")
    return load(model, runtime=runtime, threads=threads)
