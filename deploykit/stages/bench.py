"""`deploykit bench`: measure artifacts side by side; write report.json, report.md and report.html.

    deploykit bench runs/sst2/finetune runs/sst2/quantize --data sst2 --quick --out runs/sst2/bench
    deploykit bench runs/sst2/*/ --recipe recipes/sst2-minilm.yaml --target cpu --target edge

Every artifact of one call is measured in the same process on the same texts (deploykit/measure/benchmark.py
says how). Unless `bench.baseline` is off, a baseline row is added: the standard recipe (plain ONNX
export + ONNX Runtime dynamic INT8, avx512_vnni preset) built from `--baseline MODEL`, or else from the
fine-tuned teacher of the first PyTorch artifact, so every report shows what a user would get without
deploykit.
"""

from __future__ import annotations

import time
from pathlib import Path

from deploykit.artifact import Artifact, check_out_dir, load_artifact, staging, write_manifest
from deploykit.config import BenchConfig, Recipe
from deploykit.console import log
from deploykit.errors import UserError
from deploykit.kinds import kind_of


def run(recipe: Recipe, parent: Artifact | None, out_dir: Path) -> Artifact:
    """The pipeline stage: benchmark `parent` alone; the report folder is the returned artifact."""
    if parent is None:
        raise UserError("bench needs an input artifact: --from FOLDER (a previous stage's output)")
    manifest = {"stage": "bench", "format": "report", "parent": parent,
                "config": recipe.model_dump(include={"data", "bench"}), "metrics": {"report": "report.json"}}
    report_dir = run_many(recipe, [parent.path], out_dir, baseline_source=None, manifest=manifest)
    return load_artifact(report_dir)


def run_many(recipe: Recipe, artifact_paths: list[Path], out_dir: Path, baseline_source: Path | None = None,
             manifest: dict | None = None) -> Path:
    """Measure every artifact in `artifact_paths` (plus the baseline) and write the reports.

    The whole folder (baseline, reports, manifest) is written through `staging`: an interrupted bench
    leaves no half-written folder, and an earlier report stays as it was.

    Args:
        recipe: needs `data` (the texts and the accuracy labels); `bench` defaults to BenchConfig().
        artifact_paths: stage output folders, HF model folders or .onnx files.
        out_dir: the report folder (report.json, report.md, report.html, PNG plots, baseline/).
        baseline_source: a PyTorch model folder to build the standard-recipe baseline from.
        manifest: `write_manifest` keyword arguments, for the pipeline stage's report folder.

    Returns:
        The report folder.
    """
    cfg = recipe.bench or BenchConfig()
    if recipe.data is None:
        raise UserError("bench needs data for its texts and accuracy: --data NAME_OR_PATH or a data section")
    if not artifact_paths:
        raise UserError("bench: give at least one artifact folder to measure")
    artifacts = [_checked(a) for a in map(load_artifact, artifact_paths) if not _is_report(a)]
    if not artifacts:
        raise UserError("bench: none of the folders given holds a model (only bench reports)")
    # a new or empty folder, or an earlier report (never --force); replaced as a whole at the end
    out_dir = check_out_dir(out_dir, "bench")
    with staging(out_dir) as tmp:
        _measure(recipe, cfg, artifacts, baseline_source, tmp, out_dir)
        if manifest is not None:
            write_manifest(tmp, **manifest)
    return out_dir


def _max_length(recipe: Recipe, artifact: Artifact, task) -> int:
    """The length `artifact` was trained with (auto), or the recipe's, within its positions."""
    from transformers import AutoTokenizer

    from deploykit.data import fit_max_length

    if recipe.data.max_length != "auto":
        return fit_max_length(recipe.data.max_length, artifact.path)
    return fit_max_length("auto", artifact.path, AutoTokenizer.from_pretrained(artifact.path), task,
                          recorded=artifact.manifest.get("max_length"))


def _measure(recipe: Recipe, cfg: BenchConfig, artifacts: list[Artifact], baseline_source: Path | None,
             tmp: Path, out_dir: Path) -> None:
    """Build the baseline and write the reports into `tmp`, staging's folder that becomes `out_dir`."""
    from deploykit.measure.bench_plan import Settings
    from deploykit.measure.benchmark import measure
    from deploykit.measure.report import write_reports

    kind = kind_of(recipe.data.task)
    if (own := kind.runner("bench")) is not None:
        subjects = _subjects(artifacts)
        own(recipe, [s.artifact for s in subjects], [s.name for s in subjects], tmp)
        return
    task = kind.load_task(recipe.data)
    if cfg.eval_split == "test" and task.test is None:
        raise UserError(f"data {task.source}: no test split to benchmark on; set bench.eval_split=validation "
                        "(or add a test file, or data.test_split)")
    # the texts every row is timed on, and how a row is scored (None: accuracy of the split's labels)
    split, score = kind.bench_texts(recipe, task, cfg.eval_split) if kind.bench_texts else (
        task.split(cfg.eval_split), None)
    subjects = _subjects(artifacts)
    baseline, teacher = _baseline(cfg, artifacts, baseline_source, tmp / "baseline")
    if baseline is not None:
        subjects.append(baseline)
    peer = None
    if teacher is not None and score is None:
        peer = _openvino_peer(recipe, cfg, teacher, task, tmp / "openvino")
    elif teacher is not None and cfg.openvino_peer:
        log(f"bench: no OpenVINO + NNCF peer row: it is built for text classifiers, not data.task {kind.name}")
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
    report = _report(recipe, cfg, result, teacher, peer is not None, kind.bench_metrics)
    paths = write_reports(report, tmp)
    for row in result["rows"]:
        if row["status"] == "skipped":
            log(f"bench: skipped {row['name']} / {row['runtime']} / {row['target']}: {row['note']}")
    log(f"[green]bench[/green]: {len(result['rows'])} rows -> {out_dir / paths['html'].name}")


def _is_report(artifact: Artifact) -> bool:
    # `deploykit bench runs/x/*/` also matches an earlier report folder; that is not a model
    if artifact.format == "report":
        log(f"bench: skipping {artifact.path} (a bench report, not a model)")
    return artifact.format == "report"


def _checked(artifact: Artifact) -> Artifact:
    if artifact.format == "onnx" and not artifact.onnx_path.is_file():
        raise UserError(f"{artifact.path}: manifest says onnx but {artifact.onnx_path.name} is missing")
    if artifact.format not in ("pytorch", "onnx", "openvino", "tensorrt"):
        raise UserError(f"{artifact.path}: a {artifact.format} folder is not a model to benchmark")
    return artifact


def _subjects(artifacts: list[Artifact]):
    """Display names: the stage that wrote the artifact, else its folder name; made unique."""
    from deploykit.measure.bench_plan import Subject

    subjects, seen = [], set()
    for art in artifacts:
        name = art.stage or art.path.name
        if name in seen:
            name = art.path.name if art.path.name not in seen else f"{name}-{len(seen) + 1}"
        seen.add(name)
        subjects.append(Subject(name, art))
    return subjects


def fine_tuned_teacher(artifacts: list[Artifact]) -> Artifact | None:
    """The first PyTorch artifact's fine-tuned ancestor: follow manifest parents up to the finetune
    stage. A PyTorch folder without a manifest is taken as the user's own fine-tuned model."""
    art = next((a for a in artifacts if a.format == "pytorch"), None)
    while art is not None and art.stage not in (None, "finetune"):
        parent = (art.manifest.get("parent") or {}).get("path")
        art = load_artifact(parent) if parent and Path(parent).exists() else None
        if art is not None and art.format != "pytorch":
            return None
    return art


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


def _openvino_peer(recipe: Recipe, cfg: BenchConfig, teacher: Path, task, out_dir: Path):
    """The OpenVINO IR + NNCF static INT8 row built from the same teacher as the baseline, or None (off, or
    openvino/nncf missing: one log line)."""
    from deploykit.measure.bench_plan import Subject
    from deploykit.quant.ov_peer import calibration_rows, openvino_nncf_peer, peer_missing

    if not cfg.openvino_peer:
        return None
    why = peer_missing()
    if why:
        log(f"bench: no OpenVINO + NNCF peer row: {why}")
        return None
    rows = task.train.take(calibration_rows(len(task.train), recipe.data.seed))
    log(f"bench: building the OpenVINO + NNCF INT8 peer from {teacher} ({len(rows)} calibration rows)")
    art = openvino_nncf_peer(teacher, out_dir, rows.texts, rows.pairs, _max_length(recipe, load_artifact(teacher), task))
    return Subject("openvino-nncf", art, baseline=True)


def _report(recipe: Recipe, cfg: BenchConfig, result: dict, teacher: Path | None, peer: bool = False,
            metrics: tuple[tuple[str, str], ...] = (("accuracy", "accuracy %"), ("macro_f1", "macro-F1 %"))) -> dict:
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
