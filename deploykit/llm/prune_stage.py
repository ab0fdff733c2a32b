"""`deploykit prune` for causal LMs: FFN neurons, whole KV groups and layers, then a short recovery.

    deploykit prune --recipe recipes/sst2-smollm2.yaml --from runs/sst2-smollm2/distill --out runs/x/prune

`prune.ffn` removes FFN neurons (same count per layer), `prune.heads` removes that share of KV groups (a
KV head with the query heads that read it; Llama configs express it through num_key_value_heads and
head_dim), `prune.depth` / `prune.drop_layers` whole layers. Recovery distils from the unpruned model
over response tokens (deploykit/llm/kd.py). The saved folder is reloaded with plain
`AutoModelForCausalLM.from_pretrained` and must give the in-memory logits, else nothing is written.
Called by deploykit/stages/prune.py when `data.task` is `generation`.
"""

from __future__ import annotations

import copy
import time
from pathlib import Path

from deploykit.artifact import Artifact, scratch, staging, write_manifest
from deploykit.config import DistillConfig, Recipe
from deploykit.console import log
from deploykit.errors import UserError

BATCH = 8  # prompts per importance / reload-check batch


def _check_units(cfg) -> None:
    if cfg.width:
        raise UserError("prune.width is for encoders; for a causal LM prune prune.ffn, prune.heads (whole KV "
                        "groups) or prune.depth")
    if cfg.vocab:
        raise UserError("prune.vocab is for encoder classifiers; a causal LM must keep the tokens it may generate")
    if cfg.recovery_min_words:
        raise UserError("prune.recovery_min_words is for encoders; a causal LM recovers on its training prompts")
    if cfg.hidden_kd:
        raise UserError("prune.hidden_kd is for encoders; a causal LM's recovery distils the parent's top-k "
                        "next-token distributions (distill.topk)")
    if cfg.steps != 1:
        raise UserError("prune.steps > 1 is for encoders; a causal LM is pruned in one step, then recovered")


def tensor_batches(split, tokenizer, data_cfg, n_batches: int) -> list[dict]:
    """The first `n_batches` x BATCH prompts with their responses, as padded tensors with labels."""
    from deploykit.llm.data import SFTCollator, encode_sft, pad_id

    examples, _ = encode_sft(split.head(n_batches * BATCH), tokenizer, data_cfg)
    collate = SFTCollator(pad_id(tokenizer))
    return [collate(examples[i:i + BATCH]) for i in range(0, len(examples), BATCH)]


def _recover(model, teacher, recipe: Recipe, tokenizer, task, work: Path):
    from deploykit.llm.data import SFTCollator, pad_id, sft_dataset
    from deploykit.training import build_trainer

    cfg = recipe.prune
    kd: dict = {}
    if teacher is not None:
        from deploykit.llm.kd import CausalDistillTrainer

        d = recipe.distill or DistillConfig(temperature=1.0)  # the distill section's loss weights, if any
        kd = dict(trainer_cls=CausalDistillTrainer, teacher=teacher, temperature=d.temperature, alpha_kd=d.alpha_kd,
                  alpha_ce=d.alpha_ce, topk=d.topk, cache_teacher_logits=d.topk > 0)
    trainer = build_trainer(model, cfg.recovery, work, tokenizer, sft_dataset(task.train, tokenizer, recipe.data),
                            sft_dataset(task.validation, tokenizer, recipe.data), stage="prune",
                            collator=SFTCollator(pad_id(tokenizer)), best_metric="loss", **kd)
    trainer.train()
    return trainer.model


def run(recipe: Recipe, parent: Artifact | None, out_dir: Path) -> Artifact:
    from transformers import set_seed

    from deploykit.llm.data import load_chat_task
    from deploykit.llm.prune import prune_causal
    from deploykit.llm.quality import evaluate_causal
    from deploykit.models import load_causal_lm, load_tokenizer
    from deploykit.pruning.arch import measure
    from deploykit.pruning.reload import check_reload

    cfg = recipe.prune
    _check_units(cfg)
    source = str(parent.path) if parent is not None else recipe.model.source
    set_seed(recipe.data.seed)
    task = load_chat_task(recipe.data)
    tokenizer = load_tokenizer(source, recipe.model.trust_remote_code)
    model = load_causal_lm(source, trust_remote_code=recipe.model.trust_remote_code)
    start = time.time()
    before = {**measure(model, cfg.macs_seq_len), "validation": evaluate_causal(model, task.validation, recipe.data,
                                                                                 tokenizer=tokenizer)}
    teacher = copy.deepcopy(model).eval() if cfg.recovery and cfg.distill_from_parent else None
    batches = tensor_batches(task.train, tokenizer, recipe.data, cfg.importance_batches)
    out_dir = Path(out_dir).resolve()
    with scratch(out_dir.with_name(f".{out_dir.name}.work")) as work:
        kept = prune_causal(model, ffn=cfg.ffn, kv_groups=cfg.heads, depth=cfg.depth, drop_layers=cfg.drop_layers,
                            importance=cfg.importance, batches=batches)
        log(f"prune: {kept['shape_before']} -> {kept['shape_after']}")
        pruned = {"validation": evaluate_causal(model, task.validation, recipe.data, tokenizer=tokenizer)}
        if cfg.recovery:
            model = _recover(model, teacher, recipe, tokenizer, task, work)
        model.eval()
        after = {**measure(model, cfg.macs_seq_len),
                 "validation": evaluate_causal(model, task.validation, recipe.data, tokenizer=tokenizer)}
        metrics = {"before": before, "after": after, "before_recovery": pruned if cfg.recovery else None,
                   "test": None,  # scored once, by bench (generation is slow on a CPU)
                   "parameters_ratio": round(after["parameters"] / before["parameters"], 4),
                   "macs_ratio": round(after["macs"] / before["macs"], 4), "seconds": round(time.time() - start, 1)}
        check = tensor_batches(task.validation, tokenizer, recipe.data, 1)
        with staging(out_dir) as tmp:
            model.save_pretrained(tmp, safe_serialization=True)
            tokenizer.save_pretrained(tmp)
            metrics["reload_max_logit_diff"] = check_reload(model, tmp, check)
            # per-neuron indices of a 30-layer model are ~23k numbers: the manifest keeps counts for FFN
            kept["ffn"] = [len(k) for k in kept["ffn"]]
            manifest = write_manifest(tmp, stage="prune", format="pytorch", parent=parent,
                                      config=recipe.model_dump(include={"model", "data", "prune"}), metrics=metrics,
                                      source=source, labels=task.labels, kept=kept)
    key = "exact_match" if "exact_match" in after["validation"] else "perplexity"
    log(f"prune: parameters {before['parameters'] / 1e6:.2f}M -> {after['parameters'] / 1e6:.2f}M, "
        f"MACs x{metrics['macs_ratio']:.2f}, validation {key} {before['validation'][key]} -> "
        f"{after['validation'][key]}")
    return Artifact(out_dir, manifest)
