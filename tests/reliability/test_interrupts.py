"""Fault injection: `deploykit run` killed in the middle of a stage, then run again, ends exactly where an
uninterrupted run ends (issue 18, item 6).

Each case starts `deploykit run` as a subprocess, waits until one stage is in progress (a log line on
stderr or a scratch folder on disk), sends SIGKILL, SIGTERM or SIGINT, and checks the exit code and
what is left on disk; then it runs the same command again and compares every artifact with the
uninterrupted run: weights bit for bit, ONNX initializers bit for bit, the scores in the manifests,
the gates in pipeline.json and the bench report's accuracies, and no scratch folder left anywhere.

    python -m pytest tests/reliability/test_interrupts.py -q
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest import REPO, write_task

from deploykit.train.resume import complete, last_checkpoint

# the export section below configures quantize's float export and runs no stage of its own (Recipe.stages)
STAGES = ["finetune", "distill", "prune", "quantize", "bench"]
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false",
       "COLUMNS": "200"}  # wide enough that no log line the cases wait for is wrapped
for _name in ("DEPLOYKIT_QUIET", "DEPLOYKIT_DEBUG"):
    ENV.pop(_name, None)
# staging's .<name>.tmp-<pid> and .<name>.old-<pid>: never part of a finished run
STAGING = re.compile(r"^\..+\.(tmp|old)-\d+$")
# tempfile's own names and deploykit's / onnxruntime.quantization's prefixes in the system's temporary folder
TEMPORARY = re.compile(r"^(tmp|deploykit-|ort\.quant\.|pre\.quant\.)")
START_S, STOP_S, RUN_S = 120, 60, 300  # waits that turn a hang into a failure


# bf16 off in every training section: a re-run is then bit-for-bit the same on any CPU
TRAIN = {"learning_rate": 3.0e-3, "batch_size": 8, "warmup_ratio": 0.0, "early_stopping_patience": None, "bf16": "off"}


def recipe_dict(task: Path) -> dict:
    """Every stage of `deploykit run` on the 86k-parameter tiny BERT: about 20 s on one core. Batch 8 over
    256 rows makes each training stage last about a second, long enough to be interrupted in it."""
    return {
        "name": "interrupts",
        "model": {"source": str(REPO / "recipes" / "assets" / "tiny-bert")},
        "data": {"path": str(task), "max_length": 16},
        "gate": {"max_drop": 100.0},
        "finetune": {"epochs": 2, **TRAIN},
        "distill": {"student_layers": [1], "epochs": 2, **TRAIN},
        "prune": {"ffn": 0.5, "recovery": {"epochs": 2, **TRAIN}},
        "quantize": {"mode": "static", "calibration_samples": 16, "calibration_seq_len": 16, "max_drop": 100.0},
        "export": {"format": "onnx"},
        "bench": {"quick": True, "targets": ["cpu"], "runtimes": ["torch", "ort"], "batch_sizes": [1],
                  "eval_samples": 16},
    }


def command(recipe: Path, run: Path, quiet: bool = True) -> list[str]:
    return [sys.executable, "-m", "deploykit.cli", "run", str(recipe), "--out", str(run)] + (["-q"] if quiet else [])


def _default_sigint() -> None:
    # a child of a shell that ignores SIGINT (CI jobs in the background) inherits SIG_IGN, and Python then
    # installs no KeyboardInterrupt handler: give the child the default disposition, as a terminal would
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.fixture(scope="module")
def recipe(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("interrupts")
    path = folder / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe_dict(write_task(folder / "task", 256, 64, 64)), sort_keys=False))
    return path


@pytest.fixture(scope="module")
def reference(recipe) -> Path:
    """The uninterrupted run every case must end up equal to."""
    run = recipe.parent / "reference"
    done = subprocess.run(command(recipe, run), env=ENV, cwd=recipe.parent, capture_output=True, text=True,
                          timeout=RUN_S)
    assert done.returncode == 0, done.stderr[-3000:]
    assert not scratch(run), scratch(run)
    return run


def scratch(run: Path) -> list[str]:
    """Every hidden file or folder under `run` (a finished run has none)."""
    return sorted(str(p.relative_to(run)) for p in run.rglob(".*"))


# ---------------------------------------------------------------- where to interrupt


@dataclass(frozen=True)
class Point:
    """A moment inside `stage`: when a stderr line starts with a match of the regex `line`, or `glob` matches under
    the run."""

    stage: str
    line: str | None = None
    glob: str | None = None
    complete: bool = False  # `glob` names checkpoints: wait until one is completely written

    def reached(self, run: Path) -> bool:
        found = list(run.glob(self.glob)) if self.glob else []
        return any(complete(p) for p in found) if self.complete else bool(found)


POINTS = {
    # epoch 1's checkpoint is on disk, epoch 2 is training: the re-run resumes from it (same config, same key)
    "finetune-epoch2": Point("finetune", glob=".finetune.work/checkpoint-*", complete=True),
    # logged right before trainer.train()
    "distill-training": Point("distill", line="distill: teacher"),
    # the student's epoch-1 checkpoint is on disk: kept, and resumed from
    "distill-epoch2": Point("distill", glob=".distill.work/checkpoint-*", complete=True),
    # logged after the FFN neurons are cut, right before the recovery fine-tune
    "prune-recovery": Point("prune", line="prune: step 1/1"),
    # the recovery's epoch-1 checkpoint is on disk: kept, and gone on from
    "prune-epoch2": Point("prune", glob=".prune.work/step1/checkpoint-*", complete=True),
    # quantize works inside staging() from the start: ONNX export, calibration, the gate
    "quantize-staging": Point("quantize", glob=".quantize.tmp-*"),
    # the standard-recipe baseline is built inside staging() in bench's own staging folder
    "bench-baseline": Point("bench", glob=".bench.tmp-*/.baseline.tmp-*"),
    # logged when every row is built and the timing starts
    # (6 artifacts, or 7 with the OpenVINO + NNCF peer where openvino and nncf are installed)
    "bench-measure": Point("bench", line=r"bench: \d+ artifacts x cpu"),
}


class StaleScratch(AssertionError):
    """A staging folder of a killed run is still there after the re-run finished."""


CASES = [
    pytest.param("finetune-epoch2", signal.SIGTERM, id="finetune-SIGTERM-epoch2"),
    pytest.param("distill-training", signal.SIGKILL, id="distill-SIGKILL-training"),
    pytest.param("distill-epoch2", signal.SIGINT, id="distill-SIGINT-epoch2"),
    pytest.param("prune-recovery", signal.SIGINT, id="prune-SIGINT-recovery"),
    pytest.param("prune-epoch2", signal.SIGKILL, id="prune-SIGKILL-epoch2"),
    pytest.param("quantize-staging", signal.SIGKILL, id="quantize-SIGKILL-staging"),
    pytest.param("bench-baseline", signal.SIGKILL, id="bench-SIGKILL-baseline"),
    pytest.param("bench-measure", signal.SIGINT, id="bench-SIGINT-measure"),
]
EXIT = {signal.SIGKILL: -signal.SIGKILL, signal.SIGTERM: 143, signal.SIGINT: 130}
MESSAGE = {signal.SIGTERM: "error: terminated (SIGTERM); temporary output folders were removed",
           signal.SIGINT: "error: interrupted (SIGINT); temporary output folders were removed"}


def interrupt(cmd: list[str], run: Path, point: Point, sig: signal.Signals, env: dict) -> tuple[int, str]:
    """Start `cmd`, send `sig` once `point` is reached; returns the exit code and stderr."""
    proc = subprocess.Popen(cmd, cwd=run.parent, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True, start_new_session=True, preexec_fn=_default_sigint)
    lines: list[str] = []
    sent = threading.Event()

    def send():
        if not sent.is_set():
            sent.set()
            proc.send_signal(sig)

    def read():  # text mode splits on tqdm's \r too
        for line in proc.stderr:
            lines.append(line)
            if point.line and re.match(point.line, line):
                send()  # at once, from this thread: a short step may be over before the main loop looks

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    deadline = time.monotonic() + START_S
    try:
        while not sent.is_set():
            if point.reached(run):
                send()
                break
            assert proc.poll() is None, f"the run ended (exit {proc.returncode}) before {point}:\n" + "".join(lines)
            assert time.monotonic() < deadline, f"{point} not reached in {START_S} s:\n" + "".join(lines)
            sent.wait(0.005)
        code = proc.wait(STOP_S)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    reader.join(10)
    return code, "".join(lines)


def start_after(reference: Path, run: Path, stage: str) -> None:
    """`run` as a run interrupted at `stage` finds it: the earlier stages done, nothing of `stage` and later.

    Copied from the uninterrupted run rather than recomputed: the same files, and the whole test file
    stays within a few minutes on two cores.
    """
    shutil.copytree(reference, run, ignore=shutil.ignore_patterns(*STAGES[STAGES.index(stage):]))
    state = json.loads((run / "pipeline.json").read_text())
    state = {"stages": {k: v for k, v in state["stages"].items() if STAGES.index(k) < STAGES.index(stage)},
             "reference": state["reference"]}
    (run / "pipeline.json").write_text(json.dumps(state, indent=2))


# ---------------------------------------------------------------- what "the same run" means


def tensors(path: Path) -> dict[str, tuple[str, tuple, bytes]]:
    from safetensors.numpy import load_file

    return {k: (str(v.dtype), v.shape, v.tobytes()) for k, v in load_file(path).items()}


def onnx_graph(path: Path) -> tuple[list[str], dict[str, np.ndarray]]:
    import onnx
    from onnx import numpy_helper

    model = onnx.load(path)
    return [n.op_type for n in model.graph.node], {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}


def scores(node, path: str = "") -> dict[str, float]:
    """Every accuracy / macro-F1 / loss in a manifest's metrics, by its path (timings left out)."""
    if isinstance(node, dict):
        return {k: v for key, child in node.items() for k, v in scores(child, f"{path}/{key}").items()}
    return {path: node} if path.rsplit("/", 1)[-1] in ("accuracy", "macro_f1", "loss") else {}


def assert_same_run(run: Path, ref: Path) -> None:
    for stage in ("finetune", "distill", "prune"):
        assert tensors(run / stage / "model.safetensors") == tensors(ref / stage / "model.safetensors"), stage
    # the ONNX graphs come out of the same weights through deterministic passes: bit-equal, no tolerance
    for stage in ("quantize", "bench/baseline"):
        (ops, init), (ref_ops, ref_init) = (onnx_graph(r / stage / "model.onnx") for r in (run, ref))
        assert ops == ref_ops and init.keys() == ref_init.keys(), stage
        assert all(init[k].dtype == ref_init[k].dtype and np.array_equal(init[k], ref_init[k]) for k in init), stage
    for stage in STAGES[:-1]:  # the bench and its baseline record sizes only
        got, want = (json.loads((r / stage / "manifest.json").read_text())["metrics"] for r in (run, ref))
        assert scores(got) == scores(want) and scores(want), stage
    state, ref_state = (json.loads((r / "pipeline.json").read_text()) for r in (run, ref))
    assert {k: (v["hash"], v["gate"]) for k, v in state["stages"].items()} == \
        {k: (v["hash"], v["gate"]) for k, v in ref_state["stages"].items()}
    assert state["reference"] == ref_state["reference"] and state["report"] == str((run / "bench").resolve())
    rows, ref_rows = ({(r["name"], r["runtime"], r["target"]): (r["status"], r["accuracy"], r["macro_f1"])
                       for r in json.loads((r / "bench" / "report.json").read_text())["rows"]} for r in (run, ref))
    assert rows == ref_rows


# ---------------------------------------------------------------- the cases


def test_reference_run_covers_every_stage(reference):
    state = json.loads((reference / "pipeline.json").read_text())
    assert list(state["stages"]) == STAGES[:-1] and (reference / "bench" / "report.json").is_file()
    assert all((reference / stage / "manifest.json").is_file() for stage in STAGES[:-1] + ["bench/baseline"])


@pytest.mark.parametrize("where, sig", CASES)
def test_interrupted_run_reruns_to_the_uninterrupted_result(recipe, reference, tmp_path, where, sig):
    point = POINTS[where]
    run = tmp_path / "run"
    if point.stage != "finetune":
        start_after(reference, run, point.stage)
    # the system's temporary folder, the run's own: what a killed run leaves there is never cleared
    temp = tmp_path / "TMPDIR"
    temp.mkdir()
    env = {**ENV, "TMPDIR": str(temp)}
    code, stderr = interrupt(command(recipe, run, quiet=False), run, point, sig, env)

    assert code == EXIT[sig], stderr
    done = "report.json" if point.stage == "bench" else "manifest.json"
    assert not (run / point.stage / done).exists(), f"{point.stage} finished before the signal:\n{stderr}"
    state = json.loads((run / "pipeline.json").read_text())
    assert point.stage not in state["stages"] and "report" not in state, state  # nothing claims the stage done
    left = [p for p in scratch(run) if STAGING.match(Path(p).name)]
    if sig == signal.SIGKILL:
        # no handler runs: whatever staging() had open stays; the re-run has to deal with it
        assert bool(left) == (point.glob is not None and ".tmp-" in point.glob), left
    else:
        assert not left, left
        # an interrupted training stage keeps its checkpoints for the next run, and says where
        work = run / f".{point.stage}.work"
        trained = point.complete or point.stage == "finetune"  # a checkpoint is on disk when the signal comes
        kept = (f"; the checkpoints in {work.resolve()} are kept: the same `deploykit run` command resumes from them "
                "(remove the folder to free the space)") if trained else ""
        assert re.findall(r"error: .*", stderr) == [MESSAGE[sig] + kept], stderr  # after a progress bar's \r, maybe
        assert work.is_dir() == (point.stage in ("finetune", "distill", "prune"))
        assert "Traceback" not in stderr
    # the checkpoint the re-run must go on from: the newest one the signal left complete (none: afresh)
    work = run / f".{point.stage}.work"
    kept_checkpoint = last_checkpoint(work / "step1" if point.stage == "prune" else work, point.stage)

    again = subprocess.run(command(recipe, run, quiet=False), env=env, cwd=run.parent, capture_output=True,
                           text=True, timeout=RUN_S)
    assert again.returncode == 0, again.stderr[-3000:]
    assert_same_run(run, reference)
    if point.stage in ("finetune", "distill"):
        resumed = json.loads((run / point.stage / "manifest.json").read_text())["metrics"].get("resumed_from")
        assert resumed == (kept_checkpoint and Path(kept_checkpoint).name), (kept_checkpoint, resumed)
        assert bool(resumed) == point.complete  # the epoch-2 cases resumed; the others had nothing to resume from
    if point.stage == "prune":
        assert ("prune recovery: resuming from checkpoint-" in " ".join(again.stderr.split())) == point.complete
    left = scratch(run)
    if any(STAGING.match(Path(p).name) for p in left):
        raise StaleScratch(f"left after the re-run: {left}")
    assert not left, left
    # scratch (float exports, ORT's calibration copies) lives in the staging folder, which the re-run cleared
    # (libraries' own caches, torchinductor_<user> and a telemetry .ses file, may stay there by design)
    assert [p.name for p in temp.iterdir() if TEMPORARY.match(p.name)] == [], "left in the temporary folder"
