"""Class ids from the training file's labels (deploykit/labels.py): no class is made up by a malformed row, a gap in
integer ids or a name no training row has; each of those is one line naming the fix."""

import pytest

from deploykit.config import DataConfig
from deploykit.data import load_task
from deploykit.errors import UserError


def _folder(tmp_path, labels, header="sentence\tlabel\n"):
    d = tmp_path / "data"
    d.mkdir(parents=True)
    rows = "".join(f"text number {i}\t{lab}\n" for i, lab in enumerate(labels))
    (d / "train.tsv").write_text(header + rows)
    return d


@pytest.mark.parametrize("labels, names", [
    (["0", "1"] * 8, ["0", "1"]),
    (["pos", "neg"] * 8, ["neg", "pos"]),
    (["2", "0", "1"] * 6, ["0", "1", "2"]),
])
def test_well_formed_labels_keep_their_classes(tmp_path, labels, names):
    task = load_task(DataConfig(path=str(_folder(tmp_path, labels))))
    assert task.labels == names


@pytest.mark.parametrize("labels, message", [
    # 1,000,001 classes from two labels before: a 45 MB config.json and a head that cannot learn
    (["0", "1000000"] * 8, r"train.tsv: integer labels are class ids 0..N-1, but no training row has id 1 \('1'\), "
                           r"2 \('2'\), 3 \('3'\), 4 \('4'\) and 999995 more \(labels 0..1000000: 1-based, or codes\?\); "
                           r"renumber them from 0, or list every label in data.label_names"),
    # a 1-based file gained an empty class "0"
    (["1", "2"] * 8, r"no training row has id 0 \('0'\) \(labels 1..2: 1-based, or codes\?\)"),
])
def test_integer_labels_with_gaps_are_refused(tmp_path, labels, message):
    with pytest.raises(UserError, match=message) as err:
        load_task(DataConfig(path=str(_folder(tmp_path, labels))))
    assert "\n" not in str(err.value)


def test_naming_every_value_takes_integers_as_class_names(tmp_path):
    task = load_task(DataConfig(path=str(_folder(tmp_path, ["1", "2"] * 8)), label_names=["1", "2"]))
    assert task.labels == ["1", "2"] and sorted(set(task.train.labels) | set(task.validation.labels)) == [0, 1]


def test_one_odd_value_in_an_integer_column_is_refused_naming_its_line(tmp_path):
    # a spreadsheet's "nan" became a class of its own
    labels = ["0", "1"] * 8 + ["nan"]
    with pytest.raises(UserError, match=r"train.tsv: line 18 has label 'nan' in a column of integer labels \(1 such "
                                        r"value\(s\)\); fix or remove those rows, or list every label"):
        load_task(DataConfig(path=str(_folder(tmp_path, labels))))
    # named by the user, every value is a class name
    task = load_task(DataConfig(path=str(_folder(tmp_path / "named", labels)), label_names=["0", "1", "nan"]))
    assert task.labels == ["0", "1", "nan"]


def test_a_header_read_as_a_row_is_refused(tmp_path):
    # data.column_names on a file that has a header: its "label" became a class, its "sentence" a training text
    d = _folder(tmp_path, ["0", "1"] * 8)
    with pytest.raises(UserError, match=r"line 1 has label 'label' in a column of integer labels"):
        load_task(DataConfig(path=str(d), column_names=["sentence", "label"]))


@pytest.mark.parametrize("labels, names, message", [
    (["0", "1"] * 8, ["a", "b", "c"], r"no training row has the class 2 \('c'\) of data.label_names; remove it"),
    (["pos", "neg"] * 8, ["neg", "neutral", "pos"], r"no training row has the class 'neutral' of data.label_names"),
])
def test_a_named_class_without_training_rows_is_refused(tmp_path, labels, names, message):
    with pytest.raises(UserError, match=message):
        load_task(DataConfig(path=str(_folder(tmp_path, labels)), label_names=names))


def test_a_text_column_named_as_the_label_column_is_refused(tmp_path):
    # every row a class of its own: the split then reported "too few rows to train and validate"
    d = _folder(tmp_path, ["0", "1"] * 20)
    with pytest.raises(UserError, match=r"label column 'sentence' holds 40 different values in 40 rows \(e.g. "
                                        r"'text number 0'\): a text column\?"):
        load_task(DataConfig(path=str(d), label_column="sentence", text_column="label"))
