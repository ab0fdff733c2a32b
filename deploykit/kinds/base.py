"""What a task kind supplies (`Kind`); the jobs it gives the stages live in deploykit/jobs.py."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from deploykit.jobs import DistillJob, ExportJob, Job, PruneJob, QuantizeJob


@dataclass(frozen=True)
class Kind:
    """One `data.task`: its data, the jobs every stage asks it for, its gate score and its bench rows.

    Attributes:
        name: the `data.task` value.
        metric: the quality figure logs and reports lead with ("accuracy", "exact_match").
        load_task: DataConfig -> the task's splits (deploykit.data.TaskData or a chat task).
        finetune_job: (recipe, model source) -> Job.
        distill_job: (recipe, teacher source, parent artifact or None) -> DistillJob; None: distill refuses the kind.
        prune_job: (recipe, model source, parent artifact or None) -> PruneJob (with the kind's cut);
            None: prune refuses the kind.
        quantize_job: (recipe, parent artifact) -> QuantizeJob (deploykit/jobs.py: the float graph, INT8 tries,
            scores, ranking); None: quantize refuses the kind.
        export_job: (recipe, PyTorch parent artifact) -> ExportJob for its ONNX export; None: export refuses the
            kind.
        gate_value: (recipe, artifact, task data) -> the gate metric of `artifact` on `recipe.gate.split`.
        gguf_job: (recipe, PyTorch parent artifact) -> ExportJob writing one GGUF file for llama.cpp (export's
            `format: gguf`); None: the kind has no GGUF writer (only causal LMs have one).
        bench_report: (recipe, bench config, subjects, staging folder, out_dir, baseline source or None) -> the
            report dict of `deploykit bench` (deploykit/measure/report.py); None: deploykit.measure.text_bench's
            rows (latency/throughput per runtime, the standard-recipe and OpenVINO peers), which read
            `bench_texts`, `bench_metrics` and `predictor` below.
        check_run: (recipe, stage names) -> None; raises UserError for a chain this kind cannot gate.
        predictor: (artifact, runtime=, threads=, device=, max_length=) -> what `deploykit.load` gives for a
            folder of this kind; None: the text classifier's `deploykit.predictor.ClassifierPredictor`.
        bench_metrics: the quality columns of a bench report, (row key, column label); the first one leads
            (plots, headline).
        find_file: (data folder, split name, data.<split>_file) -> the file that split is read from, or None: what
            deploykit/fingerprint.py records; None: deploykit.data's finder (.tsv, .csv, .jsonl).
        check_length: (recipe, model config, task data) -> None; raises UserError for a `data.max_length` the
            kind's training would refuse (`deploykit validate` calls it); None: the classifiers' check
            (deploykit.data.fit_max_length: within the model's positions, `auto` measured at run start).
        bench_texts: (recipe, task data, split name) -> (the texts bench times, as a deploykit.data.Split, and
            score(predict, tokenizer, artifact, max_length, batch_size, n) -> {metric: value, "eval_n": rows} of the
            first n rows);
            None: the split itself, scored by accuracy (text classification).
    """

    name: str
    metric: str
    load_task: Callable[[Any], Any]
    finetune_job: Callable[[Any, str], Job]
    gate_value: Callable[[Any, Any, Any], float]
    distill_job: Callable[[Any, str, Any], DistillJob] | None = None
    prune_job: Callable[[Any, str, Any], PruneJob] | None = None
    quantize_job: Callable[[Any, Any], QuantizeJob] | None = None
    export_job: Callable[[Any, Any], ExportJob] | None = None
    gguf_job: Callable[[Any, Any], ExportJob] | None = None
    bench_report: Callable[..., dict] | None = None
    check_run: Callable[[Any, list[str]], None] = lambda recipe, stages: None
    predictor: Callable[..., Any] | None = None
    bench_metrics: tuple[tuple[str, str], ...] = (("accuracy", "accuracy %"), ("macro_f1", "macro-F1 %"))
    bench_texts: Callable[[Any, Any, str], tuple[Any, Callable[..., dict]]] | None = None
    find_file: Callable[[Any, str, str | None], Any] | None = None
    check_length: Callable[[Any, Any, Any], None] | None = None

    def bench(self, recipe, cfg, subjects: list, tmp, out_dir, baseline_source=None) -> dict:
        """The bench report's dict for `subjects` (deploykit.measure.bench_plan.Subject), models built on the way
        (baseline, peers, GGUF files) written under the staging folder `tmp`, rows naming them under `out_dir`."""
        if self.bench_report is not None:
            return self.bench_report(recipe, cfg, subjects, tmp, out_dir, baseline_source)
        from deploykit.measure.text_bench import report

        return report(self, recipe, cfg, subjects, tmp, out_dir, baseline_source)
