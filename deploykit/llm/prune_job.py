"""The causal LM's prune job (data.task generation): FFN neurons, whole KV groups and layers, recovered by top-k KD.

    deploykit prune --recipe recipes/sst2-smollm2.yaml --from runs/sst2-smollm2/distill --out runs/x/prune

`prune.ffn` removes FFN neurons (same count per layer), `prune.heads` removes that share of KV groups (a
KV head with the query heads that read it; Llama configs express it through num_key_value_heads and
head_dim), `prune.depth` / `prune.drop_layers` whole layers (deploykit/llm/prune.py). deploykit/stages/prune.py
cuts, recovers, saves, reloads and writes the manifest as for every kind; this module says what is cut
(`CausalCut`), which prompts rank the units, how the model is scored (exact match and perplexity on validation;
test is left to bench, generation being slow on a CPU) and that recovery distils the parent's top-k next-token
distributions over response tokens (deploykit/llm/kd.py).
"""

from __future__ import annotations

from deploykit.errors import UserError
from deploykit.jobs import PruneJob

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


class CausalCut:
    """The prune stage's cut for Llama-type decoders: one step of FFN neurons, KV groups and layers."""

    def check(self, model, cfg) -> None:
        """UserError in one line for what this model or kind cannot take, before any work."""
        from deploykit.llm.prune import causal_counts, causal_shape

        _check_units(cfg)
        causal_counts(causal_shape(model.config), ffn=cfg.ffn, kv_groups=cfg.heads, depth=cfg.depth,
                      drop_layers=cfg.drop_layers, importance=cfg.importance, has_batches=True)
        self.kept: dict = {}

    def step(self, model, cfg, step: int, batches: list[dict]) -> None:
        from deploykit.llm.prune import prune_causal

        self.kept = prune_causal(model, ffn=cfg.ffn, kv_groups=cfg.heads, depth=cfg.depth,
                                 drop_layers=cfg.drop_layers, importance=cfg.importance, batches=batches)

    @staticmethod
    def shape(model) -> dict:
        from deploykit.llm.prune import causal_shape

        return causal_shape(model.config).as_dict()

    def summary(self) -> dict:
        # per-neuron indices of a 30-layer model are ~23k numbers: the manifest keeps counts for FFN
        return {**self.kept, "ffn": [len(k) for k in self.kept.get("ffn", [])]}

    @staticmethod
    def recovery_kd(cfg) -> dict:
        return {}  # no hidden-state terms (prune.hidden_kd is refused)

    @staticmethod
    def start_projection(projection) -> None:
        raise AssertionError("a causal LM's recovery has no hidden-state projection")


def tensor_batches(split, tokenizer, data_cfg, n_batches: int) -> list[dict]:
    """The first `n_batches` x BATCH prompts with their responses, as padded tensors with labels."""
    from deploykit.llm.data import SFTCollator, encode_sft, pad_id

    examples, _ = encode_sft(split.head(n_batches * BATCH), tokenizer, data_cfg)
    collate = SFTCollator(pad_id(tokenizer))
    return [collate(examples[i:i + BATCH]) for i in range(0, len(examples), BATCH)]


def prune_job(recipe, source: str, parent) -> PruneJob:
    """The causal LM in `source`, ranked on the first `prune.importance_batches` x 8 training prompts."""
    from deploykit.llm.data import SFTCollator, load_chat_task, pad_id, sft_dataset
    from deploykit.llm.kd import CausalDistillTrainer
    from deploykit.llm.quality import evaluate_causal
    from deploykit.models import load_causal_lm, load_tokenizer

    cfg, data, trust = recipe.prune, recipe.data, recipe.model.trust_remote_code
    _check_units(cfg)  # before the model loads
    task = load_chat_task(data)
    tokenizer = load_tokenizer(source, trust)
    model = load_causal_lm(source, trust_remote_code=trust)

    def evaluate(model, tokenizer, split: str) -> dict | None:
        # test is scored once, by bench: answers are generated, which takes minutes on a CPU
        return evaluate_causal(model, task.validation, data, tokenizer=tokenizer) if split == "validation" else None

    return PruneJob(model, tokenizer, task.labels, tensor_batches(task.train, tokenizer, data, cfg.importance_batches),
                    lambda model, tokenizer: tensor_batches(task.validation, tokenizer, data, 1), evaluate,
                    lambda: (sft_dataset(task.train, tokenizer, data), sft_dataset(task.validation, tokenizer, data)),
                    CausalDistillTrainer, cut=CausalCut(),
                    trainer_args={"collator": SFTCollator(pad_id(tokenizer)), "best_metric": "loss"},
                    # a top-k teacher is cached once; a full-vocabulary one runs live
                    kd_args=lambda d: {"topk": d.topk, "cache_teacher_logits": d.topk > 0},
                    distill_defaults={"temperature": 1.0})
