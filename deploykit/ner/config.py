"""The recipe keys of a token-classification data section, until the task kind is wired.

    cfg = TagDataConfig(path="../shared/data/conll2003")          # tokens / ner_tags columns, IOB2 tags

This model becomes part of `deploykit.config.DataConfig` (as `data.task: token_classification`) when the task
kind is wired into the stages; its keys keep DataConfig's names where they mean the same thing (path,
train_file, validation_file, test_file, label_names, validation_split, seed, max_length, window_stride).
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from deploykit.config import Section


class TagDataConfig(Section):
    """Where tagged sentences come from and how they are cut into model inputs."""

    path: str = Field(description="a .jsonl or CoNLL file, or a folder of train/dev/test files")
    train_file: str | None = None
    validation_file: str | None = None
    test_file: str | None = None
    tokens_column: str = Field("tokens", description="JSONL: the column holding each sentence's words")
    tags_column: str = Field("ner_tags", description="JSONL: the column holding each word's tag (IOB2 or ids)")
    label_names: list[str] | None = Field(
        None, description="the tag of each id, in id order (needed for integer tags; else the tags found, O first)")
    validation_split: float = Field(0.1, gt=0, lt=1)
    seed: int = 42
    max_length: Annotated[int, Field(ge=8, le=65536)] = Field(
        128, description="tokens per window, special tokens included; longer sentences become several windows")
    window_stride: Annotated[int, Field(ge=0)] | Literal["auto"] = Field(
        "auto", description="tokens consecutive windows of one sentence share; auto: a quarter of max_length")
    label_all_tokens: bool = Field(
        False, description="train on every word piece (the I- version of the word's tag on the pieces after the "
                           "first) instead of the first piece only")
