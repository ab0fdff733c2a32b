"""Use what deploykit made: `deploykit.load(folder)` gives a predictor shaped like HF's text-classification pipeline.

    import deploykit
    clf = deploykit.load("runs/sst2-minilm/quantize")    # ONNX Runtime for ONNX folders, torch for PyTorch ones
    clf(["a fine film", "a dull one"])                 # [{'label': 'positive', 'score': 0.98}, {'label': 'negative', ...}]
    clf("a fine film", top_k=None)                     # every label, best first
    clf.logits([("a premise", "a hypothesis")])        # float32 [1, labels]
    gen = deploykit.load("runs/sst2-smollm2/quantize")  # a causal LM: deploykit.llm.generate's generator
    gen.generate([prompt], max_new_tokens=16)
    ner = deploykit.load("runs/conll-minilm/export")      # a token classifier: entity groups (deploykit/ner/predict.py)

What a raw session would leave to the caller happens inside: the artifact's own tokenizer, truncation to
the length the model was trained on, int64 inputs, `token_type_ids` (zeros) for graphs that want them when
the tokenizer gives none, rows sorted by length into batches (results come back in input order), and
dynamic-INT8 graphs scored one row at a time (`evaluate.eval_batch_size`: their activation scales span the
batch, so a row's answer would depend on its neighbours). A model trained with `data.long_texts: windows`
(its manifest records `window_stride`) scores a long text as windows and answers with the mean of their logits
(deploykit/windows.py).
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from deploykit.artifact import Artifact, load_artifact
from deploykit.encoding import encoder_for
from deploykit.errors import UserError
from deploykit.lineage import check_room, trained_length, trained_on_pairs, trained_stride, warn_if_left_over
from deploykit.load_checks import (check_int8_fits, check_logits_width, check_threads, check_tokenizer_files, is_blank,
                                   logits_width_fault, resolve_runtime, unicode_fault)
from deploykit.runtimes import READS

FUNCTIONS = ("softmax", "sigmoid", "none")


def load(path: str | Path, runtime: str = "auto", threads: int | None = None, device: str | None = None,
         max_length: int | None = None):
    """A predictor for any folder deploykit writes (or a plain HF classifier folder, or a bare .onnx file).

    Args:
        path: a stage output (PyTorch, ONNX FP32/INT8, TensorRT), a HF folder or a .onnx file beside its
            config.json and tokenizer.
        runtime: "auto" (ONNX Runtime for ONNX folders, torch for PyTorch ones, TensorRT for engines), or
            one of torch, torch-bf16, ort, ort-cuda, openvino, tensorrt. A causal LM takes auto, ort or torch.
        threads: intra-op threads; None leaves the runtime's default (all cores). torch's is process-wide. ONNX
            Runtime's idle threads spin after a call, as ORT's own default (~30 ms of a core; 1.2-1.4x faster at batch 1
            on 2 threads than with spinning off, bench/README.md "Run 39"). ONNX Runtime calls flush denormals
            to zero (masked attention ran batch 32 1.24x slower without it): ORT's pool threads, and the calling
            thread for the length of each call only; the caller's own float math keeps them (deploykit/fpenv.py).
        device: None or "cpu"; "cuda" runs torch on the GPU and picks ort-cuda for ONNX folders.
        max_length: truncation length; default the one the model was trained with.

    Returns:
        A `ClassifierPredictor`; for a causal LM the `deploykit.llm.generate` generator (`.generate`); for a token
        classifier the `deploykit.ner.predict.EntityPredictor` (entity groups, as the token-classification pipeline).

    Raises:
        UserError: one line for a missing folder, a folder that holds no model or no tokenizer files (or a
            tokenizer far smaller than the model's vocabulary), an unknown or unavailable runtime, or an option
            a causal LM does not take; for an INT8 graph quantized for a CPU with VNNI when this CPU has none,
            so that ONNX Runtime would saturate its products (deploykit/quant/fit.py).
    """
    from deploykit.kinds import kind_of, task_of

    artifact = load_artifact(path)
    check_int8_fits(artifact, runtime, device, openvino_takes_it=not is_causal_lm(artifact))
    warn_if_left_over(artifact)
    if is_causal_lm(artifact):
        return _load_generator(artifact, runtime, threads, device, max_length)
    # a kind with its own outputs (a token classifier's entity groups) loads its own predictor
    if (own := kind_of(task_of(artifact)).predictor) is not None:
        return own(artifact, runtime=runtime, threads=threads, device=device, max_length=max_length)
    return ClassifierPredictor(artifact, runtime=runtime, threads=threads, device=device, max_length=max_length)


def is_causal_lm(artifact: Artifact) -> bool:
    """True for a decoder folder: its config names a *ForCausalLM architecture, or its recipe task is generation,
    or it holds a GGUF export (only causal LMs are written as GGUF)."""
    if artifact.format == "gguf":
        return True
    data = (artifact.manifest.get("config") or {}).get("data") or {}
    if isinstance(data, dict) and data.get("task") == "generation":
        return True
    return any(a.endswith("ForCausalLM") for a in _archs(artifact))


def _archs(artifact: Artifact) -> list[str]:
    """The architectures the folder's config.json names ([] without a readable one)."""
    try:
        config = json.loads((artifact.path / "config.json").read_text())
    except (OSError, ValueError):
        return []
    archs = config.get("architectures") if isinstance(config, dict) else None
    return [str(a) for a in archs or []] if isinstance(archs, list) else []


def _load_generator(artifact: Artifact, runtime: str, threads: int | None, device: str | None,
                    max_length: int | None):
    from deploykit.llm.generate import load_generator

    if runtime not in ("auto", "ort", "torch"):
        raise UserError(f"{artifact.path}: a causal LM runs on runtime auto, ort or torch, not {runtime!r}")
    check_threads(threads)
    if device not in (None, "cpu"):
        raise UserError(f"{artifact.path}: a causal LM runs on the CPU here (device={device!r} is not supported)")
    if max_length is not None:
        raise UserError(f"{artifact.path}: max_length applies to classifiers; a causal LM takes max_new_tokens "
                        "in generate()")
    if artifact.format == "gguf":  # the file carries its tokenizer; transformers reads it dequantised, for torch
        if runtime == "ort":
            raise UserError(f"{artifact.path}: a GGUF export runs on runtime torch here (or in llama.cpp), not ort")
        return load_generator(artifact.path / artifact.manifest.get("gguf_file", "model.gguf"), threads=threads)
    if runtime == "torch" and artifact.format == "onnx":
        raise UserError(f"{artifact.path}: holds an ONNX graph, not PyTorch weights; use runtime ort (or auto)")
    check_tokenizer_files(artifact.path)
    return load_generator(artifact.path, runtime=runtime, threads=threads)


class ClassifierPredictor:
    """A text classifier folder loaded into one runtime; call it like `pipeline("text-classification")`.

    Attributes:
        name: the folder's name (the model name a server publishes).
        labels: id2label in id order.
        runtime: torch, torch-bf16, ort, ort-cuda, openvino or tensorrt.
        batch_invariant: False for a graph that quantizes activations at run time (dynamic INT8): a row's
            logits would depend on its batch neighbours, so such a graph is scored one row at a time.
        max_length: inputs are truncated to this many tokens (the trained length), or cut into windows of it.
        window_stride: tokens consecutive windows share when the model was trained on windows (its manifest
            records `window_stride`): a text's logits are then the mean of its windows'; None truncates.
        trained_on_pairs: whether the recipe that trained the model read sentence pairs
            (data.text_pair_column); None when the folder does not say.
    """

    def __init__(self, artifact: Artifact | str | Path, runtime: str = "auto", threads: int | None = None,
                 device: str | None = None, max_length: int | None = None):
        from deploykit.evaluate import eval_batch_size
        from deploykit.models import load_config, load_tokenizer
        from deploykit.runtimes import Unavailable, load_runtime, unavailable

        artifact = artifact if isinstance(artifact, Artifact) else load_artifact(artifact)
        folder = artifact.path.resolve()
        if not (folder / "config.json").is_file():
            raise UserError(f"{folder}: no config.json beside the model; the labels and the tokenizer's model "
                            "are read from it (copy it from the folder the model came from)")
        check_threads(threads)
        self.runtime = resolve_runtime(artifact.format, runtime, device)
        on_gpu = self.runtime in ("ort-cuda", "tensorrt") or str(device).startswith("cuda")
        why = unavailable(self.runtime, "gpu") if on_gpu else None
        if why:
            hint = "; runtime ort runs the ONNX it was built from" if artifact.format == "tensorrt" else ""
            raise UserError(f"{folder}: runtime {self.runtime} cannot run here: {why}{hint}")
        self.name = folder.name
        self.config = load_config(str(folder))
        self.labels = [str(self.config.id2label[i]) for i in range(self.config.num_labels)]
        self.tokenizer = load_tokenizer(str(folder))  # refuses missing files and a vocabulary too small
        check_logits_width(artifact, len(self.labels))
        target = artifact if artifact.format in READS[self.runtime] else Artifact(
            artifact.path, {**artifact.manifest, "format": READS[self.runtime][0]})
        try:
            loaded = load_runtime(target, self.runtime, threads, device=_torch_device(self.runtime, device))
        except Unavailable as err:
            raise UserError(f"{folder}: runtime {self.runtime} cannot run here: {err}") from None
        loaded.prepare(threads)
        self._predict = loaded.predict
        self._max_batch = None
        onnx = artifact.onnx_path if target.format == "onnx" else None
        self.batch_invariant = eval_batch_size(onnx) > 1
        self.max_length = trained_length(artifact, self.config, self.tokenizer, max_length)
        self.trained_on_pairs = trained_on_pairs(artifact)
        self._pairs_warned = False
        if self.runtime == "tensorrt":
            self._fit_engine_profile(artifact)
        self.window_stride = trained_stride(artifact, self.max_length, self.tokenizer)
        self._encode, self._encoded_as = None, None
        self._default_function = self._function(None)

    def _fit_engine_profile(self, artifact: Artifact) -> None:
        """An engine takes only the shapes its optimization profile covers: cap batches and lengths to its
        maximum, pad short batches to its minimum sequence length."""
        profile = ((artifact.metrics.get("engine") or {}).get("profile") or {})
        (_, min_seq), (max_batch, max_seq) = profile.get("min", (1, 1)), profile.get("max", (None, None))
        self._max_batch = max_batch
        if max_seq:
            self.max_length = min(self.max_length, int(max_seq))
        self._predict = _padded_to(self._predict, int(min_seq), self.tokenizer.pad_token_id or 0)

    def __repr__(self) -> str:
        return (f"ClassifierPredictor({self.name!r}, runtime={self.runtime!r}, labels={self.labels}, "
                f"max_length={self.max_length}, window_stride={self.window_stride}, batch_invariant={self.batch_invariant})")

    def logits(self, inputs, batch_size: int = 32) -> np.ndarray:
        """Raw model outputs, one row per input, in input order.

        Args:
            inputs: a str, a (text, text_pair) tuple, a {"text", "text_pair"} dict, or a list of one kind. A
                tuple is ONE sentence pair, as in the pipeline: `clf(("a", "b"))` scores one input, and warns
                once when the model was trained on single texts; give two texts as a list `["a", "b"]`.
            batch_size: rows per forward pass (1 whatever is asked for a graph that is not batch-invariant).

        Returns:
            float32 array [rows, len(labels)]; with `window_stride` set, row i is the mean of the logits of
            input i's windows (one window, and the truncated answer, for a text that fits).

        Raises:
            UserError: an empty list, an input that is not text, pairs mixed with single texts, pairs given to
                a model that scores windows.
        """
        texts, pairs = _rows(inputs)
        return self._logits(texts, pairs, batch_size)

    def _logits(self, texts: list[str], pairs: list[str] | None, batch_size: int) -> np.ndarray:
        from deploykit.data import Split
        from deploykit.evaluate import predict

        if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
            raise UserError(f"batch_size={batch_size!r} must be a positive integer")
        if not self.batch_invariant:
            batch_size = 1
        if self._max_batch:
            batch_size = min(batch_size, int(self._max_batch))
        if message := self.pair_warning(pairs is not None):
            warnings.warn(message, stacklevel=3)
        if pairs is not None:
            check_room(self.max_length, self.tokenizer, pairs=True, what="max_length")
        split = Split(texts, pairs, [0] * len(texts))
        if self.window_stride is not None:
            from deploykit.windows import score

            # no log line: a server would print one per request
            logits = score(self._predict, split, self.tokenizer, self.max_length, self.window_stride, batch_size,
                           announce=False)
        else:
            logits = predict(self._predict, split, self.tokenizer, self.max_length, batch_size, encoder=self._encoder())
        if logits.shape[-1] != len(self.labels):  # a runtime whose output width the load could not read
            raise UserError(logits_width_fault(self.name, logits.shape[-1], len(self.labels)))
        return logits.astype(np.float32)

    def _encoder(self):
        """encoding.encoder_for this predictor's tokenizer and max_length, made again when either was changed."""
        tok = self.tokenizer
        settings = (id(tok), self.max_length, tok.truncation_side, tok.padding_side, tok.pad_token_id)
        if settings != self._encoded_as:
            self._encode, self._encoded_as = encoder_for(tok, self.max_length), settings
        return self._encode

    def pair_warning(self, pairs: bool = True) -> str | None:
        """The warning for rows of the other kind than the model was trained on (sentence pairs for a model of
        single texts, single texts for a model of pairs), the first time only; None when they match or the
        folder does not say."""
        if self.trained_on_pairs is None or self.trained_on_pairs is pairs or self._pairs_warned:
            return None
        self._pairs_warned = True
        if pairs:
            return (f"{self.name} was trained on single texts (its recipe's data.text_pair_column is null), yet is "
                    "given (text, text_pair) pairs: each pair is scored as one input; to score two texts, pass a list "
                    "of them")
        return (f"{self.name} was trained on sentence pairs (its recipe's data.text_pair_column), yet is given single "
                "texts: each is scored as a pair's first half alone; pass (text, text_pair) tuples")

    def __call__(self, inputs, batch_size: int = 32, top_k: int | None = 1, function_to_apply: str | None = None):
        """Labels and scores, shaped as `transformers.pipeline("text-classification")` returns them.

        Args:
            inputs: as for `logits`.
            batch_size: as for `logits`.
            top_k: 1 gives one {"label", "score"} per row (the pipeline's default shape); k > 1 gives each row
                a list of its k best, highest score first; None gives every label.
            function_to_apply: "softmax", "sigmoid" or "none"; default as the pipeline picks it (sigmoid for
                one label or multi-label, none for regression, softmax otherwise).

        Returns:
            A str or tuple input: [dict] (top_k 1) or [dict, ...] (k best). A list of n inputs: n dicts
            (top_k 1) or n lists of dicts. A single dict input, as in the pipeline, gives a bare dict for top_k 1.

        Raises:
            UserError: bad inputs (see `logits`), a top_k that is not None or a positive integer, an unknown
                function_to_apply.
        """
        if top_k is not None and (not isinstance(top_k, int) or isinstance(top_k, bool) or top_k < 1):
            raise UserError(f"top_k={top_k!r} must be a positive integer or None (every label)")
        texts, pairs = _rows(inputs)
        function = self._default_function if function_to_apply is None else self._function(function_to_apply)
        scores = apply_function(self._logits(texts, pairs, batch_size), function)
        rows = [self._ranked(row, top_k) for row in scores]
        if not isinstance(inputs, (str, tuple, dict)):
            return rows
        # the pipeline's own quirk: one str in, a list of one dict out (one dict for a {"text", "text_pair"})
        return [rows[0]] if top_k == 1 and not isinstance(inputs, dict) else rows[0]

    def _ranked(self, scores: np.ndarray, top_k: int | None) -> dict[str, Any] | list[dict[str, Any]]:
        if top_k == 1:
            best = int(scores.argmax())
            return {"label": self.labels[best], "score": scores[best].item()}
        ranked = sorted(({"label": self.labels[i], "score": s.item()} for i, s in enumerate(scores)),
                        key=lambda d: d["score"], reverse=True)
        return ranked if top_k is None else ranked[:top_k]

    def _function(self, name: str | None) -> str:
        if name is not None:
            if str(name).lower() not in FUNCTIONS:
                raise UserError(f"function_to_apply={name!r}: use one of {', '.join(FUNCTIONS)}")
            return str(name).lower()
        problem = getattr(self.config, "problem_type", None)
        if problem == "regression":
            return "none"
        if problem == "multi_label_classification" or self.config.num_labels == 1:
            return "sigmoid"
        return "softmax"


def apply_function(logits: np.ndarray, name: str) -> np.ndarray:
    """Scores from logits [rows, labels], computed in the logits' float32 as the pipeline does."""
    if name == "softmax":
        shifted = np.exp(logits - logits.max(axis=-1, keepdims=True))
        return shifted / shifted.sum(axis=-1, keepdims=True)
    if name == "sigmoid":
        return 1.0 / (1.0 + np.exp(-logits))
    return logits


def _rows(inputs) -> tuple[list[str], list[str] | None]:
    """(texts, pairs or None) of a single input or a list of them, every fault a one-line UserError."""
    if isinstance(inputs, (str, tuple, dict)):
        items = [inputs]
    elif isinstance(inputs, bytes) or not hasattr(inputs, "__iter__"):
        raise UserError(f"inputs: got {type(inputs).__name__}; give a str, a (text, text_pair) tuple or a list of them")
    elif isinstance(inputs, (set, frozenset)):
        raise UserError(f"inputs: got a {type(inputs).__name__}, whose order is not the one you wrote, so results "
                        "could not be matched to texts; give a list")
    else:
        items = list(inputs)
    if not items:
        raise UserError("inputs: the list of texts is empty; give at least one text")
    texts, pairs = [], []
    for n, item in enumerate(items):
        text, pair = _one(item, n)
        texts.append(text)
        pairs.append(pair)
    paired = [p is not None for p in pairs]
    if any(paired) and not all(paired):
        raise UserError(f"inputs: item {paired.index(not paired[0])} is "
                        f"{'a pair' if not paired[0] else 'a single text'}, item 0 is not; give all single texts "
                        "or all (text, text_pair) pairs")
    return texts, pairs if all(paired) else None


def _one(item, n: int) -> tuple[str, str | None]:
    text, pair = _parts(item, n)
    for part in (text, pair):
        if part is not None and (fault := unicode_fault(part)):
            raise UserError(f"inputs: item {n} is not valid Unicode text ({fault}); decode it with "
                            "errors='replace' or remove that character")
    if is_blank(text):  # a pair's second text may be empty (an instruction without input)
        raise UserError(f"inputs: item {n} is an empty text (or invisible characters only); give its words")
    return text, pair


def _parts(item, n: int) -> tuple[str, str | None]:
    if isinstance(item, str):
        return item, None
    if isinstance(item, tuple) and len(item) == 2 and all(isinstance(x, str) for x in item):
        return item
    if isinstance(item, dict) and isinstance(item.get("text"), str) and set(item) <= {"text", "text_pair"}:
        pair = item.get("text_pair")
        if pair is None or isinstance(pair, str):
            return item["text"], pair
    shown = repr(item) if len(repr(item)) <= 40 else repr(item)[:37] + "..."
    raise UserError(f"inputs: item {n} is {type(item).__name__} {shown}; each input must be a str, a (text, "
                    "text_pair) tuple of two str, or {\"text\": ..., \"text_pair\": ...}")


def _torch_device(runtime: str, device: str | None) -> str:
    return device if runtime.startswith("torch") and device else "cpu"


def _padded_to(predict, min_seq: int, pad_id: int):
    """A predictor that right-pads a batch shorter than `min_seq` tokens (masked, so the logits are the same)."""

    def run(batch: dict[str, np.ndarray]) -> np.ndarray:
        missing = min_seq - batch["input_ids"].shape[1]
        if missing > 0:
            batch = {k: np.pad(v, ((0, 0), (0, missing)), constant_values=pad_id if k == "input_ids" else 0)
                     for k, v in batch.items()}
        return predict(batch)

    return run
