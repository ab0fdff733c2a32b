"""`deploykit.load` for a token classifier: entity groups shaped as Hugging Face's token-classification pipeline.

    import deploykit
    ner = deploykit.load("runs/conll-minilm/export")     # ONNX Runtime for ONNX folders, torch for PyTorch ones
    ner("Peter Blackburn flew to Brussels")              # the shape of the answer (scores illustrative):
    # [{'entity_group': 'PER', 'score': 0.99, 'word': 'peter blackburn', 'start': 0, 'end': 15},
    #  {'entity_group': 'LOC', 'score': 0.98, 'word': 'brussels', 'start': 24, 'end': 32}]
    ner.logits(["Peter Blackburn flew to Brussels"])[0]   # float32 [word pieces, labels]

Groups are what `pipeline("token-classification", aggregation_strategy="simple")` gives: every word piece takes
its own best tag, adjacent pieces of one type merge unless a piece says B-, O is left out, `start`/`end` are
character offsets into the text (the fast tokenizer's offset mapping). `aggregation_strategy="first"` lets a
word's first piece decide the whole word, the way finetune trained and scores it (deploykit/ner/align.py).

A text longer than the trained max_length is not truncated (the pipeline would cut it): it is scored as
the windows finetune trained on (the trained `window_stride` pieces shared), and each piece is read from the
window where it has the most context (`align.max_context`). A text that fits is one window: the pipeline's
answer exactly.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from deploykit.artifact import Artifact, load_artifact
from deploykit.errors import UserError
from deploykit.lineage import trained_length, trained_stride
from deploykit.load_checks import (check_logits_width, check_threads, first_blank, logits_width_fault, resolve_runtime,
                                   unicode_fault)

STRATEGIES = ("simple", "first")


@dataclass
class Pieces:
    """One text's word pieces, special tokens left out: ids, [start, end) character offsets, logits [pieces, labels]."""

    ids: list[int]
    offsets: list[tuple[int, int]]
    logits: np.ndarray


class EntityPredictor:
    """A token-classifier folder (PyTorch or ONNX) loaded into torch or ONNX Runtime; call it like
    `pipeline("token-classification", aggregation_strategy="simple")`.

    Attributes:
        name: the folder's name.
        labels: id2label in id order (IOB2 tags: O, B-TYPE, I-TYPE).
        runtime: torch, ort or openvino.
        max_length: pieces per window (the trained length), special tokens included.
        window_stride: pieces consecutive windows of a long text share.
        batch_invariant: False for a dynamic-INT8 graph, whose windows are then run one at a time.
    """

    def __init__(self, artifact: Artifact | str, runtime: str = "auto", threads: int | None = None,
                 device: str | None = None, max_length: int | None = None):
        from deploykit.evaluate import eval_batch_size
        from deploykit.models import load_config, load_tokenizer
        from deploykit.ner.align import window_stride

        artifact = artifact if isinstance(artifact, Artifact) else load_artifact(artifact)
        folder = artifact.path.resolve()
        check_threads(threads)
        self.runtime = resolve_runtime(artifact.format, runtime, device)
        if self.runtime not in ("torch", "ort", "openvino") or device not in (None, "cpu"):
            raise UserError(f"{folder}: a token classifier runs on runtime torch (PyTorch folders), ort (ONNX "
                            f"folders) or openvino (ONNX or OpenVINO IR folders) on the CPU here, not "
                            f"{self.runtime} on {device or 'cpu'}")
        self.name = folder.name
        self.config = load_config(str(folder))
        self.labels = [str(self.config.id2label[i]) for i in range(self.config.num_labels)]
        self.tokenizer = load_tokenizer(str(folder))  # refuses missing files and a vocabulary too small
        if not getattr(self.tokenizer, "is_fast", False):
            raise UserError(f"{folder}: entity groups need a fast tokenizer (offsets); save a tokenizer.json there")
        self._subword_prefix = bool(getattr(getattr(getattr(self.tokenizer, "_tokenizer", None), "model", None),
                                            "continuing_subword_prefix", None))
        check_logits_width(artifact, len(self.labels))
        self._predict = _load(artifact, self.runtime, threads)
        self.batch_invariant = artifact.format != "onnx" or eval_batch_size(artifact.onnx_path) > 1
        self.max_length = trained_length(artifact, self.config, self.tokenizer, max_length)
        stride = trained_stride(artifact, self.max_length, self.tokenizer)
        self.window_stride = window_stride("auto" if stride is None else stride, self.max_length, self.tokenizer)

    def __repr__(self) -> str:
        return (f"EntityPredictor({self.name!r}, runtime={self.runtime!r}, labels={self.labels}, "
                f"max_length={self.max_length}, window_stride={self.window_stride})")

    def logits(self, inputs, batch_size: int = 32) -> list[np.ndarray]:
        """Raw per-piece model outputs, in input order.

        Args:
            inputs: a str or a list of str.
            batch_size: windows per forward pass (1 for a graph that is not batch-invariant).

        Returns:
            One float32 array [pieces, labels] per text: a row per word piece of the text (special tokens left
            out), in text order; a long text's rows come from the windows where each piece has the most context.
        """
        return [p.logits for p in self.pieces(_texts(inputs), batch_size)]

    def __call__(self, inputs, batch_size: int = 32, aggregation_strategy: str = "simple", **other):
        """Entity groups, as `pipeline("token-classification", aggregation_strategy=...)` returns them.

        Args:
            inputs: a str or a list of str.
            batch_size: as for `logits`.
            aggregation_strategy: "simple" (every piece votes, the pipeline's) or "first" (a word's first piece
                decides the word, as the model was trained).

        Returns:
            For a str, a list of {"entity_group", "score", "word", "start", "end"}; for a list, one such list per text.

        Raises:
            UserError: an input that is not text or is empty, an empty list, an unknown aggregation_strategy, any other
                keyword (a text classifier's top_k or function_to_apply).
        """
        if other:
            raise UserError(f"{', '.join(other)}: not an option of a token classifier, which answers entity groups "
                            "(it takes batch_size and aggregation_strategy)")
        if aggregation_strategy not in STRATEGIES:
            raise UserError(f"aggregation_strategy={aggregation_strategy!r}: use one of {', '.join(STRATEGIES)}")
        texts = _texts(inputs)
        groups = [self._groups(text, p, aggregation_strategy) for text, p in zip(texts, self.pieces(texts, batch_size))]
        return groups[0] if isinstance(inputs, str) else groups

    def pieces(self, texts: list[str], batch_size: int = 32) -> list[Pieces]:
        """Every text's pieces with their logits, long texts in windows of `max_length`."""
        from deploykit.ner.align import max_context, window_starts

        if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
            raise UserError(f"batch_size={batch_size!r} must be a positive integer")
        enc = self.tokenizer(texts, truncation=True, max_length=self.max_length, stride=self.window_stride,
                             return_overflowing_tokens=True, return_offsets_mapping=True,
                             return_special_tokens_mask=True)
        windows_of: list[list[int]] = [[] for _ in texts]
        for r, t in enumerate(enc["overflow_to_sample_mapping"]):
            windows_of[t].append(r)
        logits = self._run(enc, batch_size if self.batch_invariant else 1)
        out = []
        for t, rows in enumerate(windows_of):
            content = [[p for p, special in enumerate(enc["special_tokens_mask"][r]) if not special] for r in rows]
            ids = [[enc["input_ids"][r][p] for p in pos] for r, pos in zip(rows, content)]
            starts = window_starts(ids, self.window_stride, f"text {t}")
            total = starts[-1] + len(ids[-1]) if rows else 0
            owner = [max_context(starts, [len(i) for i in ids], j, j) for j in range(total)]
            picked = [(rows[k], content[k][j - starts[k]]) for j, k in enumerate(owner)]
            out.append(Pieces([enc["input_ids"][r][p] for r, p in picked],
                              [tuple(enc["offset_mapping"][r][p]) for r, p in picked],
                              np.asarray([logits[r][p] for r, p in picked], dtype=np.float32).reshape(
                                  len(picked), len(self.labels))))
        return out

    def _run(self, enc, batch_size: int) -> list[np.ndarray]:
        """Logits [pieces, labels] of every window, windows batched by length and padded on the right."""
        names = [n for n in self.tokenizer.model_input_names if n in enc]
        order = np.argsort([len(ids) for ids in enc["input_ids"]], kind="stable")
        out: list[np.ndarray] = [None] * len(order)  # type: ignore[list-item]
        pad = self.tokenizer.pad_token_id or 0
        for start in range(0, len(order), batch_size):
            idx = [int(i) for i in order[start:start + batch_size]]
            width = max(len(enc["input_ids"][i]) for i in idx)
            batch = {n: np.asarray([list(enc[n][i]) + [pad if n == "input_ids" else 0] * (width - len(enc[n][i]))
                                    for i in idx], dtype=np.int64) for n in names}
            logits = self._predict(batch)
            if logits.shape[-1] != len(self.labels):  # a runtime whose output width the load could not read
                raise UserError(logits_width_fault(self.name, logits.shape[-1], len(self.labels)))
            for i, row in zip(idx, logits):
                out[i] = row[:len(enc["input_ids"][i])]
        return out

    def _groups(self, text: str, pieces: Pieces, strategy: str) -> list[dict]:
        """The pipeline's postprocess: softmax per piece, pieces (or words) tagged, adjacent ones grouped, O dropped.

        Only the entity groups' words and scores are built: most pieces are O, and turning every one of them into a
        string was most of the ~1 ms a CoNLL sentence spent here (bench/README.md, "CoNLL-2003 run 18")."""
        shifted = np.exp(pieces.logits - pieces.logits.max(axis=-1, keepdims=True))
        scores = shifted / shifted.sum(axis=-1, keepdims=True)
        best, top = scores.argmax(axis=-1), scores.max(axis=-1)
        unk = self.tokenizer.unk_token_id
        names = self.tokenizer.convert_ids_to_tokens([int(i) for i in pieces.ids])
        known = [int(i) != unk for i in pieces.ids]
        # an unknown piece shows the text it stands for, as the pipeline's does
        words = [w if k else text[s:e] for w, k, (s, e) in zip(names, known, pieces.offsets)]
        if strategy == "first":  # a word's pieces form one unit, read from its first piece
            units: list[list[int]] = []
            for j, (start, end) in enumerate(pieces.offsets):
                if units and known[j] and self._is_subword(text, names[j], start, end):
                    units[-1].append(j)
                else:
                    units.append([j])
        else:
            units = [[j] for j in range(len(names))]
        tagged = [(self.labels[int(best[u[0]])], u) for u in units]
        groups: list[list[tuple[str, list[int]]]] = []
        for entity, unit in tagged:
            bi, kind = _tag(entity)
            if groups and bi != "B" and kind == _tag(groups[-1][-1][0])[1]:
                groups[-1].append((entity, unit))
            else:
                groups.append([(entity, unit)])
        out = []
        for g in groups:
            kind = g[0][0].split("-", 1)[-1]
            if kind == "O":
                continue
            if strategy == "first":
                parts = [self.tokenizer.convert_tokens_to_string([words[j] for j in u]) for _, u in g]
            else:
                parts = [words[u[0]] for _, u in g]
            # score: the mean of its entries' top probabilities (the pipeline's np.nanmean; a softmax has no NaN)
            out.append({"entity_group": kind, "score": float(top[[u[0] for _, u in g]].mean()),
                        "word": self.tokenizer.convert_tokens_to_string(parts),
                        "start": int(pieces.offsets[g[0][1][0]][0]), "end": int(pieces.offsets[g[-1][1][-1]][1])})
        return out

    def _is_subword(self, text: str, word: str, start: int, end: int) -> bool:
        # the pipeline's test: a tokenizer with a continuing-subword prefix ("##") marks pieces after a word's first;
        # otherwise a piece not preceded by a space continues a word
        if self._subword_prefix:
            return len(word) != len(text[start:end])
        return start > 0 and " " not in text[start - 1:start + 1]


def _tag(name: str) -> tuple[str, str]:
    """("B" or "I", type); a tag without a B-/I- prefix continues ("I")."""
    if name.startswith(("B-", "I-")):
        return name[0], name[2:]
    return "I", name


def _texts(inputs) -> list[str]:
    items = [inputs] if isinstance(inputs, str) else inputs
    if isinstance(items, (bytes, dict, tuple, set, frozenset)) or not hasattr(items, "__iter__"):
        raise UserError(f"inputs: got {type(inputs).__name__}; give a str or a list of str")
    items = list(items)
    if not items:
        raise UserError("inputs: the list of texts is empty; give at least one text")
    for n, item in enumerate(items):
        if not isinstance(item, str):
            raise UserError(f"inputs: item {n} is {type(item).__name__}; each input must be a str")
        if fault := unicode_fault(item):
            raise UserError(f"inputs: item {n} is not valid Unicode text ({fault}); decode it with "
                            "errors='replace' or remove that character")
    if (blank := first_blank(items)) is not None:  # as deploykit predict and the text classifier refuse it
        raise UserError(f"inputs: item {blank} is an empty text (or invisible characters only); give its words")
    return items


def _load(artifact: Artifact, runtime: str, threads: int | None):
    """A predictor batch -> logits [batch, seq, labels] of the folder's model."""
    from deploykit.evaluate import torch_predictor

    if runtime != "torch":  # ort, openvino: the runtime table's loaders, as for every other graph
        from deploykit.runtimes import Unavailable, load_runtime

        try:
            return load_runtime(artifact, runtime, threads).predict
        except Unavailable as err:
            raise UserError(f"{artifact.path}: runtime {runtime} cannot run here: {err}") from None
    import torch

    from deploykit.saved import load_saved

    if threads:
        torch.set_num_threads(threads)
    return torch_predictor(load_saved(artifact.path, "token_classification"))


def load_predictor(artifact: Artifact, runtime: str = "auto", threads: int | None = None, device: str | None = None,
                   max_length: int | None = None) -> EntityPredictor:
    """The token-classification kind's `predictor` hook (what `deploykit.load` gives for such a folder)."""
    return EntityPredictor(artifact, runtime=runtime, threads=threads, device=device, max_length=max_length)
