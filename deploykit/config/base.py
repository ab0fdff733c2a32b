"""What every recipe section shares: `extra="forbid"` models, the `auto`-or-number type, the stage names."""

from __future__ import annotations

import math
import types
from pathlib import Path
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel, ConfigDict, PlainValidator, ValidationInfo, field_validator

STAGES = ("finetune", "distill", "prune", "quantize", "export", "bench")


def absolute_path(path: str | None) -> str | None:
    """A recipe's file or folder path made absolute (`~` expanded): read from the working directory, as a command
    line path is, and so recorded in every manifest, which then names the file a model was trained on wherever the
    command ran (a relative path named another file in another directory under the same config hash)."""
    if path is None or not path.strip():
        return path
    # absolute(), not abspath(): "link/../data" is the folder the OS resolves, not "./data"
    return str(Path(path).expanduser().absolute())


class Section(BaseModel):
    # allow_inf_nan=False: `learning_rate: .inf` (or "nan") is refused as "should be a finite number"
    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)

    @field_validator("*", mode="before")
    @classmethod
    def _no_bool_for_numbers(cls, value: Any, info: ValidationInfo) -> Any:
        # pydantic's lax mode reads `true` as 1 for an int or float field: `learning_rate: true` trained at 1.0
        annotation = cls.model_fields[info.field_name].annotation
        if _bool_where_not_taken(value, annotation):
            if isinstance(value, list):  # `student_layers: [true]`, `bench.targets: [true]`
                raise ValueError(f"each item should be {_expected(_list_item(annotation))}, not true/false")
            raise ValueError(f"should be {_expected(annotation)}, not true/false")
        if value is None and not _takes_none(annotation):
            # `max_steps: null` (or an empty `max_steps:`) read "Input should be a valid integer"
            field = cls.model_fields[info.field_name]
            takes = _expected(annotation, quote_hint=False)
            if field.is_required():
                raise ValueError(f"should be {takes}, not null")
            default = field.get_default(call_default_factory=True)
            if isinstance(default, BaseModel):  # a section: its repr (GateConfig(max_drop=1.0, ...)) is noise here
                raise ValueError(f"should be {takes}, not null (leave the key out for its defaults)")
            raise ValueError(f"should be {takes}, not null (leave the key out for its default, {default!r})")
        return value


def _expected(annotation: Any, quote_hint: bool = True) -> str:
    """What a field takes, in words: its choices, or a number, a text, a list, a section's mapping.

    Args:
        annotation: the field's type.
        quote_hint: for a text, say how to give the word true as one (the true/false refusal; not for null).
    """
    found: list[str] = []

    def walk(a: Any) -> None:
        origin = get_origin(a)
        if origin is Literal:
            found.extend(repr(v) for v in get_args(a) if not isinstance(v, bool))
        elif origin is list:
            found.append("a list")
        elif origin is not None:  # Union, Annotated, X | None
            for arg in get_args(a):
                walk(arg)
        elif a in (int, float):
            found.append("a number")
        elif a in (str, Path):
            found.append("a text (quote it: 'true')" if quote_hint else "a text")
        elif isinstance(a, type) and issubclass(a, BaseModel):  # a section (gate:, export.tensorrt:)
            found.append("a mapping of its settings")
    walk(annotation)
    words = list(dict.fromkeys(found)) or ["a number"]
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " or " + words[-1]


def _takes_bool(annotation: Any) -> bool:
    """Whether `annotation` (int | None, Annotated[...], Literal[...], ...) admits a bool as itself."""
    if annotation is bool or annotation is Any:
        return True
    if get_origin(annotation) is Literal:
        return any(isinstance(a, bool) for a in get_args(annotation))
    return any(_takes_bool(a) for a in get_args(annotation))


def _takes_none(annotation: Any) -> bool:
    """Whether `annotation` admits None (`int | None`, `Optional[...]`, Any, `Literal[None, ...]`)."""
    if annotation is None or annotation is type(None) or annotation is Any:
        return True
    if get_origin(annotation) is Literal:
        return None in get_args(annotation)
    return any(_takes_none(a) for a in get_args(annotation))


def _list_item(annotation: Any) -> Any:
    """The item type of a list field (`list[int] | None` -> int), else None."""
    members = get_args(annotation) if get_origin(annotation) in (Union, types.UnionType) else (annotation,)
    items = [get_args(m)[0] for m in members if get_origin(m) is list and get_args(m)]
    return items[0] if items else None


def _bool_where_not_taken(value: Any, annotation: Any) -> bool:
    """A bool given for a field that takes none, or inside a list of such items (`student_layers: [true]`)."""
    if isinstance(value, bool):
        return not _takes_bool(annotation)
    if isinstance(value, list):
        item = _list_item(annotation)
        return item is not None and any(_bool_where_not_taken(v, item) for v in value)
    return False


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
