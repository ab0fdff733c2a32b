"""Does an INT8 classifier answer on this CPU as it answers where its products are exact? One table per run.

    DEPLOYKIT_DATA_DIR=../shared/data python bench/int8_portability.py --float runs/ft --int8 runs/q_avx2 runs/q_vnni

Each `--int8` folder (a `deploykit quantize` output, any preset) is scored on the test rows twice with ONNX Runtime:
as this CPU runs it, and with graph optimizations off, where no Q/DQ pair is fused into an integer kernel and every
product is DequantizeLinear + a float MatMul: what a CPU with VNNI or AMX computes exactly in int32 (float rounding
aside). On a CPU without VNNI a graph with 8-bit weights (the avx512_vnni preset) saturates VPMADDUBSW's int16 pair
sums, so its two columns differ; a graph with 7-bit weights (avx2) should not (deploykit/quant/fit.py). Dynamic
INT8 graphs hold MatMulInteger in the file itself, so optimizations off does not make them exact: use static ones.
"""

from __future__ import annotations

import argparse

import numpy as np


def logits(folder: str, texts: list[str], exact: bool) -> np.ndarray:
    """The folder's logits [rows, labels] on ONNX Runtime, with graph optimizations on (as deployed) or off."""
    import onnxruntime as ort

    from deploykit.predictor import ClassifierPredictor

    original = ort.SessionOptions

    class Options(original):  # every session deploykit opens while this runs
        def __init__(self):
            super().__init__()
            if exact:
                self.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL

    ort.SessionOptions = Options
    try:  # ClassifierPredictor, not deploykit.load: load refuses an 8-bit graph on a CPU without VNNI
        return ClassifierPredictor(folder, runtime="ort").logits(texts, batch_size=32)
    finally:
        ort.SessionOptions = original


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--float", required=True, help="the PyTorch folder the INT8 graphs were quantized from")
    ap.add_argument("--int8", nargs="+", required=True, help="`deploykit quantize` output folders")
    ap.add_argument("--recipe", default="recipes/sst2-minilm.yaml", help="names the data (its test split)")
    args = ap.parse_args()

    from deploykit.artifact import load_artifact
    from deploykit.config import load_recipe
    from deploykit.data import load_task
    from deploykit.hardware import describe
    from deploykit.predictor import ClassifierPredictor

    test = load_task(load_recipe(args.recipe).data).test
    texts, labels = list(test.texts), np.asarray(test.labels)
    reference = ClassifierPredictor(args.float, runtime="torch").logits(texts, batch_size=32)
    print(f"float: accuracy {100 * (reference.argmax(1) == labels).mean():.2f} on {len(texts)} test rows\n")
    print("| INT8 folder | preset | accuracy here | accuracy exact | answers that differ | mean abs logit diff |")
    print("|---|---|---:|---:|---:|---:|")
    for folder in args.int8:
        here, exact = logits(folder, texts, False), logits(folder, texts, True)
        preset = load_artifact(folder).manifest.get("int8", {}).get("preset", "?")
        print(f"| {folder} | {preset} | {100 * (here.argmax(1) == labels).mean():.2f} | "
              f"{100 * (exact.argmax(1) == labels).mean():.2f} | {(here.argmax(1) != exact.argmax(1)).sum()} | "
              f"{np.abs(here - exact).mean():.4f} |")
    machine = describe()
    print(f"\nmachine: {machine['cpu']}, {machine['cores']} cores, {' '.join(machine['isa'])}; "
          f"this CPU's preset: {machine['quant_preset']}")


if __name__ == "__main__":
    main()
