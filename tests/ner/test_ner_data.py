"""deploykit/ner/data.py and readers.py: JSONL and CoNLL files, folders, the label list, one-line errors.

Named test_ner_data.py, not test_data.py: test files share one namespace (no __init__.py), and
tests/test_data.py holds that name.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import SHARED_DATA

from deploykit.config import DataConfig
from deploykit.errors import UserError
from deploykit.ner import data as ner_data
from deploykit.ner.data import label_list, load_tags
from deploykit.ner.readers import read_conll, read_jsonl


def tagged(**data) -> DataConfig:
    """A recipe's data section for tagged sentences."""
    return DataConfig(task="token_classification", **data)


LABELS = ["O", "B-LOC", "I-LOC", "B-PER", "I-PER"]


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def sentence(words: str, tags: str, **extra) -> dict:
    return {"tokens": words.split(), "ner_tags": tags.split(), **extra}


ROWS = [sentence("Peter Blackburn went home", "B-PER I-PER O O"),
        sentence("EU rejects German call", "B-ORG O B-MISC O"),
        sentence("in London", "O B-LOC")]

CONLL = """-DOCSTART- -X- -X- O

EU NNP B-NP B-ORG
rejects VBZ B-VP O
German JJ B-NP B-MISC

Peter NNP B-NP B-PER
Blackburn NNP I-NP I-PER
-DOCSTART- -X- -X- O
BRUSSELS NNP B-NP B-LOC
"""


def test_jsonl_string_tags_become_ids_of_an_o_first_label_list(tmp_path):
    s = read_jsonl(write_jsonl(tmp_path / "train.jsonl", ROWS))
    assert s.tokens[0] == ["Peter", "Blackburn", "went", "home"] and s.tags[2] == ["O", "B-LOC"]
    assert s.where(1) == "line 2"
    labels = label_list(s.tags)
    # O first, then a B-/I- pair per type, types sorted: I-LOC is listed although only B-LOC was seen
    assert labels == ["O", "B-LOC", "I-LOC", "B-MISC", "I-MISC", "B-ORG", "I-ORG", "B-PER", "I-PER"]
    task = load_tags(tagged(path=str(tmp_path / "train.jsonl"), validation_split=0.34))
    assert task.labels == labels
    assert len(task.train) + len(task.validation) == 3 and len(task.validation) == 1


def test_integer_tags_take_the_given_names_and_columns_are_configurable(tmp_path):
    rows = [{"words": ["Peter", "in", "Paris"], "tags": [3, 0, 1]}]
    path = write_jsonl(tmp_path / "train.jsonl", rows)
    s = read_jsonl(path, "words", "tags", LABELS)
    assert s.tags == [["B-PER", "O", "B-LOC"]]
    with pytest.raises(UserError, match=r"train\.jsonl: line 1: tag ids \(3\) need their names: set data.label_names"):
        read_jsonl(path, "words", "tags")
    with pytest.raises(UserError, match=r"line 1: tag id 3 is outside data.label_names \(0..2\)"):
        read_jsonl(path, "words", "tags", LABELS[:3])
    with pytest.raises(UserError, match=r"line 1 has no column 'tokens' \(columns: words, tags\)"):
        read_jsonl(path)


def test_tokens_and_tags_of_different_lengths_name_the_line(tmp_path):
    path = write_jsonl(tmp_path / "train.jsonl", ROWS + [{"tokens": ["a", "b", "c"], "ner_tags": ["O", "O"]}])
    with pytest.raises(UserError, match=r"train\.jsonl: line 4 has 3 tokens but 2 tags"):
        read_jsonl(path)


@pytest.mark.parametrize("row, message", [
    ({"tokens": [], "ner_tags": []}, r"line 4: column 'tokens' is an empty list; give the sentence's words"),
    # no word piece carries such a word's tag: the entity could never be learned, and was accepted without a word
    ({"tokens": ["\u200b", "b"], "ner_tags": ["B-PER", "O"]}, r"line 4: word 1 \('\\u200b'\) is tagged B-PER but has no"),
    ({"tokens": ["a", " "], "ner_tags": ["O", "I-LOC"]}, r"line 4: word 2 \(' '\) is tagged I-LOC"),
])
def test_a_sentence_without_words_or_an_entity_without_a_visible_word_is_refused(tmp_path, row, message):
    with pytest.raises(UserError, match=message):
        read_jsonl(write_jsonl(tmp_path / "train.jsonl", ROWS + [row]))
    # a blank word tagged O is read: nothing is lost where no tag is
    blank_o = {"tokens": ["a", " "], "ner_tags": ["O", "O"]}
    assert read_jsonl(write_jsonl(tmp_path / "ok.jsonl", ROWS + [blank_o])).tokens[-1] == ["a", " "]


@pytest.mark.parametrize("tag, names, message", [
    ("PER", None, r"line 3: tag 'PER' is outside the IOB2 scheme \(O, B-TYPE, I-TYPE\)"),
    ("E-PER", None, r"line 3: tag 'E-PER' is outside the IOB2 scheme"),
    ("B-GPE", LABELS, r"line 3: tag 'B-GPE' is not in data.label_names \(O, B-LOC, I-LOC, B-PER, I-PER\)"),
])
def test_a_tag_outside_the_scheme_or_the_names_names_its_line(tmp_path, tag, names, message):
    write_jsonl(tmp_path / "train.jsonl", [ROWS[0], ROWS[2], sentence("in London", f"O {tag}")])
    with pytest.raises(UserError, match=message):
        load_tags(tagged(path=str(tmp_path), label_names=names))


def test_a_label_name_outside_the_scheme_is_refused(tmp_path):
    write_jsonl(tmp_path / "train.jsonl", ROWS)
    with pytest.raises(UserError, match=r"data.label_names: 'PER' is not an IOB2 tag"):
        load_tags(tagged(path=str(tmp_path), label_names=["O", "PER"]))


def test_empty_file_and_bad_json_are_one_line_errors(tmp_path):
    (tmp_path / "empty.jsonl").write_text("\n")
    with pytest.raises(UserError, match=r"empty\.jsonl: file is empty"):
        read_jsonl(tmp_path / "empty.jsonl")
    (tmp_path / "bad.jsonl").write_text(json.dumps(ROWS[0]) + '\n{"tokens": ["a"], \n')
    with pytest.raises(UserError, match=r"bad\.jsonl: line 2 is not valid JSON"):
        read_jsonl(tmp_path / "bad.jsonl")
    (tmp_path / "empty.conll").write_text("-DOCSTART- -X- O\n\n")
    with pytest.raises(UserError, match=r"empty\.conll: file holds no tagged words"):
        read_conll(tmp_path / "empty.conll")


def test_i_after_o_or_another_type_is_counted_and_logged_once(tmp_path, monkeypatch):
    said = []
    monkeypatch.setattr(ner_data, "log", said.append)
    # stray I- tags: I-PER first in a sentence (line 1), I-LOC after O (line 2), I-LOC after B-PER (line 3)
    rows = [sentence("Peter Blackburn", "I-PER I-PER"), sentence("in London", "O I-LOC"),
            sentence("Peter London", "B-PER I-LOC"), sentence("Peter Blackburn", "B-PER I-PER")]
    write_jsonl(tmp_path / "train.jsonl", rows)
    write_jsonl(tmp_path / "dev.jsonl", rows[3:])
    task = load_tags(tagged(path=str(tmp_path)))
    assert task.stray_inside == {"train": 3, "validation": 0}
    assert len(said) == 1 and "3 I- tags start an entity" in said[0] and "first at line 1" in said[0]
    assert task.train.tags[0] == [task.labels.index("I-PER")] * 2  # kept as written, not rewritten to B-


def test_conll_columns_tag_last_docstart_skipped(tmp_path):
    path = tmp_path / "train.conll"
    path.write_text(CONLL)
    s = read_conll(path)
    assert s.tokens == [["EU", "rejects", "German"], ["Peter", "Blackburn"], ["BRUSSELS"]]
    assert s.tags == [["B-ORG", "O", "B-MISC"], ["B-PER", "I-PER"], ["B-LOC"]]
    assert [s.where(0, 2), s.where(1, 1), s.where(2)] == ["line 5", "line 8", "line 10"]
    path.write_text(CONLL.replace("Blackburn NNP I-NP I-PER", "Blackburn NNP I-NP I_PER"))
    with pytest.raises(UserError, match=r"train\.conll: line 8: tag 'I_PER' is outside the IOB2 scheme"):
        load_tags(tagged(path=str(path)))
    path.write_text(CONLL.replace("rejects VBZ B-VP O", "rejects"))
    with pytest.raises(UserError, match=r"train\.conll: line 4 has one column \('rejects'\)"):
        read_conll(path)
    # a CoNLL word is split on white space, so an invisible one is U+200B and the like: refused as in JSONL files
    path.write_text(CONLL.replace("Blackburn NNP", "\u200b NNP"))
    with pytest.raises(UserError, match=r"train\.conll: line 8: word 2 .* is tagged I-PER but has no visible"):
        read_conll(path)


def test_folder_of_conll_and_jsonl_splits(tmp_path):
    (tmp_path / "train.txt").write_text(CONLL)
    write_jsonl(tmp_path / "dev.jsonl", [sentence("Peter in BRUSSELS", "B-PER O B-LOC")])
    (tmp_path / "test.conll").write_text("EU B-ORG\n")
    task = load_tags(tagged(path=str(tmp_path)))
    assert (len(task.train), len(task.validation), len(task.test)) == (3, 1, 1)
    ids = {name: i for i, name in enumerate(task.labels)}
    assert task.validation.tags == [[ids["B-PER"], ids["O"], ids["B-LOC"]]]
    write_jsonl(tmp_path / "dev.jsonl", [sentence("Peter in Bonn", "B-PER O B-GPE")])
    with pytest.raises(UserError, match=r"dev\.jsonl: line 1: tag 'B-GPE' never appears in the training data"):
        load_tags(tagged(path=str(tmp_path)))
    with pytest.raises(UserError, match=r"nope\.jsonl: data file not found \(data.validation_file\)"):
        load_tags(tagged(path=str(tmp_path), validation_file="nope.jsonl"))
    (tmp_path / "train.txt").unlink()
    with pytest.raises(UserError, match=r"no train file \(train.jsonl/.conll/.txt/.tsv/.iob/.bio\)"):
        load_tags(tagged(path=str(tmp_path)))


def test_held_out_validation_is_seeded_and_disjoint(tmp_path):
    rows = [sentence(f"word{i} London", "O B-LOC") for i in range(40)]
    write_jsonl(tmp_path / "train.jsonl", rows)
    cfg = tagged(path=str(tmp_path), validation_split=0.25, seed=3)
    a, b = load_tags(cfg), load_tags(cfg)
    assert a.validation.tokens == b.validation.tokens and len(a.validation) == 10 and len(a.train) == 30
    assert not {t[0] for t in a.train.tokens} & {t[0] for t in a.validation.tokens}
    other = load_tags(cfg.model_copy(update={"seed": 4}))
    assert other.validation.tokens != a.validation.tokens


def test_held_out_sentences_a_training_sentence_holds_go_back_to_training(tmp_path, capsys, monkeypatch):
    from deploykit import overlap

    monkeypatch.setattr(overlap, "_said", set())  # each line is said once per process
    # 60 datelines repeat (CoNLL-2003's "LONDON 1996-08-22"), 400 sentences are each their own
    rows = [sentence("LONDON 1996-08-22", "B-LOC O") for _ in range(60)]
    rows += [sentence(f"word{i} went to Paris", "O O O B-LOC") for i in range(400)]
    write_jsonl(tmp_path / "train.jsonl", rows)
    task = load_tags(tagged(path=str(tmp_path), validation_split=0.3))
    assert all(t != ["LONDON", "1996-08-22"] for t in task.validation.tokens) and len(task.validation) >= 100
    assert len(task.train) + len(task.validation) == 460  # no sentence lost
    assert "validation sentences occur inside a training text" in " ".join(capsys.readouterr().err.split())
    kept = load_tags(tagged(path=str(tmp_path), validation_split=0.3, validation_overlap="keep"))
    assert sum(t == ["LONDON", "1996-08-22"] for t in kept.validation.tokens) >= 5


def test_real_conll2003_dev_loads():
    dev = SHARED_DATA / "conll2003" / "dev.jsonl"
    if not dev.is_file():
        pytest.skip(f"real data not found at {SHARED_DATA} (set DEPLOYKIT_DATA_DIR)")
    s = read_jsonl(dev)
    assert len(s.tokens) == 3250 and sum(map(len, s.tokens)) == 51362
    task = load_tags(tagged(path=str(dev)))  # one file: train, with a seeded share held out
    assert len(task.train) + len(task.validation) == 3250
    assert task.train.n_words + task.validation.n_words == 51362
    assert task.labels == ["O", "B-LOC", "I-LOC", "B-MISC", "I-MISC", "B-ORG", "I-ORG", "B-PER", "I-PER"]
    assert task.stray_inside == {"train": 0}


# ---- hub datasets: tags as a sequence of ClassLabel ids (conll2003's layout), names from the features

def _hub(monkeypatch, names, rows_per_split):
    import datasets

    features = datasets.Features({"tokens": datasets.Sequence(datasets.Value("string")),
                                  "ner_tags": datasets.Sequence(datasets.ClassLabel(names=names))})
    ds = datasets.DatasetDict({split: datasets.Dataset.from_list(rows, features=features)
                               for split, rows in rows_per_split.items()})
    asked = []
    monkeypatch.setattr(datasets, "load_dataset", lambda name, config=None: asked.append((name, config)) or ds)
    return asked


def test_hub_classlabel_tags_take_the_names_the_dataset_declares(monkeypatch):
    names = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]
    train = [{"tokens": ["Ana", "Lima", "lives", "in", "Porto"], "ner_tags": [1, 2, 0, 0, 3]}] * 9
    dev = [{"tokens": ["Porto", "Alegre"], "ner_tags": [3, 4]}]
    asked = _hub(monkeypatch, names, {"train": train, "validation": dev})
    task = load_tags(DataConfig(task="token_classification", name="some/conll-like", hub_config="en"))
    assert asked == [("some/conll-like", "en")]
    assert task.labels == names  # the declared id order, not the order tags first appear
    assert task.validation.tokens == [["Porto", "Alegre"]] and task.validation.tags == [[3, 4]]
    assert len(task.train) == 9 and task.train.tags[0] == [1, 2, 0, 0, 3]


def test_hub_rows_with_unequal_lengths_and_non_iob_names_are_one_line_errors(monkeypatch):
    _hub(monkeypatch, ["O", "B-PER"], {"train": [{"tokens": ["Ana", "x"], "ner_tags": [1]}]})
    with pytest.raises(UserError, match=r"hub:d/train: row 1 has 2 tokens but 1 tags"):
        load_tags(DataConfig(task="token_classification", name="d"))
    _hub(monkeypatch, ["O", "PER"], {"train": [{"tokens": ["Ana"], "ner_tags": [1]}]})
    with pytest.raises(UserError, match=r"hub:d: tag name 'PER' is not an IOB2 tag .*data.label_names"):
        load_tags(DataConfig(task="token_classification", name="d"))


def test_a_hub_dataset_out_of_reach_names_the_local_folder_and_the_fix(monkeypatch, tmp_path):
    import datasets

    def offline(*args, **kwargs):
        raise ConnectionError("Couldn't reach the Hugging Face Hub")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    with pytest.raises(UserError, match=r"dataset 'conll2003': not found locally .* nor on the hub .*data.path"):
        load_tags(DataConfig(task="token_classification", name="conll2003", data_dir=str(tmp_path)))


def test_a_test_file_that_would_be_found_as_validation_is_test_only(tmp_path):
    # conll2003/dev.jsonl is the set papers report on: named as data.test_file, checkpoints and gates must use
    # rows held out of train instead, never the rows that are reported
    folder = tmp_path / "conll"
    folder.mkdir()
    row = {"tokens": ["Ana", "runs"], "ner_tags": ["B-PER", "O"]}
    (folder / "train.jsonl").write_text("\n".join(json.dumps(row) for _ in range(20)) + "\n")
    (folder / "dev.jsonl").write_text(json.dumps({"tokens": ["Porto"], "ner_tags": ["B-LOC"]}) + "\n")
    task = load_tags(DataConfig(task="token_classification", path=str(folder), test_file="dev.jsonl",
                                label_names=["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]))
    assert task.test.tokens == [["Porto"]]
    assert len(task.validation) == 2 and len(task.train) == 18 and ["Porto"] not in task.validation.tokens
    same = load_tags(DataConfig(task="token_classification", path=str(folder),
                                label_names=["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]))
    assert same.validation.tokens == [["Porto"]] and same.test is None  # unnamed, dev.jsonl is validation
