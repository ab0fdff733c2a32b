"""`deploykit distill` for causal LMs: a student with fewer layers, taught by the teacher's next tokens.

    deploykit distill --recipe recipes/sst2-smollm2.yaml --from runs/sst2-smollm2/finetune --out runs/x/distill

The student keeps a subset of the teacher's layers (default every other: 30 -> 15), or is another causal
LM sharing the teacher's tokenizer. The loss is KL on the teacher's next-token distributions over the
response tokens (its top-k cached once per example, deploykit/llm/kd.py) plus cross-entropy on the
reference tokens; the HF Trainer runs it, so DDP, per-epoch evaluation and the best checkpoint work as
for encoders. Called by deploykit/stages/distill.py when `data.task` is `generation`.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

from deploykit.artifact import Artifact
from deploykit.config import Recipe
from deploykit.console import log
from deploykit.errors import UserError
from deploykit.training import build_trainer, check_replicas, num_layers, training_record


def teacher_quality(parent: Artifact | None, source: str) -> dict | None:
    """The teacher's validation/test scores from its own manifest (finetune measured them), if it is the parent."""
    if parent is not None and str(parent.path) == source and parent.metrics.get("validation"):
        return {"validation": parent.metrics["validation"], "test": parent.metrics.get("test")}
    return None


def build_causal_student(cfg, teacher, tokenizer, trust_remote_code: bool):
    """(student, kept teacher layers or None, layer map or None): built from teacher layers or loaded."""
    from deploykit.distillation import check_tokenizer, student_from_teacher
    from deploykit.models import load_causal_lm

    built = student_from_teacher(cfg, teacher)
    if built is not None:
        return built
    check_tokenizer(cfg.student, tokenizer, trust_remote_code)
    return load_causal_lm(cfg.student, trust_remote_code=trust_remote_code), None, cfg.layer_map


def run(recipe: Recipe, parent: Artifact | None, out_dir: Path) -> Artifact:
    from transformers import set_seed

    from deploykit.distillation import describe, save_student, teacher_source, warn_if_larger
    from deploykit.llm.data import SFTCollator, check_chat_template, load_chat_task, pad_id, sft_dataset
    from deploykit.llm.kd import CausalDistillTrainer
    from deploykit.llm.quality import evaluate_causal
    from deploykit.models import load_causal_lm, load_tokenizer

    cfg = recipe.distill
    trust = recipe.model.trust_remote_code
    teacher_src = teacher_source(cfg, parent)
    set_seed(cfg.seed)
    task = load_chat_task(recipe.data)
    tokenizer = load_tokenizer(teacher_src, trust)
    check_chat_template(tokenizer, recipe.data, teacher_src)
    teacher = load_causal_lm(teacher_src, trust_remote_code=trust)
    student, kept, layer_map = build_causal_student(cfg, teacher, tokenizer, trust)
    n_student, n_teacher = warn_if_larger(student, teacher)
    if cfg.alpha_attention:
        raise UserError("distill.alpha_attention is for encoders; causal LMs distil logits (and hidden states)")

    out_dir = Path(out_dir).resolve()
    work = out_dir.with_name(f".{out_dir.name}.work")
    shutil.rmtree(work, ignore_errors=True)
    trainer = build_trainer(student, cfg, work, tokenizer, sft_dataset(task.train, tokenizer, recipe.data),
                            sft_dataset(task.validation, tokenizer, recipe.data), stage="distill",
                            trainer_cls=CausalDistillTrainer, collator=SFTCollator(pad_id(tokenizer)),
                            best_metric="loss", teacher=teacher, temperature=cfg.temperature, alpha_kd=cfg.alpha_kd,
                            alpha_ce=cfg.alpha_ce, alpha_hidden=cfg.alpha_hidden, layer_map=layer_map,
                            cache_teacher_logits=cfg.cache_teacher_logits, topk=cfg.topk)
    log(describe(teacher, student, n_teacher, n_student, kept, cfg,
                 f"{len(task.train)} train / {len(task.validation)} validation prompts, top-{cfg.topk} teacher"))
    start = time.time()
    result = trainer.train()
    seconds = time.time() - start

    model = trainer.model.eval()
    val = {"loss": trainer.evaluate()["eval_loss"], **evaluate_causal(model, task.validation, recipe.data,
                                                                      tokenizer=tokenizer)}
    # the test split is scored once, by bench: generating answers with a 30-layer teacher takes minutes
    test = None
    teacher_metrics = teacher_quality(parent, teacher_src) or {
        "validation": evaluate_causal(teacher, task.validation, recipe.data, tokenizer=tokenizer), "test": None}
    ddp = check_replicas(model)
    metrics = {"validation": val, "test": test, "teacher": teacher_metrics,
               **training_record(trainer, result, seconds, cfg.epochs),
               "parameters": n_student, "teacher_parameters": n_teacher, "ddp": ddp}
    if not trainer.is_world_process_zero():
        return Artifact(out_dir, {"stage": "distill", "format": "pytorch", "metrics": metrics})
    manifest = save_student(model, tokenizer, recipe, parent, out_dir, metrics, task.labels,
                            teacher={"source": teacher_src, "layers": num_layers(teacher.config), "parameters": n_teacher},
                            kept=kept, layer_map=trainer.layer_map)
    shutil.rmtree(work, ignore_errors=True)
    key = "exact_match" if "exact_match" in val else "perplexity"
    log(f"distill: validation {key} {val.get(key)} (teacher {teacher_metrics['validation'].get(key)})"
        + (f", test {key} {test.get(key)}" if test else "") + f" in {seconds:.0f}s")
    return Artifact(out_dir, manifest)
