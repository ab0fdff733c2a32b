"""`deploykit bench`: measure artifacts side by side; write report.json, report.md and report.html.

    deploykit bench runs/sst2/finetune runs/sst2/quantize --data sst2 --quick --out runs/sst2/bench
    deploykit bench runs/sst2/*/ --recipe recipes/sst2-minilm.yaml --target cpu --target edge

Every artifact of one call is measured in the same process on the same texts. This module is the stage: it
picks the artifacts, names them, stages the report folder and writes the reports once; the rows come from the
recipe's kind (`Kind.bench`). Text and token classifiers (deploykit/measure/text_bench.py): latency,
throughput, memory, size and quality per runtime and target, beside the standard recipe (plain ONNX export + ONNX
Runtime dynamic INT8, avx512_vnni preset, built from `--baseline MODEL` or else the fine-tuned teacher of the
first PyTorch artifact) and the OpenVINO + NNCF peer, so every report shows what a user would get without
deploykit. Causal LMs (deploykit/llm/bench_stage.py): TTFT and decode tokens/s, beside llama.cpp.
"""

from __future__ import annotations

from pathlib import Path

from deploykit.artifact import Artifact, check_out_dir, load_artifact, staging, write_manifest
from deploykit.config import BenchConfig, Recipe
from deploykit.console import log
from deploykit.errors import UserError
from deploykit.kinds import kind_of
from deploykit.lineage import check_task, fit_columns, warn_if_left_over


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
    loaded = [a for a in map(load_artifact, artifact_paths) if not _is_report(a)]
    for artifact in loaded:  # a stage folder a later run of another recipe left behind is benched as itself
        warn_if_left_over(artifact)
    artifacts = [_checked(a) for a in loaded]
    if not artifacts:
        raise UserError("bench: none of the folders given holds a model (only bench reports)")
    _check_distinct(artifacts)
    for artifact in artifacts:  # pairs for pair models; models of single texts and of pairs are never mixed
        check_task(recipe, artifact)
        recipe = fit_columns(recipe, artifact)
    # a new or empty folder, or an earlier report (never --force); replaced as a whole at the end
    out_dir = check_out_dir(out_dir, "bench")
    with staging(out_dir) as tmp:
        _measure(recipe, cfg, artifacts, baseline_source, tmp, out_dir)
        if manifest is not None:
            write_manifest(tmp, **manifest)
    return out_dir


def _measure(recipe: Recipe, cfg: BenchConfig, artifacts: list[Artifact], baseline_source: Path | None,
             tmp: Path, out_dir: Path) -> None:
    """Ask the recipe's kind for the report's rows and write the reports into `tmp`, staging's folder that becomes
    `out_dir` (text classifiers: deploykit/measure/text_bench.py; causal LMs: deploykit/llm/bench_stage.py)."""
    from deploykit.measure.report import write_reports

    report = kind_of(recipe.data.task).bench(recipe, cfg, _subjects(artifacts), tmp, out_dir, baseline_source)
    paths = write_reports(report, tmp)
    log(f"bench: {len(report['rows'])} rows -> {out_dir / paths['html'].name}", head="green")


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


def _check_distinct(artifacts: list[Artifact]) -> None:
    """UserError for a model given twice (`deploykit bench runs/x/*/ runs/x/quantize`, or a folder and its .onnx
    file): it would be measured twice under two names, as if two models, and take twice the time."""
    seen = set()
    for art in artifacts:
        key = (art.path.resolve(), art.onnx_path.resolve() if art.format == "onnx" else None)
        if key in seen:
            raise UserError(f"bench: the model in {art.path} is given twice; give each model once")
        seen.add(key)


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
