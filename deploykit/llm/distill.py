"""The causal-LM half of `deploykit distill`: a student with fewer layers, taught by the teacher's next tokens.

    deploykit distill --recipe recipes/sst2-smollm2.yaml --from runs/sst2-smollm2/finetune --out runs/x/distill

The student keeps a subset of the teacher's layers (default every other: 30 -> 15), or is another causal
LM sharing the teacher's tokenizer. The loss is KL on the teacher's next-token distributions over the
response tokens (its top-k cached once per example, deploykit/llm/kd.py) plus cross-entropy on the
reference tokens; the HF Trainer runs it, so DDP, per-epoch evaluation and the best checkpoint work as
for encoders. `distill_job` is the generation kind's (deploykit/kinds/generation.py); deploykit/stages/distill.py
trains and saves.
"""

from __future__ import annotations

from deploykit.artifact import Artifact
from deploykit.config import Recipe
from deploykit.errors import UserError
from deploykit.jobs import DistillJob


def teacher_quality(parent: Artifact | None, source: str) -> dict | None:
    """The teacher's validation/test scores from its own manifest (finetune measured them), if it is the parent."""
    if parent is not None and str(parent.path) == source and parent.metrics.get("validation"):
        return {"validation": parent.metrics["validation"], "test": parent.metrics.get("test")}
    return None


def distill_job(recipe: Recipe, teacher_src: str, parent: Artifact | None) -> DistillJob:
    """Top-k next-token KD on the response tokens, the checkpoint kept by validation loss; exact match on
    validation after training (the test split is scored once, by bench)."""
    from deploykit.llm.data import SFTCollator, check_chat_template, load_chat_task, pad_id, sft_dataset
    from deploykit.llm.kd import CausalDistillTrainer
    from deploykit.llm.quality import evaluate_causal
    from deploykit.models import load_causal_lm, load_tokenizer
    from deploykit.train.distillation import build_student

    cfg, trust = recipe.distill, recipe.model.trust_remote_code
    if cfg.alpha_attention:
        raise UserError("distill.alpha_attention is for encoders; causal LMs distil logits (and hidden states)")
    task = load_chat_task(recipe.data)
    tokenizer = load_tokenizer(teacher_src, trust)
    check_chat_template(tokenizer, recipe.data, teacher_src)
    teacher = load_causal_lm(teacher_src, trust_remote_code=trust)
    student, kept, layer_map = build_student(cfg, teacher, tokenizer,
                                             lambda source: load_causal_lm(source, trust_remote_code=trust), trust)

    def finish(trainer):
        model = trainer.model.eval()
        val = {"loss": trainer.evaluate()["eval_loss"], **evaluate_causal(model, task.validation, recipe.data,
                                                                          tokenizer=tokenizer)}
        # generating test answers with a 30-layer teacher takes minutes: bench scores the test split once
        teacher_metrics = teacher_quality(parent, teacher_src) or {
            "validation": evaluate_causal(teacher, task.validation, recipe.data, tokenizer=tokenizer), "test": None}
        return val, None, teacher_metrics

    return DistillJob(teacher, student, tokenizer, kept, layer_map, sft_dataset(task.train, tokenizer, recipe.data),
                      sft_dataset(task.validation, tokenizer, recipe.data), CausalDistillTrainer, task.labels,
                      f"{len(task.train)} train / {len(task.validation)} validation prompts, top-{cfg.topk} teacher",
                      finish, trainer_args={"collator": SFTCollator(pad_id(tokenizer)), "best_metric": "loss",
                                            "topk": cfg.topk})
