"""Request bodies in, response bodies out: the plain `/predict` JSON and the Open Inference Protocol (KServe V2).

    POST /predict                 {"texts": ["a fine film"], "top_k": 1}
                                  -> {"predictions": [{"label": "positive", "score": 0.98}]}
    POST /v2/models/NAME/infer    {"id": "7", "inputs": [{"name": "text", "shape": [1], "datatype": "BYTES",
                                   "data": ["a fine film"]}]}
                                  -> {"model_name": NAME, "id": "7", "outputs": [label BYTES [1],
                                      score FP32 [1], logits FP32 [1, labels]]}

Every way a body can be wrong is a `ClientError` whose message is one line naming the field; the app
answers it as `{"error": message}` with its status (400, 413), never a traceback.
"""

from __future__ import annotations

import json
import math
from typing import Any

from deploykit.load_checks import first_blank, unicode_fault

TEXT, TEXT_PAIR = "text", "text_pair"
OUTPUTS = ("label", "score", "logits")  # a text classifier's; a token classifier's: ("entities",)


class ClientError(Exception):
    """A request the client got wrong: `status` (400, 404, 413) and a one-line message."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


def parse_json(body: bytes) -> dict[str, Any]:
    if not body.strip():
        raise ClientError("the request body is empty; send a JSON object")
    try:
        doc = json.loads(body, object_pairs_hook=_unique_keys, parse_int=_int, parse_constant=_not_a_number)
    except UnicodeDecodeError:
        raise ClientError("the request body is not UTF-8 text") from None
    except json.JSONDecodeError as err:
        raise ClientError(f"the request body is not valid JSON ({err.msg} at line {err.lineno} column {err.colno})") from None
    except RecursionError:
        raise ClientError("the request body is nested too deeply; send {\"texts\": [...]} or a V2 request") from None
    except _DuplicateKey as err:
        raise ClientError(f"the request body gives {str(err)!r} twice in one object; send it once") from None
    except ValueError as err:  # any other the parser raises is the body's too, never the model's (a 500)
        raise ClientError(f"the request body is not valid JSON ({str(err).splitlines()[0][:200]})") from None
    if not isinstance(doc, dict):
        raise ClientError(f"the request body must be a JSON object, not {_kind(doc)}")
    return doc


def _int(digits: str) -> int:
    try:
        return int(digits)
    except ValueError:  # past sys.get_int_max_str_digits() (4300): Python's "Exceeds the limit", once a 500
        raise ClientError(f"the request body holds a number of {len(digits.lstrip('-'))} digits; no field takes a "
                          "number that large") from None


def _not_a_number(name: str) -> None:
    """NaN, Infinity, -Infinity: Python's json reads them, JSON (RFC 8259) has no such numbers."""
    raise ClientError(f"the request body is not valid JSON ({name} is not a JSON number; send a number or null)")


class _DuplicateKey(ValueError):
    """A JSON object naming a key twice ({"texts": [...], "texts": [...]}): json.loads would keep the last."""


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    doc = dict(pairs)
    if len(doc) != len(pairs):
        raise _DuplicateKey(next(k for i, (k, _) in enumerate(pairs) if k in dict(pairs[:i])))
    return doc


def parse_predict(doc: dict[str, Any], max_rows: int) -> tuple[list[Any], int | None]:
    """Rows and top_k of a `/predict` body: {"texts": [...], "text_pairs": [...] (optional), "top_k": 1}."""
    unknown = sorted(set(doc) - {"texts", "text_pairs", "top_k"})
    if unknown:
        raise ClientError(f"unknown field {unknown[0]!r} in the body (expected texts, text_pairs, top_k)")
    if "texts" not in doc:
        raise ClientError('the body has no "texts" (send {"texts": ["a sentence", ...]})')
    texts = _texts(doc["texts"], "texts", max_rows)
    rows: list[Any] = texts
    if doc.get("text_pairs") is not None:
        pairs = _strings(doc["text_pairs"], "text_pairs", max_rows)
        if len(pairs) != len(texts):
            raise ClientError(f"text_pairs has {len(pairs)} items for {len(texts)} texts; give one pair per text")
        rows = list(zip(texts, pairs))
    top_k = doc.get("top_k", 1)
    if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1):
        raise ClientError(f"top_k must be a positive integer or null (every label), not {json.dumps(top_k)}")
    return rows, top_k


def parse_infer(doc: dict[str, Any], max_rows: int, offered: tuple[str, ...] = OUTPUTS) -> tuple[list[Any], list[str]]:
    """Rows and requested output names (of `offered`) of a V2 inference request (BYTES `text`, optional
    `text_pair`)."""
    _check_request_fields(doc)
    inputs = doc.get("inputs")
    if not isinstance(inputs, list) or not inputs:
        raise ClientError('"inputs" must be a non-empty list of tensors ([{"name": "text", "shape": [n], '
                          '"datatype": "BYTES", "data": [...]}])')
    tensors: dict[str, list[str]] = {}
    for i, tensor in enumerate(inputs):
        if not isinstance(tensor, dict):
            raise ClientError(f"inputs[{i}] must be an object, not {_kind(tensor)}")
        name = tensor.get("name")
        if name not in (TEXT, TEXT_PAIR):
            raise ClientError(f"inputs[{i}]: unknown input {json.dumps(name)} (this model takes "
                              f"{TEXT!r} and optionally {TEXT_PAIR!r})")
        if name in tensors:
            raise ClientError(f"inputs[{i}]: input {name!r} is given twice")
        tensors[name] = _bytes_tensor(tensor, f"inputs[{i}] ({name})", max_rows)
    if TEXT not in tensors:
        raise ClientError(f"the request has no {TEXT!r} input")
    rows: list[Any] = tensors[TEXT]
    if (blank := first_blank(rows)) is not None:
        raise ClientError(f"the {TEXT!r} input's element {blank} is an empty text (or invisible characters only); send "
                          "its words")
    if TEXT_PAIR in tensors:
        if len(tensors[TEXT_PAIR]) != len(rows):
            raise ClientError(f"{TEXT_PAIR!r} has {len(tensors[TEXT_PAIR])} elements for {len(rows)} texts")
        rows = list(zip(rows, tensors[TEXT_PAIR]))
    return rows, _requested_outputs(doc.get("outputs"), offered)


# the fields of a V2 request and of its input tensors (Open Inference Protocol, REST): anything else is a typo or an
# extension this server does not speak, refused rather than ignored
REQUEST_FIELDS, TENSOR_FIELDS = ("id", "parameters", "inputs", "outputs"), ("name", "shape", "datatype", "parameters",
                                                                            "data")


def _check_request_fields(doc: dict[str, Any]) -> None:
    unknown = sorted(set(doc) - set(REQUEST_FIELDS))
    if unknown:
        raise ClientError(f"unknown field {unknown[0]!r} in the request (a V2 request has {', '.join(REQUEST_FIELDS)})")
    if "id" in doc and not isinstance(doc["id"], str):  # echoed back: the protocol's id is a string
        raise ClientError(f'"id" must be a string, not {_kind(doc["id"])}')
    parameters = doc.get("parameters")
    if parameters is not None and not isinstance(parameters, dict):
        raise ClientError(f'"parameters" must be an object, not {_kind(parameters)}')
    if (parameters or {}).get("binary_data_output"):
        raise ClientError("parameters.binary_data_output is not supported; ask for JSON data")


def infer_response(model: str, request_id: Any, tensors: list[dict[str, Any]]) -> dict[str, Any]:
    """The V2 response around the output tensors the model built (deploykit/serve/outputs.py)."""
    body: dict[str, Any] = {"model_name": model}
    if request_id is not None:
        body["id"] = request_id
    body["outputs"] = tensors
    return body


def _requested_outputs(requested: Any, offered: tuple[str, ...]) -> list[str]:
    if requested is None:
        return list(offered)
    if not isinstance(requested, list) or not requested:
        raise ClientError('"outputs" must be a non-empty list of {"name": ...} objects, or left out for all')
    names = []
    for i, out in enumerate(requested):
        name = out.get("name") if isinstance(out, dict) else None
        if name not in offered:
            raise ClientError(f"outputs[{i}]: unknown output {json.dumps(name)} (this model has {', '.join(offered)})")
        parameters = out.get("parameters")
        if parameters is not None and not isinstance(parameters, dict):
            raise ClientError(f"outputs[{i}].parameters must be an object, not {_kind(parameters)}")
        if (parameters or {}).get("binary_data"):
            raise ClientError(f"outputs[{i}]: binary_data is not supported; ask for JSON data")
        if name in names:
            raise ClientError(f"outputs[{i}]: output {name!r} is asked for twice")
        names.append(name)
    return names


def _bytes_tensor(tensor: dict[str, Any], where: str, max_rows: int) -> list[str]:
    if unknown := sorted(set(tensor) - set(TENSOR_FIELDS)):
        raise ClientError(f"{where}: unknown field {unknown[0]!r} (a tensor has {', '.join(TENSOR_FIELDS)})")
    if tensor.get("datatype") != "BYTES":
        raise ClientError(f"{where}: datatype must be \"BYTES\" (UTF-8 strings), not {json.dumps(tensor.get('datatype'))}")
    shape = tensor.get("shape")
    if (not isinstance(shape, list) or not 1 <= len(shape) <= 2
            or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape)
            or (len(shape) == 2 and shape[1] != 1)):
        raise ClientError(f"{where}: shape must be [n] or [n, 1], not {json.dumps(shape)}")
    if "data" not in tensor:
        raise ClientError(f"{where}: no \"data\" (the binary tensor extension is not supported)")
    data = tensor["data"]
    if isinstance(data, list) and all(isinstance(row, list) and len(row) == 1 for row in data):
        data = [row[0] for row in data]  # [[text], [text]] for shape [n, 1]
    strings = _strings(data, f"{where} data", max_rows)
    if len(strings) != math.prod(shape):
        raise ClientError(f"{where}: shape {shape} holds {math.prod(shape)} elements but data has {len(strings)}")
    return strings


def _texts(value: Any, field: str, max_rows: int) -> list[str]:
    """`_strings` where each is a text to classify: an empty one has nothing to score (deploykit.load refuses it too;
    the second text of a pair may be empty)."""
    strings = _strings(value, field, max_rows)
    if (blank := first_blank(strings)) is not None:
        raise ClientError(f"{field}[{blank}] is an empty text (or invisible characters only); send its words")
    return strings


def _strings(value: Any, field: str, max_rows: int) -> list[str]:
    if not isinstance(value, list):
        raise ClientError(f"{field} must be a list of strings, not {_kind(value)}")
    if not value:
        raise ClientError(f"{field} is empty; send at least one text")
    if len(value) > max_rows:
        raise ClientError(f"{field} has {len(value)} rows; this server takes at most {max_rows} per request "
                          "(--max-request-rows)", status=413)
    for i, item in enumerate(value):
        if not isinstance(item, str):
            raise ClientError(f"{field}[{i}] must be a string, not {_kind(item)}")
        # checked here, before the row is queued: the tokenizer's TypeError would fail a shared batch
        if fault := unicode_fault(item):
            raise ClientError(f"{field}[{i}] is not valid Unicode ({fault})")
    return value


def _kind(value: Any) -> str:
    names = {dict: "an object", list: "a list", str: "a string", bool: "a boolean", type(None): "null",
             int: "a number", float: "a number"}
    return names.get(type(value), type(value).__name__)
