"""What every recipe section shares: `extra="forbid"` models, the `auto`-or-number type, the stage names."""

from __future__ import annotations

import math
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, PlainValidator

STAGES = ("finetune", "distill", "prune", "quantize", "export", "bench")


class Section(BaseModel):
    # allow_inf_nan=False: `learning_rate: .inf` (or "nan") is refused as "should be a finite number"
    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)


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
