"""Quality of a causal LM through a generator: exact match of greedy answers, and perplexity.

    from deploykit.llm.evaluate import exact_match, perplexity
    from deploykit.llm.generate import load_generator
    gen = load_generator("runs/sst2-smollm2/quantize")            # ONNX Runtime or PyTorch, same figures
    exact_match(gen, prompts, ["positive", "negative"], max_new_tokens=4)
    # {'exact_match': 50.0, 'n': 2, 'correct': 1, 'predictions': ['Positive.', 'positive']}
    perplexity(gen, [{"input_ids": [...], "labels": [-100, -100, 17, 42]}])
    # {'perplexity': 3.21, 'nll': 1.166, 'tokens': 2, 'n': 1}

Both functions only call `generator.generate` and `generator.logits`, so a TorchGenerator and an
OrtGenerator of the same weights are scored by the same code.
"""

from __future__ import annotations

import math
import string

import numpy as np

from deploykit.errors import UserError

IGNORE = -100  # label of a token that does not count (Hugging Face convention)


def normalise(text: str) -> str:
    """The answer as exact match compares it: stripped, lowercased, first line only, trailing
    punctuation and whitespace removed ("  Positive.\\nBecause..." -> "positive")."""
    first = text.strip().lower().split("\n", 1)[0]
    return first.rstrip(string.punctuation + string.whitespace).strip()


def _by_length(texts: list[str], batch_size: int) -> list[list[int]]:
    """Index batches of similar length: less left padding, same answers (positions follow the mask)."""
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    return [order[i:i + batch_size] for i in range(0, len(order), batch_size)]


def exact_match(generator, prompts: list[str], references: list[str], *, max_new_tokens: int = 8,
                batch_size: int = 8) -> dict:
    """Share of prompts whose greedy answer equals the reference after `normalise` on both sides.

    Args:
        generator: a TorchGenerator or OrtGenerator (deploykit.llm.generate).
        prompts: already-rendered prompts (chat template applied).
        references: the expected answer of each prompt.
        max_new_tokens: the most tokens an answer gets; decoding stops early at the model's EOS.
        batch_size: prompts per generate call.

    Returns:
        {"exact_match": percent, "n", "correct", "predictions": raw decoded answers, in prompt order}.
    """
    if len(prompts) != len(references):
        raise UserError(f"exact_match: {len(prompts)} prompts but {len(references)} references")
    if not prompts:
        raise UserError("exact_match: no prompts to score")
    predictions = [""] * len(prompts)
    for idx in _by_length(prompts, batch_size):
        out = generator.generate([prompts[i] for i in idx], max_new_tokens)
        for i, text in zip(idx, out.texts(generator.tokenizer)):
            predictions[i] = text
    correct = sum(normalise(p) == normalise(r) for p, r in zip(predictions, references))
    return {"exact_match": round(100.0 * correct / len(prompts), 2), "n": len(prompts), "correct": correct,
            "predictions": predictions}


def _pad_right(rows: list[list[int]], value: int) -> np.ndarray:
    width = max(len(r) for r in rows)
    return np.array([list(r) + [value] * (width - len(r)) for r in rows], dtype=np.int64)


def _nll_sum(logits: np.ndarray, labels: np.ndarray) -> tuple[float, int]:
    """Summed negative log-likelihood of the counted next tokens, and how many there were.

    The logits at position t predict the token at t + 1, so labels shift left by one.
    """
    target = labels[:, 1:]
    keep = target != IGNORE
    if not keep.any():
        return 0.0, 0
    scores = logits[:, :-1][keep].astype(np.float64)  # [counted tokens, vocab]: only the rows that count
    top = scores.max(axis=-1, keepdims=True)
    log_z = np.log(np.exp(scores - top).sum(axis=-1)) + top[:, 0]
    picked = scores[np.arange(len(scores)), target[keep]]
    return float((log_z - picked).sum()), int(keep.sum())


def perplexity(generator, examples: list[dict], *, batch_size: int = 8) -> dict:
    """exp(token-weighted mean NLL) over every counted next token of `examples`.

    Args:
        generator: a TorchGenerator or OrtGenerator.
        examples: dicts with `input_ids` and `labels` (same length; IGNORE = -100 where a token does
            not count, e.g. the prompt of an instruction row). `labels[t]` is the token at t; the
            shift to next-token prediction happens here. Rows are right-padded per batch; position
            ids follow the attention mask, so padding changes nothing.
        batch_size: examples per forward pass.

    Returns:
        {"perplexity", "nll": mean nats per counted token, "tokens": counted tokens, "n": examples}.
    """
    if not examples:
        raise UserError("perplexity: no examples to score")
    total, counted = 0.0, 0
    pad = generator.tokenizer.pad_token_id or 0
    for idx in _by_length([ex["input_ids"] for ex in examples], batch_size):
        rows = [examples[i] for i in idx]
        for ex in rows:
            if len(ex["labels"]) != len(ex["input_ids"]):
                raise UserError("perplexity: an example's labels and input_ids differ in length")
        ids = _pad_right([ex["input_ids"] for ex in rows], pad)
        mask = _pad_right([ex.get("attention_mask") or [1] * len(ex["input_ids"]) for ex in rows], 0)
        labels = _pad_right([ex["labels"] for ex in rows], IGNORE)
        nll, n = _nll_sum(generator.logits(ids, mask), labels)
        total, counted = total + nll, counted + n
    if counted == 0:
        raise UserError("perplexity: every label is -100; nothing to score")
    mean = total / counted
    return {"perplexity": round(math.exp(mean), 4), "nll": round(mean, 6), "tokens": counted, "n": len(examples)}
