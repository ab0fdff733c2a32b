"""Which files `deploykit predict --out` may replace: its own earlier predictions, every line one of its records.

    is_predictions(Path("preds.jsonl"))   # True: each line {"text", "label", "score"} (or an NER / --generate record)

Anything else at that path is a user's, and predict refuses it (deploykit/predict.py check_out_file).
"""

from __future__ import annotations

import json
from pathlib import Path

# the records this command writes: their keys, with the types of their values, then their optional keys; the
# items of `entities` and `top_k` alike (a spaCy-style `"entities": [[0, 5, "ORG"]]` is a user's training data)
_ENTITY = {"entity_group": str, "score": float, "word": str, "start": int, "end": int}
_RANKED = {"label": str, "score": float}
_RECORDS = (({"text": str, "label": str, "score": float}, {"text_pair": str, "top_k": [_RANKED]}),
            ({"text": str, "entities": [_ENTITY]}, {}),
            ({"text": str, "answer": str, "new_tokens": int}, {}))
_LONGEST = 1 << 26  # bytes of one line: a longer one is not a record of ours (nor read whole into memory)


def _fits(value, kind) -> bool:
    """`value` is of `kind`: a type (bool never counts as a number; json writes every float with a point), a
    [item kind] list, or a {key: kind} dict of exactly those keys."""
    if isinstance(kind, list):
        return isinstance(value, list) and all(_fits(v, kind[0]) for v in value)
    if isinstance(kind, dict):
        return isinstance(value, dict) and value.keys() == kind.keys() and all(_fits(value[k], kind[k]) for k in kind)
    return isinstance(value, kind) and not isinstance(value, bool)


def _is_record(line: bytes) -> bool:
    try:
        record = json.loads(line)
    except ValueError:
        return False
    for required, optional in _RECORDS:
        if isinstance(record, dict) and required.keys() <= record.keys() <= required.keys() | optional.keys():
            return _fits(record, {**required, **{k: v for k, v in optional.items() if k in record}})
    return False


def is_predictions(out: Path) -> bool:
    """Whether every line of `out` is a record this command writes, keys, types and items exactly (so replacing the
    file loses no one's data), read a line at a time and stopping at the first that is not. A first line alone was not
    enough: `{"text", "label"}` is the commonest shape of training data, and a user's JSONL was replaced."""
    seen = False
    try:
        with open(out, "rb") as f:
            while line := f.readline(_LONGEST):
                if len(line) == _LONGEST and not line.endswith(b"\n"):
                    return False
                if line.strip():
                    if not _is_record(line):
                        return False
                    seen = True
    except OSError:
        return False
    return seen
