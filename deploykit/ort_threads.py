"""Single rows on one thread: a one-thread ONNX Runtime session beside a multi-threaded one, kept where it is faster.

    twin = single_row_twin(onnx_path, session, threads=2, spinning=True, length=24)  # None: use `session` always
    predict = ort_predictor(session, single=twin)   # batches of one row run on the twin

At batch 1 a small graph's nodes take microseconds each, and ONNX Runtime's hand-off of every node to a second
thread costs more than the second thread saves: SST-2's final graph ran 0.47 ms on one thread against 0.53 ms on two,
while batch 32 needs both (31% more throughput on two; bench/README.md, twenty-eighth session). Which side wins
depends on the graph and the machine, so it is measured when the model loads (~10-60 ms), not assumed.
"""

from __future__ import annotations

import os
import statistics
import time
from pathlib import Path

import numpy as np

# the twin holds its own copy of the prepacked weights: only for graphs whose file is below this (a graph this large
# is slower on one thread at batch 1 anyway: its MatMuls are worth splitting)
TWIN_MAX_BYTES = 64 << 20
PROBE_ROUNDS = 5  # rounds of alternating blocks; the median block time of each session is compared
PROBE_CALLS = 8  # calls per block
PROBE_BUDGET_S = 0.25  # fewer rounds for a slow graph: loading stays quick
MARGIN = 0.97  # the twin must be at least 3% faster: a tie keeps one session


def single_row_twin(onnx_path: str | Path, session, threads: int | None, spinning: bool, length: int):
    """A one-thread session of `onnx_path` when it answers one row of `length` tokens faster than `session` (of
    `threads` intra-op threads; None: ONNX Runtime's default, one per physical core) on this machine, else None.

    None without measuring where there is nothing to gain or to hold: one thread already, a one-core machine, a file
    over TWIN_MAX_BYTES, a graph whose inputs are not a text classifier's (input_ids, attention_mask,
    token_type_ids).
    """
    from deploykit.evaluate import ort_predictor, ort_session

    if threads == 1 or (threads is None and (os.cpu_count() or 1) < 2):
        return None
    if Path(onnx_path).stat().st_size > TWIN_MAX_BYTES:
        return None
    feed = probe_feed(session, length)
    if feed is None:
        return None
    twin = ort_session(onnx_path, 1, spinning=spinning)
    many, one = ort_predictor(session), ort_predictor(twin)
    return twin if faster(one, many, feed) else None


def probe_feed(session, length: int) -> dict[str, np.ndarray] | None:
    """One row of `length` token ids (1..length, inside any vocabulary) and its mask, by the graph's input names;
    None for a graph that takes anything else."""
    names = {i.name for i in session.get_inputs()}
    if not names >= {"input_ids", "attention_mask"} or names - {"input_ids", "attention_mask", "token_type_ids"}:
        return None
    length = max(2, int(length))
    return {"input_ids": np.arange(1, length + 1, dtype=np.int64)[None, :],
            "attention_mask": np.ones((1, length), dtype=np.int64),
            "token_type_ids": np.zeros((1, length), dtype=np.int64)}


def faster(candidate, incumbent, feed, rounds: int = PROBE_ROUNDS, calls: int = PROBE_CALLS) -> bool:
    """Whether `candidate` runs `feed` at least 3% faster than `incumbent` (median of per-block means over
    alternating blocks, after one warm-up call each; stops early past PROBE_BUDGET_S)."""
    candidate(feed), incumbent(feed)
    times: dict[int, list[float]] = {0: [], 1: []}
    start = time.perf_counter()
    for _ in range(rounds):
        for side, predict in ((0, candidate), (1, incumbent)):
            t0 = time.perf_counter()
            for _ in range(calls):
                predict(feed)
            times[side].append((time.perf_counter() - t0) / calls)
        if time.perf_counter() - start > PROBE_BUDGET_S and len(times[0]) >= 2:
            break
    return statistics.median(times[0]) < MARGIN * statistics.median(times[1])
