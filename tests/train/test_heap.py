"""deploykit/train/heap.py: inside `kept_heap` a large block freed by one step serves the next without page faults;
outside (and after an exception) glibc's defaults are back; on another C library nothing changes."""

import contextlib
import resource

import pytest
import torch

import deploykit.train.heap as heap
import deploykit.train.trainer as training
from tests.train.test_trainer import _trainer

BLOCK = 16 * 2**20  # floats: 64 MB, over glibc's largest dynamic mmap threshold (32 MB)
glibc_only = pytest.mark.skipif(heap._glibc() is None, reason="mallopt is glibc's; other C libraries are untouched")


def _faults_of_a_block() -> int:
    """Minor page faults taken to allocate, write and free one 64 MB tensor."""
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    block = torch.ones(BLOCK)
    del block
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before


@glibc_only
def test_a_freed_block_serves_the_next_without_page_faults_and_the_defaults_come_back():
    assert _faults_of_a_block() > 8000  # glibc's default: mmap'd and unmapped every time, 16,384 pages
    with heap.kept_heap() as applied:
        assert applied
        _faults_of_a_block()  # the heap grows once
        assert _faults_of_a_block() < 1000
    assert _faults_of_a_block() > 8000


@glibc_only
def test_an_exception_inside_still_puts_the_defaults_back():
    with pytest.raises(RuntimeError), heap.kept_heap():
        _faults_of_a_block()
        raise RuntimeError("training failed")
    assert _faults_of_a_block() > 8000


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
