"""Task quality of a causal LM (PyTorch folder, in-memory model or ONNX folder) on a prompt/response split.

    from deploykit.llm.quality import evaluate_causal
    evaluate_causal("runs/sst2-smollm2/finetune", task.test, recipe.data)
    # {'exact_match': 91.2, 'perplexity': 1.08, 'n': 872}

Classification-as-generation data is scored by exact match of the greedy answer (plus perplexity of the
reference answers); instruction data (free-text responses) by perplexity only: an exact match of a
paragraph measures nothing.
"""

from __future__ import annotations

from pathlib import Path

from deploykit.config import DataConfig
from deploykit.llm.data import ChatSplit, encode_sft, render_prompt


def answer_tokens(tokenizer, responses: list[str]) -> int:
    """New tokens to generate for an exact-match answer: the longest reference plus the stop token."""
    longest = max(len(ids) for ids in tokenizer(sorted(set(responses)), add_special_tokens=False)["input_ids"])
    return longest + 2


def label_match(predictions: list[str], references: list[str]) -> float:
    """% of answers that name the right label and no other one ("The review is positive." counts for
    "positive"): how a chat model that answers in sentences, e.g. the untuned original, is read."""
    import re

    from deploykit.llm.evaluate import normalise

    labels = sorted({normalise(r) for r in references})
    hits = 0
    for pred, ref in zip(predictions, references):
        words = set(re.findall(r"[\w']+", normalise(pred)))
        named = [lab for lab in labels if set(lab.split()) <= words]
        hits += named == [normalise(ref)]
    return round(100.0 * hits / max(len(references), 1), 3)


def scored_by_exact_match(cfg: DataConfig) -> bool:
    return cfg.response_column is None


def batch_dependent(folder: str | Path) -> bool:
    """True for an ONNX decoder that quantizes activations at run time (dynamic INT8: one scale spans the
    batch, so a prompt's answer would depend on its neighbours; see `deploykit.evaluate.eval_batch_size`).
    Weight-only MatMulNBits quantizes activations row by row: False."""
    from deploykit.evaluate import eval_batch_size

    onnx_path = Path(folder) / "model.onnx"
    return onnx_path.is_file() and eval_batch_size(onnx_path) == 1


def evaluate_causal(model_or_folder, split: ChatSplit, cfg: DataConfig, *, tokenizer=None, runtime: str = "auto",
                    threads: int | None = None, batch_size: int = 8, with_perplexity: bool = True,
                    generator=None) -> dict[str, float]:
    """Exact match (labelled answers only) and perplexity of the reference responses (`with_perplexity`:
    one more forward pass over every example, skipped where only the gate's exact match is needed).
    `generator`: an already built generator to score (e.g. deploykit.llm.llama_cpp_gen's), instead of
    loading `model_or_folder`."""
    from deploykit.llm.evaluate import exact_match, perplexity
    from deploykit.llm.generate import TorchGenerator, load_generator

    if generator is not None:
        gen = generator
    elif isinstance(model_or_folder, (str, Path)):
        gen = load_generator(model_or_folder, runtime=runtime, threads=threads)
        if batch_dependent(model_or_folder):
            batch_size = 1
    else:
        gen = TorchGenerator(model_or_folder, tokenizer, threads=threads)
    out: dict[str, float] = {"n": len(split)}
    if scored_by_exact_match(cfg):
        prompts = [render_prompt(gen.tokenizer, p, cfg) for p in split.prompts]
        em = exact_match(gen, prompts, split.responses, max_new_tokens=answer_tokens(gen.tokenizer, split.responses),
                         batch_size=batch_size)
        out["exact_match"] = em["exact_match"]
        out["label_match"] = label_match(em["predictions"], split.responses)
    if with_perplexity or "exact_match" not in out:
        examples, _ = encode_sft(split, gen.tokenizer, cfg)
        out["perplexity"] = perplexity(gen, examples, batch_size=batch_size)["perplexity"]
    return out
