"""What a served model answers, per kind of predictor: the model call, the V2 output tensors, `/predict`'s body.

    served = outputs_for(predictor)        # Labels (text classifiers) or Entities (token classifiers)
    results = served.infer(rows, 32)       # what the batcher slices per request
    served.tensors(results, ["label"])     # V2 output tensors by name
    served.predictions(results, top_k=1)   # /predict's "predictions"

A text classifier answers `label` (BYTES), `score` (FP32) and `logits` (FP32 [rows, labels]); a token classifier
answers `entities` (BYTES: per text, the JSON list of its entity groups as the Hugging Face pipeline's
aggregation_strategy="simple" gives them), takes single texts only and has no top_k.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np

from deploykit.predictor import apply_function
from deploykit.serve.protocol import ClientError


class Labels:
    """A text classifier (deploykit.predictor.ClassifierPredictor or alike: .logits(rows, batch_size))."""

    names = ("label", "score", "logits")
    pairs, needs_pairs = True, False

    def __init__(self, predictor) -> None:
        self.predictor = predictor
        self.labels = list(predictor.labels)
        self.function = _score_function(predictor)
        # a model whose recipe read single texts would score a pair as one joined input: a client is told (400),
        # where the Python predictor warns; None (a folder that does not say) takes pairs
        self.pairs = getattr(predictor, "trained_on_pairs", None) is not False
        # and one trained on pairs would score a single text as half an input: told too
        self.needs_pairs = getattr(predictor, "trained_on_pairs", None) is True

    def infer(self, rows: list[Any], batch_size: int) -> np.ndarray:
        return self.predictor.logits(rows, batch_size=batch_size)

    def metadata(self) -> list[dict[str, Any]]:
        return [{"name": "label", "datatype": "BYTES", "shape": [-1]},
                {"name": "score", "datatype": "FP32", "shape": [-1]},
                {"name": "logits", "datatype": "FP32", "shape": [-1, len(self.labels)]}]

    def tensors(self, logits: np.ndarray, outputs: list[str]) -> list[dict[str, Any]]:
        """The top label, its score (after the model's score function) and the raw logits, as asked."""
        scores = apply_function(logits, self.function)
        top = scores.argmax(-1)
        n = len(logits)
        tensors = {
            "label": {"shape": [n], "datatype": "BYTES", "data": [self.labels[i] for i in top]},
            "score": {"shape": [n], "datatype": "FP32", "data": [row[i].item() for row, i in zip(scores, top)]},
            "logits": {"shape": [n, logits.shape[1]], "datatype": "FP32", "data": logits.ravel().tolist()},
        }
        return [{"name": name, **tensors[name]} for name in outputs]

    def predictions(self, logits: np.ndarray, top_k: int | None) -> list[Any]:
        """HF text-classification pipeline results, as ClassifierPredictor.__call__ gives them for a list of
        texts: one {"label", "score"} per row for top_k=1, else each row's best top_k (None: all), highest first."""
        out: list[Any] = []
        for row in apply_function(logits, self.function):
            order = np.argsort(-row, kind="stable")[:top_k]
            ranked = [{"label": self.labels[i], "score": row[i].item()} for i in order]
            out.append(ranked[0] if top_k == 1 else ranked)
        return out


class Entities:
    """A token classifier (deploykit.ner.predict.EntityPredictor: called on texts, gives entity groups)."""

    names = ("entities",)
    pairs = needs_pairs = False

    def __init__(self, predictor) -> None:
        self.predictor = predictor
        self.labels = list(predictor.labels)

    def infer(self, rows: list[str], batch_size: int) -> list[list[dict]]:
        return self.predictor(rows, batch_size=batch_size)

    def metadata(self) -> list[dict[str, Any]]:
        return [{"name": "entities", "datatype": "BYTES", "shape": [-1]}]

    def tensors(self, groups: list[list[dict]], outputs: list[str]) -> list[dict[str, Any]]:
        return [{"name": "entities", "shape": [len(groups)], "datatype": "BYTES",
                 "data": [json.dumps(g, ensure_ascii=False) for g in groups]}]

    def predictions(self, groups: list[list[dict]], top_k: int | None) -> list[Any]:
        return list(groups)


def outputs_for(predictor) -> Labels | Entities:
    """Entities for a predictor that gives entity groups (it has no .logits of one row per text), else Labels."""
    from deploykit.ner.predict import EntityPredictor

    return Entities(predictor) if isinstance(predictor, EntityPredictor) else Labels(predictor)


def check_request(served: Labels | Entities, rows: list[Any], top_k: int | None = 1) -> None:
    """ClientError (400) for what this model cannot answer: text pairs, or top_k for entity groups."""
    if not served.pairs and rows and isinstance(rows[0], tuple):
        if isinstance(served, Entities):
            raise ClientError("this model tags single texts: send no text_pairs")
        raise ClientError("this model was trained on single texts (its recipe read no data.text_pair_column): "
                          "send no text_pairs (V2: no text_pair input)")
    if served.needs_pairs and rows and not isinstance(rows[0], tuple):
        raise ClientError("this model was trained on sentence pairs (its recipe read data.text_pair_column): "
                          "send text_pairs, one per text (V2: a text_pair input)")
    if isinstance(served, Entities) and top_k != 1:
        raise ClientError("this model answers entity groups, not ranked labels: send no top_k")


def _score_function(predictor) -> str:
    """softmax, sigmoid (one label, multi-label) or none (regression): what the predictor's pipeline-shaped
    results apply to this model's logits, so that the server's scores are the predictor's."""
    pick = getattr(predictor, "_function", None)
    return pick(None) if callable(pick) else "softmax"
