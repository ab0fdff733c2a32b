"""A causal-LM ONNX artifact's generator with ONNX Runtime spinning off and on, beside PyTorch, in one process.

    DEPLOYKIT_DATA_DIR=../shared/data python bench/llm_spinning.py runs/llama-cpp-peer/quantize \
        runs/llama-cpp-peer/float --prompts 20 --repeats 2

Every LLM bench before the twenty-sixth session ran ORT with `session.intra_op.allow_spinning=0`; this measures what
that cost. The subjects are timed by deploykit.llm.bench.measure_generation (blocks alternating, each opened by the
bench's pause), greedy, 32 new tokens, batch 1 and 8, 2 threads; prompts are the first `--prompts` reviews of
sst2/test.tsv in the recipe's chat template. Prints one table per repeat and the machine's CPU flags.
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import pandas as pd
import yaml

from deploykit.data import data_root
from deploykit.hardware import describe
from deploykit.llm.bench import GenSubject, measure_generation
from deploykit.llm.generate import OrtGenerator

RECIPE = Path(__file__).resolve().parent.parent / "recipes" / "sst2-smollm2.yaml"


def prompts(generator, n: int) -> list[str]:
    template = yaml.safe_load(RECIPE.read_text())["data"]["prompt_template"]
    # GLUE's TSVs hold raw quotes: read unquoted (../shared/data/README.md)
    root = data_root(None)
    if root is None:
        raise SystemExit("set DEPLOYKIT_DATA_DIR to the folder holding sst2/test.tsv")
    reviews = pd.read_csv(root / "sst2" / "test.tsv", sep="\t", quoting=csv.QUOTE_NONE)["sentence"][:n]
    return [generator.tokenizer.apply_chat_template([{"role": "user", "content": template.format(sentence=r)}],
                                                    tokenize=False, add_generation_prompt=True) for r in reviews]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("artifact", type=Path, help="a folder holding the causal LM's model.onnx (deploykit quantize)")
    ap.add_argument("float_model", type=Path, help="the float PyTorch folder it came from")
    ap.add_argument("--prompts", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=2, help="times the whole measurement runs")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    art, threads = args.artifact, args.threads
    subjects = [
        GenSubject("ORT, spinning off", art, "ort", lambda: OrtGenerator(art, threads=threads, spinning=False)),
        GenSubject("ORT, spinning on (as deployed)", art, "ort", lambda: OrtGenerator(art, threads=threads)),
        GenSubject("PyTorch FP32", args.float_model, "torch"),
    ]
    texts = prompts(OrtGenerator(art, threads=threads), args.prompts)
    for repeat in range(args.repeats):
        rows = measure_generation(subjects, texts, batch_sizes=(1, 8), new_tokens=32, repeats=10, rounds=2,
                                  threads=threads, memory=False)
        print(f"\nrepeat {repeat + 1}\n\n| generator | batch | TTFT p50 ms | decode tok/s |\n| --- | --- | --- | --- |")
        for r in rows:
            print(f"| {r['name']} | {r['batch_size']} | {r['ttft_ms']['p50']} | {r['decode_tok_s']} |")
    machine = describe()
    print(f"\nmachine: {machine['cpu']}, {machine['cores']} cores, {' '.join(machine['isa'])}")


if __name__ == "__main__":
    main()
