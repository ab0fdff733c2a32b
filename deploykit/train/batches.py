"""Training batches of rows of similar length (`group_by_length`), optionally in random order (`batch_order`).

transformers' LengthGroupedSampler draws random groups of 50 batches and sorts each group by length, longest
first, so every group runs from its longest rows to its shortest and an epoch always ends on the shortest
batch of its last group. The checkpoint saved at an epoch's end has just taken a few steps on the shortest
rows alone (CoNLL-2003: score lines and datelines; SST-2: one- and two-word phrases), while one saved
mid-epoch has not: on CoNLL-2003 the held-out loss was higher at every whole epoch than at the half epochs
beside it (bench/README.md, "CoNLL-2003 run 24"), and checkpoints are chosen at those evaluations. Here the
batches transformers forms are kept and only their order is shuffled, so no evaluation falls at a fixed point
of a length cycle; padding per batch stays what grouping gives. It is a recipe's choice, not the default: on
CoNLL-2003 it brought the student 0.23 F1 closer to the teacher (run 27), on SST-2 the pruned model's recovery
stopped at epoch 1.25 on a noisier loss and the final model lost 2.2 pt more (run 28).
"""

from __future__ import annotations

import inspect


def length_grouping() -> dict:
    """The TrainingArguments that batch rows of similar length; the argument was renamed in transformers 5."""
    from transformers import TrainingArguments

    if "train_sampling_strategy" in inspect.signature(TrainingArguments).parameters:
        return {"train_sampling_strategy": "group_by_length"}
    return {"group_by_length": True}


def shuffled_batches(lengths: list[int], batch_size: int, generator=None) -> list[int]:
    """Row indices, each run of `batch_size` one batch of similar lengths, the batches in random order.

    Args:
        lengths: [rows] tokens per row.
        batch_size: rows per optimizer step (per-device batch x gradient accumulation).
        generator: a torch.Generator, or None for torch's global one (the Trainer seeds it).

    Returns:
        [rows] a permutation of range(len(lengths)); a last batch short of `batch_size` stays last, so the
        DataLoader's cut into `batch_size` runs falls on the batches' edges.
    """
    import torch
    from transformers.trainer_pt_utils import get_length_grouped_indices

    order = get_length_grouped_indices(lengths, batch_size, generator=generator)
    full = len(order) - len(order) % batch_size
    batches = [order[i:i + batch_size] for i in range(0, full, batch_size)]
    return [i for b in torch.randperm(len(batches), generator=generator).tolist() for i in batches[b]] + order[full:]


def shuffled_length_batches(base):
    """`base` Trainer whose length-grouped training sampler yields its batches in random order."""
    from transformers.trainer_pt_utils import LengthGroupedSampler

    class ShuffledBatches(LengthGroupedSampler):
        def __iter__(self):
            return iter(shuffled_batches(self.lengths, self.batch_size, self.generator))

    class LengthBatches(base):
        def _get_train_sampler(self, *args, **kwargs):
            sampler = super()._get_train_sampler(*args, **kwargs)
            if type(sampler) is LengthGroupedSampler:
                return ShuffledBatches(sampler.batch_size, lengths=sampler.lengths, generator=sampler.generator)
            return sampler

    LengthBatches.__name__ = LengthBatches.__qualname__ = base.__name__
    return LengthBatches
