"""deploykit/train/heap.py: inside `kept_heap` the memory one training step frees serves the next without page faults;
outside (and after an exception) glibc's defaults are back; on another C library nothing changes."""

import contextlib
import subprocess
import sys

import pytest
import torch

import deploykit.train.heap as heap
import deploykit.train.trainer as training
from tests.train.test_trainer import _trainer

glibc_only = pytest.mark.skipif(heap._glibc() is None, reason="mallopt is glibc's; other C libraries are untouched")

# Run in a fresh interpreter: in a process that has trained before, the heap holds large free chunks of its own that
# can serve the step's blocks, so its page faults depend on the process's history, not on the settings. The step is a
# real one: a one-layer BERT with the full 30,522 x 384 word-piece table, whose 47 MB gradient is over glibc's 32 MB
# mmap cap. (A bare loop of 64 MB torch.ones blocks is no stand-in: even with the heap kept, each block grew the heap.)
SCENARIO = """
import resource, sys, torch
from transformers import BertConfig, BertForSequenceClassification
from deploykit.train.heap import kept_heap

torch.manual_seed(0)
model = BertForSequenceClassification(BertConfig(vocab_size=30522, hidden_size=384, num_hidden_layers=1,
                                                 num_attention_heads=4, intermediate_size=64)).train()
opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=True)
ids = torch.randint(0, 30522, (8, 16))

def faults():  # minor page faults of one training step, after two
    for _ in range(2):
        step()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    step()
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before

def step():
    model(input_ids=ids, labels=torch.zeros(8, dtype=torch.long)).loss.backward()
    opt.step()
    opt.zero_grad(set_to_none=True)

counts = [faults()]
try:
    with kept_heap() as applied:
        assert applied
        counts.append(faults())
        if sys.argv[1] == "raise":
            raise RuntimeError("training failed")
except RuntimeError:
    pass
counts.append(faults())
print(*counts)
"""


def _faults(how: str) -> list[int]:
    """Page faults of one training step: with glibc's defaults, inside `kept_heap`, after it."""
    out = subprocess.run([sys.executable, "-c", SCENARIO, how], capture_output=True, text=True, timeout=300,
                         check=True)
    return [int(n) for n in out.stdout.split()]


@glibc_only
@pytest.mark.parametrize("how", ["return", "raise"])
def test_a_freed_block_serves_the_next_without_page_faults_and_the_defaults_come_back(how):
    default, kept, after = _faults(how)
    assert default > 8000  # glibc's default: the gradient mmap'd and unmapped every step, 11,445 pages
    assert kept < 1000
    assert after > 8000  # also when training ends in an exception


def test_on_another_c_library_nothing_is_set(monkeypatch):
    monkeypatch.setattr(heap, "_glibc", lambda: None)
    with heap.kept_heap() as applied:
        assert applied is False


@glibc_only
def test_the_same_training_steps_give_the_same_weights_with_the_heap_kept(tiny_bert, tiny_task, tmp_path,
                                                                          monkeypatch):
    weights = []
    for keep in (False, True):
        if not keep:
            monkeypatch.setattr(training, "kept_heap", contextlib.nullcontext)
        else:
            monkeypatch.setattr(training, "kept_heap", heap.kept_heap)
        torch.manual_seed(0)
        trainer, _, _ = _trainer(tiny_bert, tiny_task, tmp_path / f"work{keep}", "off")
        trainer.train()
        weights.append({k: v.detach().clone() for k, v in trainer.model.state_dict().items()})
    assert weights[0].keys() == weights[1].keys()
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])


def test_every_trainer_trains_inside_the_kept_heap(tiny_bert, tiny_task, tmp_path, monkeypatch):
    seen = []

    @contextlib.contextmanager
    def recording():
        seen.append("enter")
        yield True
        seen.append("exit")

    monkeypatch.setattr(training, "kept_heap", recording)
    trainer, _, _ = _trainer(tiny_bert, tiny_task, tmp_path / "work", "off")
    trainer.train()
    assert seen == ["enter", "exit"]
