"""data.long_texts: windows: the tokenizer's overflow windows, mean-pooled logits, validation, training rows."""

import json
import math

import numpy as np
import pytest
import torch
from conftest import FILLER

from deploykit import window_metrics, windows
from deploykit.config import DataConfig, build_recipe
from deploykit.data import Split, to_dataset
from deploykit.errors import UserError
from deploykit.evaluate import predict, torch_predictor

MAX, STRIDE = 16, 4  # a window: [CLS] + 14 text tokens + [SEP]; consecutive windows share 4 of them
LONG = " ".join(FILLER * 3) + " good"  # 37 words, one token each
LONGER = "bad " + " ".join(FILLER * 5)  # 61 words
SHORT = "a lovely film"


@pytest.fixture
def tok(tiny_bert):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_bert)


@pytest.fixture
def model(tiny_bert):
    from transformers import AutoModelForSequenceClassification

    return AutoModelForSequenceClassification.from_pretrained(tiny_bert).eval()


def by_hand(model, tok, text: str, max_length: int = MAX, stride: int | None = STRIDE) -> np.ndarray:
    """One text's logits: the mean over its overflow windows, each run alone (or the truncated text)."""
    kw = {"stride": stride, "return_overflowing_tokens": True} if stride is not None else {}
    ids = tok(text, truncation=True, max_length=max_length, **kw)["input_ids"]
    ids = ids if isinstance(ids[0], list) else [ids]
    with torch.no_grad():
        rows = [model(input_ids=torch.tensor([w])).logits[0].numpy() for w in ids]
    return np.mean(rows, axis=0)


def test_a_long_text_gives_the_tokenizers_overflow_windows(tok):
    split = Split([LONG, SHORT, LONGER], None, [1, 1, 0])
    enc, text_of = windows.encode_windows(split, tok, MAX, STRIDE)
    n = [len(tok(t)["input_ids"]) - 2 for t in split.texts]  # text tokens without [CLS]/[SEP]
    room, step = MAX - 2, MAX - 2 - STRIDE
    expected = [1 + max(0, math.ceil((k - room) / step)) for k in n]
    assert n[0] > MAX and expected[0] >= 3 and expected[1] == 1
    assert np.bincount(text_of).tolist() == expected
    assert text_of.tolist() == sorted(text_of.tolist()) and "overflow_to_sample_mapping" not in enc
    assert all(len(ids) <= MAX for ids in enc["input_ids"])
    first, second = enc["input_ids"][0][1:-1], enc["input_ids"][1][1:-1]
    assert first[-STRIDE:] == second[:STRIDE]  # consecutive windows share `stride` tokens


def test_pooled_logits_are_the_mean_of_each_texts_windows(model, tok):
    split = Split([LONG, SHORT, LONGER], None, [1, 1, 0])
    pooled = predict(torch_predictor(model), split, tok, MAX, stride=STRIDE)
    want = np.stack([by_hand(model, tok, t) for t in split.texts])
    assert pooled.shape == (3, 2)
    np.testing.assert_allclose(pooled, want, atol=1e-5)
    truncated = predict(torch_predictor(model), split, tok, MAX)
    assert np.abs(pooled[0] - truncated[0]).max() > 1e-4  # the long text's answer is not the truncated one


def test_a_short_text_is_one_window_with_todays_logits(model, tok):
    split = Split([SHORT, "the plot was poor", "wonderful"], None, [1, 0, 1])
    enc, text_of = windows.encode_windows(split, tok, MAX, STRIDE)
    assert text_of.tolist() == [0, 1, 2]
    assert enc["input_ids"] == tok(split.texts, truncation=True, max_length=MAX)["input_ids"]
    np.testing.assert_allclose(predict(torch_predictor(model), split, tok, MAX, stride=STRIDE),
                               predict(torch_predictor(model), split, tok, MAX), atol=1e-6)


def test_truncate_is_unchanged(model, tok):
    """Without a stride a long text is its first max_length tokens, as before."""
    got = predict(torch_predictor(model), Split([LONG, SHORT], None, [1, 1]), tok, MAX)
    np.testing.assert_allclose(got, np.stack([by_hand(model, tok, t, stride=None) for t in (LONG, SHORT)]), atol=1e-5)


def test_one_row_at_a_time_scores_one_window_per_call(model, tok):
    """A dynamic-INT8 graph is scored with batch_size 1 (evaluate.eval_batch_size): each window is its own call."""
    calls, run = [], torch_predictor(model)

    def spy(batch):
        calls.append(batch["input_ids"].shape)
        return run(batch)

    split = Split([LONG, SHORT], None, [1, 1])
    pooled = predict(spy, split, tok, MAX, batch_size=1, stride=STRIDE)
    _, text_of = windows.encode_windows(split, tok, MAX, STRIDE)
    assert len(calls) == len(text_of) > 2 and all(shape[0] == 1 for shape in calls)
    np.testing.assert_allclose(pooled[0], by_hand(model, tok, LONG), atol=1e-5)


def test_training_rows_are_windows_labelled_with_their_text(tok, monkeypatch):
    said = []
    monkeypatch.setattr(windows, "log", said.append)
    monkeypatch.setattr(windows, "_SAID", set())
    split = Split([LONG, SHORT, LONGER], None, [1, 1, 0])
    ds = to_dataset(split, tok, MAX, STRIDE, "train")
    _, text_of = windows.encode_windows(split, tok, MAX, STRIDE)
    assert len(ds) == len(text_of) and ds[windows.TEXT_OF] == text_of.tolist()
    assert ds["labels"] == [split.labels[i] for i in text_of]
    plain = to_dataset(split, tok, MAX)
    assert len(plain) == 3 and windows.TEXT_OF not in plain.column_names
    split_into = len(text_of) - 1  # every window but the short text's one
    assert said == [(f"data.long_texts windows (train): 2 of 3 texts split into {split_into} windows (stride 4); "
                     f"{len(text_of)} rows in all")]
    to_dataset(split, tok, MAX, STRIDE, "train")
    assert len(said) == 1  # once per split and process


def test_pooled_metrics_score_texts_not_windows():
    class Pred:  # transformers' EvalPrediction: window logits and window labels, in dataset order
        predictions = np.array([[0.0, 3.0], [1.0, 0.0], [1.0, 0.0], [2.0, 0.0]])
        label_ids = np.array([1, 1, 1, 0])

    # per window 2 of 4 are right; per text the mean [0.67, 1.0] of text 0 is label 1: both texts right
    assert window_metrics.pooled_metrics([0, 0, 0, 1])(Pred()) == {"accuracy": 100.0, "macro_f1": 100.0, "texts": 2}
    with pytest.raises(ValueError, match="4 window logits for 3 windows"):
        windows.pool(Pred.predictions, np.array([0, 0, 1]), 2)


def test_stride_auto_recorded_and_refused(tok):
    on = DataConfig(path="x", long_texts="windows", max_length=64)
    assert windows.stride_for(on, 64, tok) == 16  # auto: a quarter of max_length
    assert windows.stride_for(DataConfig(path="x"), 64, tok) is None  # truncate
    assert windows.stride_for(None, 64, tok, {"window_stride": 8}) == 8  # a model trained on windows stays so
    assert windows.recorded(8) == {"long_texts": "windows", "window_stride": 8} and windows.recorded(None) == {}
    with pytest.raises(UserError, match=r"data\.window_stride 14 must be >= 0 and below the 14 text tokens"):
        windows.stride_for(DataConfig(path="x", long_texts="windows", window_stride=14), MAX, tok)


def recipe(**data):
    return build_recipe({"data": {"path": "x", **data}})


def test_recipe_refuses_a_bad_stride_generation_and_pairs():
    assert recipe(long_texts="windows", window_stride=8, max_length=32).data.window_stride == 8
    with pytest.raises(UserError, match="window_stride 32 must be smaller than max_length 32"):
        recipe(long_texts="windows", window_stride=32, max_length=32)
    with pytest.raises(UserError, match=r"data\.window_stride"):
        recipe(long_texts="windows", window_stride=-1)
    with pytest.raises(UserError, match="window_stride applies to long_texts: windows"):
        recipe(window_stride=8)
    with pytest.raises(UserError, match="long_texts: windows applies to task: classification"):
        recipe(task="generation", long_texts="windows")
    with pytest.raises(UserError, match="long_texts: windows reads single texts"):
        recipe(long_texts="windows", text_pair_column="hypothesis")
    with pytest.raises(UserError, match="long_texts"):
        recipe(long_texts="pool")


def test_evaluate_artifact_pools_when_the_recipe_or_the_manifest_asks(tiny_bert, monkeypatch):
    from deploykit import evaluate
    from deploykit.artifact import Artifact

    strides, real = [], evaluate.predict
    monkeypatch.setattr(evaluate, "predict", lambda *a, **k: strides.append(a[5]) or real(*a, **k))
    split = Split([LONG, SHORT, LONGER], None, [1, 1, 0])
    on = DataConfig(path="x", long_texts="windows", window_stride=STRIDE)
    evaluate.evaluate_artifact(Artifact(tiny_bert, {"format": "pytorch"}), split, MAX, data=on)
    evaluate.evaluate_artifact(Artifact(tiny_bert, {"format": "pytorch", "window_stride": 2}), split, MAX)
    evaluate.evaluate_artifact(Artifact(tiny_bert, {"format": "pytorch"}), split, MAX, data=DataConfig(path="x"))
    assert strides == [STRIDE, 2, None]


def test_the_predictor_pools_windows_when_its_manifest_says_so(tiny_bert, model, tok, tmp_path):
    from tiny_onnx import export_tiny_onnx

    import deploykit
    from deploykit.artifact import load_artifact, write_manifest

    (tiny_bert / "manifest.json").write_text(json.dumps(
        {"stage": "finetune", "format": "pytorch", "max_length": MAX, "long_texts": "windows", "window_stride": STRIDE}))
    clf = deploykit.load(tiny_bert)
    assert clf.window_stride == STRIDE and clf.max_length == MAX
    want = np.stack([by_hand(model, tok, t) for t in (LONG, SHORT, LONGER)])
    np.testing.assert_allclose(clf.logits([LONG, SHORT, LONGER]), want, atol=1e-5)
    assert clf(LONGER)[0]["label"] == clf.labels[int(want[2].argmax())]
    with pytest.raises(UserError, match="reads single texts"):
        clf.logits([(LONG, SHORT)])
    folder = export_tiny_onnx(tiny_bert, tmp_path / "onnx")
    # an export's manifest inherits window_stride from its parent, as it inherits max_length
    made = write_manifest(folder, stage="export", format="onnx", parent=load_artifact(tiny_bert), config={},
                          onnx_file="model.onnx")
    assert (made["long_texts"], made["window_stride"], made["max_length"]) == ("windows", STRIDE, MAX)
    onnx = deploykit.load(folder)
    assert onnx.runtime == "ort" and onnx.window_stride == STRIDE
    np.testing.assert_allclose(onnx.logits([LONG, SHORT, LONGER], batch_size=1), want, atol=1e-4)
    (tiny_bert / "manifest.json").write_text(json.dumps({"stage": "finetune", "format": "pytorch", "max_length": MAX}))
    plain = deploykit.load(tiny_bert)
    assert plain.window_stride is None
    np.testing.assert_allclose(plain.logits([LONG]), by_hand(model, tok, LONG, stride=None)[None], atol=1e-5)
