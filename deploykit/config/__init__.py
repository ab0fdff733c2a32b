"""Recipe schema: one pydantic model per YAML section, `extra="forbid"` everywhere.

A recipe file *is* these models: `finetune:` in YAML is `FinetuneConfig`, read by
`deploykit/stages/finetune.py::run`. Load one with overrides the way the CLI does:

    recipe = load_recipe("recipes/sst2-minilm.yaml", ["finetune.epochs=2"])
"""

from __future__ import annotations

from pathlib import Path

import yaml
from pydantic import Field, ValidationError, field_validator, model_validator

from deploykit.config.base import STAGES, AutoOrPositive, Section
from deploykit.config.data import TASK_FIELDS, TEXT_FIELDS, DataConfig, ModelConfig
from deploykit.config.stages import (
    GATE_METRICS,
    BenchConfig,
    DistillConfig,
    ExportConfig,
    FinetuneConfig,
    GateConfig,
    HeadlineConfig,
    LoraConfig,
    PruneConfig,
    QuantizeConfig,
    TensorRTConfig,
    TrainConfig,
    UnlabeledConfig,
)
from deploykit.errors import UserError
from deploykit.overrides import _set_dotted, format_validation_error, parse_override
from deploykit.yaml12 import DuplicateKeyError, read_yaml

# the recipe's public schema: every section, importable from deploykit.config
__all__ = ["STAGES", "AutoOrPositive", "Section", "TASK_FIELDS", "TEXT_FIELDS", "DataConfig", "ModelConfig",
           "GATE_METRICS", "BenchConfig", "DistillConfig", "ExportConfig", "FinetuneConfig", "GateConfig",
           "HeadlineConfig", "LoraConfig", "PruneConfig", "QuantizeConfig", "TensorRTConfig", "TrainConfig",
           "UnlabeledConfig", "Recipe", "build_recipe", "load_recipe", "parse_override"]


class Recipe(Section):
    name: str | None = None
    model: ModelConfig = Field(default_factory=ModelConfig)
    data: DataConfig | None = None
    gate: GateConfig = Field(default_factory=GateConfig)
    finetune: FinetuneConfig | None = None
    distill: DistillConfig | None = None
    prune: PruneConfig | None = None
    quantize: QuantizeConfig | None = None
    export: ExportConfig | None = None
    bench: BenchConfig | None = None

    @field_validator("prune")
    @classmethod
    def _ratios(cls, v: PruneConfig | None) -> PruneConfig | None:
        if v is not None:
            for unit in ("ffn", "width", "heads", "depth"):
                r = getattr(v, unit)
                if not 0.0 <= r < 1.0:
                    raise ValueError(f"prune.{unit}={r} must be in [0, 1)")
        return v

    @model_validator(mode="after")
    def _gate_fits_task(self) -> Recipe:
        if self.data is None:
            return self
        allowed = GATE_METRICS[self.data.task]
        if "metric" not in self.gate.model_fields_set and self.gate.metric not in allowed:
            self.gate.metric = allowed[0]  # the documented default for the task
        if self.gate.metric not in allowed:
            needs = next((t for t, ms in GATE_METRICS.items() if ms == (self.gate.metric,)), None)
            if needs is not None:
                raise ValueError(f"gate.metric {self.gate.metric} needs data.task: {needs}")
            raise ValueError(f"gate.metric {self.gate.metric} does not apply to data.task {self.data.task}; "
                             f"set gate.metric: {' or '.join(allowed)}")
        return self

    @model_validator(mode="after")
    def _unlabeled_fits_task(self) -> Recipe:
        # a causal LM's KD reads the teacher's top-k logits of reference responses, which unlabelled texts lack
        task = self.data.task if self.data is not None else None
        for stage in ("distill", "prune"):
            section = getattr(self, stage)
            if section is None or section.unlabeled is None:
                continue
            if task not in ("classification", "token_classification"):
                raise ValueError(f"{stage}.unlabeled is read by data.task classification and token_classification "
                                 f"(this recipe's task: {task}); remove it")
        if self.prune is not None and self.prune.unlabeled is not None and self.prune.vocab:
            raise ValueError("prune.unlabeled with prune.vocab: the vocabulary is cut to the training texts' pieces, "
                             "so unlabelled texts would recover on [UNK]; set prune.vocab false or remove unlabeled")
        return self

    @model_validator(mode="after")
    def _gguf_reads_pytorch(self) -> Recipe:
        if self.export is not None and self.export.format == "gguf" and self.quantize is not None:
            raise ValueError("export.format gguf writes the PyTorch model (llama.cpp quantizes it itself: "
                             "export.gguf_type); after quantize its input would be the INT8 ONNX graph: drop quantize")
        return self

    def stages(self) -> list[str]:
        """The stages present in this recipe, in the fixed order they run.

        With a quantize section, an ONNX `export:` section configures quantize's own float export (the
        graph it quantizes) rather than running as a stage of its own: after quantize it would only copy
        the INT8 graph. An export to TensorRT builds its engine from quantize's output and stays a stage.
        """
        exported_by_quantize = self.quantize is not None and self.export is not None and self.export.format == "onnx"
        return [s for s in STAGES if getattr(self, s) is not None and not (s == "export" and exported_by_quantize)]


def build_recipe(tree: dict | None, overrides: list[str] | None = None, origin: str = "recipe") -> Recipe:
    tree = dict(tree or {})
    # a bare `bench:` (None in YAML) means "this stage, with its defaults"
    for stage in STAGES:
        if stage in tree and tree[stage] is None:
            tree[stage] = {}
    for item in overrides or []:
        key, value = parse_override(item)
        _set_dotted(tree, key, value, f"--set {item}")
    # ...while `--set bench=null` removes the stage
    tree = {k: v for k, v in tree.items() if not (k in STAGES and v is None)}
    try:
        return Recipe.model_validate(tree)
    except ValidationError as err:
        raise UserError(format_validation_error(err, origin, overrides)) from None


def load_recipe(path: str | Path, overrides: list[str] | None = None) -> Recipe:
    """Read a recipe YAML, apply dotted `key=value` overrides, validate. Raises UserError in one line."""
    path = Path(path)
    if path.is_dir():
        raise UserError(f"{path}: is a folder; give the recipe's .yaml file (e.g. recipes/tiny-ci.yaml)")
    if not path.is_file():
        raise UserError(f"{path}: recipe file not found")
    try:
        tree = read_yaml(path.read_text(encoding="utf-8"))
    except DuplicateKeyError as err:
        raise UserError(f"{path} {err}") from None
    except UnicodeDecodeError as err:
        raise UserError(f"{path}: not UTF-8 text (byte {err.start} is 0x{err.object[err.start]:02x}); save the "
                        "recipe as UTF-8") from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise UserError(f"{path}:{where}: not valid YAML ({getattr(err, 'problem', err)})") from None
    if tree is not None and not isinstance(tree, dict):
        raise UserError(f"{path}: a recipe is a mapping of sections (model, data, finetune, ...)")
    return build_recipe(tree, overrides, origin=str(path))
