"""What `deploykit bench` measures for text classifiers and token classifiers (the kinds' default `bench` hook):
every artifact on every runtime and target on the same texts, beside the standard-recipe baseline and the
OpenVINO + NNCF peer built from the same fine-tuned teacher, as a report dict (deploykit/measure/report.py).

The bench stage (deploykit/stages/bench.py) picks the artifacts, stages the folder and writes the reports; this
module builds the rows. Timing and scoring rules: deploykit/measure/benchmark.py. A kind's `bench_texts` says
which texts are timed and how a row is scored (None: accuracy of the split's labels); its `bench_metrics` name
the report's quality columns.
"""

from __future__ import annotations

import time
from pathlib import Path

from deploykit.artifact import Artifact, load_artifact
from deploykit.config import BenchConfig, Recipe
from deploykit.console import log
from deploykit.errors import UserError
from deploykit.lineage import recorded_folder


def report(kind, recipe: Recipe, cfg: BenchConfig, subjects: list, tmp: Path, out_dir: Path,
           baseline_source: Path | None = None) -> dict:
    """Measure `subjects` (deploykit.measure.bench_plan.Subject) plus the baseline and peer rows.

    Args:
        kind: the recipe's Kind (its `load_task`, `bench_texts`, `bench_metrics`, `predictor`).
        tmp: the staging folder the baseline and peer models are written into; rows name them under `out_dir`,
            where they will be once the stage has finished.
        baseline_source: a PyTorch model folder to build the standard-recipe baseline from; None: the first
            PyTorch artifact's fine-tuned ancestor.

    Returns:
        The report dict `write_reports` takes (title, created, machine, method, rows).

    Raises:
        UserError: no test split when `bench.eval_split` is test; a baseline source that is not PyTorch.
    """
    from deploykit.measure.bench_plan import Settings
    from deploykit.measure.benchmark import measure

    task = kind.load_task(recipe.data)
    if cfg.eval_split == "test" and task.test is None:
        raise UserError(f"data {task.source}: no test split to benchmark on; set bench.eval_split=validation "
                        "(or add a test file, or data.test_split)")
    for subject in subjects:  # before any time is spent: scores against other labels would read as a result
        _check_labels(subject.artifact, task.labels)
    # the texts every row is timed on, and how a row is scored (None: accuracy of the split's labels)
    split, score = kind.bench_texts(recipe, task, cfg.eval_split) if kind.bench_texts else (
        task.split(cfg.eval_split), None)
    subjects = list(subjects)
    if baseline_source is not None:  # a causal LM given read "lacks score.weight ... copy the weights again"
        _check_baseline(load_artifact(baseline_source), recipe.data.task, task.labels)
    baseline, teacher = _baseline(cfg, [s.artifact for s in subjects], baseline_source, tmp / "baseline")
    if baseline is not None:
        subjects.append(baseline)
    peer = None
    if teacher is not None:
        # calibrated on training rows as the bench times its split: text (a tagger's words joined by spaces)
        train = kind.bench_texts(recipe, task, "train")[0] if kind.bench_texts else task.train
        peer = _openvino_peer(recipe, cfg, teacher, task, train, tmp / "openvino")
    if peer is not None:
        subjects.append(peer)
    settings = Settings.from_config(cfg)
    scored = min(len(split), settings.eval_samples or len(split))
    log(f"bench: {len(subjects)} artifacts x {', '.join(settings.targets)}, timed on {len(split)} {cfg.eval_split} "
        f"texts, scored on {'all ' if scored == len(split) else ''}{scored}"
        + (" (--quick: a smoke test, not a measurement)" if cfg.quick else ""))
    max_length = min(_max_length(recipe, s.artifact, task) for s in subjects)  # what all can take
    result = measure(subjects, split, settings, max_length, score=score, predictor=kind.predictor)
    staged = str(tmp.resolve())
    for row in result["rows"]:  # the baseline's row names where it will be, not the temporary folder
        if str(row.get("artifact", "")).startswith(staged):
            row["artifact"] = str(out_dir) + row["artifact"][len(staged):]
        if row["status"] == "skipped":
            log(f"bench: skipped {row['name']} / {row['runtime']} / {row['target']}: {row['note']}")
    return _report(recipe, cfg, result, teacher, peer is not None, kind.bench_metrics)


def _check_labels(artifact: Artifact, labels: list[str], what: str = "bench") -> None:
    """UserError for a model whose labels (config.json's id2label, in id order) are not the data's: a sentiment
    model scored on AG News read 22% and a 1000-class one 0%, as results, and the wrong one became the teacher row.
    A folder without config.json is left to the predictor's own message."""
    from deploykit.labels import check_labels
    from deploykit.load_checks import check_logits_width
    from deploykit.models import load_config

    folder = artifact.path.resolve()
    if (folder / "config.json").is_file():
        config = load_config(str(folder))
        check_labels(config, labels, f"{what}: {folder}" if what == "bench" else what,
                     fix="bench a model on the data it was trained on (--data, or its own recipe)")
        check_logits_width(artifact, config.num_labels)  # before any timing, as the predictor does at load


def _check_baseline(artifact: Artifact, task: str, labels: list[str]) -> None:
    """UserError for a --baseline model of another task kind or other labels than the data's."""
    from deploykit.models import TASK_MODELS, stated_task

    given = stated_task(artifact)
    if given is not None and given != task:
        raise UserError(f"--baseline {artifact.path}: a {TASK_MODELS[given][0]}, and this bench scores a "
                        f"{TASK_MODELS[task][0]}; give the fine-tuned {TASK_MODELS[task][0]} the artifacts came from")
    _check_labels(artifact, labels, f"--baseline {artifact.path}")


def _max_length(recipe: Recipe, artifact: Artifact, task) -> int:
    """The length `artifact` was trained with (auto), or the recipe's, within its positions."""
    from transformers import AutoTokenizer

    from deploykit.data import fit_max_length

    if recipe.data.max_length != "auto":
        return fit_max_length(recipe.data.max_length, artifact.path)
    return fit_max_length("auto", artifact.path, AutoTokenizer.from_pretrained(artifact.path), task,
                          recorded=artifact.manifest.get("max_length"))


def fine_tuned_teacher(artifacts: list[Artifact]) -> Artifact | None:
    """The fine-tuned ancestor of the first PyTorch artifact, else of the first artifact (`deploykit bench
    runs/x/quantize` alone): follow manifest parents up to the finetune stage. A PyTorch folder without a manifest
    is taken as the user's own fine-tuned model; an ONNX one without a manifest gives None."""
    art = next((a for a in artifacts if a.format == "pytorch"), artifacts[0] if artifacts else None)
    while art is not None and art.stage not in (None, "finetune"):
        parent = recorded_folder(art.manifest.get("parent"), "path", Path(art.path))
        art = load_artifact(parent) if parent is not None else None
    return art if art is not None and art.format == "pytorch" else None


def _baseline(cfg: BenchConfig, artifacts: list[Artifact], source: Path | None, out_dir: Path):
    """(the baseline Subject, the model it was built from), or (None, None) when there is none."""
    from deploykit.measure.bench_plan import Subject

    if source is None and not cfg.baseline:
        return None, None
    teacher = load_artifact(source) if source is not None else fine_tuned_teacher(artifacts)
    if teacher is None:
        log("bench: no baseline row: no fine-tuned PyTorch model among the artifacts or their parents "
            "(pass --baseline MODEL_FOLDER, or set bench.baseline=false)")
        return None, None
    if teacher.format != "pytorch":
        raise UserError(f"--baseline {source}: the baseline is built from a PyTorch model folder, "
                        f"not a {teacher.format} artifact")
    from deploykit.quant.baseline import standard_baseline

    log(f"bench: building the standard-recipe baseline from {teacher.path}")
    return Subject("baseline", standard_baseline(teacher.path, out_dir), baseline=True), teacher.path


def _openvino_peer(recipe: Recipe, cfg: BenchConfig, teacher: Path, task, train, out_dir: Path):
    """The OpenVINO IR + NNCF static INT8 row built from the same teacher as the baseline, calibrated on rows of
    `train` (a Split of texts), or None (off, or openvino/nncf missing: one log line)."""
    from deploykit.measure.bench_plan import Subject
    from deploykit.quant.ov_peer import calibration_rows, openvino_nncf_peer, peer_missing

    if not cfg.openvino_peer:
        return None
    why = peer_missing()
    if why:
        log(f"bench: no OpenVINO + NNCF peer row: {why}")
        return None
    rows = train.take(calibration_rows(len(train), recipe.data.seed))
    log(f"bench: building the OpenVINO + NNCF INT8 peer from {teacher} ({len(rows)} calibration rows)")
    art = openvino_nncf_peer(teacher, out_dir, rows.texts, rows.pairs, _max_length(recipe, load_artifact(teacher), task))
    return Subject("openvino-nncf", art, baseline=True)


def _report(recipe: Recipe, cfg: BenchConfig, result: dict, teacher: Path | None, peer: bool,
            metrics: tuple[tuple[str, str], ...]) -> dict:
    from deploykit.artifact import library_versions
    from deploykit.hardware import describe
    from deploykit.quant.ov_peer import CALIBRATION_ROWS

    recipe_text = "standard recipe (plain ONNX + ONNX Runtime dynamic INT8, avx512_vnni preset)"
    method = {**result["method"], "split": cfg.eval_split, "quick": cfg.quick, "metrics": [list(m) for m in metrics],
              "baseline": None if teacher is None else f"{recipe_text}, built from {teacher}",
              "peer": "openvino-nncf: plain ONNX export -> OpenVINO IR -> NNCF static INT8 (ModelType.TRANSFORMER, "
                      f"{CALIBRATION_ROWS} training rows), built from the same teacher" if peer else None}
    return {
        "title": recipe.name or (recipe.data.name or Path(recipe.data.path or "").name),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": {**describe(), "versions": library_versions()},
        "method": method,
        "rows": result["rows"],
    }
