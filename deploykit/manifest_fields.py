"""The types of the manifest.json fields deploykit reads back, checked when a folder is opened.

    check_fields(json.loads(path.read_text()), path)   # UserError: "manifest.json: max_length is a string, ..."

Readers take a field that is absent as "not recorded" (a plain Hugging Face folder, an older output) and fall
back: a max_length of "abc" or a parent of 5, written by hand or by another tool, was read the same way (the
model then ran at its position limit instead of its trained length) or failed deep inside with a traceback.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from deploykit.errors import UserError

# field: (the JSON types it may hold, what to call them)
FIELDS: dict[str, tuple[tuple[type, ...], str]] = {
    "format": ((str,), "a string"), "stage": ((str, type(None)), "a string or null"),
    "parent": ((dict, type(None)), "an object or null"), "config": ((dict, type(None)), "an object or null"),
    "metrics": ((dict,), "an object"), "columns": ((dict,), "an object"), "labels": ((list, type(None)), "a list"),
    "max_length": ((int, type(None)), "a positive integer"), "window_stride": ((int, type(None)), "an integer >= 0"),
}
# the model file a folder names: a file beside the manifest, never a path out of it (ir_file: runtimes.ir_path)
FILE_FIELDS = ("onnx_file", "engine_file", "gguf_file")
NAMES = {dict: "an object", list: "a list", str: "a string", bool: "a boolean", int: "a number", float: "a number",
         type(None): "null"}


def check_fields(manifest: dict[str, Any], where: Path) -> None:
    """UserError naming the first field of `manifest` (read from `where`) whose value deploykit cannot use."""
    fix = "re-run the stage that wrote it (or fix the field)"
    for name, (types, wanted) in FIELDS.items():
        value = manifest.get(name)
        bad = not isinstance(value, types) or isinstance(value, bool)
        if not bad and name in ("max_length", "window_stride") and value is not None:
            bad = value < (1 if name == "max_length" else 0)
        if name in manifest and bad:
            raise UserError(f"{where}: {name} is {_show(value)}, not {wanted}; {fix}")
    for name in FILE_FIELDS:
        value = manifest.get(name)
        if name in manifest and (not isinstance(value, str) or Path(value).name != value or value in ("", ".", "..")):
            raise UserError(f"{where}: {name} is {_show(value)}, not the name of a file in the folder; {fix}")


def _show(value: Any) -> str:
    return repr(value) if isinstance(value, (str, int, float)) and not isinstance(value, bool) else NAMES.get(
        type(value), type(value).__name__)
