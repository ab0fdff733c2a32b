"""What one `deploykit bench` call measures: artifacts x runtimes x targets as rows, with their settings.

    from deploykit.measure.bench_plan import Settings, Subject, plan_rows
    rows = plan_rows([Subject("final", load_artifact("runs/sst2/quantize"))], Settings.from_config(BenchConfig()))

deploykit/measure/benchmark.py measures the rows; this module decides which exist, how many threads and batch sizes
each gets, and why a row is skipped (a runtime this machine lacks) or needs a caveat (emulated bf16).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from deploykit.artifact import Artifact
from deploykit.hardware import cores
from deploykit.runtimes import Loaded, plan, unavailable

BLOCK = 25              # timed batch-1 calls of one runtime before the next runtime takes over
BLOCK_WARMUP = 2        # untimed calls that open every block (absorb the switch between runtimes)
# seconds every block waits before its warm-up: the previous row's idle threads spin ~30 ms after its last call
# (ONNX Runtime's intra-op pool on 2 cores, measured; OpenMP's too) and would share the cores with the next row
SWITCH_PAUSE_S = 0.05
# each batch size is measured in this many interleaved blocks per runtime: enough that a change of the machine's speed
# during the bench shows as a spread between blocks (a VM's host moves its vCPUs between cores that share a cache and
# cores that do not, and a two-thread ORT row then runs 2x slower for tens of seconds; bench/README.md, thirty-eighth
# session)
THROUGHPUT_ROUNDS = 4
THROUGHPUT_BATCHES = 16  # distinct batches per batch size, cycled
EDGE_MAX_BATCH = 8      # the edge target measures small batches only
QUICK_EVAL = 64         # --quick evaluates accuracy on this many examples


@dataclass
class Settings:
    """What to measure and how long; `from_config` turns a BenchConfig (and --quick) into this."""

    targets: list[str]
    runtimes: list[str] | None
    batch_sizes: list[int]
    latency_samples: int
    warmup: int
    min_time_s: float
    eval_samples: int | None
    throughput_rounds: int = THROUGHPUT_ROUNDS
    memory: str = "subprocess"  # or "in-process"

    @classmethod
    def from_config(cls, cfg) -> Settings:
        common = {"targets": list(dict.fromkeys(cfg.targets)), "runtimes": cfg.runtimes,
                  "batch_sizes": sorted(set(cfg.batch_sizes))}
        if cfg.quick:
            # a smoke test: few calls, a short eval, and no subprocess per runtime for memory
            return cls(**common, latency_samples=min(cfg.latency_samples, 10), warmup=min(cfg.warmup, 1),
                       min_time_s=min(cfg.min_time_s, 0.05), eval_samples=min(cfg.eval_samples or QUICK_EVAL,
                                                                              QUICK_EVAL),
                       throughput_rounds=1, memory="in-process")
        return cls(**common, latency_samples=cfg.latency_samples, warmup=cfg.warmup,
                   min_time_s=cfg.min_time_s, eval_samples=cfg.eval_samples)


@dataclass
class Subject:
    """One artifact to measure, under a display name; `baseline` marks the standard-recipe row."""

    name: str
    artifact: Artifact
    baseline: bool = False


@dataclass
class Row:
    subject: Subject
    runtime: str
    target: str
    threads: int
    batch_sizes: list[int]
    skip: str | None = None  # why this row is not measured here
    note: str | None = None  # what a reader should know about a measured row
    loaded: Loaded | None = None
    latencies_ms: list[float] = field(default_factory=list)
    work: dict[int, list[float]] = field(default_factory=dict)  # batch size -> [sentences, seconds]
    block_rates: dict[int, list[float]] = field(default_factory=dict)  # batch size -> sentences/s of each block
    block_p50_ms: list[float] = field(default_factory=list)  # the median batch-1 call of each latency block
    memory: dict[str, Any] = field(default_factory=dict)
    quality: dict[str, Any] = field(default_factory=dict)
    e2e_ms: list[float] = field(default_factory=list)  # text in, label out through deploykit.load


def target_threads(target: str) -> int:
    """Intra-op threads per target: edge is one core; cpu (and the host side of gpu) all cores."""
    return 1 if target == "edge" else cores()


def target_batches(target: str, batch_sizes: list[int]) -> list[int]:
    if target != "edge":
        return batch_sizes
    return [b for b in batch_sizes if b <= EDGE_MAX_BATCH] or batch_sizes[:1]


def plan_rows(subjects: list[Subject], settings: Settings) -> list[Row]:
    """One row per artifact x runtime x target; runtimes this machine lacks get a note, not an error."""
    rows = []
    for subject in subjects:
        for target in settings.targets:
            runtimes, note = plan(subject.artifact.format, target, settings.runtimes)
            for runtime in runtimes:
                rows.append(Row(subject, runtime, target, target_threads(target),
                                target_batches(target, settings.batch_sizes),
                                skip=note or unavailable(runtime, target), note=caveat(runtime, target)))
    return rows


def bf16_device(target: str) -> str:
    return "cuda" if target == "gpu" else "cpu"


def caveat(runtime: str, target: str) -> str | None:
    from deploykit.hardware import bf16_supported

    if runtime != "torch-bf16" or bf16_supported(bf16_device(target)):
        return None
    if target == "gpu":
        return "bf16 is emulated on this GPU (compute capability below 8.0): expect it slower than FP32"
    return "bf16 is emulated here (no AVX512_BF16 or AMX): expect it slower than FP32"
