"""deploykit/transfer.py and the `unlabeled:` sections: unlabelled texts read, sampled, refused in one line."""

from __future__ import annotations

from pathlib import Path

import pytest

from deploykit.config import DataConfig, UnlabeledConfig, build_recipe
from deploykit.errors import UserError
from deploykit.transfer import add_unlabeled, read_unlabeled

DATA = DataConfig(task="token_classification", path="unused", seed=7)


def test_a_headerless_table_is_read_by_the_column_names_given(tmp_path):
    (tmp_path / "news.tsv").write_text("first story\tWorld\n\t\nsecond story\tSports\n", encoding="utf-8")
    cfg = UnlabeledConfig(path=str(tmp_path / "news.tsv"), column_names=["text", "label"])
    assert read_unlabeled(cfg, DATA) == ["first story", "second story"]  # a blank text is dropped


def test_name_is_a_file_under_the_data_dir_and_max_rows_is_a_seeded_sample(tmp_path, monkeypatch):
    (tmp_path / "corpus").mkdir()
    (tmp_path / "corpus" / "lines.txt").write_text("".join(f"text {i}\n" for i in range(50)), encoding="utf-8")
    monkeypatch.setenv("DEPLOYKIT_DATA_DIR", str(tmp_path))
    cfg = UnlabeledConfig(name="corpus/lines.txt", max_rows=5)
    picked = read_unlabeled(cfg, DATA)
    assert len(picked) == 5 and picked == read_unlabeled(cfg, DATA)  # the same five every time, in file order
    assert picked == sorted(picked, key=lambda t: int(t.split()[1])) and picked != [f"text {i}" for i in range(5)]
    other = read_unlabeled(cfg, DATA.model_copy(update={"seed": 8}))
    assert other != picked  # data.seed draws them


def test_a_jsonl_file_reads_text_column(tmp_path):
    (tmp_path / "a.jsonl").write_text('{"body": "one"}\n{"body": "two"}\n', encoding="utf-8")
    assert read_unlabeled(UnlabeledConfig(path=str(tmp_path / "a.jsonl"), text_column="body"), DATA) == ["one", "two"]


@pytest.mark.parametrize("make, expected", [
    (lambda p: UnlabeledConfig(path=str(p / "missing.tsv")), "missing.tsv: file not found"),
    (lambda p: UnlabeledConfig(path=str(p / "t.tsv")),
     r"no column 'text' \(columns: story, label\); set unlabeled.text_column"),
    (lambda p: UnlabeledConfig(name="t.tsv"), "no data dir to find it in"),
    (lambda p: UnlabeledConfig(path=str(p / "blank.txt")), "no texts"),
])
def test_bad_input_is_one_line_naming_what_to_fix(tmp_path, monkeypatch, make, expected):
    monkeypatch.delenv("DEPLOYKIT_DATA_DIR", raising=False)
    (tmp_path / "t.tsv").write_text("story\tlabel\na\tb\n", encoding="utf-8")
    (tmp_path / "blank.txt").write_text("\n \n", encoding="utf-8")
    with pytest.raises(UserError, match=expected) as err:
        read_unlabeled(make(tmp_path), DATA)
    assert "\n" not in str(err.value)


def recipe(task: str, distill: dict | None = None, prune: dict | None = None):
    tree = {"data": {"task": task, "path": "d"}, "distill": distill}
    if prune is not None:
        tree["prune"] = prune
    return build_recipe(tree)


@pytest.mark.parametrize("task, distill, prune, expected", [
    ("generation", {"unlabeled": {"path": "x.txt"}}, None,
     "distill.unlabeled is read by data.task classification and token_classification"),
    ("classification", {}, {"ffn": 0.5, "vocab": True, "recovery": {}, "unlabeled": {"path": "x.txt"}},
     "prune.unlabeled with prune.vocab"),
    ("token_classification", {"alpha_kd": 0.0, "unlabeled": {"path": "x.txt"}}, None, "set alpha_kd above 0"),
    ("token_classification", {}, {"ffn": 0.5, "unlabeled": {"path": "x.txt"}},
     "prune.unlabeled needs a recovery section and distill_from_parent"),
    ("token_classification", {"unlabeled": {"path": "x.txt", "name": "y.txt"}}, None, "give exactly one of"),
    ("token_classification", {"unlabeled": {"max_rows": 5}}, None, "give exactly one of"),
])
def test_an_unlabeled_section_that_cannot_apply_is_refused(task, distill, prune, expected):
    with pytest.raises(UserError, match=expected) as err:
        recipe(task, distill, prune)
    assert "\n" not in str(err.value)


def test_a_token_classifier_takes_unlabeled_texts_in_both_kd_stages():
    r = recipe("token_classification", {"unlabeled": {"path": "x.txt"}},
               {"ffn": 0.5, "recovery": {}, "unlabeled": {"name": "news.tsv", "column_names": ["text", "label"]}})
    # a relative path is read from the working directory, and recorded as the absolute path it named
    assert r.distill.unlabeled.path == str(Path.cwd() / "x.txt") and r.prune.unlabeled.column_names == ["text", "label"]


def test_windows_of_unlabelled_texts_follow_the_training_windows(tmp_path):
    from conftest import MINILM, write_long_task

    from deploykit.data import load_task, to_dataset
    from deploykit.models import load_tokenizer
    from deploykit.transfer import KD_ONLY
    from deploykit.windows import TEXT_OF

    data = DataConfig(path=str(write_long_task(tmp_path / "long")), long_texts="windows", max_length=16,
                      window_stride=4)
    tok = load_tokenizer(MINILM)
    train = to_dataset(load_task(data).train, tok, 16, 4, "train")
    (tmp_path / "more.txt").write_text("a short one\n" + " ".join(["word"] * 40) + "\n", encoding="utf-8")
    both = add_unlabeled(train, UnlabeledConfig(path=str(tmp_path / "more.txt")), data, tok, 16, 4)
    extra = both.select(range(len(train), len(both)))
    assert len(train) == 48 * 3 and len(extra) > 2 and set(extra["labels"]) == {KD_ONLY}
    # the text ids go on after the 48 training texts: no window is pooled with a training text's
    assert sorted(set(extra[TEXT_OF])) == [48, 49] and both[TEXT_OF][:len(train)] == train[TEXT_OF]
    assert add_unlabeled(train, None, data, tok, 16, 4) is train


def test_run_and_validate_read_the_unlabelled_file_before_any_training(tmp_path):
    from typer.testing import CliRunner

    from deploykit.cli import app
    from deploykit.pipeline import run_recipe

    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "train.jsonl").write_text('{"tokens": ["kofi", "went"], "ner_tags": ["B-PER", "O"]}\n' * 8)
    r = build_recipe({"data": {"task": "token_classification", "path": str(tmp_path / "d")},
                      "finetune": {}, "distill": {"unlabeled": {"path": str(tmp_path / "nowhere.txt")}}})
    with pytest.raises(UserError, match="nowhere.txt: file not found"):
        run_recipe(r, tmp_path / "run")
    assert not (tmp_path / "run").exists()  # refused before the run folder was made
    (tmp_path / "r.yaml").write_text(f"data: {{task: token_classification, path: {tmp_path / 'd'}}}\nfinetune: {{}}\n"
                                     f"distill: {{unlabeled: {{path: {tmp_path / 'nowhere.txt'}}}}}\n")
    result = CliRunner().invoke(app, ["validate", str(tmp_path / "r.yaml")])
    assert result.exit_code != 0 and "nowhere.txt: file not found" in result.output
