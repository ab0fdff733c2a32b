"""What a model folder's lineage says it was trained with: the length, single texts or pairs, windows.

    trained_length(load_artifact("runs/sst2/quantize"), config, tokenizer, None)   # 64, from the manifests

An export or quantize folder records only its own section; its parent (when still there) trained the model,
so each answer walks the folder's manifest, then its parents'. `deploykit.load` reads these.
"""

from __future__ import annotations

import json
from pathlib import Path

from deploykit.artifact import Artifact
from deploykit.console import log, warn
from deploykit.errors import UserError

FALLBACK_LENGTH = 512  # a model with no position table and a tokenizer with no limit


def check_room(max_length: int, tokenizer, pairs: bool, what: str = "data.max_length") -> None:
    """UserError when `max_length` leaves no token of a text (or of either text of a pair) beside the tokenizer's
    special tokens: the tokenizer would cut a pair's second text away whole, or hand on longer rows."""
    least = tokenizer.num_special_tokens_to_add(pair=pairs) + (2 if pairs else 1)
    if max_length < least:
        room = "a token of each text of a sentence pair" if pairs else "a token of the text"
        raise UserError(f"{what}={max_length} leaves no room for {room} beside the tokenizer's "
                        f"{least - (2 if pairs else 1)} special tokens; use at least {least}")


def trained_length(artifact: Artifact, config, tokenizer, asked: int | None) -> int:
    """`asked`, else the manifest's max_length (or its recipe's data.max_length, or its parent's), else the
    model's position limit; always cut to what the position table holds (`data.fit_max_length`)."""
    from deploykit.data import fit_max_length

    if asked is not None:
        if not isinstance(asked, int) or isinstance(asked, bool) or asked < 1:
            raise UserError(f"max_length={asked!r} must be a positive integer")
        check_room(asked, tokenizer, pairs=trained_on_pairs(artifact) is True, what="max_length")
        return fit_max_length(asked, config, tokenizer)
    for manifest in _lineage(artifact):
        length = manifest.get("max_length", ((manifest.get("config") or {}).get("data") or {}).get("max_length"))
        if isinstance(length, int) and not isinstance(length, bool) and length > 0:
            return fit_max_length(length, config, tokenizer)
    limit = getattr(tokenizer, "model_max_length", None)
    limit = fit_max_length(limit if isinstance(limit, int) and 0 < limit < 1_000_000 else FALLBACK_LENGTH, config,
                           tokenizer)
    # SST-2's final cut at 48 tokens and at 512 gave opposite labels to one long review: a folder copied without its
    # manifest.json answers otherwise than it did, and says so
    warn(f"warning: {artifact.path} does not record the length its model was trained with (no deploykit "
        f"manifest.json): texts are cut at {limit} tokens, the model's limit; for a deploykit output, copy its "
        "manifest.json with the model files; in Python, deploykit.load(..., max_length=N) sets the length")
    return limit


def trained_on_pairs(artifact: Artifact) -> bool | None:
    """True/False from the first recipe in the folder's lineage that has a data section; None without one."""
    data = _data_section(artifact)
    return None if data is None else data["text_pair_column"] is not None


def trained_columns(artifact: Artifact) -> tuple[str | None, str | None]:
    """(data.text_column, data.text_pair_column) of the recipe that trained the folder's model: the columns a
    file given to `deploykit predict` is read by default; (None, None) when the folder does not say."""
    data = _data_section(artifact) or {}
    text, pair = data.get("text_column"), data.get("text_pair_column")
    if not (isinstance(text, str) and text) or not (pair is None or isinstance(pair, str) and pair):
        return None, None  # a manifest that does not say in a readable way (hand-edited, damaged)
    return text, pair


def trained_template(artifact: Artifact) -> str | None:
    """The `data.prompt_template` a causal LM was fine-tuned with (its manifest's, else its parents'; in each, the
    recipe's data section, else the `columns` an export or quantize carried on), or None: `deploykit predict
    --generate` fills it from a file's columns, as training did.

    Raises:
        UserError: the template recorded is not one data.prompt_template takes now (a manifest written before the
            recipe check: '{instruction.upper}', an unclosed '{').
    """
    from deploykit.config.data import check_prompt_template

    for manifest in _lineage(artifact):
        data, columns = (manifest.get("config") or {}).get("data"), manifest.get("columns")
        source = data if isinstance(data, dict) and "prompt_template" in data else columns
        if isinstance(source, dict) and "prompt_template" in source:
            template = source["prompt_template"]
            if not (isinstance(template, str) and template):
                return None
            try:
                return check_prompt_template(template)
            except ValueError as err:
                raise UserError(f"{artifact.path}: the prompt_template its manifest records, {template!r}, cannot "
                                f"be filled: {err}; fix prompt_template in the manifest.json") from None
    return None


def check_task(recipe, artifact: Artifact | None) -> None:
    """UserError when `artifact` holds another kind of model than the recipe's `data.task` (a text classifier given
    to a causal-LM recipe, or the other way): every stage after finetune, and bench, reads it as the recipe's kind,
    and would fail late on its missing head or its tokenizer, or measure it on the wrong task."""
    from deploykit.models import TASK_MODELS, stated_task

    if artifact is None or recipe.data is None:
        return
    held = stated_task(artifact)
    if held is not None and held != recipe.data.task:
        raise UserError(f"{artifact.path}: holds a {TASK_MODELS[held][0]} (data.task {held}), but the recipe's "
                        f"data.task is {recipe.data.task}; give a {TASK_MODELS[recipe.data.task][0]} folder, or the "
                        f"recipe that trained this model (--set data.task={held})")


def fit_columns(recipe, parent: Artifact | None):
    """`recipe` with the text columns its input model was trained on, where its data section leaves them unset:
    a stage reading a pair model's data as single texts would calibrate and gate it on the first texts alone.

    Raises:
        UserError: the recipe names sentence pairs for a model of single texts, or sets
            data.text_pair_column null for a model of pairs.
    """
    data = recipe.data
    if parent is None or data is None or data.task != "classification":
        return recipe
    text, pair = trained_columns(parent)
    if text is None:
        return recipe  # a folder that does not say
    given = data.model_fields_set
    if pair is None and data.text_pair_column is not None:
        raise UserError(f"data.text_pair_column {data.text_pair_column!r}: {parent.path} was trained on single texts "
                        f"({text}); drop data.text_pair_column")
    if pair is not None and data.text_pair_column is None and "text_pair_column" in given:
        raise UserError(f"data.text_pair_column is null, but {parent.path} was trained on sentence pairs ({text}, "
                        f"{pair}); name the second text's column")
    updates = {field: value for field, value in (("text_column", text), ("text_pair_column", pair))
               if field not in given and getattr(data, field) != value}
    fitted = {"text_column": data.text_column, "text_pair_column": data.text_pair_column, **updates}
    if fitted["text_column"] == fitted["text_pair_column"]:  # one of the two given, the other filled the same
        raise UserError(f"data.text_column and data.text_pair_column would both be {fitted['text_column']!r}; "
                        f"name both columns of the pairs ({parent.path} was trained on {text}, {pair})")
    if not updates:
        return recipe
    log(f"data: {', '.join(f'{k} {v}' for k, v in updates.items())}, as {parent.path} was trained")
    return recipe.model_copy(update={"data": data.model_copy(update=updates)})


def _data_section(artifact: Artifact) -> dict | None:
    """The text columns of the recipe that trained the model: a manifest's own data section, else the `columns`
    it carries from its parent (artifact.write_manifest), else its parents' (an older folder)."""
    for manifest in _lineage(artifact):
        data = (manifest.get("config") or {}).get("data")
        if isinstance(data, dict) and "text_pair_column" in data:
            return data
        if isinstance(manifest.get("columns"), dict) and "text_pair_column" in manifest["columns"]:
            return manifest["columns"]
    return None


def _lineage(artifact: Artifact):
    """The folder's manifest, then its parents' (4 manifests at most): an export folder records only its own
    section, its parent (when still there) trained the model."""
    folder, manifest, hops = Path(artifact.path), artifact.manifest, 0
    while isinstance(manifest, dict) and hops < 4:
        yield manifest
        folder = recorded_folder(manifest.get("parent"), "path", folder)
        manifest, hops = manifest_of(folder) if folder is not None else None, hops + 1


def manifest_of(folder: Path) -> dict | None:
    """The folder's manifest.json as a dict; None where it has none that reads as one."""
    try:
        manifest = json.loads((folder / "manifest.json").read_text())
    except (OSError, ValueError):
        return None
    return manifest if isinstance(manifest, dict) else None


def teacher_record(manifest: dict) -> dict | None:
    """A distilled model's `teacher` record, given the hash of its `parent` record where the teacher is the parent
    (records written before teachers carried a hash): `recorded_folder` then finds it in a run folder moved whole."""
    record, parent = manifest.get("teacher"), manifest.get("parent")
    if not isinstance(record, dict):
        return None
    if ("hash" not in record and isinstance(parent, dict) and parent.get("hash")
            and parent.get("path") == record.get("source")):
        return {**record, "hash": parent["hash"]}
    return record


def recorded_folder(record, key: str, beside: Path) -> Path | None:
    """The model folder a manifest's record names (`parent` by its `path`, `teacher` by its `source`), where that
    model still is: the recorded absolute path, else the folder of the same name beside `beside` (the folder whose
    manifest holds the record), as in a run folder copied or moved whole; None when neither holds it.

    Where the record carries the model's manifest `hash`, a folder counts only with that hash: a path reused by
    another run's model is not the one recorded. Without one (a model from elsewhere, an older record) the recorded
    path counts as it is and a folder beside does not.
    """
    path = record.get(key) if isinstance(record, dict) else None
    if not isinstance(path, str) or not path:
        return None
    want = record.get("hash")
    candidates = [Path(path)] if Path(path).is_absolute() else []
    if want is not None:  # absolute(): the folder beside "." is its parent's child, not "./name"
        candidates.append(Path(beside).absolute().parent / Path(path).name)
    for folder in candidates:
        if folder.is_dir() and (want is None or (manifest_of(folder) or {}).get("hash") == want):
            return folder
    return None


def trained_stride(artifact: Artifact, max_length: int, tokenizer) -> int | None:
    """The window overlap the model was trained and scored with (`data.long_texts: windows`), else None.

    The first manifest in the lineage that records `window_stride` (stages write it, later ones inherit it)
    gives it; a stride too large for `max_length` (one cut by `max_length=` or an engine profile) is lowered
    to the largest a window of that length takes, rather than refused.
    """
    for manifest in _lineage(artifact):
        stride = manifest.get("window_stride")
        if isinstance(stride, int) and not isinstance(stride, bool) and stride >= 0:
            room = max_length - tokenizer.num_special_tokens_to_add(pair=False)
            return max(0, min(stride, room - 1))
    return None


def warn_if_left_over(artifact: Artifact) -> None:
    """Warn when `artifact` is a stage folder of a `deploykit run` folder that its run no longer lists: a later run
    of a recipe without that stage replaced what it was built on (the pipeline drops it from pipeline.json and
    says so once; a model loaded from it later would otherwise be served as the run's, silently)."""
    from deploykit.artifact import RUN_STATE

    folder = artifact.path.resolve()
    state_file = folder.parent / RUN_STATE
    if not state_file.is_file():
        return
    try:
        stages = json.loads(state_file.read_text()).get("stages", {})
    except (OSError, ValueError, AttributeError):
        return
    if folder.name not in stages and (folder / "manifest.json").is_file():
        warn(f"warning: {folder} is left from an earlier recipe of the run in {folder.parent}: a later run replaced "
             "what it was built on, and its pipeline.json no longer lists it; rerun with this stage in the recipe "
             "to rebuild it")
