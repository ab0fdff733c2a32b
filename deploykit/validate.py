"""`deploykit validate`: everything about a recipe that can be checked without training, one line per problem.

    deploykit validate recipes/sst2-minilm.yaml --out runs/sst2

Checks the model source (resolvable; its config.json, of a type the task's Auto class takes; in a local
folder, safetensors weights whose headers read, no tensors loaded), the data (files present, columns
named, at least two labels; the unlabelled texts KD reads), `data.max_length` against the model's positions,
the runtimes and targets the recipe asks for (CUDA, TensorRT, ONNX Runtime's CUDA provider) and the output
folders `deploykit run` would write.
"""

from __future__ import annotations

from pathlib import Path

from deploykit.config import Recipe
from deploykit.errors import UserError


def recipe_problems(recipe: Recipe, out_dir: Path | None = None) -> list[str]:
    """Every problem found, one line each; an empty list means `deploykit run` can start."""
    found: list[str] = []
    if not recipe.stages():
        from deploykit.pipeline import NO_STAGES

        found.append(NO_STAGES)
    config = _checked(found, _model_config, recipe)
    if config is not None:
        _checked(found, _local_weights, recipe)
    if recipe.data is None:
        found.append("recipe has no data section; every stage needs the task data")
    else:
        from deploykit.kinds import kind_of
        from deploykit.train.distillation import check_recovery_teacher
        from deploykit.transfer import check_unlabeled

        _checked(found, kind_of(recipe.data.task).check_run, recipe, recipe.stages())  # what `run` refuses first
        task = _checked(found, _task, recipe)
        _checked(found, check_unlabeled, recipe)
        _checked(found, check_recovery_teacher, recipe, recipe.stages())
        if config is not None:
            from deploykit.train.distillation import check_layer_choices

            _checked(found, _max_length, recipe, config, task)
            _checked(found, check_layer_choices, recipe, config)
    found += _runtimes(recipe)
    if recipe.quantize is not None and recipe.quantize.mode != "weight_only":
        from deploykit.quant.fit import warn_unfit

        warn_unfit(recipe.quantize.preset)  # a line, not a problem: building for another CPU class is allowed
    if out_dir is not None:
        from deploykit.pipeline import check_run_folders

        _checked(found, check_run_folders, out_dir, recipe.stages())
    return found


def _checked(found: list[str], check, *args):
    """Run one check; its UserError becomes a line in `found`."""
    try:
        return check(*args)
    except UserError as err:
        found.append(str(err))
        return None


def _model_config(recipe: Recipe):
    from deploykit.models import check_architecture, is_gguf, load_config, require_gguf, resolve_source

    m = recipe.model
    if is_gguf(m.source):
        # reading a GGUF file's config parses its whole header (~8 s for SmolLM2); transformers reads GGUF
        # only for causal LMs, so the file being there and readable is what is left to check
        resolve_source(m.source)
        require_gguf(m.source)
        return None
    config = load_config(m.source, trust_remote_code=m.trust_remote_code, revision=m.revision)
    check_architecture(config, recipe.data.task if recipe.data else "classification", m.source)
    return config


def _local_weights(recipe: Recipe) -> None:
    """A local model folder's safetensors weights are there and their headers read (the header holds every
    tensor's offsets, so a truncated or garbage file fails here); the tensors themselves are not read.
    Hub ids (downloaded at load time) and GGUF files are not checked."""
    import json

    from safetensors import SafetensorError, safe_open

    from deploykit.models import is_gguf, resolve_source

    source = recipe.model.source
    if is_gguf(source):
        return
    folder = Path(resolve_source(source))
    if not folder.is_dir():
        return
    from deploykit.tokenizer_files import check_tokenizer_files

    check_tokenizer_files(folder)  # as training's load_tokenizer does: without them every word reads as [UNK]
    from deploykit.models import load_tokenizer

    load_tokenizer(source, recipe.model.trust_remote_code)  # a damaged tokenizer.json, or one not this model's
    single, index = folder / "model.safetensors", folder / "model.safetensors.index.json"
    if single.is_file():
        files = [single]
    elif index.is_file():
        try:
            weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
            files = [folder / name for name in sorted(set(weight_map.values()))]
        except (ValueError, KeyError, TypeError, AttributeError) as err:
            raise UserError(f"model source {source!r}: {index} is not a safetensors index (no readable weight_map: "
                            f"{type(err).__name__}); save or download the weights again") from None
        if not files:
            raise UserError(f"model source {source!r}: {index} lists no weight files; save or download the weights again")
    else:
        other = sorted(p.name for p in folder.iterdir() if p.suffix in (".bin", ".pt", ".pth", ".h5", ".msgpack"))
        seen = f" (found {', '.join(other[:3])}: deploykit reads safetensors only)" if other else ""
        raise UserError(f"model source {source!r}: {folder} holds no model.safetensors{seen}; save the model with "
                        "save_pretrained(..., safe_serialization=True) or download its safetensors weights")
    for path in files:
        if not path.is_file():
            raise UserError(f"model source {source!r}: {path} not found (listed in {index.name}); "
                            "download the missing weight file again")
        try:
            with safe_open(str(path), "pt"):
                pass
        except (SafetensorError, OSError) as err:
            first = (str(err).strip().splitlines() or [type(err).__name__])[0][:200]
            raise UserError(f"model source {source!r}: {path} is not a readable safetensors file ({first}); "
                            "save or download the weights again") from None


def _task(recipe: Recipe):
    from deploykit.pipeline import load_any_task

    task = load_any_task(recipe.data)
    labels = getattr(task, "labels", None)
    if recipe.data.task in ("classification", "token_classification") and labels is not None and len(labels) < 2:
        raise UserError(f"data {getattr(task, 'source', '')}: the training rows hold {len(labels)} label "
                        f"({', '.join(map(str, labels))}); a classifier needs at least two")
    return task


def _max_length(recipe: Recipe, config, task) -> None:
    from deploykit.data import fit_max_length
    from deploykit.kinds import kind_of

    if (own := kind_of(recipe.data.task).check_length) is not None:  # a causal LM's: as its finetune checks
        return own(recipe, config, task)
    if recipe.data.max_length == "auto":
        return  # measured on the tokenized training rows when the run starts, within the model's positions
    fit_max_length(recipe.data.max_length, config)  # logs one line when inputs will be cut


def _runtimes(recipe: Recipe) -> list[str]:
    """What the recipe asks of this machine's hardware and packages that is missing."""
    found: list[str] = []
    if recipe.export is not None and recipe.export.format == "tensorrt":
        from deploykit.tensorrt import require_tensorrt

        _checked(found, require_tensorrt)
    if recipe.bench is not None:
        from deploykit.runtimes import unavailable

        if "gpu" in recipe.bench.targets and (why := unavailable("torch", "gpu")):
            found.append(f"bench.targets gpu: {why}")
        for runtime in recipe.bench.runtimes or []:
            if runtime in ("ort-cuda", "tensorrt") and (why := unavailable(runtime, "gpu")):
                found.append(f"bench.runtimes {runtime}: {why}")
    return found
