"""records.py: JSON numbers that are not finite (NaN, Infinity, 1e400) or too long to read are refused in one line."""

from __future__ import annotations

import pytest

from deploykit.errors import UserError
from deploykit.records import label_keys, read_rows, texts


@pytest.mark.parametrize("cell", ["NaN", "Infinity", "-Infinity", "1e400", "-1e400"])
def test_non_finite_cell_is_refused_naming_line_and_column(tmp_path, cell):
    f = tmp_path / "train.jsonl"
    f.write_text('{"sentence": "fine", "label": 1}\n{"sentence": %s, "label": %s}\n' % (cell, cell))
    rows = read_rows(f, None)
    with pytest.raises(UserError, match=rf"train.jsonl: line 2 has {cell} for column 'sentence', a number that is "
                                        "not finite; write the text as a JSON string"):
        texts(rows, "sentence", str(f))
    with pytest.raises(UserError, match=rf"line 2 has {cell} for column 'label'"):
        label_keys(rows, "label", str(f))  # was a class named "nan" / "inf"


def test_finite_numbers_stay_their_digits(tmp_path):
    f = tmp_path / "t.jsonl"
    f.write_text('{"sentence": 1.5}\n{"sentence": 7}\n{"sentence": 1e300}\n')
    assert texts(read_rows(f, None), "sentence", str(f)) == ["1.5", "7", "1e+300"]


def test_hub_rows_with_nan_are_named_by_row():
    with pytest.raises(UserError, match="hub: row 2 has nan for column 'text'"):
        texts([{"text": "a"}, {"text": float("nan")}], "text", "hub")


def test_a_number_too_long_to_read_says_so(tmp_path):
    f = tmp_path / "t.jsonl"
    f.write_text('{"sentence": "a"}\n{"sentence": %s}\n' % ("9" * 5000))
    with pytest.raises(UserError) as err:
        read_rows(f, None)
    assert "line 2: a number of 5000 digits is too long to be read" in str(err.value)
    assert "set_int_max_str_digits" not in str(err.value)
