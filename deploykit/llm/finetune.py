"""Instruction SFT for causal LMs: what `deploykit finetune` trains when `data.task` is `generation`.

    deploykit finetune --recipe recipes/sst2-smollm2.yaml --out runs/sst2-smollm2/finetune

The Trainer, its arguments, early stopping, best checkpoint, LoRA merge and saving are the encoder
path's (deploykit/stages/finetune.py); this module supplies what differs: the causal LM, the chat
data with loss on response tokens only, the collator, and quality measured by generation.
"""

from __future__ import annotations

from deploykit.config import Recipe
from deploykit.jobs import Job


def prepare(recipe: Recipe, source: str) -> Job:
    from deploykit.llm.data import SFTCollator, check_chat_template, check_length, load_chat_task, pad_id, sft_dataset
    from deploykit.llm.quality import evaluate_causal
    from deploykit.models import load_causal_lm, load_tokenizer

    cfg = recipe.data
    model = load_causal_lm(source, trust_remote_code=recipe.model.trust_remote_code)  # first: an encoder is named so
    tokenizer = load_tokenizer(source, recipe.model.trust_remote_code)
    check_chat_template(tokenizer, cfg, source)
    check_length(cfg, model.config, source)
    task = load_chat_task(cfg)
    train_ds = sft_dataset(task.train, tokenizer, cfg, packing=recipe.finetune.packing)
    eval_ds = sft_dataset(task.validation, tokenizer, cfg)

    def finish(trainer, trained, merge: bool):
        # the loss through the Trainer, then answers by generation, which is faster with LoRA merged
        loss = trainer.evaluate()["eval_loss"]
        trained = (trained.merge_and_unload() if merge else trained).eval()
        val = {"loss": loss, **evaluate_causal(trained, task.validation, cfg, tokenizer=tokenizer)}
        test = None if task.test is None else evaluate_causal(trained, task.test, cfg, tokenizer=tokenizer,
                                                              with_perplexity=False)
        return trained, val, test

    return Job(model, tokenizer, train_ds, eval_ds, SFTCollator(pad_id(tokenizer)), "loss", task.labels, finish,
               f"{len(task.train)} train / {len(task.validation)} validation prompts "
               f"({len(train_ds)} rows{' packed' if recipe.finetune.packing else ''})", lora_task="CAUSAL_LM")
