"""Flush-to-zero for ONNX Runtime calls only, the caller's floating-point mode untouched.

Why: a masked softmax leaves MLAS's exp with denormal results that x86 computes ~10x slower (bench/README.md,
twenty-eighth session: SST-2's graph at batch 32 ran 1.24x faster with denormals flushed). ORT's own switch
(`session.set_denormal_as_zero`) sets FTZ/DAZ on its pool threads and, once per process, on the thread that creates
a session, which then reads every denormal as zero in all its float math, Python's float64 included, and hands the
mode to every thread it starts. So deploykit asks ORT for its pool threads only: it puts the creating thread's
floating-point environment back after the session is made (`kept`) and sets FTZ/DAZ on the calling thread for the
length of each call (`flush` / `restore`, ~1 µs; the calling thread runs its share of every call).

Only where the C library's `fegetenv`/`fesetenv` and the layout of its `fenv_t` are known (glibc on x86-64, where
MXCSR follows the 28-byte x87 environment); elsewhere AVAILABLE is False and sessions keep ORT's default.
"""

from __future__ import annotations

import contextlib
import ctypes
import platform
from collections.abc import Iterator

from deploykit.hardware import glibc_library

FTZ, DAZ = 1 << 15, 1 << 6     # MXCSR: flush-to-zero, denormals-are-zero
MXCSR_AT = 28                  # glibc x86-64 fenv_t: x87 environment, then MXCSR
ENV_BYTES = 64                 # room for glibc's 32-byte fenv_t


def _libm():
    if platform.machine().lower() not in ("x86_64", "amd64"):
        return None
    return glibc_library("m")


_LIBM = _libm()
AVAILABLE = _LIBM is not None


def _get() -> ctypes.Array:
    env = ctypes.create_string_buffer(ENV_BYTES)
    _LIBM.fegetenv(env)
    return env


def _set(env: ctypes.Array) -> None:
    _LIBM.fesetenv(env)


@contextlib.contextmanager
def kept() -> Iterator[None]:
    """The calling thread's floating-point environment as it was before the block (ORT sets FTZ/DAZ on the thread
    that creates the first session of a process)."""
    if not AVAILABLE:
        yield
        return
    before = _get()
    try:
        yield
    finally:
        _set(before)


def flush() -> ctypes.Array | None:
    """Set FTZ/DAZ on the calling thread; returns what `restore` needs (None where not AVAILABLE)."""
    if not AVAILABLE:
        return None
    saved = _get()
    mode = int.from_bytes(saved.raw[MXCSR_AT:MXCSR_AT + 4], "little") | FTZ | DAZ
    flushing = ctypes.create_string_buffer(saved.raw[:MXCSR_AT] + mode.to_bytes(4, "little")
                                           + saved.raw[MXCSR_AT + 4:], ENV_BYTES)
    _set(flushing)
    return saved


def restore(saved: ctypes.Array | None) -> None:
    """Put back the environment `flush` found."""
    if saved is not None:
        _set(saved)
