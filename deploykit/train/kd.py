"""Knowledge-distillation losses and the Trainer that trains a student against a frozen teacher.

Used by `deploykit distill` and by the pruning stage's recovery fine-tune:

    from deploykit.train.kd import DistillTrainer
    from deploykit.train.trainer import build_trainer
    trainer = build_trainer(student, cfg, work, tokenizer, train_ds, eval_ds, stage="distill",
                            trainer_cls=DistillTrainer, teacher=teacher, temperature=2.0,
                            alpha_kd=0.5, alpha_ce=0.5, cache_teacher_logits=True)
    trainer.train()

The loss is a weighted sum of: KL divergence on temperature-softened logits scaled by T² (Hinton et
al. 2015), cross-entropy on the gold labels, MSE between hidden states over a layer mapping
(TinyBERT; a learned projection when the widths differ) and KL between attention distributions
(MiniLM; same head count only).
"""

from __future__ import annotations

import inspect

import torch
import torch.nn.functional as F
from transformers import Trainer

from deploykit.errors import UserError
from deploykit.train.trainer import num_layers

TEACHER_LOGITS = "teacher_logits"  # dataset column holding the cached teacher logits of each example


def kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor | None, labels: torch.Tensor, *,
            temperature: float, alpha_kd: float, alpha_ce: float) -> torch.Tensor:
    """alpha_kd * T² * KL(teacher_T || student_T) + alpha_ce * CE(student, labels), means over the batch.

    Args:
        student_logits: (batch, classes) logits of the student.
        teacher_logits: (batch, classes) logits of the teacher; may be None when `alpha_kd` is 0.
        labels: (batch,) gold class ids; a negative id (deploykit.transfer.KD_ONLY, an unlabelled row) is read by
            the KL term only, and the cross-entropy is the mean over the rows that have a label.
        temperature: softmax temperature T applied to both sides of the KL term.
        alpha_kd: weight of the soft (KL) term.
        alpha_ce: weight of the hard (cross-entropy) term.

    Returns:
        A scalar tensor.
    """
    s = student_logits.float()
    loss = s.new_zeros(())
    if alpha_kd:
        t = teacher_logits.float()
        kl = F.kl_div(F.log_softmax(s / temperature, -1), F.log_softmax(t / temperature, -1),
                      log_target=True, reduction="batchmean")
        # T² keeps the soft term's gradients on the same scale as the hard term's for any T
        loss = loss + alpha_kd * kl * temperature ** 2
    if alpha_ce:
        gold = labels >= 0  # a batch of unlabelled rows only has no cross-entropy (an empty mean is NaN)
        if bool(gold.any()):
            loss = loss + alpha_ce * F.cross_entropy(s[gold], labels[gold])
    return loss


def hidden_mse(student_states, teacher_states, layer_map: list[int], attention_mask: torch.Tensor,
               projection: torch.nn.Module | None = None) -> torch.Tensor:
    """Mean squared error between student layer i and teacher layer layer_map[i] (and the two embedding
    outputs), over real tokens only; `*_states` are HF `hidden_states` tuples (embeddings first)."""
    pairs = [(0, 0)] + [(i + 1, j + 1) for i, j in enumerate(layer_map)]
    mask = attention_mask.unsqueeze(-1).float()
    denom = mask.sum() * teacher_states[0].shape[-1]
    total = teacher_states[0].new_zeros((), dtype=torch.float32)
    for i, j in pairs:
        s = student_states[i] if projection is None else projection(student_states[i])
        total = total + (((s.float() - teacher_states[j].float()) ** 2) * mask).sum() / denom
    return total / len(pairs)


def attention_kl(student_attn, teacher_attn, layer_map: list[int], attention_mask: torch.Tensor) -> torch.Tensor:
    """KL(teacher || student) between the attention distributions of student layer i and teacher layer
    layer_map[i], averaged over heads and real query positions."""
    valid = attention_mask[:, None, :, None].float()  # (batch, 1, query, 1): padded queries do not count
    total = valid.new_zeros(())
    for i, j in enumerate(layer_map):
        s, t = student_attn[i].float(), teacher_attn[j].float()
        kl = (torch.special.xlogy(t, t) - t * torch.log(s.clamp_min(1e-12))).sum(-1, keepdim=True)
        total = total + (kl * valid).sum() / (valid.sum() * s.shape[1])
    return total / len(layer_map)


def uniform_layer_map(n_student: int, n_teacher: int) -> list[int]:
    """Student layer i learns from teacher layer (i + 1) * n_teacher / n_student - 1 (TinyBERT's uniform
    mapping): the last student layer always maps to the last teacher layer."""
    return [(i + 1) * n_teacher // n_student - 1 for i in range(n_student)]


def _forward_args(model) -> set[str]:
    return set(inspect.signature(model.forward).parameters)


def length_ordered_batches(dataset, collator, columns: list[str], batch_size: int):
    """Yield (dataset row indices, collated batch of `columns`), shortest rows first (less padding)."""
    lengths = [len(ids) for ids in dataset["input_ids"]]
    order = sorted(range(len(dataset)), key=lengths.__getitem__)
    for start in range(0, len(order), batch_size):
        idx = order[start:start + batch_size]
        rows = dataset.select(idx)
        yield idx, collator([{c: rows[k][c] for c in columns} for k in range(len(idx))])


def teacher_batches(dataset, teacher, collator, columns: list[str], batch_size: int, device=None):
    """Yield (dataset row indices, collated batch of `columns` on the teacher's device), shortest rows first;
    the teacher is put in eval mode. `device`: where the teacher runs; default, where its parameters are."""
    teacher.eval()
    device = device or next(teacher.parameters()).device
    for idx, batch in length_ordered_batches(dataset, collator, columns, batch_size):
        yield idx, {k: v.to(device) for k, v in batch.items()}


@torch.inference_mode()
def add_teacher_logits(dataset, teacher, collator, batch_size: int = 64, device=None):
    """Return `dataset` with a `teacher_logits` column: the teacher's logits for each example, computed once.

    The column lives in the example's own row, so shuffling and DDP sharding keep it aligned. Rows are
    run in length order (less padding) and written back in dataset order. A dataset that already has
    the column is returned as is.

    Args:
        dataset: a `datasets.Dataset` of tokenized examples (`input_ids`, ...).
        teacher: the teacher classifier (put in eval mode here).
        collator: pads a list of feature dicts into a batch (e.g. DataCollatorWithPadding).
        batch_size: rows per teacher forward pass.
        device: where the teacher runs; default, where its parameters are.
    """
    if TEACHER_LOGITS in dataset.column_names:
        return dataset
    cols = [c for c in dataset.column_names if c in _forward_args(teacher) and c != "labels"]
    out: list[list[float]] = [None] * len(dataset)  # type: ignore[list-item]
    for idx, batch in teacher_batches(dataset, teacher, collator, cols, batch_size, device):
        for i, row in zip(idx, teacher(**batch).logits.float().cpu().tolist()):
            out[i] = row
    return dataset.add_column(TEACHER_LOGITS, out)


class DistillTrainer(Trainer):
    """A HF Trainer whose loss distils a frozen `teacher` into the model being trained (the student).

    Args:
        teacher: the teacher classifier; frozen and put in eval mode.
        temperature: softmax temperature of the KL term.
        alpha_kd: weight of KL on softened logits (scaled by T²).
        alpha_ce: weight of cross-entropy on the gold labels.
        alpha_hidden: weight of hidden-state MSE over `layer_map` (0: off).
        alpha_attention: weight of attention-distribution KL over `layer_map` (0: off; same head count only).
        layer_map: student layer i learns from teacher layer layer_map[i]; default: uniform.
        cache_teacher_logits: compute the teacher's logits once per example (train and eval datasets)
            instead of at every step. Ignored when the hidden or attention terms are on: those need the
            teacher's live hidden states anyway.
        *args, **kwargs: passed to `transformers.Trainer`.
    """

    # compute_loss returns a per-batch mean; the Trainer divides by the accumulation steps itself
    loss_is_scaled_for_ga = False
    # dataset columns of the teacher cache: kept through the Trainer's column dropping, popped before forward
    cache_columns: tuple[str, ...] = (TEACHER_LOGITS,)
    # extra keyword arguments of every student and teacher forward pass
    forward_flags: dict = {}

    def __init__(self, *args, teacher: torch.nn.Module, temperature: float = 2.0, alpha_kd: float = 0.5,
                 alpha_ce: float = 0.5, alpha_hidden: float = 0.0, alpha_attention: float = 0.0,
                 layer_map: list[int] | None = None, cache_teacher_logits: bool = False, **kwargs):
        super().__init__(*args, **kwargs)
        if not (alpha_kd or alpha_ce or alpha_hidden or alpha_attention):
            raise UserError("distillation: all loss weights are 0; set alpha_kd and/or alpha_ce above 0")
        self.temperature, self.alpha_kd, self.alpha_ce = temperature, alpha_kd, alpha_ce
        self.alpha_hidden, self.alpha_attention = alpha_hidden, alpha_attention
        self.teacher = teacher.eval().requires_grad_(False).to(self.args.device)
        self._teacher_args = _forward_args(self.teacher)
        s_cfg, t_cfg = self.model.config, self.teacher.config
        self.layer_map = self._check_layer_map(layer_map, num_layers(s_cfg), num_layers(t_cfg))
        if alpha_attention:
            if s_cfg.num_attention_heads != t_cfg.num_attention_heads:
                raise UserError(f"alpha_attention needs the same head count in student and teacher "
                                f"({s_cfg.num_attention_heads} vs {t_cfg.num_attention_heads}); set it to 0")
            # fused (sdpa) attention does not return the attention probabilities
            for m in (self.model, self.teacher):
                m.set_attn_implementation("eager")
        self.projection = None
        if alpha_hidden and s_cfg.hidden_size != t_cfg.hidden_size:
            # trained with the student but not part of it: save_pretrained never sees it
            self.projection = torch.nn.Linear(s_cfg.hidden_size, t_cfg.hidden_size).to(self.args.device)
        # hidden/attention terms need the teacher's forward pass at every step anyway
        self.live_teacher = bool(alpha_hidden or alpha_attention)
        if cache_teacher_logits and alpha_kd and not self.live_teacher:
            self._cache_teacher_logits()

    @staticmethod
    def _check_layer_map(layer_map: list[int] | None, n_student: int, n_teacher: int) -> list[int]:
        if layer_map is None:
            return uniform_layer_map(n_student, n_teacher)
        from deploykit.layers import check_layer_map

        return check_layer_map(layer_map, n_student, n_teacher)

    def _cache_teacher_logits(self) -> None:
        self.train_dataset = self.add_teacher_cache(self.train_dataset)
        if isinstance(self.eval_dataset, dict):
            self.eval_dataset = {k: self.add_teacher_cache(v) for k, v in self.eval_dataset.items()}
        elif self.eval_dataset is not None:
            self.eval_dataset = self.add_teacher_cache(self.eval_dataset)

    def add_teacher_cache(self, dataset):
        """`dataset` with the teacher cache columns (`cache_columns`) added."""
        return add_teacher_logits(dataset, self.teacher, self.data_collator, self.args.per_device_eval_batch_size)

    def _set_signature_columns_if_needed(self) -> None:
        # keep the cached logits: the Trainer otherwise drops every column the student's forward() lacks
        super()._set_signature_columns_if_needed()
        for column in self.cache_columns:
            if column not in self._signature_columns:
                self._signature_columns.append(column)

    def create_optimizer(self, model=None):
        optimizer = super().create_optimizer(model)
        if self.projection is not None and not getattr(self, "_projection_added", False):
            optimizer.add_param_group({"params": list(self.projection.parameters()), "weight_decay": 0.0})
            self._projection_added = True
        return optimizer

    def training_step(self, model, inputs, num_items_in_batch=None):
        loss = super().training_step(model, inputs, num_items_in_batch)
        # DDP averages the student's gradients only; the projection lives outside the wrapped model
        if self.projection is not None and torch.distributed.is_available() and torch.distributed.is_initialized():
            for p in self.projection.parameters():
                if p.grad is not None:
                    torch.distributed.all_reduce(p.grad)
                    p.grad /= torch.distributed.get_world_size()
        return loss

    def compute_loss(self, model, inputs, return_outputs: bool = False, num_items_in_batch=None):
        inputs = dict(inputs)
        labels = inputs.pop("labels")
        cached = {c: inputs.pop(c) for c in self.cache_columns if c in inputs}
        want = {"output_hidden_states": bool(self.alpha_hidden), "output_attentions": bool(self.alpha_attention),
                **self.forward_flags}
        outputs = model(**inputs, **want)
        teacher_out = None
        if self.live_teacher or (self.alpha_kd and not cached):
            with torch.no_grad():
                teacher_out = self.teacher(**{k: v for k, v in inputs.items() if k in self._teacher_args}, **want)
        loss = self.logits_loss(outputs.logits, labels, teacher_out, cached)
        mask = inputs.get("attention_mask")
        if mask is None:
            mask = torch.ones_like(inputs["input_ids"])
        if self.alpha_hidden:
            loss = loss + self.alpha_hidden * hidden_mse(outputs.hidden_states, teacher_out.hidden_states,
                                                         self.layer_map, mask, self.projection)
        if self.alpha_attention:
            loss = loss + self.alpha_attention * attention_kl(outputs.attentions, teacher_out.attentions,
                                                              self.layer_map, mask)
        # only the logits go back to evaluation: hidden states of the whole eval set would not fit
        return (loss, {"logits": outputs.logits}) if return_outputs else loss

    def logits_loss(self, student_logits, labels, teacher_out, cached: dict) -> torch.Tensor:
        """The soft (KL) and hard (CE) terms, from the live teacher's output or the cached columns."""
        teacher_logits = teacher_out.logits if teacher_out is not None else cached.get(TEACHER_LOGITS)
        return kd_loss(student_logits, teacher_logits, labels, temperature=self.temperature,
                       alpha_kd=self.alpha_kd, alpha_ce=self.alpha_ce)
