"""deploykit.load on every artifact kind of recipes/tiny-ci.yaml: pipeline-shaped results, runtimes, per-row INT8."""

import importlib.util
import json
import shutil
import subprocess
import sys
import warnings

import numpy as np
import onnxruntime as ort
import pytest
import torch
from conftest import sentiment_rows

import deploykit
from deploykit.data import Split
from deploykit.errors import UserError
from deploykit.evaluate import predict
from deploykit.predictor import ClassifierPredictor, _padded_to, load

TEXTS = [t for t, _ in sentiment_rows(12, seed=9)] + [
    "good",
    "the movie was a film and the plot was quite boring and the acting was really very poor and the story bad",
    "wonderful",
    "the story was excellent , really , and the acting lovely",
]


@pytest.fixture(scope="module")
def pipe(tiny_chain):
    from transformers import pipeline

    return pipeline("text-classification", model=str(tiny_chain["finetune"]))


@pytest.fixture(scope="module")
def finetuned(tiny_chain) -> ClassifierPredictor:
    return load(tiny_chain["finetune"])


def same(got, want) -> bool:
    """Equal structure and labels, scores within 1e-6."""
    if isinstance(want, list):
        return isinstance(got, list) and len(got) == len(want) and all(same(g, w) for g, w in zip(got, want))
    return (isinstance(got, dict) and set(got) == set(want) == {"label", "score"} and got["label"] == want["label"]
            and abs(got["score"] - want["score"]) < 1e-6)


class SpyRun:
    """Records every feed ONNX Runtime receives (names, dtypes, shapes)."""

    def __init__(self, monkeypatch):
        self.feeds = []
        real = ort.InferenceSession.run

        def run(session, output_names, feed, *args, **kwargs):
            self.feeds.append({k: np.asarray(v) for k, v in feed.items()})
            return real(session, output_names, feed, *args, **kwargs)

        monkeypatch.setattr(ort.InferenceSession, "run", run)


# ---------------------------------------------------------------- the pipeline's shapes, on the PyTorch folder

def test_pytorch_folder_gives_what_pipeline_gives(finetuned, pipe):
    assert finetuned.runtime == "torch" and finetuned.labels == ["negative", "positive"]
    assert finetuned.name == "finetune" and finetuned.batch_invariant is True
    got = finetuned(TEXTS)
    assert same(got, pipe(TEXTS))
    assert {r["label"] for r in got} == {"negative", "positive"}  # the model tells texts apart: labels can differ
    assert same(finetuned(TEXTS[0]), pipe(TEXTS[0]))  # one str: a list holding one dict
    assert same(finetuned(TEXTS[:3], top_k=2), pipe(TEXTS[:3], top_k=2))
    assert same(finetuned(TEXTS[0], top_k=2), pipe(TEXTS[0], top_k=2))
    assert same(finetuned(TEXTS[:3], top_k=None), pipe(TEXTS[:3], top_k=None))
    assert same(finetuned(TEXTS[:3], function_to_apply="sigmoid"), pipe(TEXTS[:3], function_to_apply="sigmoid"))
    none = finetuned(TEXTS[:2], top_k=None, function_to_apply="none")
    assert same(none, pipe(TEXTS[:2], top_k=None, function_to_apply="none"))
    assert any(d["score"] < 0 for row in none for d in row)  # raw logits, not probabilities


@pytest.mark.filterwarnings("ignore:finetune was trained on single texts")  # the pairs are the point here
def test_sentence_pairs_match_pipeline(finetuned, pipe):
    pairs = [("the plot was good", "the acting was awful"), ("boring", "really a lovely film"), ("fine", "fine")]
    as_dicts = [{"text": a, "text_pair": b} for a, b in pairs]
    want = pipe(as_dicts)
    assert same(finetuned(pairs), want)
    assert same(finetuned(as_dicts), want)
    assert same(finetuned(pairs[0]), [want[0]])  # a tuple is one input, shaped like one str
    assert same(finetuned(as_dicts[0]), want[0])  # a dict: one bare dict, the pipeline's own quirk
    # the pair is really fed as a pair: the same two texts as one string score differently
    assert not np.allclose(finetuned.logits(pairs[:1]), finetuned.logits([" ".join(pairs[0])]), atol=1e-6)


def test_logits_are_float32_rows_by_labels(finetuned):
    logits = finetuned.logits(TEXTS)
    assert logits.dtype == np.float32 and logits.shape == (len(TEXTS), 2)
    assert finetuned.logits(t for t in TEXTS[:3]).shape == (3, 2)  # any iterable of texts


# ---------------------------------------------------------------- ONNX float and INT8 folders

def test_onnx_float_and_int8_agree_with_their_pytorch_parent(tiny_chain):
    parent = load(tiny_chain["prune"])
    want = parent.logits(TEXTS)
    assert len(set(want.argmax(-1))) == 2
    fp32 = load(tiny_chain["export"])
    assert fp32.runtime == "ort"
    np.testing.assert_allclose(fp32.logits(TEXTS), want, atol=1e-4)
    assert [r["label"] for r in fp32(TEXTS)] == [r["label"] for r in parent(TEXTS)]
    for kind in ("quantize", "dynamic"):
        int8 = load(tiny_chain[kind])
        got = int8.logits(TEXTS)
        assert np.mean(got.argmax(-1) == want.argmax(-1)) >= 0.8, kind
        assert np.abs(got - want).max() < 0.1, kind


def test_dynamic_int8_rows_do_not_depend_on_their_batch(tiny_chain, monkeypatch):
    assert load(tiny_chain["quantize"]).batch_invariant is True  # static INT8: scales fixed at calibration
    assert load(tiny_chain["export"]).batch_invariant is True
    dynamic = load(tiny_chain["dynamic"])
    assert dynamic.batch_invariant is False
    alone = np.concatenate([dynamic.logits([t]) for t in TEXTS])
    spy = SpyRun(monkeypatch)
    for batch in (TEXTS, TEXTS[::-1], TEXTS[3:] + TEXTS[:3]):
        got = dynamic.logits(batch, batch_size=32)
        order = [TEXTS.index(t) for t in batch]
        assert np.array_equal(got, alone[order])  # bit for bit, whatever the neighbours
    assert {f["input_ids"].shape[0] for f in spy.feeds} == {1}
    # what the rule prevents: the same graph scored in batches of 8 moves rows
    batched = predict(dynamic._predict, Split(TEXTS, None, [0] * len(TEXTS)), dynamic.tokenizer,
                      dynamic.max_length, batch_size=8)
    assert not np.array_equal(batched, alone)


def test_order_is_kept_with_mixed_lengths(tiny_chain):
    texts = [" ".join(["really"] * n + [w]) for n, w in zip((9, 0, 25, 3, 14, 1, 30, 6), ["good", "bad"] * 4)]
    for kind in ("finetune", "export"):
        clf = load(tiny_chain[kind])
        alone = np.concatenate([clf.logits([t]) for t in texts])
        np.testing.assert_allclose(clf.logits(texts, batch_size=3), alone, atol=1e-5)
        assert [r["label"] for r in clf(texts, batch_size=3)] == [clf.labels[i] for i in alone.argmax(-1)]


def test_ort_is_fed_int64_only(tiny_chain, monkeypatch):
    spy = SpyRun(monkeypatch)
    load(tiny_chain["quantize"])(TEXTS, batch_size=4)
    assert spy.feeds and all(v.dtype == np.int64 for feed in spy.feeds for v in feed.values())


def test_raw_onnx_without_token_type_ids(tiny_chain, finetuned, monkeypatch, capsys):
    raw = load(tiny_chain["raw"])  # no manifest: a plain export with input_ids and attention_mask only
    # the length it was trained with is unknown: cut at the model's limit, and said (it changes long texts' answers)
    assert "does not record the length its model was trained with" in " ".join(capsys.readouterr().err.split())
    spy = SpyRun(monkeypatch)
    np.testing.assert_allclose(raw.logits(TEXTS), finetuned.logits(TEXTS), atol=1e-5)
    assert {frozenset(f) for f in spy.feeds} == {frozenset({"input_ids", "attention_mask"})}
    assert raw.max_length == 128  # no recipe to read: the model's position table


def test_token_type_ids_are_filled_when_the_tokenizer_gives_none(tiny_chain, tmp_path, monkeypatch):
    folder = shutil.copytree(tiny_chain["export"], tmp_path / "no-types")
    cfg = json.loads((folder / "tokenizer_config.json").read_text())
    cfg["model_input_names"] = ["input_ids", "attention_mask"]
    (folder / "tokenizer_config.json").write_text(json.dumps(cfg))
    clf = load(folder)
    assert "token_type_ids" not in clf.tokenizer(["a film"])
    spy = SpyRun(monkeypatch)
    np.testing.assert_allclose(clf.logits(TEXTS), load(tiny_chain["export"]).logits(TEXTS), atol=1e-6)
    assert all(not f["token_type_ids"].any() for f in spy.feeds)


# ---------------------------------------------------------------- truncation

def test_max_length_is_the_trained_one(tiny_chain, tmp_path):
    assert load(tiny_chain["quantize"]).max_length == 32  # the recipe's data.max_length, from the manifest
    assert load(tiny_chain["export"]).max_length == 32  # an export's manifest has no data: its parent's
    assert load(tiny_chain["raw"], max_length=16).max_length == 16
    assert load(tiny_chain["raw"], max_length=1000).max_length == 128  # cut to the position table
    folder = shutil.copytree(tiny_chain["quantize"], tmp_path / "q")
    manifest = json.loads((folder / "manifest.json").read_text())
    (folder / "manifest.json").write_text(json.dumps({**manifest, "max_length": 20}))
    assert load(folder).max_length == 20  # the manifest's own key comes first


def test_long_texts_are_truncated_not_refused(tiny_chain):
    clf = load(tiny_chain["raw"])
    long = " ".join(["good film"] * 200)  # 400 tokens, the position table holds 128
    cut = clf.tokenizer.decode(clf.tokenizer(long, truncation=True, max_length=128)["input_ids"][1:-1])
    np.testing.assert_allclose(clf.logits([long]), clf.logits([cut]), atol=1e-5)



def test_a_max_length_set_after_loading_takes_effect(tiny_chain):
    clf = load(tiny_chain["quantize"])
    long = " ".join(["good film"] * 20)
    before = clf.logits([long])
    clf.max_length = 6  # [CLS] + 4 word pieces + [SEP]
    cut = clf.tokenizer.decode(clf.tokenizer(long, truncation=True, max_length=6)["input_ids"][1:-1])
    np.testing.assert_allclose(clf.logits([long]), clf.logits([cut]), atol=1e-5)
    assert not np.allclose(clf.logits([long]), before)


@pytest.mark.parametrize("length", [1, 2])
def test_a_max_length_without_room_beside_the_special_tokens_is_refused(tiny_chain, length):
    with pytest.raises(UserError, match=f"max_length={length} leaves no room .* 2 special tokens; use at least 3"):
        load(tiny_chain["raw"], max_length=length)


def test_pairs_need_room_for_a_token_of_each_text(tiny_chain):
    # [CLS] a [SEP] b [SEP]: at 4 the tokenizer silently cut the second text away whole
    clf = load(tiny_chain["raw"], max_length=4)
    assert len(clf(["a fine film"])) == 1
    with pytest.raises(UserError, match="max_length=4 leaves no room for a token of each text of a sentence pair "
                                        "beside the tokenizer's 3 special tokens; use at least 5"):
        clf.logits([("a fine film", "a dull one")])
    assert load(tiny_chain["raw"], max_length=5).logits([("a fine film", "a dull one")]).shape == (1, 2)


# ---------------------------------------------------------------- TensorRT folders (the engine runs on a GPU only)

def tensorrt_folder(tiny_chain, tmp_path):
    """The export folder dressed as `deploykit export --format tensorrt` leaves it, without the engine."""
    folder = shutil.copytree(tiny_chain["export"], tmp_path / "trt")
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest.update(format="tensorrt", engine_file="model.engine",
                    metrics={"engine": {"profile": {"min": [1, 8], "opt": [8, 64], "max": [32, 128]}}})
    (folder / "manifest.json").write_text(json.dumps(manifest))
    return folder


def test_single_texts_on_a_model_trained_on_pairs_warn_once(tiny_chain, tmp_path):
    folder = shutil.copytree(tiny_chain["finetune"], tmp_path / "nli")
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["config"]["data"].update(text_column="premise", text_pair_column="hypothesis")
    (folder / "manifest.json").write_text(json.dumps(manifest))
    clf = load(folder)
    assert clf.trained_on_pairs is True
    # the length it needs is said at load, for pairs: not "at least 3", then "at least 5" at the first call
    with pytest.raises(UserError, match="max_length=3 leaves no room for a token of each text .* use at least 5"):
        load(folder, max_length=3)
    with pytest.warns(UserWarning, match="trained on sentence pairs") as seen:
        clf("a fine film")
        clf(["a fine film", "a dull one"])
    assert len(seen) == 1
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert len(load(folder)([("a fine film", "a dull one")])) == 1  # pairs: what it was trained on


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without a GPU")
def test_tensorrt_folder_without_gpu_is_one_line_and_ort_runs_its_onnx(tiny_chain, tmp_path):
    folder = tensorrt_folder(tiny_chain, tmp_path)
    with pytest.raises(UserError, match="runtime tensorrt cannot run here.*no CUDA GPU.*runtime ort runs the ONNX") as err:
        load(folder)
    assert "\n" not in str(err.value)
    clf = load(folder, runtime="ort")
    np.testing.assert_allclose(clf.logits(TEXTS), load(tiny_chain["export"]).logits(TEXTS), atol=1e-6)


def test_engine_profile_minimum_is_met_by_masked_padding(tiny_chain):
    clf = load(tiny_chain["export"])
    shapes = []

    def engine(batch):
        shapes.append(batch["input_ids"].shape)
        return clf._predict(batch)

    padded = _padded_to(engine, 24, clf.tokenizer.pad_token_id)
    got = predict(padded, Split(TEXTS, None, [0] * len(TEXTS)), clf.tokenizer, clf.max_length, 4)
    assert min(s[1] for s in shapes) == 24
    np.testing.assert_allclose(got, clf.logits(TEXTS), atol=1e-5)


def test_tensorrt_engine_matches_onnx(tiny_chain, tmp_path):
    pytest.importorskip("tensorrt")
    if not torch.cuda.is_available():
        pytest.skip("TensorRT needs a CUDA GPU")
    from tiny_chain import TINY

    from deploykit.config import load_recipe
    from deploykit.pipeline import run_stage

    recipe = load_recipe(TINY, ["export.format=tensorrt", "export.tensorrt.fp16=false"])
    out = run_stage("export", recipe, tiny_chain["prune"], tmp_path / "trt").path
    clf = load(out)
    assert clf.runtime == "tensorrt" and clf.max_length == 32
    np.testing.assert_allclose(clf.logits(TEXTS, batch_size=64), load(tiny_chain["prune"]).logits(TEXTS), atol=1e-3)


# ---------------------------------------------------------------- causal LMs, errors, import cost

def test_causal_lm_folder_gives_the_generator(tiny_llama):
    from deploykit.llm.generate import TorchGenerator

    gen = load(tiny_llama)
    assert isinstance(gen, TorchGenerator)
    out = gen.generate(["good film"], max_new_tokens=3)
    assert out.tokens.shape == (1, 3) or out.lengths[0] < 3
    with pytest.raises(UserError, match="auto, ort or torch"):
        load(tiny_llama, runtime="ort-cuda")


@pytest.mark.parametrize("call, message", [
    (lambda c: load(c["finetune"].parent / "missing"), "artifact not found"),
    (lambda c: load(c["finetune"].parent.parent / "task"), "not a model folder"),
    (lambda c: load(c["finetune"], runtime="openvino"), "cannot run pytorch artifacts; use torch or torch-bf16"),
    (lambda c: load(c["export"], runtime="openvino", device="cuda"), "ort and openvino run on the CPU"),
    (lambda c: load(c["finetune"], runtime="tvm"), "unknown runtime 'tvm'"),
    (lambda c: load(c["finetune"], runtime="ort"), "cannot run pytorch artifacts; use torch or torch-bf16"),
    (lambda c: load(c["export"], runtime="torch"), "cannot run onnx artifacts; use ort or ort-cuda"),
    (lambda c: load(c["export"], device="tpu"), "use cpu or cuda"),
    (lambda c: load(c["finetune"]).logits([]), "empty"),
    (lambda c: load(c["finetune"])(42), "got int"),
    (lambda c: load(c["finetune"])(["fine", None]), "item 1 is NoneType"),
    (lambda c: load(c["finetune"])(["fine", ("a", "b")]), "item 1 is a pair, item 0 is not"),
    (lambda c: load(c["finetune"])(("a", "b", "c")), "tuple of two str"),
    (lambda c: load(c["finetune"])("fine", top_k=0), "top_k=0"),
    (lambda c: load(c["finetune"])("fine", function_to_apply="relu"), "use one of softmax"),
    (lambda c: load(c["finetune"]).logits("fine", batch_size=0), "batch_size=0"),
    (lambda c: load(c["finetune"])(["fine", "bad \ud800"]), "item 1 is not valid Unicode text .a lone surrogate"),
    (lambda c: load(c["finetune"])([("fine", "\udcff")]), "item 0 is not valid Unicode"),
    (lambda c: load(c["finetune"])({"fine", "bad"}), "got a set.*give a list"),
    (lambda c: load(c["finetune"])(["fine", " \n"]), "item 1 is an empty text .or invisible characters only.; give"),
    (lambda c: load(c["finetune"])(["\ufeff\u200d"]), "item 0 is an empty text"),
    (lambda c: load(c["finetune"]).logits([("", "a pair's second half")]), "item 0 is an empty text"),
    (lambda c: load(c["finetune"], threads=0), "threads=0 must be a positive integer"),
    (lambda c: load(c["export"], threads=-1), "threads=-1 must be a positive integer"),
    (lambda c: load(None), "artifact path None: give a folder path"),
])
def test_bad_input_is_a_one_line_user_error(tiny_chain, call, message):
    with pytest.raises(UserError, match=message) as err:
        call(tiny_chain)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("stage", ["quantize", "finetune"])
def test_a_folder_without_its_tokenizer_files_is_refused(tiny_chain, tmp_path, stage):
    # transformers builds a tokenizer of special tokens only from tokenizer_config.json: every word is [UNK]
    folder = shutil.copytree(tiny_chain[stage], tmp_path / stage)
    (folder / "tokenizer.json").unlink()
    with pytest.raises(UserError, match=f"{folder}: no tokenizer files .tokenizer.json, vocab.txt") as err:
        load(folder)
    assert "\n" not in str(err.value)
    with pytest.raises(UserError, match="no tokenizer files"):
        load(folder / "model.onnx" if stage == "quantize" else folder, runtime="auto")


def test_a_tokenizer_far_smaller_than_the_model_is_refused(tiny_chain, tmp_path):
    folder = shutil.copytree(tiny_chain["finetune"], tmp_path / "ft")
    shutil.copy(tiny_chain["prune"] / "tokenizer.json", folder)  # the vocabulary-pruned one: 124 of 2000 tokens
    with pytest.raises(UserError, match=r"holds 124 tokens but config.json's vocab_size is 2000"):
        load(folder)
    assert load(tiny_chain["prune"]).tokenizer.vocab_size == 124  # pruned with its config: still loads


@pytest.mark.parametrize("stage", ["quantize", "export", "finetune"])
def test_a_config_naming_more_labels_than_the_model_scores_is_refused(tiny_chain, tmp_path, stage):
    # a config.json of 3 labels beside a 2-class graph answered "neu 0.54" (labels[argmax] over 2 logits) and exit 0
    folder = shutil.copytree(tiny_chain[stage], tmp_path / stage)
    config = json.loads((folder / "config.json").read_text())
    config["id2label"] = {"0": "neg", "1": "neu", "2": "pos"}
    config["label2id"] = {"neg": 0, "neu": 1, "pos": 2}
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(UserError) as err:
        load(folder)("a fine film")
    assert "\n" not in str(err.value)
    assert ("scores 2 classes but its config.json names 3 labels" in str(err.value) or
            stage == "finetune")  # PyTorch: the classifier's weights do not fit the config, named by the loader


def test_a_runtime_answering_another_width_than_the_labels_is_refused(tiny_chain, monkeypatch):
    clf = load(tiny_chain["quantize"])
    clf._predict = lambda batch: np.zeros((len(batch["input_ids"]), 3), np.float32)  # e.g. an engine's output
    with pytest.raises(UserError, match="quantize: the model scores 3 classes but its config.json names 2 labels"):
        clf(["a fine film"])


def test_pairs_on_a_model_trained_on_single_texts_warn_once(tiny_chain):
    clf = load(tiny_chain["quantize"])
    assert clf.trained_on_pairs is False and load(tiny_chain["raw"]).trained_on_pairs is None
    with pytest.warns(UserWarning, match="trained on single texts") as seen:
        clf(("a fine film", "a dull one"))
        clf([("a fine film", "a dull one")])
    assert len(seen) == 1
    assert len(clf(["a fine film", "a dull one"])) == 2


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without a GPU")
def test_cuda_without_gpu_is_one_line(tiny_chain):
    with pytest.raises(UserError, match="no CUDA GPU"):
        load(tiny_chain["export"], device="cuda")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_torch_on_cuda_matches_the_cpu(tiny_chain):
    gpu = load(tiny_chain["finetune"], device="cuda")
    assert gpu.runtime == "torch"
    np.testing.assert_allclose(gpu.logits(TEXTS), load(tiny_chain["finetune"]).logits(TEXTS), atol=1e-4)


@pytest.mark.skipif("CUDAExecutionProvider" not in ort.get_available_providers() or not torch.cuda.is_available(),
                    reason="needs onnxruntime-gpu and a CUDA GPU")
def test_ort_cuda_matches_the_cpu(tiny_chain):
    gpu = load(tiny_chain["export"], device="cuda")
    assert gpu.runtime == "ort-cuda"
    np.testing.assert_allclose(gpu.logits(TEXTS), load(tiny_chain["export"]).logits(TEXTS), atol=1e-4)


def test_import_deploykit_stays_cheap_and_load_is_there():
    code = ("import sys, deploykit; assert 'numpy' not in sys.modules and 'deploykit.predictor' not in sys.modules; "
            "from deploykit import load; assert load is deploykit.load and 'deploykit.predictor' in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True)
    assert deploykit.load is load


needs_openvino = pytest.mark.skipif(importlib.util.find_spec("openvino") is None,
                                    reason="needs the openvino package (pip install 'deploykit[openvino]')")


@needs_openvino
@pytest.mark.parametrize("kind", ["export", "raw"])
def test_openvino_runs_float_onnx_folders_as_onnx_runtime_does(tiny_chain, kind):
    # the padding-free export and a plain one; f32 inference precision on every CPU (bf16-native ones included)
    reference = load(tiny_chain[kind], runtime="ort").logits(TEXTS)
    openvino = load(tiny_chain[kind], runtime="openvino", threads=1)
    assert openvino.runtime == "openvino" and openvino.batch_invariant
    np.testing.assert_allclose(openvino.logits(TEXTS), reference, atol=1e-4)
    np.testing.assert_allclose(openvino.logits(TEXTS, batch_size=1), reference, atol=1e-4)


@needs_openvino
def test_openvino_runs_the_static_int8_graph_close_to_onnx_runtime(tiny_chain):
    # INT8 kernels round differently from ORT's; the answers stay those of the same model
    reference = load(tiny_chain["quantize"], runtime="ort").logits(TEXTS)
    got = load(tiny_chain["quantize"], runtime="openvino").logits(TEXTS)
    assert got.shape == reference.shape and got.dtype == np.float32
    assert np.abs(got - reference).max() < 0.1 * np.abs(reference).max() + 1e-3


def test_openvino_missing_is_one_line(tiny_chain, monkeypatch):
    import deploykit.runtimes as runtimes

    real = importlib.util.find_spec
    monkeypatch.setattr(runtimes.importlib.util, "find_spec", lambda name, *a: None if name == "openvino" else real(name, *a))
    with pytest.raises(UserError, match=r"runtime openvino cannot run here: the openvino package is not installed"):
        load(tiny_chain["export"], runtime="openvino")


def test_more_threads_than_cores_is_said_not_refused(tiny_chain, monkeypatch):
    import deploykit.console as console
    import deploykit.hardware as hardware

    said = []
    monkeypatch.setattr(console, "warn", said.append)
    monkeypatch.setattr(hardware, "cores", lambda: 2)
    assert load(tiny_chain["quantize"], threads=2)(["a fine film"]) and said == []
    assert load(tiny_chain["quantize"], threads=64)(["a fine film"])  # still runs
    assert said == ["warning: threads=64 is more than the 2 cores this process may use; each call then waits on "
                    "threads that share a core (use at most 2, or None)"]
