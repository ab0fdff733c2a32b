"""What other work on the same cores does to a CPU training step, and what training's start-up check
(`deploykit.hardware.cores_busy_elsewhere`) reads in each case: the default recipe's student (3 layers), timed
alone, beside a one-core busy loop and beside a second training like it (another `deploykit run`).

    python bench/shared_cores.py [--rounds 3] [--steps 10] [--seq 24] [--batch 32]

Each round times one block of `--steps` whole steps (forward, backward, clipping, fused AdamW) after 2 warm-up steps
in each condition, the competitor started before and killed after its block; ratios are taken within a round, so
drift of the machine between rounds cancels. "read elsewhere" is what training's check measured over half a second
just before the block: the line deploykit prints is due where it reaches 0.5 core and the threads do not fit.
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import time

import torch
from heap_training import random_batch, time_block  # bench/ is the script's folder, so on sys.path
from optimizer_step import print_machine, step_models

from deploykit.hardware import cores, cores_busy_elsewhere, shared_cores_warning

SPIN = "while True: pass"
# a second training of the same model, as another deploykit run on the same machine would be
TRAIN = ("import torch; from heap_training import time_block; "
         "from optimizer_step import step_models; layers, m = list(step_models())[1]; p = list(m.parameters()); "
         "o = torch.optim.AdamW(p, lr=1e-4, fused=True); ids = torch.randint(1000, 30000, (32, 24)); "
         "b = {'input_ids': ids, 'attention_mask': torch.ones_like(ids), 'labels': torch.zeros(32, dtype=torch.long)}\n"
         "while True: time_block(m, o, p, b, 10)")
CONDITIONS = (("alone", None), ("beside a one-core busy loop", SPIN), ("beside a second training", TRAIN))


def competitor(code: str | None) -> subprocess.Popen | None:
    if code is None:
        return None
    here = os.path.dirname(os.path.abspath(__file__))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [here, os.environ.get("PYTHONPATH")]))}
    proc = subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    time.sleep(8 if code is TRAIN else 1)  # the second training loads its model and warms up first
    return proc


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--seq", type=int, default=24)
    ap.add_argument("--batch", type=int, default=32)
    args = ap.parse_args()
    print_machine()
    _, model = list(step_models())[1]
    params = list(model.parameters())
    opt = torch.optim.AdamW(params, lr=1e-4, weight_decay=0.01, fused=True)
    batch = random_batch(model, args.batch, args.seq)
    ms = {name: [] for name, _ in CONDITIONS}
    read = {name: [] for name, _ in CONDITIONS}
    for _ in range(args.rounds):
        for name, code in CONDITIONS:
            proc = competitor(code)
            try:
                read[name].append(cores_busy_elsewhere())
                ms[name].append(time_block(model, opt, params, batch, args.steps)["ms"])
            finally:
                if proc is not None:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()
    print(f"\n3-layer student, batch {args.batch} x {args.seq}, {torch.get_num_threads()} torch threads on "
          f"{cores()} cores; {args.rounds} rounds of {args.steps} steps; medians over rounds\n")
    print("| condition | ms/step | vs alone (per round: min-max) | read elsewhere (cores) | warning printed |")
    print("| --- | --- | --- | --- | --- |")
    for name, _ in CONDITIONS:
        ratios = [m / a for m, a in zip(ms[name], ms["alone"])]
        elsewhere = statistics.median(read[name])
        warned = shared_cores_warning("train", elsewhere, torch.get_num_threads(), cores()) is not None
        print(f"| {name} | {statistics.median(ms[name]):.1f} | {statistics.median(ratios):.2f} "
              f"({min(ratios):.2f}-{max(ratios):.2f}) | {elsewhere:.2f} | {'yes' if warned else 'no'} |")


if __name__ == "__main__":
    main()
