"""The stage sections of a recipe (finetune, distill, prune, quantize, export, bench) and the gate.

Each is read by the stage of the same name: `prune:` is `PruneConfig`, read by deploykit/stages/prune.py.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator

from deploykit.config.base import AutoOrPositive, Section, absolute_path


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
    min_epochs: float = Field(
        1.0, ge=0, description="early stopping cannot end training before this many epochs (or the whole budget, "
                               "if shorter): evaluations during warm-up and at the schedule's highest learning rates "
                               "wobble; a prune recovery stopped at epoch 0.75 on a 0.001 loss wobble lost 4 pt "
                               "(bench/README.md, run 17)")
    cooldown: bool = Field(
        False, description="where patience is spent, go back to the best evaluation's weights and train as many "
                            "steps as patience waited with the learning rate falling linearly to 0, then stop (the "
                            "best evaluation of the whole run is kept). The schedule spans the budget, so an early "
                            "stop otherwise ends near the peak rate. Each stage it ran in scored higher on "
                            "validation (AG News teacher +0.7 pt on test), but the finals did not follow (AG News "
                            "-0.7, SST-2 -0.2 on test), so it is off by default (bench/README.md, run 56)")
    stop_on: Literal["metric", "loss"] = Field(
        "metric", description="what early stopping and the kept checkpoint follow on the validation rows: the "
                              "task's metric (accuracy, entity F1; causal LMs: always the loss) or the stage's "
                              "own validation loss")
    group_by_length: bool | Literal["auto"] = Field(
        "auto", description="batches of rows of similar length (drawn from shuffled groups of 50 batches): far less "
                            "padding on data of mixed lengths; auto: on when the data spans >= 4 such groups")
    batch_order: Literal["longest_first", "random"] = Field(
        "longest_first", description="order of the length-grouped batches: longest_first = transformers' (each "
                                     "group of 50 from its longest batch to its shortest, so an epoch ends on short "
                                     "rows); random = the same batches shuffled (CoNLL-2003: the student 0.23 F1 "
                                     "closer to the teacher, run 27; SST-2: prune recovery stopped at epoch 1.25 "
                                     "and the final lost 2.2 pt more, run 28; bench/README.md)")
    bf16: Literal["auto", "on", "off"] = Field(
        "auto", description="bf16 autocast for the training steps: auto = on where it trains faster (a CUDA GPU "
                            "with native bf16, a CPU with AMX), off elsewhere (AVX512_BF16 alone measured 0.75x "
                            "float32's speed); on: anywhere, emulated where not native")
    seed: int = Field(42, ge=0, le=2**32 - 1, description="training seed (torch, numpy and Python; numpy takes 0 to 2**32 - 1)")
    logging_steps: int = Field(50, ge=1)
    tensorboard: bool = False

    @field_validator("max_steps")
    @classmethod
    def _steps_or_minus_one(cls, value: int) -> int:
        # 0 and -5 were read as -1 (no cap) without a word: a budget the user thought they set
        if value == 0 or value < -1:
            raise ValueError("should be a number of optimizer steps >= 1, or -1 for the epochs' budget")
        return value

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


class UnlabeledConfig(Section):
    """Unlabelled texts a KD stage adds to its training rows (Hinton et al. 2015's "transfer set"): the teacher's
    logits are their only target, so the student learns the teacher's answers on text beyond the labelled rows.

    `name` is a file under the data dir (data.data_dir, else $DEPLOYKIT_DATA_DIR), `path` a file anywhere:
    .tsv/.csv/.jsonl with a header row (else `column_names`), or .txt with one text per line.
    """

    name: str | None = Field(None, description="a file under the data dir, e.g. agnews/dev.tsv")
    path: str | None = Field(None, description="a file path (.tsv, .csv, .jsonl, .txt)")
    text_column: str = Field("text", description="the column holding the texts (not read for .txt)")
    column_names: list[str] | None = Field(None, description="column names for files without a header row")
    max_rows: int | None = Field(None, ge=1, description="a seeded sample of this many texts (data.seed); "
                                                         "default: all")

    _absolute = field_validator("path")(absolute_path)

    @model_validator(mode="after")
    def _one_source(self) -> UnlabeledConfig:
        if (self.name is None) == (self.path is None):
            raise ValueError("give exactly one of unlabeled.name (a file under the data dir) or unlabeled.path")
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
    # a student imitates the teacher: its KD + CE loss on held-out rows keeps falling while it still gets closer,
    # where accuracy on 2,000 phrases plateaus and stopped SST-2's student at epoch 2, 3.3 pt short on test
    # (bench/README.md, run 13); the validation loss ends training only once the student stops generalising
    stop_on: Literal["metric", "loss"] = Field(
        "loss", description="loss (the default): early stopping and the kept checkpoint follow the distillation "
                            "loss on the validation rows (KD + CE against the teacher's logits); metric: the "
                            "task's metric")
    topk: int = Field(32, ge=0, description="generation: teacher logits kept per response token (0: full vocabulary, "
                                            "live teacher); use temperature 1 with a top-k teacher")
    unlabeled: UnlabeledConfig | None = Field(
        None, description="classifiers: unlabelled texts added to the training rows, taught by the teacher's "
                          "logits alone (deploykit/transfer.py)")

    @model_validator(mode="after")
    def _unlabeled_needs_kd(self) -> DistillConfig:
        if self.unlabeled is not None and not self.alpha_kd:
            raise ValueError("distill.unlabeled texts are taught by the teacher's logits: set alpha_kd above 0")
        return self

    @field_validator("student_layers")
    @classmethod
    def _layers_in_order(cls, layers: list[int] | None) -> list[int] | None:
        # the student keeps them in the teacher's order whatever the list says: [5, 3, 1] would be built as [1, 3, 5]
        # (repeats and indices out of range are named against the model's layer count: layers.check_indices)
        if (layers and min(layers) >= 0 and len(set(layers)) == len(layers)
                and any(b <= a for a, b in zip(layers, layers[1:]))):
            raise ValueError(f"list the teacher layers in increasing order, as {sorted(layers)}: the student keeps "
                             "them in the teacher's order")
        return layers


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
    distill_from_parent: bool = Field(True, description="recovery distils (KD + CE) rather than fine-tuning on the "
                                                        "labels alone; from whom: recovery_teacher")
    recovery_teacher: Literal["auto", "parent", "teacher"] = Field(
        "auto", description="whom recovery distils from: parent = the unpruned model; teacher = the model the "
                            "parent was distilled from, as the parent's manifest names it (a distilled student's "
                            "fine-tuned teacher); auto = teacher where the parent names one and at most half the "
                            "validation rows occur inside training texts (the teacher has fitted those), else "
                            "parent (deploykit/stages/prune.py recovery_teacher)")
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
    unlabeled: UnlabeledConfig | None = Field(
        None, description="classifiers: unlabelled texts added to the recovery rows, taught by the recovery "
                          "teacher's logits alone (recovery_teacher; needs recovery and distill_from_parent)")

    @model_validator(mode="after")
    def _hidden_kd_needs_a_parent(self) -> PruneConfig:
        for what, on in (("hidden_kd", self.hidden_kd), ("unlabeled", self.unlabeled is not None),
                         ("recovery_teacher: teacher", self.recovery_teacher == "teacher")):
            if on and (self.recovery is None or not self.distill_from_parent):
                raise ValueError(f"prune.{what} needs a recovery section and distill_from_parent: true")
        if self.recovery_teacher == "teacher" and self.hidden_kd:
            raise ValueError("prune.hidden_kd maps each kept layer to the unpruned model's layer it was, not to the "
                             "teacher's: set recovery_teacher: parent or hidden_kd: 0")
        return self


class QuantizeConfig(Section):
    """`deploykit quantize --int8`: ONNX Runtime INT8, dynamic or static QDQ, with an accuracy gate."""

    mode: Literal["dynamic", "static", "weight_only"] = Field(
        "dynamic", description="weight_only: blockwise MatMulNBits weights (causal LMs), `bits` wide")
    bits: Literal[2, 4, 8] = Field(8, description="weight width for mode weight_only")
    block_size: int = Field(128, ge=16, description="weights per scale for mode weight_only")
    symmetric: bool = Field(True, description="weight_only: blocks without zero points; false stores one per block "
                                              "(4-bit SmolLM2: 84.5 exact match vs 83.0 symmetric)")
    fallback_bits: Literal[4, 8, 16] | None = Field(
        None, description="the gate stores the weights of the most sensitive MatMuls this wide instead of float; "
                          "weight_only: 4 or 8-bit blocks (symmetric); dynamic/static: the nodes compute in float from "
                          "8-bit (per output channel, dequantized every call) or 16-bit (float16, cast once at load) "
                          "weights; null keeps them float")
    # 7-bit weights by default: every CPU computes them exactly (AVX2's u8 x s8 pair sums cannot saturate), so the
    # graph answers alike wherever it is deployed; 8-bit ones lost nothing measurable on a CPU with VNNI (SST-2, CoNLL:
    # bench/README.md, "Thirty-third session") and saturate on one without, where deploykit.load refuses them
    preset: Literal["auto", "avx512_vnni", "avx2", "arm64", "tensorrt"] = Field(
        "avx2", description="avx2: 7-bit weights, the same answers on every CPU; avx512_vnni / arm64: 8-bit weights for "
                            "CPUs with VNNI / ARM only (refused on others); auto: this CPU's; tensorrt: symmetric int8 "
                            "Q/DQ (mode static) for TensorRT engines")
    calibration: Literal["minmax", "entropy", "percentile"] = "minmax"
    calibration_samples: int = Field(256, ge=1)
    calibration_seq_len: int = Field(64, ge=8)
    per_channel: bool = True
    op_types: list[str] | None = Field(None, description="operator types to quantize; default per mode")
    float_outputs: bool = Field(True, description="mode static: INT8 MatMul/Gemm write float results instead of "
                                                  "re-quantizing them (fewer Q/DQ nodes; bench/README.md: 13% faster "
                                                  "at batch 1 on the SST-2 final graph); false: ONNX Runtime's default")
    float_attention: bool = Field(True, description="mode static with float_outputs: the attention products (Q·Kᵀ, "
                                                    "softmax·V: MatMuls of two activations) stay float, the linear "
                                                    "layers INT8 (bench/README.md, twenty-eighth session); false: "
                                                    "INT8 too (ORT's dynamic mode keeps them float anyway)")
    optimize: bool = Field(True, description="fuse the float graph (ORT transformer optimizer) before quantizing")
    max_drop: float = Field(0.5, ge=0, description="accuracy points the INT8 model may lose vs its float parent")
    max_float_nodes: int = Field(16, ge=0, description="give up after keeping this many nodes in float "
                                                       "(or fallback_bits wide)")
    min_float_nodes: int = Field(0, ge=0, description="the gate's first try already keeps this many of the most "
                                                      "sensitive nodes float (or fallback_bits wide)")

    @model_validator(mode="after")
    def _fallback_wider(self) -> QuantizeConfig:
        if self.min_float_nodes > self.max_float_nodes:
            raise ValueError(f"min_float_nodes {self.min_float_nodes} exceeds max_float_nodes {self.max_float_nodes}")
        if self.fallback_bits is None:
            return self
        if self.mode == "weight_only" and not self.bits < self.fallback_bits <= 8:
            raise ValueError(f"fallback_bits {self.fallback_bits} must exceed bits {self.bits} and be at most 8 in "
                             "mode weight_only")
        if self.mode != "weight_only" and self.fallback_bits not in (8, 16):
            raise ValueError(f"fallback_bits {self.fallback_bits}: mode {self.mode} stores sensitive nodes' weights "
                             "in 8 or 16 bits (or float: null)")
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
    """`deploykit export`: ONNX (checked against PyTorch, fused), a TensorRT engine, or for Llama-type causal LMs
    one GGUF file for llama.cpp (deploykit/llm/gguf_export.py).

    In a recipe with a quantize section, `format: onnx` settings are those of quantize's float export (the
    graph it quantizes) and no export stage runs; `format: tensorrt` runs after quantize on its INT8 graph.
    """

    format: Literal["onnx", "tensorrt", "gguf"] = "onnx"
    gguf_type: Literal["f16", "q8_0", "f32", "q2_k", "q3_k_m", "q4_k_s", "q4_k_m", "q5_k_s", "q5_k_m", "q6_k"] = Field(
        "f16", description="format gguf: f16 (default: what llama.cpp's converter writes and its quantizer reads; "
        "checked token for token), q8_0 (half the size; greedy agreement gated by gguf_min_agreement), f32; the "
        "K-quants need llama.cpp's llama-quantize on PATH")
    gguf_min_agreement: float = Field(0.85, ge=0, le=1, description="format gguf: the least share of positions along "
                                      "the PyTorch model's greedy answers to the parity prompts where the file predicts "
                                      "the same next token (SmolLM2 q8_0: 0.909, one flip in 11; the margin lets a "
                                      "near tie flip on a few prompts)")
    opset: int = Field(17, ge=17)
    atol: float = Field(1e-4, gt=0)
    optimize: bool = True
    trim_last_layer: bool = Field(True, description="classifiers: the last layer computes only position 0, the "
                                  "token the head reads (keys and values still see every token): the same logits "
                                  "for less work; BERT, RoBERTa, ELECTRA, DistilBERT (others export whole)")
    remove_padding: bool = Field(True, description="classifiers: the encoder runs on the batch's real tokens only "
                                 "(gathered after the embeddings, spread to the padded layout for attention), the last layer "
                                 "on position 0: the same logits, no work on padding; same architectures, right "
                                 "padding, an attention_mask input (else the trim alone)")
    parity_samples: int = Field(64, ge=1)
    tensorrt: TensorRTConfig = Field(default_factory=TensorRTConfig)


class HeadlineConfig(Section):
    """The bars `deploykit run`'s headline checks the final artifact against, vs the fine-tuned teacher and the
    fastest peer; each unset bar is the kind's default (deploykit/measure/headline.py TARGETS, GENERATION_TARGETS)."""

    accuracy_drop_max: float | None = Field(None, ge=0, description="points of the report's lead metric "
                                                                    "(accuracy, entity F1) the final may lose")
    latency_speedup_min: float | None = Field(None, gt=0, description="batch-1 p50 vs the teacher, at least")
    throughput_gain_min: float | None = Field(None, gt=0, description="largest-batch throughput vs the teacher")
    vs_baseline_speedup_min: float | None = Field(None, gt=0, description="batch-1 p50 vs the fastest peer row")
    size_ratio_max: float | None = Field(None, gt=0, description="size on disk vs the teacher, at most")
    e2e_ratio_max: float | None = Field(None, gt=0, description="text in, label out vs the model alone, batch 1")
    exact_match_drop_max: float | None = Field(None, ge=0, description="generation: exact-match points")
    decode_speedup_min: float | None = Field(None, gt=0, description="generation: decode tokens/s vs the teacher")
    vs_llama_cpp_decode_min: float | None = Field(
        None, gt=0, description="generation: decode tokens/s vs llama.cpp Q4_K_M of the same float model (its fastest "
                                "llama.cpp row otherwise), at no lower exact match; checked where that row exists")


class BenchConfig(Section):
    """`deploykit bench`: latency, throughput, memory, size and accuracy per artifact x runtime x target."""

    targets: list[Literal["cpu", "edge", "gpu"]] = Field(default_factory=lambda: ["cpu"], min_length=1)
    runtimes: list[Literal["torch", "torch-bf16", "ort", "ort-cuda", "openvino", "tensorrt"]] | None = Field(
        None, description="default: every runtime that applies to each artifact")
    batch_sizes: list[Annotated[int, Field(ge=1)]] = Field(default_factory=lambda: [1, 8, 32], min_length=1)
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
    llama_cpp: list[Literal["f16", "q8_0", "q4_k_m", "q5_k_m", "q6_k"]] = Field(
        default_factory=lambda: ["q8_0", "q4_k_m"],
        description="generation: the chain's float model written as GGUF of these types and timed and scored on "
                    "llama.cpp beside deploykit's rows (batch 1), where llama-cpp-python is installed; [] = off")
    quick: bool = False
    # a bar belongs to the recipe: SST-2's ratios checked on another task's headline read as "met" or "missed"
    # for a target nobody set for it
    headline: HeadlineConfig = Field(default_factory=HeadlineConfig)


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
