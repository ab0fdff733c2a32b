"""`deploykit bench` for causal LMs: generation speed, memory, size and task quality side by side.

    deploykit bench runs/sst2-smollm2/finetune runs/sst2-smollm2/quantize --recipe recipes/sst2-smollm2.yaml

Per artifact and target: time to first token and decode tokens/s at each batch size (deploykit/llm/
bench.py says how they are kept comparable), peak memory of a fresh process, size on disk, and exact
match / perplexity on `bench.eval_split`. PyTorch folders run on PyTorch FP32, ONNX folders on ONNX
Runtime. Where llama-cpp-python is installed, the chain's float model (the last PyTorch artifact) is
written as GGUF of each `bench.llama_cpp` type (Q8_0, Q4_K_M) and timed and scored on llama.cpp at batch 1
with the same prompts: what a CPU user would run instead (each file first decodes a prompt in a fresh process, so
that a llama.cpp crash costs its row, not the bench). With a GGUF `model.source` and `bench.baseline`,
the original GGUF file is a reference row: its own quality (its weights dequantised in PyTorch) and size.
The generation kind's `bench_report` (deploykit/kinds/generation.py): the bench stage stages the folder and
writes the reports.
"""

from __future__ import annotations

from pathlib import Path

from deploykit.config import BenchConfig, Recipe
from deploykit.console import log
from deploykit.errors import UserError

TIMED_PROMPTS = 64  # prompts cycled over the timed runs


def report(recipe: Recipe, cfg: BenchConfig, subjects: list, tmp: Path, out_dir: Path,
           baseline_source: Path | None = None) -> dict:
    """The generation report (deploykit.llm.bench.generation_report) of `subjects` (bench_plan.Subject), plus the
    llama.cpp rows (GGUF files written under the staging folder `tmp`, named relative to it) and the original
    GGUF's reference row.

    Raises:
        UserError: a `gpu` target, or a `--baseline` model that is not among the subjects (the standard-recipe
            row is a text classifier's; a causal LM is compared with llama.cpp, `bench.llama_cpp`). `deploykit run`
            passes its fine-tuned teacher, which is one of the subjects and measured as such.
    """
    from deploykit.llm.bench import GenSubject, generation_report, measure_generation, reference_row
    from deploykit.llm.data import load_chat_task, render_prompt
    from deploykit.llm.quality import evaluate_causal
    from deploykit.measure.bench_plan import target_threads
    from deploykit.models import is_gguf, load_causal_lm, load_tokenizer

    measured = {s.artifact.path.resolve() for s in subjects}
    if baseline_source is not None and Path(baseline_source).resolve() not in measured:
        raise UserError("--baseline builds the standard-recipe row of text classifiers; a causal LM is compared with "
                        "llama.cpp on its own float weights (bench.llama_cpp) and, for a GGUF model.source, with that "
                        "file: drop --baseline")
    names, artifacts = [s.name for s in subjects], [s.artifact for s in subjects]
    if "gpu" in cfg.targets:
        raise UserError("bench.targets gpu is not implemented for causal LMs yet; use cpu and edge")
    task = load_chat_task(recipe.data)
    split = task.split(cfg.eval_split).head(cfg.eval_samples)
    subjects = [GenSubject(n, a.path, runtime="torch" if a.format == "pytorch" else "ort")
                for n, a in zip(names, artifacts)]
    tokenizer = load_tokenizer(str(artifacts[0].path))
    prompts = [render_prompt(tokenizer, p, recipe.data) for p in split.prompts[:TIMED_PROMPTS]]
    threads_used = sorted({target_threads(t) for t in cfg.targets})
    subjects += [s for s in llama_cpp_subjects(cfg, artifacts, names, tmp) if runs_here(s, prompts[0], threads_used)]
    batches = sorted(set(cfg.batch_sizes))
    repeats = 2 if cfg.quick else 10
    rows = []
    for i, target in enumerate(cfg.targets):
        threads = target_threads(target)
        log(f"bench: {len(subjects)} causal LMs on {target} ({threads} threads), batch {batches}, "
            f"{cfg.new_tokens} new tokens" + (" (--quick: a smoke test, not a measurement)" if cfg.quick else ""))
        part = measure_generation(subjects, prompts, batch_sizes=batches, new_tokens=cfg.new_tokens, repeats=repeats,
                                  rounds=1 if cfg.quick else 2, threads=threads, memory=i == 0)
        rows += [{**r, "target": target} for r in part]
    quality = {}
    for s in subjects:
        log(f"bench: scoring {s.name} on {len(split)} {cfg.eval_split} prompts")
        if s.runtime == "llama.cpp":  # exact match only: the high-level API gives no logits for perplexity
            quality[s.name] = llama_cpp_quality(s, split, recipe.data)
            continue
        quality[s.name] = evaluate_causal(s.folder, split, recipe.data, runtime=s.runtime)
    if cfg.baseline and is_gguf(recipe.model.source):
        log(f"bench: scoring the original GGUF {recipe.model.source}")
        ref = evaluate_causal(load_causal_lm(recipe.model.source), split, recipe.data,
                              tokenizer=load_tokenizer(recipe.model.source))
        rows.append({**reference_row("original GGUF", recipe.model.source, exact_match=ref.get("exact_match"),
                                     perplexity=ref["perplexity"]), "label_match": ref.get("label_match"),
                     "target": None})
    for r in rows:
        if r["name"] in quality:
            q = quality[r["name"]]
            r.update(exact_match=q.get("exact_match"), label_match=q.get("label_match"), perplexity=q["perplexity"])
        if r["runtime"] == "llama.cpp" and not r.get("reference"):
            # written into the bench folder, which is still a staging folder here: say where it will be
            r["folder"] = Path(r["folder"]).relative_to(tmp).as_posix()
    note = f"exact match and perplexity on {len(split)} {cfg.eval_split} prompts of {task.source}"
    return generation_report(rows, title=recipe.name or "generation", eval_note=note)


def llama_cpp_subjects(cfg: BenchConfig, artifacts: list, names: list[str], out_dir: Path) -> list:
    """GGUF files of the chain's float model on llama.cpp, one subject per `bench.llama_cpp` type; [] (and a log
    line saying why) without llama-cpp-python, without a PyTorch artifact, or for a model GGUF cannot hold."""
    from deploykit.llm.bench import GenSubject
    from deploykit.llm.llama_cpp_gen import llama_cpp_missing

    if not cfg.llama_cpp:
        return []
    floats = [(n, a) for n, a in zip(names, artifacts) if a.format == "pytorch"]
    why = llama_cpp_missing() or (None if floats else "no PyTorch artifact among those benchmarked to write as GGUF")
    if why:
        log(f"bench: no llama.cpp rows: {why}")
        return []
    name, art = floats[-1]
    try:
        paths = write_llama_cpp_files(art.path, cfg.llama_cpp, out_dir / "llama.cpp")
    except UserError as err:  # a model type or tokenizer the GGUF writer refuses: the other rows still stand
        log(f"bench: no llama.cpp rows: {err}")
        return []
    return [GenSubject(f"{name} as GGUF {t.upper()}", path, runtime="llama.cpp",
                       note=f"{name}'s float weights written by deploykit.llm.gguf_export, run by llama-cpp-python")
            for t, path in paths.items()]


def runs_here(subject, prompt: str, threads_used: list[int]) -> bool:
    """Whether llama.cpp decodes `subject` (a GGUF file) in a fresh process at each thread count; False with a log
    line when it fails there.

    Why a trial run first: the bench times and scores llama.cpp in its own process, so a crash in llama.cpp's native
    code would end the whole bench with every other row (llama-cpp-python 0.3.36, built here, segfaults in
    llama_decode on an AMX Xeon: bench/README.md); a file that cannot run gets no row instead.
    """
    from deploykit.measure.footprint import run_child

    for threads in threads_used:
        spec = {"folder": str(subject.folder), "runtime": subject.runtime, "threads": threads, "prompts": [prompt],
                "new_tokens": 4}
        try:
            run_child("deploykit.llm.bench", spec, f"{subject.name} on {threads} threads", purpose="a llama.cpp trial run")
        except RuntimeError as err:
            log(f"bench: no llama.cpp row for {subject.name}: {err}; the other rows are measured")
            return False
    return True


def llama_cpp_quality(subject, split, data_cfg) -> dict:
    """Exact match of a llama.cpp subject (None on free-text data, which perplexity scores: no logits here)."""
    from deploykit.llm.bench import make_generator
    from deploykit.llm.quality import evaluate_causal, scored_by_exact_match
    from deploykit.measure.bench_plan import target_threads

    if not scored_by_exact_match(data_cfg):
        return {"exact_match": None, "label_match": None, "perplexity": None}
    generator = make_generator(subject.folder, subject.runtime, threads=target_threads("cpu"))
    return {**evaluate_causal(subject.folder, split, data_cfg, batch_size=1, with_perplexity=False,
                              generator=generator), "perplexity": None}


def write_llama_cpp_files(folder: Path, gguf_types: list[str], out: Path) -> dict[str, Path]:
    """`folder` (a float Llama-type causal LM) as one GGUF file per type under `out`: {type: path}."""
    import torch

    from deploykit.llm.gguf_export import write_gguf
    from deploykit.models import load_causal_lm, load_tokenizer

    out.mkdir(parents=True, exist_ok=True)
    model = load_causal_lm(str(folder), dtype=torch.float32)
    tokenizer = load_tokenizer(str(folder))
    paths = {}
    for gguf_type in gguf_types:
        path = out / f"{gguf_type}.gguf"
        report = write_gguf(model, tokenizer, path, gguf_type, name=Path(folder).name)
        log(f"bench: {path} ({gguf_type}, {report['size_bytes'] / 2**20:.1f} MB) for llama.cpp")
        paths[gguf_type] = path
    return paths
