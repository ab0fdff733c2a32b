"""A manifest.json field deploykit reads back, of a type it cannot use, is one line naming the field when the
folder is opened (deploykit/manifest_fields.py), not a fallback or a traceback later."""

import json

import pytest

from deploykit.artifact import load_artifact
from deploykit.errors import UserError

WRITTEN = {"stage": "finetune", "format": "pytorch", "parent": None, "config": {"data": {"text_column": "sentence"}},
           "metrics": {}, "labels": ["negative", "positive"], "max_length": 32,
           "columns": {"text_column": "sentence", "text_pair_column": None}}


def _folder(tmp_path, **fields):
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "manifest.json").write_text(json.dumps({**WRITTEN, **fields}))
    return tmp_path


def test_a_manifest_as_the_stages_write_it_opens(tmp_path):
    assert load_artifact(_folder(tmp_path)).manifest["max_length"] == 32
    assert load_artifact(_folder(tmp_path, max_length=None, window_stride=0, onnx_file="model.onnx")).format == "pytorch"


@pytest.mark.parametrize("fields, message", [
    # was read as "not recorded": the model ran at its position limit instead of the 32 tokens it was trained with
    ({"max_length": "abc"}, "max_length is 'abc', not a positive integer"),
    ({"max_length": 0}, "max_length is 0, not a positive integer"),
    ({"max_length": True}, "max_length is a boolean, not a positive integer"),
    ({"window_stride": -1}, "window_stride is -1, not an integer >= 0"),
    ({"parent": 5}, "parent is 5, not an object or null"),  # was exit 1: AttributeError: 'int' object has no ...
    ({"config": []}, "config is a list, not an object or null"),
    ({"columns": "sentence"}, "columns is 'sentence', not an object"),
    ({"format": None}, "format is null, not a string"),
    ({"onnx_file": "../other/model.onnx"}, "onnx_file is '../other/model.onnx', not the name of a file in the folder"),
    ({"engine_file": 3}, "engine_file is 3, not the name of a file in the folder"),
])
def test_a_field_of_the_wrong_type_is_one_line_naming_it(tmp_path, fields, message):
    with pytest.raises(UserError, match="manifest.json: " + message.replace("(", r"\(").replace(")", r"\)")) as err:
        load_artifact(_folder(tmp_path, **fields))
    assert str(err.value).endswith("re-run the stage that wrote it (or fix the field)")
