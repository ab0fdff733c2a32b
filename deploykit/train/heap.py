"""Training keeps freed memory in the process heap instead of handing it back to the kernel at every step.

glibc's malloc serves a block over its mmap threshold (128 KB, rising with what is freed to at most 32 MB) with a
fresh `mmap` and returns it with `munmap` on free, and it trims the heap's top whenever more than the trim threshold
is free there. A training step allocates and frees the same large tensors every time: the word-piece table's
gradient alone is 30,522 x 384 floats (47 MB, over the 32 MB cap, so always mmap'd), and the activations of a batch
are several MB each. Every step then takes tens of thousands of page faults, each a kernel entry that zeroes a 4 KB
page: 28,780 faults and 95 ms of system time in a 454-ms teacher step on a 2-core Zen 4 (bench/heap_training.py).
With mmap off and the trim threshold high, the memory freed by one step serves the next: steps took 0.87x (teacher)
and 0.90x (student) the time there, and the main job's training 21-23% less (bench/README.md, run 53), for 4-6% more
peak memory. The numbers a step computes do not change: only where the bytes live.

The settings are glibc's documented `mallopt` parameters (man 3 mallopt: M_MMAP_MAX, M_TRIM_THRESHOLD); on any
other C library (musl, macOS, Windows) `kept_heap` changes nothing. This is ours because it is a one-call setting
scoped to training; the usual alternative, preloading jemalloc or tcmalloc, must be done before the process starts.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from deploykit.hardware import glibc_library

M_TRIM_THRESHOLD = -1
M_MMAP_MAX = -4
# glibc's defaults (malloc/malloc.c: DEFAULT_MMAP_MAX, DEFAULT_TRIM_THRESHOLD), put back when training ends
DEFAULT_MMAP_MAX = 65536
DEFAULT_TRIM_THRESHOLD = 128 * 1024
# freed memory at the heap's top is given back only past 1 GiB while training (mallopt takes a C int)
KEPT_TRIM_THRESHOLD = 1 << 30


def _glibc():
    """The process's glibc as a ctypes library, or None on another C library."""
    libc = glibc_library("c")
    return libc if hasattr(libc, "mallopt") and hasattr(libc, "malloc_trim") else None


@contextmanager
def kept_heap() -> Iterator[bool]:
    """Inside, freed memory stays in the heap for the next allocation; yields whether the setting applied.

    On leaving (also by an exception) glibc's default values for mmap use and trimming are put back and the free
    memory is returned to the kernel (`malloc_trim(0)`), so stages after training do not carry the training's heap.
    As after any `mallopt` of these settings, glibc no longer moves its mmap threshold as blocks are freed: it stays
    where it had risen to (at most 32 MB). A host process's own earlier `mallopt` values are not restored (glibc
    cannot report them).
    """
    libc = _glibc()
    if libc is None:
        yield False
        return
    applied = bool(libc.mallopt(M_MMAP_MAX, 0)) and bool(libc.mallopt(M_TRIM_THRESHOLD, KEPT_TRIM_THRESHOLD))
    try:
        yield applied
    finally:
        libc.mallopt(M_MMAP_MAX, DEFAULT_MMAP_MAX)
        libc.mallopt(M_TRIM_THRESHOLD, DEFAULT_TRIM_THRESHOLD)
        libc.malloc_trim(0)
