"""Data loading: files, folders, named datasets from a local mirror, labels, splits and every bad input."""

import pytest

from deploykit.config import DataConfig
from deploykit.data import load_task, stratified_split
from deploykit import overlap
from deploykit.errors import UserError


def test_folder_with_train_dev_test(tiny_task):
    task = load_task(DataConfig(path=str(tiny_task)))
    assert (len(task.train), len(task.validation), len(task.test)) == (64, 32, 32)
    assert task.labels == ["0", "1"]
    assert set(task.train.labels) == {0, 1}


def test_label_names_for_integer_labels(tiny_task):
    task = load_task(DataConfig(path=str(tiny_task), label_names=["negative", "positive"]))
    assert task.labels == ["negative", "positive"]


def test_string_labels_map_to_sorted_ids(tmp_path):
    f = tmp_path / "news.tsv"
    f.write_text("".join(f"text {i}\t{lab}\n" for i, lab in enumerate(["World", "Sports", "Business"] * 20)))
    task = load_task(DataConfig(path=str(f), column_names=["text", "label"], text_column="text",
                                validation_split=0.2, test_split=0.1))
    assert task.labels == ["Business", "Sports", "World"]
    assert len(task.train) + len(task.validation) + len(task.test) == 60
    # stratified: every label is held out in the same proportion
    assert sorted(task.validation.labels).count(0) == sorted(task.validation.labels).count(2)


def test_sentence_pairs_and_jsonl(tmp_path):
    d = tmp_path / "pairs"
    d.mkdir()
    rows = [{"a": f"premise {i}", "b": f"hypothesis {i}", "y": ["yes", "no"][i % 2]} for i in range(20)]
    import json
    (d / "train.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    task = load_task(DataConfig(path=str(d), text_column="a", text_pair_column="b", label_column="y"))
    assert task.train.pairs is not None and task.train.pairs[0].startswith("hypothesis")
    assert task.test is None
    # a pair's second text may be empty (dolly's instructions without an input); its first may not
    rows[3]["b"] = ""
    (d / "train.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    assert load_task(DataConfig(path=str(d), text_column="a", text_pair_column="b", label_column="y")).train.pairs
    rows[3]["a"] = ""
    (d / "train.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    with pytest.raises(UserError, match="line 4: column 'a' is empty or invisible characters only; give each row"):
        load_task(DataConfig(path=str(d), text_column="a", text_pair_column="b", label_column="y"))


def test_csv_file(tmp_path):
    f = tmp_path / "train.csv"
    f.write_text('text,label\n"hello, world",pos\nbye,neg\nagain,pos\nstop,neg\n')
    task = load_task(DataConfig(path=str(tmp_path), text_column="text"))
    assert "hello, world" in task.train.texts + task.validation.texts


def test_split_is_seeded_and_stratified(tiny_task):
    task = load_task(DataConfig(path=str(tiny_task)))
    a, b = stratified_split(task.train, 0.25, seed=3)
    a2, b2 = stratified_split(task.train, 0.25, seed=3)
    assert b.texts == b2.texts and len(b) == 16 and b.labels.count(0) == b.labels.count(1)
    assert not set(a.texts) & set(b.texts) or len(set(a.texts)) < len(a)  # no row is in both


def test_named_dataset_from_local_mirror(shared_data):
    task = load_task(DataConfig(name="sst2", data_dir=str(shared_data), max_train_samples=100))
    assert len(task.train) == 100 and len(task.test) == 872


def test_named_dataset_from_environment(tiny_task, monkeypatch):
    monkeypatch.setenv("DEPLOYKIT_DATA_DIR", str(tiny_task.parent))
    assert len(load_task(DataConfig(name="task")).train) == 64


def test_named_dataset_missing_everywhere_says_both(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    with pytest.raises(UserError, match=r"not found locally .* nor on the hub"):
        load_task(DataConfig(name="no-such-dataset-xyz", data_dir=str(tmp_path)))


@pytest.mark.parametrize("setup, message", [
    (lambda d: None, "data path not found"),
    (lambda d: (d.mkdir(), (d / "notes.txt").write_text("x")), "no train file"),
    (lambda d: (d.mkdir(), (d / "train.tsv").write_text("")), "file is empty"),
    (lambda d: (d.mkdir(), (d / "train.tsv").write_text("text\tlabel\nhi\t1\n")), "no column 'sentence'"),
    (lambda d: (d.mkdir(), (d / "train.tsv").write_bytes(b"sentence\tlabel\ncaf\xe9\t1\n")), "line 2 is not UTF-8"),
    (lambda d: (d.mkdir(), (d / "train.tsv").write_text("sentence\tlabel\na\t0\nb\t1\n"),
                (d / "dev.tsv").write_text("sentence\tlabel\nc\t7\n")), "label '7', never seen in the training"),
    # an empty text trained the classifier on the special tokens alone
    (lambda d: (d.mkdir(), (d / "train.tsv").write_text("sentence\tlabel\na\t0\n\t1\n \t0\n\u200b\u00ad\t1\n")),
     "line 3: column 'sentence' is empty or invisible characters only .3 rows are.; give each row its text"),
    (lambda d: (d.mkdir(), (d / "train.tsv").write_text("sentence\tlabel\n" + "a film\t1\n" * 20)),
     "every training row has the label '1'; a classifier needs rows of at least two labels"),
])
def test_bad_inputs_are_one_clear_line(tmp_path, setup, message):
    d = tmp_path / "data"
    setup(d)
    with pytest.raises(UserError, match=message) as err:
        load_task(DataConfig(path=str(d)))
    assert "\n" not in str(err.value)


# ---------------------------------------------------------------- max_length against the model's positions (case 09)

@pytest.mark.parametrize("arch, overrides, asked, want", [
    ("bert", {"max_position_embeddings": 64}, 128, 64),
    ("bert", {"max_position_embeddings": 64}, 32, 32),
    ("distilbert", {"max_position_embeddings": 64}, 128, 64),
    ("roberta", {"max_position_embeddings": 66, "pad_token_id": 1}, 128, 64),  # real RoBERTa: positions from 2
    ("roberta", {"max_position_embeddings": 66}, 128, 65),                     # the tiny one pads with id 0
])
def test_fit_max_length_cuts_to_usable_positions(arch, overrides, asked, want, monkeypatch):
    from conftest import tiny_config

    import deploykit.data as data

    said = []
    monkeypatch.setattr(data, "log", said.append)
    monkeypatch.setattr(data, "_CUTS_LOGGED", set())
    assert data.fit_max_length(asked, tiny_config(arch, **overrides)) == want
    assert len(said) == (asked != want) and all(f"truncated to {want} tokens" in s for s in said)
    data.fit_max_length(asked, tiny_config(arch, **overrides))
    assert len(said) == (asked != want)  # said once per run, not by every stage


def test_fit_max_length_reads_a_model_folder_and_the_tokenizer_pad(tmp_path):
    from transformers import XLMRobertaConfig

    from deploykit.data import fit_max_length, usable_positions

    XLMRobertaConfig(max_position_embeddings=514, pad_token_id=1).save_pretrained(tmp_path / "xlmr")
    assert fit_max_length(1024, tmp_path / "xlmr") == 512
    assert fit_max_length(1024, tmp_path) == 1024  # no config.json: nothing known, nothing cut
    no_pad = XLMRobertaConfig(max_position_embeddings=100)
    no_pad.pad_token_id = None
    assert usable_positions(no_pad, type("Tok", (), {"pad_token_id": 3})()) == 96


def test_usable_positions_is_what_the_model_can_run(tmp_path):
    """The RoBERTa offset is real: 65 tokens run through a 66-row table with pad id 0, 66 do not."""
    import torch
    from conftest import tiny_config
    from transformers import AutoModelForSequenceClassification

    from deploykit.data import usable_positions

    cfg = tiny_config("roberta", max_position_embeddings=66)
    model = AutoModelForSequenceClassification.from_config(cfg).eval()
    n = usable_positions(cfg)
    with torch.no_grad():
        model(input_ids=torch.full((1, n), 5))
        with pytest.raises((IndexError, RuntimeError)):  # past the table: out of range
            model(input_ids=torch.full((1, n + 1), 5))


# ---- data.max_length: auto

def _words_split(counts: list[int]):
    from deploykit.data import Split

    return Split([" ".join(["film"] * n) for n in counts], None, [0] * len(counts))


def test_auto_max_length_covers_the_longer_of_training_and_validation_rows(tiny_bert, monkeypatch):
    """SST-2's case: short training phrases, long validation sentences. The length comes from the
    validation rows (else the rows the model is judged on would be cut), as a multiple of 8."""
    from transformers import AutoTokenizer

    import deploykit.data as data

    said = []
    monkeypatch.setattr(data, "log", said.append)
    tok = AutoTokenizer.from_pretrained(tiny_bert)
    task = data.TaskData(_words_split([3] * 200), _words_split([10] * 99 + [30]), None, ["a"], "t")
    # 12 tokens ([CLS] 10 words [SEP]) at the 99th percentile of validation -> 16; the one row of 32 is cut
    assert data.fit_max_length("auto", tiny_bert, tok, task) == 16
    assert said == ["data.max_length auto: 16 tokens, the 99th percentile of 300 training and validation rows; "
                    "0.3% of them are truncated (longest 32)"]
    assert data.fit_max_length("auto", tiny_bert, tok, task) == 16 and len(said) == 1  # measured once
    # what the input artifact was trained with wins over a new measurement; a number is taken as given
    assert data.fit_max_length("auto", tiny_bert, tok, task, recorded=24) == 24
    assert data.fit_max_length(40, tiny_bert, tok, task, recorded=24) == 40


def test_auto_max_length_stays_within_the_positions(tiny_bert):
    from transformers import AutoConfig, AutoTokenizer

    import deploykit.data as data

    config = AutoConfig.from_pretrained(tiny_bert)
    config.max_position_embeddings = 20
    tok = AutoTokenizer.from_pretrained(tiny_bert)
    task = data.TaskData(_words_split([50] * 10), _words_split([50] * 10), None, ["a"], "t2")
    assert data.fit_max_length("auto", config, tok, task) == 20


def test_max_length_auto_is_the_default_and_numbers_below_8_are_refused():
    assert DataConfig(name="x").max_length == "auto"
    with pytest.raises(ValueError, match="greater than or equal to 8"):
        DataConfig(name="x", max_length=4)


def _lengths_task(folder, test_words=(15, 25)):
    """train: 3,000 phrases of 2-4 words and 800 sentences of 15-25; test: 200 rows of `test_words` words."""
    import random

    rng = random.Random(0)
    folder.mkdir()

    def rows(n, lo, hi):
        return "".join(f"{' '.join(['word'] * rng.randint(lo, hi))} {i}\t{i % 2}\n" for i in range(n))

    (folder / "train.tsv").write_text("sentence\tlabel\n" + rows(3000, 2, 4) + rows(800, 15, 25))
    (folder / "test.tsv").write_text("sentence\tlabel\n" + rows(200, *test_words))
    return folder


def test_matched_validation_rows_are_shaped_like_the_test_rows(tmp_path):
    folder = _lengths_task(tmp_path / "t")
    # (its rows share numbers: "word word 200" is inside a training row "word ... word 200"; the overlap rule is off)
    matched = load_task(DataConfig(path=str(folder), validation_rows="matched", max_eval_samples=300,
                                   validation_overlap="keep"))
    words = [len(t.split()) for t in matched.validation.texts]
    # the held-out rows have the test rows' lengths (the shortest decile stands for the test rows below 16 words),
    # and they left the training rows
    assert len(matched.validation) == 300 and sorted(words)[150] >= 15 and sum(w >= 15 for w in words) >= 0.85 * 300
    assert len(matched.train) == 3800 - 300 and not set(matched.train.texts) & set(matched.validation.texts)
    # the default: a stratified random share, mostly phrases
    plain = load_task(DataConfig(path=str(folder), validation_overlap="keep"))
    assert len(plain.validation) == 380 and sorted(len(t.split()) for t in plain.validation.texts)[190] <= 5


def test_matched_validation_resamples_a_validation_file_and_leaves_train_alone(tmp_path):
    folder = _lengths_task(tmp_path / "t")
    (folder / "train.tsv").rename(folder / "dev.tsv")  # the phrases and sentences become the validation file
    (folder / "train.tsv").write_text("sentence\tlabel\n" + "".join(f"short row {i}\t{i % 2}\n" for i in range(50)))
    task = load_task(DataConfig(path=str(folder), validation_rows="matched", max_eval_samples=400,
                                validation_overlap="keep"))
    words = [len(t.split()) for t in task.validation.texts]
    assert len(task.train) == 50 and len(task.validation) == 400  # 618 matching rows, capped by max_eval_samples
    assert sorted(words)[200] >= 15 and sum(w >= 15 for w in words) >= 0.85 * 400


def test_matched_validation_falls_back_to_a_random_share_when_lengths_match(tmp_path):
    folder = _lengths_task(tmp_path / "t", test_words=(2, 4))
    task = load_task(DataConfig(path=str(folder), validation_rows="matched", validation_overlap="keep"))
    assert len(task.validation) == 380 and len(task.train) == 3800 - 380


def test_validation_rows_belong_to_text_classification():
    with pytest.raises(ValueError, match="validation_rows need task: classification"):
        DataConfig(path="x", task="token_classification", validation_rows="matched")


def _phrase_task(folder, n_sentences=300, extra_dev=0):
    """SST-2's shape: train holds sentences and phrases of them; dev holds other phrases of the same sentences,
    plus `extra_dev` sentences no training row holds."""
    folder.mkdir()
    sentences = [f"film {i} was a Fine  piece of work number {i} overall" for i in range(n_sentences)]
    unseen = [f"an unseen sentence {i} about cinema" for i in range(extra_dev)]
    train = sentences + [s.split(" piece")[0] for s in sentences]  # the sentence and its first phrase
    dev = [f"piece OF work number {i}" for i in range(n_sentences)] + unseen  # a phrase: case folded, still inside
    (folder / "train.tsv").write_text("sentence\tlabel\n" + "".join(f"{t}\t{i % 2}\n" for i, t in enumerate(train)))
    (folder / "dev.tsv").write_text("sentence\tlabel\n" + "".join(f"{t}\t{i % 2}\n" for i, t in enumerate(dev)))
    return folder, unseen


def test_validation_rows_a_training_text_holds_are_left_out(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(overlap, "_said", set())  # each line is said once per process
    folder, unseen = _phrase_task(tmp_path / "t", extra_dev=320)  # 300 of 620 seen: under half, left out by auto
    task = load_task(DataConfig(path=str(folder)))
    assert task.validation.texts == unseen and len(task.train) == 600  # training rows untouched
    assert "300 of 620 validation rows occur inside a training text; validating on the other 320" in \
        " ".join(capsys.readouterr().err.split())
    again = load_task(DataConfig(path=str(folder)))  # another stage of the same run: the same rows, said once
    assert again.validation.texts == unseen and "validation rows" not in capsys.readouterr().err
    kept = load_task(DataConfig(path=str(folder), validation_overlap="keep"))
    assert len(kept.validation) == 620


def test_a_split_that_shares_most_of_its_text_with_training_is_kept_with_a_warning(tmp_path, capsys, monkeypatch):
    from deploykit import console

    monkeypatch.setattr(overlap, "_said", set())  # each line is said once per process
    monkeypatch.setitem(console._quiet, "on", True)  # a warning: --quiet keeps it
    folder, unseen = _phrase_task(tmp_path / "t", extra_dev=120)  # 300 of 420 seen: SST-2's case
    task = load_task(DataConfig(path=str(folder)))
    assert len(task.validation) == 420
    assert "warning: 300 of 420 validation rows occur inside a training text (most of the validation); every " \
           "row stays" in \
        " ".join(capsys.readouterr().err.split())
    dropped = load_task(DataConfig(path=str(folder), validation_overlap="drop"))
    assert dropped.validation.texts == unseen


def test_too_few_unseen_validation_rows_keep_every_row_with_a_warning(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(overlap, "_said", set())  # each line is said once per process
    folder, _ = _phrase_task(tmp_path / "t", extra_dev=99)
    task = load_task(DataConfig(path=str(folder), validation_overlap="drop"))
    assert len(task.validation) == 399
    assert "warning: 300 of 399 validation rows occur inside a training text and fewer than 100 others" in \
        " ".join(capsys.readouterr().err.split())


def test_a_match_is_whole_words_and_rows_split_off_train_go_back_to_it(tmp_path):
    from deploykit.data import Split
    from deploykit.overlap import held_out, seen_in_training

    train = Split(["a badly made film", "good"], None, [0, 1])
    val = Split(["bad", "badly made", "GOOD", "made film a", "made  film"], None, [0, 0, 1, 0, 0])
    assert seen_in_training(train.texts, val.texts) == ([False, True, True, False, True], True)
    assert overlap.seen_share(train.texts, val.texts) == 0.6 and overlap.seen_share(train.texts, []) == 0.0
    val = Split([f"new row {i}" for i in range(100)] + ["a badly made film"], None, [0] * 101)
    rest, kept = held_out(train, val, from_train=True)
    assert len(kept) == 100 and rest.texts == train.texts + ["a badly made film"]  # no row is lost
    rest, kept = held_out(train, val, from_train=False)
    assert len(kept) == 100 and rest.texts == train.texts


def test_pairs_count_as_seen_only_as_exact_duplicates(monkeypatch):
    from deploykit.data import Split

    train = Split(["the cat sat", "dogs run"], ["a cat", "fast"], [0, 1])
    val = Split(["the cat sat", "the cat", "Dogs  run"], ["a cat", "a cat", "FAST"], [0, 0, 1])
    assert overlap.seen_in_training(train.texts, val.texts, train.pairs, val.pairs) == ([True, False, True], False)
    monkeypatch.setattr(overlap, "MAX_SCAN", 0)  # too much text to search: exact duplicates only
    assert overlap.seen_in_training(["the cat sat on the mat"], ["the cat sat on the mat", "the cat"]) == \
        ([True, False], False)
    said = []
    monkeypatch.setattr(overlap, "log", said.append)
    monkeypatch.setattr(overlap, "_said", set())
    texts = ["the cat sat"] + [f"row {i}" for i in range(100)]
    assert overlap.unseen_rows(train.texts, texts, train.pairs, ["a cat"] * 101, from_train=False) == \
        list(range(1, 101))
    assert said == ["data: 1 of 101 validation rows duplicate a training pair; validating on the other 100 (left out; "
                    "data.validation_overlap: keep validates on all)"]  # not "too much text": pairs are never searched


def test_validation_overlap_belongs_to_classification_and_tagging():
    with pytest.raises(ValueError, match="validation_overlap need task: classification or token_classification"):
        DataConfig(path="x", task="generation", validation_overlap="keep")
    assert DataConfig(path="x", task="token_classification", validation_overlap="keep").validation_overlap == "keep"


def test_rows_put_back_keep_every_field_of_any_kind():
    from deploykit.data import Split
    from deploykit.ner.data import TagSplit
    from deploykit.overlap import keep_rows

    train, val = Split(["t"], ["tp"], [0]), Split(["a", "b", "c"], ["ap", "bp", "cp"], [1, 0, 1])
    rest, kept = keep_rows(train, val, [0, 2], from_train=True)
    assert (rest.texts, rest.pairs, rest.labels) == (["t", "b"], ["tp", "bp"], [0, 0])
    assert (kept.texts, kept.pairs, kept.labels) == (["a", "c"], ["ap", "cp"], [1, 1])
    rest, _ = keep_rows(Split(["t"], None, [0]), Split(["a", "b"], None, [1, 0]), [1], from_train=True)
    assert (rest.texts, rest.pairs, rest.labels) == (["t", "a"], None, [0, 1])
    tags = TagSplit([["EU"], ["Paris"]], [[1], [2]])
    rest, kept = keep_rows(TagSplit([["x"]], [[0]]), tags, [1], from_train=True)
    assert (rest.tokens, rest.tags, kept.tokens) == ([["x"], ["EU"]], [[0], [1]], [["Paris"]])
    assert keep_rows(train, val, [1], from_train=False)[0] is train  # a file's validation rows are only left out
