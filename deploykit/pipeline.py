"""The one stage table, and the runner behind `deploykit run recipe.yaml`.

    deploykit run recipes/sst2-minilm.yaml --out runs/sst2

Stages run in the fixed order of `STAGES`, each reading the previous stage's artifact and writing
`<out>/<stage>/`.
"""

from __future__ import annotations

import importlib
from pathlib import Path

from deploykit.artifact import Artifact, load_artifact
from deploykit.config import Recipe
from deploykit.errors import UserError

# stage name -> module holding its `run(recipe, parent, out_dir) -> Artifact`; imported lazily
# because torch / onnxruntime imports cost seconds that `deploykit validate` should not pay
STAGE_MODULES = {
    "finetune": "deploykit.stages.finetune",
    "distill": "deploykit.stages.distill",
    "prune": "deploykit.stages.prune",
    "quantize": "deploykit.stages.quantize",
    "export": "deploykit.stages.export",
    "bench": "deploykit.stages.bench",
}
NEEDS_INPUT = {"distill", "prune", "quantize", "export", "bench"}


def stage_function(stage: str):
    if stage not in STAGE_MODULES:
        raise UserError(f"unknown stage {stage!r} (stages: {', '.join(STAGE_MODULES)})")
    return importlib.import_module(STAGE_MODULES[stage]).run


def run_stage(stage: str, recipe: Recipe, source: str | Path | None, out_dir: Path, **options) -> Artifact:
    """Run one stage on the artifact at `source` (None: the recipe's model) into `out_dir`."""
    fn = stage_function(stage)
    parent = load_artifact(source) if source is not None else None
    if parent is None and stage in NEEDS_INPUT and not (stage == "distill" and recipe.distill.teacher):
        raise UserError(f"{stage} needs an input artifact: --from FOLDER (a previous stage's output)")
    return fn(recipe, parent, Path(out_dir), **options)
