import random

import torch

from deploykit.train.batches import shuffled_batches


def _lengths(n=2000, seed=0):
    rng = random.Random(seed)
    return [rng.randint(2, 120) for _ in range(n)]


def test_every_row_once_in_batches_of_similar_length():
    lengths, bs = _lengths(), 16
    order = shuffled_batches(lengths, bs, torch.Generator().manual_seed(1))
    assert sorted(order) == list(range(len(lengths)))
    # a batch is a run of one length-sorted group: its spread is a small part of the data's 2..120
    spreads = [max(lengths[i] for i in order[k:k + bs]) - min(lengths[i] for i in order[k:k + bs])
               for k in range(0, len(order) - len(order) % bs, bs)]
    assert sorted(spreads)[len(spreads) // 2] <= 6


def test_an_epoch_does_not_end_on_the_shortest_batch():
    """transformers' order ends every epoch on the shortest batch of its last group: the checkpoint saved
    there has just trained on the shortest rows alone. Shuffled, the last batch is an ordinary one."""
    from transformers.trainer_pt_utils import get_length_grouped_indices

    lengths, bs = _lengths(n=1984), 16  # four groups of 31 batches, the last one whole
    mean = sum(lengths) / len(lengths)
    ends_hf, ends_ours = [], []
    for seed in range(30):
        hf = get_length_grouped_indices(lengths, bs, generator=torch.Generator().manual_seed(seed))
        ours = shuffled_batches(lengths, bs, torch.Generator().manual_seed(seed))
        ends_hf.append(sum(lengths[i] for i in hf[-bs:]) / bs)
        ends_ours.append(sum(lengths[i] for i in ours[-bs:]) / bs)
    assert max(ends_hf) < 0.25 * mean  # the pattern this module exists to break, still transformers' own
    assert abs(sum(ends_ours) / len(ends_ours) - mean) < 0.25 * mean


def test_a_short_last_batch_stays_last():
    lengths, bs = _lengths(n=1000), 24  # 1000 = 41 x 24 + 16
    order = shuffled_batches(lengths, bs, torch.Generator().manual_seed(3))
    hf_tail_rows = 1000 % bs
    assert len(order) == 1000 and len(set(order[-hf_tail_rows:])) == hf_tail_rows
    # the first 41 runs of 24 are whole batches, each of similar length: none straddles the short one
    from transformers.trainer_pt_utils import get_length_grouped_indices

    hf = get_length_grouped_indices(lengths, bs, generator=torch.Generator().manual_seed(3))
    assert order[-hf_tail_rows:] == hf[-hf_tail_rows:]
