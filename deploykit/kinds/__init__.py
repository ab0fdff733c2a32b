"""Task kinds: everything that differs per `data.task`, in one table.

    from deploykit.kinds import kind_of
    kind = kind_of(recipe.data.task)          # a Kind (deploykit/kinds/base.py)
    task = kind.load_task(recipe.data)

A stage does what every kind shares (checks, staging, training loop, manifest, log, gate) and asks the kind for
the rest: the task data, the jobs of finetune, distill, prune, quantize and export (kinds/base.py: what is
loaded, trained, exported and how it is scored), the gate's score, bench's columns and scoring, the predictor.
Causal LMs still prune, quantize, export and bench through whole-stage runners in deploykit/llm/ (KV groups,
4-bit weights, KV-cache graphs, decode timing). A new kind is one module here with a `KIND` and one entry below;
no stage, runner or report branches on the task's name.
"""

from __future__ import annotations

import importlib

from deploykit.errors import UserError

# data.task -> the module holding its KIND; imported on first use (a kind pulls in its own heavy libraries)
KINDS = {"classification": "deploykit.kinds.classification", "generation": "deploykit.kinds.generation",
         "token_classification": "deploykit.kinds.token_classification"}


def kind_of(task: str):
    """The `Kind` of `data.task`; UserError naming the kinds there are for an unknown one."""
    if task not in KINDS:
        raise UserError(f"data.task {task!r}: use one of {', '.join(KINDS)}")
    return importlib.import_module(KINDS[task]).KIND


def task_of(artifact) -> str:
    """The `data.task` an artifact was trained for, from its manifest, else its config's architecture (a stage run
    without a data section, e.g. `deploykit export --from FOLDER`, still takes the artifact's kind); classification
    when neither says."""
    import json

    data = (artifact.manifest.get("config") or {}).get("data") or {}
    task = data.get("task") if isinstance(data, dict) else None
    if task in KINDS:
        return task
    try:  # a plain Hugging Face folder: its architecture says
        archs = json.loads((artifact.path / "config.json").read_text()).get("architectures") or []
    except (OSError, ValueError, AttributeError):
        archs = []
    heads = {"ForCausalLM": "generation", "ForTokenClassification": "token_classification"}
    return next((kind for a in archs for head, kind in heads.items() if str(a).endswith(head)), "classification")
