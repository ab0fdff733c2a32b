"""deploykit/llm/data.py and the data.prompt_template check (deploykit/config/data.py): every cell a prompt or a
response reads is text, a prompt is never empty, and a template has plain {column} fields only; each fault is one
line naming the file, line and column, exit 2."""

from __future__ import annotations

import json
import re

import pytest
from typer.testing import CliRunner

from deploykit.cli import app
from deploykit.config import DataConfig, build_recipe
from deploykit.errors import UserError
from deploykit.llm.data import load_chat_task

GOOD = [{"instruction": f"Say {i}", "input": "" if i % 2 else "ctx", "output": f"answer {i}"} for i in range(12)]


def instructions(folder, odd: dict, **kw) -> DataConfig:
    """A generation task whose train.jsonl ends with `odd` on line 13."""
    (folder / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in [*GOOD, odd]))
    fields = dict(path=str(folder), task="generation", prompt_template="{instruction}\n\n{input}",
                  response_column="output", validation_split=0.2)
    return DataConfig(**{**fields, **kw})


@pytest.mark.parametrize("odd, message", [
    ({"instruction": None, "input": "", "output": "x"}, "line 13 has no value for column 'instruction'"),
    ({"instruction": ["a", "b"], "input": "", "output": "x"},
     "line 13: column 'instruction' is a list, not text; write the text as a JSON string"),
    ({"instruction": "a", "input": {"k": 1}, "output": "x"}, "line 13: column 'input' is an object, not text"),
    ({"instruction": True, "input": "", "output": "x"}, "line 13: column 'instruction' is a boolean, not text"),
    ({"instruction": "a", "input": "", "output": None}, "line 13 has no value for column 'output'"),
    ({"instruction": "a", "input": "", "output": ["x"]}, "line 13: column 'output' is a list, not text"),
    ({"instruction": "", "input": "", "output": "x"},
     "line 13: the prompt is empty or invisible characters only (data.prompt_template '{instruction}\\n\\n{input}' "
     "filled from the row); fill in the row's text, or remove the row"),
    ({"instruction": " \u200b ", "input": "\u00ad", "output": "x"}, "line 13: the prompt is empty or invisible"),
    ({"instruction": "a", "input": "", "output": ""}, "line 13 has an empty 'output' (the response to learn)"),
    ({"instruction": "a", "input": "", "output": " \u200b "}, "line 13 has an empty 'output' (the response to learn)"),
    # json.dumps writes float nan / inf as NaN / Infinity, which json reads back: they were the texts "nan" / "inf"
    ({"instruction": float("nan"), "input": "", "output": "x"},
     "line 13 has NaN for column 'instruction', a number that is not finite; write the text as a JSON string"),
    ({"instruction": "a", "input": float("-inf"), "output": "x"}, "line 13 has -Infinity for column 'input'"),
    ({"instruction": "a", "input": "", "output": float("inf")}, "line 13 has Infinity for column 'output'"),
])
def test_a_cell_that_is_not_text_or_an_empty_prompt_is_named_by_file_line_and_column(tmp_path, odd, message):
    # before: None, ['a', 'b'] and {'k': 1} became the prompt texts 'None', "['a', 'b']", "a\n\n{'k': 1}", and an
    # empty or invisible instruction trained on the prompt '' or '\u200b', all without a word
    with pytest.raises(UserError, match=re.escape(f"{tmp_path / 'train.jsonl'}: {message}")):
        load_chat_task(instructions(tmp_path, odd))


def test_a_number_is_text_as_its_digits_as_classification_reads_it(tmp_path):
    # records.texts reads a JSON number as its digits for a classifier's sentence; a prompt or response does too
    task = load_chat_task(instructions(tmp_path, {"instruction": 12, "input": 3.5, "output": 5}, validation_split=0.01))
    i = task.train.responses.index("5")
    assert task.train.prompts[i] == "12\n\n3.5"


def test_without_a_template_the_text_column_is_the_prompt_as_written(tmp_path):
    rows = [{"a.b": f"text {i}", "label": i % 2} for i in range(12)] + [{"a.b": "\u200b", "label": 0}]
    (tmp_path / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = DataConfig(path=str(tmp_path / "train.jsonl"), task="generation", text_column="a.b",
                     label_names=["no", "yes"])
    # '{a.b}' would read attribute b of column a; the column itself is the prompt
    with pytest.raises(UserError, match=re.escape("line 13: the prompt is empty or invisible characters only "
                                                  "(column 'a.b')")):
        load_chat_task(cfg)
    (tmp_path / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows[:-1]))
    assert load_chat_task(cfg).train.prompts[0].startswith("text ")


@pytest.mark.parametrize("template, message", [
    ("{instruction.upper}", "'{instruction.upper}' reads an attribute of column 'instruction'; use plain {column} "
                            "fields such as '{instruction}' (write {{ and }} for literal braces)"),
    ("Q: {instruction.nope}", "'{instruction.nope}' reads an attribute of column 'instruction'"),
    ("{instruction.__class__}", "'{instruction.__class__}' reads an attribute of column 'instruction'"),
    ("{instruction[0]}", "'{instruction[0]}' reads an item of column 'instruction'"),
    ("{instruction!r}", "'{instruction!r}' has a conversion; use plain {column} fields"),
    ("{instruction:>10}", "'{instruction:>10}' has a format spec"),
    ("{instruction} {0}", "'{0}' is positional; use plain {column} fields such as '{sentence}'"),
    ("{instruction} {}", "'{}' is positional"),
])
def test_a_template_field_other_than_a_plain_column_is_refused_at_recipe_load(tmp_path, template, message):
    # before: '{instruction.upper}' put "<built-in method upper of str object at 0x7f...>" (a new address each run)
    # into every prompt, '{instruction[0]}' the first letter, and '{instruction.nope}' crashed finetune and
    # validate with an AttributeError, exit 1
    with pytest.raises(UserError, match=re.escape(f"data.prompt_template: {message}")):
        build_recipe({"data": {"name": "x", "task": "generation", "prompt_template": template}})
    recipe = tmp_path / "r.yaml"
    recipe.write_text(json.dumps({"model": {"source": str(tmp_path)}, "finetune": {},
                                  "data": {"path": str(tmp_path), "task": "generation", "prompt_template": template,
                                           "response_column": "output"}}))
    result = CliRunner().invoke(app, ["validate", str(recipe)])
    assert result.exit_code == 2 and message in result.output and "Traceback" not in result.output


@pytest.mark.parametrize("data, answer", [
    ({"response_column": "output", "prompt_template": "{instruction}\n{output}"}, "{output}, the data.response_column"),
    ({"prompt_template": "Review: {sentence} {label}"}, "{label}, the data.label_column"),
    ({"label_column": "y", "prompt_template": "{y}? {sentence}"}, "{y}, the data.label_column"),
])
def test_a_template_that_names_the_answer_column_is_refused(data, answer):
    # before: every prompt held its answer, the model learned to copy it, and exact match read near 100%
    with pytest.raises(UserError, match=re.escape(f"data: prompt_template names {answer} (the answer to learn)")):
        build_recipe({"data": {"name": "x", "task": "generation", **data}})


def test_a_template_may_name_the_label_column_when_the_response_is_another():
    data = {"name": "x", "task": "generation", "response_column": "output", "prompt_template": "{label}: {sentence}"}
    assert build_recipe({"data": data}).data.prompt_template == "{label}: {sentence}"


def test_literal_braces_and_plain_fields_are_kept(tmp_path):
    task = load_chat_task(instructions(tmp_path, GOOD[0], prompt_template="{{json}} {instruction}: {input}",
                                       validation_split=0.01))
    assert "{json} Say 0: ctx" in task.train.prompts
