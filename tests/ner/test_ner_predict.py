"""deploykit/ner/predict.py and the token classifier's ONNX export: `deploykit.load` gives the entity groups of
`pipeline("token-classification", aggregation_strategy=...)`, from PyTorch and from the exported graph.

Tiny BERT (WordPiece, the packaged MiniLM's) and RoBERTa (a byte-level BPE trained in tests/ner/ner_tokenizers.py)
token classifiers with random weights and a fixed seed; the scale of their heads is raised so that a piece's
best tag wins by a visible margin (ONNX Runtime and torch then agree on every argmax).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import tiny_config
from ner_tokenizers import bpe_tokenizer, minilm_tokenizer

import deploykit
from deploykit.config import build_recipe
from deploykit.errors import ParityError, UserError

LABELS = ["O", "B-LOC", "I-LOC", "B-PER", "I-PER"]
TEXTS = ["Peter Blackburn met Lewandowski in Brussels.",
         "  Müller flew to São Paulo 🙂 on Friday, said the European Commission!",
         "wow",
         "the European Commission said on Thursday it disagreed with German advice to consumers",
         "Kinshasa\tand   London"]


def token_classifier(folder: Path, arch: str, seed: int = 0) -> Path:
    import torch
    from transformers import AutoModelForTokenClassification

    wordpiece = arch in ("bert", "distilbert")  # DistilBERT: BERT's vocabulary, no token_type_ids
    tokenizer = minilm_tokenizer() if wordpiece else bpe_tokenizer()
    extra = {} if wordpiece else {"vocab_size": len(tokenizer), "pad_token_id": 1, "bos_token_id": 0,
                                  "eos_token_id": 2}
    config = tiny_config(arch, labels=len(LABELS), id2label=dict(enumerate(LABELS)),
                         label2id={name: i for i, name in enumerate(LABELS)}, **extra)
    torch.manual_seed(seed)
    model = AutoModelForTokenClassification.from_config(config)
    with torch.no_grad():
        model.classifier.weight.mul_(25)  # logits ~N(0, 4): clear winners, varied tags
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def bert_folder(tmp_path_factory) -> Path:
    return token_classifier(tmp_path_factory.mktemp("ner") / "tiny-bert-ner", "bert")


@pytest.fixture(scope="module", params=["bert", "roberta", "distilbert"])
def any_folder(request, tmp_path_factory) -> Path:
    return token_classifier(tmp_path_factory.mktemp("ner") / f"tiny-{request.param}-ner", request.param)


def pipeline_groups(folder: Path, texts: list[str], strategy: str) -> list[list[dict]]:
    from transformers import AutoModelForTokenClassification, AutoTokenizer, pipeline

    pipe = pipeline("token-classification", model=AutoModelForTokenClassification.from_pretrained(folder),
                    tokenizer=AutoTokenizer.from_pretrained(folder), aggregation_strategy=strategy)
    return [pipe(text) for text in texts]


def assert_same_groups(ours: list[dict], theirs: list[dict]) -> None:
    key = ("entity_group", "word", "start", "end")
    assert [tuple(g[k] for k in key) for g in ours] == [tuple(g[k] for k in key) for g in theirs]
    assert all(isinstance(g["score"], float) for g in ours)
    np.testing.assert_allclose([g["score"] for g in ours], [float(g["score"]) for g in theirs], atol=1e-4)


@pytest.mark.parametrize("strategy", ["simple", "first"])
def test_groups_are_the_pipelines(any_folder, strategy):
    ner = deploykit.load(any_folder)
    assert type(ner).__name__ == "EntityPredictor" and ner.runtime == "torch" and ner.labels == LABELS
    theirs = pipeline_groups(any_folder, TEXTS, strategy)
    ours = ner(TEXTS, aggregation_strategy=strategy, batch_size=2)  # padded batches: the same answers
    assert sum(len(g) for g in theirs) >= 10  # the tiny models tag plenty
    for text, mine, expected in zip(TEXTS, ours, theirs):
        assert_same_groups(mine, expected)
        assert all(0 <= g["start"] <= g["end"] <= len(text) for g in mine)
    assert_same_groups(ner(TEXTS[0], aggregation_strategy=strategy), theirs[0])  # one str in: one list out


def test_logits_have_a_row_per_piece_and_long_texts_become_windows(bert_folder):
    import torch
    from transformers import AutoModelForTokenClassification

    tok = minilm_tokenizer()
    text = " ".join(["the European Commission said on Thursday it disagreed with Lewandowski"] * 3)
    pieces = tok(text, add_special_tokens=False)["input_ids"]
    assert len(pieces) == 36  # 4 windows of 16 (14 pieces and 2 special tokens, 4 pieces shared)
    whole = deploykit.load(bert_folder)
    [logits] = whole.logits([text])
    assert logits.dtype == np.float32 and logits.shape == (len(pieces), len(LABELS))
    windowed = deploykit.load(bert_folder, max_length=16)
    assert windowed.max_length == 16 and windowed.window_stride == 4  # "auto": a quarter of max_length
    [rows] = windowed.logits([text])
    assert rows.shape == logits.shape  # nothing truncated: every piece has a row
    model = AutoModelForTokenClassification.from_pretrained(bert_folder).eval()
    enc = tok(text, truncation=True, max_length=16, stride=4, return_overflowing_tokens=True, padding=True,
              return_tensors="pt")
    with torch.inference_mode():
        first, last = (model(input_ids=enc["input_ids"][i][None], attention_mask=enc["attention_mask"][i][None])
                       .logits[0].numpy() for i in (0, -1))
    # the first piece is read from the first window, the last from the last one
    np.testing.assert_allclose(rows[0], first[1], atol=1e-5)
    np.testing.assert_allclose(rows[-1], last[int(enc["attention_mask"][-1].sum()) - 2], atol=1e-5)
    groups = windowed(text)
    assert groups and all(0 <= g["start"] < g["end"] <= len(text) for g in groups)


def test_bad_inputs_and_options_are_refused_in_one_line(bert_folder):
    ner = deploykit.load(bert_folder)
    for bad, message in [([], "the list of texts is empty"), ([1], "item 0 is int"), (("a", "b"), "got tuple"),
                         (["\ud800"], "not valid Unicode"), (["a", " \u200b"], "item 1 is an empty text")]:
        with pytest.raises(UserError, match=message):
            ner(bad)
    with pytest.raises(UserError, match="aggregation_strategy='max': use one of simple, first"):
        ner("a", aggregation_strategy="max")
    # a text classifier's options were a TypeError here
    with pytest.raises(UserError, match="top_k: not an option of a token classifier"):
        ner("a", top_k=3)
    with pytest.raises(UserError, match="runs on runtime torch .*, ort .* or openvino .* not torch-bf16 on cpu"):
        deploykit.load(bert_folder, runtime="torch-bf16")


def test_a_runtime_answering_another_width_than_the_labels_is_refused(bert_folder):
    # a graph whose logits width is dynamic passes the load's check; a config.json naming more labels than it
    # scores was a ValueError from the reshape (and a 500 from the server)
    ner = deploykit.load(bert_folder)
    ner._predict = lambda batch: np.zeros((*batch["input_ids"].shape, len(LABELS) + 1), np.float32)
    with pytest.raises(UserError, match="tiny-bert-ner: the model scores 6 classes but its config.json names 5 labels"):
        ner("Peter flew to Brussels")
    with pytest.raises(UserError, match="scores 6 classes"):
        ner.logits(["Peter flew to Brussels"])


def test_export_checks_every_token_and_the_onnx_folder_gives_the_same_groups(any_folder, tmp_path):
    import onnx

    from deploykit.pipeline import run_stage

    art = run_stage("export", build_recipe({"export": {}}), any_folder, tmp_path / "export")
    manifest = json.loads((tmp_path / "export" / "manifest.json").read_text())
    assert manifest["task"] == "token_classification" and manifest["max_length"] == 128
    assert manifest["rewrite"] == {"remove_padding": False, "trim_last_layer": False}
    # built-in texts: batches of 8 and 1 padded to their longest row; every real token within atol
    assert manifest["parity_rows"] == 9 and max(manifest["parity"].values()) <= 1e-4
    assert manifest["optimized"] and manifest["fused_ops"]["Attention"] == 2
    graph = onnx.load(str(art.onnx_path), load_external_data=False).graph
    [out] = graph.output
    assert [d.dim_param or d.dim_value for d in out.type.tensor_type.shape.dim] == [
        "batch_size", "sequence_length", len(LABELS)]
    torch_ner, onnx_ner = deploykit.load(any_folder), deploykit.load(tmp_path / "export")
    assert onnx_ner.runtime == "ort" and onnx_ner.max_length == 128
    for batch_size in (1, 3):
        for mine, expected in zip(onnx_ner(TEXTS, batch_size=batch_size), torch_ner(TEXTS)):
            assert_same_groups(mine, expected)
    for a, b in zip(onnx_ner.logits(TEXTS), torch_ner.logits(TEXTS)):
        np.testing.assert_allclose(a, b, atol=1e-4)


def test_openvino_runs_the_exported_graph_and_gives_the_same_groups(any_folder, tmp_path):
    pytest.importorskip("openvino")
    from deploykit.ov_runtime import BUCKET
    from deploykit.pipeline import run_stage

    art = run_stage("export", build_recipe({"export": {"optimize": False}}), any_folder, tmp_path / "export")
    ort_ner, ov_ner = deploykit.load(art.path), deploykit.load(art.path, runtime="openvino", threads=1)
    assert ov_ner.runtime == "openvino" and ov_ner.batch_invariant
    # each window padded to a 16-piece bucket inside OpenVINO and its per-token logits cut back to its pieces
    ov_logits, ort_logits = ov_ner.logits(TEXTS), ort_ner.logits(TEXTS)
    assert any((len(a) + 2) % BUCKET for a in ort_logits)  # some window is padded inside OpenVINO
    for a, b in zip(ov_logits, ort_logits):
        assert a.shape == b.shape
        np.testing.assert_allclose(a, b, atol=1e-3)
    for batch_size in (1, 3):
        for mine, expected in zip(ov_ner(TEXTS, batch_size=batch_size), ort_ner(TEXTS)):
            assert_same_groups(mine, expected)


def test_openvino_missing_is_one_line_naming_the_extra(bert_folder, tmp_path, monkeypatch):
    import deploykit.runtimes
    from deploykit.pipeline import run_stage

    art = run_stage("export", build_recipe({"export": {"optimize": False}}), bert_folder, tmp_path / "export")
    monkeypatch.setattr(deploykit.runtimes, "unavailable", lambda runtime, target: (
        "the openvino package is not installed (pip install 'deploykit[openvino]')"))
    with pytest.raises(UserError, match=r"^\S+export: runtime openvino cannot run here: the openvino package is not "
                                        r"installed \(pip install 'deploykit\[openvino\]'\)$"):
        deploykit.load(art.path, runtime="openvino")


def test_export_refuses_the_last_layer_trim_when_asked(bert_folder, tmp_path):
    from deploykit.pipeline import run_stage

    with pytest.raises(UserError, match="^export.trim_last_layer: data.task token_classification tags every position"):
        run_stage("export", build_recipe({"export": {"trim_last_layer": True}}), bert_folder, tmp_path / "trim")
    assert not (tmp_path / "trim").exists()
    # asked off: the plain export it always is
    plain = run_stage("export", build_recipe({"export": {"trim_last_layer": False, "optimize": False}}), bert_folder,
                      tmp_path / "plain")
    assert plain.manifest["rewrite"] == {"remove_padding": False, "trim_last_layer": False}


def test_the_padding_free_export_scatters_every_token_back(any_folder, tmp_path):
    from deploykit.pipeline import run_stage

    art = run_stage("export", build_recipe({"export": {"remove_padding": True, "optimize": False}}), any_folder,
                    tmp_path / "packed")
    manifest = art.manifest
    # the packed encoder without the trim: checked on every real token of padded batches of 8 and of one row
    assert manifest["rewrite"] == {"remove_padding": True, "trim_last_layer": False}
    assert manifest["parity_rows"] == 9 and max(manifest["parity"].values()) <= 1e-4
    torch_ner, packed = deploykit.load(any_folder), deploykit.load(art.path)
    for batch_size in (1, 3):
        for mine, expected in zip(packed(TEXTS, batch_size=batch_size), torch_ner(TEXTS)):
            assert_same_groups(mine, expected)
    for a, b in zip(packed.logits(TEXTS), torch_ner.logits(TEXTS)):
        np.testing.assert_allclose(a, b, atol=1e-4)


def test_parity_reads_every_real_token_and_fails_loudly_on_drift(tmp_path, monkeypatch):
    from deploykit.onnx.parity import check_parity, max_delta

    rng = np.random.default_rng(0)
    reference = [rng.normal(size=(2, 4, 3)).astype(np.float32)]
    batches = [{"input_ids": np.ones((2, 4), np.int64), "attention_mask": np.array([[1, 1, 1, 1], [1, 1, 0, 0]])}]
    padded_only = [reference[0].copy()]
    padded_only[0][1, 3] += 5.0  # a padding position: never read
    assert max_delta(reference, padded_only, batches) == 0.0
    drifted = [reference[0].copy()]
    drifted[0][1, 1, 2] += 0.5  # a real token of the second row
    assert max_delta(reference, drifted, batches) == pytest.approx(0.5)
    assert max_delta(reference, [reference[0][:, :, :2]], batches) == float("inf")  # another shape: no match

    monkeypatch.setattr("deploykit.onnx.parity.ort_logits", lambda path, b: drifted)
    with pytest.raises(ParityError, match=r"after export differ from PyTorch by 5.00e-01 > export.atol 0.0001"):
        check_parity(tmp_path / "model.onnx", reference, batches, 1e-4, "export")


def test_predict_prints_the_entity_groups_of_each_text(bert_folder, tmp_path):
    from deploykit.predict import predict_command

    lines: list[str] = []
    predict_command(bert_folder, TEXTS[:2], json_lines=True, echo=lines.append)
    records = [json.loads(line) for line in lines]
    assert [r["text"] for r in records] == TEXTS[:2]
    for record, theirs in zip(records, pipeline_groups(bert_folder, TEXTS[:2], "simple")):
        assert_same_groups(record["entities"], theirs)
    shown: list[str] = []
    predict_command(bert_folder, TEXTS[:1], echo=shown.append)
    first = records[0]["entities"][0]
    assert shown[0].startswith(f"{first['entity_group']} {first['word']} {first['score']:.4f}")
    assert shown[0].endswith(TEXTS[0])
    out = tmp_path / "entities.jsonl"
    predict_command(bert_folder, TEXTS, out=out, echo=lambda line: None)
    assert [json.loads(line)["text"] for line in out.read_text().splitlines()] == TEXTS


def test_predict_refuses_options_a_token_classifier_has_no_use_for(bert_folder, tmp_path):
    from deploykit.predict import predict_command

    with pytest.raises(UserError, match="a token classifier gives entity groups, not ranked labels; drop --top-k"):
        predict_command(bert_folder, ["Peter flew to Brussels"], top_k=2, echo=lambda line: None)
    rows = tmp_path / "pairs.tsv"
    rows.write_text("sentence\tother\nPeter flew\tto Brussels\n")
    with pytest.raises(UserError, match="a token classifier tags single texts; drop --text-pair-column"):
        predict_command(bert_folder, [], file=rows, text_pair_column="other", echo=lambda line: None)


def test_the_server_answers_a_token_classifiers_entity_groups_on_v2_and_predict(bert_folder):
    from starlette.testclient import TestClient

    from deploykit.serve.app import build_app

    predictor = deploykit.load(bert_folder)
    theirs = pipeline_groups(bert_folder, TEXTS, "simple")
    with TestClient(build_app(predictor, max_request_rows=8)) as c:
        got = c.post("/predict", json={"texts": TEXTS}).json()["predictions"]
        for ours, want in zip(got, theirs):
            assert_same_groups(ours, want)
        body = {"id": "n1", "inputs": [{"name": "text", "shape": [2], "datatype": "BYTES", "data": TEXTS[:2]}]}
        out = c.post(f"/v2/models/{predictor.name}/infer", json=body).json()
        assert out["id"] == "n1" and [o["name"] for o in out["outputs"]] == ["entities"]
        tensor = out["outputs"][0]
        assert tensor["datatype"] == "BYTES" and tensor["shape"] == [2]
        assert [json.loads(d) for d in tensor["data"]] == got[:2]
        meta = c.get(f"/v2/models/{predictor.name}").json()
        assert [t["name"] for t in meta["inputs"]] == ["text"] and meta["outputs"][0]["name"] == "entities"
        for bad, message in [({"texts": ["x"], "top_k": 2}, "entity groups, not ranked labels"),
                             ({"texts": ["x"], "text_pairs": ["y"]}, "tags single texts")]:
            reply = c.post("/predict", json=bad)
            assert reply.status_code == 400 and message in reply.json()["error"]
        asked = {**body, "outputs": [{"name": "label"}]}
        reply = c.post(f"/v2/models/{predictor.name}/infer", json=asked)
        assert reply.status_code == 400 and 'unknown output "label" (this model has entities)' in reply.json()["error"]
