"""Instruction SFT for causal LMs: what `deploykit finetune` trains when `data.task` is `generation`.

    deploykit finetune --recipe recipes/sst2-smollm2.yaml --out runs/sst2-smollm2/finetune

The Trainer, its arguments, early stopping, best checkpoint, LoRA merge and saving are the encoder
path's (deploykit/stages/finetune.py); this module supplies what differs: the causal LM, the chat
data with loss on response tokens only, the collator, and quality measured by generation.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from deploykit.config import Recipe


@dataclass
class Job:
    """What the finetune stage trains and how it scores the result, per task kind."""

    model: Any
    tokenizer: Any
    train_ds: Any
    eval_ds: Any
    collator: Any
    best_metric: str                       # Trainer's metric_for_best_model (without eval_)
    labels: list[str] | None
    score: Callable[[Any, Any, str], dict | None]   # (trainer, trained model, split name) -> metrics
    summary: str
    max_length: int | None = None            # the resolved data.max_length the model was trained with


def prepare(recipe: Recipe, source: str) -> Job:
    from deploykit.llm.data import (SFTCollator, check_chat_template, check_length, load_chat_task, pad_id,
                                    sft_dataset)
    from deploykit.llm.quality import evaluate_causal
    from deploykit.models import load_causal_lm, load_tokenizer

    cfg = recipe.data
    tokenizer = load_tokenizer(source, recipe.model.trust_remote_code)
    check_chat_template(tokenizer, cfg, source)
    model = load_causal_lm(source, trust_remote_code=recipe.model.trust_remote_code)
    check_length(cfg, model.config, source)
    task = load_chat_task(cfg)
    train_ds = sft_dataset(task.train, tokenizer, cfg, packing=recipe.finetune.packing)
    eval_ds = sft_dataset(task.validation, tokenizer, cfg)

    def score(trainer, trained, split: str) -> dict | None:
        if split == "test" and task.test is None:
            return None
        return evaluate_causal(trained, task.split(split), cfg, tokenizer=tokenizer,
                               with_perplexity=split != "test")

    return Job(model, tokenizer, train_ds, eval_ds, SFTCollator(pad_id(tokenizer)), "loss", task.labels, score,
               f"{len(task.train)} train / {len(task.validation)} validation prompts "
               f"({len(train_ds)} rows{' packed' if recipe.finetune.packing else ''})")
