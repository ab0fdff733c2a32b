"""`--set key=value` overrides and recipe validation errors as one line naming their origin.

    parse_override("finetune.bf16=off")   # ("finetune.bf16", "off"): YAML 1.2 scalars
    format_validation_error(err, "recipes/x.yaml", ["data.max_length=4"])
    # "--set data.max_length=4: data.max_length: Input should be greater than or equal to 8, or auto (got 4)"

Split from config.py, which keeps the schema; this is how a bad value is traced back to where it came from.
"""

from __future__ import annotations

import re
from typing import Any

import yaml
from pydantic import ValidationError

from deploykit.errors import UserError
from deploykit.yaml12 import DuplicateKeyError, read_yaml


def _set_dotted(tree: dict, dotted: str, value: Any, origin: str) -> None:
    keys = dotted.split(".")
    node = tree
    for k in keys[:-1]:
        child = node.get(k)
        if child is None:
            child = node[k] = {}
        if not isinstance(child, dict):
            raise UserError(f"{origin}: cannot set '{dotted}': '{k}' is a value, not a section")
        node = child
    node[keys[-1]] = value


def parse_override(item: str) -> tuple[str, Any]:
    """`finetune.epochs=2` -> ("finetune.epochs", 2); the value is read as YAML (numbers, lists, null;
    YAML 1.2 booleans, so `finetune.bf16=off` is the string "off")."""
    if "=" not in item:
        raise UserError(f"--set {item!r}: expected key=value, e.g. --set finetune.epochs=2")
    key, raw = item.split("=", 1)
    key = key.strip()
    if not key:
        raise UserError(f"--set {item!r}: empty key")
    if "" in (parts := key.split(".")) or any(p != p.strip() for p in parts):
        # `.epochs`, `finetune..epochs`, `finetune.`: a dotted path with a missing name, not an unknown key
        raise UserError(f"--set {item!r}: '{key}' has an empty or space-padded name between its dots; write section.field, e.g. "
                        "finetune.epochs=2")
    try:
        return key, read_yaml(raw) if raw.strip() else None
    except DuplicateKeyError as err:
        raise UserError(f"--set {item}: key '{err.key}' appears twice; merge the two") from None
    except yaml.YAMLError:
        return key, raw


def _override_for(loc: tuple, overrides: list[str]) -> tuple[str, bool] | None:
    """(the last `--set` item on the error's path, whether it set that field or a section holding it).

    False means the item set a field inside the failing section (a section-wide check): it may be the
    cause, or the file's other fields may be."""
    path = [str(p) for p in loc]
    for item in reversed(overrides):
        keys = item.split("=", 1)[0].strip().split(".")
        n = min(len(keys), len(path))
        if path and keys[:n] == path[:n]:
            return item, len(keys) <= len(path)
    return None


# what pydantic adds to an error's location inside `int | Literal["auto"]`: the union member that failed
_UNION_TAG = re.compile(r"^(constrained-\w+|literal\[.*\]|int|float|str|bool|none)$")


def format_validation_error(err: ValidationError, origin: str, overrides: list[str] | None = None) -> str:
    """One line: where the value came from (the file, or the `--set` item that gave it), the dotted field
    and what is wrong with it."""
    first = err.errors()[0]
    loc = ".".join(str(p) for p in first["loc"] if not _UNION_TAG.match(str(p))) or "(top level)"
    found = _override_for(first["loc"], overrides or [])
    if found is not None:
        item, exact = found
        origin = f"--set {item}" if exact or origin == "command line" else f"{origin} with --set {item}"
    if first["type"] == "extra_forbidden" and str(first["loc"][-1]) == "<<":  # yaml12.RecipeLoader reads 1.2 only
        return (f"{origin}: '{loc}' is a YAML 1.1 merge key, which recipes do not read (they are YAML 1.2); write "
                "the merged keys out in that section")
    if first["type"] == "extra_forbidden":
        return f"{origin}: unknown key '{loc}' (check the spelling; see deploykit/config/ for the schema)"
    msg = first["msg"].removeprefix("Value error, ")
    got = first.get("input")
    got_s = "" if isinstance(got, dict) or got is None else f" (got {got!r})"
    if isinstance(got, dict) and first["type"] in ("string_type", "int_type", "float_type", "bool_type"):
        # `--set data.prompt_template=Review: {sentence}` is YAML for a mapping: say so, or the line names no fix
        got_s = f" (got the mapping {got!r}: YAML reads 'key: value' and '{{...}}' as one; quote the whole value)"
    places = {tuple(str(p) for p in e["loc"] if not _UNION_TAG.match(str(p))) for e in err.errors()}
    more = f" [+{len(places) - 1} more]" if len(places) > 1 else ""
    if any(e["type"] == "literal_error" and e["loc"][:-1] == first["loc"][:-1] for e in err.errors()[1:]):
        msg += ", or auto"  # the keyword branch of `int | Literal["auto"]` failed too
    return f"{origin}: {loc}: {msg}{got_s}{more}"
