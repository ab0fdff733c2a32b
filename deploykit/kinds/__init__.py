"""Task kinds: everything that differs per `data.task`, in one table.

    from deploykit.kinds import kind_of
    kind = kind_of(recipe.data.task)          # a Kind (deploykit/kinds/base.py)
    task = kind.load_task(recipe.data)

A stage does what every kind shares (checks, staging, training loop, manifest, log, gate) and asks the kind for
the rest: the task data, the jobs of finetune, distill, prune, quantize and export (kinds/base.py: what is
loaded, trained, exported and how it is scored), the gate's score, bench's rows (text classifiers:
deploykit/measure/text_bench.py, with the kind's texts, scoring and columns; causal LMs: TTFT and decode tokens/s,
deploykit/llm/bench_stage.py), the predictor. A new kind is one module here with a `KIND` and one entry below;
no stage, runner or report branches on the task's name.
"""

from __future__ import annotations

import importlib

from deploykit.errors import UserError
from deploykit.models import task_of  # noqa: F401 - kinds.task_of: the kind of an artifact, beside kind_of

# data.task -> the module holding its KIND; imported on first use (a kind pulls in its own heavy libraries)
KINDS = {"classification": "deploykit.kinds.classification", "generation": "deploykit.kinds.generation",
         "token_classification": "deploykit.kinds.token_classification"}


def kind_of(task: str):
    """The `Kind` of `data.task`; UserError naming the kinds there are for an unknown one."""
    if task not in KINDS:
        raise UserError(f"data.task {task!r}: use one of {', '.join(KINDS)}")
    return importlib.import_module(KINDS[task]).KIND
