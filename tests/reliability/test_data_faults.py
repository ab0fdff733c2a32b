"""Faults found in the data reader (issue 18, item 3), and case 05's files, each built in tmp_path.

Every fault is either read exactly as written, or refused with one line naming the file and the line.
    python -m pytest -q tests/reliability/test_data_faults.py
"""

import csv
import io
import json
from pathlib import Path

import pytest

from deploykit.config import DataConfig
from deploykit.data import load_task
from deploykit.errors import UserError

ROWS = [(f"row {i} was {'good' if i % 2 else 'bad'}", "pos" if i % 2 else "neg") for i in range(12)]


def tsv(rows, header="text\tlabel") -> str:
    return header + "\n" + "".join("\t".join(r) + "\n" for r in rows)


def load(folder: Path, **cfg):
    return load_task(DataConfig(path=str(folder), text_column="text", **cfg))


def all_rows(task) -> list[tuple[str, str]]:
    splits = [task.train, task.validation] + ([task.test] if task.test else [])
    return [(t, task.labels[y]) for s in splits for t, y in zip(s.texts, s.labels)]


def write(tmp_path: Path, name: str, content: str | bytes) -> Path:
    d = tmp_path / "data"
    d.mkdir(exist_ok=True)
    (d / name).write_bytes(content if isinstance(content, bytes) else content.encode("utf-8"))
    return d


# ---------------------------------------------------------------- read as written

def test_quoted_csv_field_keeps_its_line_break(tmp_path):
    d = write(tmp_path, "train.csv", 'text,label\n"first line\nsecond line",neg\n' + "".join(f"{t},{y}\n" for t, y in ROWS))
    assert ("first line\nsecond line", "neg") in all_rows(load(d))


@pytest.mark.parametrize("name, content", [
    ("train.csv", "text,label\n" + "".join(f"{t},{y}\n" for t, y in ROWS) + "the plot\u2028was bad,neg\n"
                  "acting\u0085quite good,pos\n"),
    ("train.tsv", tsv(ROWS + [("the plot\u2028was bad", "neg"), ("acting\u0085quite good", "pos")])),
    ("train.jsonl", "".join(json.dumps({"text": t, "label": y}, ensure_ascii=False) + "\n"
                            for t, y in ROWS + [("the plot\u2028was bad", "neg"), ("acting\u0085quite good", "pos")])),
])
def test_unicode_line_separators_stay_inside_the_text(tmp_path, name, content):
    got = all_rows(load(write(tmp_path, name, content)))
    assert len(got) == len(ROWS) + 2
    assert {("the plot\u2028was bad", "neg"), ("acting\u0085quite good", "pos")} <= set(got)


def test_glue_tsv_keeps_raw_quotes(tmp_path):
    rows = ROWS + [('she said "bad', "neg"), ('"good" he wrote "', "pos")]
    assert {('she said "bad', "neg"), ('"good" he wrote "', "pos")} <= set(all_rows(load(write(tmp_path, "train.tsv", tsv(rows)))))


def test_headerless_bom_crlf_and_blank_lines(tmp_path):
    body = "\r\n".join(f"{t}\t{y}" for t, y in ROWS[:6]) + "\r\n\r\n\t\r\n" + "\r\n".join(f"{t}\t{y}" for t, y in ROWS[6:])
    d = write(tmp_path, "train.tsv", "\ufeff" + body + "\r\n")
    assert sorted(all_rows(load(d, column_names=["text", "label"]))) == sorted(ROWS)


@pytest.mark.parametrize("raw, want", [("1.0", "1"), ("0.0", "0"), ("2", "2")])
def test_integral_float_labels_are_class_ids(tmp_path, raw, want):
    rows = [(f"text {i}", raw if i == 3 else str(i % 3)) for i in range(12)]
    task = load(write(tmp_path, "train.tsv", tsv(rows)))
    assert task.labels == ["0", "1", "2"]
    assert ("text 3", want) in all_rows(task)


# ---------------------------------------------------------------- refused in one line, naming file and line

FAULTS = [
    pytest.param("train.tsv", tsv(ROWS[:5], header="text\tlabel\tlabel"),
                 r"train\.tsv: column 'label' appears twice in the header", id="duplicate-header"),
    pytest.param("train.csv", "text,text,label\na,b,pos\n",
                 r"train\.csv: column 'text' appears twice in the header", id="duplicate-header-csv"),
    pytest.param("train.tsv", tsv(ROWS[:5] + [("a tab\tinside", "neg")] + ROWS[5:]),
                 r"train\.tsv: line 7 has 3 fields, the header has 2 \(a tab inside a text\?\)", id="extra-tab"),
    pytest.param("train.tsv", tsv(ROWS[:2] + [("no label",)] + ROWS[2:]),
                 r"train\.tsv: line 4 has 1 field, the header has 2", id="missing-field"),
    pytest.param("train.csv", "text,label\n" + "".join(f"{t},{y}\n" for t, y in ROWS[:3]) + "one, two,neg\n",
                 r"train\.csv: line 5 has 3 fields, the header has 2 \(an unquoted comma", id="extra-comma"),
    pytest.param("train.tsv", tsv(ROWS[:3] + [("empty label", "")] + ROWS[3:]),
                 r"train\.tsv: line 5 has no label \(column 'label'\)", id="empty-label"),
    pytest.param("train.tsv", tsv(ROWS[:3] + [("blank label", "  ")] + ROWS[3:]),
                 r"train\.tsv: line 5 has no label", id="blank-label"),
    pytest.param("train.csv", 'text,label\n"two\nlines",pos\n' + "".join(f"{t},{y}\n" for t, y in ROWS[:4]) + "x,\n",
                 r"train\.csv: line 8 has no label", id="empty-label-after-multiline-field"),
    pytest.param("train.jsonl", "".join(json.dumps({"text": t, "label": y}) + "\n" for t, y in ROWS[:4])
                 + '{"text": "null label", "label": null}\n',
                 r"train\.jsonl: line 5 has no label", id="jsonl-null-label"),
    pytest.param("train.jsonl", "".join(json.dumps({"text": t, "label": y}) + "\n\n" for t, y in ROWS[:4])
                 + '{"text": "no label key"}\n',
                 r"train\.jsonl: line 9 has no label", id="jsonl-missing-label"),
    pytest.param("train.tsv", tsv([(f"t {i}", str(v)) for i, v in enumerate([0, 1, 0.5, 3.7, 1, 0])]),
                 r"train\.tsv: line 4 has label '0\.5', a fraction: .*classification", id="float-labels"),
    pytest.param("train.jsonl", "".join(json.dumps({"text": f"t {i}", "label": v}) + "\n"
                                        for i, v in enumerate([0, 1, 2.25, 1])),
                 r"train\.jsonl: line 3 has label '2\.25', a fraction", id="jsonl-float-labels"),
    pytest.param("train.jsonl", '{"text": "a", "label": 1}\n[1, 2]\n',
                 r"train\.jsonl: line 2 is not a JSON object", id="jsonl-not-object"),
]


@pytest.mark.parametrize("name, content, message", FAULTS)
def test_fault_is_one_line_naming_file_and_line(tmp_path, name, content, message):
    with pytest.raises(UserError, match=message) as err:
        load(write(tmp_path, name, content))
    assert "\n" not in str(err.value)


def test_fault_in_dev_file_names_dev_and_its_line(tmp_path):
    d = write(tmp_path, "train.tsv", tsv(ROWS))
    (d / "dev.tsv").write_text(tsv(ROWS[:2] + [("x", "")]), encoding="utf-8")
    with pytest.raises(UserError, match=r"dev\.tsv: line 4 has no label"):
        load(d)


def test_duplicated_column_names_setting(tmp_path):
    with pytest.raises(UserError, match=r"data\.column_names: 'text' appears twice"):
        load(write(tmp_path, "train.tsv", "".join(f"{t}\t{y}\n" for t, y in ROWS)), column_names=["text", "text"])


def test_headerless_row_count_is_checked_against_column_names(tmp_path):
    d = write(tmp_path, "train.tsv", "".join(f"{t}\t{y}\n" for t, y in ROWS[:3]) + "a\tb\tneg\n")
    with pytest.raises(UserError, match=r"train\.tsv: line 4 has 3 fields, data\.column_names has 2"):
        load(d, column_names=["text", "label"])


# ---------------------------------------------------------------- case 05: every format read back byte for byte

SPECIAL = [
    ("good, really good, I mean it", "positive"),
    ("first line of the review\nsecond line: awful", "negative"),
    ("café naïve façade – lovely 😀", "positive"),
    ('she said "terrible" twice', "negative"),
    ("the plot\u2028was dreadful", "negative"),
    ("acting\u0085quite wonderful", "positive"),
]


def case05_rows(n: int) -> list[tuple[str, str]]:
    base = [(f"review {i} was {'lovely' if i % 2 else 'awful'}", "positive" if i % 2 else "negative") for i in range(n)]
    return base[:5] + SPECIAL + base[5:]


def case05_files(folder: Path, fmt: str, split: str, rows) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    if fmt == "csv":
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\r\n")  # RFC 4180 quoting, CRLF, as Excel and pandas write
        w.writerow(["text", "label"])
        for i, r in enumerate(rows):
            w.writerow(r)
            if i % 7 == 3:
                buf.write("\r\n")  # blank lines between records
        (folder / f"{split}.csv").write_text("\ufeff" + buf.getvalue(), encoding="utf-8", newline="")
    elif fmt == "jsonl":
        (folder / f"{split}.jsonl").write_text(
            "".join(json.dumps({"text": t, "label": y}, ensure_ascii=False) + "\n" for t, y in rows), encoding="utf-8")
    else:  # GLUE-style TSV cannot hold a newline inside a field; U+2028 / U+0085 are plain text to it
        (folder / f"{split}.tsv").write_text(tsv([r for r in rows if "\n" not in r[0]]), encoding="utf-8")


@pytest.mark.parametrize("fmt", ["csv", "jsonl", "tsv"])
def test_case05_every_row_read_back_byte_for_byte(tmp_path, fmt):
    train, dev = case05_rows(30), case05_rows(10)
    case05_files(tmp_path / fmt, fmt, "train", train)
    case05_files(tmp_path / fmt, fmt, "dev", dev)
    task = load(tmp_path / fmt)
    want = [r for r in dev if fmt != "tsv" or "\n" not in r[0]]
    got = list(zip(task.validation.texts, [task.labels[y] for y in task.validation.labels]))
    assert got == want
    assert task.labels == ["negative", "positive"] and len(task.train) == len([r for r in train
                                                                               if fmt != "tsv" or "\n" not in r[0]])


# ---------------------------------------------------------------- case 09: data.max_length above the model's positions

def long_task(folder: Path) -> Path:
    import random

    rng = random.Random(0)
    folder.mkdir(parents=True)
    for split, n in (("train", 32), ("dev", 16)):
        lines = ["sentence\tlabel"]
        for i in range(n):
            words = [rng.choice(["the", "film", "plot", "was", "quite", "and"]) for _ in range(rng.randint(70, 110))]
            words.insert(rng.randrange(len(words)), "great" if i % 2 else "awful")
            lines.append(f"{' '.join(words)}\t{i % 2}")
        (folder / f"{split}.tsv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return folder


@pytest.mark.parametrize("asked", [128, "auto"])
@pytest.mark.parametrize("arch, positions, want", [("bert", 64, 64), ("roberta", 66, 65)])
def test_case09_finetune_with_max_length_above_positions(tmp_path, monkeypatch, arch, positions, want, asked):
    """data.max_length 128 (the old default), or auto on rows of ~100 tokens, on a model with fewer positions:
    cut to what it holds, said once, recorded in the manifest."""
    from conftest import make_tiny_model

    import deploykit.data as data
    from deploykit.config import build_recipe
    from deploykit.evaluate import evaluate_artifact
    from deploykit.pipeline import run_stage

    said = []
    monkeypatch.setattr(data, "log", said.append)
    monkeypatch.setattr(data, "_CUTS_LOGGED", set())
    model = make_tiny_model(tmp_path / "model", arch, max_position_embeddings=positions)
    recipe = build_recipe({"model": {"source": str(model)},
                           "data": {"path": str(long_task(tmp_path / "task")), "label_names": ["negative", "positive"],
                                    "max_length": asked},
                           "finetune": {"epochs": 1, "batch_size": 16, "warmup_ratio": 0.0,
                                        "early_stopping_patience": None}})
    art = run_stage("finetune", recipe, None, tmp_path / "ft")
    assert (tmp_path / "ft" / "model.safetensors").is_file()
    assert art.manifest["max_length"] == want
    if asked == 128:
        assert said == [f"data.max_length 128 is longer than the model's {want} positions: inputs are truncated "
                        f"to {want} tokens"]
    else:
        assert len(said) == 1 and said[0].startswith(f"data.max_length auto: {want} tokens (the model holds {want})")
    # the gate scores the saved model the same way
    task = load_task(recipe.data)
    assert 0 <= evaluate_artifact(art, task.validation, asked, task=task)["accuracy"] <= 100


@pytest.mark.parametrize("value, kind", [('["a", "b"]', "a list"), ("true", "a boolean"), ('{"t": 1}', "an object")])
def test_a_jsonl_text_that_is_not_text_is_refused_in_one_line(tmp_path, value, kind):
    from deploykit.config import DataConfig

    f = tmp_path / "train.jsonl"
    f.write_text('{"sentence": "fine", "label": 1}\n' + f'{{"sentence": {value}, "label": 0}}\n'
                 + "".join(f'{{"sentence": "row {i}", "label": {i % 2}}}\n' for i in range(20)))
    with pytest.raises(UserError, match=rf"train.jsonl: line 2: column 'sentence' is {kind}, not text"):
        load_task(DataConfig(path=str(f)))


@pytest.mark.parametrize("value, kind", [("true", "a boolean"), ("[1]", "a list"), ('{"y": 1}', "an object")])
def test_a_jsonl_label_that_is_not_a_class_is_refused_naming_its_line(tmp_path, value, kind):
    from deploykit.config import DataConfig

    f = tmp_path / "train.jsonl"
    f.write_text("".join(f'{{"sentence": "row {i}", "label": {i % 2}}}\n' for i in range(20))
                 + f'{{"sentence": "odd", "label": {value}}}\n')
    with pytest.raises(UserError, match=rf"train.jsonl: line 21: label column 'label' is {kind} \("):
        load_task(DataConfig(path=str(f), label_names=["neg", "pos"]))


def test_a_csv_text_longer_than_the_csv_modules_field_limit_is_read_whole(tmp_path):
    long_text = "a long review, " * 20_000  # 300,000 characters: over csv's default 131,072 field limit
    d = write(tmp_path, "train.csv", f'text,label\n"{long_text}",neg\n' + "".join(f"{t},{y}\n" for t, y in ROWS))
    assert (long_text, "neg") in all_rows(load(d))


def test_an_unclosed_quote_names_the_line_it_opened_on(tmp_path):
    body = "".join(f"{t},{y}\n" for t, y in ROWS[:4]) + '"never closed,neg\n' + "".join(f"{t},{y}\n" for t, y in ROWS[4:])
    with pytest.raises(UserError, match=r"train.csv: line 6 .*a quote opened on line 6 is never closed"):
        load(write(tmp_path, "train.csv", "text,label\n" + body))


@pytest.mark.parametrize("body, message", [
    # one column: the unclosed quote swallowed every later row into one text, and predict answered fewer rows
    ('text\na fine film\n"unclosed quote\na dull one\nawful\n', r"line 3 .*a quote opened on line 3 is never closed"),
    # the quotes of '"a 12" record' were dropped from the text without a word
    ('text,label\nfine,pos\n"a 12" record of a film,neg\n', r"line 3 .*a space or text follows a quoted field's closing"),
    ('text,label\n"bad movie,neg\nfine,pos\nthe "best" one,pos\n', r"line 2 .*a quote opened on line 2 closes on line 4"),
])
def test_malformed_csv_quoting_is_refused_not_read_as_other_rows(tmp_path, body, message):
    from deploykit.records import read_rows

    path = tmp_path / "rows.csv"
    path.write_text(body)
    with pytest.raises(UserError, match=message):
        read_rows(path, None)
