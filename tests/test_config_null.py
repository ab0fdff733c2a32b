"""deploykit/config/base.py: what a recipe says for `null` (or an empty value) where a field or a section takes none."""

from __future__ import annotations

import re

import pytest

from deploykit.config import build_recipe
from deploykit.errors import UserError


@pytest.mark.parametrize("item, says", [
    # a section said "should be a number, not null (... default, GateConfig(max_drop=1.0, ...))"
    ("gate=null", "should be a mapping of its settings, not null (leave the key out for its defaults)"),
    ("model=null", "should be a mapping of its settings, not null (leave the key out for its defaults)"),
    ("export.tensorrt=null", "should be a mapping of its settings, not null (leave the key out for its defaults)"),
    # the quote hint is for true/false: a null text field said "a text (quote it: 'true')"
    ("model.source=null", "should be a text, not null (leave the key out for its default, "),
    ("data.text_column=null", "should be a text, not null (leave the key out for its default, 'sentence')"),
])
def test_null_where_not_taken_says_what_is(item, says):
    with pytest.raises(UserError, match=rf"--set {re.escape(item)}: {item.split('=')[0]}: {re.escape(says)}") as err:
        build_recipe({"data": {"name": "x", "text_column": "sentence"}, "finetune": None, "export": {}}, [item])
    assert "Config(" not in str(err.value) and "quote it" not in str(err.value)


@pytest.mark.parametrize("item, says", [("gate=true", "should be a mapping of its settings, not true/false"),
                                        ("data.text_column=true", "should be a text (quote it: 'true'), not true/false")])
def test_true_or_false_for_a_section_or_a_text_says_what_is(item, says):
    with pytest.raises(UserError, match=rf"--set {re.escape(item)}: {item.split('=')[0]}: {re.escape(says)}"):
        build_recipe({"data": {"name": "x"}, "finetune": None}, [item])
