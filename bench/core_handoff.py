"""Does this machine's two-thread ONNX Runtime speed follow where the host puts its cores? One table per run.

    DEPLOYKIT_DATA_DIR=../shared/data python bench/core_handoff.py runs/sst2-minilm/quantize --rounds 60
    # --recipe R: the texts of R's data section (default recipes/sst2-minilm.yaml)

Each round times one hand-off of a cache line between the process's first two CPUs (a 40-line C probe, built with
the machine's `cc`: Python threads cannot measure it under the GIL), then batch-32 blocks of the artifact's graph on
two ONNX Runtime threads and on one, on the test texts `deploykit bench` times. A small INT8 graph hands work between
its threads at every node, so a hand-off that costs 5x more makes the second thread worth less than nothing. On a
virtual machine the host may move the two vCPUs between cores that share a cache and cores that do not, every few
tens of seconds, unseen from inside: the two-thread figure then changes by 2x within one process (bench/README.md,
"Thirty-eighth session").
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

# round trip of one cache line between two pinned threads, median of 200 blocks of 1,000 trips, in ns
PROBE_C = r"""
#define _GNU_SOURCE
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
static _Atomic int flag __attribute__((aligned(64)));
static int cpu_a, cpu_b;
static void pin(int c) { cpu_set_t s; CPU_ZERO(&s); CPU_SET(c, &s); pthread_setaffinity_np(pthread_self(), sizeof s, &s); }
static void *echo(void *unused) {
  pin(cpu_b);
  for (;;) { while (atomic_load_explicit(&flag, memory_order_acquire) != 1) {} atomic_store(&flag, 0); }
  return unused;
}
static double now(void) { struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t); return t.tv_sec + t.tv_nsec * 1e-9; }
static int cmp(const void *a, const void *b) { double x = *(double *)a, y = *(double *)b; return (x > y) - (x < y); }
int main(int argc, char **argv) {
  cpu_a = atoi(argv[1]); cpu_b = atoi(argv[2]);
  pthread_t t; pin(cpu_a); pthread_create(&t, 0, echo, 0);
  double ns[200];
  for (int k = 0; k < 200; k++) {
    double s = now();
    for (int i = 0; i < 1000; i++) {
      atomic_store_explicit(&flag, 1, memory_order_release);
      while (atomic_load_explicit(&flag, memory_order_acquire) != 0) {}
    }
    ns[k] = (now() - s) / 1000 * 1e9;
  }
  qsort(ns, 200, sizeof ns[0], cmp);
  printf("%.0f\n", ns[100]);
  return 0;
}
"""


def build_probe(folder: Path) -> Path:
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        raise SystemExit("core_handoff: needs a C compiler (cc or gcc) for its probe")
    (folder / "probe.c").write_text(PROBE_C)
    subprocess.run([cc, "-O2", "-pthread", "probe.c", "-o", "probe"], cwd=folder, check=True)
    return folder / "probe"


def handoff_ns(probe: Path, cpus: tuple[int, int]) -> float:
    return float(subprocess.run([str(probe), *map(str, cpus)], capture_output=True, text=True, check=True).stdout)


def rate(predict, batches: list[dict], seconds: float) -> float:
    """Sentences/s of `predict` over `batches`, cycled for `seconds` after one untimed call (as the bench does)."""
    time.sleep(0.05)
    predict(batches[0])
    done, i, start = 0, 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        feed = batches[i % len(batches)]
        predict(feed)
        done += len(feed["input_ids"])
        i += 1
    return done / (time.perf_counter() - start)


def main() -> None:
    from deploykit.artifact import load_artifact
    from deploykit.config import BenchConfig, load_recipe
    from deploykit.kinds import kind_of
    from deploykit.measure.bench_plan import Settings
    from deploykit.measure.benchmark import Inputs
    from deploykit.runtimes import load_runtime

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("artifact", help="an ONNX artifact folder (a `deploykit quantize` output)")
    ap.add_argument("--recipe", default="recipes/sst2-minilm.yaml", help="its data section gives the texts")
    ap.add_argument("--rounds", type=int, default=60)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--seconds", type=float, default=1.0, help="per block")
    args = ap.parse_args()

    cpus = tuple(sorted(os.sched_getaffinity(0)))[:2]
    if len(cpus) < 2:
        raise SystemExit("core_handoff: needs two CPUs")
    art = load_artifact(args.artifact)
    data = load_recipe(args.recipe).data
    task = kind_of(data.task).load_task(data)
    split = task.split("test") if task.test is not None else task.split("validation")
    batches = Inputs(split, Settings.from_config(BenchConfig(batch_sizes=[args.batch])), 512).batches(art, args.batch)
    two, one = load_runtime(art, "ort", 2), load_runtime(art, "ort", 1)
    with tempfile.TemporaryDirectory() as tmp:
        probe = build_probe(Path(tmp))
        rows = []
        print(f"| round | hand-off ns (CPUs {cpus[0]}-{cpus[1]}) | 2 threads sent/s @{args.batch} | "
              f"1 thread sent/s | 2 / 1 |\n| --- | --- | --- | --- | --- |", flush=True)
        for r in range(args.rounds):
            ns = handoff_ns(probe, cpus)
            two.prepare(2)
            r2 = rate(two.predict, batches, args.seconds)
            one.prepare(1)
            r1 = rate(one.predict, batches, args.seconds)
            rows.append((ns, r2, r1))
            print(f"| {r} | {ns:.0f} | {r2:,.0f} | {r1:,.0f} | {r2 / r1:.2f} |", flush=True)
    near = min(ns for ns, _, _ in rows) * 2  # within 2x of the fastest hand-off seen: cores that share a cache
    print("\n| hand-off | rounds | median ns | 2 threads sent/s | 1 thread sent/s | 2 / 1 |\n| --- | --- | --- | --- | --- | --- |")
    for name, group in (("near", [x for x in rows if x[0] <= near]), ("far", [x for x in rows if x[0] > near])):
        if group:
            med = [statistics.median(col) for col in zip(*group)]
            print(f"| {name} | {len(group)} | {med[0]:.0f} | {med[1]:,.0f} | {med[2]:,.0f} | {med[1] / med[2]:.2f} |")


if __name__ == "__main__":
    main()
